"""Token classes and enrichment (builders/_vocab_classes.py) on a hand-built vocabulary.

The expected id sets and scores are written out by hand from the class definitions, not recomputed
with the module's own rules.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from builders._vocab_classes import TOKEN_CLASSES, Enrichment, class_masks, enrichment, stopword_mask

# fmt: off
VOCAB: list[str] = [
    " the", "The", " Paris", "1999", " 2020", "(", ")", "{", "==", "\n",      # 0-9
    "  ", ",", ".", " cat", "ing", "->", " not", " 42", "\t", " London",      # 10-19
    " of", ";", "_", "!=", " USA", "x2", " and", "::", "\u0663", "",          # 20-29
    "It", '"', "...",                                                          # 30-32
]
# fmt: on
V = len(VOCAB)  # 33

EXPECTED = {
    "digits_years": {3, 4, 17},  # "\u0663" (Arabic-Indic three) is not an ASCII digit
    "punctuation_brackets": {5, 6, 7, 11, 12, 21, 22, 27, 31, 32},  # "_" is Pc; "=", ">" are symbols
    "function_words": {0, 1, 16, 20, 26, 30},
    "capitalised": {1, 2, 19, 30},  # not " USA"
    "whitespace": {9, 10, 18},
    "code_symbols": {7, 8, 15, 21, 22, 23, 27},  # not "(", ",", ".", '"', "..."
}


def _by_class(top_ids: list[int], n_examples: int = 5) -> dict[str, Enrichment]:
    results = enrichment(np.array(top_ids), class_masks(VOCAB), VOCAB, n_examples=n_examples)
    assert [result.token_class for result in results] == list(TOKEN_CLASSES)
    return {result.token_class: result for result in results}


def test_vocabulary_size() -> None:
    assert V == 33


@pytest.mark.parametrize("token_class", TOKEN_CLASSES)
def test_class_mask_matches_hand_expected_ids(token_class: str) -> None:
    mask = class_masks(VOCAB)[token_class]
    assert mask.dtype == bool and mask.shape == (V,)
    assert set(np.flatnonzero(mask).tolist()) == EXPECTED[token_class]


def test_stopword_mask() -> None:
    mask = stopword_mask(VOCAB)
    assert mask[0] and mask[16]  # " the", " not"
    assert not mask[13]  # " cat"
    assert set(np.flatnonzero(mask).tolist()) == {0, 1, 16, 20, 26, 30}


def test_all_digit_top_set_scores_by_hand() -> None:
    results = _by_class([3, 4, 17])
    # n_top = 3, k = 3, K = 3, V = 33, p0 = 3.5 / 34: log2(((3 + p0) / 4) / p0) = log2((102 + 3.5) / (4 * 3.5))
    assert results["digits_years"].score == pytest.approx(math.log2(105.5 / 14))
    assert results["digits_years"].score == pytest.approx(2.913744266649581)
    assert results["digits_years"].count == 3
    assert results["digits_years"].examples == ("1999", " 2020", " 42")


def test_absent_class_scores_negative_and_finite() -> None:
    results = _by_class([3, 4, 17])
    punctuation = results["punctuation_brackets"]
    # k = 0: log2((p0 / 4) / p0) = log2(1 / 4), whatever K
    assert punctuation.score == pytest.approx(-2.0)
    assert punctuation.count == 0 and punctuation.examples == ()


def test_mixed_top_set_scores_by_hand() -> None:
    results = _by_class([9, 0, 13, 18])
    # whitespace: n_top = 4, k = 2, K = 3, p0 = 3.5 / 34: log2(((2 + p0) / 5) / p0) = log2((68 + 3.5) / (5 * 3.5))
    assert results["whitespace"].score == pytest.approx(math.log2(71.5 / 17.5))
    assert results["whitespace"].examples == ("\n", "\t")
    # function_words: k = 1, K = 6, p0 = 6.5 / 34: log2(((1 + p0) / 5) / p0) = log2((34 + 6.5) / (5 * 6.5))
    assert results["function_words"].score == pytest.approx(math.log2(40.5 / 32.5))


def test_examples_in_top_order_and_capped() -> None:
    code = _by_class([22, 7, 21, 0, 8, 15, 23], n_examples=3)["code_symbols"]
    assert code.count == 6
    assert code.examples == ("_", "{", ";")
    assert _by_class([23, 8], n_examples=5)["code_symbols"].examples == ("!=", "==")


@pytest.mark.parametrize("top_ids", [[], [0, 33], [-1, 2]])
def test_bad_top_ids_raise(top_ids: list[int]) -> None:
    with pytest.raises(ValueError, match="top_ids"):
        enrichment(np.array(top_ids, dtype=np.int64), class_masks(VOCAB), VOCAB)


def test_a_rare_class_absent_from_the_top_tokens_scores_below_zero() -> None:
    """With add-half counts on both shares, a class of 2 tokens in 50,000 and none among 100 top tokens scored
    +6.6 (enriched); one pseudo-token at the vocabulary's rate gives log2(1 / 101)."""
    decoded = ["7", "8"] + [f" word{index}" for index in range(49_998)]
    masks = class_masks(decoded)
    results = {found.token_class: found for found in enrichment(np.arange(2, 102), masks, decoded)}
    assert results["digits_years"].count == 0
    assert results["digits_years"].score == pytest.approx(math.log2(1 / 101))
