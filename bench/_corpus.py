"""Enough real text for a benchmark of N tokens: Python's own documentation, repeated.

The tiny models of tests/tiny_models.py tokenise bytes, so the bundled corpus (about 466,000
tokens) alone would end a 1,000,000-token build early; repeating it keeps every token real text.
"""

from __future__ import annotations

from pathlib import Path


def write_corpus(folder: Path, tokens: int) -> Path:
    """A .txt file in ``folder`` of at least ``tokens`` bytes (one paragraph per document)."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics.values())
    path = folder / "corpus.txt"
    path.write_text("\n\n".join([text] * (tokens // len(text.encode()) + 2)))
    return path
