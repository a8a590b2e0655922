"""Per-token metrics: each reduces one token's d-dimensional activation to a scalar.

Computed on the model's device in float32, except the central moments (variance, kurtosis,
skewness): those are accumulated in float64 and rounded to float32 once (docs/store-format.md
states the accuracy of each). To add a metric, write one function of :class:`TokenVectors` and
add one line to ``METRICS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

CHANNEL_METRIC = "channel_wise"
CHANNEL_DEFINITION = "x[c] for k hidden channels c sampled once with a fixed seed (see channel_index)"
EPS32 = float(torch.finfo(torch.float32).eps)
UNRESOLVED_ULPS = 4
"""kurtosis and skewness are NaN where sd <= UNRESOLVED_ULPS * EPS32 * max|x|.

Each float32 activation is the true value rounded by up to EPS32/2 * max|x|. At sd = 4 EPS32 max|x|
that rounding is 1/8 of a standard deviation per channel, enough to move the skewness of a
normal-shaped vector by about 0.4 and its kurtosis by about 2: below it the shape is rounding noise.
"""
CPU_CHUNK_VALUES = 1 << 16
"""On the CPU the moments go through rows of about this many values at a time: their two float64
copies (1 MiB) then stay in a core's L2 cache, 2-3x faster than whole (1024 x 576) batches."""


def _float64(x: torch.Tensor) -> torch.Tensor:
    # MPS has no float64: there the moments are accumulated on the CPU
    return x.to(device="cpu" if x.device.type == "mps" else x.device, dtype=torch.float64)


def _power_sums(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row sums of c^2, c^3, c^4 for c = x - mean(x), in float64 (one centred tensor, one scratch).

    Centred on a float32 mean, which is off by up to eps32 |mean|, a small spread drowns
    (skewness 0.105 instead of 0.121 at offset 1000, sd 0.01) and a constant vector keeps
    one-ulp residues (kurtosis -2 instead of 0/0).
    """
    centred = _float64(x)
    centred -= centred.mean(-1, keepdim=True)  # in place: x - float64 mean would promote, far slower
    power = centred.square()
    sum2 = power.sum(-1)
    sum4 = torch.linalg.vector_norm(power, dim=-1).square()  # no (tokens, d) temporary
    sum3 = power.mul_(centred).sum(-1)  # power is c^3 from here on
    return sum2, sum3, sum4


class TokenVectors:
    """Activations ``x`` of shape (tokens, d) with the intermediates metrics share."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x.float()
        self.d = x.shape[-1]

    @cached_property
    def abs(self) -> torch.Tensor:
        return self.x.abs()

    @cached_property
    def sum_abs(self) -> torch.Tensor:
        return self.abs.sum(-1)

    @cached_property
    def peak(self) -> tuple[torch.Tensor, torch.Tensor]:
        """max|x| and the first channel holding it: one pass gives both (torch.max returns the first)."""
        values, channels = self.abs.max(-1)
        return values, channels

    @property
    def linf(self) -> torch.Tensor:
        return self.peak[0]

    @cached_property
    def squares(self) -> torch.Tensor:
        return self.x.square()

    @cached_property
    def sum_sq(self) -> torch.Tensor:
        return self.squares.sum(-1)

    @cached_property
    def sum_fourth(self) -> torch.Tensor:
        # torch's pairwise sum, not a BLAS dot: that drifts by ~d/32 eps32 on equal terms
        return self.squares.square().sum(-1)

    @cached_property
    def central_moments(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """m2, m3, m4 about the mean, accumulated in float64."""
        rows = max(1, CPU_CHUNK_VALUES // self.d) if self.x.device.type == "cpu" else max(1, len(self.x))
        chunks = [_power_sums(rows_x) for rows_x in self.x.split(rows)]
        m2, m3, m4 = (torch.cat(sums) / self.d for sums in zip(*chunks))
        return m2, m3, m4

    @property
    def m2(self) -> torch.Tensor:
        return self.central_moments[0]

    @cached_property
    def spread_unresolved(self) -> torch.Tensor:
        """Where sd <= UNRESOLVED_ULPS * eps32 * max|x| (constant vectors included)."""
        resolution = UNRESOLVED_ULPS * EPS32 * self.linf.to(self.m2.device, torch.float64)
        return self.m2 <= resolution.square()

    def shape_moment(self, value: torch.Tensor) -> torch.Tensor:
        """A float64 standardised moment as float32 on x's device, NaN where the spread is unresolved."""
        return self.on_device(value.masked_fill(self.spread_unresolved, math.nan))

    def on_device(self, value: torch.Tensor) -> torch.Tensor:
        return value.to(device=self.x.device, dtype=torch.float32)


def rms(v: TokenVectors) -> torch.Tensor:
    return torch.sqrt(v.sum_sq / v.d)


def l2_norm(v: TokenVectors) -> torch.Tensor:
    return torch.sqrt(v.sum_sq)


def l1_norm(v: TokenVectors) -> torch.Tensor:
    return v.sum_abs


def linf_norm(v: TokenVectors) -> torch.Tensor:
    return v.linf


def variance(v: TokenVectors) -> torch.Tensor:
    return v.on_device(v.m2)


def kurtosis(v: TokenVectors) -> torch.Tensor:
    m2, _, m4 = v.central_moments
    return v.shape_moment(m4 / m2.square() - 3.0)


def skewness(v: TokenVectors) -> torch.Tensor:
    m2, m3, _ = v.central_moments
    return v.shape_moment(m3 / m2.pow(1.5))


def entropy(v: TokenVectors) -> torch.Tensor:
    log_p = torch.log_softmax(v.x, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def _sort_rows(x: torch.Tensor) -> torch.Tensor:
    # On the CPU NumPy's sort is about 5x faster than torch.sort for rows of a few hundred values;
    # elsewhere sort where the data already lives.
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy(), axis=-1))
    return torch.sort(x, dim=-1).values


def gini(v: TokenVectors) -> torch.Tensor:
    ascending = _sort_rows(v.abs)
    rank = torch.arange(1, v.d + 1, device=v.x.device, dtype=v.x.dtype)
    weighted = (ascending * (2 * rank - v.d - 1)).sum(-1)
    return weighted / (v.d * v.sum_abs)


def participation_ratio(v: TokenVectors) -> torch.Tensor:
    # the reference tool's definition, kept under its name for existing stores: (l1/l2)^2
    return v.sum_abs.square() / v.sum_sq


def effective_channels(v: TokenVectors) -> torch.Tensor:
    # the literature's participation ratio: 1 / sum(p^2) for the energy shares p = x^2 / sum(x^2)
    return v.sum_sq.square() / v.sum_fourth


def mean_abs(v: TokenVectors) -> torch.Tensor:
    return v.sum_abs / v.d


def max_value(v: TokenVectors) -> torch.Tensor:
    return v.x.amax(-1)


def hoyer(v: TokenVectors) -> torch.Tensor:
    if v.d == 1:  # sqrt(d) - 1 = 0: one channel has no sparsity (tiny x once made this -inf)
        return torch.full_like(v.sum_abs, math.nan)
    root_d = math.sqrt(v.d)
    return (root_d - v.sum_abs / torch.sqrt(v.sum_sq)) / (root_d - 1)


@dataclass(frozen=True)
class Metric:
    compute: Callable[[TokenVectors], torch.Tensor]
    definition: str


METRICS: dict[str, Metric] = {
    "rms": Metric(rms, "sqrt(mean(x^2))"),
    "l2_norm": Metric(l2_norm, "sqrt(sum(x^2))"),
    "l1_norm": Metric(l1_norm, "sum(|x|)"),
    "linf_norm": Metric(linf_norm, "max(|x|)"),
    "variance": Metric(variance, "mean((x - mean(x))^2), population variance, accumulated in float64"),
    "kurtosis": Metric(
        kurtosis,
        "m4 / m2^2 - 3 (excess kurtosis, central moments in float64); NaN where sd <= 4 eps32 max|x|",
    ),
    "skewness": Metric(skewness, "m3 / m2^1.5 (central moments in float64); NaN where sd <= 4 eps32 max|x|"),
    "entropy": Metric(entropy, "-sum(p log p) with p = softmax(x), natural log"),
    "gini": Metric(gini, "Gini coefficient of |x|: sum((2i - d - 1) a_(i)) / (d sum a), a sorted ascending"),
    "participation_ratio": Metric(
        participation_ratio,
        "(sum|x|)^2 / sum(x^2) = (l1/l2)^2, the reference tool's definition (a function of hoyer); "
        "NOT the literature's participation ratio (sum(x^2))^2 / sum(x^4), which is effective_channels",
    ),
    "mean_abs": Metric(mean_abs, "mean(|x|)"),
    "max_value": Metric(max_value, "max(x), signed"),
    "hoyer": Metric(hoyer, "(sqrt(d) - l1/l2) / (sqrt(d) - 1), Hoyer sparsity; NaN for d = 1"),
    "effective_channels": Metric(
        effective_channels,
        "(sum(x^2))^2 / sum(x^4), the literature's participation ratio: the effective number of "
        "channels carrying the energy x^2 (1 for one channel, d for equal |x|)",
    ),
}


def compute_metrics(x: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    """(n_metrics, tokens) float32 for activations ``x`` of shape (..., d)."""
    return compute_statistics(x, names)[0]


def compute_statistics(x: torch.Tensor, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The metrics (n_metrics, tokens) float32 and ``argmax_channel`` (tokens,) int32 of ``x`` (..., d).

    The peak's channel comes from the same pass as ``linf_norm``: the k sampled channels of
    ``channel_wise`` usually miss the one channel that carries a massive activation.
    """
    vectors = TokenVectors(x.reshape(-1, x.shape[-1]))
    metrics = torch.stack([METRICS[name].compute(vectors) for name in names])
    return metrics, vectors.peak[1].to(torch.int32)


def definitions(names: Sequence[str]) -> dict[str, str]:
    return {name: METRICS[name].definition for name in names}
