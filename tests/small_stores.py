"""Small valid stores written through the store API (no model): the base that tests break or extend."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import zarr

from store import (
    ModelSlot,
    StatsBlock,
    StatsLayout,
    StoreLocation,
    UnitWriter,
    WriteSession,
    consolidate,
    finish,
    open_session,
    plan_units,
    publish_prefix,
    write_unit_tokens,
)

LAYOUT = StatsLayout(layers=("embed", "layer_1"), metrics=("rms", "kurtosis"), n_tokens=600, n_channels=2,
                     token_chunk=200)
ATTRS = {"format": "activation-stats", "format_version": 2, "metric_definitions": {"rms": "", "kurtosis": ""},
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
        write_slot(session, rng.normal(size=(2, 2, 600)).astype(np.float32),
                   rng.normal(size=(2, 600, 2)).astype(np.float32), np.arange(600, dtype=np.int32), np.arange(600) // 50)
        finish(location, session, 600)
    return location


def write_slot(session: WriteSession, values: np.ndarray, channels: np.ndarray, token_ids: np.ndarray,
               doc_index: np.ndarray) -> None:
    """Write and commit every unit of a model slot, in order, as a build does (no leases)."""
    units = plan_units(token_ids.shape[0], session.layout.shard_tokens)
    for unit in units:
        tokens = slice(unit.start, unit.end)
        write_unit_tokens(session.group, session.slot, unit, token_ids[tokens], doc_index[tokens], None)
        writer = UnitWriter(session.group, session.slot, unit, None, None, commit_seconds=60.0)
        peaks = np.argmax(np.abs(values), axis=1).astype(np.int32)  # any int32 (layer, token) will do
        writer.append(StatsBlock(unit.start, values[:, :, tokens], channels[:, tokens], peaks[:, tokens]))
        writer.commit()
    publish_prefix(session.group, session.slot, units, None)


def tree_digest(path: Path) -> str:
    """One digest over every file's name and bytes below ``path``: any change to a store changes it."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def downgrade_to_format_1(location: StoreLocation) -> None:
    """Make a store what format 1 wrote: no unit markers, no argmax_channel, format_version 1 (the base
    of upgrade tests, and of the tests that stores without argmax_channel keep working)."""
    group = zarr.open_group(location.zarr_store(), path="stats", mode="r+", use_consolidated=False)
    del group["unit_state"]
    del group["argmax_channel"]
    attrs = dict(group.attrs)
    attrs.pop("unit_tokens", None)
    group.attrs.clear()
    group.attrs.update({**attrs, "format_version": 1})
    consolidate(location)


def copy_store(source: Path, target: Path) -> Path:
    """A copy of a store, for a test that writes into it."""
    shutil.copytree(source, target)
    return target
