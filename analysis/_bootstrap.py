"""Clauset's semi-parametric bootstrap goodness-of-fit p-value.

Each synthetic sample keeps the body (values below xmin) by resampling it and
draws the tail from the fitted power law, in the same proportion as the data;
the whole fit (xmin scan included) is repeated on it. p is the share of
synthetic KS distances at least as large as the observed one. p > 0.1 means the
power law is plausible (Clauset et al. 2009, section 4.1).
"""

from __future__ import annotations

import numpy as np

from analysis._powerlaw import PowerLawFit, clauset_fit


def _discrete_power_law(rng: np.random.Generator, xmin: float, alpha: float, size: int) -> np.ndarray:
    # Clauset's approximation (eq. D.6); good to a few percent, as in their own code
    uniform = rng.random(size)
    return np.floor((xmin - 0.5) * (1 - uniform) ** (-1 / (alpha - 1)) + 0.5)


def synthetic_sample(rng: np.random.Generator, values: np.ndarray, fit: PowerLawFit) -> np.ndarray:
    body = values[values < fit.xmin]
    n_tail = rng.binomial(values.size, fit.n_tail / values.size)
    if fit.discrete:
        tail = _discrete_power_law(rng, fit.xmin, fit.alpha, n_tail)
    else:
        tail = fit.xmin * (1 - rng.random(n_tail)) ** (-1 / (fit.alpha - 1))
    resampled = rng.choice(body, size=values.size - n_tail) if body.size else np.empty(0)
    return np.concatenate([resampled, tail])


def bootstrap_p(values: np.ndarray, fit: PowerLawFit, n_boot: int, seed: int = 0,
                alpha_range: tuple[float, float] | None = None) -> float:
    """Share of ``n_boot`` synthetic data sets whose refitted KS distance is >= the data's."""
    if n_boot <= 0 or fit.status != "ok":
        return float("nan")
    rng = np.random.default_rng(seed)
    distances = [
        clauset_fit(synthetic_sample(rng, values, fit), discrete=fit.discrete, alpha_range=alpha_range).ks_d
        for _ in range(n_boot)
    ]
    return float(np.mean(np.asarray(distances) >= fit.ks_d))
