"""The ``vectors`` group: one pooled vector per document per model, committed unit by unit.

Layout (docs/store-format.md is the prose version; keep them in step):

- ``short`` (model, doc, feature) and ``long`` (model, doc, long_feature): the pooled
  vectors of each pooling built, in the stored dtype (float16 by default), NaN until committed;
- ``short_mean`` / ``long_mean`` (model, feature | long_feature) float64: the corpus mean, set
  when every unit of the model is committed (NaN before);
- ``short_sum`` / ``long_sum`` (model, unit, ...) float64: each unit's sum of the float32
  pooled vectors, committed with the unit, so the mean never depends on the stored dtype
  nor on which run computed which unit;
- ``n_tokens`` (model, doc) int32: each document's length in tokens (its tokenizer's);
- ``unit_state`` (model, unit) int8: 0 empty, 2 committed, the commit marker of the unit
  protocol (store/_units.py) with a unit of ``unit_docs`` consecutive documents;
- coordinates ``model`` (labels) and ``doc_id`` (doc): the documents' ids, shared by every model.

A unit's chunk of every doc-indexed variable is written once, whole, and its marker last,
so the unit is the commit and the chunk (no shard is ever rewritten). Every model of one
group has the same hidden size and the same documents.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from store._consolidated import consolidate
from store._lease import Lease, LeaseError, other_writers, slot_key
from store._location import StoreLocation, open_existing_group
from store._schema import UNIT_COMMITTED, UNIT_EMPTY
from store._settings import check_same
from store._staging import clear_staging
from store._stats_store import structure_lease
from store._units import Unit, mark_unit, plan_units
from store.errors import ConfigError, StoreMismatchError

VECTORS_GROUP = "vectors"
VECTORS_FORMAT = "activation-vectors"
VECTORS_VERSION = 1
POOLINGS = ("short", "long")
POOLING_PARTS = {"short": 1, "long": 4}  # feature width in hidden sizes
FEATURE_DIMS = {"short": "feature", "long": "long_feature"}
VECTOR_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class VectorsLayout:
    """Shape and chunking of one ``vectors`` group; identical for every model in it."""

    doc_ids: tuple[str, ...]
    hidden_size: int
    poolings: tuple[str, ...]
    unit_docs: int
    dtype: str = "float16"
    # (doc,) uint64 digest of each document's text: a text edited under the same id is another document
    doc_digests: np.ndarray | None = field(default=None, compare=False)

    @property
    def digests(self) -> np.ndarray:
        return np.zeros(self.n_docs, np.uint64) if self.doc_digests is None else self.doc_digests

    @property
    def n_docs(self) -> int:
        return len(self.doc_ids)

    @property
    def n_units(self) -> int:
        return math.ceil(self.n_docs / self.unit_docs)

    def units(self) -> list[Unit]:
        """Every unit of the doc axis, in order (a unit's start and end are document positions)."""
        return plan_units(self.n_docs, self.unit_docs)

    def width(self, pooling: str) -> int:
        return self.hidden_size * POOLING_PARTS[pooling]


@dataclass(frozen=True)
class VectorSlot:
    """What is known about one model before its first document is pooled."""

    label: str
    provenance: dict[str, Any]  # model facts and extraction parameters (group attrs ``models``)


@dataclass(frozen=True)
class VectorSession:
    """Where a vectors build writes: the open group and its model slot."""

    group: zarr.Group
    slot: int
    layout: VectorsLayout
    location: StoreLocation
    label: str


def template(layout: VectorsLayout, slot: VectorSlot, attrs: dict[str, Any]) -> xr.Dataset:
    """The one-model ``vectors`` Dataset: doc-indexed variables lazy, the rest in memory."""
    doc_chunk = (1, layout.unit_docs)
    data_vars: dict[str, Any] = {
        "n_tokens": (("model", "doc"), da.zeros((1, layout.n_docs), dtype=np.int32, chunks=doc_chunk)),
        "unit_state": (("model", "unit"), np.zeros((1, layout.n_units), np.int8)),
        "doc_digest": (("doc",), layout.digests.astype(np.uint64)),
    }
    for pooling in layout.poolings:
        dim, width = FEATURE_DIMS[pooling], layout.width(pooling)
        data_vars[pooling] = (("model", "doc", dim),
                              da.zeros((1, layout.n_docs, width), dtype=layout.dtype, chunks=(*doc_chunk, width)))
        data_vars[f"{pooling}_sum"] = (("model", "unit", dim), np.zeros((1, layout.n_units, width)))
        data_vars[f"{pooling}_mean"] = (("model", dim), np.full((1, width), np.nan))
    coords = {"model": np.array([slot.label], dtype=object), "doc_id": ("doc", np.array(layout.doc_ids, dtype=object))}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def encoding(layout: VectorsLayout) -> dict[str, dict[str, Any]]:
    """One chunk per (model, unit): a unit's commit writes each of its chunks once."""
    result: dict[str, dict[str, Any]] = {
        "n_tokens": {"chunks": (1, layout.unit_docs)},
        "unit_state": {"chunks": (1, 1)},
        "doc_id": {"chunks": (layout.unit_docs,)},  # a query reads the ids of its answers only
        "doc_digest": {"chunks": (layout.unit_docs,)},
    }
    for pooling in layout.poolings:
        width = layout.width(pooling)
        # uncompressed: pooled float16 vectors shrink ~8% under zstd, which takes 60% of a full read's time
        result[pooling] = {"chunks": (1, layout.unit_docs, width), "_FillValue": np.nan, "compressors": None}
        result[f"{pooling}_sum"] = {"chunks": (1, 1, width)}
        result[f"{pooling}_mean"] = {"chunks": (1, width), "_FillValue": np.nan}
    return result


def open_vectors_group(location: StoreLocation, mode: str = "r+") -> zarr.Group | None:
    """The store's ``vectors`` group, or None when it has none."""
    return open_existing_group(location, VECTORS_GROUP, mode)


def _has_commits(group: zarr.Group | None) -> bool:
    """Whether any unit of any model is committed: one listing, not one read per unit (a million documents
    are about 2,000 markers per model). A marker is stored only once set; empty ones are the fill value."""
    return group is not None and "unit_state" in group and group["unit_state"].nchunks_initialized > 0


def check_vectors_settings(location: StoreLocation, build_config: dict[str, Any], label: str,
                           model_config: dict[str, Any]) -> None:
    """Refuse, before any work, settings that differ from those the group's commits were made with.

    A group with nothing committed has nothing to lose and is always compatible.
    """
    group = open_vectors_group(location, mode="r")
    if _has_commits(group):
        _check_settings(group, build_config, label, model_config, location)


def check_vectors_documents(location: StoreLocation, layout: VectorsLayout) -> None:
    """Refuse documents or a hidden size other than the committed group's (after tokenising)."""
    group = open_vectors_group(location, mode="r")
    if _has_commits(group):
        _check_documents(group, layout, location)


def _check_settings(group: zarr.Group, build_config: dict[str, Any], label: str, model_config: dict[str, Any],
                    location: StoreLocation) -> None:
    check_same(group.attrs.get("build_config", {}), build_config, location)
    stored_model = group.attrs.get("models", {}).get(label, {}).get("config")
    if stored_model is not None:
        check_same(stored_model, model_config, location, model=label)


def _check_documents(group: zarr.Group, layout: VectorsLayout, location: StoreLocation) -> None:
    stored_width = int(group.attrs.get("hidden_size", layout.hidden_size))
    if stored_width != layout.hidden_size:
        raise StoreMismatchError(
            f"the vectors in {location.display()!r} have hidden size {stored_width}, this model {layout.hidden_size}: "
            "vectors of different widths cannot share the group; choose another --store")
    stored_ids = tuple(str(doc_id) for doc_id in group["doc_id"][:])
    stored_digests = np.asarray(group["doc_digest"][:]) if "doc_digest" in group else layout.digests
    if stored_ids != layout.doc_ids or not np.array_equal(stored_digests, layout.digests):
        differ = [i for i, (a, b) in enumerate(zip(stored_ids, layout.doc_ids)) if a != b]
        differ += np.flatnonzero(stored_digests[:layout.n_docs] != layout.digests[:len(stored_ids)]).tolist()
        first = min(differ, default=min(len(stored_ids), layout.n_docs))
        raise StoreMismatchError(
            f"the documents differ from those in {location.display()!r} (first at position {first}; "
            f"{len(stored_ids):,} stored, {layout.n_docs:,} now): every model of a store pools the same "
            "documents (same ids, same texts); give the same text and --data.max_docs, choose another --store, "
            "or pass --overwrite")


def open_vectors_session(location: StoreLocation, layout: VectorsLayout, slot: VectorSlot,
                         attrs: dict[str, Any], replace: bool = False) -> VectorSession:
    """A session for ``slot``: a new group, a new model in the group, or a resume.

    Runs under the store's structure lease, and checks the settings (``attrs["build_config"]``,
    ``slot.provenance["config"]``) and documents again there: another build may have committed since
    the caller's checks. ``replace`` (``--overwrite``) removes the ``vectors`` group (only it: the
    store's other groups stay) when they differ, refused while another build writes it; when they
    match, the build resumes as without it.
    """
    with structure_lease(location, f"open a vectors slot for model {slot.label!r}") as lease:
        group = open_vectors_group(location)
        if _has_commits(group) and not _compatible(group, layout, slot, attrs, location, replace):
            group = None
        if not _has_commits(group):
            _check_no_other_writers(location, slot.label)
            lease.ensure_held()
            return _create(location, layout, slot, attrs)
        labels = [str(label) for label in group["model"][:]]
        if slot.label in labels:
            return VectorSession(group, labels.index(slot.label), _stored_layout(group), location, slot.label)
        index = _add_model(group, labels, slot, lease)
        clear_staging(location, VECTORS_GROUP, slot.label)
        consolidate(location)
        return VectorSession(group, index, _stored_layout(group), location, slot.label)


def _compatible(group: zarr.Group, layout: VectorsLayout, slot: VectorSlot, attrs: dict[str, Any],
                location: StoreLocation, replace: bool) -> bool:
    """Whether the build may write into the committed group; a mismatch raises unless ``replace``."""
    try:
        _check_settings(group, attrs["build_config"], slot.label, slot.provenance.get("config", {}), location)
        _check_documents(group, layout, location)
    except StoreMismatchError:
        if not replace:
            raise
        return False
    return True


def _check_no_other_writers(location: StoreLocation, label: str) -> None:
    writing = other_writers(location, VECTORS_GROUP, slot_key(VECTORS_GROUP, label))
    if writing:
        raise LeaseError(f"the vectors group of {location.display()!r} is being written by "
                         f"{writing[0].describe(time.time())}; wait for that build to end or choose another --store")


def _create(location: StoreLocation, layout: VectorsLayout, slot: VectorSlot, attrs: dict[str, Any]) -> VectorSession:
    location.remove_subtree(VECTORS_GROUP)  # a group of other settings with nothing committed, or --overwrite
    clear_staging(location, VECTORS_GROUP)
    dataset = template(layout, slot, {**attrs, "models": {slot.label: slot.provenance}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata / string dtype notices
        dataset.to_zarr(location.zarr_store(), group=VECTORS_GROUP, mode="w", compute=False,
                        encoding=encoding(layout), zarr_format=3, consolidated=False)
    consolidate(location)
    group = open_vectors_group(location)
    if group is None:  # pragma: no cover - to_zarr just wrote it
        raise RuntimeError(f"vectors group missing right after writing {location.display()!r}")
    return VectorSession(group, 0, layout, location, slot.label)


def _stored_layout(group: zarr.Group) -> VectorsLayout:
    poolings = tuple(pooling for pooling in POOLINGS if pooling in group)
    return VectorsLayout(doc_ids=tuple(str(doc_id) for doc_id in group["doc_id"][:]),
                         doc_digests=np.asarray(group["doc_digest"][:]),
                         hidden_size=int(group.attrs["hidden_size"]), poolings=poolings,
                         unit_docs=int(group.attrs["unit_docs"]), dtype=str(group[poolings[0]].dtype))


def _model_indexed(group: zarr.Group) -> list[str]:
    return [name for name, array in group.arrays() if array.metadata.dimension_names
            and array.metadata.dimension_names[0] == "model"]


def _add_model(group: zarr.Group, labels: list[str], slot: VectorSlot, lease: Lease) -> int:
    """Grow every model-indexed array by one slot; idempotent if interrupted and re-run."""
    index = labels.index("") if "" in labels else len(labels)
    for name in _model_indexed(group):
        lease.ensure_held()
        array = group[name]
        if array.shape[0] < index + 1:
            array.resize((index + 1, *array.shape[1:]))
    group["unit_state"][index] = UNIT_EMPTY  # a slot left unlabelled by an interrupted extension is reused
    for name in group.array_keys():
        if name.endswith("_mean"):
            group[name][index] = np.nan
    group.attrs["models"] = {**group.attrs.get("models", {}), slot.label: slot.provenance}
    group["model"][index] = slot.label  # last: a labelled slot is a complete slot
    return index


def vectors_complete(location: StoreLocation, label: str) -> bool:
    """Whether model ``label``'s vectors are complete: every unit committed and its means set."""
    group = open_vectors_group(location, mode="r")
    labels = [] if group is None else [str(name) for name in group["model"][:]]
    if label not in labels:
        return False
    slot = labels.index(label)
    return bool(committed_units(group, slot).all()) and mean_is_set(group, slot)


def committed_units(group: zarr.Group, slot: int) -> np.ndarray:
    """Whether each unit of model slot ``slot`` is committed (one small object per unit, read once)."""
    return np.asarray(group["unit_state"][slot]) == UNIT_COMMITTED


def write_vector_unit(group: zarr.Group, slot: int, unit: Unit, pooled: dict[str, np.ndarray],
                      n_tokens: np.ndarray, claim: Lease | None) -> None:
    """Write one unit: its pooled float32 vectors (cast to the stored dtype), their float64 sums and the
    documents' lengths, each one chunk; then the unit's marker."""
    stored = {pooling: _stored_values(vectors, group[pooling].dtype, pooling) for pooling, vectors in pooled.items()}
    if claim is not None:
        claim.ensure_held()  # never write after another writer may have taken the unit over
    docs = slice(unit.start, unit.end)
    for pooling, vectors in pooled.items():
        group[pooling][slot, docs] = stored[pooling]
        group[f"{pooling}_sum"][slot, unit.index] = vectors.astype(np.float64).sum(axis=0)
    group["n_tokens"][slot, docs] = n_tokens.astype(np.int32)
    mark_unit(group, slot, unit, UNIT_COMMITTED, claim)


def _stored_values(vectors: np.ndarray, dtype: np.dtype, pooling: str) -> np.ndarray:
    """The vectors in the stored dtype; a value beyond its range (float16: 65504) is refused, not stored as inf."""
    with np.errstate(over="ignore"):  # checked below: one error line, not a NumPy warning first
        stored = vectors.astype(dtype)
    if not np.isfinite(stored).all():
        largest = float(np.nanmax(np.abs(vectors)))
        raise ConfigError(f"{pooling} vectors reach {largest:.6g}, beyond what {dtype} stores (|x| <= "
                          f"{float(np.finfo(dtype).max):.6g}); rebuild into another --store with --vectors.dtype float32")
    return stored


def finish_vectors(session: VectorSession, lease: Lease | None) -> None:
    """Once every unit is committed: the corpus mean of each pooling (float64), then consolidate."""
    group, slot = session.group, session.slot
    if not committed_units(group, slot).all():
        raise RuntimeError(f"model {session.label!r} has uncommitted units; its mean cannot be set yet")
    for pooling in session.layout.poolings:
        total = np.asarray(group[f"{pooling}_sum"][slot], np.float64).sum(axis=0)
        if lease is not None:
            lease.ensure_held()
        group[f"{pooling}_mean"][slot] = total / session.layout.n_docs
    with structure_lease(session.location, "finish a vectors build"):
        consolidate(session.location)


def mean_is_set(group: zarr.Group, slot: int) -> bool:
    """Whether the model's corpus means are written (the last step of its build)."""
    names = [name for name in group.array_keys() if name.endswith("_mean")]
    return all(not np.isnan(group[name][slot]).any() for name in names)

