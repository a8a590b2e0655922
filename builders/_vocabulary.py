"""A tokenizer's vocabulary as the store keeps it (``store.Vocabulary``): read once, when a model is collected.

Queries then decode token ids from the store alone: each id's token string and its text decoded
alone, which special tokens are, and the tokenizer's own files (``tokenizer.json`` and friends),
with which the ``tokenizers`` library decodes a whole row exactly as the tokenizer does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from store import Vocabulary


def vocabulary_of(tokenizer: Any) -> Vocabulary:
    """Every id of ``tokenizer`` (added tokens included), its files, its EOS and BOS ids."""
    ids = list(range(len(tokenizer)))
    tokens = [str(token) if token is not None else "" for token in tokenizer.convert_ids_to_tokens(ids)]
    # decoded one id at a time: the text a table of tokens shows (a row is decoded whole, from the files)
    texts = tokenizer.batch_decode([[token_id] for token_id in ids], skip_special_tokens=False)
    special = np.zeros(len(ids), bool)
    special[[i for i in tokenizer.all_special_ids if 0 <= i < len(ids)]] = True
    bos = tokenizer.bos_token_id
    return Vocabulary(tokens, list(texts), special, int(tokenizer.eos_token_id), -1 if bos is None else int(bos),
                      type(tokenizer).__name__, _saved_files(tokenizer))


def _saved_files(tokenizer: Any) -> dict[str, bytes]:
    """The files ``save_pretrained`` writes (tokenizer.json, its config, a chat template ...)."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return {path.name: path.read_bytes() for path in sorted(Path(folder).iterdir()) if path.is_file()}
