"""Small valid stores written through the store API (no model): the base that tests break or extend."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from store import ModelSlot, StatsBlock, StatsLayout, StatsWriter, StoreLocation, finish, open_session

LAYOUT = StatsLayout(layers=("embed", "layer_1"), metrics=("rms", "kurtosis"), n_tokens=600, n_channels=2,
                     token_chunk=200)
ATTRS = {"format": "activation-stats", "format_version": 1, "metric_definitions": {"rms": "", "kurtosis": ""},
         "dataset": {"name": "test"}, "build_config": {"max_tokens": 600}, "token_chunk": 200,
         "created": "now", "versions": {}}


def model_slot(label: str) -> ModelSlot:
    provenance = {"model_id": label, "revision": "", "config": {"name": label}, "created": "now", "versions": {}}
    return ModelSlot(label, np.array([-1, 1]), np.array([[0, 3], [0, 3]]), provenance)


def build_valid_store(path: Path, labels: tuple[str, ...] = ("m",)) -> StoreLocation:
    """A valid store of ``labels`` models, every token committed, random values."""
    location = StoreLocation(str(path))
    rng = np.random.default_rng(0)
    for label in labels:
        session = open_session(location, LAYOUT, model_slot(label), ATTRS)
        writer = StatsWriter(session.group, session.slot, LAYOUT.token_chunk, 0)
        writer.append(StatsBlock(0, rng.normal(size=(2, 2, 600)).astype(np.float32),
                                 rng.normal(size=(2, 600, 2)).astype(np.float32),
                                 np.arange(600, dtype=np.int32), np.arange(600) // 50))
        writer.flush()
        finish(location, session, 600)
    return location


def tree_digest(path: Path) -> str:
    """One digest over every file's name and bytes below ``path``: any change to a store changes it."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()
