"""Several models, or several runs of one model, in one store: what is committed never changes."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import TINY_ARGS
from small_stores import tree_digest
from tiny_models import merged_tokenizer, save_tiny_model

from builders._config import DataConfig
from builders._packing import iter_rows
from builders._text import iter_documents
from store import UNIT_COMMITTED, UnitWriter, validate_store

Runner = Callable[..., tuple[int, str, str]]
SEQ_LEN = 128  # --data.max_seq_len in TINY_ARGS


def _model_arrays(store: Path, index: int) -> dict[str, np.ndarray]:
    """Every variable of model slot ``index``, up to its commit marker on the token axis."""
    dataset = xr.open_zarr(store, group="stats").isel(model=index)
    committed = int(dataset.committed_tokens.values)
    return {name: (dataset[name].isel(token=slice(0, committed)) if "token" in dataset[name].dims
                   else dataset[name]).values
            for name in dataset.data_vars}


def _assert_bytes_equal(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> None:
    assert before.keys() == after.keys()
    for name in before:
        assert before[name].tobytes() == after[name].tobytes(), name


def _pydoc_text(n_characters: int) -> str:
    """The start of the bundled corpus, whole documents joined by blank lines."""
    documents = iter_documents(DataConfig())
    text = ""
    for document in itertools.takewhile(lambda _: len(text) < n_characters, documents):
        text += document + "\n\n"
    return text[:n_characters]


def _tokens_yielded(corpus: Path, model_folder: Path) -> int:
    """How many tokens of whole rows a model's tokenizer makes of ``corpus`` (what collect can fill)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    rows = iter_rows(iter_documents(DataConfig(name=str(corpus))), tokenizer, SEQ_LEN)
    return SEQ_LEN * sum(1 for _ in rows)


@pytest.fixture(scope="module")
def merged_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 whose tokenizer has learned merges: about 1.5x fewer tokens than bytes."""
    tokenizer = merged_tokenizer(_pydoc_text(20_000))
    return save_tiny_model("gpt2", tmp_path_factory.mktemp("gpt2-merged"), seed=1, tokenizer=tokenizer)


def _killed_after_first_commit(writer: UnitWriter, original: Callable[[UnitWriter], None] = UnitWriter.commit) -> None:
    """A unit commit that stops the build like Ctrl-C right after it."""
    original(writer)
    raise KeyboardInterrupt


def test_resume_with_another_dtype_is_refused(tiny_model: Callable[[str], Path], collect_cli: Runner,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "s.zarr"
    common = ["--model.name", str(tiny_model("llama")), "--store", str(store), "--data.max_tokens", "1024",
              "--data.max_seq_len", "128", "--data.batch_size", "2", "--stats.commit_tokens", "256",
              "--stats.shard_tokens", "256",
              "--stats.channels", "8", "--model.device", "cpu", "--progress", "false"]
    with monkeypatch.context() as patched:
        patched.setattr(UnitWriter, "commit", _killed_after_first_commit)
        code, _, err = collect_cli(*common, "--model.dtype", "float32")
    assert code == 130, err
    units = xr.open_zarr(store, group="stats", consolidated=False).unit_state.values[0]
    assert (units == UNIT_COMMITTED).sum() == 1, "the first build must stop part-way, after a unit's commit"
    before = tree_digest(store)
    code, out, err = collect_cli(*common, "--model.dtype", "bfloat16")
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "dtype" in lines[0], err
    assert tree_digest(store) == before, "a refused build must not touch the store"
    # the same settings do resume: the refusal above was about the dtype, not about resuming
    code, out, err = collect_cli(*common, "--model.dtype", "float32")
    assert code == 0 and "Resuming" in out, err


def test_second_model_yielding_more_tokens_keeps_the_first_bitwise(
        tiny_model: Callable[[str], Path], merged_model: Path, collect_cli: Runner, tmp_path: Path) -> None:
    corpus = tmp_path / "short.txt"
    corpus.write_text(_pydoc_text(3_000))  # below max_tokens for both tokenizers
    store = tmp_path / "s.zarr"
    common = ["--store", str(store), *TINY_ARGS, "--data.name", str(corpus)]
    code, _, err = collect_cli("--model.name", str(merged_model), "--model.label", "merged", *common)
    assert code == 0, err
    first = _model_arrays(store, 0)
    n_tokens = first["token_id"].size
    assert n_tokens < 4096, "the first model must run out of text, shrinking the token axis"
    code, _, err = collect_cli("--model.name", str(tiny_model("llama")), "--model.label", "bytes", *common)
    assert code == 0, err
    dataset = validate_store(str(store))
    assert dataset.sizes["token"] == n_tokens and dataset.committed_tokens.values.tolist() == [n_tokens] * 2
    yields = {name: _tokens_yielded(corpus, folder) for name, folder in
              (("merged", merged_model), ("bytes", tiny_model("llama")))}
    assert yields["merged"] == n_tokens < yields["bytes"], "the second model must yield more tokens"
    assert not np.array_equal(dataset.token_id.values[0], dataset.token_id.values[1])
    _assert_bytes_equal(first, _model_arrays(store, 0))


def test_models_with_different_tokenizers_share_a_store(
        tiny_model: Callable[[str], Path], merged_model: Path, collect_cli: Runner, tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    common = ["--store", str(store), *TINY_ARGS, "--data.max_tokens", "2048"]  # two commits, past document 0
    code, _, err = collect_cli("--model.name", str(tiny_model("llama")), "--model.label", "bytes", *common)
    assert code == 0, err
    first = _model_arrays(store, 0)
    code, _, err = collect_cli("--model.name", str(merged_model), "--model.label", "merged", *common)
    assert code == 0, err
    dataset = validate_store(str(store))
    assert dataset.committed_tokens.values.tolist() == [2048, 2048]
    assert np.isfinite(dataset.value.values).all() and np.isfinite(dataset.channel_value.values).all()
    # the merged tokenizer cuts the first document into fewer tokens: the streams really differ in length
    first_boundary = [int(np.argmax(doc_index != doc_index[0])) for doc_index in dataset.doc_index.values]
    assert 0 < first_boundary[1] < first_boundary[0], first_boundary
    _assert_bytes_equal(first, _model_arrays(store, 0))
