"""Consolidated metadata: refresh it, and tell when it no longer matches the arrays.

Plain ``xarray.open_zarr`` trusts the root's consolidated metadata, so a copy that
disagrees with the nodes' own ``zarr.json`` (a build killed between a resize and the
consolidation) shows wrong shapes to every reader. Builds repair it; the validator
names it.
"""

from __future__ import annotations

import warnings
from typing import Any

import zarr

from store._labels import label_problems, refresh_labels
from store._location import StoreLocation


def consolidate(location: StoreLocation) -> None:
    """Refresh every group's JSON copy of its labels (store/_labels.py), then the consolidated metadata."""
    refresh_labels(location)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata is not yet in the v3 spec
        zarr.consolidate_metadata(location.zarr_store())


def _comparable(metadata: Any) -> dict[str, Any]:
    described = metadata.to_dict()
    described.pop("consolidated_metadata", None)  # only the root's own copy differs here
    return described


def stale_metadata(location: StoreLocation) -> list[str]:
    """Problems of the root's consolidated metadata: missing, or nodes it describes wrongly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = zarr.open_group(location.zarr_store(read_only=True), mode="r")
        consolidated = root.metadata.consolidated_metadata
        if consolidated is None:
            return ["the root has no consolidated metadata"]
        recorded = consolidated.flattened_metadata
        live_root = zarr.open_group(location.zarr_store(read_only=True), mode="r", use_consolidated=False)
        live = {path: node.metadata for path, node in live_root.members(max_depth=None)}
    problems = [f"the consolidated metadata does not list {path!r}" for path in sorted(set(live) - set(recorded))]
    problems += [f"the consolidated metadata lists {path!r}, which does not exist"
                 for path in sorted(set(recorded) - set(live))]
    problems += [f"the consolidated metadata of {path!r} is stale (differs from its zarr.json)"
                 for path in sorted(set(live) & set(recorded))
                 if _comparable(recorded[path]) != _comparable(live[path])]
    return problems


def consolidate_if_stale(location: StoreLocation) -> bool:
    """Consolidate only when needed, so a finished store's bytes stay as they are; True if it did."""
    if not stale_metadata(location) and not label_problems(location):
        return False
    consolidate(location)
    return True
