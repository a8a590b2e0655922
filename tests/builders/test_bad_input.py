"""Each kind of bad input: one line naming problem and fix, exit code 2, existing store untouched."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TINY_ARGS
from small_stores import tree_digest

Runner = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def built_store(tmp_path_factory: pytest.TempPathFactory, tiny_model: Callable[[str], Path]) -> Path:
    from builders.collect import main

    store = tmp_path_factory.mktemp("bad-input") / "existing.zarr"
    assert main(["--model.name", str(tiny_model("llama")), "--store", str(store), *TINY_ARGS]) == 0
    return store


def _files(tmp_path: Path) -> dict[str, Path]:
    no_field = tmp_path / "no_field.jsonl"
    no_field.write_text(json.dumps({"body": "some text " * 100}) + "\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("data:\n  max_tokenz: 10\n")
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text("data: [unclosed\n")
    return {"no_field": no_field, "empty": empty, "blocker": blocker, "bad_yaml": bad_yaml, "broken_yaml": broken_yaml}


CASES = {
    "missing model folder": (["--model.name", "./no/such/model"], "not found"),
    "missing gguf file": (["--model.name", "/tmp/nothing-here.gguf"], "not found"),
    "missing data file": (["--data.name", "./no/such/corpus.txt"], "does not exist"),
    "unknown metric": (["--stats.metrics", "rms,bogus"], "unknown metric 'bogus'"),
    "unknown layer name": (["--stats.layers", "embed,top"], "unknown layer 'top'"),
    "layer out of range": (["--stats.layers", "layer_9"], "out of range"),
    "negative layer": (["--stats.layers", "-3"], "unknown layer '-3'"),
    # --overwrite too: a bad input must not delete the store it was asked to replace
    "text field missing": (["--data.name", "{no_field}", "--overwrite"], "no field 'text'"),
    "empty dataset": (["--data.name", "{empty}", "--overwrite"], "fewer than 128 tokens"),
    "zero max_tokens": (["--data.max_tokens", "0"], "positive integer"),
    "negative max_tokens": (["--data.max_tokens", "-5"], "positive integer"),
    "not a number": (["--data.max_tokens", "lots"], "expects int"),
    "different config": (["--data.max_tokens", "2048"], "different configuration"),
    "unwritable location": (["--store", "{blocker}/store.zarr"], "blocked by the file"),
    "unknown config key": (["--config", "{bad_yaml}"], "unknown config key 'data.max_tokenz'"),
    "too many channels": (["--stats.channels", "999"], "exceeds the model's hidden size"),
    "bad dtype": (["--model.dtype", "float8"], "unknown model.dtype"),
    "malformed yaml": (["--config", "{broken_yaml}"], "is not valid YAML at line 2"),
    "bad device": (["--model.device", "tpu9"], "unknown model.device 'tpu9'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_cleanly(case: str, built_store: Path, tiny_model: Callable[[str], Path],
                                 collect_cli: Runner, tmp_path: Path) -> None:
    flags, expected = CASES[case]
    files = _files(tmp_path)
    flags = [flag.format(**files) for flag in flags]
    before = tree_digest(built_store)
    base = ["--model.name", str(tiny_model("llama")), "--store", str(built_store), *TINY_ARGS]
    code, _, err = collect_cli(*base, *flags)  # later flags win, as on a real command line
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert tree_digest(built_store) == before


def test_unknown_hub_id_fails_cleanly(monkeypatch: pytest.MonkeyPatch, collect_cli: Runner, tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code, _, err = collect_cli("--model.name", "no-such-org/no-such-model", "--store", str(tmp_path / "s.zarr"),
                               *TINY_ARGS)
    assert code == 2 and "cannot load the config of model 'no-such-org/no-such-model'" in err
    assert not (tmp_path / "s.zarr").exists()


def test_unreachable_s3_endpoint_fails_cleanly(tiny_model: Callable[[str], Path], collect_cli: Runner,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    code, _, err = collect_cli("--model.name", str(tiny_model("llama")), "--store", "s3://bucket/s.zarr",
                               "--storage_options", "endpoint_url=http://127.0.0.1:9", *TINY_ARGS)
    assert code == 2 and "cannot reach store 's3://bucket/s.zarr' (endpoint 'http://127.0.0.1:9')" in err


def test_overwrite_replaces_a_different_config(built_store: Path, tiny_model: Callable[[str], Path],
                                               collect_cli: Runner, tmp_path: Path) -> None:
    import shutil

    import xarray as xr

    copy = tmp_path / "copy.zarr"
    shutil.copytree(built_store, copy)
    code, _, err = collect_cli("--model.name", str(tiny_model("llama")), "--store", str(copy), *TINY_ARGS,
                               "--data.max_tokens", "1024", "--overwrite")
    assert code == 0, err
    assert xr.open_zarr(copy, group="stats").sizes["token"] == 1024
