"""Reductions over one token series, block by block (one dask task per shard), in bounded memory.

Written by hand over ``dask.delayed`` because neither dask nor xarray has the two we need:
``dask.array.argtopk`` breaks ties between equal values arbitrarily (a query must give the
same rows every time, and the same as a NumPy brute force), and a group-by whose groups are
the values of another lazy array (token ids, positions) needs those values computed first in
xarray. Each block is reduced to at most k candidates, or to one row per group, then the
blocks are merged: the whole series is never held at once.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pandas as pd

_STATS = ("count", "sum", "max")


def _offsets(array: da.Array) -> list[int]:
    return [0, *np.cumsum(array.chunks[0]).tolist()[:-1]]


def _block_top(values: np.ndarray, start: int, k: int, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    """The k best (value, index) of one block: by value, then by index ascending; NaN never."""
    index = np.flatnonzero(~np.isnan(values))
    kept = values[index].astype(np.float64)
    key = -kept if largest else kept  # ascending key: the best first
    if kept.size > k:
        bound = np.partition(key, k - 1)[k - 1]
        inside = key < bound
        ties = np.flatnonzero(key == bound)[: k - int(inside.sum())]  # lowest indices among equal values
        chosen = np.sort(np.concatenate([np.flatnonzero(inside), ties]))
        index, kept = index[chosen], kept[chosen]
    return kept, index + start


def _merge_top(parts: list[tuple[np.ndarray, np.ndarray]], k: int, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    values = np.concatenate([values for values, _ in parts])
    index = np.concatenate([index for _, index in parts])
    order = np.lexsort((index, -values if largest else values))[:k]
    return values[order], index[order]


def top_k(series: da.Array, k: int, largest: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The k largest (or smallest) values of a 1-D series and their positions, ties by position."""
    blocks = series.to_delayed().ravel()
    parts = [dask.delayed(_block_top)(block, start, k, largest) for block, start in zip(blocks, _offsets(series))]
    merged = dask.delayed(_merge_top)(parts, k, largest)
    values, index = merged.compute()
    return values, index


def _block_groups(keys: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"key": np.asarray(keys).ravel(), "value": np.asarray(values, np.float64).ravel()})
    return frame.groupby("key")["value"].agg(["count", "sum", "max"])


def _merge_groups(parts: list[pd.DataFrame]) -> pd.DataFrame:
    stacked = pd.concat(parts)
    merged = stacked.groupby(level=0).agg({"count": "sum", "sum": "sum", "max": "max"})
    merged["mean"] = merged["sum"] / merged["count"].where(merged["count"] > 0)
    return merged[["count", "mean", "max"]]


def group_stats(keys: da.Array, values: da.Array) -> pd.DataFrame:
    """count (of non-NaN values), mean and max of ``values`` per distinct ``keys``; keys as the index."""
    values = values.rechunk(keys.chunks)
    parts = [dask.delayed(_block_groups)(key_block, value_block)
             for key_block, value_block in zip(keys.to_delayed().ravel(), values.to_delayed().ravel())]
    return dask.delayed(_merge_groups)(parts).compute()


def _block_counts(keys: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(np.asarray(keys).ravel(), minlength=size)[:size]


def value_counts(keys: da.Array, size: int) -> np.ndarray:
    """How often each of 0 .. size-1 occurs in ``keys`` (non-negative integers below ``size``)."""
    parts = [dask.delayed(_block_counts)(block, size) for block in keys.to_delayed().ravel()]
    return dask.delayed(sum)(parts).compute()
