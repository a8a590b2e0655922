"""Documents for pooled vectors: one document is one sequence, never packed with another.

A corpus is read and tokenised whole before any model runs (tokenising is cheap next to the
forward pass), so every check fails before anything is written and the documents' ids fix
the store's doc axis. Inside a work unit the rows (whole documents, or windows of long ones)
are sorted by length and batched in that order, so a batch pads little; the order depends on
the unit's documents only, so a resumed build forms the same batches and writes the same bytes.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from builders._pooling import Segments
from builders._text import iter_records
from builders._vector_configs import DocumentsConfig
from builders.errors import DataError
from store import Unit

_TOKENIZE_GROUP = 256  # texts per tokenizer call


@dataclass(frozen=True)
class Corpus:
    """The documents of a build, tokenised: ids, every document's tokens and its full length."""

    doc_ids: tuple[str, ...]
    token_ids: list[np.ndarray]  # tokens pooled per document (truncated to max_seq_len under truncate)
    n_tokens: np.ndarray  # (doc,) each document's length in tokens, before truncation
    digests: np.ndarray  # (doc,) uint64 digest of each document's text (zeros for texts pooled on demand)

    def __len__(self) -> int:
        return len(self.doc_ids)


@dataclass(frozen=True)
class Batch:
    """Rows of a forward pass: which document each row belongs to, its tokens, and where they sit."""

    docs: np.ndarray  # (rows,) document position of each row
    token_ids: np.ndarray  # (rows, width) int64, right-padded
    attention_mask: np.ndarray  # (rows, width) int64, 0 on padding
    segments: Segments


def bos_id(tokenizer: Any) -> int:
    """The token that starts every document: BOS, or EOS for tokenizers without one (GPT-2, Pythia)."""
    return int(tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id)


def sampled(records: Iterator[tuple[str, str]], count: int, seed: int) -> list[tuple[str, str]]:
    """A uniform random sample of ``count`` records in one pass (reservoir sampling, algorithm R), in the
    source's order: the same seed and source give the same documents, and only ``count`` are held."""
    rng = np.random.default_rng(seed)
    reservoir: list[tuple[int, tuple[str, str]]] = []
    for position, record in enumerate(records):
        if position < count:
            reservoir.append((position, record))
        elif (slot := int(rng.integers(0, position + 1))) < count:
            reservoir[slot] = (position, record)
    if len(reservoir) < count:
        raise DataError(f"the text source holds {len(reservoir)} documents, fewer than --data.num_samples {count}; "
                        "sample fewer or point --data.name at a larger corpus")
    return [record for _, record in sorted(reservoir, key=lambda kept: kept[0])]


def read_corpus(config: DocumentsConfig, tokenizer: Any, prepend_bos: bool) -> Corpus:
    """The first ``max_docs`` documents (or ``num_samples`` of them at random), tokenised; an empty
    document or a repeated id is an error."""
    # islice takes no stop above sys.maxsize: a larger max_docs means every document
    records = itertools.islice(iter_records(config, config.id_field), min(config.max_docs, sys.maxsize))
    if config.num_samples:
        records = iter(sampled(records, config.num_samples, config.sample_seed))
    doc_ids: list[str] = []
    token_ids: list[np.ndarray] = []
    digests: list[int] = []
    while group := list(itertools.islice(records, _TOKENIZE_GROUP)):
        token_ids += document_tokens([text for _, text in group], [doc_id for doc_id, _ in group], tokenizer,
                                     prepend_bos, config, first=len(doc_ids))
        doc_ids += [doc_id for doc_id, _ in group]
        digests += [text_digest(text) for _, text in group]
    if not doc_ids:
        raise DataError(f"text source {config.name!r} holds no documents; point --data.name at some text")
    _check_unique(doc_ids)
    return corpus_of(doc_ids, token_ids, config, np.array(digests, np.uint64))


def text_digest(text: str) -> int:
    """Eight bytes of BLAKE2b of the text's UTF-8: stored per document, so an edited text is noticed."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def document_tokens(texts: list[str], doc_ids: list[str], tokenizer: Any, prepend_bos: bool,
                    config: DocumentsConfig, first: int = 0) -> list[np.ndarray]:
    """Each document's whole token ids (int32), the start token first when ``prepend_bos``."""
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    start = [bos_id(tokenizer)] if prepend_bos else []
    for position, (doc_id, text, ids) in enumerate(zip(doc_ids, texts, encoded), start=first):
        if not text.strip() or not ids:
            raise DataError(f"document {doc_id!r} (number {position}) of {config.name!r} is empty: it has no "
                            "vector; remove it from the text, or lower --data.max_docs to stop before it")
    return [np.asarray([*start, *ids], np.int32) for ids in encoded]


def corpus_of(doc_ids: list[str], token_ids: list[np.ndarray], config: DocumentsConfig,
              digests: np.ndarray | None = None) -> Corpus:
    """The corpus of these documents under the long-document policy (truncate keeps the first tokens)."""
    n_tokens = np.array([len(ids) for ids in token_ids], np.int64)
    if config.long_docs == "truncate":
        token_ids = [ids[:config.max_seq_len] for ids in token_ids]
    digests = np.zeros(len(doc_ids), np.uint64) if digests is None else digests
    return Corpus(tuple(doc_ids), token_ids, n_tokens, digests)


def _check_unique(doc_ids: list[str]) -> None:
    repeated = [doc_id for doc_id, count in collections.Counter(doc_ids).items() if count > 1]
    if repeated:
        raise DataError(f"document id {repeated[0]!r} appears more than once; ids must be unique: fix the id field "
                        "(--data.id_field) or leave it empty to number documents")


def window_starts(n_tokens: int, max_seq_len: int) -> list[int]:
    """The first pooled token of each window: the first window pools ``max_seq_len`` tokens, each later
    one the next ``max_seq_len - context`` after ``context`` tokens of the one before (half a window)."""
    context = max_seq_len // 2
    return [0, *range(max_seq_len, n_tokens, max_seq_len - context)]


def unit_batches(corpus: Corpus, unit: Unit, max_seq_len: int, batch_size: int, pad_id: int) -> Iterator[Batch]:
    """The unit's rows in batches of similar length (longest first: a memory problem shows at once)."""
    rows = [_row(corpus, doc, offset, max_seq_len) for doc in range(unit.start, unit.end)
            for offset in window_starts(len(corpus.token_ids[doc]), max_seq_len)]
    rows.sort(key=lambda row: (-(row.lead + row.length), row.doc, row.offset))
    for first in range(0, len(rows), batch_size):
        yield _batch(corpus, rows[first:first + batch_size], pad_id)


@dataclass(frozen=True)
class _Row:
    doc: int
    offset: int  # first pooled token
    length: int  # tokens pooled
    lead: int  # tokens of context before them


def _row(corpus: Corpus, doc: int, offset: int, max_seq_len: int) -> _Row:
    lead = 0 if offset == 0 else max_seq_len // 2
    length = min(max_seq_len - lead, len(corpus.token_ids[doc]) - offset)
    return _Row(doc, offset, length, lead)


def _batch(corpus: Corpus, rows: list[_Row], pad_id: int) -> Batch:
    pieces = [corpus.token_ids[row.doc][row.offset - row.lead:row.offset + row.length] for row in rows]
    width = max(len(piece) for piece in pieces)
    token_ids = np.full((len(rows), width), pad_id, np.int64)
    attention_mask = np.zeros((len(rows), width), np.int64)
    for index, piece in enumerate(pieces):
        token_ids[index, :len(piece)] = piece
        attention_mask[index, :len(piece)] = 1
    docs = np.array([row.doc for row in rows], np.int64)
    segments = Segments(doc_lengths=np.array([len(corpus.token_ids[doc]) for doc in docs], np.int64),
                        offsets=np.array([row.offset for row in rows], np.int64),
                        lengths=np.array([row.length for row in rows], np.int64),
                        leads=np.array([row.lead for row in rows], np.int64))
    return Batch(docs, token_ids, attention_mask, segments)
