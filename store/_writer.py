"""Writing one work unit of the ``stats`` group: tokens first, statistics once, then its marker.

A build first writes ``token_id`` and ``doc_index`` of a unit (``write_unit_tokens``,
marker UNIT_TOKENIZED), then computes the unit's statistics and hands them to a
``UnitWriter``, which writes each shard of the unit exactly once, when the unit is
complete, and only then sets the unit's marker to UNIT_COMMITTED. Work that takes
longer than the commit interval is checkpointed in the meantime (``store/_staging.py``),
so a kill loses at most about one interval. Chunk writes are atomic (local: temp file
+ rename; S3: one PUT) and every inner chunk is stored even when it equals the fill
value (an all-zero ``doc_index`` chunk is common), so a missing chunk inside a committed
unit always means damage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import zarr

from store._lease import Lease
from store._schema import ARGMAX_CHANNEL, UNIT_COMMITTED, UNIT_TOKENIZED
from store._staging import Staging
from store._units import Unit, mark_unit


@dataclass(frozen=True)
class StatsBlock:
    """Per-token statistics for consecutive tokens ``start .. start + n``."""

    start: int
    values: np.ndarray  # (layer, metric, n) float32
    channels: np.ndarray  # (layer, n, channel) float32
    peaks: np.ndarray | None = None  # (layer, n) int32: argmax_channel (None: not computed)

    @property
    def n_tokens(self) -> int:
        return int(self.values.shape[-1])

    @property
    def end(self) -> int:
        return self.start + self.n_tokens

    def tail(self, first: int) -> StatsBlock:
        """The part of this block from absolute token ``first`` on."""
        skip = max(0, first - self.start)
        peaks = None if self.peaks is None else self.peaks[:, skip:]
        return StatsBlock(self.start + skip, self.values[:, :, skip:], self.channels[:, skip:], peaks)

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = {"values": self.values, "channels": self.channels}
        return arrays if self.peaks is None else {**arrays, "peaks": self.peaks}


def concat_blocks(blocks: list[StatsBlock]) -> StatsBlock:
    # a checkpoint saved by a build that did not compute peaks leaves the unit without them
    peaks = None if any(b.peaks is None for b in blocks) else np.concatenate([b.peaks for b in blocks], axis=1)
    return StatsBlock(
        start=blocks[0].start,
        values=np.concatenate([b.values for b in blocks], axis=2),
        channels=np.concatenate([b.channels for b in blocks], axis=1),
        peaks=peaks,
    )


def _streamed(group: zarr.Group, name: str) -> zarr.Array:
    return group[name].with_config({"write_empty_chunks": True})


def write_unit_tokens(group: zarr.Group, slot: int, unit: Unit, token_ids: np.ndarray,
                      doc_index: np.ndarray, lease: Lease | None) -> None:
    """Write the unit's ``token_id`` and ``doc_index`` (one shard each), then mark it tokenized."""
    if lease is not None:
        lease.ensure_held()
    end = unit.start + token_ids.shape[0]
    _streamed(group, "token_id")[slot, unit.start:end] = token_ids.astype(np.int32)
    _streamed(group, "doc_index")[slot, unit.start:end] = doc_index.astype(np.int64)
    mark_unit(group, slot, unit, UNIT_TOKENIZED, lease)


class UnitWriter:
    """Collects one unit's statistics; checkpoints every ``commit_seconds``; writes the unit once."""

    def __init__(self, group: zarr.Group, slot: int, unit: Unit, claim: Lease | None,
                 staging: Staging | None, commit_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._group, self._slot, self.unit, self._claim = group, slot, unit, claim
        self._staging, self._commit_seconds, self._clock = staging, commit_seconds, clock
        self._blocks: list[StatsBlock] = []
        self.resume_at = unit.start
        self._has_peaks = ARGMAX_CHANNEL in group  # stores written before argmax_channel go on without it
        if staging is not None:
            self.resume_at, parts = staging.load(unit.start)
            if self._has_peaks and any("peaks" not in part for part in parts):
                self.resume_at, parts = unit.start, []  # checkpoints of a build before peaks: computed again
            self._blocks = _staged_blocks(unit.start, parts)
        self._staged_until = self.resume_at
        self._last_checkpoint = clock()

    @property
    def buffered_end(self) -> int:
        return self._blocks[-1].end if self._blocks else self.unit.start

    def append(self, block: StatsBlock) -> None:
        """Add the next block (ending on a batch boundary); tokens already held are dropped."""
        block = block.tail(self.buffered_end)
        if block.n_tokens == 0:
            return
        self._blocks.append(block)
        if self.buffered_end < self.unit.end and self._clock() - self._last_checkpoint >= self._commit_seconds:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Save what was computed since the last checkpoint, so a kill does not lose it."""
        if self._staging is None or self.buffered_end <= self._staged_until:
            return
        # only the blocks since the last checkpoint: concatenating the whole unit each time is quadratic
        fresh = concat_blocks([block for block in self._blocks if block.end > self._staged_until])
        fresh = fresh.tail(self._staged_until)
        if self._claim is not None:
            self._claim.ensure_held()
        self._staging.save(fresh.start, fresh.end, fresh.arrays())
        self._staged_until, self._last_checkpoint = fresh.end, self._clock()

    def commit(self) -> None:
        """Write every shard of the unit once, then its marker; then drop its checkpoints."""
        merged = concat_blocks(self._blocks)
        if merged.start != self.unit.start or merged.end != self.unit.end:
            raise RuntimeError(f"unit {self.unit.index} holds tokens {merged.start}..{merged.end}, "
                               f"expected {self.unit.start}..{self.unit.end}")
        if self._claim is not None:
            self._claim.ensure_held()  # never write after another writer may have taken the unit over
        tokens = slice(self.unit.start, self.unit.end)
        _streamed(self._group, "value")[self._slot, :, :, tokens] = merged.values
        _streamed(self._group, "channel_value")[self._slot, :, tokens, :] = merged.channels
        if self._has_peaks:
            if merged.peaks is None:  # a caller's bug, not input: builds always hand peaks over
                raise RuntimeError(f"unit {self.unit.index} has no argmax_channel to write")
            _streamed(self._group, ARGMAX_CHANNEL)[self._slot, :, tokens] = merged.peaks
        mark_unit(self._group, self._slot, self.unit, UNIT_COMMITTED, self._claim)
        if self._staging is not None:
            self._staging.clear()


def _staged_blocks(start: int, parts: list[dict[str, np.ndarray]]) -> list[StatsBlock]:
    blocks = []
    for part in parts:
        blocks.append(StatsBlock(start, part["values"], part["channels"], part.get("peaks")))
        start = blocks[-1].end
    return blocks
