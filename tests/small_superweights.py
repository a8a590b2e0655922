"""Synthetic tables of the store's ``superweights`` group (no model): every value a test reads back is known.

A dense model has super weights at layers 1 and 3 of 4; a mixture-of-experts model one at layer 2 of 6,
in expert 3, and a router table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np
import xarray as xr

THRESHOLD = 50.0
DENSE_PPL = {"baseline": 10.0, "sw0": 40.0, "sw1": 12.0, "all": 500.0, "all_restored": 11.0}
ACCURACY = {"baseline": 0.5, "sw0": 0.25, "sw1": 0.45, "all": 0.3, "all_restored": 0.48}
CO_SPIKES = {(2, 3): 0.8, (4, 1): 0.5}  # (layer, expert): co-spike rate in the router table


def model_attributes(architecture: str = "LlamaForCausalLM", n_layers: int = 4, is_moe: bool = False,
                     n_params: int | None = 123) -> dict[str, object]:
    """A model node's attributes; ``n_params=None`` leaves out that optional one."""
    attrs: dict[str, object] = {
        "model_id": f"tiny/{architecture}", "architecture": architecture, "n_layers": n_layers, "hidden_size": 8,
        "intermediate_size": 16, "is_moe": is_moe, "n_experts": 4 if is_moe else 0, "dtype": "float32",
        "device": "cpu", "versions": {"torch": "2"}, "created": "2026-01-01T00:00:00Z",
        "settings": json.dumps({"detect": {"spike_threshold": THRESHOLD}})}
    if n_params is not None:
        attrs["n_params"] = np.int64(n_params)
    return attrs


def detection_table(n_layers: int = 4, spikes: tuple[int, ...] = (1, 3)) -> xr.Dataset:
    """Iteration i finds the spike at layer spikes[i] (input 100 + layer, output 1000 + layer);
    a last iteration finds nothing. Every other maximum is below the threshold."""
    shape = (len(spikes) + 1, n_layers)
    input_max = np.arange(1, 1 + np.prod(shape), dtype=np.float32).reshape(shape)
    output_max = input_max * 2
    for iteration, layer in enumerate(spikes):
        input_max[iteration, layer], output_max[iteration, layer] = 100.0 + layer, 1000.0 + layer
    dims = ("iteration", "layer")
    return xr.Dataset(
        {"input_max": (dims, input_max), "input_channel": (dims, np.full(shape, 5, np.int32)),
         "input_token": (dims, np.full(shape, 1, np.int32)), "output_max": (dims, output_max),
         "output_channel": (dims, np.full(shape, 9, np.int32)), "output_token": (dims, np.full(shape, 1, np.int32)),
         "expert": (dims, np.full(shape, -1, np.int32)),
         "passed": (dims, (input_max > THRESHOLD) & (output_max > THRESHOLD))},
        coords={"iteration": np.arange(shape[0], dtype=np.int32), "layer": np.arange(n_layers, dtype=np.int32)},
        attrs={"spike_threshold": THRESHOLD, "max_iterations": 10, "calibration_tokens": 32,
               "stop_reason": "nothing passed the threshold"})


def weights_table(layers: tuple[int, ...] = (1, 3), expert: int = -1, layout: str = "out_in") -> xr.Dataset:
    """One super weight per layer in ``layers``, with the spikes detection_table finds there."""
    n = len(layers)
    return xr.Dataset({
        "tensor": ("record", np.array([f"model.layers.{layer}.mlp.down_proj.weight" for layer in layers], object)),
        "layer": ("record", np.array(layers, np.int32)), "row": ("record", np.arange(3, 3 + n, dtype=np.int32)),
        "col": ("record", np.arange(11, 11 + n, dtype=np.int32)), "expert": ("record", np.full(n, expert, np.int32)),
        "layout": ("record", np.array([layout] * n, object)),
        "value": ("record", np.array([-1.875, 0.1][:n], np.float32)),
        "input_spike": ("record", np.array([100.0 + layer for layer in layers], np.float32)),
        "output_spike": ("record", np.array([1000.0 + layer for layer in layers], np.float32)),
        "iteration": ("record", np.arange(n, dtype=np.int32)),
    })


def evaluations_table(perplexities: dict[str, float], n_weights: int) -> xr.Dataset:
    """Perplexity and loss of each ablation, and its ACCURACY on two tasks (hellaswag's acc and acc_norm)."""
    rows = []
    for ablation, perplexity in perplexities.items():
        zeroed = ("" if ablation == "baseline" else ablation[2:] if ablation.startswith("sw")
                  else ",".join(map(str, range(n_weights))))
        rows += [(ablation, zeroed, "perplexity", "wikitext", "perplexity", perplexity, 2048),
                 (ablation, zeroed, "perplexity", "wikitext", "loss", math.log(perplexity), 2048),
                 (ablation, zeroed, "accuracy", "hellaswag", "acc", ACCURACY[ablation] - 0.1, 50),
                 (ablation, zeroed, "accuracy", "hellaswag", "acc_norm", ACCURACY[ablation], 50),
                 (ablation, zeroed, "accuracy", "gsm8k", "exact_match", ACCURACY[ablation] / 2, 20)]
    columns = list(zip(*rows)) if rows else [[]] * 7
    names = ("ablation", "zeroed", "kind", "task", "metric")
    data = {name: ("record", np.array(column, object)) for name, column in zip(names, columns)}
    data |= {"value": ("record", np.array(columns[5], np.float64)), "n": ("record", np.array(columns[6], np.int64))}
    return xr.Dataset(data, attrs={"window_len": 64, "stride": 32, "text": "wikitext", "samples": 5,
                                   "accuracy_samples": 50, "seed": 0})


def router_table(n_layers: int, n_experts: int = 4,
                 co_spikes: Mapping[tuple[int, int], float] = CO_SPIKES) -> xr.Dataset:
    """Routing rates rising over (layer, expert); ``co_spikes`` gives the (layer, expert) pairs that co-spike."""
    p_active = np.linspace(0.0, 0.6, n_layers * n_experts, dtype=np.float32).reshape(n_layers, n_experts)
    co_spike = np.zeros_like(p_active)
    for (layer, expert), rate in co_spikes.items():
        co_spike[layer, expert] = rate
    dims = ("layer", "expert")
    return xr.Dataset({"p_active": (dims, p_active), "scored": (dims, p_active >= 0.01), "co_spike": (dims, co_spike),
                       "co_spiking": (dims, (p_active >= 0.01) & (co_spike >= 0.12)),
                       "causal_delta_ppl": (dims, np.full(p_active.shape, np.nan, np.float32))},
                      coords={"layer": np.arange(n_layers, dtype=np.int32), "expert": np.arange(n_experts, dtype=np.int32)},
                      attrs={"router_samples": 4, "p_active_floor": 0.01, "co_spike_threshold": 0.12,
                             "causal_scoring": False})
