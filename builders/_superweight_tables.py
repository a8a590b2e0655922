"""The records of one model as the ``superweights`` group's tables (xarray Datasets; docs/store-format.md)."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from builders import _models as models
from builders._ablations import Evaluation
from builders._detect import LAYER_COLUMNS, Detection, SuperWeight
from builders._down_proj import DownProjection
from builders._provenance import now, versions
from builders._router import RouterAnalysis, expert_projections
from builders._superweight_configs import SuperweightsConfig

_INT_COLUMNS = ("input_channel", "input_token", "output_channel", "output_token", "expert")


def detection_table(detection: Detection, threshold: float, max_iterations: int, calibration_tokens: int) -> xr.Dataset:
    """(iteration, layer) maxima; layers with no eligible projection hold NaN and -1."""
    stacked = np.stack(detection.iterations)  # (iteration, layer, column)
    variables = {}
    for index, name in enumerate(LAYER_COLUMNS):
        values = stacked[:, :, index]
        if name in _INT_COLUMNS:
            values = np.where(np.isnan(values), -1, values).astype(np.int32)
        elif name == "passed":
            values = values == 1
        else:
            values = values.astype(np.float32)
        variables[name] = (("iteration", "layer"), values)
    coords = {"iteration": np.arange(stacked.shape[0], dtype=np.int32), "layer": np.arange(stacked.shape[1], dtype=np.int32)}
    attrs = {"spike_threshold": threshold, "max_iterations": max_iterations, "calibration_tokens": calibration_tokens,
             "stop_reason": detection.stop_reason}
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def weights_table(weights: list[SuperWeight]) -> xr.Dataset:
    """One record per super weight, in the order found."""
    def column(name: str, dtype: type | str) -> tuple[str, np.ndarray]:
        return ("record", np.array([getattr(weight, name) for weight in weights], dtype=dtype))

    variables = {name: column(name, np.int32) for name in ("layer", "row", "col", "expert", "iteration")}
    variables.update({name: column(name, np.float32) for name in ("value", "input_spike", "output_spike")})
    variables.update({name: column(name, object) for name in ("tensor", "layout")})
    return xr.Dataset(variables, coords={"record": np.arange(len(weights), dtype=np.int32)})


def evaluations_table(rows: list[Evaluation], attrs: dict[str, object]) -> xr.Dataset:
    """The long-format evaluations: one record per (ablation, task, metric)."""
    def column(name: str, dtype: type | str) -> tuple[str, np.ndarray]:
        return ("record", np.array([getattr(row, name) for row in rows], dtype=dtype))

    variables = {name: column(name, object) for name in ("ablation", "zeroed", "kind", "task", "metric")}
    variables.update({"value": column("value", np.float64), "n": column("n", np.int64)})
    return xr.Dataset(variables, coords={"record": np.arange(len(rows), dtype=np.int32)}, attrs=attrs)


def router_table(router: RouterAnalysis, attrs: dict[str, object]) -> xr.Dataset:
    dims = ("layer", "expert")
    n_layers, n_experts = router.p_active.shape
    return xr.Dataset(
        {"p_active": (dims, router.p_active.astype(np.float32)), "scored": (dims, router.scored),
         "co_spike": (dims, router.co_spike.astype(np.float32)), "co_spiking": (dims, router.co_spiking),
         "causal_delta_ppl": (dims, router.causal_delta_ppl.astype(np.float32))},
        coords={"layer": np.arange(n_layers, dtype=np.int32), "expert": np.arange(n_experts, dtype=np.int32)},
        attrs=attrs)


def evaluation_rows(table: xr.Dataset) -> list[Evaluation]:
    """The evaluations table read back as rows (for a resumed build)."""
    names = ("ablation", "zeroed", "kind", "task", "metric", "value", "n")
    return [Evaluation(*(cell_value(table[name].values[index]) for name in names)) for index in range(table.sizes["record"])]


def cell_value(value: Any) -> Any:
    """A table cell as a Python value (NumPy scalars have .item(); text cells are str already)."""
    return value.item() if hasattr(value, "item") else value


def model_provenance(source: models.ModelSource, hf_config: Any, run: Any) -> dict[str, Any]:
    """A model node's attributes but its builder's settings: which weights, which shapes, which run."""
    fused = expert_projections(run.layers)
    return {
        "model_id": source.model_id, "revision": source.revision, "file_sha256": source.file_sha256,
        "architecture": type(run.model).__name__, "n_layers": len(run.layers),
        "hidden_size": models.hidden_size(hf_config), "intermediate_size": intermediate_size(run.layers),
        "is_moe": bool(fused), "n_experts": max((projection.n_experts for projection in fused), default=0),
        "dtype": str(next(run.model.parameters()).dtype).removeprefix("torch."), "device": str(run.device),
        "created": now(), "versions": versions(),
    }


def intermediate_size(layers: list[list[DownProjection]]) -> int:
    """The input width of the first expert's down projection, else of the first dense one."""
    projections = [projection for layer in layers for projection in layer]
    projection = next((p for p in projections if p.kind == "experts"), projections[0])
    return int(projection.parameter.shape[-2 if projection.layout == "in_out" else -1])


def router_attrs(config: SuperweightsConfig) -> dict[str, Any]:
    return {"router_samples": config.moe.router_samples, "p_active_floor": config.moe.p_active_floor,
            "co_spike_threshold": config.moe.co_spike_threshold, "causal_scoring": config.moe.causal_scoring}


def detection_lines(detection: Detection) -> list[str]:
    """One line per iteration naming the passing layers and their spikes (for --verbose)."""
    in_max, out_max, passed = (LAYER_COLUMNS.index(name) for name in ("input_max", "output_max", "passed"))
    lines = []
    for iteration, table in enumerate(detection.iterations):
        passing = [f"L{layer} in {table[layer, in_max]:.1f} out {table[layer, out_max]:.1f}"
                   for layer in np.flatnonzero(table[:, passed] == 1)]
        lines.append(f"  iteration {iteration}: passed {', '.join(passing) or 'none'}")
    return [*lines, f"  stopped: {detection.stop_reason}"]


def model_summary(label: str, weights: list[SuperWeight], evaluations: list[Evaluation]) -> str:
    """The line printed when a model is done: its weights and its perplexities."""
    found = ", ".join(f"L{w.layer} W[{w.row},{w.col}]" + (f" expert {w.expert}" if w.expert >= 0 else "") for w in weights)
    perplexities = {row.ablation: row.value for row in evaluations if row.metric == "perplexity"}
    shown = ", ".join(f"{name} {value:.4g}" for name, value in perplexities.items())
    return f"Model {label!r}: {len(weights)} super weight(s) {found}" + (f"; perplexity {shown}" if shown else "")
