"""Iterative super-weight detection: measure the spikes, name the candidate, zero it, measure again.

Each iteration is one forward pass of the calibration batch with :class:`SpikeHooks` on every
down projection. Per layer, the projection (or expert) with the largest |output| is kept; a
layer *passes* when its largest |input| and |output| both exceed the threshold, and names
``W[row = output channel, col = input channel]``. Of the passing layers whose candidate is new,
the one with the largest |output| is taken (the biggest spike first: a later layer's spike
that the first weight caused is gone once it is zeroed). An input channel names one super
weight: once ``W[r, c]`` is zeroed, the same spiking channel ``c`` still reaches other rows
through ordinary weights (a spike of 3,000 times a weight of 0.02 passes 50), and those are
not new super weights, so a candidate whose (layer, expert, column) is known is passed over.
The loop stops when no layer passes, when only known columns pass, or at ``max_iterations``.
Weights are put back at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from builders._down_proj import DownProjection, zeroed
from builders._spikes import Maxima, SpikeHooks

# Columns of a layer table: the six maxima, the expert holding them, passed (0/1).
LAYER_COLUMNS = ("input_max", "input_channel", "input_token", "output_max", "output_channel", "output_token",
                 "expert", "passed")
STOP_NOTHING = "nothing passed the threshold"
STOP_KNOWN = "only known candidates passed"
STOP_LIMIT = "max_iterations reached"


@dataclass(frozen=True)
class SuperWeight:
    """One detected super weight, named in Hugging Face layout."""

    layer: int
    row: int
    col: int
    expert: int
    tensor: str
    layout: str
    value: float
    input_spike: float
    output_spike: float
    iteration: int
    projection: DownProjection

    @property
    def cell(self) -> tuple[DownProjection, tuple[int, ...]]:
        return self.projection, self.projection.element(self.row, self.col, self.expert)


@dataclass
class Detection:
    iterations: list[np.ndarray]  # per iteration: (n_layers, len(LAYER_COLUMNS))
    weights: list[SuperWeight]
    stop_reason: str


Eligible = Callable[[int, int], bool]  # (layer, expert) -> may it hold a candidate?


def run_passes(body: nn.Module, hooks: SpikeHooks, batches: list[torch.Tensor]) -> Maxima:
    """The maxima over one pass of ``batches`` (each (rows, tokens) on the model's device)."""
    hooks.reset()
    with torch.inference_mode():
        for batch in batches:
            body(input_ids=batch, use_cache=False)
            hooks.token_offset += batch.numel()
    return hooks.maxima()


def layer_table(maxima: Maxima, n_layers: int, threshold: float, eligible: Eligible) -> tuple[np.ndarray, np.ndarray]:
    """Per layer, the eligible row with the largest |output| (NaN where none): the table and the rows' indices."""
    table = np.full((n_layers, len(LAYER_COLUMNS)), np.nan)
    chosen = np.full(n_layers, -1)
    for index in np.argsort(maxima.values[:, 3], kind="stable"):  # ascending: the largest is written last
        layer, expert = int(maxima.layers[index]), int(maxima.experts[index])
        if eligible(layer, expert):
            table[layer, :6], table[layer, 6], chosen[layer] = maxima.values[index], expert, index
    table[:, 7] = (table[:, 0] > threshold) & (table[:, 3] > threshold)
    return table, chosen


def _candidates(table: np.ndarray) -> Iterator[int]:
    """Passing layers, largest |output| first."""
    passing = np.flatnonzero(table[:, 7] == 1)
    yield from passing[np.argsort(-table[passing, 3], kind="stable")]


def _new_weight(table: np.ndarray, chosen: np.ndarray, maxima: Maxima, projections: list[DownProjection],
                known: set[tuple[int, int, int]], iteration: int) -> SuperWeight | None:
    for layer in _candidates(table):
        row, col, expert = int(table[layer, 4]), int(table[layer, 1]), int(table[layer, 6])
        if (int(layer), expert, col) in known:
            continue
        projection = projections[int(maxima.projections[chosen[layer]])]
        value = float(projection.parameter[projection.element(row, col, expert)].item())
        return SuperWeight(int(layer), row, col, expert, projection.tensor, projection.layout, value,
                           float(table[layer, 0]), float(table[layer, 3]), iteration, projection)
    return None


def detect(body: nn.Module, projections: list[DownProjection], batches: list[torch.Tensor], n_layers: int,
           threshold: float, max_iterations: int, eligible: Eligible, progress: bool = True) -> Detection:
    """Find super weights one at a time; the model's weights are as they were on return."""
    detection = Detection([], [], STOP_LIMIT)
    known: set[tuple[int, int, int]] = set()  # (layer, expert, input channel) of each weight found
    cells: list[tuple[DownProjection, tuple[int, ...]]] = []  # the weights found so far, zeroed in each pass
    with SpikeHooks(projections, threshold) as hooks:
        for iteration in tqdm(range(max_iterations), desc="detect", unit="pass", disable=not progress):
            with zeroed(cells):
                maxima = run_passes(body, hooks, batches)
            table, chosen = layer_table(maxima, n_layers, threshold, eligible)
            detection.iterations.append(table)
            found = _new_weight(table, chosen, maxima, projections, known, iteration)
            if found is None:
                detection.stop_reason = STOP_KNOWN if (table[:, 7] == 1).any() else STOP_NOTHING
                break
            detection.weights.append(found)
            known.add((found.layer, found.expert, found.col))
            cells.append(found.cell)
    return detection
