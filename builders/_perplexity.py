"""Perplexity over sliding windows, optionally with a super activation put back.

The windows are Hugging Face's recipe ("Perplexity of fixed-length models"): windows of
``window_len`` tokens starting every ``stride`` tokens; each scores only the tokens the
previous window did not (the first scores all but its first token), with everything before
them in the window as context. ``loss`` is the mean negative log-likelihood in nats over the
scored tokens and ``perplexity = exp(loss)``. Only the scored positions' logits are computed
(``logits_to_keep``), so the LM head runs on ``stride`` tokens per window, not ``window_len``.

"Restore" (Yu et al. 2024, Table 3): the super weight is zeroed but its super activation is
put back. The super activation is the down projection's output in the weight's row *where it
is massive*: the tokens whose unablated |value| exceeds the spike threshold. Only those are
put back; every other token keeps its zeroed-weight value. (Putting back every token's value
would undo the ablation exactly: one zeroed element changes nothing but that output channel.)
:class:`SuperActivations` records the channel during the baseline and replays it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from tqdm.auto import tqdm

from builders._capture import ForwardHooks


@dataclass(frozen=True)
class Window:
    """Tokens ``[start, end)`` run through the model; tokens ``[score_from, end)`` scored."""

    start: int
    end: int
    score_from: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.end - self.start, self.end - self.score_from


@dataclass(frozen=True)
class Perplexity:
    loss: float
    perplexity: float
    n_tokens: int


def sliding_windows(n_tokens: int, window_len: int, stride: int) -> list[Window]:
    """The windows covering ``n_tokens`` tokens; no token is scored twice.

    With ``stride < window_len`` every token but the first is scored; with ``stride ==
    window_len`` each window's first token has no context and is not (as in the recipe).
    """
    windows, scored_to = [], 1
    for start in range(0, n_tokens, stride):
        end = min(start + window_len, n_tokens)
        window = Window(start, end, max(scored_to, start + 1))
        if window.end > window.score_from:  # a last window of one token (stride == window_len) scores nothing
            windows.append(window)
        scored_to = end
        if end == n_tokens:
            break
    return windows


def window_batches(windows: list[Window], batch_size: int) -> list[list[Window]]:
    """Consecutive windows of the same shape, ``batch_size`` at most per batch (no padding)."""
    batches = []
    for _, same in groupby(windows, key=lambda window: window.shape):
        group = list(same)
        batches += [group[at:at + batch_size] for at in range(0, len(group), batch_size)]
    return batches


def _batch_nll(model: nn.Module, token_ids: torch.Tensor, batch: list[Window]) -> torch.Tensor:
    """The summed negative log-likelihood of the batch's scored tokens (float64)."""
    rows = torch.stack([token_ids[window.start:window.end] for window in batch])
    n_scored = batch[0].shape[1]
    logits = model(input_ids=rows, use_cache=False, logits_to_keep=n_scored + 1).logits[:, :-1]
    targets = rows[:, rows.shape[1] - n_scored:]
    return functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                    reduction="sum").double()


def perplexity(model: nn.Module, token_ids: np.ndarray, windows: list[Window], batch_size: int,
               desc: str = "perplexity", progress: bool = True, replay: SuperActivations | None = None) -> Perplexity:
    """Loss and perplexity of ``model`` as it is (weights zeroed by the caller) over ``windows``."""
    device = model.get_input_embeddings().weight.device
    tokens = torch.as_tensor(token_ids, dtype=torch.long, device=device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    batches = window_batches(windows, batch_size)
    with torch.inference_mode():
        for index, batch in enumerate(tqdm(batches, desc=desc, unit="batch", disable=not progress)):
            if replay is not None:
                replay.batch = index
            total += _batch_nll(model, tokens, batch)
    n_scored = sum(window.shape[1] for window in windows)
    loss = float(total) / n_scored
    return Perplexity(loss, math.exp(min(loss, 700.0)) if math.isfinite(loss) else loss, n_scored)  # NaN stays NaN


@dataclass
class SuperActivations(ForwardHooks):
    """Records (``recording``) or puts back one output channel of each given module, batch by batch."""

    modules_rows: Sequence[tuple[nn.Module, int]]
    threshold: float  # only values whose |value| exceeds it are put back (0: every token's)
    recording: bool = True
    active: set[int] = field(default_factory=set)  # positions put back when not recording
    batch: int = 0
    saved: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__([module for module, _ in self.modules_rows])

    def _make_hook(self, position: int) -> Any:
        row = self.modules_rows[position][1]

        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if self.recording:
                self.saved[(position, self.batch)] = output[..., row].clone()
            elif position in self.active:
                saved = self.saved[(position, self.batch)]
                output[..., row] = torch.where(saved.abs() > self.threshold, saved, output[..., row])

        return hook
