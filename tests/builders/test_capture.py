"""``python -m builders.capture``: every hidden state of a generation, against our own forward pass."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from store import StoreLocation, complete_items, validate_store

Runner = Callable[..., tuple[int, str, str]]
Tiny = Callable[[str], Path]
PROMPT = "Hello, world"
FAST = ["--model.device", "cpu", "--progress", "false", "--generate.max_new_tokens", "4"]
# where each family keeps its decoder blocks (written here, independently of builders._models)
BLOCKS = {"gpt2": "transformer.h", "llama": "model.layers", "gpt_neox": "gpt_neox.layers", "opt": "model.decoder.layers"}


@pytest.fixture
def capture_cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Runner]:
    """Run ``python -m builders.capture`` in-process: (exit code, stdout, stderr).

    ``--deterministic`` switches torch's deterministic algorithms on process-wide; put them back.
    """
    from builders.capture import main

    before, cublas = torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    yield run
    torch.use_deterministic_algorithms(before)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
    if cublas is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def item(store: Path, label: str, index: int = 0) -> xr.Dataset:
    return xr.open_zarr(store, group=f"captures/{label}/capture_{index:04d}").load()


def folder_bytes(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and modification time (a rewrite changes the latter)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def block_list(model: nn.Module, family: str) -> nn.ModuleList:
    node: Any = model
    for name in BLOCKS[family].split("."):
        node = getattr(node, name)
    return node


def reference(folder: Path, family: str, token_ids: np.ndarray,
              dtype: torch.dtype = torch.float32) -> tuple[list[np.ndarray], np.ndarray]:
    """Our own run: output_hidden_states, and the last block's raw output by a forward hook."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    kept: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        kept.append(output[0] if isinstance(output, tuple) else output)

    handle = block_list(model, family)[-1].register_forward_hook(hook)
    try:
        with torch.no_grad():
            ids = torch.as_tensor(token_ids, dtype=torch.long)[None]
            out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    finally:
        handle.remove()
    assert len(kept) == 1
    return [h[0].float().numpy() for h in out.hidden_states], kept[0][0].float().numpy()


def assert_matches_reference(stored: xr.Dataset, hidden: list[np.ndarray], last_block: np.ndarray) -> None:
    states = stored.hidden_state
    n_blocks = len(hidden) - 1
    names = ["embedding", *(f"layer_{n}" for n in range(n_blocks)), "final_norm"]
    assert list(stored.layer.values) == names
    assert states.shape == (n_blocks + 2, *hidden[0].shape)
    np.testing.assert_array_equal(states.sel(layer="embedding").values, hidden[0], strict=True)
    for n in range(n_blocks - 1):
        np.testing.assert_array_equal(states.sel(layer=f"layer_{n}").values, hidden[n + 1], strict=True)
    np.testing.assert_array_equal(states.sel(layer=f"layer_{n_blocks - 1}").values, last_block, strict=True)
    np.testing.assert_array_equal(states.sel(layer="final_norm").values, hidden[-1], strict=True)
    # the last block's raw output is not the normed one: the two layers really are different points
    assert not np.array_equal(last_block, hidden[-1])


def assert_texts_and_tokens(stored: xr.Dataset, folder: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = stored.token_id.values
    prompt_ids = tokenizer(stored.attrs["prompt"])["input_ids"]
    assert ids[: len(prompt_ids)].tolist() == prompt_ids
    assert stored.attrs["n_prompt_tokens"] == len(prompt_ids)
    np.testing.assert_array_equal(stored.is_prompt.values, np.arange(len(ids)) < len(prompt_ids))
    assert len(ids) > len(prompt_ids)  # something was generated
    whole = stored.attrs["prompt"] + stored.attrs["generated_text"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == whole


def assert_stats(stored: xr.Dataset) -> None:
    stats = stored.attrs["layer_stats"]
    states = stored.hidden_state.values
    assert [entry["layer"] for entry in stats] == list(stored.layer.values)
    for entry, layer in zip(stats, states):
        values = layer.astype(np.float64)
        assert entry["shape"] == [1, *layer.shape]
        assert entry["num_elements"] == layer.size
        assert entry["min"] == float(values.min()) and entry["max"] == float(values.max())
        assert entry["mean"] == pytest.approx(float(values.mean()), rel=1e-12, abs=1e-15)
    sizes = [entry["num_elements"] for entry in stats]
    assert stored.attrs["size_summary"] == {"min_size": min(sizes), "max_size": max(sizes),
                                            "avg_size": pytest.approx(sum(sizes) / len(sizes))}


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox", "opt"])  # opt: the reference tool's example
def test_capture_equals_output_hidden_states(family: str, tiny_model: Tiny, capture_cli: Runner,
                                             tmp_path: Path) -> None:
    folder, store, report = tiny_model(family), tmp_path / "c.zarr", tmp_path / "report.json"
    code, out, err = capture_cli("--model.name", str(folder), "--model.label", "tiny", "--prompt", PROMPT,
                                 "--store", str(store), "--report", str(report), *FAST)
    assert code == 0, err
    stored = item(store, "tiny")
    assert stored.attrs["complete"] is True and stored.attrs["label"] == "tiny"
    assert stored.attrs["model_name"] == str(folder) and stored.attrs["prompt"] == PROMPT
    assert stored.attrs["dtype"] == "float32" and stored.attrs["device"] == "cpu"
    assert stored.hidden_state.dtype == np.float32 and stored.token_id.dtype == np.int32
    assert json.loads(stored.attrs["capture_settings"])["generate"]["max_new_tokens"] == 4
    stats = stored.attrs["layer_stats"]
    assert all(entry["dtype"] == "torch.float32" and entry["precision_bits"] == 32 for entry in stats)
    assert_matches_reference(stored, *reference(folder, family, stored.token_id.values))
    assert_texts_and_tokens(stored, folder)
    assert_stats(stored)
    printed = json.loads(out)
    keys = ("model_name", "prompt", "generated_text", "size_summary", "layer_stats", "label", "device")
    assert printed == [{key: stored.attrs[key] for key in keys}]
    assert json.loads(report.read_text(encoding="utf-8")) == printed
    validate_store(str(store))
    tree = xr.open_datatree(store, engine="zarr")
    assert "capture_0000" in tree["captures/tiny"].children
    np.testing.assert_array_equal(tree["captures/tiny/capture_0000"].dataset.hidden_state.values,
                                  stored.hidden_state.values)


def test_bfloat16_is_stored_as_float32_of_the_bfloat16_states(tiny_model: Tiny,
                                                             capture_cli: Runner, tmp_path: Path) -> None:
    folder, store = tiny_model("llama"), tmp_path / "bf16.zarr"
    code, _, err = capture_cli("--model.name", str(folder), "--model.label", "tiny", "--prompt", PROMPT,
                               "--model.dtype", "bfloat16", "--store", str(store), *FAST)
    assert code == 0, err
    stored = item(store, "tiny")
    assert stored.attrs["dtype"] == "bfloat16" and stored.hidden_state.dtype == np.float32
    bits = stored.hidden_state.values.view(np.uint32)
    assert not (bits & 0xFFFF).any()  # every value is a bfloat16, widened
    assert_matches_reference(stored, *reference(folder, "llama", stored.token_id.values, torch.bfloat16))


@pytest.mark.slow
def test_smollm2_capture_equals_output_hidden_states(smollm2_folder: Path, capture_cli: Runner,
                                                     tmp_path: Path) -> None:
    store = tmp_path / "smollm2.zarr"
    code, out, err = capture_cli("--model.name", "embedded:smollm2-135m-instruct", "--store", str(store),
                                 "--prompt", "The capital of France is", *FAST)
    assert code == 0, err
    stored = item(store, "smollm2-135m-instruct")
    assert stored.attrs["model_name"] == "embedded:smollm2-135m-instruct"
    assert stored.sizes["layer"] == 32 and stored.sizes["hidden"] == 576
    assert_matches_reference(stored, *reference(smollm2_folder, "llama", stored.token_id.values))
    assert_texts_and_tokens(stored, smollm2_folder)
    assert_stats(stored)
    assert json.loads(out)[0]["generated_text"] == stored.attrs["generated_text"]


def test_deterministic_runs_are_bitwise_identical(tiny_model: Tiny, capture_cli: Runner,
                                                  tmp_path: Path) -> None:
    folder = tiny_model("gpt2")
    stored = []
    for name in ("one.zarr", "two.zarr"):
        code, _, err = capture_cli("--model.name", str(folder), "--model.label", "tiny", "--prompt", PROMPT,
                                   "--deterministic", "--store", str(tmp_path / name), *FAST)
        assert code == 0, err
        stored.append(item(tmp_path / name, "tiny"))
    first, second = stored
    assert first.hidden_state.values.tobytes() == second.hidden_state.values.tobytes()
    assert first.token_id.values.tobytes() == second.token_id.values.tobytes()
    assert first.attrs["generated_text"] == second.attrs["generated_text"]
    assert json.loads(first.attrs["capture_settings"])["deterministic"] is True


def test_two_models_and_a_prompt_file(tiny_model: Tiny, capture_cli: Runner, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\nFirst prompt\n   \nSecond one\n\n", encoding="utf-8")
    store = tmp_path / "two.zarr"
    names = f"{tiny_model('gpt2')},{tiny_model('llama')}"
    code, out, err = capture_cli("--model.name", names, "--model.label", "g", "--model.label", "l",
                                 "--prompt_file", str(prompts), "--store", str(store), *FAST)
    assert code == 0, err
    for label, family in (("g", "gpt2"), ("l", "llama")):
        assert sorted(complete_items(StoreLocation(str(store)), "captures", label)) == [0, 1]
        for index, prompt in enumerate(["First prompt", "Second one"]):
            stored = item(store, label, index)
            assert stored.attrs["prompt"] == prompt and stored.attrs["label"] == label
            assert stored.attrs["model_name"] == str(tiny_model(family))
            assert_texts_and_tokens(stored, tiny_model(family))
    assert [(r["label"], r["prompt"]) for r in json.loads(out)] == [
        ("g", "First prompt"), ("g", "Second one"), ("l", "First prompt"), ("l", "Second one")]
    assert not (store / "captures" / "g" / "capture_0002").exists()


def test_resume_skips_and_other_settings_need_overwrite(tiny_model: Tiny, capture_cli: Runner,
                                                         tmp_path: Path) -> None:
    store = tmp_path / "resume.zarr"
    base = ["--model.name", str(tiny_model("llama")), "--model.label", "tiny", "--prompt", PROMPT,
            "--store", str(store), "--model.device", "cpu", "--progress", "false"]
    code, first_out, err = capture_cli(*base, "--generate.max_new_tokens", "4")
    assert code == 0, err
    group = store / "captures" / "tiny" / "capture_0000"
    before = folder_bytes(group)
    code, again_out, err = capture_cli(*base, "--generate.max_new_tokens", "4")
    assert code == 0, err
    assert folder_bytes(group) == before  # not rewritten: bytes and modification times unchanged
    assert json.loads(again_out) == json.loads(first_out)

    code, out, err = capture_cli(*base, "--generate.max_new_tokens", "3")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and "--overwrite" in err
    assert folder_bytes(group) == before

    code, _, err = capture_cli(*base, "--generate.max_new_tokens", "3", "--overwrite")
    assert code == 0, err
    assert folder_bytes(group) != before
    stored = item(store, "tiny")
    assert json.loads(stored.attrs["capture_settings"])["generate"]["max_new_tokens"] == 3
    assert stored.attrs["n_prompt_tokens"] < stored.sizes["position"] <= stored.attrs["n_prompt_tokens"] + 3
    assert_matches_reference(stored, *reference(tiny_model("llama"), "llama", stored.token_id.values))
    validate_store(str(store))


@pytest.mark.parametrize("case", ["empty_prompt", "blank_prompt_file", "missing_prompt_file", "unknown_model",
                                  "export_csv", "zero_new_tokens"])
def test_bad_input_is_one_error_line_and_nothing_written(case: str, tiny_model: Tiny,
                                                         capture_cli: Runner, tmp_path: Path) -> None:
    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n\t\n", encoding="utf-8")
    model, store, export = str(tiny_model("gpt2")), tmp_path / "bad.zarr", tmp_path / "export"
    args = {
        "empty_prompt": ["--model.name", model, "--prompt", ""],
        "blank_prompt_file": ["--model.name", model, "--prompt_file", str(blank)],
        "missing_prompt_file": ["--model.name", model, "--prompt_file", str(tmp_path / "nope.txt")],
        "unknown_model": ["--model.name", str(tmp_path / "no-such-model"), "--prompt", PROMPT],
        "export_csv": ["--model.name", model, "--prompt", PROMPT, "--export", "csv", str(export)],
        "zero_new_tokens": ["--model.name", model, "--prompt", PROMPT, "--generate.max_new_tokens", "0"],
    }[case]
    code, out, err = capture_cli(*args, "--store", str(store), "--model.device", "cpu", "--progress", "false")
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not store.exists() and not export.exists()


def test_export_npy_writes_the_reference_stats_json(tiny_model: Tiny, capture_cli: Runner,
                                                    tmp_path: Path) -> None:
    folder, store, export = tiny_model("gpt_neox"), tmp_path / "e.zarr", tmp_path / "exported"
    code, out, err = capture_cli("--model.name", str(folder), "--model.label", "tiny", "--prompt", PROMPT,
                                 "--store", str(store), "--export", "npy", str(export), *FAST)
    assert code == 0, err
    stored = item(store, "tiny")
    expected = export / (str(folder).replace("/", "_") + "_stats.json")
    stem = str(expected).removesuffix("_stats.json") + "_activations"
    assert sorted(export.iterdir()) == sorted([expected, Path(f"{stem}.json"), Path(f"{stem}.safetensors")])
    exported = json.loads(expected.read_text(encoding="utf-8"))
    keys = ["model_name", "prompt", "generated_text", "size_summary", "layer_stats"]
    assert sorted(exported) == sorted(keys)
    assert exported == {key: stored.attrs[key] for key in keys}
    assert {key: json.loads(out)[0][key] for key in keys} == exported


def stored_settings(store: Path, label: str) -> dict[int, int]:
    """Capture number -> the max_new_tokens it was captured with, for every complete capture of ``label``."""
    found = complete_items(StoreLocation(str(store)), "captures", label)
    settings = {index: json.loads(xr.open_zarr(store, group=path).attrs["capture_settings"])
                for index, path in sorted(found.items())}
    return {index: value["generate"]["max_new_tokens"] for index, value in settings.items()}


def test_rerun_with_another_prompt_does_not_return_the_old_capture(tiny_model: Tiny, capture_cli: Runner,
                                                                   tmp_path: Path) -> None:
    store = tmp_path / "prompts.zarr"
    base = ["--model.name", str(tiny_model("gpt2")), "--model.label", "tiny", "--store", str(store), *FAST]
    code, _, err = capture_cli(*base, "--prompt", "First prompt")
    assert code == 0, err
    before = folder_bytes(store / "captures")
    code, out, err = capture_cli(*base, "--prompt", "Second one")
    if code == 2:  # refusing is fine: one error line, nothing changed
        assert err.startswith("error: ") and err.count("\n") == 1
        assert folder_bytes(store / "captures") == before
        return
    assert code == 0, err
    assert [report["prompt"] for report in json.loads(out)] == ["Second one"]
    assert item(store, "tiny").attrs["prompt"] == "Second one"


def test_overwrite_leaves_no_capture_of_the_old_settings(tiny_model: Tiny, capture_cli: Runner,
                                                         tmp_path: Path) -> None:
    store, two, one = tmp_path / "mixed.zarr", tmp_path / "two.txt", tmp_path / "one.txt"
    two.write_text("First prompt\nSecond one\n", encoding="utf-8")
    one.write_text("First prompt\n", encoding="utf-8")
    base = ["--model.name", str(tiny_model("gpt2")), "--model.label", "tiny", "--store", str(store),
            "--model.device", "cpu", "--progress", "false"]
    assert capture_cli(*base, "--prompt_file", str(two), "--generate.max_new_tokens", "4")[0] == 0
    assert stored_settings(store, "tiny") == {0: 4, 1: 4}
    code, _, err = capture_cli(*base, "--prompt_file", str(one), "--generate.max_new_tokens", "3",
                               "--overwrite")
    assert code == 0, err
    # captures of one model share their settings: none of the replaced settings may stay
    assert set(stored_settings(store, "tiny").values()) == {3}
    code, out, err = capture_cli(*base, "--prompt_file", str(two), "--generate.max_new_tokens", "3")
    assert code == 0, err
    assert stored_settings(store, "tiny") == {0: 3, 1: 3}
    assert len(json.loads(out)) == 2


def test_blocked_export_folder_is_refused_before_anything_is_written(tiny_model: Tiny, capture_cli: Runner,
                                                                     tmp_path: Path) -> None:
    blocker, store = tmp_path / "a-file", tmp_path / "never.zarr"
    blocker.write_text("not a folder", encoding="utf-8")
    code, _, err = capture_cli("--model.name", str(tiny_model("gpt2")), "--prompt", PROMPT,
                               "--store", str(store), "--export", "npy", str(blocker / "sub"), *FAST)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not store.exists()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_export_npy_writes_the_activations_pt_fields_without_pickle(tiny_model: Tiny, capture_cli: Runner,
                                                                    tmp_path: Path, dtype: str) -> None:
    """activationCaptureLib's <model>_activations.pt, field for field, as safetensors + JSON: every hidden
    state (index 0 the embedding output) with its batch axis and the model's dtype, the token sequence,
    the prompt and generated text; equal to the store's capture, bfloat16 included."""
    from safetensors import safe_open

    folder, store, export = tiny_model("llama"), tmp_path / "e.zarr", tmp_path / "exported"
    code, _, err = capture_cli("--model.name", str(folder), "--model.label", "tiny", "--prompt", PROMPT,
                               "--model.dtype", dtype, "--store", str(store), "--export", "npy", str(export), *FAST)
    assert code == 0, err
    stored = item(store, "tiny")
    stem = export / (str(folder).replace("/", "_") + "_activations")
    with safe_open(str(stem.with_suffix(".safetensors")), framework="pt") as tensors:
        metadata = tensors.metadata()
        states = [tensors.get_tensor(f"hidden_states.{i}") for i in range(stored.sizes["layer"])]
        tokens = tensors.get_tensor("token_sequence")
        assert set(tensors.keys()) == {"token_sequence", *(f"hidden_states.{i}" for i in range(len(states)))}
    fields = {key: stored.attrs[key] for key in ("model_name", "prompt", "generated_text")}
    assert metadata == fields and fields["prompt"] == PROMPT
    assert tokens.dtype == torch.int64 and tokens.tolist() == [stored.token_id.values.tolist()]
    for layer, state in enumerate(states):
        assert state.dtype == getattr(torch, dtype) and state.shape == (1, *stored.hidden_state.shape[1:])
        assert torch.equal(state[0].float(), torch.from_numpy(stored.hidden_state.values[layer]))
    described = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
    assert {key: described[key] for key in fields} == fields
    assert described["hidden_states"]["count"] == len(states) and described["hidden_states"]["dtype"] == dtype
    assert described["hidden_states"]["names"] == [str(name) for name in stored.layer.values]
