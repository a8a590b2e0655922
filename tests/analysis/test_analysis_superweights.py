"""analysis.superweights and its figures: tables as pandas, the export's files, the command line, the plots.

The store is written through the store API (no model): a dense model with two super weights and a
mixture-of-experts model with one and a router table, so every value read back is known.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import zarr
from small_superweights import (
    ACCURACY,
    DENSE_PPL,
    THRESHOLD,
    detection_table,
    evaluations_table,
    model_attributes,
    router_table,
    weights_table,
    write_calm_model,
)

import analysis
from analysis import plots
from analysis.superweights import main
from store import StoreLocation, prepare_superweights, write_summary, write_table

matplotlib.use("Agg")

MOE_PPL = {"baseline": 8.0, "sw0": 16.0}


TABLES = {
    "dense": {"detection": detection_table(4, (1, 3)), "weights": weights_table((1, 3)),
              "evaluations": evaluations_table(DENSE_PPL, 2)},
    "moe": {"detection": detection_table(6, (2,)), "weights": weights_table((2,), expert=3),
            "evaluations": evaluations_table(MOE_PPL, 1), "router": router_table(6)},
}
ATTRS = {"dense": model_attributes("LlamaForCausalLM", 4, False, n_params=None),
         "moe": model_attributes("OlmoeForCausalLM", 6, True, n_params=None)}


def _write(location: StoreLocation) -> None:
    for label, tables in TABLES.items():
        prepare_superweights(location, label, ATTRS[label])
        for table, dataset in tables.items():
            write_table(location, label, table, dataset)
    write_summary(location)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("superweights") / "sw.zarr"
    _write(StoreLocation(str(path)))
    return str(path)


def test_open_and_records_on_every_backend(location: StoreLocation) -> None:
    _write(location)
    tables = analysis.open_superweights(location.url, location.storage_options)
    assert {label: set(found) for label, found in tables.items()} == \
           {"dense": {"detection", "weights", "evaluations"}, "moe": {"detection", "weights", "evaluations", "router"}}
    weights = analysis.superweight_records(location.url, "weights", location.storage_options)
    assert weights["model"].tolist() == ["dense", "dense", "moe"]
    assert weights["layer"].tolist() == [1, 3, 2] and weights["expert"].tolist() == [-1, -1, 3]
    np.testing.assert_array_equal(weights["value"].to_numpy(), np.array([-1.875, 0.1, -1.875], np.float32))
    only = analysis.superweight_records(location.url, "weights", location.storage_options, models=["moe"])
    assert only["model"].tolist() == ["moe"]


def test_detection_records_are_one_row_per_iteration_and_layer(store: str) -> None:
    detection = analysis.superweight_records(store, "detection")
    assert len(detection) == 3 * 4 + 2 * 6
    dense = detection[detection["model"] == "dense"].set_index(["iteration", "layer"])
    assert dense.loc[(1, 3), "input_max"] == 103.0 and dense.loc[(1, 3), "output_max"] == 1003.0
    assert dense["passed"].sum() == 2  # the two spikes, nothing else above the threshold
    router = analysis.superweight_records(store, "router")
    assert len(router) == 6 * 4 and set(router["model"]) == {"moe"}
    assert router.loc[router["co_spiking"], ["layer", "expert"]].values.tolist() == [[2, 3], [4, 1]]


def test_summary_rows(store: str) -> None:
    summary = analysis.superweight_summary(store)
    assert summary["model"].tolist() == ["dense", "moe"]
    assert summary["n_superweights"].tolist() == [2, 1]
    assert summary["layers"].tolist() == ["1,3", "2"] and summary["relative_depth"].tolist() == ["0.333,1.000", "0.400"]
    np.testing.assert_allclose(summary["severity"], [50.0, 2.0])
    np.testing.assert_allclose(summary["worst_single_ratio"], [4.0, 2.0])
    np.testing.assert_allclose(summary["baseline_perplexity"], [10.0, 8.0])


def test_export_files_read_back_as_the_store_holds(store: str, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    written = analysis.superweights.export(store, folder)
    names = {str(path.relative_to(folder)) for path in written}
    per_model = {"detection.csv", "weights.csv", "weights.jsonl", "evaluations.csv", "evaluations.jsonl",
                 "analysis.json"}
    tables_and_summaries = {*(f"dense/{name}" for name in per_model), *(f"moe/{name}" for name in per_model),
                            "moe/router.csv", "summary.json", "summary.csv", "superweights.jsonl"}
    # the rest is the comprehensive script's layout (tests/analysis/test_superweight_layouts.py checks it)
    assert tables_and_summaries <= names
    assert {name.split("/")[1] for name in names - tables_and_summaries if "/" in name} == {"data", "plots", "logs",
                                                                                             "model_comparison.png"}
    for label, tables in TABLES.items():
        csv = pd.read_csv(folder / label / "weights.csv")
        lines = pd.read_json(folder / label / "weights.jsonl", lines=True)
        for frame in (csv, lines):
            assert frame["tensor"].tolist() == tables["weights"]["tensor"].values.tolist()
            np.testing.assert_array_equal(frame["value"].to_numpy(np.float32), tables["weights"]["value"].values)
            assert frame["row"].tolist() == tables["weights"]["row"].values.tolist()
        evaluations = pd.read_csv(folder / label / "evaluations.csv", keep_default_na=False)
        np.testing.assert_array_equal(evaluations["value"].to_numpy(), tables["evaluations"]["value"].values)
        assert evaluations["zeroed"].astype(str).tolist() == tables["evaluations"]["zeroed"].values.tolist()
    router = pd.read_csv(folder / "moe" / "router.csv")
    np.testing.assert_array_equal(router["p_active"].to_numpy(np.float32), TABLES["moe"]["router"]["p_active"].values.ravel())
    everything = pd.read_json(folder / "superweights.jsonl", lines=True)
    assert everything["model"].tolist() == ["dense", "dense", "moe"]
    summary = pd.read_csv(folder / "summary.csv")
    np.testing.assert_allclose(summary["severity"], [50.0, 2.0])
    assert [row["model"] for row in json.loads((folder / "summary.json").read_text())["models"]] == ["dense", "moe"]


def test_analysis_json_nests_evaluations_by_ablation(store: str, tmp_path: Path) -> None:
    analysis.superweights.export(store, tmp_path / "export")
    document = json.loads((tmp_path / "export" / "dense" / "analysis.json").read_text())
    assert document["attrs"]["architecture"] == "LlamaForCausalLM"
    assert document["attrs"]["settings"] == {"detect": {"spike_threshold": THRESHOLD}}  # JSON text, parsed
    assert [weight["layer"] for weight in document["super_weights"]] == [1, 3]
    assert document["super_weights"][1]["value"] == float(np.float32(0.1))  # exact, not rounded to a few places
    assert [it["passed_layers"] for it in document["iterations"]] == [[1], [3], []]
    assert document["detection"]["stop_reason"] == "nothing passed the threshold"
    evaluations = document["evaluations"]
    assert list(evaluations) == list(DENSE_PPL)
    assert evaluations["sw0"]["perplexity"] == 40.0 and evaluations["sw0"]["loss"] == pytest.approx(math.log(40.0))
    assert evaluations["sw0"]["zeroed"] == [0] and evaluations["all"]["zeroed"] == [0, 1]
    # hellaswag's primary accuracy is acc_norm; every metric is kept beside it
    assert evaluations["sw1"]["accuracy"] == {"hellaswag": ACCURACY["sw1"], "gsm8k": ACCURACY["sw1"] / 2}
    assert evaluations["sw1"]["accuracy_metrics"]["hellaswag"]["acc"] == pytest.approx(ACCURACY["sw1"] - 0.1)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[str]]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def test_cli_prints_the_summary_and_exports(store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, store)
    assert code == 0 and not err
    assert "severity" in out and "OlmoeForCausalLM" in out and "model.layers.3.mlp.down_proj.weight" in out
    code, out, _ = _cli(capsys, store, "--models", "moe", "--export", str(tmp_path / "out"))
    assert code == 0 and "files to" in out
    listed = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert [name for name in listed if not name.startswith("complete_analysis_")] == [
        "moe", "summary.csv", "summary.json", "summary_plots", "superweights.jsonl"]
    assert len([name for name in listed if name.startswith("complete_analysis_")]) == 1
    assert _cli(capsys, store, "--export", str(tmp_path / "out"))[0] == 0  # an earlier export is ours


@pytest.mark.parametrize("case", ["missing store", "foreign folder", "unknown model", "store without the group"])
def test_cli_refuses_in_one_line(store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    bare = tmp_path / "bare.zarr"
    zarr.open_group(str(bare), mode="w", zarr_format=3)
    argv = {"missing store": [str(tmp_path / "nothing.zarr")], "foreign folder": [store, "--export", str(foreign)],
            "unknown model": [store, "--models", "dense", "llama-9"], "store without the group": [str(bare)]}[case]
    code, out, err = _cli(capsys, *argv)
    assert code == 2 and not out and len(err) == 1 and err[0].startswith("error: ")
    assert {"missing store": "nothing.zarr", "foreign folder": "not a super weight export",
            "unknown model": "'llama-9'", "store without the group": "no super weight analyses"}[case] in err[0]
    assert sorted(path.name for path in foreign.iterdir()) == ["notes.txt"]


def test_cli_writes_every_figure(store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, store, "--plots", str(tmp_path / "figures"))
    assert code == 0 and not err
    dense = {"detection_iterations", "spike_scatter", "ablation_impact", "combined_effects"}
    assert {path.stem for path in (tmp_path / "figures" / "dense").glob("*.png")} == dense
    assert {path.stem for path in (tmp_path / "figures" / "moe").glob("*.png")} == dense | {"router_analysis"}
    assert (tmp_path / "figures" / "model_comparison.png").stat().st_size > 5_000


@pytest.fixture
def close_figures() -> None:
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.mark.usefixtures("close_figures")
def test_detection_iterations_stars_each_super_weight() -> None:
    figure = plots.detection_iterations(TABLES["dense"]["detection"], TABLES["dense"]["weights"])
    for ax, side in zip(figure.axes, ("input", "output")):
        assert len(ax.lines) == 3 + 1  # one line per iteration, and the threshold
        stars = ax.collections[0].get_offsets()
        np.testing.assert_array_equal(stars, [[1, 100.0 + 1 if side == "input" else 1001.0],
                                              [3, 103.0 if side == "input" else 1003.0]])
        assert ax.get_yscale() == "log"


@pytest.mark.usefixtures("close_figures")
def test_spike_scatter_labels_layers() -> None:
    figure = plots.spike_scatter(TABLES["dense"]["weights"])
    ax = figure.axes[0]
    assert [text.get_text() for text in ax.texts] == ["L1", "L3"]
    assert len(ax.collections[0].get_offsets()) == 2 and ax.get_xscale() == ax.get_yscale() == "log"
    detection = plots.spike_scatter(TABLES["moe"]["detection"]).axes[0]
    assert len(detection.collections[0].get_offsets()) == 2 * 6 and [t.get_text() for t in detection.texts] == ["L2"]


@pytest.mark.usefixtures("close_figures")
def test_ablation_impact_and_combined_effects_bars() -> None:
    evaluations = TABLES["dense"]["evaluations"]
    perplexity, accuracy = plots.ablation_impact(evaluations).axes
    assert [bar.get_height() for bar in perplexity.patches] == [10.0, 40.0, 12.0]  # baseline, sw0, sw1
    assert perplexity.get_yscale() == "log" and [t.get_text() for t in perplexity.texts] == ["10", "40", "12"]
    assert len(accuracy.patches) == 3 * 2  # three ablations x two tasks
    assert accuracy.patches[0].get_height() == pytest.approx(ACCURACY["baseline"])  # acc_norm, not acc
    combined, _ = plots.combined_effects(evaluations).axes
    assert [bar.get_height() for bar in combined.patches] == [10.0, 500.0, 11.0]
    single, _ = plots.combined_effects(TABLES["moe"]["evaluations"]).axes  # its one weight zeroed is all of them
    assert [bar.get_height() for bar in single.patches] == [8.0, 16.0]


@pytest.mark.usefixtures("close_figures")
def test_router_analysis_boxes_co_spiking_experts() -> None:
    figure = plots.router_analysis(TABLES["moe"]["router"])
    ax = figure.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), TABLES["moe"]["router"]["p_active"].values)
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), [[3, 2], [1, 4]])  # (expert, layer)


@pytest.mark.usefixtures("close_figures")
def test_model_comparison_across_architectures(store: str) -> None:
    count, severity, depth = plots.model_comparison(analysis.superweight_summary(store)).axes
    assert [bar.get_height() for bar in count.patches] == [2, 1]
    assert [bar.get_height() for bar in severity.patches] == [50.0, 2.0] and severity.get_yscale() == "log"
    np.testing.assert_allclose(depth.collections[0].get_offsets(), [[1 / 3, 0], [1.0, 0], [0.4, 1]], atol=1e-3)
    assert [label.get_text() for label in depth.get_yticklabels()] == ["LlamaForCausalLM", "OlmoeForCausalLM"]


def test_a_model_without_super_weights_exports_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty weights table and a baseline-only evaluation (accuracy skipped) are results too."""
    store = tmp_path / "none.zarr"
    write_calm_model(StoreLocation(str(store)))
    code, _, err = _cli(capsys, str(store), "--export", str(tmp_path / "out"), "--plots", str(tmp_path / "figures"))
    assert code == 0 and not err
    document = json.loads((tmp_path / "out" / "calm" / "analysis.json").read_text())
    assert document["super_weights"] == [] and document["evaluations"]["baseline"]["accuracy"] == {}
    assert document["evaluations"]["baseline"]["perplexity"] == 20.0
    assert (tmp_path / "out" / "superweights.jsonl").read_text() == ""
    assert pd.read_csv(tmp_path / "out" / "calm" / "weights.csv").empty
    row = json.loads((tmp_path / "out" / "summary.json").read_text())["models"][0]
    assert row["n_superweights"] == 0 and row["severity"] is None  # NaN is null in JSON
    assert {path.stem for path in (tmp_path / "figures" / "calm").glob("*.png")} == \
           {"detection_iterations", "spike_scatter", "ablation_impact", "combined_effects"}
