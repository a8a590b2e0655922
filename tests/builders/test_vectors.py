"""End to end: ``python -m builders.vectors`` on tiny GPT-NeoX, Llama and GPT-2 models and the real SmolLM2."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from builds import kill_after
from conftest import TINY_ARGS
from small_stores import tree_digest

from builders import _models as models
from builders._config import ModelConfig
from builders._pooling import Segments, segment_weights
from builders.vectors import TextVectors
from store import StoreLocation, validate_store

Runner = Callable[..., tuple[int, str, str]]
REPO = Path(__file__).resolve().parents[2]
TINY = ["--data.max_docs", "24", "--data.max_seq_len", "64", "--data.batch_size", "4", "--vectors.unit_docs", "8",
        "--model.device", "cpu", "--progress", "false"]




def _corpus(folder: Path, n_docs: int, words: int = 30) -> Path:
    """A .jsonl corpus of documents of varied lengths, with ids."""
    path = folder / "docs.jsonl"
    lines = [json.dumps({"id": f"doc-{i}", "text": " ".join(f"word{(i * 7 + j) % 50}" for j in range(3 + (i * 5) % words))})
             for i in range(n_docs)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _stored(store: Path) -> xr.Dataset:
    return xr.open_zarr(store, group="vectors").load()


@pytest.mark.parametrize("family", ["gpt_neox", "llama", "gpt2"])
def test_each_family_writes_a_valid_vectors_group(family: str, tiny_model: Callable[[str], Path], vectors_cli: Runner,
                                                  tmp_path: Path) -> None:
    store = tmp_path / "v.zarr"
    code, out, err = vectors_cli("--model.name", str(tiny_model(family)), "--store", str(store), *TINY)
    assert code == 0, err
    assert "vectors(" in out
    validate_store(str(store))
    stored = _stored(store)
    assert stored["short"].shape == (1, 24, 32) and stored["long"].shape == (1, 24, 128)
    assert stored["short"].dtype == np.float16 and stored["n_tokens"].dtype == np.int32
    assert not np.isnan(stored["short"].values).any() and not np.isnan(stored["long"].values).any()
    (provenance,) = stored.attrs["models"].values()
    assert provenance["hidden_size"] == 32 and provenance["layers"] == [3, 4, 5] and provenance["dtype"] == "float32"
    assert stored.attrs["build_config"]["vectors"]["long_depths"] == [0.023, 0.067, 0.159]
    tree = xr.open_datatree(store, engine="zarr")
    assert "/vectors" in tree.groups


def test_mean_is_float64_of_the_float32_vectors_and_resume_is_bitwise(tiny_model: Callable[[str], Path],
                                                                      vectors_cli: Runner, tmp_path: Path) -> None:
    store = tmp_path / "v.zarr"
    args = ["--model.name", str(tiny_model("llama")), "--store", str(store), *TINY, "--vectors.dtype", "float32"]
    assert vectors_cli(*args)[0] == 0
    stored = _stored(store)
    for pooling in ("short", "long"):
        np.testing.assert_allclose(stored[f"{pooling}_mean"].values[0],
                                   stored[pooling].values[0].astype(np.float64).mean(axis=0), rtol=1e-12, atol=1e-15)
    before = tree_digest(store)
    code, out, _ = vectors_cli(*args)
    assert code == 0 and out.startswith("Nothing to do") and tree_digest(store) == before


def test_padding_never_changes_a_vector(tiny_model: Callable[[str], Path], vectors_cli: Runner, tmp_path: Path) -> None:
    """Batches of one (no padding) and of eight (padded to the longest): equal within float32 rounding."""
    corpus = _corpus(tmp_path, 16)
    stored = {}
    for batch_size in (1, 8):
        store = tmp_path / f"b{batch_size}.zarr"
        assert vectors_cli("--model.name", str(tiny_model("gpt_neox")), "--data.name", str(corpus),
                           "--data.id_field", "id", "--store", str(store), *TINY, "--data.batch_size",
                           str(batch_size), "--vectors.dtype", "float32")[0] == 0
        stored[batch_size] = _stored(store)
    lengths = stored[1]["n_tokens"].values[0]
    assert len(set(lengths.tolist())) > 4  # documents of many lengths: batches of eight are padded
    for pooling in ("short", "long"):
        np.testing.assert_allclose(stored[8][pooling].values, stored[1][pooling].values, rtol=1e-5, atol=1e-6)
    assert list(stored[1]["doc_id"].values[:2]) == ["doc-0", "doc-1"]


def test_a_text_vector_equals_the_stored_vector_of_the_same_document(tiny_model: Callable[[str], Path],
                                                                     vectors_cli: Runner, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path, 12)
    store = tmp_path / "v.zarr"
    assert vectors_cli("--model.name", str(tiny_model("llama")), "--data.name", str(corpus), "--data.id_field", "id",
                       "--store", str(store), *TINY, "--vectors.dtype", "float32")[0] == 0
    texts = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    on_demand = TextVectors(str(store))([texts[5], texts[0]])
    stored = _stored(store)
    for pooling in ("short", "long"):
        np.testing.assert_allclose(on_demand[pooling], stored[pooling].values[0, [5, 0]], rtol=1e-5, atol=1e-6)
    code, out, err = vectors_cli("--store", str(store), "--text", texts[5], "--query.k", "3", "--progress", "false")
    assert code == 0, err
    assert out.splitlines()[2].split()[:3] == ["1", "5", "doc-5"]  # the document itself ranks first


def test_windows_pool_every_token_with_the_whole_documents_weights(tiny_model: Callable[[str], Path],
                                                                   vectors_cli: Runner, tmp_path: Path) -> None:
    """A long document in windows of 16 tokens equals a direct computation: the first window pools its 16
    tokens, each later one runs 8 tokens of context then pools the next 8, and every pooled token is
    weighted by its position in the whole document (docs/vectors.md)."""
    folder = tiny_model("llama")
    corpus = tmp_path / "one.txt"
    corpus.write_text("a fairly long document about windows and weights " * 2)
    store = tmp_path / "v.zarr"
    assert vectors_cli("--model.name", str(folder), "--data.name", str(corpus), "--store", str(store),
                       "--data.max_seq_len", "16", "--data.long_docs", "windows", "--vectors.layers", "1", "2",
                       "--vectors.dtype", "float32", "--model.device", "cpu", "--progress", "false")[0] == 0
    stored = _stored(store)
    config = ModelConfig(name=str(folder), device="cpu")
    source = models.resolve_source(config)
    tokenizer, model = models.load_tokenizer(source, config), models.load_model(source, config)
    token_ids = [tokenizer.eos_token_id, *tokenizer(corpus.read_text(), add_special_tokens=False)["input_ids"]]
    n = len(token_ids)
    assert stored["n_tokens"].values[0, 0] == n > 32
    pooled_rows = []
    for start in [0, *range(16, n, 8)]:
        lead = 0 if start == 0 else 8
        window = token_ids[start - lead:start + (16 - lead)]
        with torch.inference_mode():
            hidden = model(input_ids=torch.tensor([window]), output_hidden_states=True).hidden_states
        pooled_rows.append((((hidden[2] + hidden[3]) / 2)[0, lead:]).numpy())  # blocks 1 and 2, context dropped
    layer_mean = np.concatenate(pooled_rows).astype(np.float64)
    assert layer_mean.shape[0] == n  # every token pooled exactly once
    weights = segment_weights(Segments.whole([n]), n, 0.067)[0]
    np.testing.assert_allclose(stored["short"].values[0, 0], weights @ layer_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stored["long"].values[0, 0, :32], layer_mean[-1], rtol=1e-5, atol=1e-6)


def _committed_units(store: Path) -> int:
    try:
        group = zarr.open_group(store, path="vectors", mode="r", use_consolidated=False)
        return int((group["unit_state"][0] == 2).sum())
    except Exception:  # noqa: BLE001 - the store may not exist yet
        return 0


def _kill_after(args: list[str], store: Path, units: int) -> int:
    """Start a build, SIGKILL it once ``units`` are committed; the committed count then."""
    return kill_after("builders.vectors", args, lambda: _committed_units(store), units, poll=0.005)


def test_kill_then_resume_is_bitwise_identical(tiny_model: Callable[[str], Path], vectors_cli: Runner,
                                               tmp_path: Path) -> None:
    corpus = _corpus(tmp_path, 240, words=120)
    common = ["--model.name", str(tiny_model("gpt2")), "--data.name", str(corpus), "--data.max_docs", "240",
              "--data.max_seq_len", "128", "--data.batch_size", "3", "--vectors.unit_docs", "6",
              "--model.device", "cpu", "--progress", "false"]
    reference, resumed = tmp_path / "ref.zarr", tmp_path / "resumed.zarr"
    assert vectors_cli(*common, "--store", str(reference))[0] == 0
    args = [*common, "--store", str(resumed)]
    first_kill = _kill_after(args, resumed, 2)
    assert 0 < first_kill < 40, "the build was not interrupted mid-way"
    code, out, err = vectors_cli(*args)
    assert code == 0, err
    assert f"{first_kill} of 40 units committed" in out
    expected, actual = _stored(reference), _stored(resumed)
    for name in expected.data_vars:
        assert expected[name].values.tobytes() == actual[name].values.tobytes(), name
    validate_store(str(resumed))


def test_a_second_model_joins_and_a_mismatch_is_refused(tiny_model: Callable[[str], Path], vectors_cli: Runner,
                                                        tmp_path: Path) -> None:
    corpus, store = _corpus(tmp_path, 24), tmp_path / "v.zarr"
    common = ["--data.name", str(corpus), "--data.id_field", "id", "--store", str(store), *TINY]
    assert vectors_cli("--model.name", str(tiny_model("llama")), *common)[0] == 0
    assert vectors_cli("--model.name", str(tiny_model("gpt2")), *common)[0] == 0
    stored = _stored(store)
    assert len(stored["model"]) == 2
    assert not np.isnan(stored["short"].values).any()
    validate_store(str(store))
    before = tree_digest(store)
    code, _, err = vectors_cli("--model.name", str(tiny_model("llama")), *common, "--vectors.short_depth", "0.1")
    assert code == 2 and "different configuration" in err and len(err.splitlines()) == 1
    corpus.write_text(corpus.read_text().replace('"doc-3"', '"doc-three"'))  # the same settings, other documents
    code, _, err = vectors_cli("--model.name", str(tiny_model("gpt_neox")), *common)
    assert code == 2 and err.startswith("error: ") and "documents differ" in err and "position 3" in err
    assert tree_digest(store) == before


@pytest.mark.parametrize(("args", "message"), [
    (["--vectors.layers", "99"], "out of range"),
    (["--vectors.poolings", "medium"], "unknown pooling 'medium'"),
    (["--vectors.short_depth", "0"], "above 0"),
    (["--vectors.long_depths", "0.1", "-0.2", "0.3"], "above 0"),
    (["--vectors.long_depths", "0.1", "0.2"], "needs 3 depths"),
    (["--vectors.dtype", "int8"], "unknown vectors.dtype"),
    (["--data.long_docs", "drop"], "unknown data.long_docs"),
    (["--query.pooling", "long", "--vectors.poolings", "short"], "not among vectors.poolings"),
    (["--data.max_seq_len", "4096"], "exceeds the model's 2048 positions"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(args: list[str], message: str, tiny_model: Callable[[str], Path],
                                                        vectors_cli: Runner, tmp_path: Path) -> None:
    store = tmp_path / "v.zarr"
    code, out, err = vectors_cli("--model.name", str(tiny_model("llama")), "--store", str(store), *TINY, *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert not store.exists()


def test_an_empty_document_is_refused_naming_it(tiny_model: Callable[[str], Path], vectors_cli: Runner,
                                                tmp_path: Path) -> None:
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text('{"id": "a", "text": "some words"}\n{"id": "b", "text": "   "}\n')
    store = tmp_path / "v.zarr"
    code, _, err = vectors_cli("--model.name", str(tiny_model("llama")), "--data.name", str(corpus),
                               "--data.id_field", "id", "--store", str(store), *TINY)
    assert code == 2 and "document 'b' (number 1)" in err and "empty" in err and len(err.strip().splitlines()) == 1
    assert not store.exists()


def test_default_vectors_on_smollm2(smollm2_folder: Path, vectors_cli: Runner, tmp_path: Path) -> None:
    store = tmp_path / "smollm2.zarr"
    code, _, err = vectors_cli("--model.name", str(smollm2_folder), "--model.label", "smollm2", "--store", str(store),
                               "--data.max_docs", "6", "--data.max_seq_len", "48", "--progress", "false")
    assert code == 0, err
    validate_store(str(store))
    stored = _stored(store)
    assert stored["short"].shape == (1, 6, 576) and stored["long"].shape == (1, 6, 2304)
    assert stored.attrs["models"]["smollm2"]["layers"] == [21, 22, 23]  # 25-27 of 36 on 30 blocks
    assert np.isfinite(stored["short_mean"].values).all()


def test_build_and_rerun_on_every_backend(target: tuple[StoreLocation, list[str]], tiny_model: Callable[[str], Path],
                                          vectors_cli: Runner) -> None:
    location, store_args = target
    args = ["--model.name", str(tiny_model("llama")), *store_args, *TINY]
    code, _, err = vectors_cli(*args)
    assert code == 0, err
    validate_store(location)
    code, out, _ = vectors_cli(*args)
    assert code == 0 and out.startswith("Nothing to do")


def test_vectors_sit_beside_stats_in_one_store(tiny_model: Callable[[str], Path], collect_cli: Runner,
                                               vectors_cli: Runner, tmp_path: Path) -> None:
    store = tmp_path / "both.zarr"
    assert collect_cli("--model.name", str(tiny_model("llama")), "--store", str(store), *TINY_ARGS)[0] == 0
    stats_before = tree_digest(store / "stats")
    assert vectors_cli("--model.name", str(tiny_model("llama")), "--store", str(store), *TINY)[0] == 0
    assert tree_digest(store / "stats") == stats_before  # the vectors build never touches the statistics
    assert validate_store(str(store)).sizes["token"] == 4096  # both groups checked, stats returned
    tree = xr.open_datatree(store, engine="zarr")
    assert {"/stats", "/vectors"} <= set(tree.groups)
    assert tree["vectors"]["short"].shape == (1, 24, 32)
    # --overwrite with other settings replaces the vectors group, and only it
    assert vectors_cli("--model.name", str(tiny_model("llama")), "--store", str(store), *TINY,
                       "--vectors.short_depth", "0.2", "--overwrite")[0] == 0
    assert tree_digest(store / "stats") == stats_before
    assert xr.open_zarr(store, group="vectors").attrs["build_config"]["vectors"]["short_depth"] == 0.2


def test_overwrite_never_touches_a_folder_that_is_not_a_store(tiny_model: Callable[[str], Path], vectors_cli: Runner,
                                                              tmp_path: Path) -> None:
    folder = tmp_path / "papers"
    (folder / "vectors").mkdir(parents=True)
    (folder / "vectors" / "draft.txt").write_text("a user's file, in a folder named like our group")
    (folder / "zarr.json").write_text("{}")
    before = tree_digest(folder)
    code, _, err = vectors_cli("--model.name", str(tiny_model("llama")), "--store", str(folder), *TINY, "--overwrite")
    assert code == 2 and "not a store of this project" in err
    assert tree_digest(folder) == before


def test_a_text_query_of_a_pooling_the_store_lacks_is_one_error_line(tiny_model: Callable[[str], Path],
                                                                    vectors_cli: Runner, tmp_path: Path) -> None:
    store = tmp_path / "v.zarr"
    assert vectors_cli("--model.name", str(tiny_model("llama")), "--store", str(store), *TINY,
                       "--vectors.poolings", "long", "--query.pooling", "long")[0] == 0
    code, out, err = vectors_cli("--store", str(store), "--text", "some words", "--progress", "false")
    assert code == 2 and out == "" and "holds ['long'] vectors, not 'short'" in err and len(err.splitlines()) == 1
    code, _, err = vectors_cli("--store", str(store), "--text", "some words", "--model.label", "other",
                               "--query.pooling", "long", "--progress", "false")
    assert code == 2 and "no vectors of model 'other'" in err


def test_a_text_edited_under_the_same_id_is_another_document(tiny_model: Callable[[str], Path],
                                                            vectors_cli: Runner, tmp_path: Path) -> None:
    """Resuming or adding a model over edited texts would mix vectors of two corpora: refused, naming where."""
    corpus, store = _corpus(tmp_path, 24), tmp_path / "v.zarr"
    args = ["--model.name", str(tiny_model("llama")), "--data.name", str(corpus), "--data.id_field", "id",
            "--store", str(store), *TINY]
    assert vectors_cli(*args)[0] == 0
    before = tree_digest(store)
    lines = corpus.read_text().splitlines()
    lines[5] = json.dumps({"id": "doc-5", "text": "an edited text under the old id"})
    corpus.write_text("\n".join(lines) + "\n")
    code, _, err = vectors_cli(*args)
    assert code == 2 and "documents differ" in err and "position 5" in err and len(err.splitlines()) == 1
    assert tree_digest(store) == before
    assert vectors_cli(*args, "--overwrite")[0] == 0  # asked for: the group is rebuilt over the new texts
    validate_store(str(store))
