"""Open a store lazily: local path, ``s3://`` URL or catalog name."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from zarr.errors import GroupNotFoundError

from analysis._snapshot import SNAPSHOT_KEY, dask_token, store_identity, take_snapshot
from store import STATS_GROUP, UNIT_COMMITTED, StoreLocation, StoreLocationError, resolve_location
from store.errors import first_line

# What zarr and xarray raise for metadata that is not a Zarr v3 group of ours: undecodable or
# invalid JSON (ValueError), a document of the wrong shape (TypeError, KeyError, AttributeError).
_UNREADABLE = (ValueError, TypeError, KeyError, AttributeError)
_REQUIRED = ("value", "committed_tokens")  # read below before anything else; the rest is the validator's job


def open_store(
    name_or_url: str,
    storage_options: dict[str, Any] | None = None,
    catalog: str | Path | None = None,
    group: str = STATS_GROUP,
) -> xr.Dataset:
    """The ``stats`` group as a dask-backed Dataset, trimmed to committed tokens.

    Dask chunks follow the Zarr shards (at least 1 MiB per series), so one task
    reads one shard. Tokens past the smallest ``committed_tokens`` (the committed
    prefix of a build still running or interrupted) are left out, so analyses only
    see finished work; a warning names the units not committed yet.
    Dask names are derived from the store's identity and committed state (see
    ``analysis._snapshot``): the same store state gives the same names in every
    process, and any change of the store gives new ones.
    """
    location = resolve_location(name_or_url, storage_options, catalog)
    opened = _open_group(location, group)
    _check_variables(opened, location)
    identity = store_identity(location, group, opened)
    shards = opened["value"].encoding.get("shards") or opened["value"].encoding["chunks"]
    # one dask chunk per series and shard, as the store is laid out (open_zarr would use inner chunks)
    dataset = opened.chunk({"model": 1, "layer": 1, "metric": 1, "channel": 1, "token": shards[-1]},
                           token=dask_token(identity))
    committed = int(opened["committed_tokens"].values.min()) if opened.sizes["model"] else 0
    if committed < dataset.sizes["token"]:
        _warn_uncommitted(opened, location, committed)
        dataset = dataset.isel(token=slice(0, committed))
    dataset.attrs["source"] = location.display()
    dataset.encoding[SNAPSHOT_KEY] = take_snapshot(location, group, identity, dataset)  # for the fits cache
    return dataset


def _warn_uncommitted(opened: xr.Dataset, location: StoreLocation, committed: int) -> None:
    """Name the work units a build has not committed yet (format 2 marks each unit)."""
    named = describe_uncommitted(opened)
    if not named:
        return
    warnings.warn(f"store {location.display()!r}: showing tokens 0..{committed:,}, where every model's units "
                  f"are committed; not committed yet: {named} (a build is running or was interrupted: "
                  "rerun it to finish)", UserWarning, stacklevel=3)


def uncommitted_units(opened: xr.Dataset) -> dict[str, list[int]]:
    """Model label -> the numbers of its units not committed (empty for format-1 stores)."""
    if "unit_state" not in opened:
        return {}
    states = opened["unit_state"].values
    labels = [str(label) for label in opened["model"].values]
    found = {label: np.flatnonzero(row != UNIT_COMMITTED).tolist() for label, row in zip(labels, states)}
    return {label: units for label, units in found.items() if units}


def describe_uncommitted(opened: xr.Dataset) -> str:
    """"model 'a' units 0-2, 5; model 'b' units 7", or "" when every unit is committed."""
    missing = uncommitted_units(opened)
    return "; ".join(f"model {label!r} units {_ranges(units)}" for label, units in missing.items())


def _ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)


def _open_group(location: StoreLocation, group: str) -> xr.Dataset:
    """The group, lazily (backend arrays, no dask yet); a missing store is an InputError, not a traceback."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # consolidated metadata notice from zarr
            # stores are Zarr v3 (docs/store-format.md): no probing for v2 keys, a request less each on S3
            store = location.zarr_store(read_only=True)
            return xr.open_zarr(store, group=group, chunks=None, zarr_format=3)
    except (GroupNotFoundError, FileNotFoundError) as error:
        raise StoreLocationError(
            f"no {group!r} group in a store at {location.display()!r}; check the URL, "
            "and for S3-compatible endpoints pass --storage_options endpoint_url=..."
        ) from error
    except _UNREADABLE as error:
        raise StoreLocationError(_not_a_store(location, error)) from error


def _check_variables(opened: xr.Dataset, location: StoreLocation) -> None:
    """A Zarr group that lacks what every stats group holds is not a store of this project."""
    missing = [name for name in _REQUIRED if name not in opened.variables]
    if missing:
        raise StoreLocationError(_not_a_store(location, KeyError(f"no variable {missing[0]!r}")))


def _not_a_store(location: StoreLocation, error: BaseException) -> str:
    return (f"{location.display()!r} is not a readable activation store ({first_line(error)}); "
            "point at a store written by python -m builders.collect (see docs/store-format.md)")
