"""Compiled KS bounds for continuous candidates (numba): the inner loop of the xmin scan.

Same contract as ``_xmin_scan._bounds``: for each candidate, the largest gap between
fitted and empirical CDF over ``n_points`` tail points spread evenly (a lower bound of
its KS distance; exact once the points cover the tail) and an upper bound from
monotonicity between neighbouring points. A candidate whose running lower bound
already exceeds ``best`` stops early: it cannot win, and its partial maximum is
still a valid lower bound.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, cache=True, nogil=True)
def continuous_bounds(log_unique: np.ndarray, below: np.ndarray, n: int, alpha: np.ndarray,
                      candidates: np.ndarray, n_points: int, best: float) -> tuple[np.ndarray, np.ndarray]:
    last = log_unique.size - 1
    lower = np.empty(candidates.size)
    upper = np.empty(candidates.size)
    for i in numba.prange(candidates.size):
        j = candidates[i]
        exponent = 1.0 - alpha[j]
        log_xmin = log_unique[j]
        below_xmin = below[j]
        n_tail = n - below_xmin
        span = last - j
        largest = 0.0
        between = 0.0
        previous_fitted = 0.0
        previous_empirical = 0.0
        stopped = False
        for q in range(n_points):
            k = j + int(np.floor(q * span / (n_points - 1) + 0.5))
            fitted = -np.expm1(exponent * (log_unique[k] - log_xmin))
            empirical = (below[k] - below_xmin) / n_tail
            largest = max(largest, abs(fitted - empirical))
            if q > 0:
                between = max(between, fitted - previous_empirical, empirical - previous_fitted)
            previous_fitted = fitted
            previous_empirical = empirical
            if largest > best:
                stopped = True
                break
        lower[i] = largest
        upper[i] = np.inf if stopped else max(largest, between)
    return lower, upper

