"""``python -m analysis.export STORE --to safetensors|csv DIR``: the Activation Vector Project's files
(``activation_vector_short_30.safetensors`` + ``_metadata.json``, raw and centred CSV), equal to the store."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from safetensors.numpy import load_file

from analysis.export import main as export_main

TINY = ["--data.max_docs", "6", "--data.max_seq_len", "32", "--data.batch_size", "3", "--vectors.unit_docs", "4",
        "--model.device", "cpu", "--progress", "false"]


@pytest.fixture(scope="module")
def vectors_store(tmp_path_factory: pytest.TempPathFactory, tiny_model: Callable[[str], Path]) -> Path:
    from builders.vectors import main

    folder = tmp_path_factory.mktemp("vector_exports")
    corpus = folder / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"doc-{i}", "text": f"words {i} " * (3 + i)}) + "\n" for i in range(6)))
    store = folder / "v.zarr"
    assert main(["--model.name", str(tiny_model("gpt_neox")), "--store", str(store), "--data.name", str(corpus),
                 "--data.id_field", "id", *TINY]) == 0
    return store


def stored(store: Path) -> xr.Dataset:
    return xr.open_zarr(store, group="vectors").isel(model=0).load()


def test_the_set_in_one_safetensors_file_with_its_metadata(vectors_store: Path, tmp_path: Path) -> None:
    assert export_main([str(vectors_store), "--to", "safetensors", str(tmp_path), "--pooling", "long"]) == 0
    tensors = load_file(tmp_path / "activation_vectors_long.safetensors")
    vectors = stored(vectors_store)
    assert tensors["activation_vectors"].dtype == np.float16
    np.testing.assert_array_equal(tensors["activation_vectors"], vectors["long"].values.astype(np.float16))
    np.testing.assert_array_equal(tensors["doc_index"], np.arange(6))
    metadata = json.loads((tmp_path / "activation_vectors_long_metadata.json").read_text())
    assert metadata["shape"] == [6, 128] and metadata["dtype"] == "float16" and metadata["pooling_strategy"] == "long"
    assert metadata["doc_ids"] == [f"doc-{i}" for i in range(6)] and metadata["centered"] is False
    assert metadata["extraction_parameters"] == vectors.attrs["build_config"]
    assert metadata["model_facts"]["hidden_size"] == 32 and metadata["model_facts"]["layers"] == [3, 4, 5]


def test_one_file_pair_per_vector_centred(vectors_store: Path, tmp_path: Path) -> None:
    tmp_path = tmp_path / "new" / "folder"  # made by the export
    assert export_main([str(vectors_store), "--to", "safetensors", str(tmp_path), "--per_vector", "--centre"]) == 0
    vectors = stored(vectors_store)
    centred = vectors["short"].values.astype(np.float32) - vectors["short_mean"].values.astype(np.float32)
    for index in range(6):
        vector = load_file(tmp_path / f"activation_vector_short_{index}.safetensors")["activation_vector"]
        np.testing.assert_array_equal(vector, centred[index].astype(np.float16))
        metadata = json.loads((tmp_path / f"activation_vector_short_{index}_metadata.json").read_text())
        assert metadata["doc_id"] == f"doc-{index}" and metadata["shape"] == [32] and metadata["centered"] is True


def test_raw_and_centred_csv(vectors_store: Path, tmp_path: Path) -> None:
    assert export_main([str(vectors_store), "--to", "csv", str(tmp_path)]) == 0
    vectors = stored(vectors_store)
    raw = pd.read_csv(tmp_path / "vectors_short_raw.csv")
    centred = pd.read_csv(tmp_path / "vectors_short_centered.csv")
    assert list(raw.columns) == ["doc_id", *(f"v{i}" for i in range(32))] and list(raw.doc_id) == [f"doc-{i}" for i in range(6)]
    np.testing.assert_allclose(raw.iloc[:, 1:].values, vectors["short"].values.astype(np.float32), rtol=1e-6)
    expected = vectors["short"].values.astype(np.float32) - vectors["short_mean"].values.astype(np.float32)
    np.testing.assert_allclose(centred.iloc[:, 1:].values, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(centred.iloc[:, 1:].values.mean(axis=0)).max() < np.abs(raw.iloc[:, 1:].values.mean(axis=0)).max()


def test_a_folder_of_other_files_is_refused(vectors_store: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert export_main([str(vectors_store), "--to", "csv", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: export folder") and err.count("\n") == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]
