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

from store import CARD_METRICS, StoreLocation, prepare_superweights, write_summary, write_table

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


CARD_LAYERS = (1, 3)  # the cards' layers, in turn: weights_table()'s super weights
TOKEN_CLASSES = ("digits_years", "punctuation_brackets", "function_words", "capitalised", "whitespace",
                 "code_symbols")
WEIGHT_BASELINE = (3.0, 2.5, 1.0, 0.25)  # the weight cards' baseline, by metric


def _text(values: list[str]) -> np.ndarray:
    return np.array(values, dtype=object)


def _card_who(n_cards: int) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """Which down projection card i reads: mlp_out of layer CARD_LAYERS[i % 2], no expert."""
    layers = [CARD_LAYERS[i % len(CARD_LAYERS)] for i in range(n_cards)]
    return {"tensor": ("card", _text(["mlp_out"] * n_cards)),
            "parameter": ("card", _text([f"model.layers.{layer}.mlp.down_proj.weight" for layer in layers])),
            "layer": ("card", np.array(layers, np.int32)), "expert": ("card", np.full(n_cards, -1, np.int32)),
            "p_active": ("card", np.full(n_cards, np.nan, np.float32))}


def _ranked(prefix: str, n_cards: int, top_k: int, first_id: int) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """``{prefix}_id`` first_id + 100 * card + rank, and its ``_tok`` "t<id>" and ``_str`` "s<id>"."""
    ids = first_id + 100 * np.arange(n_cards, dtype=np.int32)[:, None] + np.arange(top_k, dtype=np.int32)
    dims = ("card", "rank")
    return {f"{prefix}_id": (dims, ids.astype(np.int32)),
            f"{prefix}_tok": (dims, _text([f"t{i}" for i in ids.ravel()]).reshape(ids.shape)),
            f"{prefix}_str": (dims, _text([f"s{i}" for i in ids.ravel()]).reshape(ids.shape))}


def neuron_cards_table(n_cards: int = 2, top_k: int = 3) -> xr.Dataset:
    """Card i: neuron 11 + i (weights_table()'s columns) of layer CARD_LAYERS[i % 2], source "superweight"
    for even cards and "asked" for odd ones; up ids 100 * i + rank, down ids 5000 + 100 * i + rank;
    enrichment in "digits_years" only (score 2.0 + i, count 1, examples ["1999"])."""
    card, n_classes = np.arange(n_cards), len(TOKEN_CLASSES)
    rank = np.arange(top_k, dtype=np.float32)
    score = np.zeros((n_cards, n_classes))
    score[:, 0] = 2.0 + card
    count = np.zeros((n_cards, n_classes), np.int32)
    count[:, 0] = 1
    examples = np.full((n_cards, n_classes), "[]", dtype=object)
    examples[:, 0] = json.dumps(["1999"])
    by_class = ("card", "token_class")
    return xr.Dataset(
        {**_card_who(n_cards), "neuron": ("card", (11 + card).astype(np.int32)),
         "source": ("card", _text(["superweight" if i % 2 == 0 else "asked" for i in range(n_cards)])),
         "label": ("card", _text(["prediction:digits_years" if i % 2 == 0 else "suppression"
                                  for i in range(n_cards)])),
         "var": ("card", 0.5 + card.astype(np.float64)), "skew": ("card", 1.5 + card.astype(np.float64)),
         "kurt": ("card", 10.0 + card.astype(np.float64)),
         **{name: ("card", np.full(n_cards, np.nan)) for name in ("cos_var", "cos_skew", "cos_kurt")},
         **_ranked("up", n_cards, top_k, 0),
         "up_effect": (("card", "rank"), np.tile(np.float32(3.0) - rank, (n_cards, 1))),
         **_ranked("down", n_cards, top_k, 5000),
         "down_effect": (("card", "rank"), np.tile(np.float32(-3.0) + rank, (n_cards, 1))),
         "enrichment_score": (by_class, score), "enrichment_count": (by_class, count),
         "enrichment_examples": (by_class, examples)},
        coords={"card": card.astype(np.int32), "token_class": _text(list(TOKEN_CLASSES))},
        attrs={"settings": json.dumps({"cards": {"top_k": top_k}, "model": {"dtype": "float32"}}), "top_k": top_k,
               "cosine": False, "enrichment": True, "enrichment_top": 50, "created": "2026-01-02T00:00:00Z"})


def weight_cards_table(n_cards: int = 2, top_k: int = 3, n_windows: int = 4,
                       cascade_layers: tuple[int, ...] = (0, 2)) -> xr.Dataset:
    """Card i: weights_table()'s record i (row 3 + i, col 11 + i, weights_record i) in layer CARD_LAYERS[i % 2];
    baseline WEIGHT_BASELINE for every card; delta (i + 1) * (m + 1) / 2 for metric m, its bootstrap interval
    delta ± 0.125; gain ids 100 * i + rank, loss ids 5000 + 100 * i + rank; window w scores 60 + w tokens."""
    card, n_metrics = np.arange(n_cards), len(CARD_METRICS)
    delta = (card[:, None] + 1) * (np.arange(n_metrics) + 1) / 2.0
    by_metric, ranked = ("card", "metric"), ("card", "rank")
    by_layer = ("card", "cascade_layer")
    n_layers = len(cascade_layers)
    window_baseline = np.array(WEIGHT_BASELINE) + 0.01 * np.arange(n_windows)[:, None]
    return xr.Dataset(
        {**_card_who(n_cards), "row": ("card", (3 + card).astype(np.int32)),
         "col": ("card", (11 + card).astype(np.int32)),
         "value": ("card", np.array([[-1.875, 0.1][i % 2] for i in range(n_cards)], np.float32)),
         "weights_record": ("card", card.astype(np.int32)),
         "random_row": ("card", (7 + card).astype(np.int32)), "random_col": ("card", (2 + card).astype(np.int32)),
         "baseline": (by_metric, np.tile(WEIGHT_BASELINE, (n_cards, 1))), "delta": (by_metric, delta),
         "random_coord_delta": (by_metric, delta / 100), "neuron_zero_delta": (by_metric, delta * 2),
         "bootstrap_mean": (by_metric, delta + 0.01), "ci_low": (by_metric, delta - 0.125),
         "ci_high": (by_metric, delta + 0.125),
         **_ranked("gain", n_cards, top_k, 0),
         "gain_delta_prob": (ranked, np.tile(0.1 / (1.0 + np.arange(top_k)), (n_cards, 1))),
         **_ranked("loss", n_cards, top_k, 5000),
         "loss_delta_prob": (ranked, np.tile(-0.1 / (1.0 + np.arange(top_k)), (n_cards, 1))),
         "cascade_entropy": (by_layer, np.full((n_cards, n_layers), 0.75)),
         "cascade_margin": (by_layer, np.full((n_cards, n_layers), -0.5)),
         "window_tokens": ("window", np.arange(60, 60 + n_windows, dtype=np.int64)),
         "window_baseline": (("window", "metric"), window_baseline),
         "window_delta": (("card", "window", "metric"), np.repeat(delta[:, None, :], n_windows, axis=1))},
        coords={"card": card.astype(np.int32), "metric": _text(list(CARD_METRICS)),
                "cascade_layer": np.array(cascade_layers, np.int32)},
        attrs={"settings": json.dumps({"cards": {"top_k": top_k}, "model": {"dtype": "float32"}}),
               "text": "wikitext", "n_tokens": int(np.arange(60, 60 + n_windows).sum()), "n_windows": n_windows,
               "window_len": 64, "stride": 64, "drop_first_token": True, "margin_k": 5, "bootstrap": 200,
               "confidence": 0.95, "seed": 0, "weights_from": "store", "created": "2026-01-02T00:00:00Z"})


def write_calm_model(location: StoreLocation) -> None:
    """A model "calm" with no super weight: an empty weights table and a baseline-only evaluation
    (accuracy skipped). Its results are results too: they export and plot."""
    prepare_superweights(location, "calm", model_attributes("GPT2LMHeadModel", 3, False, n_params=None))
    write_table(location, "calm", "detection", detection_table(3, ()))
    write_table(location, "calm", "weights", weights_table(()))
    baseline = evaluations_table({"baseline": 20.0}, 0)
    write_table(location, "calm", "evaluations", baseline.isel(record=baseline["kind"] == "perplexity"))
    write_summary(location)
