"""analysis.fit over real stores from builders.collect: lazy, cached, from S3 and catalog names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

import analysis
from analysis import fit_power_law, open_store
from conftest import BUCKET, TINY_ARGS
from store import StoreLocation, consolidate

Runner = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def local_store(tmp_path_factory: pytest.TempPathFactory, tiny_model: Callable[[str], Path]) -> Path:
    from builders.collect import main

    store = tmp_path_factory.mktemp("fits") / "s.zarr"
    assert main(["--model.name", str(tiny_model("llama")), "--store", str(store), *TINY_ARGS,
                 "--stats.channels", "3"]) == 0
    return store


def test_fit_is_lazy_one_task_per_series_and_matches_the_single_fit(local_store: Path) -> None:
    dataset = open_store(str(local_store))
    lazy = analysis.fit(dataset, compare=False, cache=False)
    assert isinstance(lazy.alpha.data, da.Array)
    assert lazy.alpha.data.npartitions == 1 * 3 * 13 and lazy.channel_alpha.data.npartitions == 3 * 3
    with dask.config.set(scheduler="processes"):
        fits = lazy.compute()
    assert fits.alpha.dims == ("model", "layer", "metric")
    assert fits.channel_alpha.dims == ("model", "layer", "channel")
    series = np.abs(dataset.value.sel(layer="middle", metric="kurtosis").values[0])
    single = fit_power_law(series)
    cell = fits.sel(layer="middle", metric="kurtosis").isel(model=0)
    assert float(cell.alpha) == single.alpha and float(cell.xmin) == single.xmin
    assert int(cell.n_tail) == single.n_tail and int(cell.status) == 0


def test_fits_are_cached_in_the_store_and_refreshed_when_stats_change(local_store: Path) -> None:
    options = {"compare": False, "channels": False}
    first = analysis.fit(open_store(str(local_store)), **options)
    tree = xr.open_datatree(local_store, engine="zarr")
    assert {"stats", "fits"} <= set(tree.children)
    cached = analysis.fit(open_store(str(local_store)), **options)
    assert isinstance(cached.alpha.data, da.Array)  # read back from the fits group, not recomputed
    xr.testing.assert_allclose(cached.alpha.compute(), first.alpha)
    group = zarr.open_group(local_store, path="stats", mode="r+")
    group["value"][0, 1, 0, :512] = group["value"][0, 1, 0, :512] * 10  # the statistics change...
    group.attrs["models"] = {**group.attrs["models"], "edited": {"note": "changed"}}
    consolidate(StoreLocation(str(local_store)))  # as every build does when it finishes
    refreshed = analysis.fit(open_store(str(local_store)), **options)
    assert not isinstance(refreshed.alpha.data, da.Array)  # ...so the fits are recomputed
    assert refreshed.attrs["stats_fingerprint"] != first.attrs["stats_fingerprint"]


def test_comparisons_and_constant_series(local_store: Path) -> None:
    dataset = open_store(str(local_store)).isel(metric=[0, 5])
    constant = dataset.copy()
    constant["value"] = xr.full_like(dataset["value"], 2.0)
    fits = analysis.fit(xr.concat([dataset, constant.assign_coords(model=["const"])], "model"),
                        channels=False, cache=False).compute()
    assert fits.R.dims == ("model", "layer", "metric", "alternative")
    assert np.isfinite(fits.R.isel(model=0)).any()
    assert (fits.status.sel(model="const") == 1).all() and np.isnan(fits.alpha.sel(model="const")).all()


def test_fit_from_s3_and_catalog_name(tiny_model: Callable[[str], Path], collect_cli: Runner,
                                      s3_options: dict[str, object], tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/fit-e2e.zarr"
    endpoint = s3_options["endpoint_url"]
    assert collect_cli("--model.name", str(tiny_model("gpt2")), "--store", url, "--storage_options",
                       f"endpoint_url={endpoint}", *TINY_ARGS, "--stats.channels", "2")[0] == 0
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(f"stores:\n  remote:\n    url: {url}\n    storage_options: {{endpoint_url: '{endpoint}'}}\n")
    fits = analysis.fit(open_store("remote", catalog=catalog), compare=False)
    assert np.isfinite(fits.alpha.values).sum() > 30
    remote_tree = xr.open_datatree(url, engine="zarr", storage_options=dict(s3_options))
    assert "fits" in remote_tree.children


def test_fit_cli_prints_a_table(local_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from analysis.fit import main

    assert main([str(local_store), "--no-compare", "--no-channels", "--no-cache", "--scheduler", "synchronous"]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "middle" in out and out.count("\n") > 39


def test_fit_cli_bad_store_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from analysis.fit import main

    assert main([str(tmp_path / "missing.zarr")]) == 2
    assert "neither a catalog name" in capsys.readouterr().err
