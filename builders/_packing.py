"""Token packing: documents joined with EOS, cut into rows, rows grouped into batches.

No padding: every token is real text or a document-separating EOS. Row ``r``
holds tokens ``r * seq_len .. (r + 1) * seq_len`` of the stream, and batch ``b``
always holds rows ``b * batch_size ..``, so a resumed build computes exactly the
batches an uninterrupted one would.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from builders.errors import DataError

_TOKENIZE_GROUP = 64  # documents per tokenizer call: the fast tokenizer batches them


@dataclass(frozen=True)
class Batch:
    """Consecutive rows of the token stream starting at token ``start``."""

    start: int
    token_ids: np.ndarray  # (rows, seq_len) int64
    doc_index: np.ndarray  # (rows, seq_len) int64, the source document of each token

    @property
    def n_tokens(self) -> int:
        return int(self.token_ids.size)


def _token_documents(documents: Iterable[str], tokenizer: Any) -> Iterator[tuple[int, list[int]]]:
    numbered = ((i, text) for i, text in enumerate(documents) if text.strip())
    while group := list(itertools.islice(numbered, _TOKENIZE_GROUP)):
        encoded = tokenizer([text for _, text in group], add_special_tokens=False)["input_ids"]
        for (doc_index, _), token_ids in zip(group, encoded):
            yield doc_index, [*token_ids, tokenizer.eos_token_id]


def iter_rows(documents: Iterable[str], tokenizer: Any, seq_len: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(token_ids, doc_index) rows of exactly ``seq_len`` tokens; a short tail is dropped."""
    token_buffer: list[int] = []
    doc_buffer: list[int] = []
    for doc_index, token_ids in _token_documents(documents, tokenizer):
        token_buffer.extend(token_ids)
        doc_buffer.extend([doc_index] * len(token_ids))
        while len(token_buffer) >= seq_len:
            yield np.asarray(token_buffer[:seq_len], np.int64), np.asarray(doc_buffer[:seq_len], np.int64)
            del token_buffer[:seq_len], doc_buffer[:seq_len]


def iter_batches(
    rows: Iterable[tuple[np.ndarray, np.ndarray]], batch_size: int, max_rows: int, first_token: int = 0
) -> Iterator[Batch]:
    """Batches of up to ``batch_size`` rows; those wholly before ``first_token`` are skipped."""
    limited = itertools.islice(rows, max_rows)
    row_index = 0
    while chunk := list(itertools.islice(limited, batch_size)):
        seq_len = chunk[0][0].shape[0]
        start = row_index * seq_len
        row_index += len(chunk)
        if row_index * seq_len <= first_token:
            continue
        yield Batch(start, np.stack([r[0] for r in chunk]), np.stack([r[1] for r in chunk]))


def count_rows(rows: Iterable[tuple[np.ndarray, np.ndarray]], limit: int) -> int:
    """How many rows the stream yields, counting no further than ``limit``."""
    return sum(1 for _ in itertools.islice(rows, limit))


def peek_rows(rows: Iterator[tuple[np.ndarray, np.ndarray]], source: str, seq_len: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Fail now if the text cannot fill one row; otherwise the same rows, unconsumed."""
    first = next(rows, None)
    if first is None:
        raise DataError(
            f"dataset {source!r} yields fewer than {seq_len} tokens (empty or only blank documents); "
            "point --data.name at more text or lower --data.max_seq_len"
        )
    return itertools.chain([first], rows)
