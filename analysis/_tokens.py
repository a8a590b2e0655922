"""Token ids to text from the store alone: the ``vocab`` group that ``builders.collect`` writes.

A single id shows its text decoded alone (the vocabulary's ``text`` column). A run of ids
(a row, a context window) is decoded whole by the ``tokenizers`` library from the
``tokenizer.json`` kept in the store, which is what the tokenizer itself does: decoding ids one
by one and joining would break characters spread over several byte-level tokens. Without a
``tokenizer.json`` (a slow tokenizer) or without ``tokenizers`` installed the texts are joined.
"""

from __future__ import annotations

import json
import warnings
from functools import cached_property
from typing import Any

import numpy as np
import xarray as xr

from store import StoreLocation, read_vocabulary, read_vocabulary_entry, tokenizer_files, vocabulary_keys
from store.errors import InputError

# transformers' clean_up_tokenization, applied when the tokenizer's config asks for it (as decode does)
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


class TokenText:
    """The vocabulary of one model: texts of single ids, and whole runs of ids decoded."""

    def __init__(self, entry: xr.Dataset) -> None:
        self.entry = entry
        self.texts = np.asarray(entry["text"].values, dtype=object)
        self.tokens = np.asarray(entry["token"].values, dtype=object)
        self.special = np.asarray(entry["special"].values, bool)
        self.eos_token_id = int(entry.attrs["eos_token_id"])
        self.key = str(entry.attrs["key"])

    @cached_property
    def _files(self) -> dict[str, bytes]:
        return tokenizer_files(self.entry)

    @cached_property
    def _backend(self) -> Any:
        if "tokenizer.json" not in self._files:
            return None
        try:
            from tokenizers import Tokenizer
        except ImportError:
            return None
        return Tokenizer.from_str(self._files["tokenizer.json"].decode("utf-8"))

    @cached_property
    def _clean_up(self) -> bool:
        config = self._files.get("tokenizer_config.json")
        return bool(config and json.loads(config).get("clean_up_tokenization_spaces"))

    def text(self, token_ids: np.ndarray) -> list[str]:
        """Each id's text decoded alone ("" for an id outside the vocabulary)."""
        ids = np.asarray(token_ids, np.int64)
        inside = (ids >= 0) & (ids < self.texts.size)
        return [str(self.texts[i]) if ok else "" for i, ok in zip(ids, inside)]

    def decode(self, token_ids: np.ndarray) -> str:
        """A run of ids as the tokenizer decodes it (special tokens kept)."""
        ids = [int(i) for i in np.asarray(token_ids).ravel()]
        if self._backend is None:
            return "".join(self.text(np.asarray(ids)))
        decoded = self._backend.decode(ids, skip_special_tokens=False)
        if self._clean_up:
            for before, after in _CLEAN_UP:
                decoded = decoded.replace(before, after)
        return decoded


def vocabulary_of(location: StoreLocation, label: str) -> TokenText:
    return TokenText(read_vocabulary(location, label))


def vocabularies(location: StoreLocation, labels: list[str]) -> dict[str, TokenText | None]:
    """Each model's vocabulary (one read per entry, however many models share it); None, with one
    warning, for models collected before stores kept one."""
    keys = vocabulary_keys(location)
    missing = [label for label in labels if label not in keys]
    if missing:
        warnings.warn(f"store {location.display()!r} holds no vocabulary for model(s) {missing!r} (collected "
                      "before stores kept one): token texts are left empty; rerun the same python -m "
                      "builders.collect command to add it", UserWarning, stacklevel=3)
    loaded = {key: TokenText(read_vocabulary_entry(location, key)) for key in {keys[label] for label in labels
                                                                                 if label in keys}}
    return {label: loaded.get(keys.get(label, "")) for label in labels}


def check_shared(texts: dict[str, TokenText | None]) -> None:
    """Refuse models whose token ids mean different tokens (or are unknown): they cannot be compared by id."""
    keys = {label: text.key if text is not None else None for label, text in texts.items()}
    if len(texts) > 1 and (len(set(keys.values())) > 1 or None in keys.values()):
        shown = ", ".join(f"{label!r}: {key or 'no vocabulary'}" for label, key in keys.items())
        raise InputError(
            f"models of different (or unknown) tokenizers cannot be compared token by token ({shown}); "
            "pass --model with models that share a tokenizer")
