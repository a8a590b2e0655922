"""Every string array's values, also as JSON in its group's attributes (``attrs["labels"]``).

zarr-python writes labels (``model``, ``layer``, ``metric``, ``doc_id``, record columns) with its
variable-length ``string`` data type, an extension that other Zarr v3 implementations (TensorStore,
zarrs, Zarr.jl) do not know: they read every numeric array byte for byte but not these. A group's
``zarr.json`` is plain JSON to every one of them, so each group keeps a copy of its string arrays
there: ``attrs["labels"][name]`` is the array's values as nested lists (``ndarray.tolist()``), in
order. ``consolidate`` refreshes the copies before it consolidates, so every build leaves them equal
to the arrays; ``label_problems`` names a group whose copy is missing or differs.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import zarr

from store._location import StoreLocation

LABELS_ATTR = "labels"


def _is_string(array: zarr.Array) -> bool:
    return np.dtype(array.dtype).kind in "OUT"


def _text(values: Any) -> Any:
    """Nested lists of str from ``ndarray.tolist()`` (StringDType and object arrays give str or None)."""
    return [_text(value) for value in values] if isinstance(values, list) else str(values)


def string_labels(group: zarr.Group) -> dict[str, Any]:
    """The group's own string arrays (not its subgroups') as JSON-ready nested lists, by name."""
    return {name: _text(np.asarray(array[...]).tolist()) for name, array in sorted(group.arrays()) if _is_string(array)}


def _groups(location: StoreLocation, mode: str) -> list[tuple[str, zarr.Group]]:
    """The root and every group below it, from their own zarr.json (not the consolidated copy)."""
    root = zarr.open_group(location.zarr_store(read_only=mode == "r"), mode=mode, use_consolidated=False)
    return [("", root), *((path, node) for path, node in root.members(max_depth=None) if isinstance(node, zarr.Group))]


def _stale(group: zarr.Group) -> dict[str, Any] | None:
    """The labels the group should carry, if its attribute lacks or differs from them; else None."""
    labels = string_labels(group)
    if labels == group.attrs.get(LABELS_ATTR, {} if not labels else None):
        return None
    return labels


def refresh_labels(location: StoreLocation) -> bool:
    """Write ``attrs["labels"]`` where a group's copy is missing or stale; True if any was written."""
    written = False
    with warnings.catch_warnings():
        # zarr names each non-Zarr entry it lists (the root's _leases/, _staging/) and string dtype notices
        warnings.simplefilter("ignore")
        for _, group in _groups(location, "r+"):
            labels = _stale(group)
            if labels is not None:
                group.attrs[LABELS_ATTR] = labels
                written = True
    return written


def label_problems(location: StoreLocation) -> list[str]:
    """Groups whose JSON copy of their string arrays is missing or differs from the arrays."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as in refresh_labels
        stale = [(path, group) for path, group in _groups(location, "r") if _stale(group) is not None]
    return [f"group {path or '/'!r}: attrs[{LABELS_ATTR!r}] "
            f"{'is missing' if LABELS_ATTR not in group.attrs else 'differs from its string arrays'} (readers "
            "outside zarr-python read labels there); any build of the store, or store.consolidate(location), "
            "rewrites it" for path, group in stale]
