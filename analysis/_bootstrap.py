"""Clauset's semi-parametric bootstrap goodness-of-fit p-value.

Each synthetic sample keeps the body (values below xmin) by resampling it and
draws the tail from the fitted power law, in the same proportion as the data;
the whole fit (xmin scan included) is repeated on it. p is the share of
synthetic KS distances at least as large as the observed one. Only that comparison is computed
(``ks_at_least``), not each synthetic distance: on a pure power law's flat KS landscape the full
scan costs several times more, and the answer is the same. p > 0.1 means the
power law is plausible (Clauset et al. 2009, section 4.1).

A synthetic fit can fail (e.g. no alpha inside ``alpha_range`` when the fitted
alpha is near its end). Its distance is undefined, not small: counting it as
"not exceeding" biased p low. Failed data sets are redrawn and counted instead.

``replicates_for`` chooses the number of replicates for a precision asked, as Clauset et al. do
(n = 1 / (4 eps^2): eps = 0.01 gives 2,500), and stops early once p is clearly on one side of the
0.1 threshold: every 10 replicates, the 99% Clopper-Pearson interval of p is checked against 0.1.
A series whose p is 0 is decided after 60 replicates, one at 0.5 after 10; one near 0.1 runs to n.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from analysis._powerlaw import PowerLawFit, ks_at_least

_DRAWS_PER_REPLICATE = 10  # bounds the work when nearly every synthetic fit fails
THRESHOLD = 0.1  # Clauset et al.: the power law is ruled out when p <= 0.1
_CHECK_EVERY = 10
_CONFIDENCE = 0.99  # of the interval that decides an early stop


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


def replicates_for(precision: float) -> int:
    """Clauset et al.'s count for a p-value good to ``precision``: 1 / (4 eps^2) (0.01 -> 2,500)."""
    return int(np.ceil(0.25 / precision**2))


def _decided(exceeding: int, replicates: int) -> bool:
    """True once the 99% Clopper-Pearson interval of p lies wholly above or below 0.1."""
    tail = (1 - _CONFIDENCE) / 2
    low = stats.beta.ppf(tail, exceeding, replicates - exceeding + 1) if exceeding else 0.0
    high = stats.beta.ppf(1 - tail, exceeding + 1, replicates - exceeding) if exceeding < replicates else 1.0
    return bool(high < THRESHOLD or low > THRESHOLD)


def _replicates(values: np.ndarray, fit: PowerLawFit, most: int, seed: int, alpha_range: tuple[float, float] | None,
                early_stop: bool) -> tuple[int, int, int]:
    """(exceeding, replicates, failed): synthetic KS distances >= the data's, out of the refitted ones."""
    rng = np.random.default_rng(seed)
    exceeding = replicates = failed = 0
    while replicates < most and replicates + failed < _DRAWS_PER_REPLICATE * most:
        at_least = ks_at_least(synthetic_sample(rng, values, fit), fit.ks_d, fit.discrete, alpha_range, fit.xmin)
        if at_least is None:
            failed += 1
            continue
        replicates += 1
        exceeding += at_least
        if early_stop and replicates % _CHECK_EVERY == 0 and _decided(exceeding, replicates):
            break
    return exceeding, replicates, failed


def bootstrap_p(values: np.ndarray, fit: PowerLawFit, n_boot: int, seed: int = 0,
                alpha_range: tuple[float, float] | None = None, early_stop: bool = False) -> tuple[float, int, int]:
    """(p, replicates, failed): the share of the successfully refitted synthetic data sets (at most
    ``n_boot``) whose KS distance is >= the data's, how many there were, and how many synthetic fits
    failed and were redrawn. ``early_stop`` ends once p is clearly above or below 0.1.

    At most ``_DRAWS_PER_REPLICATE * n_boot`` data sets are drawn; p is NaN if none fits.
    """
    if n_boot <= 0 or fit.status != "ok":
        return float("nan"), 0, 0
    exceeding, replicates, failed = _replicates(values, fit, n_boot, seed, alpha_range, early_stop)
    return (exceeding / replicates if replicates else float("nan")), replicates, failed
