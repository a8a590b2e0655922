"""validate_store on the item groups: each broken rule of captures, encodings and views is named."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import zarr
from small_stores import copy_store

from builders.hypercube import main as hypercube_main
from builders.integers import main as integers_main
from store import ContractError, validate_store

CAPTURE, ENCODING, VIEW = ("captures/llama0/capture_0000", "encodings/llama0/capture_0000",
                           "hypercubes/encodings/llama0/capture_0000")


@pytest.fixture(scope="module")
def full_store(captured_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared capture, encoded, with a hypercube view of the encoding: a valid store of every item group."""
    store = copy_store(captured_store, tmp_path_factory.mktemp("items") / "items.zarr")
    assert integers_main(["--store", str(store), "--progress", "false"]) == 0
    assert hypercube_main(["--store", str(store), "--progress", "false"]) == 0
    return store


def _attrs(path: str, **changes: object) -> Callable[[zarr.Group], None]:
    def change(root: zarr.Group) -> None:
        root[path].attrs.update(changes)
    return change


def _array(path: str, value: object) -> Callable[[zarr.Group], None]:
    def change(root: zarr.Group) -> None:
        root[path][...] = value
    return change


BROKEN = {
    "incomplete capture": (_attrs(CAPTURE, complete=False), "is incomplete"),
    "capture without its prompt": (lambda root: root[CAPTURE].attrs.pop("prompt"), "attrs lack 'prompt'"),
    "wrong exponent": (_attrs(ENCODING, exponent=31), "is not scale_factor - floor"),
    "wrong limb count": (_attrs(ENCODING, limbs=7), "does not match negative"),
    "padding outside the real values": (_array(f"{VIEW}/pad_source", -1), "padding sources are not real"),
    "layer map with a gap": (_array(f"{VIEW}/layer_offset", 1), "layer map is not contiguous"),
    "view of a missing source": (_attrs(VIEW, source="encodings/llama0/capture_0099"), "is missing or incomplete"),
    "foreign group format": (_attrs("encodings", format="something-else"), "has format 'something-else'"),
}


def test_a_store_of_every_item_group_is_valid(full_store: Path) -> None:
    validate_store(str(full_store))


@pytest.mark.parametrize("rule", sorted(BROKEN))
def test_each_broken_item_rule_is_named(rule: str, full_store: Path, tmp_path: Path) -> None:
    change, message = BROKEN[rule]
    broken = copy_store(full_store, tmp_path / "broken.zarr")
    root = zarr.open_group(str(broken), mode="r+", use_consolidated=False)
    change(root)
    zarr.consolidate_metadata(str(broken))
    with pytest.raises(ContractError, match=message):
        validate_store(str(broken))
