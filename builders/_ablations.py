"""Evaluations of a model with its super weights zeroed: alone, all together, and with the super activation restored.

Every ablation is the model in memory with parameter elements set to 0 (and put back after,
see ``_down_proj.zeroed``): the same questions, windows and seed as the baseline, so the
differences are the weights' alone. Restored variants are measured on perplexity only (the
paper's Table 3); accuracy runs on the baseline, each weight alone, and all together.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
from torch import nn

from builders._detect import SuperWeight
from builders._down_proj import zeroed
from builders._perplexity import SuperActivations, Window, perplexity

BASELINE = "baseline"
ALL = "all"
RESTORED = "_restored"


@dataclass(frozen=True)
class Ablation:
    name: str
    zeroed: tuple[int, ...]  # indices into the model's super weights
    restored: bool = False

    @property
    def zeroed_text(self) -> str:
        return ",".join(map(str, self.zeroed))


@dataclass(frozen=True)
class Evaluation:
    """One row of the evaluations table."""

    ablation: str
    zeroed: str
    kind: str  # "perplexity" or "accuracy"
    task: str
    metric: str
    value: float
    n: int


def ablations(n_weights: int, restore: str) -> list[Ablation]:
    """baseline, sw0.., all (when there are two or more), and the restored variants ``restore`` asks for."""
    plain = [Ablation(BASELINE, ())] + [Ablation(f"sw{index}", (index,)) for index in range(n_weights)]
    if n_weights > 1:
        plain.append(Ablation(ALL, tuple(range(n_weights))))
    restorable = [ablation for ablation in plain if ablation.zeroed]
    if restore == "all":
        restorable = restorable[-1:]
    elif restore == "none":
        restorable = []
    return plain + [Ablation(ablation.name + RESTORED, ablation.zeroed, True) for ablation in restorable]


@dataclass
class PerplexityRun:
    """Everything the perplexity of one ablation needs; the baseline records the super activations."""

    model: nn.Module
    weights: list[SuperWeight]
    token_ids: np.ndarray
    windows: list[Window]
    batch_size: int
    text_name: str
    spike_threshold: float
    progress: bool = True

    def __post_init__(self) -> None:
        self.activations = SuperActivations([(weight.projection.module, weight.row) for weight in self.weights],
                                            self.spike_threshold)

    def evaluate(self, ablation: Ablation) -> list[Evaluation]:
        cells = [self.weights[index].cell for index in ablation.zeroed]
        self.activations.recording = not ablation.zeroed  # the baseline records, restored variants replay
        self.activations.active = set(ablation.zeroed) if ablation.restored else set()
        hooks_on = not ablation.zeroed or ablation.restored
        with zeroed(cells), (self.activations if hooks_on else nullcontext()):
            result = perplexity(self.model, self.token_ids, self.windows, self.batch_size,
                                desc=f"perplexity {ablation.name}", progress=self.progress, replay=self.activations)
        return [Evaluation(ablation.name, ablation.zeroed_text, "perplexity", self.text_name, metric, value,
                           result.n_tokens) for metric, value in (("perplexity", result.perplexity), ("loss", result.loss))]


def accuracy_rows(ablation: Ablation, weights: list[SuperWeight],
                  evaluate: Callable[[], list[tuple[str, str, float, int]]]) -> list[Evaluation]:
    """The accuracy rows of ``ablation``: ``evaluate()`` run with its weights zeroed."""
    with zeroed([weights[index].cell for index in ablation.zeroed]):
        results = evaluate()
    return [Evaluation(ablation.name, ablation.zeroed_text, "accuracy", task, metric, value, n)
            for task, metric, value, n in results]


def perplexity_of(evaluations: list[Evaluation], ablation: str) -> float:
    found = [row.value for row in evaluations if row.ablation == ablation and row.metric == "perplexity"]
    return found[0] if found else math.nan
