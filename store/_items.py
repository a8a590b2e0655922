"""Groups of whole items: captures, their exact integer encodings and their hypercube views.

Unlike ``stats`` (one long token axis per model, cut into work units), these groups hold
many small items, each written once and whole: ``<group>/<model label>/capture_<NNNN>``, one
Zarr group per capture of one prompt. The commit protocol is the unit protocol's with an
item as the unit: the item is written (``mode="w"``, so a half-written item from a kill is
replaced), then its ``complete`` attribute is set, the item's commit marker (one object,
written last). Readers and resumed builds trust complete items only. A build holds the
lease ``<group>/<model label>`` while it writes that model's items.
"""

from __future__ import annotations

import math
import re
import warnings
from fractions import Fraction
from typing import Any

import numpy as np
import xarray as xr
import zarr

from store._location import StoreLocation

CAPTURES_GROUP = "captures"
ENCODINGS_GROUP = "encodings"
HYPERCUBES_GROUP = "hypercubes"
ITEM_GROUPS = (CAPTURES_GROUP, ENCODINGS_GROUP, HYPERCUBES_GROUP)
ITEM_FORMATS = {CAPTURES_GROUP: "activation-captures", ENCODINGS_GROUP: "activation-integers",
                HYPERCUBES_GROUP: "activation-hypercubes"}
ITEMS_VERSION = 1
COMPLETE_ATTR = "complete"
_ITEM = re.compile(r"^capture_(\d{4,})$")


def effective_exponent(scale_factor: int, quantize: float) -> int:
    """The decimal exponent of an encoding: ``scale_factor - floor(scale_factor * quantize / 100)``, exactly."""
    return scale_factor - math.floor(Fraction(scale_factor) * Fraction(quantize) / 100)


def item_path(group: str, label: str, index: int) -> str:
    """Where item ``index`` (the prompt's number) of model ``label`` lives in ``group``.

    ``group`` is ``captures``, ``encodings``, or ``hypercubes/<source group>`` (a view of either).
    """
    return f"{group}/{label}/capture_{index:04d}"


def _root(location: StoreLocation, read_only: bool = False) -> zarr.Group:
    return zarr.open_group(location.zarr_store(read_only=read_only), mode="r" if read_only else "a",
                           use_consolidated=False, zarr_format=3)


def prepare_group(location: StoreLocation, group: str, label: str, model_attrs: dict[str, Any]) -> None:
    """Create ``group`` (its top-level group with its format) and its model node (with the model's provenance)."""
    root = _root(location)
    top_name = group.split("/")[0]
    top = root.require_group(top_name)
    if top.attrs.get("format") != ITEM_FORMATS[top_name]:
        top.attrs.update({"format": ITEM_FORMATS[top_name], "format_version": ITEMS_VERSION,
                          "description": "see docs/store-format.md"})
    model = root.require_group(group).require_group(label)
    model.attrs.update(model_attrs)


def string_columns(dataset: xr.Dataset) -> xr.Dataset:
    """Text columns as NumPy's StringDType, Zarr's variable-length UTF-8 string: also an empty column,
    which as an object array would be written as float64."""
    stored = dataset.copy()
    for name in [name for name, values in dataset.variables.items() if values.dtype.kind in "OU"]:
        stored[name] = stored[name].astype(np.dtypes.StringDType())
    return stored


def write_item(location: StoreLocation, path: str, dataset: xr.Dataset,
               encoding: dict[str, Any] | None = None) -> None:
    """Write one item whole, then set its commit marker."""
    dataset = dataset.assign_attrs({COMPLETE_ATTR: False})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata and string dtype notices
        dataset.to_zarr(location.zarr_store(), group=path, mode="w", zarr_format=3, consolidated=False,
                        encoding=encoding or {})
    node = zarr.open_group(location.zarr_store(), path=path, mode="r+", use_consolidated=False)
    node.attrs[COMPLETE_ATTR] = True  # last: an item without it is rewritten, never read


def complete_children(location: StoreLocation, path: str) -> list[str]:
    """The names of the child groups of ``path`` whose commit marker is set ([] if ``path`` does not exist)."""
    try:
        node = zarr.open_group(location.zarr_store(read_only=True), path=path, mode="r", use_consolidated=False)
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return []
    return [name for name, child in node.groups() if child.attrs.get(COMPLETE_ATTR) is True]


def complete_items(location: StoreLocation, group: str, label: str) -> dict[int, str]:
    """Item number -> path of every complete item of ``label`` in ``group``."""
    found = {}
    for name in complete_children(location, f"{group}/{label}"):
        match = _ITEM.match(name)
        if match:
            found[int(match.group(1))] = f"{group}/{label}/{name}"
    return found


def remove_items(location: StoreLocation, group: str, label: str) -> None:
    """Delete every item of model ``label`` in ``group`` (for ``--overwrite``; its lease is held)."""
    location.remove_subtree(f"{group}/{label}")


def labels_in(location: StoreLocation, group: str) -> list[str]:
    """The model labels with a node in ``group`` (none if the group does not exist)."""
    try:
        node = zarr.open_group(location.zarr_store(read_only=True), path=group, mode="r", use_consolidated=False)
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return []
    return sorted(name for name, _ in node.groups())


def open_item(location: StoreLocation, path: str) -> xr.Dataset:
    """One item, lazily (dask-backed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_zarr(location.zarr_store(read_only=True), group=path, consolidated=False, zarr_format=3)
