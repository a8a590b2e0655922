"""Compiled KS bounds for continuous candidates (numba): the inner loop of the xmin scan.

Same contract as ``_xmin_scan._bounds``: for each candidate, the largest gap between
fitted and empirical CDF over ``n_points`` tail points spread evenly (a lower bound of
its KS distance; exact once the points cover the tail) and an upper bound from
monotonicity between neighbouring points. A candidate whose running lower bound
already exceeds ``best`` stops early: it cannot win, and its partial maximum is
still a valid lower bound. ``hints`` are points checked first: where the best
candidate so far has its largest gaps, which is where its near-identical neighbours
(the expensive ones: they survive to the finest levels) have theirs too.

Candidates are processed in blocks with the point loop outermost: the q-th points of
neighbouring candidates are neighbours in memory, so a block streams through the
sorted sample instead of jumping across it (at 10 million values the jumps, not the
arithmetic, would dominate).

``peaks`` carries, per candidate, the point where its gap was largest in the previous round (-1: none).
Each round first looks in a small window around it at the new, finer spacing: the largest gap of a
random-walk-like difference is usually near the coarser grid's, so a candidate that cannot win is
usually ruled out there, before the sweep. The peaks found are returned for the next round. On a
1M-value Pareto sample (the flat KS landscape) the fit takes 0.46 s with them, 0.85 s without.
"""

from __future__ import annotations

import numba
import numpy as np

BLOCK = 512
WINDOW = 8  # points either side of a candidate's previous peak, at the new spacing


@numba.njit(inline="always")
def _gap(log_unique: np.ndarray, below: np.ndarray, n: int, alpha_j: float, j: int, k: int) -> tuple[float, float]:
    """(fitted, empirical) CDF of candidate j's tail at point k."""
    fitted = -np.expm1((1.0 - alpha_j) * (log_unique[k] - log_unique[j]))
    empirical = (below[k] - below[j]) / (n - below[j])
    return fitted, empirical


@numba.njit(cache=True, nogil=True)
def _look_first(log_unique: np.ndarray, below: np.ndarray, n: int, alpha_j: float, j: int, points: np.ndarray,
                best: float) -> tuple[float, int]:
    """Largest gap over ``points`` (those below j skipped) and where; stops once it exceeds ``best``."""
    largest, peak = 0.0, -1
    for k in points:
        if k < j:
            continue
        fitted, empirical = _gap(log_unique, below, n, alpha_j, j, k)
        if abs(fitted - empirical) > largest:
            largest, peak = abs(fitted - empirical), k
        if largest > best:
            break
    return largest, peak


@numba.njit(cache=True, nogil=True)
def _window(j: int, last: int, peak: int, n_points: int) -> np.ndarray:
    """Points around ``peak`` at the spacing of ``n_points`` over candidate j's tail, nearest first."""
    stride = max(1, (last - j) // max(1, n_points - 1))
    points = np.empty(2 * WINDOW + 1, np.int64)
    for t in range(2 * WINDOW + 1):
        offset = (t + 1) // 2 * (1 if t % 2 else -1)
        points[t] = min(last, max(j, peak + offset * stride))
    return points


@numba.njit(parallel=True, cache=True, nogil=True)
def continuous_bounds(log_unique: np.ndarray, below: np.ndarray, n: int, alpha: np.ndarray,
                      candidates: np.ndarray, n_points: int, best: float,
                      hints: np.ndarray, peaks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    last = log_unique.size - 1
    lower = np.empty(candidates.size)
    upper = np.empty(candidates.size)
    new_peaks = np.empty(candidates.size, np.int64)
    n_blocks = (candidates.size + BLOCK - 1) // BLOCK
    for block in numba.prange(n_blocks):
        start = block * BLOCK
        size = min(candidates.size, start + BLOCK) - start
        largest = np.zeros(size)
        peak = np.full(size, -1, np.int64)
        between = np.zeros(size)
        previous_fitted = np.zeros(size)
        previous_empirical = np.zeros(size)
        alive = np.ones(size, dtype=np.bool_)
        remaining = size
        for i in range(size):
            j = candidates[start + i]
            largest[i], peak[i] = _look_first(log_unique, below, n, alpha[j], j, hints, best)
            if largest[i] <= best and peaks[start + i] >= 0:
                near, near_peak = _look_first(log_unique, below, n, alpha[j], j,
                                              _window(j, last, peaks[start + i], n_points), best)
                if near > largest[i]:
                    largest[i], peak[i] = near, near_peak
            if largest[i] > best:
                alive[i] = False
                remaining -= 1
        for q in range(n_points):
            if remaining == 0:
                break
            for i in range(size):
                if not alive[i]:
                    continue
                j = candidates[start + i]
                k = j + int(np.floor(q * (last - j) / (n_points - 1) + 0.5))
                fitted, empirical = _gap(log_unique, below, n, alpha[j], j, k)
                if abs(fitted - empirical) > largest[i]:
                    largest[i], peak[i] = abs(fitted - empirical), k
                if q > 0:
                    between[i] = max(between[i], fitted - previous_empirical[i], empirical - previous_fitted[i])
                previous_fitted[i] = fitted
                previous_empirical[i] = empirical
                if largest[i] > best:
                    alive[i] = False
                    remaining -= 1
        for i in range(size):
            lower[start + i] = largest[i]
            upper[start + i] = max(largest[i], between[i]) if alive[i] else np.inf
            new_peaks[start + i] = peak[i]
    return lower, upper, new_peaks
