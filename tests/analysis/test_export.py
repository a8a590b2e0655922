"""analysis.export: ZipfActivation's statistics/<layer>.npz and fits/fit_results.json, read back with NumPy and json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from small_stores import build_valid_store

import analysis
from analysis import open_store
from analysis.export import export_fits_json, export_npz, layer_names, main


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "s.zarr"
    build_valid_store(path, labels=("a", "b"))
    return path


def test_npz_per_layer_holds_every_metric_and_channel_wise(two_models: Path, tmp_path: Path) -> None:
    written = export_npz(str(two_models), tmp_path / "results", model="b")
    assert sorted(p.name for p in written) == ["embed.npz", "layer_1.npz"]  # layer_index -1 and 1
    dataset = open_store(str(two_models))
    for path, layer in zip(sorted(written), ["embed", "layer_1"]):
        assert path.parent == tmp_path / "results" / "statistics"
        with np.load(path) as arrays:
            assert sorted(arrays.files) == ["channel_wise", "kurtosis", "rms"]
            for metric in ("rms", "kurtosis"):
                expected = dataset.value.sel(model="b", layer=layer, metric=metric).values
                assert arrays[metric].dtype == np.float32 and arrays[metric].shape == (600,)
                np.testing.assert_array_equal(arrays[metric], expected)
            np.testing.assert_array_equal(arrays["channel_wise"], dataset.channel_value.sel(model="b", layer=layer).values)
            assert arrays["channel_wise"].shape == (600, 2)


def test_fit_results_json_holds_the_fits_in_its_shape(two_models: Path, tmp_path: Path) -> None:
    written = export_fits_json(str(two_models), tmp_path / "results")  # cached: the reference below reads it
    assert [p.relative_to(tmp_path / "results") for p in written] == [Path("a/fits/fit_results.json"),
                                                                       Path("b/fits/fit_results.json")]
    document = json.loads(written[1].read_text())
    fits = analysis.fit(open_store(str(two_models))).compute().sel(model="b")
    assert sorted(document) == ["embed", "layer_1"]
    record = document["layer_1"]["rms"]
    cell = fits.sel(layer="layer_1", metric="rms")
    assert record["alpha"] == pytest.approx(float(cell.alpha)) and record["xmin"] == pytest.approx(float(cell.xmin))
    assert record["ks_statistic"] == pytest.approx(float(cell.ks_d))
    assert record["r_squared"] == pytest.approx(float(cell.r2)) and record["slope"] == pytest.approx(float(cell.slope))
    assert record["status"] == "ok" and record["n_tail"] == int(cell.n_tail)
    lognormal = record["comparisons"]["lognormal"]
    assert lognormal["R"] == pytest.approx(float(cell.R.sel(alternative="lognormal")))
    channels = document["layer_1"]["channel_wise"]
    assert sorted(channels) == ["0", "3"]  # keyed by the real hidden channel (channel_index)
    assert channels["3"]["alpha"] == pytest.approx(float(fits.channel_alpha.sel(layer="layer_1").values[1]))


def test_the_cli_writes_both_and_refuses_a_bad_target(two_models: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    assert main([str(two_models), "--to", "npz", str(out), "--to", "json", str(out), "--model", "a",
                 "--no-compare", "--cache", "off"]) == 0
    assert (out / "statistics" / "embed.npz").is_file() and (out / "fits" / "fit_results.json").is_file()
    assert main([str(two_models), "--to", "npz", str(out), "--model", "a"]) == 0  # its own folder: written again
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    capsys.readouterr()
    for bad in (["--to", "csv", str(out)], ["--to", "npz", str(tmp_path / "other")], ["--to", "npz", str(out),
                                                                                        "--model", "zzz"]):
        try:
            code = main([str(two_models), *bad])
        except SystemExit as exit_:
            code = exit_.code
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (bad, err)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_two_labels_of_one_block_get_a_file_each() -> None:
    import xarray as xr

    dataset = xr.Dataset({"layer_index": (("model", "layer"), [[-1, 15, 15, 28]])},
                         coords={"model": ["a"], "layer": ["embed", "middle", "layer_15", "pre_last"]})
    assert layer_names(dataset, "a") == {"embed": "embed", "middle": "layer_15", "layer_15": "layer_15_layer_15",
                                         "pre_last": "layer_28"}
