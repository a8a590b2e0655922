"""The texts of a super-weight build: calibration rows, the perplexity text, router-analysis texts.

All come from ``--data`` (the bundled text offline; WikiText-2 is ``--data.name wikitext
--data.subset wikitext-2-raw-v1 --data.split test``), read in its order, so every model of
a run, and every rerun, sees the same text.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from builders._config import TextSourceConfig
from builders._packing import iter_rows, token_documents
from builders._superweight_configs import SuperweightsConfig
from builders._text import iter_documents
from builders.errors import DataError
from store.errors import ConfigError


def calibration_rows(config: SuperweightsConfig, tokenizer: Any) -> list[np.ndarray]:
    """Rows for detection: --detect.prompt, or the source packed into rows of detect.seq_len."""
    if config.detect.prompt:
        return [np.asarray(tokenizer(config.detect.prompt)["input_ids"], np.int64)]
    n_rows = max(1, config.detect.calibration_tokens // config.detect.seq_len)
    rows = [row for row, _ in itertools.islice(iter_rows(iter_documents(config.data), tokenizer, config.detect.seq_len), n_rows)]
    if not rows:
        raise DataError(f"text {config.data.name!r} has fewer than detect.seq_len ({config.detect.seq_len}) tokens "
                        "for calibration; point --data.name at more text or lower --detect.seq_len")
    return rows


def leading_tokens(data: TextSourceConfig, tokenizer: Any, max_tokens: int, max_records: int | None = None) -> np.ndarray:
    """The source's first records (at most ``max_records``), each followed by EOS: their first ``max_tokens`` tokens."""
    documents = itertools.islice(iter_documents(data), max_records)
    tokens: list[int] = []
    for _, token_ids in token_documents(documents, tokenizer):
        tokens.extend(token_ids)
        if len(tokens) >= max_tokens:
            break
    return np.asarray(tokens[:max_tokens], np.int64)


def perplexity_tokens(config: SuperweightsConfig, tokenizer: Any) -> np.ndarray:
    """The first perplexity.samples records, each followed by EOS, at most perplexity.max_tokens tokens."""
    token_ids = leading_tokens(config.data, tokenizer, config.perplexity.max_tokens, config.perplexity.samples)
    if len(token_ids) < config.perplexity.window_len:
        raise ConfigError(f"perplexity.window_len ({config.perplexity.window_len}) is longer than the text "
                          f"({len(token_ids)} tokens of {config.data.name!r} from {config.perplexity.samples} records); "
                          f"pass --perplexity.window_len {max(len(token_ids), 2)} or less, or more text")
    return token_ids


def router_texts(config: SuperweightsConfig, tokenizer: Any) -> list[np.ndarray]:
    """moe.router_samples texts of at most detect.seq_len tokens each, one forward pass each."""
    texts = []
    for _, token_ids in token_documents(iter_documents(config.data), tokenizer):
        texts.append(np.asarray(token_ids[:config.detect.seq_len], np.int64))
        if len(texts) == config.moe.router_samples:
            break
    return texts
