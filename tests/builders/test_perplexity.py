"""Perplexity over sliding windows against a hand computation, and the restored super activation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from builders._ablations import Ablation, PerplexityRun, ablations
from builders._detect import SuperWeight
from builders._down_proj import down_projections
from builders._perplexity import perplexity, sliding_windows
from tests.tiny_models import FAMILIES, LAYERS, plant_super_weight


def _model(family: str = "llama") -> Any:
    torch.manual_seed(0)
    return FAMILIES[family]().eval()


def _hand_loss(model: Any, token_ids: np.ndarray, window_len: int, stride: int) -> tuple[float, int]:
    """Hugging Face's recipe, written out: per window, score the tokens the previous one did not."""
    nll, count, previous_end = 0.0, 0, 0
    for begin in range(0, len(token_ids), stride):
        end = min(begin + window_len, len(token_ids))
        with torch.no_grad():
            log_probs = torch.log_softmax(model(torch.tensor(token_ids[begin:end])[None]).logits[0].double(), -1)
        for position in range(max(previous_end, begin + 1), end):
            nll -= log_probs[position - begin - 1, token_ids[position]].item()
            count += 1
        previous_end = end
        if end == len(token_ids):
            break
    return nll / count, count


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "mixtral"])
@pytest.mark.parametrize(("window_len", "stride"), [(200, 200), (64, 32), (64, 64), (100, 30)])
def test_perplexity_equals_the_hand_computed_value(family: str, window_len: int, stride: int) -> None:
    model = _model(family)
    token_ids = np.random.default_rng(0).integers(0, 256, 200)
    result = perplexity(model, token_ids, sliding_windows(len(token_ids), window_len, stride), 3, progress=False)
    loss, count = _hand_loss(model, token_ids, window_len, stride)
    assert result.loss == pytest.approx(loss, abs=1e-5) and result.n_tokens == count
    assert count == (199 if stride < window_len else 200 - math.ceil(200 / window_len))
    assert result.perplexity == pytest.approx(math.exp(loss), rel=1e-5)


@pytest.mark.parametrize("n_tokens", [129, 65])
def test_a_last_window_with_nothing_to_score_is_dropped(n_tokens: int) -> None:
    windows = sliding_windows(n_tokens, 64, 64)
    assert all(window.end > window.score_from for window in windows)
    result = perplexity(_model(), np.arange(n_tokens) % 256, windows, 2, progress=False)
    assert result.n_tokens == n_tokens - 1 - (n_tokens - 1) // 64 and math.isfinite(result.loss)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 400), st.integers(2, 64), st.data())
def test_windows_score_every_token_with_context_exactly_once(n_tokens: int, window_len: int, data: Any) -> None:
    stride = data.draw(st.integers(1, window_len))
    windows = sliding_windows(n_tokens, window_len, stride)
    scored = [position for window in windows for position in range(window.score_from, window.end)]
    unscored = [0] + (list(range(window_len, n_tokens, window_len)) if stride == window_len else [])
    assert scored == sorted(set(range(n_tokens)) - set(unscored))
    assert all(window.end - window.start <= window_len and window.start < window.score_from for window in windows)


def _planted_run(family: str, threshold: float = 0.0) -> tuple[PerplexityRun, Any]:
    model = _model(family)
    plant_super_weight(model, 2, 7, 11, expert=1)
    projection = next(p for p in down_projections(model, LAYERS)[2] if p.kind != "linear" or p.expert < 0)
    expert = 1 if projection.kind == "experts" else -1
    weight = SuperWeight(2, 7, 11, expert, projection.tensor, projection.layout, 5.0, 0.0, 0.0, 0, projection)
    token_ids = np.random.default_rng(1).integers(0, 256, 160)
    windows = sliding_windows(len(token_ids), 64, 32)
    return PerplexityRun(model, [weight], token_ids, windows, 2, "random", threshold, progress=False), model


def _three(run: PerplexityRun) -> tuple[float, float, float]:
    return tuple(run.evaluate(Ablation(*args))[0].value for args in (
        ("baseline", ()), ("sw0", (0,)), ("sw0_restored", (0,), True)))


@pytest.mark.parametrize("family", ["llama", "gpt2", "mixtral"])
def test_putting_back_every_token_of_the_channel_undoes_the_ablation(family: str) -> None:
    baseline, zeroed, restored = _three(_planted_run(family, threshold=0.0)[0])
    # One zeroed element changes its module's output in one channel only; all of it put back is the baseline.
    assert zeroed != pytest.approx(baseline, rel=1e-3)
    assert restored == pytest.approx(baseline, rel=1e-5)


def test_restoring_only_the_massive_values_puts_back_exactly_those() -> None:
    run, _ = _planted_run("llama", threshold=50.0)
    baseline, zeroed, restored = _three(run)
    saved = torch.cat([value.reshape(-1) for value in run.activations.saved.values()])
    assert 0 < int((saved.abs() > 50).sum()) < saved.numel()  # some tokens spike, some do not
    assert restored not in (pytest.approx(baseline, rel=1e-6), pytest.approx(zeroed, rel=1e-6))


def test_the_weights_are_back_after_every_ablation() -> None:
    run, model = _planted_run("llama")
    before = [parameter.clone() for parameter in model.parameters()]
    for ablation in ablations(1, "each"):
        run.evaluate(ablation)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_the_ablation_plan_names_each_weight_all_and_the_restored_variants() -> None:
    names = [ablation.name for ablation in ablations(2, "all")]
    assert names == ["baseline", "sw0", "sw1", "all", "all_restored"]
    assert [a.name for a in ablations(1, "all")] == ["baseline", "sw0", "sw0_restored"]
    assert [a.name for a in ablations(2, "each")][-3:] == ["sw0_restored", "sw1_restored", "all_restored"]
    assert [a.name for a in ablations(0, "each")] == ["baseline"]
    assert [a.name for a in ablations(2, "none")] == ["baseline", "sw0", "sw1", "all"]
