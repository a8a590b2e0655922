"""Super-weight cards: what zeroing one weight does to next-token prediction, beside two controls.

The text is cut into the sliding windows of ``builders/_perplexity.py`` (each token scored once;
with ``drop_first_token`` no window scores the prediction made at its first position). At every
scored position, from the next-token distribution ``p`` (softmax of the logits, float32):
- ``loss``: -log p(actual next token), in nats;
- ``entropy``: -sum p log p, in nats;
- ``topk_margin``: p of the most likely token minus p of the k-th most likely (``margin_k``);
- ``stopword_mass``: the total p of the function-word tokens (``_vocab_classes.stopword_mask``).
A figure is the mean over scored positions. Each window's sums are kept, so a delta (zeroed minus
baseline, both on the same windows) is a ratio of sums, and the bootstrap resamples windows
(percentile intervals; the same resamples for every card of a model, seeded).

The controls zero, instead of the weight: a random coordinate of the same matrix (seeded by the
run's seed and the weight's coordinates, never the weight itself), and the weight's whole column,
the neuron. The "dual" view is the change of each token's mean probability over the scored
positions. The cascade reads each chosen layer's output through the logit lens (the final norm,
then the LM head; the last layer's output is the model's own logits) and reports the entropy and
top-k margin deltas there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from builders import _models as models
from builders._down_proj import DownProjection, zeroed
from builders._perplexity import Window, sliding_windows, window_batches

N_METRICS = 4  # loss, entropy, topk_margin, stopword_mass (store.CARD_METRICS)
# Positions per pass over the vocabulary: 32 rows of float32 logits (6 MB for 49,152 tokens) stay in
# cache; whole batches (400 MB) made every pass a trip to memory, 2x slower on a CPU.
CHUNK = 32
Cell = tuple[DownProjection, tuple[int | slice, ...]]


@dataclass
class WindowSums:
    """One run over the windows: per window the sums over scored positions, and the probability mass."""

    sums: np.ndarray  # (n_windows, N_METRICS) float64
    tokens: np.ndarray  # (n_windows,) scored positions per window
    probability: np.ndarray  # (vocab,) float64: sum over scored positions of p
    cascade: np.ndarray  # (n_windows, n_cascade, 2): sums of entropy and top-k margin through the lens

    def means(self) -> np.ndarray:
        """The figures: means over every scored position."""
        return self.sums.sum(0) / self.tokens.sum()


def evaluation_windows(n_tokens: int, window_len: int, stride: int, drop_first_token: bool) -> list[Window]:
    windows = sliding_windows(n_tokens, window_len, stride)
    if drop_first_token:
        windows = [Window(window.start, window.end, max(window.score_from, window.start + 2)) for window in windows]
    return [window for window in windows if window.end > window.score_from]


def default_cascade_layers(n_layers: int) -> list[int]:
    """About eight evenly spaced layers and the last."""
    step = max(1, n_layers // 8)
    return sorted({*range(0, n_layers, step), n_layers - 1})


@dataclass(frozen=True)
class Distribution:
    """Next-token distributions from logits, kept as ``exp(logits - max)`` and its sum.

    ``log p = shifted - log(total)`` and ``p = unnormalised / total``: every figure is one pass over
    these two tensors, without materialising ``log_softmax`` and its ``exp`` (on a CPU they cost more
    than the LM head saved by scoring only some positions).
    """

    shifted: torch.Tensor  # logits minus their maximum (<= 0)
    unnormalised: torch.Tensor  # exp(shifted)
    total: torch.Tensor  # unnormalised summed over the vocabulary

    @classmethod
    def of(cls, logits: torch.Tensor) -> Distribution:
        shifted = logits.float() - logits.float().amax(-1, keepdim=True)
        unnormalised = shifted.exp()
        return cls(shifted, unnormalised, unnormalised.sum(-1))

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        return self.total.log() - self.shifted.gather(-1, targets[..., None])[..., 0]

    def entropy(self) -> torch.Tensor:
        return self.total.log() - (self.unnormalised * self.shifted).sum(-1) / self.total

    def margin(self, k: int) -> torch.Tensor:
        """p of the most likely token minus p of the k-th most likely."""
        top = self.shifted.topk(k, dim=-1).values.exp()
        return (top[..., 0] - top[..., -1]) / self.total

    def mass(self, tokens: torch.Tensor) -> torch.Tensor:
        """The probability of a set of tokens (a float 0/1 vector over the vocabulary)."""
        return (self.unnormalised @ tokens) / self.total

    def probability_sum(self) -> torch.Tensor:
        """Sum over every position of p, per token."""
        flat = self.unnormalised.reshape(-1, self.unnormalised.shape[-1])
        return (1 / self.total.reshape(-1)) @ flat


@dataclass
class Evaluator:
    """Runs the model over the windows and sums the metrics; the caller zeroes what it studies."""

    model: nn.Module
    token_ids: np.ndarray
    windows: list[Window]
    batch_size: int
    stopwords: np.ndarray  # bool over the vocabulary
    margin_k: int
    cascade_layers: list[int]
    n_layers: int
    progress: bool = True
    _tokens: torch.Tensor = field(init=False)
    _stopwords: torch.Tensor = field(init=False)
    _norm: nn.Module = field(init=False)  # the logit lens: final norm, then LM head
    _head: nn.Module = field(init=False)

    def __post_init__(self) -> None:
        self._norm, self._head = models.final_norm(self.model), self.model.get_output_embeddings()
        device = models.input_device(self.model)
        self._tokens = torch.as_tensor(self.token_ids, dtype=torch.long, device=device)
        self._stopwords = torch.as_tensor(self.stopwords, dtype=torch.float32, device=device)

    def run(self, desc: str, cascade: bool = True) -> WindowSums:
        """Sums over the windows; the cascade (logit lens) only when asked: the controls do without."""
        n_windows, vocab = len(self.windows), self._stopwords.shape[0]
        result = WindowSums(np.zeros((n_windows, N_METRICS)), np.array([w.shape[1] for w in self.windows]),
                            np.zeros(vocab), np.zeros((n_windows, len(self.cascade_layers), 2)))
        first = 0
        with torch.inference_mode():
            for batch in tqdm(window_batches(self.windows, self.batch_size), desc=desc, unit="batch",
                              disable=not self.progress):
                self._batch(batch, result, first, cascade and bool(self.cascade_layers))
                first += len(batch)
        return result

    def _batch(self, batch: list[Window], result: WindowSums, first: int, cascade: bool) -> None:
        rows = torch.stack([self._tokens[window.start:window.end] for window in batch])
        n_scored = batch[0].shape[1]
        output = self.model(input_ids=rows, use_cache=False, logits_to_keep=n_scored + 1, output_hidden_states=cascade)
        targets = rows[:, rows.shape[1] - n_scored:]
        for index in range(len(batch)):
            sums, probability = self._figures(output.logits[index, :-1], targets[index])
            result.sums[first + index] = sums
            result.probability += probability
            if cascade:
                states = [layer_states[index, -n_scored - 1:-1] for layer_states in output.hidden_states]
                result.cascade[first + index] = self._lens(states, sums)

    def _figures(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """One window's sums of the four figures, and of p per token, CHUNK positions at a time."""
        sums = torch.zeros(N_METRICS, dtype=torch.float64, device=logits.device)
        probability = torch.zeros(logits.shape[-1], dtype=torch.float64, device=logits.device)
        for at in range(0, len(logits), CHUNK):
            distribution = Distribution.of(logits[at:at + CHUNK])
            figures = [distribution.loss(targets[at:at + CHUNK]), distribution.entropy(),
                       distribution.margin(self.margin_k), distribution.mass(self._stopwords)]
            sums += torch.stack(figures, dim=-1).double().sum(0)
            probability += distribution.probability_sum().double()
        return sums.cpu().numpy(), probability.cpu().numpy()

    def _lens(self, hidden_states: list[torch.Tensor], final: np.ndarray) -> np.ndarray:
        """One window's sums of entropy and margin through the logit lens, per cascade layer."""
        sums = np.zeros((len(self.cascade_layers), 2))
        for row, layer in enumerate(self.cascade_layers):
            if layer == self.n_layers - 1:  # hidden_states[-1] is after the final norm: the model's own logits
                sums[row] = final[1:3]
                continue
            for at in range(0, len(hidden_states[layer + 1]), CHUNK):
                lens = Distribution.of(self._head(self._norm(hidden_states[layer + 1][at:at + CHUNK])))
                sums[row] += torch.stack([lens.entropy().sum(), lens.margin(self.margin_k).sum()]).double().cpu().numpy()
        return sums

    def run_zeroed(self, cells: list[Cell], desc: str, cascade: bool = True) -> WindowSums:
        with zeroed(cells):  # type: ignore[arg-type]  # a column index holds a slice
            return self.run(desc, cascade)


def random_coordinate(projection: DownProjection, row: int, col: int, expert: int, seed: int) -> tuple[int, int]:
    """A seeded random (row, col) of the same matrix, never the weight's own."""
    n_rows, n_cols = projection.shape
    generator = np.random.default_rng([seed, projection.layer, row, col, expert + 1])
    while True:
        drawn = (int(generator.integers(n_rows)), int(generator.integers(n_cols)))
        if drawn != (row, col) or n_rows * n_cols == 1:
            return drawn


@dataclass(frozen=True)
class Bootstrap:
    mean: np.ndarray  # (N_METRICS,)
    low: np.ndarray
    high: np.ndarray


def bootstrap_resamples(n_windows: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_windows) window indices drawn with replacement; the same for every card."""
    return np.random.default_rng(seed).integers(0, n_windows, size=(n_resamples, n_windows))


def bootstrap_delta(delta_sums: np.ndarray, tokens: np.ndarray, resamples: np.ndarray,
                    confidence: float) -> Bootstrap:
    """Percentile intervals of the token-weighted mean delta over resampled windows."""
    statistics = delta_sums[resamples].sum(1) / tokens[resamples].sum(1)[:, None]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(statistics, [tail, 100 - tail], axis=0)
    return Bootstrap(statistics.mean(0), low, high)


def probability_changes(baseline: WindowSums, changed: WindowSums, top_k: int) -> tuple[list[tuple[int, float]],
                                                                                         list[tuple[int, float]]]:
    """The tokens whose mean probability rose most and fell most: (token id, change), largest change first."""
    delta = (changed.probability - baseline.probability) / baseline.tokens.sum()
    order = np.argsort(-delta, kind="stable")
    gains = [(int(token_id), float(delta[token_id])) for token_id in order[:top_k]]
    losses = [(int(token_id), float(delta[token_id])) for token_id in order[::-1][:top_k]]
    return gains, losses
