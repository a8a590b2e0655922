"""Every metric against a float64 NumPy reference, on normal and heavy-tailed activations.

Also the regressions: moments of constant and offset vectors (float32 centring), and the two
participation ratios. The hypothesis property tests are in test_metrics_properties.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from builders._cli import parse_config
from builders._config import CollectConfig, StatsConfig
from builders._metrics import METRICS, compute_metrics, definitions

EPS32 = float(np.finfo(np.float32).eps)


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
    "effective_channels": lambda x: (x**2).sum(-1) ** 2 / (x**4).sum(-1),
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


EXISTING_DEFAULTS = ["rms", "l2_norm", "l1_norm", "linf_norm", "variance", "kurtosis", "skewness", "entropy",
                     "gini", "participation_ratio", "mean_abs", "max_value", "hoyer", "channel_wise"]


def test_registry_matches_reference_set() -> None:
    assert set(METRICS) == set(REFERENCE)
    assert len(METRICS) == 14  # 13 by default plus the opt-in effective_channels


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


@pytest.mark.parametrize("level", [0.1, -3.7, 1000.1, 3.3e-6, 30000.7])
def test_rounded_constant_vector_gives_nan_moments_and_zero_variance(level: float) -> None:
    # float32 centring left one-ulp residues here: kurtosis -2.0 and skewness +-1.0 instead of NaN
    x = torch.full((2, 576), level)
    kurtosis, skewness, variance = compute_metrics(x, ["kurtosis", "skewness", "variance"])
    assert torch.isnan(kurtosis).all() and torch.isnan(skewness).all()
    assert (variance == 0).all()


@pytest.mark.parametrize("offset", [1000.0, -1000.0, 1e4])
def test_moments_with_large_common_offset_match_scipy(offset: float) -> None:
    # float32 centring gave skewness -0.187 against SciPy's -0.165 at offset 1000, sd 0.01
    x = (offset + 0.01 * np.random.default_rng(0).standard_normal((4, 576))).astype(np.float32)
    ours = compute_metrics(torch.from_numpy(x), ["kurtosis", "skewness", "variance"]).numpy()
    x64 = x.astype(np.float64)
    expected = [scipy.stats.kurtosis(x64, -1), scipy.stats.skew(x64, -1), x64.var(-1)]
    # one float32 rounding of a float64 result (these vectors are well conditioned)
    np.testing.assert_allclose(ours, np.array(expected), rtol=EPS32, atol=1e-6 * EPS32)


def test_spread_at_float32_resolution_gives_nan_moments() -> None:
    ulp = float(np.spacing(np.float32(1000.0)))
    flicker = np.full(576, 1000.0, np.float32)
    flicker[::7] += ulp  # one-ulp rounding noise: sd is far below 4 eps32 max|x|
    resolved = (1000.0 + 64 * ulp * np.random.default_rng(1).standard_normal(576)).astype(np.float32)
    out = compute_metrics(torch.from_numpy(np.stack([flicker, resolved])), ["kurtosis", "skewness"])
    assert torch.isnan(out[:, 0]).all()
    assert torch.isfinite(out[:, 1]).all()


def test_hoyer_of_a_single_channel_is_nan() -> None:
    # sqrt(d) - 1 = 0: sparsity of one channel is undefined; tiny values once gave -inf here
    out = compute_metrics(torch.tensor([[2.0], [-1e-30], [0.0]]), ["hoyer"])
    assert torch.isnan(out).all()


def test_effective_channels_is_the_literature_participation_ratio() -> None:
    x = torch.tensor([[3.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, -5.0, 0.0, 0.0]])
    effective, legacy = compute_metrics(x, ["effective_channels", "participation_ratio"])
    np.testing.assert_allclose(effective.numpy(), [100 / 82, 4.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(legacy.numpy(), [16 / 10, 4.0, 1.0], rtol=1e-6)


def test_participation_ratio_is_l1_over_l2_squared_and_says_so() -> None:
    x = torch.from_numpy(_activations("student_t")[:8].astype(np.float32))
    legacy, l1, l2 = compute_metrics(x, ["participation_ratio", "l1_norm", "l2_norm"])
    np.testing.assert_allclose(legacy.numpy(), ((l1 / l2) ** 2).numpy(), rtol=1e-5)
    text = definitions(["participation_ratio"])["participation_ratio"]
    assert "(l1/l2)^2" in text and "NOT" in text and "effective_channels" in text
    assert "(sum(x^2))^2 / sum(x^4)" in definitions(["effective_channels"])["effective_channels"]


def test_effective_channels_is_opt_in() -> None:
    # the default stays the 13 + channel_wise that existing stores were built with
    assert StatsConfig().metrics == EXISTING_DEFAULTS
    assert StatsConfig(metrics=["rms", "effective_channels"]).scalar_metrics == ["rms", "effective_channels"]


def test_metrics_help_explains_both_participation_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_config(CollectConfig, ["--help"], "collect", "")
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(l1/l2)^2" in out and "effective_channels" in out and "not in the default" in out
