"""Property tests: every metric against a float64 NumPy/SciPy reference on adversarial float32 vectors.

The reference is computed in float64 from the same float32 input, so every tolerance below is the
error of our float32-on-device computation alone (docs/store-format.md states them):

- max-type metrics are exact; sums of non-negative terms are within (log2 d + 4) eps32 relative
  (pairwise summation); ratios of such sums within twice that;
- gini, hoyer and entropy cancel (signed weights, sqrt(d) - l1/l2, p log p): absolute bounds;
- variance, kurtosis and skewness are accumulated in float64 and rounded once: eps32 relative plus
  float64 rounding amplified by the conditioning max|x|/sd and max|x - mean|/sd;
- kurtosis and skewness are NaN exactly when sd <= 4 eps32 max|x| (spread at float32 resolution).

``METRICS_PROPERTY_EXAMPLES=5000 python -m pytest tests/builders/test_metrics_properties.py`` explores
further than the default, which keeps the file to about 10 s.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable

import numpy as np
import scipy.special
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from builders._metrics import METRICS, compute_metrics

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)
UNRESOLVED_ULPS = 4  # the documented NaN rule: sd <= 4 eps32 max|x|
MASSIVE = 3e4  # massive activations reach tens of thousands
TINY = float(np.float32(1e-6))
EXAMPLES = int(os.environ.get("METRICS_PROPERTY_EXAMPLES", "150"))
EXPLORE = settings(max_examples=EXAMPLES, deadline=None)

# ---- vectors -----------------------------------------------------------------------------------

dims = st.integers(1, 600)


def nonzero(low: float, high: float) -> st.SearchStrategy[float]:
    magnitude = st.floats(float(np.float32(low)), float(np.float32(high)), width=32)
    return st.one_of(magnitude, magnitude.map(lambda value: -value))


def signed(low: float, high: float) -> st.SearchStrategy[float]:
    return st.one_of(st.just(0.0), nonzero(low, high))


@st.composite
def raw_vectors(draw: st.DrawFn) -> np.ndarray:
    """Anything from 1e-6 to 3e4 in size, zeros and many repeats (hypothesis fills arrays)."""
    return draw(arrays(np.float32, draw(dims), elements=signed(TINY, MASSIVE)))


@st.composite
def offset_vectors(draw: st.DrawFn) -> np.ndarray:
    """A large common offset (up to +-1000) with a spread down to sd 0.01: float32 centring fails."""
    d = draw(dims)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = rng.standard_normal(d) if draw(st.booleans()) else rng.standard_t(3.0, d)
    offset, scale = draw(st.floats(-1000, 1000)), draw(st.floats(0.01, 10))
    return (offset + scale * shape).astype(np.float32)


@st.composite
def constant_vectors(draw: st.DrawFn) -> np.ndarray:
    return np.full(draw(dims), draw(signed(TINY, MASSIVE)), np.float32)


@st.composite
def flicker_vectors(draw: st.DrawFn) -> np.ndarray:
    """A level plus up to 12 ulps of rounding noise: vectors on both sides of the NaN rule."""
    level = np.float32(draw(nonzero(TINY, MASSIVE)))
    steps = draw(arrays(np.int32, draw(dims), elements=st.integers(-12, 12)))
    return (level + steps * np.spacing(level)).astype(np.float32)


@st.composite
def tiny_vectors(draw: st.DrawFn) -> np.ndarray:
    small = draw(arrays(np.float64, draw(dims), elements=signed(1e-3, 10)))
    return (1e-6 * small).astype(np.float32)


@st.composite
def outlier_vectors(draw: st.DrawFn) -> np.ndarray:
    """Unit-scale channels and one massive activation."""
    d = draw(dims)
    x = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(d)
    x[draw(st.integers(0, d - 1))] = draw(st.sampled_from([-1, 1])) * draw(st.floats(1e3, MASSIVE))
    return x.astype(np.float32)


vectors = st.one_of(
    raw_vectors(), offset_vectors(), constant_vectors(), flicker_vectors(), tiny_vectors(), outlier_vectors()
)

# ---- float64 references --------------------------------------------------------------------------


def _unresolved(x: np.ndarray) -> bool:
    """The documented NaN rule for kurtosis and skewness, in float64."""
    return bool(x.var() <= (UNRESOLVED_ULPS * EPS32 * np.abs(x).max()) ** 2)


def _near_rule_boundary(x: np.ndarray) -> bool:
    limit = (UNRESOLVED_ULPS * EPS32 * np.abs(x).max()) ** 2
    return limit > 0 and abs(x.var() / limit - 1) < 1e-6


def _standardised(moment: Callable[[np.ndarray], float]) -> Callable[[np.ndarray], float]:
    def reference(x: np.ndarray) -> float:
        if _unresolved(x):
            return math.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # SciPy's own precision-loss notice
            return float(moment(x))

    return reference


def _gini(x: np.ndarray) -> float:
    a = np.sort(np.abs(x))
    d = len(a)
    return float(((2 * np.arange(1, d + 1) - d - 1) * a).sum() / (d * a.sum()))


def _hoyer(x: np.ndarray) -> float:
    if len(x) == 1:
        return math.nan  # documented: sqrt(d) - 1 = 0
    root_d = math.sqrt(len(x))
    return float((root_d - np.abs(x).sum() / np.sqrt((x**2).sum())) / (root_d - 1))


REFERENCE: dict[str, Callable[[np.ndarray], float]] = {
    "rms": lambda x: float(np.sqrt((x**2).mean())),
    "l2_norm": lambda x: float(np.sqrt((x**2).sum())),
    "l1_norm": lambda x: float(np.abs(x).sum()),
    "linf_norm": lambda x: float(np.abs(x).max()),
    "variance": lambda x: float(x.var()),
    "kurtosis": _standardised(lambda x: scipy.stats.kurtosis(x, fisher=True, bias=True)),
    "skewness": _standardised(lambda x: scipy.stats.skew(x, bias=True)),
    "entropy": lambda x: float(scipy.stats.entropy(scipy.special.softmax(x))),
    "gini": _gini,
    "participation_ratio": lambda x: float(np.abs(x).sum() ** 2 / (x**2).sum()),
    "effective_channels": lambda x: float((x**2).sum() ** 2 / (x**4).sum()),
    "mean_abs": lambda x: float(np.abs(x).mean()),
    "max_value": lambda x: float(x.max()),
    "hoyer": _hoyer,
}

# ---- tolerances: the largest |ours - reference| allowed, for the float64 copy x of the input ------


def _summed(x: np.ndarray) -> float:
    """Relative error of a float32 pairwise sum of d non-negative terms (and a square or sqrt)."""
    return (math.log2(len(x)) + 4) * EPS32


def _conditioning(x: np.ndarray, order: int) -> float:
    """Float64 rounding of a standardised moment, amplified by how badly the vector is conditioned.

    The documented bound, twice: the float64 reference rounds as much as we do.
    """
    sd = math.sqrt(x.var())
    largest_deviation = np.abs(x - x.mean()).max() / sd
    return 2 * 8 * (len(x) + 4) * EPS64 * (np.abs(x).max() / sd) * largest_deviation ** (order - 3)


TOLERANCE: dict[str, Callable[[np.ndarray, float], float]] = {
    "rms": lambda x, ref: _summed(x) * ref,
    "l2_norm": lambda x, ref: _summed(x) * ref,
    "l1_norm": lambda x, ref: _summed(x) * ref,
    "mean_abs": lambda x, ref: _summed(x) * ref,
    "linf_norm": lambda x, ref: 0.0,
    "max_value": lambda x, ref: 0.0,
    "participation_ratio": lambda x, ref: 2 * _summed(x) * ref,
    "effective_channels": lambda x, ref: 2 * _summed(x) * ref,
    # weights 2i - d - 1 of both signs: the error is relative to sum(|w| a) / (d sum a) <= 1
    "gini": lambda x, ref: 2 * _summed(x),
    # sqrt(d) - l1/l2 cancels when every |x| is alike: l1/l2 ~ sqrt(d) carries the error
    "hoyer": lambda x, ref: 2 * _summed(x) * math.sqrt(len(x)) / max(math.sqrt(len(x)) - 1, EPS64),
    # -sum p log p with log p rounded relative to |log p|: sum p (1 + |log p|)^2 ~ (1 + ln d)^2 at most
    "entropy": lambda x, ref: 4 * EPS32 * (1 + math.log(len(x))) ** 2,
    "variance": lambda x, ref: EPS32 * ref,
    "skewness": lambda x, ref: EPS32 * abs(ref) + _conditioning(x, 3),
    "kurtosis": lambda x, ref: EPS32 * abs(ref) + _conditioning(x, 4),
}


def mismatch(name: str, ours: float, x: np.ndarray) -> str:
    """Empty if ``ours`` is within the tolerance of the float64 reference for ``x``, else why not."""
    with np.errstate(all="ignore"):  # 0/0 is the documented NaN
        expected = REFERENCE[name](x)
        allowed = TOLERANCE[name](x, expected)
    if math.isnan(expected) or math.isnan(ours):
        agree = math.isnan(expected) and math.isnan(ours)
    else:
        agree = abs(ours - expected) <= allowed
    return "" if agree else f"{name}: ours {ours!r}, float64 {expected!r}, allowed error {allowed!r}"


def _on_rule_boundary(name: str, x: np.ndarray) -> bool:
    # float64 rounding may put such a vector on either side of the NaN rule
    return name in ("kurtosis", "skewness") and _near_rule_boundary(x)


# ---- properties ----------------------------------------------------------------------------------


def test_every_metric_has_a_reference_and_a_tolerance() -> None:
    assert set(METRICS) == set(REFERENCE) == set(TOLERANCE)


@EXPLORE
@given(x=vectors)
def test_every_metric_matches_float64_reference(x: np.ndarray) -> None:
    names = sorted(REFERENCE)  # all at once, as the hook computes them: shared intermediates too
    ours = compute_metrics(torch.from_numpy(x)[None], names)[:, 0]
    assert ours.dtype == torch.float32
    x64 = x.astype(np.float64)
    problems = [mismatch(name, float(value), x64) for name, value in zip(names, ours)
                if not _on_rule_boundary(name, x64)]
    assert not any(problems), [problem for problem in problems if problem]


@EXPLORE
@given(x=st.one_of(flicker_vectors(), offset_vectors(), constant_vectors()))
def test_moments_are_nan_exactly_when_spread_is_unresolved(x: np.ndarray) -> None:
    x64 = x.astype(np.float64)
    if _near_rule_boundary(x64):
        return
    kurtosis, skewness = compute_metrics(torch.from_numpy(x)[None], ["kurtosis", "skewness"])[:, 0]
    assert math.isnan(kurtosis) == math.isnan(skewness) == _unresolved(x64)


def _float32_centred_skewness(x: np.ndarray) -> float:
    """The former computation: centring and moments in float32."""
    centred = torch.from_numpy(x) - torch.from_numpy(x).mean()
    return float(centred.pow(3).mean() / centred.pow(2).mean().pow(1.5))


def test_tolerance_rejects_float32_centring() -> None:
    # the properties above can fail: the former float32 centring is outside them
    offset = (1000 + 0.01 * np.random.default_rng(0).standard_normal(576)).astype(np.float32)
    assert mismatch("skewness", _float32_centred_skewness(offset), offset.astype(np.float64))
    constant = np.full(576, 0.1, np.float32)
    assert mismatch("skewness", _float32_centred_skewness(constant), constant.astype(np.float64))
