"""Likelihood-ratio comparisons of the power-law tail with alternative distributions.

Each alternative is fitted by maximum likelihood to the same tail (x >= xmin).
R is Vuong's normalised log-likelihood ratio (positive favours the power law),
p its two-sided significance; the truncated power law contains the power law,
so its p comes from chi2 with one degree of freedom on 2 * raw R, as in
``powerlaw.Fit.distribution_compare``. Discrete tails use the alternatives
discretised by rounding (powerlaw's default ``discrete_normalization``).

For continuous tails the lognormal, exponential and truncated power law depend on the data only
through a few sums (n, the mean and centred sum of squares of log x, the sums of log x and of x),
so the optimiser's objective is O(1) per step after one pass over the tail (``TailSums``); the
per-point log-likelihoods that R's variance needs are one more pass, at the optimum only. The
continuous stretched exponential needs the sum of x^beta: for a fixed beta its lambda has a closed
form, so its fit is a one-dimensional search over beta, one pass over the tail per step (a coarse
grid, then Brent's method: about 60 passes, against a few hundred for a two-parameter simplex).
Discrete tails evaluate the likelihood point by point.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import integrate, optimize, special, stats

from analysis._powerlaw import log_hurwitz_zeta

ALTERNATIVES = ("lognormal", "exponential", "truncated_power_law", "stretched_exponential")
_LOG_ROOT_2PI = 0.5 * np.log(2 * np.pi)


@dataclass(frozen=True)
class Comparison:
    R: float  # normalised log-likelihood ratio (raw R for the nested truncated power law)
    p: float


def _log_upper_gamma_quadrature(s: float, z: float) -> float:
    """log Gamma(s, z) = -z + (s - 1) log z + log of the integral of (1 + u/z)^(s-1) e^-u over u >= 0.

    The integrand starts at 1 and decays at rate (1 - s)/z + 1, the scale the variable is measured in.
    """
    a = 1.0 - s
    scale = 1.0 / (max(a, 0.0) / z + 1.0)

    def integrand(w: float) -> float:
        u = scale * w
        return float(np.exp(-a * np.log1p(u / z) - u))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)  # tested to 1e-10 against mpmath
        value = integrate.quad(integrand, 0.0, np.inf, epsabs=0.0, epsrel=1e-13, limit=200)[0]
    return float(-z - a * np.log(z) + np.log(scale * value))


def _log_upper_gamma(s: float, z: float) -> float:
    """log of the upper incomplete gamma for any real s (the truncated power law's normaliser).

    Hand-written because scipy's ``gammaincc`` stops at s > 0 and mpmath's ``gammainc`` is slow
    (milliseconds to seconds where s is large and negative: the bounded metrics' alpha in the
    thousands) and there silently wrong at 53 bits (log Gamma(-1321.3, 427.3): -8177.6 for -8438.8).
    Quadrature for z >= 1 or s <= -10, scipy for s > 0, otherwise steps down from s + 1.
    """
    if z >= 1.0 or s <= -10.0:
        return _log_upper_gamma_quadrature(s, z)
    if s > 0:
        return float(special.gammaln(s) + np.log(special.gammaincc(s, z)))
    if s == 0:
        return float(np.log(special.exp1(z)))
    # Gamma(s, z) = (Gamma(s + 1, z) - z^s e^-z) / s; with z < 1 the second term dominates: no cancellation
    ratio = np.exp(_log_upper_gamma(s + 1, z) - (s * np.log(z) - z))
    return float(s * np.log(z) - z + np.log((ratio - 1.0) / s))


def _log_lerch(lam: float, alpha: float, xmin: float) -> float:
    """log sum_{k >= xmin} k^-alpha e^(-lam k) + lam xmin, via the Lerch transcendent."""
    import mpmath

    return float(mpmath.log(mpmath.lerchphi(mpmath.exp(-lam), alpha, xmin)))


def _log1mexp(x: np.ndarray) -> np.ndarray:
    """log(1 - exp(x)) for x <= 0, accurate near 0."""
    return np.where(x > -0.693, np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


@dataclass(frozen=True)
class TailSums:
    """What the continuous lognormal, exponential and truncated power law need of a tail: one pass."""

    n: float
    sum_log: float
    mean_log: float
    centred_log_squares: float  # sum (log x - mean log x)^2: stable where mu is far from the data
    sum_x: float

    @classmethod
    def of(cls, values: np.ndarray, counts: np.ndarray) -> TailSums:
        log_values = np.log(values)
        n = float(counts.sum())
        mean_log = float(counts @ log_values) / n
        return cls(n, float(counts @ log_values), mean_log, float(counts @ (log_values - mean_log) ** 2),
                   float(counts @ values))


def _lognormal_total(sums: TailSums, xmin: float, mu: float, sigma: float) -> float:
    squares = sums.centred_log_squares + sums.n * (sums.mean_log - mu) ** 2  # = sum (log x - mu)^2
    return (-0.5 * squares / sigma**2 - sums.n * (_LOG_ROOT_2PI + np.log(sigma)) - sums.sum_log
            - sums.n * FAMILIES["lognormal"].log_norm(xmin, mu, sigma))


def _exponential_total(sums: TailSums, xmin: float, lam: float) -> float:
    return sums.n * np.log(lam) - lam * sums.sum_x + sums.n * lam * xmin


def _stretched_log_d(log_ratio: np.ndarray, counts: np.ndarray, beta: float) -> float:
    """log sum (x/xmin)^beta - 1 over the tail: expm1 where beta is tiny, shifted where it overflows."""
    exponent = beta * log_ratio
    top = float(exponent.max())
    if top < 500.0:
        return float(np.log(counts @ np.expm1(exponent)))
    return top + float(np.log(counts @ (np.exp(exponent - top) - np.exp(-top))))


def _stretched_profile(values: np.ndarray, counts: np.ndarray, xmin: float, beta: float) -> tuple[float, float]:
    """(log-likelihood, log u) of the continuous stretched exponential at ``beta``, u = lambda^beta at its optimum.

    The log-likelihood is n log beta + n log u + (beta - 1) sum log x - u D(beta), with
    D(beta) = sum (x^beta - xmin^beta), so u = n / D(beta) and the profile is one pass over the tail.
    """
    n = float(counts.sum())
    log_u = np.log(n) - beta * np.log(xmin) - _stretched_log_d(np.log(values / xmin), counts, beta)
    total = n * np.log(beta) + n * log_u + (beta - 1) * float(counts @ np.log(values)) - n
    return float(total), float(log_u)


def _stretched_points(values: np.ndarray, xmin: float, beta: float, log_u: float) -> np.ndarray:
    """Per-point log-likelihoods in (beta, u): lambda = u^(1/beta) overflows where beta is small."""
    scaled = np.exp(log_u + beta * np.log(xmin)) * np.expm1(beta * np.log(values / xmin))  # u (x^b - xmin^b)
    return np.log(beta) + log_u + (beta - 1) * np.log(values) - scaled


_LOG_BETA_GRID = np.linspace(np.log(1e-6), np.log(50.0), 36)


def _fit_stretched(values: np.ndarray, counts: np.ndarray, xmin: float) -> np.ndarray:
    """Per-value log-likelihoods at the continuous stretched exponential's maximum: grid, then Brent on beta."""
    def cost(log_beta: float) -> float:
        with np.errstate(all="ignore"):
            total = _stretched_profile(values, counts, xmin, float(np.exp(log_beta)))[0]
        return -total if np.isfinite(total) else np.inf

    costs = [cost(log_beta) for log_beta in _LOG_BETA_GRID]
    best = int(np.argmin(costs))
    low, high = _LOG_BETA_GRID[max(best - 1, 0)], _LOG_BETA_GRID[min(best + 1, _LOG_BETA_GRID.size - 1)]
    found = optimize.minimize_scalar(cost, bounds=(low, high), method="bounded", options={"xatol": 1e-10})
    beta = float(np.exp(found.x if found.fun <= costs[best] else _LOG_BETA_GRID[best]))
    return _stretched_points(values, xmin, beta, _stretched_profile(values, counts, xmin, beta)[1])


def _truncated_total(sums: TailSums, xmin: float, alpha: float, lam: float) -> float:
    return -alpha * sums.sum_log - lam * sums.sum_x - sums.n * FAMILIES["truncated_power_law"].log_norm(xmin, alpha, lam)


@dataclass(frozen=True)
class _Family:
    """An alternative: log kernel, its log normaliser over x >= xmin, and the parameter map.

    ``discrete_log_norm`` is the exact sum over integers when known; otherwise
    discrete masses come from rounding the continuous law, which needs ``log_sf``.
    """

    log_kernel: Callable[..., np.ndarray]
    log_norm: Callable[..., float]
    to_params: Callable[[np.ndarray, float], tuple[float, ...]]  # (unconstrained, xmin) -> parameters
    starts: Callable[[np.ndarray, float, float], list[np.ndarray]]  # (tail, xmin, alpha) -> start points
    discrete_log_norm: Callable[..., float] | None = None
    log_sf: Callable[..., np.ndarray] | None = None
    total: Callable[..., float] | None = None  # (TailSums, xmin, *params) -> the continuous log-likelihood


_MAX_LOG_SIGMA = 8.0  # sigma <= ~3000: beyond, the lognormal is numerically a power law


def _lognormal_params(theta: np.ndarray, xmin: float) -> tuple[float, float]:
    log_sigma = min(float(theta[1]), _MAX_LOG_SIGMA)
    return np.log(xmin) - theta[0] * np.exp(2 * log_sigma), np.exp(log_sigma)


def _lognormal_starts(x: np.ndarray, xmin: float, alpha: float) -> list[np.ndarray]:
    """Starts in (log-slope at xmin, log sigma): the sample's own, and wide power-law mimics."""
    log_x = np.log(x)
    sigma = log_x.std() + 1e-3
    starts = [np.array([(np.log(xmin) - log_x.mean()) / sigma**2, np.log(sigma)])]
    starts += [np.array([alpha - 1.0, np.log(width)]) for width in (1.0, 5.0, 40.0)]
    return starts


FAMILIES: dict[str, _Family] = {
    "lognormal": _Family(
        log_kernel=lambda x, mu, sigma: -0.5 * ((np.log(x) - mu) / sigma) ** 2 - _LOG_ROOT_2PI - np.log(sigma * x),
        log_norm=lambda xmin, mu, sigma: float(special.log_ndtr((mu - np.log(xmin)) / sigma)),
        # (log-slope at xmin, log sigma): the likelihood ridge of heavy tails runs along fixed slope
        to_params=lambda t, xmin: _lognormal_params(t, xmin),
        starts=_lognormal_starts,
        log_sf=lambda x, mu, sigma: special.log_ndtr((mu - np.log(x)) / sigma),
        total=_lognormal_total,
    ),
    "exponential": _Family(
        log_kernel=lambda x, lam: np.log(lam) - lam * x,
        log_norm=lambda xmin, lam: -lam * xmin,
        to_params=lambda t, xmin: (np.exp(t[0]),),
        starts=lambda x, xmin, a: [np.array([-np.log(x.mean() - xmin + 1e-12)])],
        discrete_log_norm=lambda xmin, lam: float(np.log(lam) - lam * xmin - _log1mexp(np.array(-lam))),
        total=_exponential_total,
    ),
    "truncated_power_law": _Family(
        log_kernel=lambda x, alpha, lam: -alpha * np.log(x) - lam * x,
        log_norm=lambda xmin, alpha, lam: _log_upper_gamma(1 - alpha, lam * xmin) + (alpha - 1) * np.log(lam),
        to_params=lambda t, xmin: (t[0], np.exp(t[1])),
        starts=lambda x, xmin, a: [np.array([a, np.log(0.1 / x.mean())]), np.array([a, np.log(1e-3 / xmin)])],
        discrete_log_norm=lambda xmin, alpha, lam: _log_lerch(lam, alpha, xmin) - lam * xmin,
        total=_truncated_total,
    ),
    "stretched_exponential": _Family(
        log_kernel=lambda x, lam, beta: np.log(beta * lam) + (beta - 1) * np.log(lam * x) - (lam * x) ** beta,
        log_norm=lambda xmin, lam, beta: -((lam * xmin) ** beta),
        to_params=lambda t, xmin: (np.exp(t[0]), np.exp(t[1])),
        starts=lambda x, xmin, a: [np.array([-np.log(x.mean()), np.log(0.5)]), np.array([-np.log(xmin), np.log(0.2)])],
        log_sf=lambda x, lam, beta: -((lam * x) ** beta),
    ),
}


def _loglik(family: _Family, params: tuple[float, ...], tail: np.ndarray, xmin: float, discrete: bool) -> np.ndarray:
    if not discrete:
        return family.log_kernel(tail, *params) - family.log_norm(xmin, *params)
    if family.discrete_log_norm is not None:
        # exact: the kernel summed over the integers >= xmin (log lam cancels for the exponential)
        return family.log_kernel(tail, *params) - family.discrete_log_norm(xmin, *params)
    upper, lower = family.log_sf(tail - 0.5, *params), family.log_sf(tail + 0.5, *params)
    return upper + _log1mexp(lower - upper) - family.log_sf(np.array([xmin - 0.5]), *params)[0]


def fit_alternative(name: str, tail: np.ndarray, xmin: float, alpha: float, discrete: bool) -> np.ndarray:
    """Per-point log-likelihoods of the maximum-likelihood fit of one alternative."""
    family = FAMILIES[name]
    # the likelihood only needs each distinct value once, weighted by its count
    values, inverse, counts = np.unique(tail, return_inverse=True, return_counts=True)
    if name == "stretched_exponential" and not discrete and values.size > 1:
        with np.errstate(all="ignore"):
            return _fit_stretched(values, counts, xmin)[inverse]
    sums = TailSums.of(values, counts) if family.total is not None and not discrete else None

    def log_likelihood(params: tuple[float, ...]) -> float:
        if sums is not None:
            return float(family.total(sums, xmin, *params))  # O(1): the tail's sums, not its points
        return float(counts @ _loglik(family, params, values, xmin, discrete))

    def cost(theta: np.ndarray) -> float:
        try:
            with np.errstate(all="ignore"):
                total = log_likelihood(family.to_params(theta, xmin))
        except (ValueError, TypeError, ZeroDivisionError, OverflowError):
            return np.inf
        return -total if np.isfinite(total) else np.inf

    options = {"xatol": 1e-7, "fatol": 1e-9, "maxiter": 1000}
    results = [optimize.minimize(cost, start, method="Nelder-Mead", options=options)
               for start in family.starts(tail, xmin, alpha)]
    best = min(results, key=lambda result: result.fun)
    with np.errstate(all="ignore"):
        return _loglik(family, family.to_params(best.x, xmin), values, xmin, discrete)[inverse]


def power_law_loglik(tail: np.ndarray, xmin: float, alpha: float, discrete: bool) -> np.ndarray:
    if discrete:
        return -alpha * np.log(tail) - log_hurwitz_zeta(alpha, xmin)  # scipy's zeta underflows for large alpha
    return np.log((alpha - 1) / xmin) - alpha * np.log(tail / xmin)


def likelihood_ratio(power_law: np.ndarray, alternative: np.ndarray, nested: bool) -> Comparison:
    difference = power_law - alternative
    n = difference.size
    raw = float(difference.sum())
    variance = float(np.mean((difference - difference.mean()) ** 2))
    if nested:
        return Comparison(raw, float(stats.chi2.sf(abs(2 * raw), 1)))
    if variance <= 0:
        return Comparison(float("nan"), float("nan"))
    return Comparison(raw / np.sqrt(n * variance), float(special.erfc(abs(raw) / np.sqrt(2 * n * variance))))


def compare(tail: np.ndarray, xmin: float, alpha: float, discrete: bool,
            alternatives: tuple[str, ...] = ALTERNATIVES) -> dict[str, Comparison]:
    """R and p of the power law against each alternative, on the tail ``x >= xmin``."""
    reference = power_law_loglik(tail, xmin, alpha, discrete)
    return {
        name: likelihood_ratio(reference, fit_alternative(name, tail, xmin, alpha, discrete),
                               nested=name == "truncated_power_law")
        for name in alternatives
    }
