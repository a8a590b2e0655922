"""End to end: ``python -m analysis.vocab`` computes vocabulary cards on tiny planted models, exports and reads them.

A tiny Llama with a super weight planted at layer 2, W[7, 11] and a tiny Mixtral with the same weight in
expert 1; the text is a few thousand bytes of pydoc topics (the byte tokenizer makes one token of each).
Every exported value is checked against the store's ``neuron_cards`` and ``weight_cards`` tables.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import BUCKET
from small_stores import tree_digest

from analysis import vocab
from store import StoreLocation, complete_tables, read_table, validate_store
from tests.tiny_models import PLANTED

Runner = Callable[..., tuple[int, str, str]]
REPO = Path(__file__).resolve().parents[2]
LAYER, ROW, COL, EXPERT = PLANTED
METRICS = ("loss", "entropy", "topk_margin", "stopword_mass")
TOP_K = 20  # the builder's default --cards.top_k
EVAL_FLAGS = ("--tokens", "512", "--window-len", "64", "--stride", "32")
SCORED_TOKENS = 511  # 512 tokens in windows of 64 every 32: all but the very first token are scored
OPTIONAL_FLAGS = ("--enable-cosine", "--enable-enrichment", "--enable-cascade", "--bootstrap", "50")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# Fixtures -------------------------------------------------------------------------


def exit_status(*args: str | Path) -> int:
    """``python -m analysis.vocab ARGS``'s exit status, in-process (argparse's --help exits by SystemExit)."""
    try:
        return vocab.main([str(arg) for arg in args])
    except SystemExit as stopped:
        return int(stopped.code or 0)


@pytest.fixture
def vocab_cli(capsys: pytest.CaptureFixture[str]) -> Runner:
    """Run ``python -m analysis.vocab`` in-process: (exit status, stdout, stderr)."""
    def run(*args: str | Path) -> tuple[int, str, str]:
        code = exit_status(*args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def builder_flags(model: Path, text_file: Path, *extra: str) -> list[str]:
    """The builder options of a small CPU run (detection on 128 calibration tokens of 64)."""
    return ["--models", str(model), "--model.device", "cpu", "--dataset", str(text_file),
            "--detect.calibration_tokens", "128", "--detect.seq_len", "64", "--progress", "false", *extra]


def run_captured(*args: str | Path) -> tuple[int, str, str]:
    """``analysis.vocab.main`` with its output caught, for fixtures wider than one test (no capsys there)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = exit_status(*args)
    return code, out.getvalue(), err.getvalue()


def computed_store(folder: Path, *flags: str) -> Path:
    store = folder / "vocab.zarr"
    code, _, err = run_captured(store, *flags)
    assert code == 0, err
    return store


@pytest.fixture(scope="module")
def full_store(tmp_path_factory: pytest.TempPathFactory, planted: dict[str, Path], text_file: Path) -> Path:
    """The planted Llama's cards with every optional part (cosine, enrichment, cascade, bootstrap); read only."""
    return computed_store(tmp_path_factory.mktemp("full"),
                          *builder_flags(planted["llama"], text_file, *EVAL_FLAGS, *OPTIONAL_FLAGS))


@pytest.fixture(scope="module")
def plain_store(tmp_path_factory: pytest.TempPathFactory, planted: dict[str, Path], text_file: Path) -> Path:
    """The planted Llama's cards without the optional parts; read only (copy it before writing)."""
    return computed_store(tmp_path_factory.mktemp("plain"), *builder_flags(planted["llama"], text_file,
                                                                           *EVAL_FLAGS))


@pytest.fixture(scope="module")
def full_export(tmp_path_factory: pytest.TempPathFactory, full_store: Path) -> Path:
    folder = tmp_path_factory.mktemp("export") / "vocab"
    code, out, err = run_captured(full_store, "--export", folder)
    assert code == 0, err
    assert "wrote 12 files" in out
    return folder


@pytest.fixture
def llama_label(planted: dict[str, Path]) -> str:
    return planted["llama"].name


# Helpers --------------------------------------------------------------------------


def cards_table(store: Path, label: str, table: str) -> xr.Dataset:
    return read_table(StoreLocation(str(store)), label, table)


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def by_metric(table: xr.Dataset, variable: str, card: int = 0) -> dict[str, float]:
    return {metric: float(table[variable].sel(metric=metric).values[card]) for metric in METRICS}


def coordinates(table: xr.Dataset) -> list[tuple[int, int, int]]:
    return list(zip(table.layer.values.tolist(), table.row.values.tolist(), table.col.values.tolist()))


def single_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def check_tokens_match(listed: list[dict[str, Any]], table: xr.Dataset, prefix: str, value: str) -> None:
    """A card's ranked token list holds the table's ``prefix_id/_tok/_str/_<value>`` columns of card 0."""
    assert len(listed) == TOP_K
    for rank, token in enumerate(listed):
        assert set(token) == {"id", "tok", "str", value}
        assert token["id"] == int(table[f"{prefix}_id"].values[0, rank])
        assert token["tok"] == table[f"{prefix}_tok"].values[0, rank]
        assert token["str"] == table[f"{prefix}_str"].values[0, rank]
        assert token[value] == float(table[f"{prefix}_{value}"].values[0, rank])


# 1. The export against the store ---------------------------------------------------


def test_the_export_writes_the_old_layout(full_export: Path, llama_label: str) -> None:
    model = full_export / llama_label
    expected = [full_export / name for name in ("run_config.json", "cross_model_summary.json", "README.md")] + [
        model / "run_config.json", model / "analysis.log",
        model / "metrics" / "neurons" / "neurons.jsonl", model / "metrics" / "super_weights" / "super_weights.jsonl",
        model / "summaries" / "neurons.csv", model / "summaries" / "super_weights.csv",
        model / "plots" / "neurons" / f"{LAYER}-{COL}-effects.png",
        model / "plots" / "super_weights" / f"mlp_out-L{LAYER}-R{ROW}-C{COL}-deltas.png",
        model / "plots" / "super_weights" / f"mlp_out-L{LAYER}-R{ROW}-C{COL}-cascade.png"]
    assert sorted(path for path in full_export.rglob("*") if path.is_file()) == sorted(expected)
    for plot in model.rglob("*.png"):
        assert plot.read_bytes().startswith(PNG_SIGNATURE)


def test_the_exported_weight_card_holds_the_stored_figures_in_the_old_schema(
        full_store: Path, full_export: Path, llama_label: str) -> None:
    table = cards_table(full_store, llama_label, "weight_cards")
    [card] = read_lines(full_export / llama_label / "metrics" / "super_weights" / "super_weights.jsonl")
    assert {"model", "tensor", "layer", "row", "col", "baselines", "deltas", "controls", "cascade",
            "bootstrap"} <= set(card)
    assert (card["model"], card["tensor"], card["layer"], card["row"], card["col"]) == (
        llama_label, "mlp_out", LAYER, ROW, COL)
    assert card["expert"] is None and card["p_active"] is None  # a dense layer
    assert card["baselines"] == by_metric(table, "baseline")
    assert card["deltas"] == by_metric(table, "delta")
    assert set(card["controls"]) == {"random_coord_delta", "neuron_zero_delta"}
    assert card["controls"]["random_coord_delta"] == by_metric(table, "random_coord_delta")
    assert card["controls"]["neuron_zero_delta"] == by_metric(table, "neuron_zero_delta")
    assert card["cascade"] == {"layers": table.cascade_layer.values.tolist(),
                               "delta_entropy": table.cascade_entropy.values[0].tolist(),
                               "delta_margin": table.cascade_margin.values[0].tolist()}
    assert card["cascade"]["layers"] == [0, 1, 2, 3, 4, 5]
    assert set(card["bootstrap"]) == set(METRICS)
    for metric in METRICS:
        assert card["bootstrap"][metric] == {"mean": by_metric(table, "bootstrap_mean")[metric],
                                             "ci_2.5": by_metric(table, "ci_low")[metric],
                                             "ci_97.5": by_metric(table, "ci_high")[metric]}


def test_the_weight_card_figures_make_sense_for_the_planted_weight(full_export: Path, llama_label: str) -> None:
    [card] = read_lines(full_export / llama_label / "metrics" / "super_weights" / "super_weights.jsonl")
    assert card["value"] == 5.0
    # the planted weight is the only non-zero entry of its column: zeroing the neuron is zeroing the weight
    assert card["controls"]["neuron_zero_delta"] == pytest.approx(card["deltas"], rel=1e-9, abs=1e-12)
    assert abs(card["controls"]["random_coord_delta"]["loss"]) < abs(card["deltas"]["loss"]) / 100
    # the cascade starts at the planted layer: nothing changes before it; its last layer is the model's output
    # (the same per-token entropies, summed over each window in float32 in another order: 1e-7 apart)
    assert card["cascade"]["delta_entropy"][:LAYER] == [0.0, 0.0]
    assert card["cascade"]["delta_margin"][:LAYER] == [0.0, 0.0]
    assert card["cascade"]["delta_entropy"][-1] == pytest.approx(card["deltas"]["entropy"], rel=1e-2)
    assert card["cascade"]["delta_margin"][-1] == pytest.approx(card["deltas"]["topk_margin"], rel=1e-2)
    loss = card["bootstrap"]["loss"]
    assert loss["ci_2.5"] <= loss["mean"] <= loss["ci_97.5"]
    assert loss["ci_2.5"] <= card["deltas"]["loss"] <= loss["ci_97.5"]


def test_the_exported_neuron_card_holds_the_stored_figures_in_the_old_schema(
        full_store: Path, full_export: Path, llama_label: str) -> None:
    table = cards_table(full_store, llama_label, "neuron_cards")
    [card] = read_lines(full_export / llama_label / "metrics" / "neurons" / "neurons.jsonl")
    assert {"model", "layer", "neuron", "moments", "moments_cos", "top_tokens_up", "top_tokens_down",
            "enrichment", "label"} <= set(card)
    assert (card["model"], card["layer"], card["neuron"], card["source"]) == (llama_label, LAYER, COL, "superweight")
    assert card["moments"] == {name: float(table[name].values[0]) for name in ("var", "skew", "kurt")}
    assert card["moments_cos"] == {name: float(table[f"cos_{name}"].values[0]) for name in ("var", "skew", "kurt")}
    check_tokens_match(card["top_tokens_up"], table, "up", "effect")
    check_tokens_match(card["top_tokens_down"], table, "down", "effect")
    up = [token["effect"] for token in card["top_tokens_up"]]
    down = [token["effect"] for token in card["top_tokens_down"]]
    assert up == sorted(up, reverse=True) and down == sorted(down) and up[-1] > down[0]
    assert [item["class"] for item in card["enrichment"]] == table.token_class.values.tolist()
    for index, item in enumerate(card["enrichment"]):
        assert set(item) == {"class", "score", "examples"}
        assert item["score"] == float(table.enrichment_score.values[0, index])
        assert item["examples"] == json.loads(table.enrichment_examples.values[0, index])
    assert card["label"] == table.label.values[0] and card["label"]


def test_the_csv_summaries_equal_the_stored_tables(full_store: Path, full_export: Path, llama_label: str) -> None:
    weights = cards_table(full_store, llama_label, "weight_cards")
    neurons = cards_table(full_store, llama_label, "neuron_cards")
    weight_rows = pd.read_csv(full_export / llama_label / "summaries" / "super_weights.csv")
    neuron_rows = pd.read_csv(full_export / llama_label / "summaries" / "neurons.csv", keep_default_na=False)
    assert len(weight_rows) == 1 and len(neuron_rows) == 1
    row = weight_rows.iloc[0]
    assert (row["model"], row["tensor"], row["layer"], row["row"], row["col"]) == (llama_label, "mlp_out",
                                                                                    LAYER, ROW, COL)
    for part in ("baseline", "delta", "random_coord_delta", "neuron_zero_delta", "bootstrap_mean"):
        column = "bootstrap_{}_mean" if part == "bootstrap_mean" else f"{part}_{{}}"
        for metric, value in by_metric(weights, part).items():
            assert row[column.format(metric)] == pytest.approx(value, rel=1e-12, abs=0), (part, metric)
    assert row["bootstrap_loss_ci_2.5"] == pytest.approx(by_metric(weights, "ci_low")["loss"], rel=1e-12)
    assert row["bootstrap_loss_ci_97.5"] == pytest.approx(by_metric(weights, "ci_high")["loss"], rel=1e-12)
    neuron = neuron_rows.iloc[0]
    assert (neuron["layer"], neuron["neuron"], neuron["label"]) == (LAYER, COL, neurons.label.values[0])
    for name in ("var", "skew", "kurt"):
        assert neuron[f"moments_{name}"] == pytest.approx(float(neurons[name].values[0]), rel=1e-12)
        assert neuron[f"moments_cos_{name}"] == pytest.approx(float(neurons[f"cos_{name}"].values[0]), rel=1e-12)
    assert neuron["top_up"] == " | ".join(neurons.up_str.values[0][:10])
    assert neuron["top_down"] == " | ".join(neurons.down_str.values[0][:10])
    for index, token_class in enumerate(neurons.token_class.values):
        assert neuron[f"enrichment_{token_class}"] == pytest.approx(float(neurons.enrichment_score.values[0, index]),
                                                                    rel=1e-12)


def test_the_run_config_summary_and_readme_describe_the_run(full_store: Path, full_export: Path,
                                                            llama_label: str, planted: dict[str, Path],
                                                            text_file: Path) -> None:
    config = json.loads((full_export / "run_config.json").read_text(encoding="utf-8"))
    assert config["format"] == "activation-vocab-export"
    assert (config["models"], config["dataset"]) == ([str(planted["llama"])], str(text_file))
    assert (config["tokens"], config["window_len"], config["stride"], config["bootstrap"]) == (512, 64, 32, 50)
    assert config["enable_cosine"] is config["enable_cascade"] is config["enable_enrichment"] is True
    weights = cards_table(full_store, llama_label, "weight_cards")
    assert config["settings"][llama_label] == json.loads(weights.attrs["settings"])
    summary = json.loads((full_export / "cross_model_summary.json").read_text(encoding="utf-8"))["models"]
    assert list(summary) == [llama_label]
    model = summary[llama_label]
    assert (model["n_neurons"], model["n_super_weights"]) == (1, 1)
    assert model["super_weights"] == [f"L{LAYER} W[{ROW},{COL}]"]
    assert model["mean_deltas"] == by_metric(weights, "delta") and model["max_delta_loss"] == model["mean_deltas"]["loss"]
    readme = (full_export / "README.md").read_text(encoding="utf-8")
    assert f"| {llama_label} | 1 | L{LAYER} W[{ROW},{COL}] | {model['mean_deltas']['loss']:+.4g} |" in readme
    validate_store(StoreLocation(str(full_store)))


def test_the_python_api_returns_the_exported_cards(full_store: Path, full_export: Path, llama_label: str) -> None:
    metrics = full_export / llama_label / "metrics"
    assert vocab.weight_cards(str(full_store)) == read_lines(metrics / "super_weights" / "super_weights.jsonl")
    assert vocab.neuron_cards(str(full_store)) == read_lines(metrics / "neurons" / "neurons.jsonl")
    assert set(vocab.open_cards(str(full_store))) == {llama_label}


# 2. Optional parts -----------------------------------------------------------------


def test_without_the_optional_flags_the_optional_card_parts_are_absent(plain_store: Path, llama_label: str,
                                                                      tmp_path: Path) -> None:
    [neuron] = vocab.neuron_cards(str(plain_store))
    [weight] = vocab.weight_cards(str(plain_store))
    assert "moments_cos" not in neuron and "enrichment" not in neuron
    assert "cascade" not in weight and "bootstrap" not in weight
    assert {"moments", "top_tokens_up", "top_tokens_down", "label"} <= set(neuron)
    assert {"baselines", "deltas", "controls"} <= set(weight)
    weights = cards_table(plain_store, llama_label, "weight_cards")
    assert weights.sizes["cascade_layer"] == 0 and weights.attrs["bootstrap"] == 0
    assert np.isnan(weights.ci_low.values).all()
    code, _, err = run_captured(plain_store, "--export", tmp_path / "plain")
    assert code == 0, err
    plots = sorted(path.name for path in (tmp_path / "plain" / llama_label / "plots").rglob("*.png"))
    assert plots == [f"{LAYER}-{COL}-effects.png", f"mlp_out-L{LAYER}-R{ROW}-C{COL}-deltas.png"]
    columns = pd.read_csv(tmp_path / "plain" / llama_label / "summaries" / "neurons.csv").columns
    assert not [name for name in columns if name.startswith(("moments_cos_", "enrichment_"))]
    columns = pd.read_csv(tmp_path / "plain" / llama_label / "summaries" / "super_weights.csv").columns
    assert not [name for name in columns if name.startswith("bootstrap_")]


# 3. Reruns -------------------------------------------------------------------------


def test_a_rerun_does_nothing_other_settings_need_overwrite(plain_store: Path, planted: dict[str, Path],
                                                           text_file: Path, llama_label: str, tmp_path: Path,
                                                           vocab_cli: Runner) -> None:
    store = Path(shutil.copytree(plain_store, tmp_path / "rerun.zarr"))
    flags = builder_flags(planted["llama"], text_file, *EVAL_FLAGS)
    before = tree_digest(store)
    code, out, err = vocab_cli(store, *flags)
    assert code == 0, err
    assert f"Nothing to do: the cards of model {llama_label!r} are complete" in out
    assert tree_digest(store) == before

    code, out, err = vocab_cli(store, *flags, "--tokens", "256")
    assert code == 2
    assert "--overwrite" in single_error_line(err) and llama_label in err
    assert tree_digest(store) == before

    assert cards_table(store, llama_label, "weight_cards").attrs["n_tokens"] == SCORED_TOKENS
    code, out, err = vocab_cli(store, *flags, "--tokens", "256", "--overwrite")
    assert code == 0, err
    weights = cards_table(store, llama_label, "weight_cards")
    assert weights.attrs["n_tokens"] == 255 and weights.attrs["n_windows"] == 7  # starts 0, 32, ... 192
    assert weights.window_tokens.values.sum() == 255 and weights.sizes["window"] == 7
    assert json.loads(weights.attrs["settings"])["eval"]["tokens"] == 256
    assert json.loads(cards_table(store, llama_label, "neuron_cards").attrs["settings"])["eval"]["tokens"] == 256
    validate_store(StoreLocation(str(store)))


# 4. Weights given by hand -----------------------------------------------------------


@pytest.mark.parametrize("weights", [["2,7,11"], ["2,7,11", "1,3,4"]])
def test_given_weights_are_carded_in_order_without_detection(
        weights: list[str], planted: dict[str, Path], text_file: Path, llama_label: str, tmp_path: Path,
        vocab_cli: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    from builders import vocab as builder

    monkeypatch.setattr(builder, "run_detection", lambda *args: pytest.fail("detection ran for given weights"))
    store = tmp_path / "given.zarr"
    code, _, err = vocab_cli(store, *builder_flags(planted["llama"], text_file, *EVAL_FLAGS),
                             "--weights", *weights)
    assert code == 0, err
    expected = [tuple(int(number) for number in weight.split(",")) for weight in weights]
    table = cards_table(store, llama_label, "weight_cards")
    assert table.attrs["weights_from"] == "given"
    assert coordinates(table) == expected
    assert table.weights_record.values.tolist() == [-1] * len(weights)
    assert table.value.values[0] == 5.0  # the planted weight's value, read from the model
    neurons = cards_table(store, llama_label, "neuron_cards")
    assert list(zip(neurons.layer.values.tolist(), neurons.neuron.values.tolist())) == [
        (layer, col) for layer, _, col in expected]
    assert [(card["layer"], card["row"], card["col"]) for card in vocab.weight_cards(str(store))] == expected
    assert complete_tables(StoreLocation(str(store)), llama_label) == {"neuron_cards", "weight_cards"}


# 5. Parameter validation -------------------------------------------------------------


@pytest.mark.parametrize(("flags", "suggestion"), [
    pytest.param(["--tokens", "100000"], "pass --eval.tokens {text_tokens} or less", id="tokens-beyond-text"),
    pytest.param(["--window-len", "64", "--stride", "32", "--tokens", "32"], "pass --eval.tokens 64",
                 id="tokens-below-window"),
    pytest.param(["--stride", "128", "--window-len", "64", "--tokens", "512"], "pass --eval.stride 32",
                 id="stride-beyond-window"),
    pytest.param(["--window-len", "100000", "--stride", "32", "--tokens", "100000"],
                 "exceeds the model's {positions} positions; pass --eval.window_len {positions}",
                 id="window-beyond-positions"),
    pytest.param(["--weights", "9,0,0", *EVAL_FLAGS], "the model has layers 0..5", id="weight-layer-beyond-model"),
    pytest.param(["--weights", "1,2", *EVAL_FLAGS], "--weights 3,3,3", id="weight-not-three-numbers"),
    pytest.param(["--bootstrap", "10", "--tokens", "64", "--window-len", "64", "--stride", "32"],
                 "pass --eval.window_len 32 --eval.stride 16", id="bootstrap-of-one-window"),
])
def test_bad_parameters_are_one_error_line_with_the_fix_and_no_store(
        flags: list[str], suggestion: str, planted: dict[str, Path], text_file: Path, tmp_path: Path,
        vocab_cli: Runner) -> None:
    model = planted["llama"]
    positions = json.loads((model / "config.json").read_text(encoding="utf-8"))["max_position_embeddings"]
    text_tokens = len(text_file.read_bytes()) + 1  # one token a byte, and the EOS that ends the document
    store = tmp_path / "bad.zarr"
    code, out, err = vocab_cli(store, *builder_flags(model, text_file, *flags))
    assert code == 2, err
    line = single_error_line(err)
    assert suggestion.format(text_tokens=text_tokens, positions=positions) in line, line
    assert "Store:" not in out
    assert not store.exists()


# 6. Mixture of experts -----------------------------------------------------------------


def test_an_expert_weight_gets_its_expert_and_routing_probability(
        planted: dict[str, Path], text_file: Path, tmp_path: Path, vocab_cli: Runner,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from builders import vocab as builder

    routers: list[Any] = []
    real_router = builder.run_router

    def counted_router(*args: Any) -> Any:
        routers.append(real_router(*args))
        return routers[-1]

    monkeypatch.setattr(builder, "run_router", counted_router)
    store = tmp_path / "moe.zarr"
    code, _, err = vocab_cli(store, *builder_flags(planted["mixtral"], text_file, *EVAL_FLAGS),
                             "--weights", f"{LAYER},{ROW},{COL},{EXPERT}")
    assert code == 0, err
    assert len(routers) == 1  # a router analysis ran: the store had no router table
    routed = float(routers[0].p_active[LAYER, EXPERT])
    [weight] = vocab.weight_cards(str(store))
    assert (weight["layer"], weight["row"], weight["col"], weight["expert"]) == (LAYER, ROW, COL, EXPERT)
    assert weight["tensor"] == "expert_out" and weight["parameter"] == f"model.layers.{LAYER}.mlp.experts.down_proj"
    assert weight["value"] == 5.0
    assert math.isfinite(weight["p_active"]) and 0 < weight["p_active"] < 1
    assert weight["p_active"] == pytest.approx(routed, rel=1e-6)
    assert weight["controls"]["neuron_zero_delta"] == pytest.approx(weight["deltas"], rel=1e-9, abs=1e-12)
    [neuron] = vocab.neuron_cards(str(store))
    assert (neuron["layer"], neuron["neuron"], neuron["expert"]) == (LAYER, COL, EXPERT)
    assert neuron["parameter"] == weight["parameter"]
    assert cards_table(store, planted["mixtral"].name, "neuron_cards").tensor.values.tolist() == ["expert_out"]
    assert neuron["p_active"] == pytest.approx(routed, rel=1e-6)
    validate_store(StoreLocation(str(store)))


# 7. S3 ------------------------------------------------------------------------------------


def test_cards_on_s3_equal_a_local_run(planted: dict[str, Path], text_file: Path, plain_store: Path,
                                       s3_options: dict[str, object], vocab_cli: Runner) -> None:
    url = f"s3://{BUCKET}/vocab-e2e.zarr"
    code, _, err = vocab_cli(url, "--storage_options", f"endpoint_url={s3_options['endpoint_url']}",
                             *builder_flags(planted["llama"], text_file, *EVAL_FLAGS))
    assert code == 0, err
    remote = vocab.weight_cards(url, storage_options=s3_options)
    local = vocab.weight_cards(str(plain_store))
    assert [(card["layer"], card["row"], card["col"]) for card in remote] == [(LAYER, ROW, COL)]
    for part in ("baselines", "deltas"):
        assert np.allclose([remote[0][part][m] for m in METRICS], [local[0][part][m] for m in METRICS], rtol=1e-6)
    for control in ("random_coord_delta", "neuron_zero_delta"):
        assert np.allclose([remote[0]["controls"][control][m] for m in METRICS],
                           [local[0]["controls"][control][m] for m in METRICS], rtol=1e-6)
    remote_neurons = vocab.neuron_cards(url, storage_options=s3_options)
    assert remote_neurons[0]["top_tokens_up"] == vocab.neuron_cards(str(plain_store))[0]["top_tokens_up"]
    validate_store(StoreLocation(url, s3_options))


# 8. Reading never loads torch or the builders ----------------------------------------------------

READ_ONLY_SCRIPT = """
import sys
import analysis.vocab
print('torch' in sys.modules, 'builders' in sys.modules)
store, folder = sys.argv[1], sys.argv[2]
print(len(analysis.vocab.weight_cards(store)), len(analysis.vocab.neuron_cards(store)))
print(len(analysis.vocab.export(store, folder)))
print('torch' in sys.modules, 'builders' in sys.modules)
"""


def test_reading_and_exporting_cards_import_neither_torch_nor_the_builders(full_store: Path,
                                                                           tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", READ_ONLY_SCRIPT, str(full_store), str(tmp_path / "export")],
                            cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    # just imported; one weight and one neuron card read; twelve files exported; still neither module loaded
    assert result.stdout.splitlines() == ["False False", "1 1", "12", "False False"], result.stdout
    assert (tmp_path / "export" / "run_config.json").is_file()


# 9. Help ---------------------------------------------------------------------------------------------


def test_help_lists_the_export_flag_the_builder_options_and_the_old_aliases(vocab_cli: Runner) -> None:
    code, out, _ = vocab_cli("--help")
    assert code == 0
    for option in ("--export", "--output-dir", "--eval.window_len", "--window-len", "--weights", "--bootstrap"):
        assert option in out, option


def test_weights_without_a_model_are_refused_when_the_store_records_several(tmp_path: Path, vocab_cli: Runner) -> None:
    """--weights names one model's coordinates: with two recorded models and no --models, which one is unclear."""
    from small_superweights import model_attributes

    from store import prepare_superweights

    location = StoreLocation(str(tmp_path / "two.zarr"))
    for label in ("first", "second"):
        prepare_superweights(location, label, model_attributes())
    code, _, err = vocab_cli(location.url, "--weights", "1,2,3")
    assert code == 2
    assert err.count("error:") == 1 and "name the model with --models" in err and "'first', 'second'" in err
