"""The contract of the ``vectors`` group (store/_vectors.py), for ``validate_store``."""

from __future__ import annotations

import math

import numpy as np
import zarr

from store._location import StoreLocation, quiet_top_node
from store._schema import UNIT_COMMITTED, UNIT_EMPTY
from store._vectors import (
    FEATURE_DIMS,
    POOLING_PARTS,
    POOLINGS,
    VECTOR_DTYPES,
    VECTORS_FORMAT,
    VECTORS_GROUP,
    VECTORS_VERSION,
)

_FIXED = {"n_tokens": ("model", "doc"), "unit_state": ("model", "unit"), "doc_id": ("doc",), "model": ("model",),
          "doc_digest": ("doc",)}


def vector_problems(location: StoreLocation) -> list[str]:
    """Every broken rule of the store's ``vectors`` group ([] when it has none)."""
    with quiet_top_node(location, VECTORS_GROUP) as group:
        if group is None:
            return []
        problems = _attr_problems(group)
        if problems:
            return problems
        problems = _shape_problems(group)
        return problems or _content_problems(group, location)


def _attr_problems(group: zarr.Group) -> list[str]:
    attrs = group.attrs
    if attrs.get("format") != VECTORS_FORMAT:
        return [f"vectors: format is {attrs.get('format')!r}, not {VECTORS_FORMAT!r}"]
    if attrs.get("format_version") != VECTORS_VERSION:
        return [f"vectors: format_version is {attrs.get('format_version')!r}; this version reads {VECTORS_VERSION}"]
    problems = [f"vectors: attribute {name!r} is missing" for name in ("hidden_size", "unit_docs", "build_config",
                                                                       "models") if name not in attrs]
    built = [pooling for pooling in POOLINGS if pooling in group]
    missing = [name for name in [*_FIXED, *(f"{p}_{part}" for p in built for part in ("sum", "mean"))]
               if name not in group]
    problems += [f"vectors: array {name!r} is missing" for name in missing]
    if not any(pooling in group for pooling in POOLINGS):
        problems.append(f"vectors: no pooled vectors (none of {list(POOLINGS)!r})")
    return problems


def _expected_dims(pooling: str) -> dict[str, tuple[str, ...]]:
    dim = FEATURE_DIMS[pooling]
    return {pooling: ("model", "doc", dim), f"{pooling}_sum": ("model", "unit", dim), f"{pooling}_mean": ("model", dim)}


def _shape_problems(group: zarr.Group) -> list[str]:
    hidden, unit_docs = int(group.attrs["hidden_size"]), int(group.attrs["unit_docs"])
    n_models, n_docs = group["model"].shape[0], group["doc_id"].shape[0]
    sizes = {"model": n_models, "doc": n_docs, "unit": math.ceil(n_docs / unit_docs)}
    expected = dict(_FIXED)
    for pooling in (p for p in POOLINGS if p in group):
        expected |= _expected_dims(pooling)
        sizes[FEATURE_DIMS[pooling]] = hidden * POOLING_PARTS[pooling]
    problems = []
    for name, dims in expected.items():
        array = group[name]
        want = tuple(sizes[dim] for dim in dims)
        if tuple(array.metadata.dimension_names or ()) != dims or array.shape != want:
            problems.append(f"vectors/{name}: dims {array.metadata.dimension_names} shape {array.shape}, "
                            f"expected {dims} {want}")
    return problems + _dtype_problems(group, unit_docs)


def _dtype_problems(group: zarr.Group, unit_docs: int) -> list[str]:
    problems = []
    for pooling in (p for p in POOLINGS if p in group):
        array = group[pooling]
        if str(array.dtype) not in VECTOR_DTYPES:
            problems.append(f"vectors/{pooling}: dtype {array.dtype}, expected one of {VECTOR_DTYPES}")
        if array.chunks[:2] != (1, unit_docs) or array.chunks[2] != array.shape[2]:
            problems.append(f"vectors/{pooling}: chunks {array.chunks}, expected (1, {unit_docs}, {array.shape[2]}) "
                            "(one chunk per model and unit)")
    for name, dtype in (("n_tokens", np.int32), ("unit_state", np.int8)):
        if group[name].dtype != dtype:
            problems.append(f"vectors/{name}: dtype {group[name].dtype}, expected {np.dtype(dtype)}")
    return problems


def _content_problems(group: zarr.Group, location: StoreLocation) -> list[str]:
    doc_ids = [str(doc_id) for doc_id in group["doc_id"][:]]
    problems = [] if len(set(doc_ids)) == len(doc_ids) else ["vectors/doc_id: document ids repeat"]
    labels = [str(label) for label in group["model"][:]]
    models = group.attrs.get("models", {})
    stored_chunks = {pooling: _stored_chunks(location, pooling) for pooling in POOLINGS if pooling in group}
    for slot, label in enumerate(labels):
        if label and label not in models:
            problems.append(f"vectors: model {label!r} has no provenance in the group's 'models' attribute")
        if label:
            problems += _slot_problems(group, slot, label, stored_chunks)
    return problems


def _slot_problems(group: zarr.Group, slot: int, label: str, stored_chunks: dict[str, set[tuple[int, ...]]]) -> list[str]:
    states = np.asarray(group["unit_state"][slot])
    unknown = sorted(set(states.tolist()) - {UNIT_EMPTY, UNIT_COMMITTED})
    if unknown:
        return [f"vectors/unit_state: model {label!r} has unit states {unknown}, expected 0 or {UNIT_COMMITTED}"]
    unit_docs, n_docs = int(group.attrs["unit_docs"]), group["doc_id"].shape[0]
    committed = np.flatnonzero(states == UNIT_COMMITTED)
    problems = []
    for pooling in (p for p in POOLINGS if p in group):
        lost = [int(unit) for unit in committed if (slot, int(unit), 0) not in stored_chunks[pooling]]
        if lost:
            problems.append(f"vectors/{pooling}: model {label!r} unit {lost[0]} is committed but its chunk is "
                            f"missing ({len(lost)} such units): restore it from a copy or rebuild that model")
        if committed.size == states.size:
            problems += _mean_problems(group, slot, label, pooling, n_docs)
    lengths = np.asarray(group["n_tokens"][slot])
    committed_docs = np.repeat(states == UNIT_COMMITTED, unit_docs)[:n_docs]
    if (lengths[committed_docs] <= 0).any():
        problems.append(f"vectors/n_tokens: model {label!r} has committed documents of length 0")
    return problems


def _stored_chunks(location: StoreLocation, array: str) -> set[tuple[int, ...]]:
    """The chunk keys of one vectors array that exist, from one listing (no data read: a store of a million
    documents on S3 is checked in a few requests)."""
    fs, root = location.filesystem()
    prefix = f"{root.rstrip('/')}/{VECTORS_GROUP}/{array}/c/"
    try:
        paths = fs.find(prefix)
    except FileNotFoundError:
        return set()
    keys = set()
    for path in paths:
        parts = path[path.find("/c/") + 3:].split("/")
        if all(part.isdigit() for part in parts):
            keys.add(tuple(int(part) for part in parts))
    return keys


def _mean_problems(group: zarr.Group, slot: int, label: str, pooling: str, n_docs: int) -> list[str]:
    mean = np.asarray(group[f"{pooling}_mean"][slot])
    expected = np.asarray(group[f"{pooling}_sum"][slot]).sum(axis=0) / n_docs
    if np.isnan(mean).any():
        return [(f"vectors/{pooling}_mean: model {label!r} has every unit committed but no corpus mean "
                 "(rerun the build to finish it)")]
    if not np.allclose(mean, expected, rtol=1e-9, atol=1e-12):
        return [f"vectors/{pooling}_mean: model {label!r}'s mean is not the sum of its units' sums / {n_docs}"]
    return []
