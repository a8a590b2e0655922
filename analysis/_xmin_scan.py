"""Exact KS-minimising xmin scan with pruning by lower bounds.

For every candidate xmin (each unique value but the two largest, as in
``powerlaw.Fit``) the KS distance is the largest gap between the fitted CDF and
the empirical CDF of the tail, over the tail's unique values. Evaluated on a
subset of those values it is a *lower bound*; between two evaluated points both
CDFs are monotone, which gives an *upper bound*. Candidates whose lower bound
exceeds the best upper bound (or the exact distance of a few promising
candidates) cannot win and are dropped; the subset grows (16, 64, 256, ...
points) until every survivor's distance is exact. The result is the exact
minimiser, computed in a fraction of the full O(m^2) work. Continuous fits use
the compiled kernel in ``_ks_kernel``; discrete fits the NumPy bounds below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# cdf(candidate indices (r,), point indices (r, k)) -> fitted CDF at unique[point] (r, k)
CdfFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]
# bounds(candidates, n_points, best, hints, peaks) -> (lower, upper, peaks): a compiled replacement of
# _blockwise; ``hints`` are point indices to check first (where the best candidate has its largest gaps),
# ``peaks`` per candidate the point of its largest gap in the previous round (-1: none), looked around next
Bounds = tuple[np.ndarray, np.ndarray, np.ndarray]
BoundsFunction = Callable[[np.ndarray, int, float, np.ndarray, np.ndarray], Bounds]
_HINTS = 16
_NO_HINTS = np.empty(0, np.int64)

_FIRST_POINTS = 16
_GROWTH = 4
_PROBES = 2  # candidates evaluated exactly per round (by lower and by upper bound) to tighten the best
_BLOCK_CELLS = 1 << 21  # candidates x points evaluated at once: bounds memory, not work


@dataclass(frozen=True)
class SortedSample:
    """Unique values of a sorted sample and, for each, how many values lie below it."""

    unique: np.ndarray
    below: np.ndarray
    n: int

    @classmethod
    def from_sorted(cls, values: np.ndarray) -> SortedSample:
        # the values are sorted: where each run of equal values starts is one comparison away
        # (np.unique would sort them again)
        starts = np.flatnonzero(np.concatenate((np.ones(min(values.size, 1), bool), values[1:] != values[:-1])))
        return cls(values[starts], starts.astype(np.int64), int(values.size))

    @property
    def n_candidates(self) -> int:
        return max(0, self.unique.size - 2)

    def n_tail(self, candidate: np.ndarray) -> np.ndarray:
        return self.n - self.below[candidate]


def _points(sample: SortedSample, candidates: np.ndarray, n_points: int) -> np.ndarray:
    """(r, n_points) unique-value indices spread evenly over each candidate's tail, ends included."""
    last = sample.unique.size - 1
    spread = np.linspace(0.0, 1.0, n_points)
    points = candidates[:, None] + np.floor(spread[None, :] * (last - candidates)[:, None] + 0.5)
    return points.astype(np.int64)


def _bounds(sample: SortedSample, cdf: CdfFunction, candidates: np.ndarray, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of each candidate's KS distance from ``n_points`` tail points."""
    points = _points(sample, candidates, n_points)
    fitted = cdf(candidates, points)
    n_tail = sample.n_tail(candidates)[:, None]
    empirical = (sample.below[points] - sample.below[candidates][:, None]) / n_tail
    lower = np.abs(fitted - empirical).max(axis=1)
    between = np.maximum(fitted[:, 1:] - empirical[:, :-1], empirical[:, 1:] - fitted[:, :-1])
    upper = np.maximum(lower, between.max(axis=1, initial=0.0))
    return lower, upper


def _blockwise(sample: SortedSample, cdf: CdfFunction, candidates: np.ndarray, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    rows = max(1, _BLOCK_CELLS // n_points)
    parts = [_bounds(sample, cdf, candidates[i : i + rows], n_points) for i in range(0, candidates.size, rows)]
    if not parts:
        return np.empty(0), np.empty(0)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def ks_distances(sample: SortedSample, cdf: CdfFunction, candidates: np.ndarray) -> np.ndarray:
    """Exact KS distance of each given candidate (every tail point evaluated)."""
    result = np.empty(candidates.size)
    for i, candidate in enumerate(candidates):
        n_points = sample.unique.size - candidate
        result[i] = _bounds(sample, cdf, np.array([candidate]), n_points)[0][0]
    return result


def _numpy_bounds(sample: SortedSample, cdf: CdfFunction) -> BoundsFunction:
    def bounds(candidates: np.ndarray, n_points: int, best: float, hints: np.ndarray, peaks: np.ndarray) -> Bounds:
        return (*_blockwise(sample, cdf, candidates, n_points), peaks)

    return bounds


def _no_peaks(size: int) -> np.ndarray:
    return np.full(size, -1, np.int64)


def _exact_best(sample: SortedSample, bounds: BoundsFunction, candidates: np.ndarray, best: float = np.inf,
                hints: np.ndarray = _NO_HINTS) -> tuple[float, int]:
    """Smallest exact distance among a few promising candidates, and which one: a tight bound.

    A candidate whose partial distance already exceeds ``best`` stops there: its value is then above
    ``best`` (not exact), which is all the caller needs to know of it.
    """
    if candidates.size == 0:
        return np.inf, -1
    longest_tail = int(sample.unique.size - candidates.min())  # enough points to cover every tail
    exact = bounds(candidates, longest_tail, best, hints, _no_peaks(candidates.size))[0]
    return float(exact.min()), int(candidates[np.argmin(exact)])


def _largest_gaps(sample: SortedSample, cdf: CdfFunction, candidate: int) -> np.ndarray:
    """The points where ``candidate``'s fitted and empirical CDFs differ most."""
    points = np.arange(candidate, sample.unique.size)
    fitted = cdf(np.array([candidate]), points[None, :])[0]
    empirical = (sample.below[points] - sample.below[candidate]) / sample.n_tail(np.array([candidate]))[0]
    return points[_smallest(-np.abs(fitted - empirical), _HINTS)]


def _smallest(values: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` smallest values (unordered), without a full sort."""
    if values.size <= count:
        return np.arange(values.size)
    return np.argpartition(values, count)[:count]


def _warm_start(sample: SortedSample, cdf: CdfFunction, bounds: BoundsFunction, valid: np.ndarray,
                guess: int | None) -> tuple[float, np.ndarray, np.ndarray]:
    """(best, probed, hints) after evaluating a guessed candidate exactly, if it is a valid one.

    A good guess (a bootstrap replicate's refit starts at the data's own xmin) gives the first round a
    finite bound and the points where to look: most candidates then fall at their first hint.
    """
    if guess is None or not 0 <= guess < valid.size or not valid[guess]:
        return np.inf, np.empty(0, np.int64), _NO_HINTS
    best, _ = _exact_best(sample, bounds, np.array([guess], np.int64))
    return best, np.array([guess], np.int64), _largest_gaps(sample, cdf, guess)


def scan(sample: SortedSample, cdf: CdfFunction, valid: np.ndarray, bounds: BoundsFunction | None = None,
         guess: int | None = None, stop_below: float | None = None) -> tuple[int, float]:
    """(index, KS distance) of the best valid candidate: smallest distance, then smallest xmin.

    ``guess`` (a candidate index) only changes how fast the answer comes, never the answer.
    ``stop_below`` asks the bootstrap's cheaper question, whether the smallest distance is below it:
    the scan returns as soon as some candidate's distance is shown to be below (that candidate and
    its distance, or an upper bound of it that is below), drops every candidate that cannot get below,
    and returns (-1, inf) when none can. (-1, nan): no valid candidate at all.
    """
    bounds = bounds or _numpy_bounds(sample, cdf)
    active = np.flatnonzero(valid)
    if active.size == 0:
        return -1, float("nan")
    ceiling = np.inf if stop_below is None else stop_below  # no candidate above it matters
    n_points = _FIRST_POINTS
    best, probed, hints = _warm_start(sample, cdf, bounds, valid, guess)
    where = guess if np.isfinite(best) else -1
    peaks = _no_peaks(active.size)
    while stop_below is None or best >= stop_below:
        tail_points = sample.unique.size - active
        bar = min(best, ceiling) * (1 + 1e-12)
        lower, upper, peaks = bounds(active, n_points, bar, hints, peaks)
        promising = np.setdiff1d(active[np.concatenate([_smallest(lower, _PROBES), _smallest(upper, _PROBES)])], probed)
        probed = np.union1d(probed, promising)
        probe_best, probe_winner = _exact_best(sample, bounds, promising, bar, hints)
        if probe_best < best:
            hints = _largest_gaps(sample, cdf, probe_winner)
            best, where = probe_best, probe_winner
        if upper.min() < best:  # an upper bound below every exact distance so far
            best, where = float(upper.min()), int(active[np.argmin(upper)])
        keep = lower <= min(best, ceiling) * (1 + 1e-12)  # exact ties must survive: the smallest xmin wins them
        active, tail_points, lower, peaks = active[keep], tail_points[keep], lower[keep], peaks[keep]
        if active.size == 0:  # only with stop_below: every candidate is at least stop_below
            return -1, np.inf
        if np.all(tail_points <= n_points):
            winner = np.flatnonzero(lower == lower.min())[0]
            return int(active[winner]), float(lower[winner])
        n_points = min(n_points * _GROWTH, int(tail_points.max()))
    return int(where), float(best)
