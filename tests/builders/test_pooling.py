"""Pooling weights and pooled vectors against direct NumPy formulas (docs/vectors.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from builders._pooling import (
    LONG_DEPTHS,
    Segments,
    combine,
    default_layers,
    pool,
    pooling_weights,
    segment_weights,
)


def _direct_weights(n: int, depth: float) -> np.ndarray:
    raw = np.array([math.exp(-(n - 1 - i) / (depth * n)) for i in range(n)])
    return raw / raw.sum()


@pytest.mark.parametrize("n", [1, 2, 3, 17, 500])
@pytest.mark.parametrize("depth", [0.023, 0.067, 0.159, 1.0])
def test_weights_are_the_documented_formula_and_zero_past_the_length(n: int, depth: float) -> None:
    weights = pooling_weights(np.array([n, 1]), n + 3, depth)
    np.testing.assert_allclose(weights[0, :n], _direct_weights(n, depth), rtol=1e-12)
    assert (weights[0, n:] == 0).all() and weights[1].tolist() == [1.0] + [0.0] * (n + 2)


def test_two_tokens_at_the_short_depth() -> None:
    np.testing.assert_allclose(pooling_weights(np.array([2]), 2, 0.067)[0], [0.000574, 0.999426], atol=1e-6)


def test_a_non_positive_depth_is_refused() -> None:
    with pytest.raises(ValueError, match="above 0"):
        pooling_weights(np.array([3]), 3, 0.0)


def test_padding_never_enters_a_pooled_vector() -> None:
    rng = np.random.default_rng(0)
    documents = [rng.standard_normal((n, 8)).astype(np.float32) for n in (5, 2, 9)]
    padded = np.zeros((3, 9, 8), np.float32) + 1e6  # huge padding: any leak would show
    for row, document in enumerate(documents):
        padded[row, :len(document)] = document
    batch = pool(torch.from_numpy(padded), Segments.whole([5, 2, 9]), LONG_DEPTHS, last_token=True)
    for row, document in enumerate(documents):
        alone = pool(torch.from_numpy(document[None]), Segments.whole([len(document)]), LONG_DEPTHS, last_token=True)
        np.testing.assert_allclose(batch[row].numpy(), alone[0].numpy(), rtol=1e-6, atol=1e-6)
    assert batch.shape == (3, 4 * 8)


@pytest.mark.parametrize(("n_layers", "expected"), [(36, [25, 26, 27]), (30, [21, 22, 23]), (6, [3, 4, 5]),
                                                      (2, [0, 1])])
def test_default_layers_keep_pythia_12b_relative_depth(n_layers: int, expected: list[int]) -> None:
    assert default_layers(n_layers) == expected


@pytest.mark.parametrize("n", [1, 2, 7, 100_000])
def test_the_closed_form_normaliser_matches_the_direct_sum(n: int) -> None:
    weights = segment_weights(Segments.whole([n]), n, 0.067)[0]
    assert math.isclose(weights.sum(), 1.0, rel_tol=1e-12)
    assert math.isclose(weights[-1] / weights[max(0, n - 2)], 1.0 if n == 1 else math.exp(1 / (0.067 * n)),
                        rel_tol=1e-9)


def test_windows_sum_to_the_whole_document() -> None:
    """Three windows of a 10-token document pool exactly as the document in one row."""
    rng = np.random.default_rng(1)
    document = rng.standard_normal((10, 6)).astype(np.float32)
    whole = pool(torch.from_numpy(document[None]), Segments.whole([10]), LONG_DEPTHS, last_token=True)[0].numpy()
    windows = np.zeros((3, 4, 6), np.float32)
    for row, start in enumerate((0, 4, 8)):
        piece = document[start:start + 4]
        windows[row, :len(piece)] = piece
    segments = Segments(doc_lengths=np.array([10, 10, 10]), offsets=np.array([0, 4, 8]), lengths=np.array([4, 4, 2]),
                        leads=np.zeros(3, np.int64))
    parts = pool(torch.from_numpy(windows), segments, LONG_DEPTHS, last_token=True).numpy()
    np.testing.assert_allclose(combine(list(parts)), whole, rtol=1e-6, atol=1e-7)
    assert (parts[:2, :6] == 0).all()  # only the window holding the last token gives the last-token part


def test_context_tokens_are_run_but_never_pooled() -> None:
    """A row of 2 context tokens then 3 pooled ones weighs only the 3, by their place in the document."""
    rng = np.random.default_rng(2)
    document = rng.standard_normal((8, 5)).astype(np.float32)
    whole = pool(torch.from_numpy(document[None]), Segments.whole([8]), LONG_DEPTHS, last_token=True)[0].numpy()
    first = Segments(np.array([8]), np.array([0]), np.array([5]), np.array([0]))
    second = Segments(np.array([8]), np.array([5]), np.array([3]), np.array([2]))  # tokens 3, 4 as context
    parts = [pool(torch.from_numpy(document[None, :5]), first, LONG_DEPTHS, last_token=True)[0].numpy(),
             pool(torch.from_numpy(document[None, 3:8]), second, LONG_DEPTHS, last_token=True)[0].numpy()]
    np.testing.assert_allclose(combine(parts), whole, rtol=1e-6, atol=1e-7)
