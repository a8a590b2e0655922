"""Format 1 -> 2 in place: add the per-unit commit markers; no statistic is rewritten.

A format-1 store has one commit marker per model, ``committed_tokens``. Its units (one
shard each) below that marker are complete, so they become UNIT_COMMITTED; a unit the
marker cuts through is recomputed by the resumed build, so ``committed_tokens`` drops
to the last whole unit. Runs under the store's structure lease, when a build opens
the store; readers open format-1 stores as they are.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr
import zarr

from store._consolidated import consolidate
from store._lease import Lease
from store._location import StoreLocation
from store._schema import DIMS, FORMAT_VERSION, STATS_GROUP, UNIT_COMMITTED, UNIT_TOKENS_ATTR
from store._units import plan_units, stored_unit_tokens


def upgrade_if_old(location: StoreLocation, group: zarr.Group, lease: Lease) -> tuple[zarr.Group, str]:
    """The group in format 2, upgraded first if it is in format 1; and a line saying so (or "")."""
    if "unit_state" in group:
        return group, ""
    unit_tokens = stored_unit_tokens(group)
    units = plan_units(int(group["value"].shape[-1]), unit_tokens)
    committed = np.asarray(group["committed_tokens"][:])
    states = np.zeros((committed.shape[0], len(units)), np.int8)
    for slot, count in enumerate(committed):
        states[slot, :sum(unit.end <= count for unit in units)] = UNIT_COMMITTED
    lease.ensure_held()
    _add_unit_state(location, states)
    prefixes = [max((u.end for u, s in zip(units, row) if s == UNIT_COMMITTED), default=0) for row in states]
    group["committed_tokens"][:] = np.asarray(prefixes, np.int64)
    group.attrs.update({"format_version": FORMAT_VERSION, UNIT_TOKENS_ATTR: unit_tokens})
    consolidate(location)
    note = (f"Upgraded store {location.display()!r} from format 1 to {FORMAT_VERSION} "
            "(added per-unit commit markers; no statistic rewritten).")
    return zarr.open_group(location.zarr_store(), path=STATS_GROUP, mode="r+", use_consolidated=False), note


def _add_unit_state(location: StoreLocation, states: np.ndarray) -> None:
    """Write ``unit_state`` exactly as a new store's template would (same metadata, same chunks)."""
    dataset = xr.Dataset({"unit_state": (DIMS["unit_state"], states)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata notices
        dataset.to_zarr(location.zarr_store(), group=STATS_GROUP, mode="a", zarr_format=3, consolidated=False,
                        encoding={"unit_state": {"chunks": (1, 1)}})
