"""The Super Weight scripts' layouts from ``python -m analysis.superweights --export`` and ``python -m analysis.vocab
--export``: every file named as the old scripts named it, every JSON key as docs/superweights.md documents it,
every value as the store holds it, and a second export into the same folder giving the same names.

The store is written through the store API (no model, tests/small_superweights.py): a dense model with two super
weights, a mixture-of-experts model with one and a router table, and a model whose build stopped after detection
(no evaluations); each has vocabulary cards, so ``analysis.vocab`` only reads.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
import xarray as xr
from small_superweights import (
    ACCURACY,
    DENSE_PPL,
    detection_table,
    evaluations_table,
    model_attributes,
    neuron_cards_table,
    router_table,
    weight_cards_table,
    weights_table,
    write_calm_model,
)

from analysis import _superweight_layout as layout
from analysis import superweights, vocab
from store import StoreLocation, prepare_superweights, read_table, write_summary, write_table

matplotlib.use("Agg")

DOCS = Path(__file__).resolve().parents[2] / "docs" / "superweights.md"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MOE_PPL = {"baseline": 8.0, "sw0": 16.0}
CREATED = {"dense": "2026-01-01T00:00:00Z", "moe": "2026-02-03T04:05:06+00:00", "partial": "2026-01-15T12:00:00Z"}
STAMPS = {"dense": "20260101_000000", "moe": "20260203_040506", "partial": "20260115_120000"}
SUPER_WEIGHTS = {"dense": 2, "moe": 1, "partial": 2}
PLOTS = ("detection_iterations", "super_weight_distribution", "impact_comparison", "combined_analysis")


def _card_settings(tokens: int) -> str:
    """Card settings as the vocabulary builder records them, ``tokens`` telling the models apart."""
    return json.dumps({"data": {"name": "wikitext-2"}, "seed": 7, "model": {"model_id": f"tiny/{tokens}"},
                       "eval": {"tokens": tokens, "window_len": 64, "stride": 32, "drop_first_token": True},
                       "cards": {"enable_cosine": False, "enable_cascade": True, "enable_enrichment": True,
                                 "bootstrap": 200},
                       "detect": {"spike_threshold": 50.0, "max_iterations": 10},
                       "moe": {"router_samples": 5, "p_active_floor": 0.01, "co_spike_threshold": 0.12}})


def _cards(n_cards: int, tokens: int) -> dict[str, xr.Dataset]:
    neurons, weights = neuron_cards_table(n_cards), weight_cards_table(n_cards)
    neurons.attrs["settings"] = weights.attrs["settings"] = _card_settings(tokens)
    return {"neuron_cards": neurons, "weight_cards": weights}


TABLES = {
    "dense": {"detection": detection_table(4, (1, 3)), "weights": weights_table((1, 3)),
              "evaluations": evaluations_table(DENSE_PPL, 2), **_cards(2, 512)},
    "moe": {"detection": detection_table(6, (2,)), "weights": weights_table((2,), expert=3),
            "evaluations": evaluations_table(MOE_PPL, 1), "router": router_table(6), **_cards(1, 256)},
    "partial": {"detection": detection_table(4, (1, 3)), "weights": weights_table((1, 3)), **_cards(2, 128)},
}
ARCHITECTURES = {"dense": ("LlamaForCausalLM", 4, False), "moe": ("OlmoeForCausalLM", 6, True),
                 "partial": ("Qwen2ForCausalLM", 4, False)}


def _attrs(label: str) -> dict[str, Any]:
    return {**model_attributes(*ARCHITECTURES[label], n_params=None), "created": CREATED[label]}


def _write(location: StoreLocation) -> None:
    for label, tables in TABLES.items():
        prepare_superweights(location, label, _attrs(label))
        for table, dataset in tables.items():
            write_table(location, label, table, dataset)
    write_summary(location)


def _export(store: Path, folder: Path, capsys: pytest.CaptureFixture[str] | None = None) -> int:
    code = superweights.main([str(store), "--export", str(folder)])
    if capsys is not None:
        capsys.readouterr()
    return code


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("layouts") / "sw.zarr"
    _write(StoreLocation(str(path)))
    return path


@pytest.fixture(scope="module")
def exported(store: Path) -> Path:
    folder = store.parent / "comprehensive"
    assert _export(store, folder) == 0
    return folder


@pytest.fixture(scope="module")
def vocab_exported(store: Path) -> Path:
    folder = store.parent / "vocab"
    assert vocab.main([str(store), "--export", str(folder)]) == 0
    return folder


def _files(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _data(folder: Path, label: str, name: str) -> Any:
    return _json(folder / label / "data" / f"{name}_{STAMPS[label]}.json")


def _individual(folder: Path, label: str, n: int) -> Any:
    return _json(folder / label / "data" / "individual_analyses" / f"sw_{n}_analysis_{STAMPS[label]}.json")


# The documented schema -------------------------------------------------------------


def documented_keys() -> dict[str, tuple[set[str], set[str]]]:
    """Object -> (keys always there, every key), from docs/superweights.md's "The comprehensive script's export
    layout": each ``#### `name``` heading's table of ``| `key` | when | value |`` rows."""
    section = DOCS.read_text(encoding="utf-8").split("## The comprehensive script's export layout\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    found = {}
    for block in section.split("\n#### `")[1:]:
        name, body = block.split("`", 1)
        rows = re.findall(r"^\| `([^`]+)` \| ([^|]+) \|", body, re.MULTILINE)
        found[name] = ({key for key, when in rows if when.strip() == "always"}, {key for key, _ in rows})
    return found


DOCUMENTED = documented_keys()


def check_keys(document: dict[str, Any], name: str, present: set[str] | None = None) -> None:
    """``document`` has every key the docs say is always there, and no key they do not name; ``present``: the
    optional keys this document must also have."""
    always, every = DOCUMENTED[name]
    keys = set(document)
    assert always <= keys, f"{name}: documented keys missing: {sorted(always - keys)}"
    assert keys <= every, f"{name}: undocumented keys: {sorted(keys - every)}"
    assert (present or set()) <= keys, f"{name}: keys missing: {sorted((present or set()) - keys)}"


def test_the_docs_document_every_object_of_the_layout() -> None:
    assert set(DOCUMENTED) == {
        "complete_analysis", "metadata", "cross_model_analysis", "summary_statistics",
        "architecture_patterns[architecture]", "summary_statistics.summary", "analysis", "detection_results",
        "iteration_data[i]", "super_weight", "sw_<n>_analysis", "combined_analysis", "perplexity_impact",
        "dataset_info", "accuracy_impacts[task]", "moe_analysis"}
    assert all(always for always, _ in DOCUMENTED.values())


# 1. The files -----------------------------------------------------------------------


def _model_files(label: str) -> set[str]:
    stamp, tables = STAMPS[label], TABLES[label]
    own = {"analysis.json", *(f"{table}.csv" for table in tables),
           *(f"{table}.jsonl" for table in ("weights", "evaluations") if table in tables)}
    data = {f"data/analysis_{stamp}.json", f"logs/analysis_{stamp}.log",
            *(f"data/individual_analyses/sw_{n}_analysis_{stamp}.json" for n in range(SUPER_WEIGHTS[label]))}
    if "evaluations" in tables:
        data |= {f"data/combined_analysis_{stamp}.json", *(f"plots/{name}.png" for name in PLOTS)}
    else:  # without evaluations: neither a combined analysis nor the impact plots
        data |= {"plots/detection_iterations.png", "plots/super_weight_distribution.png"}
    if "router" in tables:
        data.add("plots/moe_analysis.png")
    return {f"{label}/{name}" for name in own | data}


def test_the_export_writes_the_comprehensive_layout_beside_its_own_files(exported: Path) -> None:
    expected = {"summary.json", "summary.csv", "superweights.jsonl", "summary_plots/model_comparison.png",
                f"complete_analysis_{STAMPS['moe']}.json"}  # the newest model's build time
    expected |= {name for label in TABLES for name in _model_files(label)}
    assert _files(exported) == sorted(expected)


def test_every_plot_is_a_non_empty_png(exported: Path) -> None:
    plots = sorted(exported.glob("*/plots/*.png")) + sorted(exported.glob("summary_plots/*.png"))
    assert len(plots) == 5 + 4 + 2 + 1
    for plot in plots:
        content = plot.read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 5_000, plot


def test_the_timestamp_is_the_build_time_else_the_export_time() -> None:
    assert layout.timestamp({"created": "2026-03-04T05:06:07+02:00"})[0] == "20260304_030607"  # as UTC
    assert layout.timestamp({"created": "2026-03-04T05:06:07"})[0] == "20260304_050607"
    stamp, source = layout.timestamp({"created": "yesterday"})
    assert re.fullmatch(r"\d{8}_\d{6}", stamp) and "export's time" in source and "'yesterday'" in source


# 2. The documents against the docs and the store ------------------------------------------


def test_every_document_has_the_documented_keys(exported: Path) -> None:
    complete = _json(exported / f"complete_analysis_{STAMPS['moe']}.json")
    check_keys(complete, "complete_analysis")
    check_keys(complete["metadata"], "metadata")
    check_keys(complete["cross_model_analysis"], "cross_model_analysis")
    statistics = complete["cross_model_analysis"]["summary_statistics"]
    check_keys(statistics, "summary_statistics")
    check_keys(statistics["summary"], "summary_statistics.summary")
    for pattern in statistics["architecture_patterns"].values():
        check_keys(pattern, "architecture_patterns[architecture]")
    for label in TABLES:
        _check_model_documents(exported, label, complete["model_results"][label])


def _check_model_documents(exported: Path, label: str, results: dict[str, Any]) -> None:
    optional = {"individual_analyses"} | ({"combined_analysis"} if "evaluations" in TABLES[label] else set())
    check_keys(results, "analysis", optional | ({"moe_analysis"} if "router" in TABLES[label] else set()))
    check_keys(results["detection_results"], "detection_results")
    for iteration in results["detection_results"]["iteration_data"]:
        check_keys(iteration, "iteration_data[i]")
    routed = {"expert_id", "p_active", "co_spike_score", "co_spiking", "causal_delta_ppl"}
    for record in results["detection_results"]["super_weights"]:
        check_keys(record, "super_weight", routed if label == "moe" else set())
        assert label == "moe" or not routed & set(record)  # the old script named experts of MoE weights only
    for analysis in results.get("individual_analyses", {}).values():
        _check_impacts(analysis, "sw_<n>_analysis", "perplexity_impact", "accuracy_impacts", set())
    if "combined_analysis" in results:
        _check_impacts(results["combined_analysis"], "combined_analysis", "combined_perplexity_impact",
                       "combined_accuracy_impacts", {"num_weights", "average_impact_per_weight"})
    if "moe_analysis" in results:
        check_keys(results["moe_analysis"], "moe_analysis")


def _check_impacts(analysis: dict[str, Any], name: str, perplexity: str, accuracy: str, added: set[str]) -> None:
    """An individual or combined analysis, with its impacts (``added``: the keys a combined one adds)."""
    measured = perplexity in analysis
    check_keys(analysis, name, {perplexity} if measured else set())
    if measured:
        impact = {key: value for key, value in analysis[perplexity].items() if key not in added}
        check_keys(impact, "perplexity_impact")
        check_keys(impact["dataset_info"], "dataset_info")
        assert added <= set(analysis[perplexity])
    for impact in analysis[accuracy].values():
        check_keys({key: value for key, value in impact.items() if key not in added}, "accuracy_impacts[task]")
        assert added <= set(impact)


def test_the_model_documents_are_one_document_in_every_file(exported: Path) -> None:
    complete = _json(exported / f"complete_analysis_{STAMPS['moe']}.json")
    assert list(complete["model_results"]) == list(TABLES)
    for label in TABLES:
        results = _data(exported, label, "analysis")
        assert complete["model_results"][label] == results
        for name, analysis in results.get("individual_analyses", {}).items():
            assert _individual(exported, label, int(name.removeprefix("sw_"))) == analysis
        if "combined_analysis" in results:
            assert _data(exported, label, "combined_analysis") == results["combined_analysis"]


def _row(table: xr.Dataset, n: int) -> dict[str, Any]:
    """Record ``n`` of a stored table as Python values."""
    values = {name: table[name].values[n] for name in table.data_vars}
    return {name: value.item() if isinstance(value, np.generic) else value for name, value in values.items()}


@pytest.mark.parametrize("label", list(TABLES))
def test_each_super_weight_is_its_weights_table_row(store: Path, exported: Path, label: str) -> None:
    weights = read_table(StoreLocation(str(store)), label, "weights")
    records = _data(exported, label, "analysis")["detection_results"]["super_weights"]
    assert len(records) == weights.sizes["record"] == SUPER_WEIGHTS[label]
    for n, record in enumerate(records):
        assert _individual(exported, label, n)["super_weight"] == record
        row = _row(weights, n)
        assert (record["index"], record["layer"], record["row"], record["column"], record["col"]) == \
               (n, row["layer"], row["row"], row["col"], row["col"])
        assert record["coordinates"] == [row["row"], row["col"]] and record["component"] == record["tensor"] == row["tensor"]
        assert record["original_value"] == record["value"] == float(np.float32(row["value"]))  # exact
        assert (record["input_value"], record["output_value"]) == (row["input_spike"], row["output_spike"])
        assert record["magnitude_product"] == pytest.approx(abs(row["input_spike"] * row["output_spike"]))
        assert (record["iteration_found"], record["iteration"]) == (row["iteration"] + 1, row["iteration"])
        assert record["expert"] == row["expert"]


def test_the_expert_weight_carries_its_routing(exported: Path) -> None:
    [record] = _data(exported, "moe", "analysis")["detection_results"]["super_weights"]
    router = TABLES["moe"]["router"].sel(layer=2, expert=3)
    assert record["expert_id"] == 3 and record["co_spiking"] is True
    assert record["p_active"] == float(router["p_active"]) and record["co_spike_score"] == float(router["co_spike"])
    assert record["causal_delta_ppl"] is None  # NaN in the table: not scored


def test_individual_impacts_equal_the_stored_evaluations(exported: Path) -> None:
    analysis = _individual(exported, "dense", 0)
    assert (analysis["ablation"], analysis["zeroed"], analysis["timestamp"]) == ("sw0", [0], CREATED["dense"])
    impact = analysis["perplexity_impact"]
    assert (impact["baseline_perplexity"], impact["modified_perplexity"]) == (DENSE_PPL["baseline"], DENSE_PPL["sw0"])
    assert (impact["perplexity_ratio"], impact["perplexity_increase"], impact["impact_severity"]) == (4.0, 30.0, "severe")
    assert impact["modified_loss"] == pytest.approx(np.log(DENSE_PPL["sw0"])) and impact["restored_perplexity"] is None
    assert impact["dataset_info"] == {"name": "wikitext", "n_samples": 5, "n_tokens": 2048, "window_len": 64,
                                      "stride": 32}
    hellaswag = analysis["accuracy_impacts"]["hellaswag"]  # its primary metric is acc_norm, acc beside it
    assert (hellaswag["metric"], hellaswag["baseline_accuracy"], hellaswag["modified_accuracy"]) == \
           ("acc_norm", ACCURACY["baseline"], ACCURACY["sw0"])
    assert hellaswag["accuracy_drop"] == pytest.approx(0.25) and hellaswag["impact_severity"] == "severe"
    assert hellaswag["accuracy_ratio"] == pytest.approx(0.5) and hellaswag["n_samples"] == 50
    assert hellaswag["metrics"]["acc"]["modified_accuracy"] == pytest.approx(ACCURACY["sw0"] - 0.1)
    assert analysis["accuracy_impacts"]["gsm8k"]["metric"] == "exact_match"


def test_the_combined_analysis_zeroes_every_super_weight(exported: Path) -> None:
    dense = _data(exported, "dense", "combined_analysis")
    assert (dense["ablation"], dense["zeroed"], dense["num_super_weights"]) == ("all", [0, 1], 2)
    impact = dense["combined_perplexity_impact"]
    assert (impact["perplexity_ratio"], impact["impact_severity"], impact["restored_perplexity"]) == \
           (50.0, "catastrophic", DENSE_PPL["all_restored"])
    assert (impact["num_weights"], impact["average_impact_per_weight"]) == (2, 245.0)
    hellaswag = dense["combined_accuracy_impacts"]["hellaswag"]
    assert hellaswag["modified_accuracy"] == ACCURACY["all"]
    assert hellaswag["average_impact_per_weight"] == pytest.approx((ACCURACY["baseline"] - ACCURACY["all"]) / 2)
    moe = _data(exported, "moe", "combined_analysis")  # one super weight: zeroing it alone is zeroing all
    assert (moe["ablation"], moe["combined_perplexity_impact"]["perplexity_ratio"]) == ("sw0", 2.0)


def test_iterations_and_router_equal_the_detection_and_router_tables(exported: Path) -> None:
    results = _data(exported, "moe", "analysis")
    detection = TABLES["moe"]["detection"]
    iterations = results["detection_results"]["iteration_data"]
    assert [it["iteration"] for it in iterations] == [1, 2]  # the old count from 1
    assert iterations[0]["max_input_values"] == detection["input_max"].values[0].tolist()
    assert iterations[0]["max_output_indices"] == detection["output_channel"].values[0].tolist()
    assert [it["passed_layers"] for it in iterations] == [[2], []]
    assert results["detection_results"]["detection_config"]["spike_threshold"] == 50.0
    moe = results["moe_analysis"]
    assert [(row["layer"], row["expert"]) for row in moe["co_spiking_experts"]] == [(2, 3), (4, 1)]
    assert (moe["n_layers"], moe["n_experts"], moe["router_config"]["co_spike_threshold"]) == (6, 4, 0.12)


def test_a_model_cut_short_is_incomplete_with_what_it_has(exported: Path) -> None:
    results = _data(exported, "partial", "analysis")
    assert (results["status"], results["missing_tables"]) == ("incomplete", ["evaluations"])
    assert "combined_analysis" not in results and results["evaluation_config"] == {}
    analysis = _individual(exported, "partial", 1)
    assert "perplexity_impact" not in analysis and analysis["accuracy_impacts"] == {}
    assert _data(exported, "dense", "analysis")["status"] == "complete"


def test_the_cross_model_statistics_equal_the_store_summary(exported: Path) -> None:
    complete = _json(exported / f"complete_analysis_{STAMPS['moe']}.json")
    assert complete["metadata"]["timestamp"] == CREATED["moe"] and complete["metadata"]["model_names"] == list(TABLES)
    assert complete["metadata"]["detection_config"] == complete["metadata"]["configs"]["dense"]["detection_config"]
    cross = complete["cross_model_analysis"]
    assert cross["models_analyzed"] == ["dense", "moe"]  # partial has no evaluations
    statistics = cross["summary_statistics"]
    assert statistics["super_weight_counts"] == {"dense": 2, "moe": 1}
    assert statistics["perplexity_impacts"] == {"dense": 50.0, "moe": 2.0}
    assert statistics["impact_severity"] == {"dense": "catastrophic", "moe": "moderate"}
    assert statistics["accuracy_impacts"]["dense"]["hellaswag"] == pytest.approx(ACCURACY["all"] / ACCURACY["baseline"])
    assert statistics["architecture_distribution"] == {"LlamaForCausalLM": 1, "OlmoeForCausalLM": 1}
    assert statistics["architecture_patterns"]["LlamaForCausalLM"]["layers"] == [[1, 3]]
    assert statistics["summary"] == {"total_models": 2, "avg_super_weights": 1.5, "std_super_weights": 0.5,
                                     "avg_perplexity_ratio": 26.0, "std_perplexity_ratio": 24.0}


def test_the_log_says_what_was_read_missing_and_written(exported: Path) -> None:
    for label, tables in TABLES.items():
        lines = (exported / label / "logs" / f"analysis_{STAMPS[label]}.log").read_text(encoding="utf-8").splitlines()
        assert f"timestamp {STAMPS[label]}: the model's created attribute {CREATED[label]!r}" in lines
        assert {line.split(":")[0] for line in lines if line.startswith("read ")} == {f"read {table}" for table in tables}
        written = {line.removeprefix("wrote ") for line in lines if line.startswith("wrote ")}
        assert written == {name.removeprefix(f"{label}/") for name in _model_files(label)
                           if name.count("/") > 1} - {f"logs/analysis_{STAMPS[label]}.log"}
    partial = (exported / "partial" / "logs" / f"analysis_{STAMPS['partial']}.log").read_text(encoding="utf-8")
    assert "missing table evaluations: " in partial and "python -m builders.superweights" in partial
    assert "no plot impact_comparison.png: no evaluations table" in partial
    dense = (exported / "dense" / "logs" / f"analysis_{STAMPS['dense']}.log").read_text(encoding="utf-8")
    assert "no plot moe_analysis.png" in dense and "missing table" not in dense


def test_a_model_without_super_weights_has_its_results_and_no_analyses(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """An empty weights table and a baseline-only evaluation (accuracy skipped) are results too."""
    store, folder = tmp_path / "none.zarr", tmp_path / "export"
    write_calm_model(StoreLocation(str(store)))
    assert _export(store, folder, capsys) == 0
    assert [name for name in _files(folder / "calm") if "/" in name] == [
        "data/analysis_20260101_000000.json", "logs/analysis_20260101_000000.log",
        *(f"plots/{name}.png" for name in sorted(PLOTS))]
    results = _json(folder / "calm" / "data" / "analysis_20260101_000000.json")
    check_keys(results, "analysis")
    assert (results["status"], results["detection_results"]["super_weights"]) == ("no_super_weights", [])
    assert not {"individual_analyses", "combined_analysis"} & set(results)
    statistics = _json(folder / "complete_analysis_20260101_000000.json")["cross_model_analysis"]["summary_statistics"]
    assert (statistics["super_weight_counts"], statistics["perplexity_impacts"]) == ({"calm": 0}, {})


# 3. Exporting again ------------------------------------------------------------------


def _contents(folder: Path) -> dict[str, bytes]:
    """Every file's bytes but the PNGs' (Matplotlib's, not ours to keep byte for byte)."""
    return {name: (folder / name).read_bytes() for name in _files(folder) if not name.endswith(".png")}


def test_a_second_export_gives_the_same_names_and_replaces_the_files(store: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "again"
    assert _export(store, folder, capsys) == 0
    first = _contents(folder)
    (folder / "dense" / "data" / f"analysis_{STAMPS['dense']}.json").write_text("{}")  # edited by hand
    assert _export(store, folder, capsys) == 0
    assert _contents(folder) == first  # the same names, replaced in place: nothing accumulates


def test_a_rebuilt_model_gets_new_names_beside_the_earlier_ones(store: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    copy = Path(shutil.copytree(store, tmp_path / "rebuilt.zarr"))
    folder = tmp_path / "export"
    assert _export(copy, folder, capsys) == 0
    rebuilt = {**_attrs("dense"), "created": "2026-05-06T07:08:09Z"}  # what a --overwrite of dense leaves
    prepare_superweights(StoreLocation(str(copy)), "dense", rebuilt)
    assert _export(copy, folder, capsys) == 0
    names = _files(folder)
    for stamp in (STAMPS["dense"], "20260506_070809"):
        assert f"dense/data/analysis_{stamp}.json" in names and f"dense/logs/analysis_{stamp}.log" in names
    assert f"complete_analysis_{STAMPS['moe']}.json" in names and "complete_analysis_20260506_070809.json" in names
    assert not [name for name in names if name.startswith("moe/") and "20260506" in name]


@pytest.mark.parametrize("command", ["superweights", "vocab"])
def test_a_folder_holding_other_files_is_refused_in_one_line(store: Path, tmp_path: Path, command: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    main = superweights.main if command == "superweights" else vocab.main
    code = main([str(store), "--export", str(folder)])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2 and len(errors) == 1 and errors[0].startswith("error: ") and "notes.txt" in errors[0]
    assert _files(folder) == ["notes.txt"]


# 4. The vocabulary layout's per-model files ------------------------------------------------


def test_the_vocab_export_writes_a_run_config_and_a_log_per_model(vocab_exported: Path) -> None:
    top = _json(vocab_exported / "run_config.json")
    assert top["format"] == "activation-vocab-export" and top["tokens"] == 512  # the first model's, as before
    for label, tables in TABLES.items():
        config = _json(vocab_exported / label / "run_config.json")
        settings = json.loads(tables["weight_cards"].attrs["settings"])
        assert config["settings"] == settings == top["settings"][label]
        assert (config["model"], config["models"], config["tokens"]) == \
               (label, [settings["model"]["model_id"]], settings["eval"]["tokens"])
        assert (config["dataset"], config["seed"], config["enable_cascade"], config["router_analysis_samples"]) == \
               ("wikitext-2", 7, True, 5)
        assert "format" not in config  # the top-level run_config.json alone marks the folder


def test_the_vocab_log_says_what_was_read_and_written(vocab_exported: Path) -> None:
    for label, tables in TABLES.items():
        lines = (vocab_exported / label / "analysis.log").read_text(encoding="utf-8").splitlines()
        assert lines[0] == f"python -m analysis.vocab --export: model {label!r} of store " \
                           f"{str(vocab_exported.parent / 'sw.zarr')!r}"
        n_cards = tables["weight_cards"].sizes["card"]
        assert any(line.startswith(f"read neuron_cards: {n_cards} cards") for line in lines)
        assert any(line.startswith(f"read weight_cards: {n_cards} cards") for line in lines)
        written = sorted(line.removeprefix("wrote ") for line in lines if line.startswith("wrote "))
        assert written == [name for name in _files(vocab_exported / label) if name != "analysis.log"]


def test_a_second_vocab_export_gives_the_same_files(store: Path, vocab_exported: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(vocab_exported, tmp_path / "vocab"))
    assert vocab.main([str(store), "--export", str(folder)]) == 0
    assert _files(folder) == _files(vocab_exported)
    assert _contents(folder) == _contents(vocab_exported)
