"""The vocabulary cards' numbers against direct computations on a tiny Llama: projection and moments,
deltas and controls of a hand-run intervention, the logit-lens cascade, and the bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from builders._down_proj import down_projections
from builders._vocab_classes import stopword_mask
from builders._vocab_interventions import (
    Evaluator,
    bootstrap_delta,
    bootstrap_resamples,
    evaluation_windows,
    random_coordinate,
)
from builders._vocab_neurons import Neuron, effects, moments, neuron_card, norm_gain, vocabulary
from tests.tiny_models import FAMILIES, byte_tokenizer, plant_super_weight

LAYER, ROW, COL = 2, 7, 11
N_TOKENS, WINDOW, STRIDE, MARGIN_K = 200, 48, 24, 3


@pytest.fixture(scope="module")
def llama() -> torch.nn.Module:
    torch.manual_seed(0)
    model = FAMILIES["llama"]()
    plant_super_weight(model, LAYER, ROW, COL)
    with torch.no_grad():  # a column that is not all zeros, so the whole-neuron control differs from the weight
        model.model.layers[LAYER].mlp.down_proj.weight[ROW + 1, COL] = 0.7
    return model.eval()


@pytest.fixture(scope="module")
def token_ids() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, N_TOKENS)


def _projection(model: torch.nn.Module) -> object:
    return down_projections(model, len(model.model.layers))[LAYER][0]


def test_the_vocabulary_projection_and_its_moments_equal_numpy(llama: torch.nn.Module) -> None:
    vocab = vocabulary(llama, byte_tokenizer())
    neuron = Neuron(LAYER, COL, -1, _projection(llama), "superweight")
    dot, cosine = effects(vocab, llama.model.layers[LAYER].mlp.down_proj.weight[:, COL].detach().float())
    unembedding = llama.lm_head.weight.detach().double().numpy()
    seen = llama.model.layers[LAYER].mlp.down_proj.weight[:, COL].detach().double().numpy() * \
        llama.model.norm.weight.detach().double().numpy()
    expected = unembedding @ seen
    np.testing.assert_allclose(dot, expected, rtol=1e-5, atol=1e-6)
    norms = np.linalg.norm(unembedding, axis=1) * np.linalg.norm(seen)
    np.testing.assert_allclose(cosine, expected / norms, rtol=1e-5, atol=1e-6)
    found = moments(dot)
    assert found.var == pytest.approx(np.var(expected), rel=1e-5)
    assert found.skew == pytest.approx(stats.skew(expected), rel=1e-4)
    assert found.kurt == pytest.approx(stats.kurtosis(expected), rel=1e-4)  # excess (Fisher)
    card = neuron_card(neuron, vocab, 5, True, None, 100)
    assert [token_id for token_id, _ in card.up] == list(np.argsort(-expected)[:5])
    assert [token_id for token_id, _ in card.down] == list(np.argsort(expected)[:5])
    assert card.moments_cos is not None and card.moments_cos.kurt == pytest.approx(
        stats.kurtosis(expected / norms), rel=1e-4)


def _direct_figures(model: torch.nn.Module, token_ids: np.ndarray, stopwords: np.ndarray,
                    lens_layers: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Means over the scored positions of every window, from full forward passes and NumPy:
    loss, entropy, top-k margin, stopword mass; and per lens layer, entropy and margin."""
    per_position, lens_positions = [], []
    for window in evaluation_windows(len(token_ids), WINDOW, STRIDE, drop_first_token=False):
        rows = torch.as_tensor(token_ids[window.start:window.end])[None]
        with torch.no_grad():
            output = model(input_ids=rows, output_hidden_states=True)
        first = window.score_from - window.start - 1  # position predicting the first scored token
        targets = token_ids[window.score_from:window.end]
        per_position.append(_figures(output.logits[0, first:-1].double().numpy(), targets, stopwords))
        lens = []
        for layer in lens_layers:
            states = output.hidden_states[layer + 1][0, first:-1]
            logits = output.logits[0, first:-1] if layer == len(model.model.layers) - 1 else \
                model.lm_head(model.model.norm(states))
            lens.append(_figures(logits.detach().double().numpy(), targets, stopwords)[:, 1:3])
        lens_positions.append(np.stack(lens, axis=1) if lens else np.zeros((len(targets), 0, 2)))
    return np.concatenate(per_position).mean(0), np.concatenate(lens_positions).mean(0)


def _figures(logits: np.ndarray, targets: np.ndarray, stopwords: np.ndarray) -> np.ndarray:
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - \
        logits.max(-1, keepdims=True)
    probs = np.exp(log_probs)
    top = np.sort(probs, axis=-1)[:, ::-1]
    return np.stack([-log_probs[np.arange(len(targets)), targets], -(probs * log_probs).sum(-1),
                     top[:, 0] - top[:, MARGIN_K - 1], probs[:, stopwords].sum(-1)], axis=1)


def _evaluator(model: torch.nn.Module, token_ids: np.ndarray, stopwords: np.ndarray,
               lens_layers: list[int]) -> Evaluator:
    windows = evaluation_windows(len(token_ids), WINDOW, STRIDE, drop_first_token=False)
    return Evaluator(model, token_ids, windows, 2, stopwords, MARGIN_K, lens_layers, len(model.model.layers),
                     progress=False)


def test_deltas_and_controls_equal_a_hand_run_intervention(llama: torch.nn.Module, token_ids: np.ndarray) -> None:
    stopwords = stopword_mask(vocabulary(llama, byte_tokenizer()).decoded)
    stopwords[[32, 101, 116]] = True  # the byte vocabulary has no words: make some tokens count
    evaluator = _evaluator(llama, token_ids, stopwords, [])
    projection = _projection(llama)
    baseline = evaluator.run("baseline")
    weight = llama.model.layers[LAYER].mlp.down_proj.weight
    direct_baseline, _ = _direct_figures(llama, token_ids, stopwords, [])
    np.testing.assert_allclose(baseline.means(), direct_baseline, rtol=1e-4, atol=1e-7)
    coordinate = random_coordinate(projection, ROW, COL, -1, seed=42)
    assert coordinate != (ROW, COL) and coordinate == random_coordinate(projection, ROW, COL, -1, seed=42)
    cases = {(ROW, COL): [(projection, (ROW, COL))], coordinate: [(projection, coordinate)],
             "neuron": [(projection, (slice(None), COL))]}
    for case, cells in cases.items():
        changed = evaluator.run_zeroed(cells, str(case))
        saved = weight.detach().clone()
        with torch.no_grad():
            weight[cells[0][1]] = 0
        direct_changed, _ = _direct_figures(llama, token_ids, stopwords, [])
        with torch.no_grad():
            weight.copy_(saved)
        np.testing.assert_allclose(changed.means() - baseline.means(), direct_changed - direct_baseline,
                                   rtol=1e-3, atol=1e-6)
    assert torch.equal(weight, saved)  # every weight put back


def test_the_cascade_equals_a_direct_logit_lens(llama: torch.nn.Module, token_ids: np.ndarray) -> None:
    stopwords = np.zeros(llama.lm_head.weight.shape[0], bool)
    lens_layers = [0, 2, 3, len(llama.model.layers) - 1]
    evaluator = _evaluator(llama, token_ids, stopwords, lens_layers)
    baseline = evaluator.run("baseline")
    projection = _projection(llama)
    changed = evaluator.run_zeroed([(projection, (ROW, COL))], "zeroed")
    found = (changed.cascade - baseline.cascade).sum(0) / baseline.tokens.sum()
    _, direct_before = _direct_figures(llama, token_ids, stopwords, lens_layers)
    with torch.no_grad():
        saved = float(llama.model.layers[LAYER].mlp.down_proj.weight[ROW, COL])
        llama.model.layers[LAYER].mlp.down_proj.weight[ROW, COL] = 0
    try:
        _, direct_after = _direct_figures(llama, token_ids, stopwords, lens_layers)
    finally:
        with torch.no_grad():
            llama.model.layers[LAYER].mlp.down_proj.weight[ROW, COL] = saved
    np.testing.assert_allclose(found, direct_after - direct_before, rtol=1e-3, atol=1e-6)
    assert found[0].tolist() == [0.0, 0.0]  # layer 0 comes before the zeroed weight's layer 2
    assert np.abs(found[2:]).max() > 0


def test_bootstrap_intervals_are_reproducible_and_cover_the_full_sample_value() -> None:
    generator = np.random.default_rng(0)
    tokens = generator.integers(20, 40, 30)
    delta_sums = generator.normal(0.5, 1.0, (30, 4)) * tokens[:, None]
    full = delta_sums.sum(0) / tokens.sum()
    first = bootstrap_delta(delta_sums, tokens, bootstrap_resamples(30, 2000, seed=7), 0.95)
    again = bootstrap_delta(delta_sums, tokens, bootstrap_resamples(30, 2000, seed=7), 0.95)
    other = bootstrap_delta(delta_sums, tokens, bootstrap_resamples(30, 2000, seed=8), 0.95)
    np.testing.assert_array_equal(first.low, again.low)
    np.testing.assert_array_equal(first.high, again.high)
    assert not np.array_equal(first.low, other.low)
    assert np.all(first.low < full) and np.all(full < first.high)
    np.testing.assert_allclose(first.mean, full, atol=0.05)
    narrower = bootstrap_delta(delta_sums, tokens, bootstrap_resamples(30, 2000, seed=7), 0.5)
    assert np.all(narrower.high - narrower.low < first.high - first.low)


def test_drop_first_token_scores_no_prediction_from_a_window_start() -> None:
    kept = evaluation_windows(100, 20, 10, drop_first_token=False)
    dropped = evaluation_windows(100, 20, 10, drop_first_token=True)
    assert kept[0].score_from == 1 and dropped[0].score_from == 2
    assert [window.score_from for window in kept[1:]] == [window.score_from for window in dropped[1:]]
    assert all(window.score_from >= window.start + 2 for window in dropped)


def test_a_layernorm_model_sees_the_direction_without_its_mean() -> None:
    """GPT-2's final LayerNorm removes the mean across channels: effect = U . (g * (w - mean w))."""
    torch.manual_seed(1)
    gpt2 = FAMILIES["gpt2"]().eval()
    with torch.no_grad():
        gpt2.transformer.ln_f.weight.uniform_(0.5, 1.5)
    column = gpt2.transformer.h[1].mlp.c_proj.weight[5, :].detach().double()  # Conv1D: [in, out]
    vocab = vocabulary(gpt2, byte_tokenizer())
    dot, _ = effects(vocab, column.float())
    expected = gpt2.lm_head.weight.detach().double().numpy() @ (
        (column - column.mean()) * gpt2.transformer.ln_f.weight.detach().double()).numpy()
    np.testing.assert_allclose(dot, expected, rtol=1e-5, atol=1e-6)


class _OnePlusWeightRMSNorm(torch.nn.Module):
    """Gemma's RMSNorm: the gain is 1 + weight."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(-0.5, 0.5, hidden))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return states * torch.rsqrt(states.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + self.weight)


def test_the_gain_of_an_rms_norm_is_read_off_the_norm_itself() -> None:
    norm = _OnePlusWeightRMSNorm(8)
    gain, centred = norm_gain(norm, 8, norm.weight)
    assert not centred
    np.testing.assert_allclose(gain.numpy(), 1 + norm.weight.detach().numpy(), rtol=1e-6)
    layer_gain, layer_centred = norm_gain(torch.nn.LayerNorm(8), 8, norm.weight)
    assert layer_centred and torch.equal(layer_gain, torch.ones(8))
