"""open_store: lazy Datasets from a local path, an s3:// URL (moto) and a catalog name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from analysis import open_store
from conftest import BUCKET, TINY_ARGS
from store import StoreLocation, validate_store

Runner = Callable[..., tuple[int, str, str]]


def test_collect_to_s3_and_open_lazily(tiny_model: Callable[[str], Path], collect_cli: Runner,
                                       s3_options: dict[str, object], tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/collect-e2e.zarr"
    endpoint = s3_options["endpoint_url"]
    code, out, err = collect_cli("--model.name", str(tiny_model("qwen3")), "--store", url,
                                 "--storage_options", f"endpoint_url={endpoint}", *TINY_ARGS)
    assert code == 0, err
    assert url in out
    remote = open_store(url, storage_options=dict(s3_options))
    assert isinstance(remote.value.data, da.Array)
    validate_store(StoreLocation(url, s3_options))
    # a catalog name resolves to the same store
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(f"stores:\n  remote:\n    url: {url}\n    storage_options: {{endpoint_url: '{endpoint}'}}\n")
    named = open_store("remote", catalog=catalog)
    xr.testing.assert_identical(named.value.load(), remote.value.load())
    # plain xarray, no import of this project needed
    plain = xr.open_zarr(url, group="stats", storage_options=dict(s3_options))
    np.testing.assert_array_equal(plain.value.values, remote.value.values)
    assert str(plain.attrs).find("testing") == -1, "credentials must never reach the store"


def test_open_trims_uncommitted_tokens(tiny_model: Callable[[str], Path], collect_cli: Runner, tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    assert collect_cli("--model.name", str(tiny_model("llama")), "--store", str(store), *TINY_ARGS)[0] == 0
    zarr.open_group(store, path="stats", mode="r+")["committed_tokens"][0] = 2048  # as if still building
    opened = open_store(str(store))
    assert opened.sizes["token"] == 2048
    assert opened.value.chunks[-1] == (2048,)  # one dask chunk per shard, not per inner chunk


def test_open_unknown_name_fails_clearly(tmp_path: Path) -> None:
    from store import CatalogError

    with pytest.raises(CatalogError, match="neither a catalog name"):
        open_store("no-such-store", catalog=tmp_path / "missing.yaml")
