"""The records of one model as the ``superweights`` group's tables (xarray Datasets; docs/store-format.md)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from builders._ablations import Evaluation
from builders._detect import LAYER_COLUMNS, Detection, SuperWeight
from builders._router import RouterAnalysis

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
