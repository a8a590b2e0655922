"""Every metric against a float64 NumPy reference, on normal and heavy-tailed activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from builders._metrics import METRICS, compute_metrics


def _moments(x: np.ndarray, order: int) -> np.ndarray:
    return ((x - x.mean(-1, keepdims=True)) ** order).mean(-1)


def _gini(x: np.ndarray) -> np.ndarray:
    a = np.sort(np.abs(x), axis=-1)
    d = a.shape[-1]
    rank = np.arange(1, d + 1)
    return ((2 * rank - d - 1) * a).sum(-1) / (d * a.sum(-1))


def _entropy(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -(np.exp(log_p) * log_p).sum(-1)


REFERENCE = {
    "rms": lambda x: np.sqrt((x**2).mean(-1)),
    "l2_norm": lambda x: np.sqrt((x**2).sum(-1)),
    "l1_norm": lambda x: np.abs(x).sum(-1),
    "linf_norm": lambda x: np.abs(x).max(-1),
    "variance": lambda x: x.var(-1),
    "kurtosis": lambda x: _moments(x, 4) / _moments(x, 2) ** 2 - 3,
    "skewness": lambda x: _moments(x, 3) / _moments(x, 2) ** 1.5,
    "entropy": _entropy,
    "gini": _gini,
    "participation_ratio": lambda x: np.abs(x).sum(-1) ** 2 / (x**2).sum(-1),
    "mean_abs": lambda x: np.abs(x).mean(-1),
    "max_value": lambda x: x.max(-1),
    "hoyer": lambda x: (np.sqrt(x.shape[-1]) - np.abs(x).sum(-1) / np.sqrt((x**2).sum(-1)))
    / (np.sqrt(x.shape[-1]) - 1),
}


def _activations(kind: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if kind == "normal":
        return rng.normal(0.0, 1.0, size=(256, 576))
    if kind == "student_t":
        return rng.standard_t(2.5, size=(256, 576))
    # massive activations: a few channels hundreds of times larger than the rest
    x = rng.normal(0.0, 0.5, size=(256, 576))
    x[:, [3, 77]] += rng.choice([-1, 1], size=(256, 2)) * rng.pareto(1.5, size=(256, 2)) * 300
    return x


def test_registry_matches_reference_set() -> None:
    assert set(METRICS) == set(REFERENCE)
    assert len(METRICS) + 1 == 14  # plus channel_wise, stored in channel_value


@pytest.mark.parametrize("kind", ["normal", "student_t", "massive"])
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_metric_matches_float64_reference(name: str, kind: str) -> None:
    x = _activations(kind)
    ours = compute_metrics(torch.tensor(x, dtype=torch.float32), [name])[0].numpy()
    expected = REFERENCE[name](x.astype(np.float32).astype(np.float64))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, rtol=2e-4, atol=2e-5)


def test_metrics_keep_leading_shape_and_order() -> None:
    x = torch.randn(2, 5, 16)
    out = compute_metrics(x, ["rms", "max_value"])
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out[1].numpy(), x.reshape(10, 16).amax(-1).numpy())


def test_constant_vector_gives_nan_not_error() -> None:
    out = compute_metrics(torch.ones(3, 8), ["kurtosis", "skewness"])
    assert torch.isnan(out).all()
