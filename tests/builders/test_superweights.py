"""End to end: ``python -m builders.superweights`` on tiny models with planted super weights, and on SmolLM2."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import BUCKET
from small_stores import tree_digest

from builders import superweights
from builders._cli import parse_config
from builders._superweight_configs import SuperweightsConfig
from builders._vocab_configs import VocabConfig
from store import StoreLocation, complete_tables, read_table, validate_store
from tests.tiny_models import PLANTED, plant_super_weight, save_model

Runner = Callable[..., tuple[int, str, str]]
TASKS = Path(__file__).resolve().parents[1] / "data" / "tasks"
LAYER, ROW, COL, EXPERT = PLANTED




def _args(text_file: Path, *models: Path, accuracy: bool = False) -> list[str]:
    args = ["--model.name", *map(str, models), "--model.device", "cpu", "--data.name", str(text_file),
            "--detect.calibration_tokens", "128", "--detect.seq_len", "64",
            "--perplexity.window_len", "64", "--perplexity.stride", "32", "--perplexity.max_tokens", "512",
            "--moe.router_samples", "3", "--progress", "false"]
    if accuracy:
        return args + ["--accuracy.tasks", f"hellaswag={TASKS / 'hellaswag.jsonl'}", f"arc_easy={TASKS / 'arc_easy.json'}",
                       "--accuracy.samples", "3", "--accuracy.max_new_tokens", "4"]
    return args + ["--accuracy.skip", "true"]


def _perplexities(table: xr.Dataset) -> dict[str, float]:
    rows = table.to_dataframe()
    rows = rows[rows.metric == "perplexity"]
    return dict(zip(rows.ablation, rows.value))


def test_planted_weights_of_three_families_are_recorded_with_their_ablations(
        planted: dict[str, Path], text_file: Path, sw_cli: Runner, tmp_path: Path) -> None:
    store = tmp_path / "sw.zarr"
    code, out, err = sw_cli(*_args(text_file, planted["llama"], planted["gpt2"], planted["gpt_neox"], accuracy=True),
                            "--store", str(store))
    assert code == 0, err
    location = StoreLocation(str(store))
    validate_store(location)
    for family in ("llama", "gpt2", "gpt_neox"):
        label = planted[family].name
        weights = read_table(location, label, "weights")
        assert list(zip(weights.layer.values, weights.row.values, weights.col.values)) == [(LAYER, ROW, COL)]
        assert weights.value.values.tolist() == [5.0] and weights.expert.values.tolist() == [-1]
        detection = read_table(location, label, "detection")
        assert detection.sizes == {"iteration": 2, "layer": 6}
        assert detection.passed.values[0].tolist() == [layer == LAYER for layer in range(6)]
        perplexities = _perplexities(read_table(location, label, "evaluations"))
        assert set(perplexities) == {"baseline", "sw0", "sw0_restored"}
        assert perplexities["sw0"] != pytest.approx(perplexities["baseline"], rel=1e-4)
        # the massive values put back, most of what the zeroing cost comes back
        assert abs(perplexities["sw0_restored"] - perplexities["baseline"]) < abs(perplexities["sw0"] - perplexities["baseline"])
        accuracy = read_table(location, label, "evaluations").to_dataframe().query("kind == 'accuracy'")
        assert set(accuracy.task) == {"hellaswag", "arc_easy"} and set(accuracy.ablation) == {"baseline", "sw0"}
    tree = xr.open_datatree(store, engine="zarr")
    assert f"/superweights/{planted['llama'].name}/weights" in tree.groups
    assert "L2 W[7,11]" in out


def test_a_planted_expert_weight_is_found_with_its_expert_and_the_router_is_recorded(
        planted: dict[str, Path], text_file: Path, sw_cli: Runner, tmp_path: Path) -> None:
    store = tmp_path / "moe.zarr"
    code, _, err = sw_cli(*_args(text_file, planted["mixtral"]), "--perplexity.skip", "true", "--store", str(store),
                          "--moe.causal_scoring", "true")
    assert code == 0, err
    location, label = StoreLocation(str(store)), planted["mixtral"].name
    weights = read_table(location, label, "weights")
    assert (weights.layer.item(), weights.row.item(), weights.col.item(), weights.expert.item()) == (LAYER, ROW, COL, EXPERT)
    assert weights.tensor.item() == "model.layers.2.mlp.experts.down_proj"
    router = read_table(location, label, "router")
    assert router.p_active.sizes == {"layer": 6, "expert": 4}
    np.testing.assert_allclose(router.p_active.sum("expert").values, 2.0, rtol=1e-6)  # top-2 routing
    assert np.isnan(router.causal_delta_ppl.values).all()  # no perplexity text, no causal score
    validate_store(location)


def test_causal_scoring_prices_the_co_spiking_expert_and_the_floor_hides_rare_experts(
        planted: dict[str, Path], text_file: Path, sw_cli: Runner, tmp_path: Path) -> None:
    store = tmp_path / "moe.zarr"
    code, _, err = sw_cli(*_args(text_file, planted["mixtral"]), "--store", str(store), "--moe.causal_scoring", "true")
    assert code == 0, err
    location, label = StoreLocation(str(store)), planted["mixtral"].name
    router = read_table(location, label, "router")
    # the planted expert is routed for every spike token of its layer, and its candidate is the planted weight
    assert router.co_spike.values[LAYER, EXPERT] == pytest.approx(1.0) and router.co_spiking.values[LAYER, EXPERT]
    priced = ~np.isnan(router.causal_delta_ppl.values)
    assert (priced == router.co_spiking.values).all()
    sw0 = _perplexities(read_table(location, label, "evaluations"))
    assert router.causal_delta_ppl.values[LAYER, EXPERT] == pytest.approx(sw0["sw0"] - sw0["baseline"], rel=1e-5)
    floored, floor = tmp_path / "floored.zarr", float(router.p_active.values[LAYER, EXPERT]) + 0.01
    code, _, err = sw_cli(*_args(text_file, planted["mixtral"]), "--perplexity.skip", "true", "--store", str(floored),
                          "--moe.p_active_floor", str(floor))
    assert code == 0, err
    assert not read_table(StoreLocation(str(floored)), label, "router").scored.values[LAYER, EXPERT]
    weights = read_table(StoreLocation(str(floored)), label, "weights")
    assert (LAYER, EXPERT) not in set(zip(weights.layer.values.tolist(), weights.expert.values.tolist()))


def test_a_rerun_does_nothing_and_changes_no_byte(planted: dict[str, Path], text_file: Path, sw_cli: Runner,
                                                   tmp_path: Path) -> None:
    store = tmp_path / "sw.zarr"
    args = [*_args(text_file, planted["gpt2"]), "--store", str(store)]
    assert sw_cli(*args)[0] == 0
    before = tree_digest(store)
    code, out, _ = sw_cli(*args)
    assert code == 0 and "Nothing to do" in out
    assert tree_digest(store) == before


def test_a_model_that_fails_is_reported_and_the_next_still_runs(
        planted: dict[str, Path], text_file: Path, sw_cli: Runner, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_load = superweights.models.load_model

    def load(source: object, config: object) -> object:
        if "gpt2" in str(getattr(source, "path", "")):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_load(source, config)

    monkeypatch.setattr(superweights.models, "load_model", load)
    store = tmp_path / "sw.zarr"
    code, _, err = sw_cli(*_args(text_file, planted["gpt2"], planted["llama"]), "--perplexity.skip", "true",
                            "--store", str(store))
    assert code == 1
    assert err.count("error: ") == 1 and "out of memory" in err and planted["gpt2"].name in err
    weights = read_table(StoreLocation(str(store)), planted["llama"].name, "weights")
    assert weights.layer.values.tolist() == [LAYER]


def test_other_settings_are_refused_unless_overwrite(planted: dict[str, Path], text_file: Path, sw_cli: Runner,
                                                      tmp_path: Path) -> None:
    store = tmp_path / "sw.zarr"
    args = [*_args(text_file, planted["gpt2"]), "--perplexity.skip", "true", "--store", str(store)]
    assert sw_cli(*args)[0] == 0
    before = tree_digest(store)
    code, _, err = sw_cli(*args, "--detect.spike_threshold", "40")
    assert code == 2 and err.startswith("error: ") and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert tree_digest(store) == before
    assert sw_cli(*args, "--detect.spike_threshold", "40", "--overwrite")[0] == 0
    detection = read_table(StoreLocation(str(store)), planted["gpt2"].name, "detection")
    assert detection.attrs["spike_threshold"] == 40


@pytest.mark.parametrize(("flags", "message"), [
    (["--accuracy.tasks", "winogrande"], "winogrande"),
    (["--detect.spike_threshold", "0"], "detect.spike_threshold"),
    (["--spike-threshold", "-5"], "detect.spike_threshold"),
    (["--perplexity.window_len", "100000", "--perplexity.stride", "10"], "positions"),
    (["--perplexity.window_len", "400", "--perplexity.max_tokens", "300"], "longer than the text"),
    (["--accuracy.tasks", f"hellaswag={TASKS / 'arc_easy.json'}"], "hellaswag"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(flags: list[str], message: str, planted: dict[str, Path],
                                                         text_file: Path, sw_cli: Runner, tmp_path: Path) -> None:
    store = tmp_path / "sw.zarr"
    args = [arg for arg in _args(text_file, planted["gpt2"]) if arg not in ("--accuracy.skip", "true")]
    code, _, err = sw_cli(*args, *flags, "--store", str(store))
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and message in err, err
    assert not store.exists()


def test_the_old_scripts_flags_are_aliases_of_the_dotted_ones() -> None:
    config = parse_config(SuperweightsConfig, [
        "--models", "a", "b", "--spike-threshold", "60", "--max-iterations", "3", "--perplexity-samples", "20",
        "--accuracy-samples", "5", "--accuracy-tasks", "hellaswag", "arc_easy", "--skip-perplexity", "--skip-accuracy",
        "--router-analysis-samples", "15", "--p-active-floor", "0.02", "--co-spike-threshold", "0.095",
        "--enable-causal-scoring", "--seed", "7", "--quiet"], "superweights", "")
    assert config.model.name == ["a", "b"] and config.detect.spike_threshold == 60 and config.detect.max_iterations == 3
    assert (config.perplexity.samples, config.accuracy.samples, config.accuracy.tasks) == (20, 5, ["hellaswag", "arc_easy"])
    assert config.perplexity.skip and config.accuracy.skip and config.moe.causal_scoring
    assert (config.moe.router_samples, config.moe.p_active_floor, config.moe.co_spike_threshold) == (15, 0.02, 0.095)
    assert config.seed == 7 and config.quiet and not config.progress


@pytest.mark.parametrize("config_class", [SuperweightsConfig, VocabConfig])
def test_the_old_short_flags_are_accepted(config_class: type) -> None:
    """``-v`` / ``-q`` as the Super Weight scripts spelled ``--verbose`` / ``--quiet``."""
    assert parse_config(config_class, ["-v"], "superweights", "").verbose
    quiet = parse_config(config_class, ["-q"], "superweights", "")
    assert quiet.quiet and not quiet.progress and not quiet.verbose


def test_a_store_on_s3_holds_the_records(planted: dict[str, Path], text_file: Path, sw_cli: Runner,
                                         s3_options: dict[str, object]) -> None:
    location = StoreLocation(f"s3://{BUCKET}/superweights-e2e.zarr", s3_options)
    code, _, err = sw_cli(*_args(text_file, planted["gpt_neox"]), "--perplexity.skip", "true", "--store", location.url,
                          "--storage_options", f"endpoint_url={s3_options['endpoint_url']}")
    assert code == 0, err
    assert read_table(location, planted["gpt_neox"].name, "weights").col.values.tolist() == [COL]
    validate_store(location)


def test_smollm2_has_its_super_weight_in_layer_11(smollm2_folder: Path, sw_cli: Runner, tmp_path: Path) -> None:
    """Detection only, on the bundled text: the real model's largest spike is W[507, 1229] of layer 11."""
    store = tmp_path / "smollm2.zarr"
    code, _, err = sw_cli("--model.name", str(smollm2_folder), "--model.label", "smollm2", "--model.device", "cpu",
                            "--perplexity.skip", "true", "--accuracy.skip", "true", "--store", str(store),
                            "--progress", "false")
    assert code == 0, err
    weights = read_table(StoreLocation(str(store)), "smollm2", "weights")
    assert (weights.layer.values[0], weights.row.values[0], weights.col.values[0]) == (11, 507, 1229)
    assert weights.output_spike.values[0] > 10_000
    assert (weights.output_spike.values > 50).all() and (weights.input_spike.values > 50).all()
    assert len({(layer, col) for layer, col in zip(weights.layer.values, weights.col.values)}) == weights.sizes["record"]


def test_a_calibration_prompt_replaces_the_text(planted: dict[str, Path], text_file: Path, sw_cli: Runner,
                                                tmp_path: Path) -> None:
    prompt = "Apple Inc. is a worldwide tech company."
    store = tmp_path / "prompt.zarr"
    code, _, err = sw_cli(*_args(text_file, planted["llama"]), "--perplexity.skip", "true", "--store", str(store),
                          "--detect.prompt", prompt)
    assert code == 0, err
    detection = read_table(StoreLocation(str(store)), planted["llama"].name, "detection")
    assert detection.attrs["calibration_tokens"] == len(prompt.encode())  # the byte tokenizer: one token a byte
    assert detection.input_token.values.max() < len(prompt.encode())


@pytest.mark.parametrize(("family", "crash_at"), [("llama", "evaluations"), ("mixtral", "router")])
def test_a_crash_keeps_the_committed_tables_and_the_rerun_finishes(
        family: str, crash_at: str, planted: dict[str, Path], text_file: Path, sw_cli: Runner, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "sw.zarr"
    args = [*_args(text_file, planted[family]), "--store", str(store)]
    real_write = superweights.write_table

    def crash(location: StoreLocation, label: str, table: str, dataset: xr.Dataset) -> None:
        if table == crash_at:
            raise KeyboardInterrupt  # as a kill would, after the tables before it were committed
        real_write(location, label, table, dataset)

    monkeypatch.setattr(superweights, "write_table", crash)
    assert sw_cli(*args)[0] == 130
    location, label = StoreLocation(str(store)), planted[family].name
    committed = {"detection", "weights"} | ({"evaluations"} if crash_at == "router" else set())
    assert complete_tables(location, label) == committed
    monkeypatch.setattr(superweights, "write_table", real_write)
    monkeypatch.setattr(superweights, "run_detection", lambda *a: pytest.fail("detection ran again"))
    code, _, err = sw_cli(*args)
    assert code == 0, err
    assert complete_tables(location, label) == committed | {"evaluations", crash_at}
    assert set(_perplexities(read_table(location, label, "evaluations"))) == {"baseline", "sw0", "sw0_restored"}
    validate_store(location)


def test_an_moe_model_with_a_dense_layer_records_its_router_with_that_layer_empty(
        text_file: Path, sw_cli: Runner, tmp_path: Path) -> None:
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    torch.manual_seed(0)
    model = Qwen2MoeForCausalLM(Qwen2MoeConfig(
        vocab_size=320, hidden_size=32, intermediate_size=64, moe_intermediate_size=32,
        shared_expert_intermediate_size=32, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
        num_experts=4, num_experts_per_tok=2, mlp_only_layers=[0]))
    plant_super_weight(model, LAYER, ROW, COL, expert=EXPERT)
    folder = save_model(model, tmp_path / "qwen-moe-dense0")
    store = tmp_path / "sw.zarr"
    code, _, err = sw_cli(*_args(text_file, folder), "--perplexity.skip", "true", "--store", str(store))
    assert code == 0, err
    router = read_table(StoreLocation(str(store)), folder.name, "router")
    assert np.isnan(router.p_active.values[0]).all() and not np.isnan(router.p_active.values[1:]).any()
    weights = read_table(StoreLocation(str(store)), folder.name, "weights")
    assert (weights.layer.item(), weights.row.item(), weights.col.item(), weights.expert.item()) == (LAYER, ROW, COL, EXPERT)
    validate_store(StoreLocation(str(store)))


def test_a_model_failing_midway_leaves_a_valid_store_and_the_rerun_completes_it(
        planted: dict[str, Path], text_file: Path, sw_cli: Runner, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "sw.zarr"
    args = [*_args(text_file, planted["llama"], planted["gpt2"]), "--store", str(store)]
    real_evaluations = superweights.run_evaluations

    def out_of_memory_on_llama(model_run: object, *rest: object) -> object:
        if "Llama" in type(model_run.model).__name__:
            raise torch.OutOfMemoryError("CUDA out of memory while evaluating")
        return real_evaluations(model_run, *rest)

    monkeypatch.setattr(superweights, "run_evaluations", out_of_memory_on_llama)
    code, _, err = sw_cli(*args)
    assert code == 1 and "out of memory" in err
    location = StoreLocation(str(store))
    validate_store(location)  # the failed model's committed tables and the next model's, consolidated
    assert complete_tables(location, planted["llama"].name) == {"detection", "weights"}
    monkeypatch.setattr(superweights, "run_evaluations", real_evaluations)
    assert sw_cli(*args)[0] == 0
    assert "evaluations" in complete_tables(location, planted["llama"].name)
