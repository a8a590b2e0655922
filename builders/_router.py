"""MoE router analysis: how often each expert is routed, which experts co-spike, their candidates.

Over ``moe.router_samples`` texts (one forward pass each, no padding), for every layer with
fused experts and every expert e (docs/superweights.md defines them):
- ``p_active = tokens routed to e / tokens`` (e among the token's top-k; the values of a layer sum to k);
- a *spike token* of a layer is one whose experts' combined output has some |value| above the
  spike threshold; ``co_spike = spike tokens routed to e / spike tokens`` (NaN without spike tokens);
- ``scored = p_active >= p_active_floor``; ``co_spiking = scored and co_spike >= co_spike_threshold``.
Unscored experts are not candidates in detection. With causal scoring, each co-spiking expert's
candidate (its largest |output| row and largest |input| column over the texts) is zeroed and
the perplexity change recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from builders._detect import run_passes
from builders._down_proj import DownProjection
from builders._spikes import Maxima, SpikeHooks


@dataclass
class RouterAnalysis:
    """(layer, expert) arrays; rows of layers without fused experts are NaN / False."""

    p_active: np.ndarray
    co_spike: np.ndarray
    scored: np.ndarray
    co_spiking: np.ndarray
    candidates: dict[tuple[int, int], tuple[int, int]]  # (layer, expert) -> (row, col) of its largest spikes
    causal_delta_ppl: np.ndarray

    def eligible(self, layer: int, expert: int) -> bool:
        """May (layer, expert) hold a super weight? Dense projections (expert -1) always may."""
        return expert < 0 or bool(self.scored[layer, expert])


def expert_projections(layers: list[list[DownProjection]]) -> list[DownProjection]:
    return [projection for layer in layers for projection in layer if projection.kind == "experts"]


def analyse_router(body: nn.Module, layers: list[list[DownProjection]], texts: list[torch.Tensor],
                   threshold: float, p_active_floor: float, co_spike_threshold: float) -> RouterAnalysis:
    """Routing statistics of every fused-experts layer over ``texts`` (each (1, tokens) on the device)."""
    projections = expert_projections(layers)
    n_experts = max(projection.n_experts for projection in projections)
    p_active = np.full((len(layers), n_experts), np.nan)
    co_spike = np.full((len(layers), n_experts), np.nan)
    with SpikeHooks(projections, threshold, routing=True) as hooks:
        maxima = run_passes(body, hooks, texts)
        for layer, routing in hooks.routing().items():
            count = len(routing.routed)
            p_active[layer, :count] = routing.routed / max(routing.n_tokens, 1)
            if routing.spike_tokens:
                co_spike[layer, :count] = routing.co_routed / routing.spike_tokens
    scored = np.nan_to_num(p_active, nan=-1.0) >= p_active_floor
    co_spiking = scored & (np.nan_to_num(co_spike, nan=-1.0) >= co_spike_threshold)
    return RouterAnalysis(p_active, co_spike, scored, co_spiking, _candidates(maxima),
                          np.full(p_active.shape, np.nan))


def _candidates(maxima: Maxima) -> dict[tuple[int, int], tuple[int, int]]:
    """Each expert's W[row = largest |output| channel, col = largest |input| channel]."""
    return {(int(layer), int(expert)): (int(values[4]), int(values[1]))
            for layer, expert, values in zip(maxima.layers, maxima.experts, maxima.values) if values[2] >= 0}
