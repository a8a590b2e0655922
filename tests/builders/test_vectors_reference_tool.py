"""The Activation Vector Project's remaining commands: a seeded random sample of documents
(``--data.num_samples``, its data fetcher's ``--num_samples``) and the diagnostics of one text
(``--text`` or ``--file`` with ``--diagnostics DIR``, its ``visualize_vectors.py --center --mode long``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from builders._documents import sampled
from builders.vectors import TextVectors

TINY = ["--data.max_seq_len", "32", "--data.batch_size", "4", "--vectors.unit_docs", "4", "--model.device", "cpu",
        "--progress", "false", "--vectors.dtype", "float32"]
Runner = Callable[..., tuple[int, str, str]]




@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": f"doc-{i}", "text": f"words {i} and more " * (2 + i % 5)}) + "\n"
                            for i in range(20)))
    return path


def stored_ids(store: Path) -> list[str]:
    return [str(doc_id) for doc_id in xr.open_zarr(store, group="vectors")["doc_id"].values]


def test_a_seeded_sample_of_documents_in_source_order(tiny_model: Callable[[str], Path], corpus: Path,
                                                      vectors_cli: Runner, tmp_path: Path) -> None:
    def build(store: str, seed: int) -> list[str]:
        args = ["--model.name", str(tiny_model("gpt_neox")), "--data.name", str(corpus), "--data.id_field", "id",
                "--data.max_docs", "20", "--data.num_samples", "5", "--data.sample_seed", str(seed), *TINY]
        code, _, err = vectors_cli(*args, "--store", str(tmp_path / store))
        assert code == 0, err
        return stored_ids(tmp_path / store)

    first, again, other = build("a.zarr", 3), build("b.zarr", 3), build("c.zarr", 4)
    positions = [int(doc_id.split("-")[1]) for doc_id in first]
    assert len(first) == 5 and positions == sorted(positions) and first == again and first != other


def test_the_sample_is_uniform() -> None:
    # every one of 20 documents is drawn with probability 5/20: over 4,000 seeds each count is near 1,000
    records = [(f"doc-{i}", "text") for i in range(20)]
    counts = np.zeros(20)
    for seed in range(4000):
        for doc_id, _ in sampled(iter(records), 5, seed):
            counts[int(doc_id.split("-")[1])] += 1
    assert counts.sum() == 20_000 and np.abs(counts - 1000).max() < 120  # about 4.4 standard deviations


@pytest.mark.parametrize("case", ["more_than_max_docs", "more_than_the_corpus", "text_and_file", "diagnostics_alone"])
def test_bad_sampling_and_text_options_are_one_error_line(case: str, tiny_model: Callable[[str], Path], corpus: Path,
                                                           vectors_cli: Runner, tmp_path: Path) -> None:
    extra = {"more_than_max_docs": ["--data.max_docs", "4", "--data.num_samples", "5"],
             "more_than_the_corpus": ["--data.max_docs", "100", "--data.num_samples", "30"],
             "text_and_file": ["--text", "hello", "--file", str(corpus)],
             "diagnostics_alone": ["--diagnostics", str(tmp_path / "diag")]}[case]
    store = tmp_path / "v.zarr"
    code, _, err = vectors_cli("--model.name", str(tiny_model("gpt_neox")), "--data.name", str(corpus),
                               "--store", str(store), *TINY, *extra)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not store.exists() and not (tmp_path / "diag").exists()


def test_diagnostics_of_a_text_or_a_file(tiny_model: Callable[[str], Path], corpus: Path, vectors_cli: Runner,
                                         tmp_path: Path) -> None:
    store = tmp_path / "v.zarr"
    model = str(tiny_model("gpt_neox"))
    assert vectors_cli("--model.name", model, "--data.name", str(corpus), "--data.max_docs", "12", "--store",
                       str(store), *TINY)[0] == 0
    text = "a new text about words and more words"
    (tmp_path / "text.txt").write_text(text, encoding="utf-8")
    for flag, value, folder in (("--text", text, "from_text"), ("--file", str(tmp_path / "text.txt"), "from_file")):
        code, out, err = vectors_cli("--store", str(store), flag, value, "--query.pooling", "long",
                                     "--diagnostics", str(tmp_path / folder), "--progress", "false")
        assert code == 0, err
        assert "Nearest documents" in out and (tmp_path / folder / "diagnostics.png").stat().st_size > 5_000
    tables = [pd.read_csv(tmp_path / folder / "diagnostics.csv") for folder in ("from_text", "from_file")]
    pd.testing.assert_frame_equal(tables[0], tables[1])
    table = tables[0]
    assert list(table.part) == ["last_token", "depth_0.023", "depth_0.067", "depth_0.159"]
    long_vector = TextVectors(str(store))([text])["long"][0].reshape(4, -1)
    np.testing.assert_allclose(table.raw_norm, np.linalg.norm(long_vector, axis=1), rtol=1e-5)
    # raw - centred is the pooled corpus mean: aligned with it, of its norm (the reference tool's check)
    np.testing.assert_allclose(table.alignment, 1.0, rtol=1e-5)
    np.testing.assert_allclose(table.difference_norm, table.predicted_norm, rtol=1e-5)
