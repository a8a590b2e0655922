"""Work units: the commit protocol every group's builder follows (format 2).

The token axis is cut into units of one shard each (``unit_tokens`` tokens; the last
may be shorter). A unit is computed by one writer at a time, under a *claim*: a lease
``<slot key>/units/<unit>`` nested under the build's slot lease, so a task that dask
re-runs after a worker died, or a stalled worker that wakes up, never writes a shard
another writer may be writing. Each unit has its own commit marker, one object per
(model, unit) in ``unit_state``, so units finish in any order. ``committed_tokens``
stays the contiguous committed prefix for readers of format 1, written only by the
holder of the slot lease.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from store._lease import Lease
from store._location import StoreLocation
from store._schema import UNIT_COMMITTED

# A claim held by a live writer is waited for this long: a worker dask gave up on may still be
# finishing the unit (then it is committed and skipped), or its claim expires (at most one TTL).
CLAIM_WAIT = 90.0


@dataclass(frozen=True)
class Unit:
    """Positions ``start .. end`` of a group's unit axis: tokens of ``stats`` (one shard of every
    series), documents of ``vectors`` (one chunk of every doc-indexed array)."""

    index: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def n_tokens(self) -> int:
        return self.end - self.start


def plan_units(n_tokens: int, unit_tokens: int) -> list[Unit]:
    """Every unit of a token axis of ``n_tokens``, in order."""
    return [Unit(index, start, min(start + unit_tokens, n_tokens))
            for index, start in enumerate(range(0, n_tokens, unit_tokens))]


def stored_unit_tokens(group: zarr.Group) -> int:
    """Tokens per shard of the stored arrays: the work unit (format 1 stores included)."""
    value = group["value"]
    return int((value.shards or value.chunks)[-1])


def claim_key(slot_key: str, unit: int) -> str:
    """The lease key of one unit of a slot: a further key under the slot's own."""
    return f"{slot_key}/units/{unit:06d}"


def claim_unit(location: StoreLocation, slot_key: str, unit: Unit, purpose: str) -> Lease:
    """Hold the claim on ``unit``, waiting for a live holder; LeaseError names it after CLAIM_WAIT."""
    return Lease(location, claim_key(slot_key, unit.index), f"{purpose}, unit {unit.index}").acquire(wait=CLAIM_WAIT)


def unit_states(group: zarr.Group, slot: int) -> np.ndarray:
    """The state of every unit of model slot ``slot`` (UNIT_EMPTY, UNIT_TOKENIZED, UNIT_COMMITTED).

    One object per unit: read the whole row once per build, not once per unit.
    """
    return np.asarray(group["unit_state"][slot])


def unit_state(group: zarr.Group, slot: int, unit: Unit) -> int:
    """The state of one unit (one small object read)."""
    return int(group["unit_state"][slot, unit.index])


def mark_unit(group: zarr.Group, slot: int, unit: Unit, state: int, lease: Lease | None) -> None:
    """Set one unit's marker: one object, written by the holder of its claim (or of the slot)."""
    if lease is not None:
        lease.ensure_held()  # a writer that may have lost its claim must not mark anything
    group["unit_state"][slot, unit.index] = state


def committed_prefix(states: np.ndarray, units: list[Unit]) -> int:
    """Tokens of the longest run of committed units from token 0."""
    prefix = 0
    for unit in units:
        if unit.index >= states.shape[0] or states[unit.index] != UNIT_COMMITTED:
            break
        prefix = unit.end
    return prefix


def publish_prefix(group: zarr.Group, slot: int, units: list[Unit], lease: Lease | None,
                   states: np.ndarray | None = None) -> int:
    """Set ``committed_tokens[slot]`` to the committed prefix (slot lease holder only); returns it.

    ``states``: the unit states as the caller knows them (read from the store when not given).
    """
    prefix = committed_prefix(unit_states(group, slot) if states is None else states, units)
    if int(group["committed_tokens"][slot]) != prefix:
        if lease is not None:
            lease.ensure_held()
        group["committed_tokens"][slot] = prefix
    return prefix
