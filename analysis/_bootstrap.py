"""Clauset's semi-parametric bootstrap goodness-of-fit p-value.

Each synthetic sample keeps the body (values below xmin) by resampling it and
draws the tail from the fitted power law, in the same proportion as the data;
the whole fit (xmin scan included) is repeated on it. p is the share of
synthetic KS distances at least as large as the observed one. p > 0.1 means the
power law is plausible (Clauset et al. 2009, section 4.1).

A synthetic fit can fail (e.g. no alpha inside ``alpha_range`` when the fitted
alpha is near its end). Its distance is undefined, not small: counting it as
"not exceeding" biased p low. Failed data sets are redrawn and counted instead.
"""

from __future__ import annotations

import numpy as np

from analysis._powerlaw import PowerLawFit, clauset_fit

_DRAWS_PER_REPLICATE = 10  # bounds the work when nearly every synthetic fit fails


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
                alpha_range: tuple[float, float] | None = None) -> tuple[float, int]:
    """(p, failed): the share of ``n_boot`` successfully refitted synthetic data sets whose
    KS distance is >= the data's, and how many synthetic fits failed and were redrawn.

    At most ``_DRAWS_PER_REPLICATE * n_boot`` data sets are drawn; p is NaN if none fits.
    """
    if n_boot <= 0 or fit.status != "ok":
        return float("nan"), 0
    rng = np.random.default_rng(seed)
    distances: list[float] = []
    failed = 0
    while len(distances) < n_boot and len(distances) + failed < _DRAWS_PER_REPLICATE * n_boot:
        sample = synthetic_sample(rng, values, fit)
        synthetic = clauset_fit(sample, discrete=fit.discrete, alpha_range=alpha_range)
        if synthetic.status == "ok":
            distances.append(synthetic.ks_d)
        else:
            failed += 1
    p = float(np.mean(np.asarray(distances) >= fit.ks_d)) if distances else float("nan")
    return p, failed
