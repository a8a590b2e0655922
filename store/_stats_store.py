"""Create, extend, resume and finish the ``stats`` group of a store."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from store._consolidated import consolidate, consolidate_if_stale
from store._lease import LEASE_DIR, STRUCTURE_KEY, Lease, LeaseError, LeaseRecord, other_writers, slot_key
from store._location import StoreLocation, open_existing_group
from store._schema import (
    DIMS,
    EMPTY_CHUNKS_ATTR,
    STATS_GROUP,
    UNIT_COMMITTED,
    UNIT_EMPTY,
    UNIT_TOKENS_ATTR,
    ModelSlot,
    StatsLayout,
    encoding,
    template,
)
from store._settings import check_same
from store._staging import clear_staging
from store._units import plan_units, stored_unit_tokens
from store._upgrade import upgrade_if_old
from store._vocab import VOCAB_GROUP, Vocabulary, write_vocabulary
from store.errors import StoreMismatchError

# Metadata changes take seconds; waiting this long also outlasts a lease left by a build killed on another host.
STRUCTURE_WAIT = 90.0


@dataclass(frozen=True)
class WriteSession:
    """Where a build writes: the open group, its model slot and what is already committed."""

    group: zarr.Group
    slot: int
    committed: int
    layout: StatsLayout
    location: StoreLocation
    label: str
    note: str = ""  # what opening changed that the user should hear of (a format upgrade)


def _open_group(location: StoreLocation) -> zarr.Group | None:
    return open_existing_group(location, STATS_GROUP)


def _has_commits(group: zarr.Group | None) -> bool:
    """Whether any model committed tokens or units; if none did, the group is safe to rebuild."""
    if group is None or "committed_tokens" not in group:
        return False
    if "unit_state" in group and np.any(group["unit_state"][:] > UNIT_EMPTY):
        return True
    return bool(np.any(group["committed_tokens"][:] > 0))


def _check_group(group: zarr.Group | None, location: StoreLocation, build_config: dict[str, Any],
                 label: str, model_config: dict[str, Any]) -> bool:
    """Raise if the settings differ from the stored ones; returns whether anything is committed."""
    if not _has_commits(group):
        return False
    check_same(group.attrs.get("build_config", {}), build_config, location)
    stored_model = group.attrs.get("models", {}).get(label, {}).get("config")
    if stored_model is not None:
        check_same(stored_model, model_config, location, model=label)
    return True


@dataclass(frozen=True)
class StoredStats:
    """What a store already holds: its token-axis length and each model's commit marker."""

    n_tokens: int
    committed: dict[str, int]

    def committed_by_others(self, label: str) -> dict[str, int]:
        """Models other than ``label`` with committed tokens: their data must never change."""
        return {other: count for other, count in self.committed.items() if other != label and count > 0}


def _stored_stats(group: zarr.Group) -> StoredStats:
    labels = [str(label) for label in group["model"][:]]
    counts = group["committed_tokens"][:].tolist()
    committed = {label: int(count) for label, count in zip(labels, counts) if label}
    return StoredStats(int(group["value"].shape[-1]), committed)


def check_compatible(
    location: StoreLocation, build_config: dict[str, Any], label: str, model_config: dict[str, Any]
) -> StoredStats | None:
    """Refuse, before any work, a build whose settings differ from the store's.

    The store-wide ``build_config`` (corpus, layers, metrics, chunking) must equal
    the stored one, and a model already present must have the same model settings.
    A store with nothing committed has nothing to lose and is always compatible
    (returns None); otherwise returns what the store holds, for further checks.
    """
    group = _open_group(location)
    if not _check_group(group, location, build_config, label, model_config):
        return None
    return _stored_stats(group)


def structure_lease(location: StoreLocation, purpose: str) -> Lease:
    """The store-wide lease held around metadata changes (create, add a slot, resize, consolidate)."""
    return Lease(location, STRUCTURE_KEY, purpose).acquire(wait=STRUCTURE_WAIT)


def _other_writers(location: StoreLocation, own_key: str) -> list[LeaseRecord]:
    """Live slot leases of builds other than the one holding ``own_key``."""
    return other_writers(location, STATS_GROUP, own_key)


def _check_no_other_writers(location: StoreLocation, label: str) -> None:
    """Creating the group anew is refused while another model's build writes into it."""
    writing = _other_writers(location, slot_key(STATS_GROUP, label))
    if writing:
        raise LeaseError(
            f"store {location.display()!r} is being set up by {writing[0].describe(time.time())} with other "
            "settings; wait for that build to end or choose another --store"
        )


def _remove_for_overwrite(location: StoreLocation, own_key: str) -> None:
    """Delete a store for ``--overwrite``, keeping the leases; refused while another build writes it."""
    writing = _other_writers(location, own_key)
    if writing:
        raise LeaseError(
            f"refusing to replace {location.display()!r}: it is being written by "
            f"{writing[0].describe(time.time())}; wait for that build to end or choose another --store"
        )
    location.remove(keep=(LEASE_DIR,))


def open_session(
    location: StoreLocation, layout: StatsLayout, slot: ModelSlot, attrs: dict[str, Any],
    replace_for: str | None = None, vocabulary: Vocabulary | None = None,
) -> WriteSession:
    """A session for ``slot``: new store, new model in an existing store, or a resume.

    Runs under the store's structure lease, so concurrent builds add their slots one by one.
    ``replace_for`` (the caller's slot lease key) first removes the store, for ``--overwrite``,
    in the same critical section: no other build can create a store in between. ``vocabulary``
    is recorded in the ``vocab`` group in the same critical section and consolidation.
    """
    with structure_lease(location, f"open a slot for model {slot.label!r}") as lease:
        if replace_for is not None:
            _remove_for_overwrite(location, replace_for)
        return _open_session(location, layout, slot, attrs, lease, vocabulary)


def _open_session(
    location: StoreLocation, layout: StatsLayout, slot: ModelSlot, attrs: dict[str, Any], lease: Lease,
    vocabulary: Vocabulary | None,
) -> WriteSession:
    group = _open_group(location)
    fresh = group is None or not _check_group(group, location, attrs["build_config"], slot.label,
                                              slot.provenance["config"])
    if fresh:
        _check_no_other_writers(location, slot.label)
        if group is not None:
            location.remove_subtree(VOCAB_GROUP)  # the group is made anew with this model only: so is vocab
    # before the template or the slot: their consolidation then lists the vocabulary too
    recorded = vocabulary is not None and write_vocabulary(location, slot.label, vocabulary, refresh_metadata=False)
    if fresh:
        lease.ensure_held()
        return _create(location, layout, slot, attrs)
    group, note = upgrade_if_old(location, group, lease)
    stored_layout = _stored_layout(group, layout)
    labels = [str(label) for label in group["model"][:]]
    if slot.label in labels:
        index = labels.index(slot.label)
        if recorded:
            lease.ensure_held()
            consolidate(location)
        return WriteSession(group, index, int(group["committed_tokens"][index]), stored_layout, location, slot.label,
                            note)
    index = _add_model(group, labels, slot, lease)
    clear_staging(location, STATS_GROUP, slot.label)  # checkpoints of a slot this store no longer has
    lease.ensure_held()
    consolidate(location)
    return WriteSession(group, index, 0, stored_layout, location, slot.label, note)


def _create(
    location: StoreLocation, layout: StatsLayout, slot: ModelSlot, attrs: dict[str, Any]
) -> WriteSession:
    clear_staging(location, STATS_GROUP)  # checkpoints of the group being replaced
    dataset = template(layout, slot, {**attrs, EMPTY_CHUNKS_ATTR: True, UNIT_TOKENS_ATTR: layout.shard_tokens,
                                      "models": {slot.label: slot.provenance}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata / string dtype notices
        dataset.to_zarr(
            location.zarr_store(),
            group=STATS_GROUP,
            mode="w",
            compute=False,
            encoding=encoding(layout),
            zarr_format=3,
            consolidated=False,  # store.consolidate below, which also writes the labels' JSON copy (store/_labels.py)
        )
    consolidate(location)
    group = _open_group(location)
    if group is None:  # pragma: no cover - to_zarr just wrote it
        raise RuntimeError(f"stats group missing right after writing {location.display()!r}")
    return WriteSession(group, 0, 0, layout, location, slot.label)


def _stored_layout(group: zarr.Group, requested: StatsLayout) -> StatsLayout:
    """The layout on disk (the token count may be shorter than requested: a short corpus)."""
    return StatsLayout(
        layers=tuple(str(x) for x in group["layer"][:]),
        metrics=tuple(str(x) for x in group["metric"][:]),
        n_tokens=int(group["value"].shape[-1]),
        n_channels=int(group["channel_value"].shape[-1]),
        token_chunk=int(group.attrs.get("token_chunk", requested.token_chunk)),
        requested_shard_tokens=stored_unit_tokens(group),
    )



def _add_model(group: zarr.Group, labels: list[str], slot: ModelSlot, lease: Lease) -> int:
    """Grow every model-indexed array by one slot; idempotent if interrupted and re-run."""
    index = labels.index("") if "" in labels else len(labels)
    n_models = index + 1
    for name in (name for name in (*DIMS, "model") if name in group):  # optional variables may be absent
        lease.ensure_held()  # a process paused past its lease must not change metadata another now owns
        array = group[name]
        if array.shape[0] < n_models:
            array.resize((n_models, *array.shape[1:]))
    group["layer_index"][index] = slot.layer_index.astype(np.int32)
    group["channel_index"][index] = slot.channel_index.astype(np.int32)
    group["committed_tokens"][index] = 0
    group["unit_state"][index] = UNIT_EMPTY  # a slot left unlabelled by an interrupted extension is reused
    models = dict(group.attrs.get("models", {}))
    models[slot.label] = slot.provenance
    group.attrs["models"] = models
    group["model"][index] = slot.label  # last: a labelled slot is a complete slot
    return index


def finish(location: StoreLocation, session: WriteSession, n_tokens: int,
           writer_lease: Lease | None = None) -> None:
    """Shrink the token axis to ``n_tokens`` when the corpus ran out early, then consolidate.

    Idempotent, so re-running it repairs a build killed half-way through: arrays
    still longer than ``n_tokens`` are shrunk, stale consolidated metadata is
    refreshed. It refuses to cut tokens another model has committed or is still writing,
    and does nothing once the build lost its ``writer_lease``.
    """
    if writer_lease is not None:
        writer_lease.ensure_held()
    with structure_lease(location, "finish a build") as lease:
        _finish(location, session, n_tokens, lease)


def _finish(location: StoreLocation, session: WriteSession, n_tokens: int, lease: Lease) -> None:
    group = session.group
    if int(group["value"].shape[-1]) > n_tokens:
        _check_shrink(group, session.slot, n_tokens, location)
    n_units = len(plan_units(n_tokens, stored_unit_tokens(group)))
    for name, dims in DIMS.items():
        if name not in group:
            continue  # unit_state of a format-1 store (finished by a reader's tooling, not a build)
        lease.ensure_held()
        array = group[name]
        size = {"token": n_tokens, "unit": n_units}
        shrunk = tuple(min(length, size.get(dim, length)) for dim, length in zip(dims, array.shape))
        if shrunk != array.shape:
            array.resize(shrunk)
    lease.ensure_held()
    consolidate_if_stale(location)


def _committed_end(group: zarr.Group, slot: int) -> int:
    """The end of the last token model slot ``slot`` committed (its prefix, or a later unit)."""
    prefix = int(group["committed_tokens"][slot])
    if "unit_state" not in group:
        return prefix
    states = np.asarray(group["unit_state"][slot])
    committed = np.flatnonzero(states == UNIT_COMMITTED)
    if not committed.size:
        return prefix
    return max(prefix, min((int(committed[-1]) + 1) * stored_unit_tokens(group), int(group["value"].shape[-1])))


def _check_shrink(group: zarr.Group, slot: int, n_tokens: int, location: StoreLocation) -> None:
    others = [_committed_end(group, index) for index in range(group["committed_tokens"].shape[0]) if index != slot]
    if others and max(others) > n_tokens:
        raise StoreMismatchError(
            f"store {location.display()!r}: shrinking the token axis to {n_tokens:,} would cut tokens "
            f"another model committed ({max(others):,}); collect this model into another --store"
        )
    label = str(group["model"][slot])
    writing = _other_writers(location, slot_key(STATS_GROUP, label))
    if writing:
        raise LeaseError(
            f"store {location.display()!r}: model {label!r} ran out of text at {n_tokens:,} tokens, but "
            f"shrinking the token axis would cut the build of {writing[0].describe(time.time())}; "
            "rerun this command after that build ends"
        )
