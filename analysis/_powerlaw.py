"""``fit_power_law``: the Clauset, Shalizi & Newman (2009) estimator for one 1-D array.

Continuous data: alpha = 1 + n_tail / sum(log(x / xmin)) for every candidate at
once (suffix sums of log x). Discrete data (all integers): alpha maximises the
Hurwitz-zeta likelihood, solved for all candidates at once by bisection. xmin
minimises the KS distance (see ``_xmin_scan``). Both match ``powerlaw.Fit``'s
choices; ``alpha_range`` reproduces its parameter range and boundary rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import special

from analysis._xmin_scan import SortedSample, scan

_NEAR_BOUNDARY = 1e-2  # powerlaw discards a numerically fitted alpha this close to its range ends
_CLOSED_FORM = (1.5, 3.0)  # powerlaw keeps a continuous closed-form alpha in (1.5, 3] without refitting
_DISCRETE_ALPHA = (1.0 + 1e-9, 50.0)
_BISECTION_STEPS = 80


@dataclass(frozen=True)
class PowerLawFit:
    """Result of one fit; ``status`` is 'ok' or says why the numbers are NaN."""

    alpha: float
    xmin: float
    sigma: float
    ks_d: float
    n_tail: int
    n: int
    n_excluded: int
    discrete: bool
    status: str = "ok"
    comparisons: dict[str, Any] = field(default_factory=dict)  # alternative -> Comparison(R, p)
    gof_p: float = float("nan")  # bootstrap goodness-of-fit p-value, when asked for

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def clean(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Sorted finite positive values (a power law lives on x > 0) and how many were dropped."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    kept = flat[np.isfinite(flat) & (flat > 0)]
    return np.sort(kept), int(flat.size - kept.size)


def is_integer_valued(values: np.ndarray) -> bool:
    return values.size > 0 and bool(np.all(values == np.round(values)))


def _tail_log_sums(sample: SortedSample, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate: sum of log x over its tail, and the tail's size (one suffix sum for all)."""
    suffix = np.cumsum(np.log(values)[::-1])[::-1]  # suffix[i] = sum(log x[i:])
    start = sample.below[: sample.n_candidates]
    return suffix[start], sample.n - start


def _continuous_alpha(sample: SortedSample, values: np.ndarray) -> np.ndarray:
    log_sum, n_tail = _tail_log_sums(sample, values)
    return 1.0 + n_tail / (log_sum - n_tail * np.log(sample.unique[: sample.n_candidates]))


def _continuous_cdf(sample: SortedSample, alpha: np.ndarray):  # noqa: ANN202 - a CdfFunction
    log_unique = np.log(sample.unique)

    def cdf(candidates: np.ndarray, points: np.ndarray) -> np.ndarray:
        exponent = (1.0 - alpha[candidates])[:, None] * (log_unique[points] - log_unique[candidates][:, None])
        return -np.expm1(exponent)

    return cdf


def _compiled_bounds(sample: SortedSample, alpha: np.ndarray):  # noqa: ANN202 - a BoundsFunction
    from analysis._ks_kernel import continuous_bounds

    log_unique = np.log(sample.unique)

    def bounds(candidates: np.ndarray, n_points: int, best: float, hints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return continuous_bounds(log_unique, sample.below, sample.n, alpha, candidates, n_points, best, hints)

    return bounds


def _log_zeta_slope(alpha: np.ndarray, xmin: np.ndarray) -> np.ndarray:
    """d/d alpha of log zeta(alpha, xmin), by a central difference (error ~1e-10)."""
    step = 1e-5
    return (np.log(special.zeta(alpha + step, xmin)) - np.log(special.zeta(alpha - step, xmin))) / (2 * step)


def _discrete_alpha(sample: SortedSample, values: np.ndarray) -> np.ndarray:
    """Maximum-likelihood alpha per candidate: E_alpha[log x] equals the tail's mean log x."""
    log_sum, n_tail = _tail_log_sums(sample, values)
    mean_log = log_sum / n_tail
    xmin = sample.unique[: sample.n_candidates]
    low = np.full(xmin.size, _DISCRETE_ALPHA[0])
    high = np.full(xmin.size, _DISCRETE_ALPHA[1])
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        expected_log = -_log_zeta_slope(middle, xmin)  # decreasing in alpha
        too_small = expected_log > mean_log
        low = np.where(too_small, middle, low)
        high = np.where(too_small, high, middle)
    return 0.5 * (low + high)


def _discrete_cdf(sample: SortedSample, alpha: np.ndarray):  # noqa: ANN202 - a CdfFunction
    def cdf(candidates: np.ndarray, points: np.ndarray) -> np.ndarray:
        a = alpha[candidates]
        at_xmin = special.zeta(a, sample.unique[candidates])
        return 1.0 - special.zeta(a[:, None], sample.unique[points]) / at_xmin[:, None]

    return cdf


def _valid(alpha: np.ndarray, alpha_range: tuple[float, float] | None, discrete: bool) -> np.ndarray:
    finite = np.isfinite(alpha) & (alpha > 1.0)
    if alpha_range is None:
        return finite
    low, high = alpha_range
    inside = (alpha > low) & (alpha < high)
    closed_form = (alpha > _CLOSED_FORM[0]) & (alpha <= _CLOSED_FORM[1]) & (not discrete)
    away_from_ends = (alpha - _NEAR_BOUNDARY >= low) & (alpha + _NEAR_BOUNDARY <= high)
    return finite & inside & (closed_form | away_from_ends)


def _failed(n: int, n_excluded: int, discrete: bool, status: str) -> PowerLawFit:
    nan = float("nan")
    return PowerLawFit(nan, nan, nan, nan, 0, n, n_excluded, discrete, status)


def clauset_fit(
    values: np.ndarray, discrete: bool | None = None, alpha_range: tuple[float, float] | None = None
) -> PowerLawFit:
    """Fit a power-law tail to ``values`` (non-finite and non-positive values are excluded).

    ``discrete=None`` decides from the data (all integers -> discrete).
    ``alpha_range=None`` is the plain Clauset estimator; ``(0, 3)`` reproduces
    ``powerlaw.Fit``'s default, which discards candidates whose alpha reaches 3.
    """
    ordered, n_excluded = clean(values)
    discrete = is_integer_valued(ordered) if discrete is None else discrete
    sample = SortedSample.from_sorted(ordered)
    if sample.n_candidates < 1:
        reason = "constant series" if sample.unique.size == 1 else "fewer than 3 distinct positive values"
        return _failed(sample.n, n_excluded, discrete, reason)
    alpha = _discrete_alpha(sample, ordered) if discrete else _continuous_alpha(sample, ordered)
    cdf = _discrete_cdf(sample, alpha) if discrete else _continuous_cdf(sample, alpha)
    bounds = None if discrete else _compiled_bounds(sample, alpha)
    best, ks_d = scan(sample, cdf, _valid(alpha, alpha_range, discrete), bounds)
    if best < 0:
        return _failed(sample.n, n_excluded, discrete, "no candidate xmin gives a valid alpha")
    n_tail = int(sample.n_tail(np.array([best]))[0])
    sigma = (alpha[best] - 1.0) / np.sqrt(n_tail)
    return PowerLawFit(float(alpha[best]), float(sample.unique[best]), float(sigma), ks_d, n_tail,
                       sample.n, n_excluded, discrete)
