"""Token classes over a vocabulary, and how enriched a neuron's top tokens are in each class.

Used by the neuron cards of the super-weight vocabulary analyses: which kinds of tokens a neuron's
output direction promotes. Each class is a rule on one decoded token string ``text``, with
``stripped = text.strip()``; a token may belong to several classes or to none:

- ``digits_years``: ``stripped`` is non-empty and all ASCII digits (numbers and years alike, so
  " 2020" and "7" qualify; other scripts' digits do not).
- ``punctuation_brackets``: ``stripped`` is non-empty and every character is Unicode punctuation
  (category P*): brackets, quotes, commas, periods, "_". Symbols of category S* ("=", "+", "<", "$")
  are not punctuation.
- ``function_words``: ``stripped.lower()`` is in ``FUNCTION_WORDS`` (English stopwords).
- ``capitalised``: ``stripped`` is letters only, an uppercase letter followed by one or more
  lowercase ones (" Paris", "The"; not "USA", not "A"). Overlaps ``function_words`` ("The").
- ``whitespace``: ``text`` is non-empty and only whitespace (spaces, newlines, tabs).
- ``code_symbols``: ``stripped`` is non-empty, every character is in ``_CODE_CHARS`` and at least
  one is in ``_CODE_OPERATOR_CHARS`` (operators and braces), so "==", "->", "!=", "{}" and ";"
  qualify while a plain "." or "," is punctuation but not code. "::" has no operator character
  (a lone ":" is prose punctuation), so the multi-character operators in ``_CODE_TOKENS`` are
  listed explicitly ("::", "?.").

Enrichment of a class among a neuron's top tokens ``top_ids``, with ``n_top = len(top_ids)``,
``k`` the class members among ``top_ids``, ``K`` the class members in the whole vocabulary and
``V`` the vocabulary size::

    p0 = (K + 0.5) / (V + 1)                       # the class's share of the vocabulary
    score = log2( ((k + p0) / (n_top + 1)) / p0 )   # its share among the top tokens, over p0

the log2 ratio of the class's share among the top tokens to its share of the vocabulary. The top
share counts one more token drawn at the vocabulary's rate (``k + p0`` of ``n_top + 1``), which
pulls small samples towards 0 and keeps every score finite: a class with no member among the top
tokens always scores ``log2(1 / (n_top + 1))``, below 0, however rare it is in the vocabulary
(add-half counts on both shares instead gave a rare class with no member a large positive score).
0 means as common as in the vocabulary, 1 twice as common, -1 half as common.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

TOKEN_CLASSES: tuple[str, ...] = (
    "digits_years",
    "punctuation_brackets",
    "function_words",
    "capitalised",
    "whitespace",
    "code_symbols",
)

# Written out rather than taken from nltk/sklearn so the classes do not change with a dependency.
_FUNCTION_WORDS_TEXT = """
    a an the this that these those some any each every no all both either neither another such
    i me my mine myself you your yours yourself yourselves he him his himself she her hers herself
    it its itself we us our ours ourselves they them their theirs themselves one
    who whom whose which what whatever whoever when where why how whether
    of in on at to from by with without for about against between into through during before after
    above below up down out off over under upon within along across behind beyond toward towards
    among around near than like via per
    and or but nor so yet if because although though while unless until since as then else also
    is am are was were be been being have has had having do does did doing done
    will would shall should can could may might must ought
    not only just very too quite rather more most less least much many few own same other
    here there now again once ever never always often still already even
"""
FUNCTION_WORDS: frozenset[str] = frozenset(_FUNCTION_WORDS_TEXT.split())

_DIGITS = re.compile(r"[0-9]+")
# Every character of a code token comes from here; at least one from the operator set below.
_CODE_CHARS = frozenset("{}[]()<>;:=+-*/\\|&^%$#@~`_!?.,'\"")
_CODE_OPERATOR_CHARS = frozenset("{}<>;=+*/\\|&^%$#@~`_")
# Operators made only of non-operator characters, so the character rule misses them.
_CODE_TOKENS = frozenset({"::", "?."})


def _is_digits(stripped: str) -> bool:
    """ASCII digits only (``str.isdigit`` would also accept other scripts' digits and superscripts)."""
    return _DIGITS.fullmatch(stripped) is not None


def _is_punctuation(stripped: str) -> bool:
    """Non-empty and every character of a Unicode punctuation category (P*)."""
    return bool(stripped) and all(unicodedata.category(char).startswith("P") for char in stripped)


def _is_capitalised(stripped: str) -> bool:
    """An uppercase letter followed by one or more lowercase letters, nothing else."""
    return len(stripped) >= 2 and stripped.isalpha() and stripped[0].isupper() and stripped[1:].islower()


def _is_whitespace(text: str) -> bool:
    """Non-empty and nothing but whitespace (tested on the unstripped text, which is all there is)."""
    return bool(text) and text.strip() == ""


def _is_code(stripped: str) -> bool:
    """Operator and brace characters, with at least one that prose punctuation never uses."""
    if stripped in _CODE_TOKENS:
        return True
    chars = set(stripped)
    return bool(chars) and chars <= _CODE_CHARS and bool(chars & _CODE_OPERATOR_CHARS)


def token_classes(text: str) -> set[str]:
    """The classes of one decoded token string (a token may be in several or none)."""
    stripped = text.strip()
    memberships = {
        "digits_years": _is_digits(stripped),
        "punctuation_brackets": _is_punctuation(stripped),
        "function_words": stripped.lower() in FUNCTION_WORDS,
        "capitalised": _is_capitalised(stripped),
        "whitespace": _is_whitespace(text),
        "code_symbols": _is_code(stripped),
    }
    return {token_class for token_class, member in memberships.items() if member}


def class_masks(decoded: list[str]) -> dict[str, np.ndarray]:
    """Class -> boolean mask over the vocabulary (index = token id), for every class in TOKEN_CLASSES."""
    masks = {token_class: np.zeros(len(decoded), dtype=bool) for token_class in TOKEN_CLASSES}
    for token_id, text in enumerate(decoded):
        for token_class in token_classes(text):
            masks[token_class][token_id] = True
    return masks


def stopword_mask(decoded: list[str]) -> np.ndarray:
    """True for the token ids whose decoded text, stripped and lowercased, is in FUNCTION_WORDS (for stopword mass)."""
    return np.array([text.strip().lower() in FUNCTION_WORDS for text in decoded], dtype=bool)


@dataclass(frozen=True)
class Enrichment:
    """How over-represented one token class is among a neuron's top tokens."""

    token_class: str
    score: float  # log2 enrichment, see the module docstring
    count: int  # class members among the top tokens
    examples: tuple[str, ...]  # decoded strings of those members, in rank order, at most n_examples


def _check_top_ids(top_ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """top_ids as a flat int64 array, after checking it is non-empty and within the vocabulary."""
    ids = np.asarray(top_ids, dtype=np.int64).reshape(-1)
    if ids.size == 0:
        raise ValueError(f"top_ids is empty: enrichment needs at least one top token (got {top_ids!r})")
    bad = ids[(ids < 0) | (ids >= vocab_size)]
    if bad.size:
        raise ValueError(f"top_ids has ids outside the vocabulary [0, {vocab_size}): {bad.tolist()!r}")
    return ids


def _log2_enrichment(k: int, n_top: int, class_size: int, vocab_size: int) -> float:
    """log2 of the share among the top tokens (one pseudo-token at the vocabulary's rate) over the vocabulary's."""
    vocab_share = (class_size + 0.5) / (vocab_size + 1)
    top_share = (k + vocab_share) / (n_top + 1)
    return float(np.log2(top_share / vocab_share))


def enrichment(
    top_ids: np.ndarray, masks: dict[str, np.ndarray], decoded: list[str], n_examples: int = 5
) -> list[Enrichment]:
    """One Enrichment per class in TOKEN_CLASSES order: how over-represented the class is among top_ids
    (a neuron's top tokens) compared with the whole vocabulary."""
    vocab_size = len(decoded)
    ids = _check_top_ids(top_ids, vocab_size)
    results = []
    for token_class in TOKEN_CLASSES:
        mask = masks[token_class]
        members = ids[mask[ids]]
        score = _log2_enrichment(int(members.size), int(ids.size), int(mask.sum()), vocab_size)
        examples = tuple(decoded[token_id] for token_id in members[:n_examples])
        results.append(Enrichment(token_class, score, int(members.size), examples))
    return results
