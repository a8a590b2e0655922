"""``fit_power_law``: the Clauset, Shalizi & Newman (2009) estimator for one 1-D array.

Continuous data: alpha = 1 + n_tail / sum(log(x / xmin)) for every candidate at
once (one suffix sum). Discrete data (see ``infer_discrete``): alpha
maximises the Hurwitz-zeta likelihood, solved for all candidates at once by
bisection. xmin minimises the KS distance (see ``_xmin_scan``). Both match
``powerlaw.Fit``'s choices; ``alpha_range`` reproduces its parameter range and
boundary rule.

The Hurwitz zeta is summed here, scaled by xmin**alpha, rather than taken from
``scipy.special.zeta``: scipy's underflows to 0 once alpha * log10(xmin) > 308
(alpha 154 at xmin 100), and tails bunched at xmin have their maximiser there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from analysis._xmin_scan import BoundsFunction, CdfFunction, SortedSample, scan

_NEAR_BOUNDARY = 1e-2  # powerlaw discards a numerically fitted alpha this close to its range ends
_CLOSED_FORM = (1.5, 3.0)  # powerlaw keeps a continuous closed-form alpha in (1.5, 3] without refitting
# the discrete alpha's search stops at these ends: a maximiser beyond them (a tail all but constant at
# xmin above 1e9; an improper law below) leaves the candidate NaN (invalid), never the end as its alpha
_LOWEST_ALPHA = 1.0 + 1e-9
_HIGHEST_ALPHA = 1e9
_BRACKET_GROWTH = 8.0
_BISECTION_STEPS = 44  # the bracket spans at most a factor 8: 2**-44 of it is 4e-13 of alpha
_DIRECT_TERMS = 9  # Hurwitz zeta: terms summed one by one before Euler-Maclaurin, as in cephes' zeta
_EULER_MACLAURIN = special.bernoulli(24)[2::2] / special.factorial(np.arange(2, 25, 2))  # B_2j / (2j)!
# Integral floats are counts unless their format rounds integers off: bfloat16, float16, float32 and
# float64 keep 8, 11, 24 and 53 significant bits. A count v >= 2**p fits p bits by chance
# 2**-(bit_length(v) - p); below 2**-20 for all distinct values together, they are rounded floats.
_FLOAT_PRECISIONS = (8, 11, 24, 53)
_ROUNDING_EVIDENCE_BITS = 20
_INTEGER_DTYPES = ("int", "uint", "Int", "UInt", "bool", "boolean")
_LOW_PRECISION_FLOATS = ("float16", "float32", "bfloat16", "float8")  # torch's and ml_dtypes' names too


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
    gof_failed: int = 0  # synthetic data sets whose fit failed (redrawn; not counted in gof_p)
    gof_n: int = 0  # synthetic data sets gof_p is taken over

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def clean(values: ArrayLike) -> tuple[np.ndarray, int]:
    """Sorted finite positive values (a power law lives on x > 0) and how many were dropped."""
    if hasattr(values, "detach"):  # a torch tensor: bfloat16 has no NumPy dtype
        values = values.detach().cpu().double()
    flat = np.asarray(values, dtype=np.float64).ravel()
    kept = flat[np.isfinite(flat) & (flat > 0)]
    return np.sort(kept), int(flat.size - kept.size)


def is_integer_valued(values: np.ndarray) -> bool:
    return values.size > 0 and bool(np.all(values == np.round(values)))


def _dtype_name(values: ArrayLike) -> str:
    """The element type as given, before any cast: 'int64', 'float32', 'bfloat16' (torch or ml_dtypes)."""
    dtype = getattr(values, "dtype", None)
    return str(dtype if dtype is not None else np.asarray(values).dtype).removeprefix("torch.")


def _significant_bits(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per positive value: significant bits (lowest set bit included) and bit length of its integer part."""
    mantissa, bit_length = np.frexp(values)  # values = mantissa * 2**bit_length, mantissa in [0.5, 1)
    digits = (mantissa * 2.0**53).astype(np.int64)
    trailing_zeros = np.frexp((digits & -digits).astype(np.float64))[1] - 1
    return 53 - trailing_zeros, bit_length


def looks_like_rounded_floats(values: np.ndarray) -> bool:
    """Integral values that a float format made integral: too many large ones fit its few bits."""
    significant, bit_length = _significant_bits(np.unique(values))
    precision = next((p for p in _FLOAT_PRECISIONS if significant.max(initial=0) <= p), None)
    if precision is None:
        return False
    return int(np.maximum(bit_length - precision, 0).sum()) >= _ROUNDING_EVIDENCE_BITS


def infer_discrete(values: ArrayLike, ordered: np.ndarray) -> bool:
    """Discreteness from what the data is (see docs/analysis.md): its dtype, then its values.

    Integer dtypes are counts; float16/float32/bfloat16 are float reductions. Other
    input (float64, lists) is discrete when every value is an integer, unless the
    integers are floats rounded to a short significand (every bfloat16 >= 128 is one).
    """
    name = _dtype_name(values)
    if name.startswith(_INTEGER_DTYPES):
        return True
    if name.startswith(_LOW_PRECISION_FLOATS):
        return False
    return is_integer_valued(ordered) and not looks_like_rounded_floats(ordered)


def _tail_mean_log_ratio(sample: SortedSample, values: np.ndarray) -> np.ndarray:
    """Per candidate: the mean of log(x / xmin) over its tail (one suffix sum for all).

    Logs are taken relative to the smallest value, by log1p: data bunched near one large
    value (where alpha is large) keep their digits instead of cancelling in log x - log xmin.
    """
    smallest = values[0]
    log_relative = np.log1p((values - smallest) / smallest)
    suffix = np.cumsum(log_relative[::-1])[::-1]  # suffix[i] = sum(log(x[i:] / smallest))
    start = sample.below[: sample.n_candidates]
    xmin = sample.unique[: sample.n_candidates]
    return suffix[start] / (sample.n - start) - np.log1p((xmin - smallest) / smallest)


def _continuous_alpha(sample: SortedSample, values: np.ndarray) -> np.ndarray:
    return 1.0 + 1.0 / _tail_mean_log_ratio(sample, values)


def _continuous_cdf(sample: SortedSample, alpha: np.ndarray):  # noqa: ANN202 - a CdfFunction
    log_unique = np.log(sample.unique)

    def cdf(candidates: np.ndarray, points: np.ndarray) -> np.ndarray:
        exponent = (1.0 - alpha[candidates])[:, None] * (log_unique[points] - log_unique[candidates][:, None])
        return -np.expm1(exponent)

    return cdf


def _compiled_bounds(sample: SortedSample, alpha: np.ndarray):  # noqa: ANN202 - a BoundsFunction
    from analysis._ks_kernel import continuous_bounds

    log_unique = np.log(sample.unique)

    def bounds(candidates: np.ndarray, n_points: int, best: float, hints: np.ndarray,
               peaks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return continuous_bounds(log_unique, sample.below, sample.n, alpha, candidates, n_points, best, hints, peaks)

    return bounds


def _euler_maclaurin(alpha: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """T = start**alpha * zeta(alpha, start) by Euler-Maclaurin, and dT/d alpha."""
    total = start / (alpha - 1) + 0.5
    slope = -start / (alpha - 1) ** 2
    # (alpha)_(2j-1) (rising factorial), its log-derivative in alpha, and start**(1-2j), for j = 1
    rising, log_slope, power = alpha, 1 / alpha, 1 / start
    inverse_square = power * power
    for j, coefficient in enumerate(_EULER_MACLAURIN):
        if j:
            rising = rising * ((alpha + 2 * j - 1) * (alpha + 2 * j))
            log_slope = log_slope + (1 / (alpha + 2 * j - 1) + 1 / (alpha + 2 * j))
            power = power * inverse_square
        term = coefficient * rising * power
        total, slope = total + term, slope + term * log_slope
    return total, slope


def _scaled_zeta(alpha: np.ndarray, xmin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """S = xmin**alpha * zeta(alpha, xmin) = sum_k (1 + k/xmin)**-alpha, and -dS/d alpha.

    S is 1 to xmin / (alpha - 1): never underflows. -dS/d alpha / S is E_alpha[log(x / xmin)].
    """
    total, weighted = np.zeros(np.broadcast(alpha, xmin).shape), np.zeros(np.broadcast(alpha, xmin).shape)
    for k in range(_DIRECT_TERMS):
        log_ratio = np.log1p(k / xmin)
        term = np.exp(-alpha * log_ratio)
        total, weighted = total + term, weighted + log_ratio * term
    log_ratio = np.log1p(_DIRECT_TERMS / xmin)
    rest, rest_slope = _euler_maclaurin(alpha, xmin + _DIRECT_TERMS)
    # where alpha is vast, shrink underflows to 0 and rest overflows: the product is 0
    with np.errstate(invalid="ignore", over="ignore"):
        shrink = np.exp(-alpha * log_ratio)
        total = total + np.where(shrink > 0, shrink * rest, 0.0)
        weighted = weighted + np.where(shrink > 0, shrink * (log_ratio * rest - rest_slope), 0.0)
    return total, weighted


def log_hurwitz_zeta(alpha: ArrayLike, xmin: ArrayLike) -> np.ndarray:
    """log zeta(alpha, xmin), finite where ``scipy.special.zeta`` underflows (the discrete normaliser)."""
    alpha, xmin = np.asarray(alpha, dtype=np.float64), np.asarray(xmin, dtype=np.float64)
    return -alpha * np.log(xmin) + np.log(_scaled_zeta(alpha, xmin)[0])


def _mean_log_ratio(alpha: np.ndarray, xmin: np.ndarray) -> np.ndarray:
    """E_alpha[log(x / xmin)] under the discrete power law: falls from +inf (alpha -> 1) to 0."""
    total, weighted = _scaled_zeta(alpha, xmin)
    return weighted / total


def _bracket(xmin: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate, alphas below and above the root of E_alpha[log(x/xmin)] = target; NaN if none.

    The upper end grows geometrically until the expectation falls below the target;
    a root above _HIGHEST_ALPHA (or below _LOWEST_ALPHA) is not determined.
    """
    low = np.full(xmin.size, _LOWEST_ALPHA)
    high = np.where(_mean_log_ratio(low, xmin) >= target, 2.0, np.nan)
    pending = np.flatnonzero(np.isfinite(high))
    while pending.size:
        pending = pending[_mean_log_ratio(high[pending], xmin[pending]) > target[pending]]  # root above high
        at_cap = high[pending] >= _HIGHEST_ALPHA
        high[pending[at_cap]] = np.nan
        pending = pending[~at_cap]
        low[pending] = high[pending]
        high[pending] = np.minimum(high[pending] * _BRACKET_GROWTH, _HIGHEST_ALPHA)
    return low, high


def _discrete_alpha(sample: SortedSample, values: np.ndarray) -> np.ndarray:
    """Maximum-likelihood alpha per candidate: E_alpha[log x] equals the tail's mean log x.

    NaN where the maximiser is not determined (see ``_bracket``): invalid in the xmin scan.
    """
    xmin = sample.unique[: sample.n_candidates]
    target = _tail_mean_log_ratio(sample, values)
    low, high = _bracket(xmin, target)
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        too_small = _mean_log_ratio(middle, xmin) > target
        low = np.where(too_small, middle, low)
        high = np.where(too_small, high, middle)
    return 0.5 * (low + high)


def _discrete_cdf(sample: SortedSample, alpha: np.ndarray):  # noqa: ANN202 - a CdfFunction
    """1 - zeta(alpha, x) / zeta(alpha, xmin), from the scaled sums (no underflow at large alpha)."""
    log_unique = np.log(sample.unique)

    def cdf(candidates: np.ndarray, points: np.ndarray) -> np.ndarray:
        a = alpha[candidates][:, None]
        at_xmin = _scaled_zeta(a, sample.unique[candidates][:, None])[0]
        at_points = _scaled_zeta(a, sample.unique[points])[0]
        log_ratio = log_unique[points] - log_unique[candidates][:, None]
        return -np.expm1(np.log(at_points / at_xmin) - a * log_ratio)

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


@dataclass(frozen=True)
class _Candidates:
    """A sample's xmin candidates ready to scan: each one's alpha, the CDF and bounds, which are valid."""

    sample: SortedSample
    alpha: np.ndarray
    cdf: CdfFunction
    bounds: BoundsFunction | None  # None: scan's NumPy bounds (discrete)
    valid: np.ndarray

    def guess(self, xmin: float | None) -> int | None:
        return None if xmin is None else int(np.searchsorted(self.sample.unique, xmin))


def _candidates(ordered: np.ndarray, discrete: bool, alpha_range: tuple[float, float] | None) -> _Candidates | str:
    """The candidates of a sorted, cleaned sample, or why it cannot be fitted."""
    sample = SortedSample.from_sorted(ordered)
    if sample.n_candidates < 1:
        return "constant series" if sample.unique.size == 1 else "fewer than 3 distinct positive values"
    alpha = _discrete_alpha(sample, ordered) if discrete else _continuous_alpha(sample, ordered)
    cdf = _discrete_cdf(sample, alpha) if discrete else _continuous_cdf(sample, alpha)
    bounds = None if discrete else _compiled_bounds(sample, alpha)
    return _Candidates(sample, alpha, cdf, bounds, _valid(alpha, alpha_range, discrete))


def clauset_fit(
    values: ArrayLike, discrete: bool | None = None, alpha_range: tuple[float, float] | None = None
) -> PowerLawFit:
    """Fit a power-law tail to ``values`` (non-finite and non-positive values are excluded).

    ``discrete=None`` decides from the dtype, then the values (see ``infer_discrete``).
    ``alpha_range=None`` is the plain Clauset estimator; ``(0, 3)`` reproduces
    ``powerlaw.Fit``'s default, which discards candidates whose alpha reaches 3.
    """
    ordered, n_excluded = clean(values)
    discrete = infer_discrete(values, ordered) if discrete is None else discrete
    candidates = _candidates(ordered, discrete, alpha_range)
    if isinstance(candidates, str):
        return _failed(ordered.size, n_excluded, discrete, candidates)
    sample, alpha = candidates.sample, candidates.alpha
    best, ks_d = scan(sample, candidates.cdf, candidates.valid, candidates.bounds)
    if best < 0:
        return _failed(sample.n, n_excluded, discrete, "no candidate xmin gives a valid alpha")
    n_tail = int(sample.n_tail(np.array([best]))[0])
    sigma = (alpha[best] - 1.0) / np.sqrt(n_tail)
    return PowerLawFit(float(alpha[best]), float(sample.unique[best]), float(sigma), ks_d, n_tail,
                       sample.n, n_excluded, discrete)


def ks_at_least(values: ArrayLike, threshold: float, discrete: bool, alpha_range: tuple[float, float] | None = None,
                xmin_guess: float | None = None) -> bool | None:
    """Whether ``clauset_fit(values, discrete, alpha_range).ks_d >= threshold``; None where that fit fails.

    The bootstrap needs only this, and it is far cheaper than the fit where the landscape of KS
    distances over xmin is flat (a pure power law): one candidate shown below ``threshold`` answers it,
    and a candidate is dropped as soon as it cannot get below ``threshold`` rather than the best so far.
    ``xmin_guess`` (the data's xmin) is where to look first.
    """
    ordered, _ = clean(values)
    candidates = _candidates(ordered, discrete, alpha_range)
    if isinstance(candidates, str):
        return None
    where, distance = scan(candidates.sample, candidates.cdf, candidates.valid, candidates.bounds,
                           candidates.guess(xmin_guess), stop_below=threshold)
    if where < 0 and np.isnan(distance):
        return None
    return bool(distance >= threshold)
