"""The validator: each rule of docs/store-format.md, broken alone in an otherwise valid store, is named."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from small_stores import build_valid_store
from store import ContractError, StatsLayout, StoreLocation, consolidate, validate_store

@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> StoreLocation:
    return build_valid_store(tmp_path_factory.mktemp("valid") / "s.zarr", ("m", "n"))


def _rewrite(valid: StoreLocation, path: Path, change: Callable[[xr.Dataset], xr.Dataset]) -> StoreLocation:
    """A copy of ``valid`` with ``change`` applied, written as builds write (consolidated)."""
    dataset = change(xr.open_zarr(valid.zarr_store(read_only=True), group="stats").load())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset.to_zarr(path, group="stats", mode="w", zarr_format=3, consolidated=True)
    return StoreLocation(str(path))


def test_the_fixture_store_is_valid(valid: StoreLocation) -> None:
    dataset = validate_store(valid)
    assert list(dataset.model.values) == ["m", "n"]


def _rechunk(name: str, chunks: tuple[int, ...], shards: tuple[int, ...]) -> Callable[[xr.Dataset], xr.Dataset]:
    def change(dataset: xr.Dataset) -> xr.Dataset:
        dataset[name].encoding.update(chunks=chunks, shards=shards)
        return dataset

    return change


def _set_attr(key: str, value: object) -> Callable[[xr.Dataset], xr.Dataset]:
    def change(dataset: xr.Dataset) -> xr.Dataset:
        dataset.attrs[key] = value
        return dataset

    return change


BROKEN_RULES = {
    # _check_variables
    "missing variable": (lambda d: d.drop_vars("doc_index"), "'doc_index' is missing"),
    "wrong dtype": (lambda d: d.assign(token_id=d.token_id.astype(np.int64)), "'token_id' has dtype int64"),
    "wrong dims": (lambda d: d.assign(layer_index=d.layer_index.T), "'layer_index' has dims"),
    # _check_labels
    "duplicate metric": (lambda d: d.assign_coords(metric=["rms", "rms"]), "'metric' labels must be unique"),
    "empty model label": (lambda d: d.assign_coords(model=["m", ""]), "'model' labels must be unique and non-empty"),
    "bad layer label": (lambda d: d.assign_coords(layer=["embed", "block1"]), "layer label 'block1'"),
    "wrong layer_index": (lambda d: d.assign(layer_index=d.layer_index + 1), "layer_index of 'embed'"),
    # _check_attrs
    "format": (_set_attr("format", "other"), "attrs['format'] is 'other'"),
    "format_version": (_set_attr("format_version", 3), "attrs['format_version'] is 3"),
    "metric definition": (_set_attr("metric_definitions", {"rms": ""}), "metrics without a definition"),
    "provenance": (_set_attr("models", {"m": {"model_id": "m"}}), "provenance of model 'm' lacks"),
    # _check_chunks
    "token_chunk attr": (_set_attr("token_chunk", "200"), "attrs['token_chunk'] is '200'"),
    "two series per shard": (_rechunk("value", (1, 2, 1, 200), (1, 2, 1, 600)), "do not hold one series each"),
    "inner chunk vs token_chunk": (_rechunk("value", (1, 1, 1, 100), (1, 1, 1, 600)), "do not match token_chunk"),
    # _check_commits
    "commits past the axis": (lambda d: d.assign(committed_tokens=d.committed_tokens + 1), "outside 0..600"),
    "negative commits": (lambda d: d.assign(committed_tokens=-d.committed_tokens), "outside 0..600"),
}


@pytest.mark.parametrize("rule", sorted(BROKEN_RULES))
def test_each_broken_rule_is_named(rule: str, valid: StoreLocation, tmp_path: Path) -> None:
    change, message = BROKEN_RULES[rule]
    broken = _rewrite(valid, tmp_path / "broken.zarr", change)
    with pytest.raises(ContractError, match=_escaped(message)):
        validate_store(broken)


def _escaped(message: str) -> str:
    import re

    return re.escape(message)


def test_rewriting_unchanged_stays_valid(valid: StoreLocation, tmp_path: Path) -> None:
    """The rewrite itself breaks nothing: each failure above is the rule's own."""
    validate_store(_rewrite(valid, tmp_path / "same.zarr", lambda d: d))


def test_small_shards_of_a_long_axis_are_named(tmp_path: Path) -> None:
    layout = StatsLayout(layers=("embed",), metrics=("rms",), n_tokens=600_000, n_channels=0, token_chunk=200)
    dataset = xr.Dataset({"value": (("model", "layer", "metric", "token"), np.zeros((1, 1, 1, 600_000), np.float32))})
    dataset["value"].encoding.update(chunks=(1, 1, 1, 200), shards=(1, 1, 1, 1000))
    assert layout.shard_tokens >= 262_144
    from store._validate import _check_chunks

    problems = _check_chunks(dataset.assign_attrs(token_chunk=200).pipe(_with_streamed_stubs))
    assert any("under 1 MiB" in problem for problem in problems)


def _with_streamed_stubs(dataset: xr.Dataset) -> xr.Dataset:
    """The other streamed variables, correctly chunked, so only ``value`` breaks the rule."""
    n = dataset.sizes["token"]
    stubs = {"channel_value": (("model", "layer", "token", "channel"), np.zeros((1, 1, n, 1), np.float32)),
             "token_id": (("model", "token"), np.zeros((1, n), np.int32)),
             "doc_index": (("model", "token"), np.zeros((1, n), np.int64))}
    result = dataset.assign(stubs)
    for name, dims in (("channel_value", (1, 1, n, 1)), ("token_id", (1, n)), ("doc_index", (1, n))):
        result[name].encoding.update(chunks=tuple(200 if size == n else size for size in dims), shards=dims)
    return result


def test_stale_consolidated_metadata_is_named(tmp_path: Path) -> None:
    location = build_valid_store(tmp_path / "s.zarr")
    group = zarr.open_group(location.local_path, path="stats", mode="r+", use_consolidated=False)
    group["value"].resize((1, 2, 2, 400))  # as a kill between a resize and its consolidation leaves it
    with pytest.raises(ContractError, match=r"consolidated metadata of 'stats/value' is stale"):
        validate_store(location)
    consolidate(location)
    with pytest.raises(ContractError, match="cannot open the .stats. group"):  # consistent, but arrays disagree
        validate_store(location)


def test_missing_consolidated_metadata_is_named(tmp_path: Path) -> None:
    location = build_valid_store(tmp_path / "s.zarr")
    root_json = location.local_path / "zarr.json"
    document = json.loads(root_json.read_text())
    document.pop("consolidated_metadata")
    root_json.write_text(json.dumps(document))
    with pytest.raises(ContractError, match="no consolidated metadata"):
        validate_store(location)


def test_an_unlisted_group_is_named(tmp_path: Path) -> None:
    location = build_valid_store(tmp_path / "s.zarr")
    zarr.open_group(location.local_path, mode="r+", use_consolidated=False).create_group("extra")
    with pytest.raises(ContractError, match="does not list 'extra'"):
        validate_store(location)


def test_a_missing_store_is_a_location_error_not_a_traceback(tmp_path: Path) -> None:
    from store import StoreLocationError

    with pytest.raises(StoreLocationError, match="no store at .*nothing.zarr"):
        validate_store(str(tmp_path / "nothing.zarr"))
