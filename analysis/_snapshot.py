"""What a Dataset from ``open_store`` was read from: the store, its committed state, its dask names.

``open_store`` gives every variable a dask token derived from the store's identity and
committed state (URL, attributes, schema and a listing of the group's objects with
sizes and mtimes or ETags). Dask names then say exactly which data an array holds: any
selection or transformation gets a new name that dask derives from its inputs' names,
the same in every process for the same operations, and any change to the store (even an
in-place edit of a committed chunk) changes every name. The fits cache keys on them.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import xarray as xr
from dask.base import is_dask_collection

from store import StoreLocation

SNAPSHOT_KEY = "store_snapshot"  # in Dataset.encoding: never written out (the location may hold credentials)
LABEL_DIMS = ("model", "layer", "metric")
# what changes when an object is rewritten: local files (size, mtime, inode of the atomic
# rename), S3 (ETag, LastModified), GCS (generation, md5Hash)
_CHANGE_MARKERS = ("size", "mtime", "ino", "ETag", "LastModified", "last_modified", "generation", "md5Hash")


@dataclass(frozen=True)
class StoreSnapshot:
    """The store a Dataset was opened from, as it was when opened.

    ``identity`` is None when the store's objects could not be listed (no list
    permission): such a Dataset is never cached, since its state is unknown.
    """

    location: StoreLocation
    group: str
    identity: str | None
    names: Mapping[str, str] = field(default_factory=dict)  # variable -> its dask name as opened
    labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # model/layer/metric, as opened

    def is_underived(self, dataset: xr.Dataset, variables: Iterable[str]) -> bool:
        """Whether these variables and the labels are exactly what ``open_store`` returned."""
        as_opened = all(name in dataset and dask_name(dataset[name]) == self.names.get(name)
                        for name in variables)
        return as_opened and coordinate_labels(dataset) == self.labels


def dask_name(array: xr.DataArray) -> str | None:
    """The dask name of an array's data, or None for in-memory data."""
    return array.data.name if is_dask_collection(array.data) else None


def coordinate_labels(dataset: xr.Dataset) -> dict[str, tuple[str, ...]]:
    present = [dim for dim in LABEL_DIMS if dim in dataset.coords]
    return {dim: tuple(str(label) for label in dataset[dim].values) for dim in present}


def dask_token(identity: str | None) -> str:
    """The token ``open_store`` chunks with: the identity, or a fresh one that no other open shares."""
    return identity or uuid.uuid4().hex


def store_identity(location: StoreLocation, group: str, opened: xr.Dataset) -> str | None:
    """A digest of where the group lives and everything committed in it; None if unlistable."""
    listing = _listing_digest(location, group)
    if listing is None:
        return None
    schema = {name: [var.dims, var.shape, str(var.dtype)] for name, var in opened.variables.items()}
    committed = opened["committed_tokens"].values.tolist() if "committed_tokens" in opened else []
    basis = {"url": location.display(), "group": group, "attrs": opened.attrs, "schema": schema,
             "committed_tokens": committed, "objects": listing}
    return digest(basis)


def _listing_digest(location: StoreLocation, group: str) -> str | None:
    """Path, size and change marker of every object of the group: one listing, cheap even on S3."""
    fs, root = location.filesystem()
    prefix = f"{root.rstrip('/')}/{group}"
    try:
        found = fs.find(prefix, detail=True)
    except Exception:  # noqa: BLE001 - no list permission or transport failure: state unknown, no caching
        return None
    entries = [[name.removeprefix(prefix), [info.get(marker) for marker in _CHANGE_MARKERS]]
               for name, info in sorted(found.items())]  # sorted: the same listing, the same digest
    return digest(entries) if entries else None


def digest(basis: Any) -> str:
    return hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()


def take_snapshot(location: StoreLocation, group: str, identity: str | None,
                  dataset: xr.Dataset) -> StoreSnapshot:
    """The snapshot of a freshly opened Dataset: its dask names and labels are the 'underived' reference."""
    names = {str(variable): dask_name(array) for variable, array in dataset.data_vars.items()}
    in_dask = {variable: name for variable, name in names.items() if name is not None}
    return StoreSnapshot(location, group, identity, in_dask, coordinate_labels(dataset))
