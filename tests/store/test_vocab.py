"""The ``vocab`` group's contract on local and S3 stores: one entry per distinct table, read back whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from small_stores import build_valid_store

from store import (
    ContractError,
    StoreLocation,
    StoreLocationError,
    Vocabulary,
    consolidate,
    read_vocabulary,
    tokenizer_files,
    validate_store,
    vocabulary_keys,
    write_vocabulary,
)
from store._vocab import vocab_problems

TOKENS = ["<eos>", "Ġthe", "▁cat", "<0x0A>", "é"]


def _vocabulary(texts: list[str] | None = None) -> Vocabulary:
    files = {"tokenizer.json": b'{"model": {}}', "tokenizer_config.json": b"{}", "empty.txt": b""}
    return Vocabulary(TOKENS, texts or ["<eos>", " the", " cat", "\n", "é"], np.array([1, 0, 0, 0, 0], bool),
                      eos_token_id=0, tokenizer_class="Fast", files=files)


def test_models_of_one_tokenizer_share_one_entry(location: StoreLocation) -> None:
    first, other = _vocabulary().key, _vocabulary(["<eos>", "the", "cat", "\n", "é"]).key
    assert first != other
    assert write_vocabulary(location, "a", _vocabulary()) and write_vocabulary(location, "b", _vocabulary())
    assert write_vocabulary(location, "c", _vocabulary(["<eos>", "the", "cat", "\n", "é"]))
    assert not write_vocabulary(location, "b", _vocabulary())  # recorded already: nothing written
    assert vocabulary_keys(location) == {"a": first, "b": first, "c": other}
    entry = read_vocabulary(location, "b")
    assert entry["token"].values.tolist() == TOKENS and entry["text"].values.tolist()[1] == " the"
    assert entry["special"].values.tolist() == [True, False, False, False, False]
    assert entry.attrs["eos_token_id"] == 0 and entry.attrs["size"] == 5 and entry.attrs["complete"] is True
    assert tokenizer_files(entry) == _vocabulary().files
    assert vocab_problems(location, ["a", "b", "c"]) == []
    assert vocab_problems(location, ["a", "b"]) == ["vocab: model 'c' is not a model of the stats group"]


def test_validate_store_checks_the_vocabulary(tmp_path: Path) -> None:
    location = build_valid_store(tmp_path / "s.zarr")
    write_vocabulary(location, "m", _vocabulary())
    key = _vocabulary().key
    validate_store(location)
    zarr.open_array(location.zarr_store(), path=f"vocab/{key}/text", mode="r+")[1] = " THE"  # edited after writing
    consolidate(location)
    with pytest.raises(ContractError, match=f"vocab/{key}: its table hashes to"):
        validate_store(location)


def test_a_model_without_a_vocabulary_is_named_with_the_fix(tmp_path: Path) -> None:
    location = build_valid_store(tmp_path / "s.zarr")
    with pytest.raises(StoreLocationError, match="holds no vocabulary for model 'm'.*rerun the same python -m builders.collect"):
        read_vocabulary(location, "m")
