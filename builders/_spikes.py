"""Hooks on every down projection: the largest |input| and |output|, their channels and tokens; MoE routing.

Each hook reduces its activation to a few numbers on the device (one ``max`` over the
flattened |x|), so a detection pass costs about one forward pass. Fused experts (one 3-D
tensor) are not modules of their own, so their hook recomputes each expert's intermediate
activation from the module's inputs (the tokens routed to it): for MoE layers a pass costs
about one more pass of the experts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from builders._capture import ForwardHooks
from builders._down_proj import DownProjection

# One row of maxima: input max, its channel, its token, output max, its channel, its token.
_FIELDS = 6


@dataclass
class Maxima:
    """Per (projection, expert): the largest |input| and |output| seen, where, over every batch so far."""

    values: np.ndarray  # (n, 6): in_max, in_channel, in_token, out_max, out_channel, out_token
    experts: np.ndarray  # (n,) the expert of each row (NO_EXPERT for dense projections)
    layers: np.ndarray  # (n,) the layer of each row
    projections: np.ndarray  # (n,) the index of each row's projection in the hooks' list


@dataclass
class Routing:
    """One MoE layer's routing counts over the tokens seen."""

    routed: np.ndarray  # tokens routed to each expert
    co_routed: np.ndarray  # of the spike tokens, those routed to each expert
    n_tokens: int = 0
    spike_tokens: int = 0  # tokens whose experts' output exceeds the spike threshold


def _row(inputs: torch.Tensor, outputs: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The six maxima of one (tokens, channels) input and output, as float64 on the device."""
    in_max, in_at = inputs.abs().reshape(-1).max(0)
    out_max, out_at = outputs.abs().reshape(-1).max(0)
    in_token, out_token = in_at // inputs.shape[-1], out_at // outputs.shape[-1]
    if token_ids is not None:  # rows of a subset of tokens: back to the batch's token numbers
        in_token, out_token = token_ids[in_token], token_ids[out_token]
    return torch.stack([in_max.double(), (in_at % inputs.shape[-1]).double(), in_token.double(),
                        out_max.double(), (out_at % outputs.shape[-1]).double(), out_token.double()])


def _linear(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, transposed: bool) -> torch.Tensor:
    return functional.linear(inputs, weight.t() if transposed else weight, bias)


def _expert_bias(module: nn.Module, name: str, expert: int) -> torch.Tensor | None:
    bias = getattr(module, f"{name}_bias", None) if getattr(module, "has_bias", False) else None
    return None if bias is None else bias[expert]


def expert_activations(module: nn.Module, hidden: torch.Tensor, expert: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fused experts module's intermediate activation and down-projection output for ``hidden`` rows of ``expert``.

    The down projection's own output, before any post-expert norm and the routing weight.
    """
    transposed, gated = bool(getattr(module, "is_transposed", False)), bool(getattr(module, "has_gate", True))
    up_name = "gate_up_proj" if gated else "up_proj"  # experts without a gate have an up projection only
    gate_up = _linear(hidden, getattr(module, up_name)[expert], _expert_bias(module, up_name, expert), transposed)
    intermediate = module._apply_gate(gate_up) if gated else module.act_fn(gate_up)
    output = _linear(intermediate, module.down_proj[expert], _expert_bias(module, "down_proj", expert), transposed)
    return intermediate, output


class SpikeHooks(ForwardHooks):
    """Hooks on ``projections`` recording maxima (and routing of fused experts) over every forward pass inside."""

    def __init__(self, projections: Sequence[DownProjection], spike_threshold: float, routing: bool = False) -> None:
        super().__init__([projection.module for projection in projections])
        self.projections = list(projections)
        self.spike_threshold = spike_threshold
        self.counts_routing = routing  # only the router analysis reads the counts; detection passes skip them
        self._rows: list[list[torch.Tensor]] = [[] for _ in self.projections]
        self._routing = {index: Routing(np.zeros(p.n_experts, np.int64), np.zeros(p.n_experts, np.int64))
                         for index, p in enumerate(self.projections) if p.kind == "experts"}
        self.token_offset = 0  # the batch's first token number: set by the caller before each forward pass

    def _make_hook(self, position: int) -> Any:
        projection = self.projections[position]

        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            hidden = inputs[0].reshape(-1, inputs[0].shape[-1])
            if projection.kind == "experts":
                self._rows[position].append(self._experts(position, module, hidden, inputs[1], output))
            else:
                row = _row(hidden, output.reshape(-1, output.shape[-1]))
                row[[2, 5]] += self.token_offset
                self._rows[position].append(row[None])

        return hook

    def _experts(self, position: int, module: nn.Module, hidden: torch.Tensor, top_k_index: torch.Tensor,
                 output: torch.Tensor) -> torch.Tensor:
        rows = []
        for expert in range(self.projections[position].n_experts):
            tokens = (top_k_index == expert).any(-1).nonzero().squeeze(-1)
            if tokens.numel() == 0:
                rows.append(torch.tensor([0, 0, -1, 0, 0, -1], dtype=torch.float64, device=hidden.device))
                continue
            intermediate, projected = expert_activations(module, hidden[tokens], expert)
            rows.append(_row(intermediate, projected, tokens + self.token_offset))
        if self.counts_routing:
            self._count_routing(position, top_k_index, output)
        return torch.stack(rows)

    def _count_routing(self, position: int, top_k_index: torch.Tensor, output: torch.Tensor) -> None:
        routing, n_experts = self._routing[position], self.projections[position].n_experts
        spikes = output.reshape(-1, output.shape[-1]).abs().amax(-1) > self.spike_threshold
        routed = torch.bincount(top_k_index.reshape(-1), minlength=n_experts)[:n_experts]
        co_routed = torch.bincount(top_k_index[spikes].reshape(-1), minlength=n_experts)[:n_experts]
        routing.n_tokens += int(top_k_index.shape[0])
        routing.spike_tokens += int(spikes.sum())
        routing.routed += routed.cpu().numpy()
        routing.co_routed += co_routed.cpu().numpy()

    def maxima(self) -> Maxima:
        """Every (projection, expert) row's maxima over all passes so far (one device sync)."""
        values, experts, layers, indices = [], [], [], []
        for index, (projection, rows) in enumerate(zip(self.projections, self._rows)):
            if not rows:
                continue
            stacked = torch.stack(rows).cpu().numpy()  # (passes, n, 6)
            values.append(_combine(stacked))
            count = stacked.shape[1]
            experts.append(np.arange(count) if projection.kind == "experts" else np.full(count, projection.expert))
            layers.append(np.full(count, projection.layer))
            indices.append(np.full(count, index))
        return Maxima(*(np.concatenate(parts) for parts in (values, experts, layers, indices)))

    def routing(self) -> dict[int, Routing]:
        """Layer -> routing counts of its fused experts."""
        return {self.projections[index].layer: routing for index, routing in self._routing.items()}

    def reset(self) -> None:
        self._rows = [[] for _ in self.projections]
        self.token_offset = 0


def _combine(stacked: np.ndarray) -> np.ndarray:
    """Across passes (axis 0): the input and output maxima each with their own channel and token."""
    best_in = stacked[:, :, 0].argmax(0)
    best_out = stacked[:, :, 3].argmax(0)
    columns = np.arange(stacked.shape[1])
    return np.concatenate([stacked[best_in, columns, :3], stacked[best_out, columns, 3:]], axis=1)
