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
"""

from __future__ import annotations

import numba
import numpy as np

BLOCK = 512


@numba.njit(parallel=True, cache=True, nogil=True)
def continuous_bounds(log_unique: np.ndarray, below: np.ndarray, n: int, alpha: np.ndarray,
                      candidates: np.ndarray, n_points: int, best: float,
                      hints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    last = log_unique.size - 1
    lower = np.empty(candidates.size)
    upper = np.empty(candidates.size)
    n_blocks = (candidates.size + BLOCK - 1) // BLOCK
    for block in numba.prange(n_blocks):
        start = block * BLOCK
        size = min(candidates.size, start + BLOCK) - start
        largest = np.zeros(size)
        between = np.zeros(size)
        previous_fitted = np.zeros(size)
        previous_empirical = np.zeros(size)
        alive = np.ones(size, dtype=np.bool_)
        remaining = size
        for i in range(size):
            j = candidates[start + i]
            for k in hints:
                if k < j:
                    continue
                fitted = -np.expm1((1.0 - alpha[j]) * (log_unique[k] - log_unique[j]))
                empirical = (below[k] - below[j]) / (n - below[j])
                largest[i] = max(largest[i], abs(fitted - empirical))
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
                fitted = -np.expm1((1.0 - alpha[j]) * (log_unique[k] - log_unique[j]))
                empirical = (below[k] - below[j]) / (n - below[j])
                largest[i] = max(largest[i], abs(fitted - empirical))
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
    return lower, upper
