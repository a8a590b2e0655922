"""analysis.fit over real stores from builders.collect: lazy, cached, from S3 and catalog names."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import BUCKET, TINY_ARGS

import analysis
from analysis import fit_power_law, open_store
from store import InputError

Runner = Callable[..., tuple[int, str, str]]


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test caches into its own folder, never the user's ~/.cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("ACTIVATION_CACHE", str(folder))
    return folder


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


def test_fits_are_cached_in_the_store_and_refreshed_when_stats_change(local_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    shutil.copytree(local_store, store)  # the module's store stays as built for the other tests
    options = {"compare": False, "channels": False, "cache": "store"}
    first = analysis.fit(open_store(str(store)), **options)
    tree = xr.open_datatree(store, engine="zarr")
    assert {"stats", "fits"} <= set(tree.children)
    cached = analysis.fit(open_store(str(store)), **options)
    assert isinstance(cached.alpha.data, da.Array)  # read back from the fits group, not recomputed
    xr.testing.assert_allclose(cached.alpha.compute(), first.alpha)
    group = zarr.open_group(store, path="stats", mode="r+")
    group["value"][0, 1, 0, :] = group["value"][0, 1, 0, :] ** 2  # only the data change: no attrs, no commits
    refreshed = analysis.fit(open_store(str(store)), **options)
    assert not isinstance(refreshed.alpha.data, da.Array)  # ...so the fits are recomputed
    fresh = analysis.fit(open_store(str(store)), compare=False, channels=False, cache=False).compute()
    xr.testing.assert_allclose(refreshed.alpha, fresh.alpha)
    assert float(refreshed.alpha[0, 1, 0]) != float(first.alpha[0, 1, 0])


def _fit_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the series fits actually computed (a cache hit computes none)."""
    from analysis import _dataset_fit

    calls: list[int] = []
    original = _dataset_fit._fit_series

    def counted(*args: object, **kwargs: object) -> np.ndarray:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(_dataset_fit, "_fit_series", counted)
    return calls


def test_the_cache_never_answers_for_another_selection(local_store: Path) -> None:
    dataset = open_store(str(local_store))
    part = analysis.fit(dataset.isel(layer=[0], metric=[0, 5]), compare=False).compute()
    assert part.alpha.shape == (1, 1, 2)
    whole = analysis.fit(dataset, compare=False).compute()
    assert whole.alpha.shape == (1, 3, 13)
    xr.testing.assert_allclose(whole.alpha, analysis.fit(dataset, compare=False, cache=False).alpha.compute())


def test_the_cache_never_answers_for_other_options(local_store: Path) -> None:
    dataset = open_store(str(local_store))
    assert "channel_alpha" not in analysis.fit(dataset, compare=False, channels=False)
    assert analysis.fit(dataset, compare=False).channel_alpha.shape == (1, 3, 3)


def test_the_cache_never_answers_for_derived_data(local_store: Path) -> None:
    dataset = open_store(str(local_store))
    squared = dataset.assign(value=dataset.value ** 2)
    expected = analysis.fit(squared, compare=False, channels=False, cache=False).alpha.compute()
    plain = analysis.fit(dataset, compare=False, channels=False).alpha.compute()  # cached first...
    xr.testing.assert_allclose(analysis.fit(squared, compare=False, channels=False).alpha.compute(), expected)
    assert not np.allclose(plain.values, expected.values, equal_nan=True)  # ...never served for the square
    xr.testing.assert_allclose(analysis.fit(dataset, compare=False, channels=False).alpha.compute(), plain)


def test_identical_input_is_served_from_the_cache(local_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fit_calls(monkeypatch)
    first = analysis.fit(open_store(str(local_store)).isel(layer=[2]), compare=False).compute()
    computed = len(calls)
    again = analysis.fit(open_store(str(local_store)).isel(layer=[2]), compare=False).compute()
    assert computed == 13 + 3 and len(calls) == computed  # the second call computed nothing
    xr.testing.assert_equal(again, first)


def test_float_statistics_are_fitted_as_continuous(local_store: Path) -> None:
    dataset = open_store(str(local_store)).isel(layer=[1], metric=[0])
    rounded = dataset.assign(value=np.round(dataset.value * 100))  # integer-valued floats
    fits = analysis.fit(rounded, compare=False, channels=False, cache=False).compute()
    series = rounded.value.values[0, 0, 0]
    assert float(fits.alpha[0, 0, 0]) == fit_power_law(np.abs(series), discrete=False).alpha
    counts = rounded.assign(value=rounded.value.astype("int64"))
    as_integers = analysis.fit(counts, compare=False, channels=False, cache=False).compute()
    assert float(as_integers.alpha[0, 0, 0]) == fit_power_law(np.abs(series), discrete=True).alpha


def test_gof_failed_is_reported_after_gof_p(local_store: Path) -> None:
    from analysis._dataset_fit import SCALARS

    assert SCALARS[SCALARS.index("gof_p") + 1] == "gof_failed"
    fits = analysis.fit(open_store(str(local_store)).isel(layer=[0], metric=[0]), compare=False,
                        channels=False, cache=False).compute()
    assert int(fits.gof_failed[0, 0, 0]) == 0


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
    fits = analysis.fit(open_store("remote", catalog=catalog), compare=False, cache="store")  # writable: asked
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


def test_fit_cli_types_storage_options_like_the_builders(s3_options: dict[str, object],
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import s3fs

    from analysis.fit import main

    seen: list[dict[str, object]] = []
    original = s3fs.S3FileSystem.__init__

    def recording(self: s3fs.S3FileSystem, *args: object, **kwargs: object) -> None:
        seen.append(kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "__init__", recording)
    s3fs.S3FileSystem.clear_instance_cache()  # a cached instance would skip __init__
    endpoint = s3_options["endpoint_url"]
    assert main([f"s3://{BUCKET}/missing.zarr", "--storage_options", "anon=false",
                 "--storage-option", f"endpoint_url={endpoint}", "--storage-options", "use_ssl=0"]) == 2
    assert seen and all(kwargs["anon"] is False and kwargs["use_ssl"] == 0 for kwargs in seen)
    err = capsys.readouterr().err
    assert "error:" in err
    # one convention with the builders: the singular spelling works, with a note naming the shared one
    assert err.count("note: --storage-option is deprecated; use --storage_options") == 1


@pytest.mark.parametrize("module", ["analysis.fit", "analysis.plot"])
def test_cli_storage_option_without_value_is_one_line_error(module: str, local_store: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_info:
        main([str(local_store), "--storage_options", "novalue"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "'novalue'" in err and "KEY=VALUE" in err


def test_fit_cli_accepts_underscore_and_hyphen_flags(local_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from analysis.fit import main, parse

    underscored = parse([str(local_store), "--alpha_range", "0,3", "--n_boot", "2", "--no_compare",
                         "--no_channels", "--no_cache", "--storage_options", "anon=false"])
    hyphenated = parse([str(local_store), "--alpha-range", "0,3", "--n-boot", "2", "--no-compare",
                        "--no-channels", "--no-cache", "--storage-option", "anon=false"])
    assert vars(underscored) == vars(hyphenated)
    assert underscored.storage_options == {"anon": False} and underscored.cache == "off"
    assert main([str(local_store), "--no_compare", "--no_channels", "--cache", "off", "--scheduler",
                 "synchronous", "--alpha_range", "0,3"]) == 0
    assert "alpha" in capsys.readouterr().out


def test_fit_cli_table_explains_itself(local_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The legend, status in words, R with p, the verdict and the notes; the channel summary by hidden index."""
    from analysis.fit import LEGEND, main

    assert main([str(local_store), "--gof_precision", "0.1", "--scheduler", "synchronous"]) == 0
    printed = capsys.readouterr()
    out = printed.out
    assert LEGEND.split(";")[0] in out.replace("\n", " ")
    assert "verdict" in out and "LN" in out and "status" in out
    rows = [line for line in out.splitlines() if line.startswith("llama")]
    assert len(rows) == 39 and all(line.split()[3] in {"ok", "constant", "<3", "no"} for line in rows)
    assert any(" (0." in line or " (1.00)" in line for line in rows)  # R (p)
    assert any(line.rstrip().endswith("bounded metric") for line in rows if " entropy " in line)
    assert "note: bounded metric" in out
    fits = analysis.fit(analysis.open_store(str(local_store)), verdict=True, gof_precision=0.1).compute()
    hidden = {int(index) for index in fits.channel_index.sel(layer="middle").values.ravel()}
    summary = next(line for line in out.splitlines() if line.strip().startswith("llama") and "power-law-like" in line
                   and " middle " in line)
    shown = {int(item.split(":")[0]) for item in summary.split("top: ")[1].split(", ")}
    assert shown <= hidden and "/3 power-law-like" in summary
    assert "fits written to the cache" in printed.err
    assert main([str(local_store), "--gof_precision", "0.1", "--scheduler", "synchronous"]) == 0
    again = capsys.readouterr()
    assert "written" not in again.err and "read from the cache" in again.err  # a hit says so, and no more


def test_fit_cli_formats_csv_and_json(local_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import json

    import pandas as pd

    from analysis.fit import main

    options = [str(local_store), "--no_verdict", "--no_channels", "--scheduler", "synchronous"]
    assert main([*options, "--format", "csv"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(frame) == 39 and {"model", "layer", "metric", "alpha", "status", "R_lognormal", "p_lognormal"} <= set(frame)
    assert set(frame.status) <= {"ok", "constant", "<3 distinct", "no valid xmin"}
    assert main([*options, "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 39 and records[0]["layer"] in {"embed", "middle", "pre_last"}


def test_verdict_is_stored_and_decodable(local_store: Path) -> None:
    fits = analysis.fit(analysis.open_store(str(local_store)), verdict=True, gof_precision=0.1, channels=False).compute()
    meanings = fits.verdict.attrs["flag_meanings"].split()
    assert fits.verdict.dtype == np.int8 and set(np.unique(fits.verdict.values)) <= set(fits.verdict.attrs["flag_values"])
    bounded = fits.verdict.sel(metric=["entropy", "gini", "hoyer", "participation_ratio"])
    assert {meanings[int(code)] for code in bounded.values.ravel()} <= {"bounded_metric", "not_assessed"}
    bounded_names = ["entropy", "gini", "hoyer", "participation_ratio"]
    others = fits.drop_sel(metric=bounded_names)
    assert (others.gof_n.where(others.status == 0) > 0).all() and (fits.gof_n <= 25).all()  # 1 / (4 * 0.1^2)
    assert (fits.gof_n.sel(metric=bounded_names) == 0).all()  # their verdict needs no bootstrap: skipped
    with pytest.raises(InputError, match="needs the likelihood-ratio comparisons"):
        analysis.fit(analysis.open_store(str(local_store)), verdict=True, compare=False)


def test_channel_verdicts_only_when_asked(local_store: Path) -> None:
    dataset = analysis.open_store(str(local_store))
    metrics_only = analysis.fit(dataset, verdict=True, gof_precision=0.2, channel_verdict=False, cache=False).compute()
    assert "verdict" in metrics_only and "channel_verdict" not in metrics_only
    assert np.isnan(metrics_only.channel_gof_p).all() and (metrics_only.channel_gof_n == 0).all()
    both = analysis.fit(dataset, verdict=True, gof_precision=0.2, cache=False).compute()
    assert "channel_verdict" in both and (both.channel_gof_n.where(both.channel_status == 0) > 0).all()
