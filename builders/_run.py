"""Computing one work unit: its tokens from the store, through the hooked model, into its writer.

The same function runs in the build's own process and in a dask worker: a unit's
result never depends on where or when it was computed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import zarr
from torch import nn
from tqdm.auto import tqdm

from builders._capture import StatsCapture
from builders._packing import Batch, unit_batches
from builders._runtime import ModelRuntime
from store import (
    STATS_GROUP,
    UNIT_COMMITTED,
    Staging,
    StatsBlock,
    StoreLocation,
    Unit,
    UnitWriter,
    claim_unit,
    slot_key,
    unit_state,
)


@dataclass(frozen=True)
class UnitJob:
    """What computing any unit of one model slot needs besides the model (sent to workers)."""

    location: StoreLocation
    label: str
    slot: int
    metrics: tuple[str, ...]
    seq_len: int
    batch_size: int
    commit_seconds: float
    plugin: str = ""  # on a cluster: the name of the worker plugin holding this build's model


def compute_unit(runtime: ModelRuntime, job: UnitJob, unit: Unit, progress: tqdm | None = None) -> int:
    """Compute and commit ``unit`` under its claim; returns the tokens computed (0: already committed)."""
    with claim_unit(job.location, slot_key(STATS_GROUP, job.label), unit, f"collect model {job.label!r}") as claim:
        group = zarr.open_group(job.location.zarr_store(), path=STATS_GROUP, mode="r+", use_consolidated=False)
        staging = Staging(job.location, STATS_GROUP, job.label, unit.index)
        if unit_state(group, job.slot, unit) == UNIT_COMMITTED:
            staging.clear()  # committed by a writer killed before it cleaned up
            return 0
        writer = UnitWriter(group, job.slot, unit, claim, staging, job.commit_seconds)
        if progress is not None:
            progress.update(writer.resume_at - unit.start)  # checkpointed before a kill: not computed again
        token_ids = group["token_id"][job.slot, writer.resume_at:unit.end]
        capture = StatsCapture(runtime.modules, job.metrics, group["channel_index"][job.slot])
        batches = unit_batches(token_ids, writer.resume_at, job.seq_len, job.batch_size)
        computed = run_batches(runtime.body, capture, batches, writer, runtime.device, progress)
        writer.commit()
    return computed


def run_batches(body: nn.Module, capture: StatsCapture, batches: Iterable[Batch], writer: UnitWriter,
                device: torch.device, progress: tqdm | None) -> int:
    """Run every batch through the hooked model into the writer; returns the tokens computed."""
    computed = 0
    with capture:
        for batch in batches:
            values, channels, peaks = capture.run(body, torch.as_tensor(batch.token_ids, device=device))
            writer.append(StatsBlock(batch.start, values, channels, peaks))
            computed += batch.token_ids.size
            if progress is not None:
                progress.update(batch.token_ids.size)
    return computed
