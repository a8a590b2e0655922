"""A ``stats`` store of N synthetic tokens, written through the store's own session and unit writers.

The benches that need more tokens than SmolLM2 can produce here in minutes draw the values; ``draw``
gives each unit's (values (layer, metric, token), channel values (layer, token, channel), peaks
(layer, token)); token ids and documents are filled in the same way for every bench.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from store import (
    ModelSlot,
    StatsBlock,
    StatsLayout,
    StoreLocation,
    UnitWriter,
    finish,
    open_session,
    plan_units,
    publish_prefix,
    write_unit_tokens,
)

SEQ_LEN = 1000
VOCABULARY = 49_152
HIDDEN_SIZE = 576
Draw = Callable[[np.random.Generator, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _attrs(n_tokens: int, metrics: tuple[str, ...]) -> dict[str, Any]:
    return {"format": "activation-stats", "format_version": 2, "metric_definitions": {m: "synthetic" for m in metrics},
            "dataset": {"name": "synthetic"}, "created": "now", "versions": {}, "token_chunk": 8 * SEQ_LEN,
            "build_config": {"data": {"max_seq_len": SEQ_LEN, "max_tokens": n_tokens}, "stats": {}}}


def _slot(layers: tuple[str, ...], n_channels: int) -> ModelSlot:
    channels = np.stack([np.sort(np.random.default_rng(i).choice(HIDDEN_SIZE, n_channels, replace=False))
                         for i in range(len(layers))]).astype(np.int32)
    return ModelSlot("synthetic", np.arange(len(layers)) * 15 - 1, channels,
                     {"model_id": "synthetic", "revision": "", "config": {}, "created": "now", "versions": {},
                      "hidden_size": HIDDEN_SIZE})


def build_store(path: Path, n_tokens: int, layers: tuple[str, ...], metrics: tuple[str, ...], n_channels: int,
                draw: Draw) -> StoreLocation:
    """Write the store at ``path`` unit by unit, as a build would, and return its location."""
    layout = StatsLayout(layers=layers, metrics=metrics, n_tokens=n_tokens, n_channels=n_channels,
                         token_chunk=8 * SEQ_LEN)
    location = StoreLocation(str(path))
    session = open_session(location, layout, _slot(layers, n_channels), _attrs(n_tokens, metrics))
    rng = np.random.default_rng(0)
    units = plan_units(n_tokens, layout.shard_tokens)
    for unit in units:
        values, channel_values, peaks = draw(rng, unit.start, unit.n_tokens)
        token_ids = rng.integers(0, VOCABULARY, unit.n_tokens).astype(np.int32)
        documents = (unit.start + np.arange(unit.n_tokens)) // 3000
        write_unit_tokens(session.group, session.slot, unit, token_ids, documents, None)
        writer = UnitWriter(session.group, session.slot, unit, None, None, commit_seconds=3600.0)
        writer.append(StatsBlock(unit.start, values, channel_values, peaks))
        writer.commit()
    publish_prefix(session.group, session.slot, units, None)
    finish(location, session, n_tokens)
    return location
