"""The item groups' deletion (``--overwrite`` of one model's captures) removes that model's items only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from store import StoreLocation, complete_items, item_path, prepare_group, remove_items, write_item


def _item(value: float) -> xr.Dataset:
    return xr.Dataset({"hidden_state": (("layer", "position", "hidden"), np.full((2, 3, 4), value, np.float32))},
                      coords={"layer": ["embedding", "final_norm"]})


def test_removing_a_models_items_leaves_other_models_and_foreign_files(tmp_path: Path) -> None:
    location = StoreLocation(str(tmp_path / "s.zarr"))
    for label in ("a", "b"):
        prepare_group(location, "captures", label, {})
        write_item(location, item_path("captures", label, 0), _item(1.0))
    foreign = tmp_path / "s.zarr" / "notes.txt"  # a file of the user's beside the groups
    foreign.write_text("keep me")
    remove_items(location, "captures", "a")
    remove_items(location, "captures", "never-captured")  # nothing there: nothing happens
    assert complete_items(location, "captures", "a") == {}
    assert complete_items(location, "captures", "b") == {0: "captures/b/capture_0000"}
    assert foreign.read_text() == "keep me"
