"""End to end: ``python -m builders.collect`` on tiny models into local stores."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from builds import kill_after, spawn_builder
from conftest import TINY_ARGS
from small_stores import tree_digest
from tiny_models import merged_tokenizer, save_tiny_model

from store import validate_store

Runner = Callable[..., tuple[int, str, str]]
REPO = Path(__file__).resolve().parents[2]


def _arrays(path: Path) -> dict[str, np.ndarray]:
    dataset = xr.open_zarr(path, group="stats")
    return {name: dataset[name].values for name in dataset.data_vars}


def test_collect_writes_a_valid_store(tiny_model: Callable[[str], Path], collect_cli: Runner, tmp_path: Path) -> None:
    store = tmp_path / "a.zarr"
    code, out, err = collect_cli("--model.name", str(tiny_model("llama")), "--store", str(store), *TINY_ARGS)
    assert code == 0, err
    assert str(store) in out and "open_zarr" in out
    dataset = validate_store(str(store))
    assert dataset.sizes == {"model": 1, "layer": 3, "metric": 13, "token": 4096, "channel": 8, "unit": 4}
    assert list(dataset.layer.values) == ["embed", "middle", "pre_last"]
    assert dataset.layer_index.values.tolist() == [[-1, 3, 4]]  # 6 blocks: middle 3, pre_last 4
    values = dataset.value.values
    assert np.isfinite(values).all()
    rms = dataset.value.sel(metric="rms").values
    l2 = dataset.value.sel(metric="l2_norm").values
    np.testing.assert_allclose(rms * np.sqrt(32), l2, rtol=1e-5)
    # every token is real: the EOS joins documents, doc_index never decreases
    doc_index = dataset.doc_index.values[0]
    assert (np.diff(doc_index) >= 0).all() and doc_index[-1] > 0
    assert (dataset.token_id.values == 256).sum() >= doc_index[-1] - doc_index[0]
    provenance = dataset.attrs["models"][str(dataset.model.values[0])]
    assert len(provenance["file_sha256"]) == 64 and provenance["versions"]["torch"]


def test_rerun_is_a_noop(tiny_model: Callable[[str], Path], collect_cli: Runner, tmp_path: Path) -> None:
    store = tmp_path / "a.zarr"
    args = ["--model.name", str(tiny_model("llama")), "--store", str(store), *TINY_ARGS]
    assert collect_cli(*args)[0] == 0
    before = tree_digest(store)
    code, out, _ = collect_cli(*args)
    assert code == 0 and "Nothing to do" in out
    assert tree_digest(store) == before


def test_second_model_joins_the_store(tiny_model: Callable[[str], Path], collect_cli: Runner, tmp_path: Path) -> None:
    store = tmp_path / "a.zarr"
    assert collect_cli("--model.name", str(tiny_model("llama")), "--model.label", "llama", "--store", str(store),
                       *TINY_ARGS)[0] == 0
    first = _arrays(store)
    code, _, err = collect_cli("--model.name", str(tiny_model("gpt2")), "--model.label", "gpt2",
                               "--store", str(store), *TINY_ARGS)
    assert code == 0, err
    dataset = validate_store(str(store))
    assert list(dataset.model.values) == ["llama", "gpt2"]
    assert dataset.committed_tokens.values.tolist() == [4096, 4096]
    np.testing.assert_array_equal(dataset.value.values[0], first["value"][0])
    assert np.isfinite(dataset.value.values[1]).all()


def test_short_corpus_shrinks_the_token_axis(tiny_model: Callable[[str], Path], collect_cli: Runner,
                                              tmp_path: Path) -> None:
    corpus = tmp_path / "small.txt"
    corpus.write_text("a short document. " * 50)  # 900 bytes -> 7 rows of 128
    store = tmp_path / "a.zarr"
    code, _, err = collect_cli("--model.name", str(tiny_model("llama")), "--store", str(store),
                               *TINY_ARGS, "--data.name", str(corpus))
    assert code == 0, err
    dataset = validate_store(str(store))
    assert dataset.sizes["token"] == 7 * 128
    assert dataset.committed_tokens.values.tolist() == [7 * 128]


def test_jsonl_and_yaml_config(tiny_model: Callable[[str], Path], collect_cli: Runner, tmp_path: Path) -> None:
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"body": f"document number {i} " * 40}) for i in range(20)))
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  name: {corpus}\n  text_field: body\n  max_tokens: 1024\nstats:\n  layers: [0, 3]\n")
    store = tmp_path / "a.zarr"
    code, _, err = collect_cli("--config", str(config), "--model.name", str(tiny_model("llama")),
                               "--store", str(store), "--stats.channels", "4", "--data.max_seq_len", "128",
                               "--progress", "false")
    assert code == 0, err
    dataset = validate_store(str(store))
    assert list(dataset.layer.values) == ["layer_0", "layer_3"] and dataset.sizes["token"] == 1024


def _committed(store: Path) -> int:
    try:
        group = zarr.open_group(store, path="stats", mode="r", use_consolidated=False)
        return int(group["committed_tokens"][0])
    except Exception:  # noqa: BLE001 - the store may not exist yet
        return 0


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return spawn_builder("builders.collect", args)


def _kill_after(args: list[str], store: Path, tokens: int) -> int:
    """Start a build, SIGKILL it once ``tokens`` are committed; the committed count then."""
    return kill_after("builders.collect", args, lambda: _committed(store), tokens)


def test_kill_then_resume_is_bitwise_identical(tiny_model: Callable[[str], Path], collect_cli: Runner,
                                               tmp_path: Path) -> None:
    common = ["--model.name", str(tiny_model("llama")), "--data.max_tokens", "12288", "--data.max_seq_len",
              "128", "--data.batch_size", "3", "--stats.channels", "8", "--stats.commit_tokens", "512",
              "--stats.shard_tokens", "1536", "--model.device", "cpu", "--progress", "false"]
    reference, resumed = tmp_path / "ref.zarr", tmp_path / "resumed.zarr"
    assert collect_cli(*common, "--store", str(reference))[0] == 0
    # a checkpoint after every batch: kills land mid-unit too, and the resumes reload checkpoints
    args = [*common, "--store", str(resumed), "--commit_seconds", "0"]
    first_kill = _kill_after(args, resumed, 1536)
    second_kill = _kill_after(args, resumed, first_kill + 2 * 1536)
    assert 0 < first_kill < second_kill < 12288, "the builds were not interrupted mid-way"
    finished = _spawn(args)
    _, err = finished.communicate(timeout=300)
    assert finished.returncode == 0, err.decode()
    expected, actual = _arrays(reference), _arrays(resumed)
    for name in expected:
        assert expected[name].tobytes() == actual[name].tobytes(), name
    validate_store(str(resumed))


def test_a_shorter_second_model_is_refused_before_the_store_changes(
        tiny_model: Callable[[str], Path], collect_cli: Runner, tmp_path: Path) -> None:
    text = " ".join(f"sentence {i} about the quick brown fox." for i in range(160))  # ~6,000 bytes
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    store = tmp_path / "a.zarr"
    common = [*TINY_ARGS, "--data.name", str(corpus), "--store", str(store)]
    assert collect_cli("--model.name", str(tiny_model("llama")), "--model.label", "bytes", *common)[0] == 0
    before = tree_digest(store)
    merged = save_tiny_model("llama", tmp_path / "merged", tokenizer=merged_tokenizer(text))
    code, _, err = collect_cli("--model.name", str(merged), "--model.label", "merged", *common)
    assert code == 2 and err.startswith("error: ") and "yields only" in err and len(err.strip().splitlines()) == 1
    assert tree_digest(store) == before, "the refused model changed the store"
    dataset = validate_store(str(store))
    assert dataset.committed_tokens.values.tolist() == [4096] and list(dataset.model.values) == ["bytes"]
    code, _, _ = collect_cli("--model.name", str(merged), "--model.label", "merged", *common)
    assert code == 2 and tree_digest(store) == before  # re-running repeats the refusal, still harmless


def test_a_build_killed_while_finishing_is_caught_and_repaired(
        tiny_model: Callable[[str], Path], collect_cli: Runner, tmp_path: Path, monkeypatch) -> None:
    import pytest

    import store._stats_store
    from store import ContractError

    corpus = tmp_path / "small.txt"
    corpus.write_text("a short document. " * 50)  # 7 rows of 128: the token axis is shrunk at the end
    store_path = tmp_path / "a.zarr"
    args = ["--model.name", str(tiny_model("llama")), "--store", str(store_path), *TINY_ARGS,
            "--data.name", str(corpus)]

    def killed(location: object) -> bool:
        raise KeyboardInterrupt  # as a SIGKILL after the resize, before the consolidation

    monkeypatch.setattr(store._stats_store, "consolidate_if_stale", killed)
    assert collect_cli(*args)[0] == 130
    monkeypatch.undo()
    assert xr.open_zarr(store_path, group="stats").sizes["token"] == 4096  # stale: what readers would see
    with pytest.raises(ContractError, match="stale"):
        validate_store(str(store_path))
    code, out, err = collect_cli(*args)
    assert code == 0 and "Nothing to do" in out, err
    dataset = validate_store(str(store_path))
    assert dataset.sizes["token"] == 7 * 128 and np.isfinite(dataset.value.values).all()


def test_a_folder_of_other_files_is_never_written_or_removed(tiny_model: Callable[[str], Path],
                                                            collect_cli: Runner, tmp_path: Path) -> None:
    folder = tmp_path / "my-project"
    (folder / "src").mkdir(parents=True)
    (folder / "notes.md").write_text("months of work")
    (folder / "src" / "main.py").write_text("print('hi')")
    before = tree_digest(folder)
    for extra in ([], ["--overwrite"]):
        code, _, err = collect_cli("--model.name", str(tiny_model("llama")), "--store", str(folder), *TINY_ARGS, *extra)
        assert code == 2 and err.startswith("error: refusing to") and "'notes.md', 'src'" in err, err
        assert len(err.strip().splitlines()) == 1
        assert tree_digest(folder) == before
