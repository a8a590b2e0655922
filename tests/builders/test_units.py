"""The unit protocol through ``builders.collect``: format-1 stores upgraded, each shard written once."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
import zarr.storage
from conftest import TINY_ARGS
from small_stores import downgrade_to_format_1, tree_digest

from analysis import open_store
from builders.collect import main
from store import StoreLocation, consolidate, validate_store, vocabulary_keys
from store._staging import Staging

Runner = Callable[..., tuple[int, str, str]]
STREAMED = ("value", "argmax_channel", "channel_value", "token_id", "doc_index")


def _arrays(path: Path) -> dict[str, np.ndarray]:
    dataset = xr.open_zarr(path, group="stats", consolidated=False)
    return {name: dataset[name].values for name in (*STREAMED, "committed_tokens") if name in dataset}


@pytest.fixture(scope="module")
def built(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A complete format-2 store of 4 units of 1,024 tokens, and the arguments that built it."""
    args = ["--model.name", str(tiny_model("llama")), *TINY_ARGS]
    path = tmp_path_factory.mktemp("built") / "s.zarr"
    assert main([*args, "--store", str(path)]) == 0
    return path, args


def _copy_as_format_1(source: Path, target: Path, committed: int) -> None:
    """What format 1 left after a kill at ``committed`` tokens (its units past that recomputed)."""
    import shutil

    shutil.copytree(source, target)
    group = zarr.open_group(str(target), path="stats", mode="r+", use_consolidated=False)
    group["committed_tokens"][0] = committed
    downgrade_to_format_1(StoreLocation(str(target)))


def test_format_1_store_opens_as_it_is(built: tuple[Path, list[str]], tmp_path: Path) -> None:
    old = tmp_path / "old.zarr"
    _copy_as_format_1(built[0], old, committed=1536)
    validate_store(str(old))
    dataset = open_store(str(old))
    assert dataset.attrs["format_version"] == 1 and "unit_state" not in dataset
    assert dataset.sizes["token"] == 1536  # its one commit marker still rules


def test_a_build_upgrades_a_format_1_store_and_ends_bitwise_identical(
        built: tuple[Path, list[str]], collect_cli: Runner, tmp_path: Path) -> None:
    old = tmp_path / "old.zarr"
    _copy_as_format_1(built[0], old, committed=1536)  # mid-unit 1: units 1..3 are computed again
    code, out, err = collect_cli(*built[1], "--store", str(old))
    assert code == 0, err
    assert "Upgraded store" in out and "from format 1 to 2" in out
    assert "Resuming model" in out and "1 of 4 units committed" in out
    dataset = validate_store(str(old))
    assert dataset.attrs["format_version"] == 2 and dataset.unit_state.values.tolist() == [[2, 2, 2, 2]]
    expected, actual = _arrays(built[0]), _arrays(old)
    assert "argmax_channel" not in actual  # a store from before argmax_channel is resumed without it
    for name in actual:
        assert expected[name].tobytes() == actual[name].tobytes(), name


def test_a_complete_format_1_store_is_left_alone(built: tuple[Path, list[str]], collect_cli: Runner,
                                                 tmp_path: Path) -> None:
    old = tmp_path / "old.zarr"
    _copy_as_format_1(built[0], old, committed=4096)
    before = tree_digest(old)
    code, out, err = collect_cli(*built[1], "--store", str(old))
    assert code == 0 and "Nothing to do" in out, err
    assert tree_digest(old) == before, "re-running a finished build must not upgrade (or touch) its store"


class _Written:
    """Bytes handed to zarr's local store, and to checkpoints, while a build runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        original_set, original_save = zarr.storage.LocalStore.set, Staging.save

        async def counted_set(store: Any, key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
            self.bytes += len(value.to_bytes())
            return await original_set(store, key, value, *args, **kwargs)

        def counted_save(staging: Staging, start: int, end: int, arrays: dict[str, np.ndarray]) -> None:
            self.bytes += sum(array.nbytes for array in arrays.values())
            original_save(staging, start, end, arrays)

        monkeypatch.setattr(zarr.storage.LocalStore, "set", counted_set)
        monkeypatch.setattr(Staging, "save", counted_save)


def _stored_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file() and "_leases" not in file.parts)


@pytest.mark.parametrize("commit_seconds", ["60", "0"], ids=["unit-at-once", "checkpoint-every-batch"])
def test_each_shard_is_written_about_once(built: tuple[Path, list[str]], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, commit_seconds: str) -> None:
    """Bytes written over the store's size: about 1 when units commit at once (the format-1 writer
    rewrote each partial shard at every commit); at most about 2 when every batch is checkpointed."""
    written = _Written(monkeypatch)
    path = tmp_path / "s.zarr"
    assert main([*built[1], "--store", str(path), "--commit_seconds", commit_seconds]) == 0
    ratio = written.bytes / _stored_bytes(path)
    if commit_seconds == "60":
        assert ratio <= 1.5, ratio
    else:
        assert 1.5 < ratio <= 2.5, ratio
    assert not list((path / "_staging").rglob("*.npz")), "checkpoints outlived their units"


def test_a_rerun_adds_the_vocabulary_to_a_store_collected_before_stores_kept_one(
        built: tuple[Path, list[str]], collect_cli: Runner, tmp_path: Path) -> None:
    old = tmp_path / "old.zarr"
    shutil.copytree(built[0], old)
    zarr.open_group(str(old), mode="r+", use_consolidated=False).__delitem__("vocab")
    consolidate(StoreLocation(str(old)))
    statistics = tree_digest(old / "stats")
    code, out, err = collect_cli(*built[1], "--store", str(old))
    assert code == 0, err
    assert "Added the vocabulary of model" in out and "Nothing to do" in out
    assert tree_digest(old / "stats") == statistics  # not a statistic touched
    validate_store(str(old))
    assert vocabulary_keys(StoreLocation(str(old))) == vocabulary_keys(StoreLocation(str(built[0])))
