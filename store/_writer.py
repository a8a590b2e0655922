"""Chunk-aligned region writes with a commit marker after each region.

A build fills one model slot of the ``stats`` group token chunk by token chunk.
Each region covers whole inner chunks and is followed by an update of
``committed_tokens[slot]``, the commit marker: readers and a resumed build trust
nothing past it. Chunk writes are atomic (local: temp file + rename; S3: one PUT),
so a kill at any moment leaves every committed chunk intact. Every inner chunk is
stored even when it equals the fill value (an all-zero ``doc_index`` chunk is
common), so a missing chunk inside a committed range always means damage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from store._lease import Lease
from store._schema import STREAMED


@dataclass(frozen=True)
class StatsBlock:
    """Per-token results for consecutive tokens ``start .. start + n``."""

    start: int
    values: np.ndarray  # (layer, metric, n) float32
    channels: np.ndarray  # (layer, n, channel) float32
    token_ids: np.ndarray  # (n,)
    doc_index: np.ndarray  # (n,)

    @property
    def n_tokens(self) -> int:
        return int(self.token_ids.shape[0])

    def tail(self, first: int) -> StatsBlock:
        """The part of this block from absolute token ``first`` on."""
        skip = max(0, first - self.start)
        return StatsBlock(
            start=self.start + skip,
            values=self.values[:, :, skip:],
            channels=self.channels[:, skip:],
            token_ids=self.token_ids[skip:],
            doc_index=self.doc_index[skip:],
        )


def concat_blocks(blocks: list[StatsBlock]) -> StatsBlock:
    return StatsBlock(
        start=blocks[0].start,
        values=np.concatenate([b.values for b in blocks], axis=2),
        channels=np.concatenate([b.channels for b in blocks], axis=1),
        token_ids=np.concatenate([b.token_ids for b in blocks]),
        doc_index=np.concatenate([b.doc_index for b in blocks]),
    )


class StatsWriter:
    """Buffers blocks up to one token chunk, then writes and commits that region."""

    def __init__(self, group: zarr.Group, slot: int, token_chunk: int, committed: int,
                 lease: Lease | None = None) -> None:
        self._arrays = {name: group[name].with_config({"write_empty_chunks": True}) for name in STREAMED}
        self._group = group
        self._lease = lease
        self._slot = slot
        self._token_chunk = token_chunk
        self._n_tokens = int(group["value"].shape[-1])
        self.committed = committed
        self._buffer: list[StatsBlock] = []

    @property
    def _buffered_end(self) -> int:
        return self._buffer[-1].start + self._buffer[-1].n_tokens if self._buffer else self.committed

    def append(self, block: StatsBlock) -> None:
        """Add a block; tokens already committed (a resumed build) are dropped."""
        block = block.tail(self._buffered_end)
        if block.n_tokens == 0:
            return
        self._buffer.append(block)
        while self.committed < self._n_tokens and (
            self._buffered_end - self.committed >= self._region_size()
        ):
            self._write_region(self._region_size())

    def flush(self) -> None:
        """Write whatever is buffered (the last, partial chunk of a build)."""
        if self._buffer:
            self._write_region(self._buffered_end - self.committed)

    def _region_size(self) -> int:
        return min(self._token_chunk, self._n_tokens - self.committed)

    def _write_region(self, size: int) -> None:
        merged = concat_blocks(self._buffer)
        start, end = self.committed, self.committed + size
        region = slice(0, size)
        arrays = {
            "value": (np.s_[self._slot, :, :, start:end], merged.values[:, :, region]),
            "channel_value": (np.s_[self._slot, :, start:end, :], merged.channels[:, region]),
            "token_id": (np.s_[self._slot, start:end], merged.token_ids[region]),
            "doc_index": (np.s_[self._slot, start:end], merged.doc_index[region]),
        }
        if self._lease is not None:
            self._lease.ensure_held()  # never write after another build may have taken over
        for name in STREAMED:
            selection, data = arrays[name]
            self._arrays[name][selection] = data
        self._group["committed_tokens"][self._slot] = end
        self.committed = end
        rest = merged.tail(end)
        self._buffer = [rest] if rest.n_tokens else []
