"""Token packing: documents joined with EOS, cut into rows, rows grouped into units and batches.

No padding: every token is real text or a document-separating EOS. Row ``r``
holds tokens ``r * seq_len .. (r + 1) * seq_len`` of the stream. A build first
writes the rows of each work unit into the store (``unit_rows``); the batches of a
unit then always start at the unit's first row (``unit_batches``), so a resumed
build, or a worker computing the unit anywhere, runs exactly the batches an
uninterrupted in-process build would.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from builders.errors import DataError
from store import Unit

_TOKENIZE_GROUP = 64  # documents per tokenizer call: the fast tokenizer batches them


@dataclass(frozen=True)
class Batch:
    """Consecutive rows of the token stream starting at token ``start``."""

    start: int
    token_ids: np.ndarray  # (rows, seq_len) int64

    @property
    def n_tokens(self) -> int:
        return int(self.token_ids.size)


def token_documents(documents: Iterable[str], tokenizer: Any) -> Iterator[tuple[int, list[int]]]:
    """(document number, its tokens + EOS) for each non-blank document, tokenised in groups."""
    numbered = ((i, text) for i, text in enumerate(documents) if text.strip())
    while group := list(itertools.islice(numbered, _TOKENIZE_GROUP)):
        encoded = tokenizer([text for _, text in group], add_special_tokens=False)["input_ids"]
        for (doc_index, _), token_ids in zip(group, encoded):
            yield doc_index, [*token_ids, tokenizer.eos_token_id]


def iter_rows(documents: Iterable[str], tokenizer: Any, seq_len: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(token_ids, doc_index) rows of exactly ``seq_len`` tokens; a short tail is dropped."""
    token_buffer: list[int] = []
    doc_buffer: list[int] = []
    for doc_index, token_ids in token_documents(documents, tokenizer):
        token_buffer.extend(token_ids)
        doc_buffer.extend([doc_index] * len(token_ids))
        while len(token_buffer) >= seq_len:
            yield np.asarray(token_buffer[:seq_len], np.int64), np.asarray(doc_buffer[:seq_len], np.int64)
            del token_buffer[:seq_len], doc_buffer[:seq_len]


def unit_rows(rows: Iterable[tuple[np.ndarray, np.ndarray]], units: Iterable[Unit],
              seq_len: int) -> Iterator[tuple[Unit, np.ndarray, np.ndarray]]:
    """Each unit with its token ids and document indexes, in order; the text may end in a unit.

    A unit the text ends in comes out shortened to the tokens there are; later ones do not come out.
    """
    rows = iter(rows)
    for unit in units:
        chunk = list(itertools.islice(rows, unit.n_tokens // seq_len))
        if not chunk:
            return
        token_ids = np.concatenate([row[0] for row in chunk])
        yield Unit(unit.index, unit.start, unit.start + token_ids.shape[0]), token_ids, np.concatenate(
            [row[1] for row in chunk])
        if token_ids.shape[0] < unit.n_tokens:
            return


def unit_batches(token_ids: np.ndarray, start: int, seq_len: int, batch_size: int) -> Iterator[Batch]:
    """Batches of ``batch_size`` rows over ``token_ids`` (tokens ``start ..``, whole rows), in order."""
    rows = token_ids.reshape(-1, seq_len).astype(np.int64)
    for first in range(0, rows.shape[0], batch_size):
        yield Batch(start + first * seq_len, rows[first:first + batch_size])


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
