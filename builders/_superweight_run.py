"""One model's super-weight analysis, step by step: router (MoE), detection, ablations, causal scores.

Each step returns the records its table holds; ``builders/superweights.py`` writes them. A
step whose table is already complete in the store (a rerun after a crash) is read back
instead of recomputed (:func:`stored_weights`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from builders import _models as models
from builders._ablations import (
    Evaluation,
    PerplexityRun,
    ablations,
    accuracy_rows,
)
from builders._detect import Detection, SuperWeight, detect
from builders._down_proj import DownProjection, zeroed
from builders._perplexity import Window, perplexity, sliding_windows
from builders._router import RouterAnalysis, analyse_router, expert_projections
from builders._superweight_configs import SuperweightsConfig
from builders._superweight_tables import cell_value
from builders._text import describe

Log = Callable[[str], None]


@dataclass
class ModelRun:
    """A loaded model with its down projections and its texts (already tokenised and checked)."""

    model: nn.Module
    tokenizer: Any
    layers: list[list[DownProjection]]
    calibration: list[np.ndarray]
    perplexity_ids: np.ndarray | None
    router_texts: list[np.ndarray]

    @property
    def device(self) -> torch.device:
        return models.input_device(self.model)

    @property
    def is_moe(self) -> bool:
        return bool(expert_projections(self.layers))

    def tensors(self, rows: list[np.ndarray], batch: bool) -> list[torch.Tensor]:
        """Rows on the device: one batch of equal-length rows, or one pass per row."""
        if batch and len({len(row) for row in rows}) == 1:
            return [torch.as_tensor(np.stack(rows), device=self.device)]
        return [torch.as_tensor(row[None], device=self.device) for row in rows]


def run_router(run: ModelRun, config: SuperweightsConfig) -> RouterAnalysis | None:
    if not run.is_moe:
        return None
    return analyse_router(models.decoder_body(run.model), run.layers, run.tensors(run.router_texts, batch=False),
                          config.detect.spike_threshold, config.moe.p_active_floor, config.moe.co_spike_threshold)


def run_detection(run: ModelRun, config: SuperweightsConfig, router: RouterAnalysis | None) -> Detection:
    eligible = router.eligible if router is not None else (lambda layer, expert: True)
    projections = [projection for layer in run.layers for projection in layer]
    return detect(models.decoder_body(run.model), projections, run.tensors(run.calibration, batch=True), len(run.layers),
                  config.detect.spike_threshold, config.detect.max_iterations, eligible, config.progress)


def stored_weights(run: ModelRun, table: xr.Dataset) -> list[SuperWeight]:
    """The weights table read back, each tied to its projection again (for a resumed build)."""
    by_tensor = {(projection.layer, projection.tensor): projection for layer in run.layers for projection in layer}
    weights = []
    for record in table.record.values:
        row = {name: cell_value(table[name].values[record]) for name in table.data_vars}
        weights.append(SuperWeight(row["layer"], row["row"], row["col"], row["expert"], row["tensor"], row["layout"],
                                   row["value"], row["input_spike"], row["output_spike"], row["iteration"],
                                   by_tensor[(row["layer"], row["tensor"])]))
    return weights


def run_evaluations(run: ModelRun, config: SuperweightsConfig, weights: list[SuperWeight],
                    accuracy: Callable[[], list[tuple[str, str, float, int]]] | None, log: Log) -> list[Evaluation]:
    """Perplexity (with restored variants) and accuracy for the baseline and every ablation."""
    rows: list[Evaluation] = []
    plan = ablations(len(weights), config.perplexity.restore)
    if run.perplexity_ids is not None:
        ppl = _perplexity_run(run, config, weights)
        for ablation in plan:
            rows += _logged(ppl.evaluate(ablation), log)
    if accuracy is not None:
        for ablation in (ablation for ablation in plan if not ablation.restored):
            rows += _logged(accuracy_rows(ablation, weights, accuracy), log)
    return rows


def _windows(run: ModelRun, config: SuperweightsConfig) -> list[Window]:
    return sliding_windows(len(run.perplexity_ids), config.perplexity.window_len, config.perplexity.stride)


def _perplexity_run(run: ModelRun, config: SuperweightsConfig, weights: list[SuperWeight]) -> PerplexityRun:
    return PerplexityRun(run.model, weights, run.perplexity_ids, _windows(run, config), config.perplexity.batch_size,
                         config.data.name, config.detect.spike_threshold, config.progress)


def _logged(rows: list[Evaluation], log: Log) -> list[Evaluation]:
    for row in rows:
        log(f"  {row.ablation:<16} {row.kind:<10} {row.task:<22} {row.metric:<11} {row.value:.6g}  (n={row.n})")
    return rows


def causal_scores(run: ModelRun, config: SuperweightsConfig, router: RouterAnalysis, baseline: float) -> None:
    """Perplexity change of zeroing each co-spiking expert's candidate (in place, into ``router``)."""
    if run.perplexity_ids is None:
        return
    windows = _windows(run, config)
    fused = {projection.layer: projection for projection in expert_projections(run.layers)}
    for layer, expert in zip(*np.nonzero(router.co_spiking)):
        if (int(layer), int(expert)) not in router.candidates:
            continue  # never routed over the router texts (possible with a floor and threshold of 0): no candidate
        row, col = router.candidates[(int(layer), int(expert))]
        projection = fused[int(layer)]
        with zeroed([(projection, projection.element(row, col, int(expert)))]):
            changed = perplexity(run.model, run.perplexity_ids, windows, config.perplexity.batch_size,
                                 desc=f"causal L{layer} E{expert}", progress=config.progress)
        router.causal_delta_ppl[layer, expert] = changed.perplexity - baseline


def evaluation_attrs(config: SuperweightsConfig) -> dict[str, Any]:
    return {"text": describe(config.data), "window_len": config.perplexity.window_len, "stride": config.perplexity.stride,
            "samples": config.perplexity.samples, "max_tokens": config.perplexity.max_tokens,
            "accuracy_samples": config.accuracy.samples, "seed": config.seed,
            "restore": config.perplexity.restore}
