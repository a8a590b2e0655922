"""The collect loop: batches through the hooked model into the region writer."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from builders._capture import StatsCapture
from builders._packing import Batch
from store import StatsBlock, StatsWriter


@dataclass(frozen=True)
class RunResult:
    tokens_computed: int
    tokens_committed: int
    seconds: float


def collect(
    body: nn.Module,
    capture: StatsCapture,
    batches: Iterable[Batch],
    writer: StatsWriter,
    device: torch.device,
    progress: tqdm,
) -> RunResult:
    """Run every batch, hand its statistics to the writer, commit the tail."""
    started = time.perf_counter()
    computed = 0
    with capture:
        for batch in batches:
            token_ids = torch.as_tensor(batch.token_ids, device=device)
            values, channels = capture.run(body, token_ids)
            writer.append(
                StatsBlock(
                    start=batch.start,
                    values=values,
                    channels=channels,
                    token_ids=batch.token_ids.reshape(-1).astype("int32"),
                    doc_index=batch.doc_index.reshape(-1),
                )
            )
            computed += batch.n_tokens
            progress.update(max(0, batch.start + batch.n_tokens - progress.n))
            progress.set_postfix(committed=writer.committed, refresh=False)
    writer.flush()
    return RunResult(computed, writer.committed, time.perf_counter() - started)
