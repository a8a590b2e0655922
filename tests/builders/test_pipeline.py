"""ZipfActivation's configs and one-shot run: ``python -m builders.pipeline --config its.yaml`` collects, fits,
plots and exports into one results folder, its keys translated with a note where the meaning changes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from builders._cli import config_from
from builders.collect import main as collect_main
from builders.pipeline import PipelineConfig
from builders.pipeline import main as pipeline_main

REPO = Path(__file__).resolve().parents[2]


def zipf_yaml(folder: Path, model: Path, text: Path, **changes: object) -> Path:
    """A config in ZipfActivation's keys (its middle keys under a section, as a nested dataclass would put them)."""
    document = {
        "model": {"name": str(model), "dtype": "float32"},
        "data": {"name": str(text), "max_tokens": 1024, "batch_size": 2, "max_seq_len": 128, "streaming": True},
        "collection_points": ["embed", "middle", "pre_last"],
        "statistics": {"metrics": ["rms", "kurtosis", "channel_wise"], "channel_sample_size": 4, "seed": 7},
        "fitting": {"max_samples_for_fit": 50000},
        "output": {"results_dir": str(folder / "results"), "plot_format": "png"},
        **changes,
    }
    path = folder / "zipf.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("note: ")]


def test_the_one_shot_run_writes_zipf_activation_results(tiny_model: Callable[[str], Path], text_file: Path,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = zipf_yaml(tmp_path, tiny_model("qwen3"), text_file)
    assert pipeline_main(["--config", str(config), "--model.device", "cpu", "--progress", "false"]) == 0
    err = capsys.readouterr().err
    assert [line.split(" (")[0] for line in notes(err)] == ["note: max_samples_for_fit", "note: data.streaming",
                                                           "note: seed"]
    results = tmp_path / "results"
    assert sorted(path.name for path in (results / "statistics").iterdir()) == ["embed.npz", "layer_3.npz", "layer_4.npz"]
    arrays = np.load(results / "statistics" / "layer_3.npz")
    assert sorted(arrays.files) == ["channel_wise", "kurtosis", "rms"] and arrays["channel_wise"].shape == (1024, 4)
    fitted = json.loads((results / "fits" / "fit_results.json").read_text())
    assert sorted(fitted) == ["embed", "layer_3", "layer_4"] and "comparisons" in fitted["embed"]["rms"]
    model = next((results / "plots" / "ccdf").iterdir()).name
    for kind in ("rank_frequency", "ccdf"):
        assert {p.stem for p in (results / "plots" / kind / model).iterdir()} == {
            f"{layer}_{metric}" for layer in ("embed", "middle", "pre_last") for metric in ("rms", "kurtosis")}
    assert {p.stem for p in (results / "plots" / "multi_layer" / model).iterdir()} == {"rms", "kurtosis"}
    assert (results / "plots" / "dashboard.html").exists() and (results / "activations.zarr").is_dir()
    # the same command again: the collection is complete (nothing recomputed), the files are rewritten
    assert pipeline_main(["--config", str(config), "--model.device", "cpu", "--progress", "false"]) == 0
    assert "nothing to do" in capsys.readouterr().out.lower()


def test_collect_reads_the_same_file_into_the_results_folder_store(tiny_model: Callable[[str], Path],
                                                                    text_file: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = zipf_yaml(tmp_path, tiny_model("llama"), text_file, explicit_layers=[1, 2])
    assert collect_main(["--config", str(config), "--model.device", "cpu", "--progress", "false"]) == 0
    err = capsys.readouterr().err
    assert any("output.results_dir" in line and "only the store" in line for line in notes(err))
    import xarray as xr

    stored = xr.open_zarr(tmp_path / "results" / "activations.zarr", group="stats")
    assert list(stored.layer.values) == ["layer_1", "layer_2"] and stored.sizes["channel"] == 4


def test_the_shipped_configs_translate_to_their_runs() -> None:
    default = config_from(PipelineConfig, {"config": REPO / "configs" / "zipf-activation-default.yaml"})
    assert (default.model.name, default.model.dtype, default.data.name, default.data.max_tokens) == (
        "Qwen/Qwen3-4B-Base", "bfloat16", "Skylion007/openwebtext", 10_000_000)
    assert default.stats.layers == ["embed", "middle", "pre_last"] and len(default.stats.metrics) == 14
    assert (default.results_dir, default.plot_format, default.store) == (
        "results/default", "pdf", "results/default/activations.zarr")
    smoke = config_from(PipelineConfig, {"config": REPO / "configs" / "zipf-activation-smoke.yaml"})
    assert (smoke.model.name, smoke.data.name, smoke.data.subset, smoke.data.max_tokens, smoke.plot_format) == (
        "Qwen/Qwen3-0.6B-Base", "wikitext", "wikitext-2-raw-v1", 20_000, "png")


@pytest.mark.parametrize("case", ["unknown_output_key", "bad_explicit_layers", "foreign_results_folder"])
def test_bad_input_is_one_error_line_and_nothing_written(case: str, tiny_model: Callable[[str], Path],
                                                         text_file: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    changes = {"unknown_output_key": {"output": {"results_dir": str(tmp_path / "results"), "save_raw": True}},
               "bad_explicit_layers": {"explicit_layers": ["five"]}, "foreign_results_folder": {}}[case]
    config = zipf_yaml(tmp_path, tiny_model("llama"), text_file, **changes)
    if case == "foreign_results_folder":
        (tmp_path / "results").mkdir()
        (tmp_path / "results" / "thesis.tex").write_text("mine")
    assert pipeline_main(["--config", str(config), "--model.device", "cpu", "--progress", "false"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("error: ") and len([line for line in err if line.startswith("error:")]) == 1
    leftover = sorted(p.name for p in (tmp_path / "results").iterdir()) if (tmp_path / "results").exists() else []
    assert leftover == (["thesis.tex"] if case == "foreign_results_folder" else [])
