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
from small_stores import write_slot
from store import ModelSlot, StatsLayout, StoreLocation, open_session, validate_store

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
    assert opened.value.chunks[-1] == (1024, 1024)  # one dask chunk per shard (a unit), not per inner chunk


_LAYOUT = StatsLayout(layers=("embed", "middle"), metrics=("rms", "kurtosis"), n_tokens=1024, n_channels=2,
                      token_chunk=256)


def _model_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One model's full (layer, metric, token) values and (layer, token, channel) channels."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(2, 2, _LAYOUT.n_tokens)).astype(np.float32)
    return values, rng.normal(size=(2, _LAYOUT.n_tokens, 2)).astype(np.float32)


def _commit(location: StoreLocation, label: str, seed: int, n_tokens: int) -> None:
    """Write and commit the first ``n_tokens`` (whole token chunks) of model ``label``."""
    provenance = {"model_id": label, "revision": "", "config": {"name": label}, "created": "", "versions": {}}
    slot = ModelSlot(label, np.array([-1, 1]), np.array([[0, 1], [0, 1]]), provenance)
    attrs = {"build_config": {"max_tokens": _LAYOUT.n_tokens}, "token_chunk": _LAYOUT.token_chunk}
    session = open_session(location, _LAYOUT, slot, attrs)
    values, channels = _model_data(seed)
    write_slot(session, values[:, :, :n_tokens], channels[:, :n_tokens], np.arange(n_tokens, dtype=np.int32),
               np.zeros(n_tokens, np.int64))
    assert int(session.group["committed_tokens"][session.slot]) == n_tokens


@pytest.mark.parametrize("committed", [(768, 256), (256, 768)], ids=["first-ahead", "second-ahead"])
def test_open_trims_to_the_least_committed_model(committed: tuple[int, int], tmp_path: Path) -> None:
    location = StoreLocation(str(tmp_path / "two.zarr"))
    for seed, (label, n_tokens) in enumerate(zip(("a", "b"), committed)):
        _commit(location, label, seed, n_tokens)
    stored = xr.open_zarr(location.zarr_store(read_only=True), group="stats", consolidated=False)
    assert stored.committed_tokens.values.tolist() == list(committed)
    assert np.isnan(stored.value.values).any(), "past its marker the lagging model must hold no data"
    opened = open_store(str(tmp_path / "two.zarr"))
    least = min(committed)
    assert opened.sizes["token"] == least
    for index in range(2):
        values, channels = _model_data(index)
        np.testing.assert_array_equal(opened.value.values[index], values[:, :, :least])
        np.testing.assert_array_equal(opened.channel_value.values[index], channels[:, :least])
    assert np.isfinite(opened.value.values).all() and np.isfinite(opened.channel_value.values).all()


def test_open_unknown_name_fails_clearly(tmp_path: Path) -> None:
    from store import CatalogError

    with pytest.raises(CatalogError, match="neither a catalog name"):
        open_store("no-such-store", catalog=tmp_path / "missing.yaml")
