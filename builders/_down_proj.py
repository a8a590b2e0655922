"""Every decoder layer's MLP down projection(s), found by name and type, addressed in Hugging Face layout.

A super weight is named ``W[row, col]`` with ``row`` the output hidden channel and ``col`` the
input intermediate channel, whatever the architecture. The parameter element that holds it is:
- ``nn.Linear`` (Llama, Mistral, OLMo, Qwen ``down_proj``; GPT-NeoX ``dense_4h_to_h``): ``weight[row, col]``;
- GPT-2's ``Conv1D`` ``c_proj`` stores the transpose: ``weight[col, row]``;
- transformers v5's fused experts (Mixtral, Qwen-MoE ``experts.down_proj``, one 3-D tensor
  ``[expert, hidden, intermediate]``): ``down_proj[expert, row, col]`` (``[expert, col, row]`` when
  the module says ``is_transposed``); per-expert modules (``experts.3.w2``) are plain Linears.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from builders import _models as models
from builders.errors import ModelError

_LINEAR_NAMES = ("down_proj", "dense_4h_to_h", "w2", "fc2", "fc_out")
_EXPERT_INDEX = re.compile(r"\.experts\.(\d+)\.")
NO_EXPERT = -1


@dataclass(frozen=True)
class DownProjection:
    """One down projection of one layer: the module to hook and the parameter that holds W."""

    layer: int
    tensor: str
    module: nn.Module
    kind: str  # "linear", "conv1d" or "experts" (a fused 3-D tensor)
    expert: int = NO_EXPERT  # a per-expert Linear's expert; fused experts carry theirs per element

    @property
    def layout(self) -> str:
        """``out_in`` when the element is ``[.., row, col]``, ``in_out`` when it is ``[.., col, row]``."""
        transposed = self.kind == "conv1d" or (self.kind == "experts" and getattr(self.module, "is_transposed", False))
        return "in_out" if transposed else "out_in"

    @property
    def parameter(self) -> nn.Parameter:
        return self.module.down_proj if self.kind == "experts" else self.module.weight

    @property
    def n_experts(self) -> int:
        return int(self.parameter.shape[0]) if self.kind == "experts" else 1

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of W in Hugging Face layout: (hidden size, intermediate size)."""
        sizes = tuple(int(size) for size in self.parameter.shape[-2:])
        return (sizes[1], sizes[0]) if self.layout == "in_out" else (sizes[0], sizes[1])

    def column(self, col: int, expert: int = NO_EXPERT) -> tuple[int | slice, ...]:
        """The index of column ``W[:, col]``: intermediate neuron ``col``'s whole output direction."""
        return self.element(slice(None), col, expert)  # type: ignore[arg-type]

    def element(self, row: int, col: int, expert: int = NO_EXPERT) -> tuple[int, ...]:
        """The index of ``W[row, col]`` (of ``expert`` for fused experts) in :attr:`parameter`."""
        pair = (col, row) if self.layout == "in_out" else (row, col)
        return (expert, *pair) if self.kind == "experts" else pair


def down_projections(model: nn.Module, n_layers: int) -> list[list[DownProjection]]:
    """Per decoder layer, its MLP down projection(s): one for a dense MLP, experts and a shared expert for MoE."""
    layers = models.decoder_layers(model, n_layers)
    prefix = next(name for name, module in model.named_modules() if module is layers)
    found = []
    for index, layer in enumerate(layers):
        projections = [projection for name, module in layer.named_modules()
                       if (projection := _classify(index, f"{prefix}.{index}.{name}", module)) is not None]
        if not projections:
            raise ModelError(f"found no MLP down projection in layer {index} of {type(model).__name__}; "
                             "supported: down_proj, dense_4h_to_h, w2, fc2 Linears, GPT-2 c_proj, fused experts")
        found.append(projections)
    return found


def _classify(layer: int, name: str, module: nn.Module) -> DownProjection | None:
    last = name.rsplit(".", 1)[-1]
    fused = getattr(module, "down_proj", None)
    if isinstance(fused, nn.Parameter) and fused.ndim == 3:
        return DownProjection(layer, f"{name}.down_proj", module, "experts")
    if "attn" in name or "attention" in name:
        return None  # GPT-2's attention has a c_proj too
    if last in _LINEAR_NAMES and isinstance(module, nn.Linear):
        expert = _EXPERT_INDEX.search(name + ".")
        return DownProjection(layer, f"{name}.weight", module, "linear", int(expert.group(1)) if expert else NO_EXPERT)
    if last == "c_proj" and type(module).__name__ == "Conv1D":
        return DownProjection(layer, f"{name}.weight", module, "conv1d")
    return None


@contextmanager
def zeroed(cells: list[tuple[DownProjection, tuple[int, ...]]]) -> Iterator[None]:
    """The given parameter elements set to 0 inside, their values put back on the way out (even on error)."""
    saved = []
    try:
        with torch.no_grad():
            for projection, element in cells:
                saved.append((projection, element, projection.parameter[element].clone()))
                projection.parameter[element] = 0
        yield
    finally:
        with torch.no_grad():
            for projection, element, value in reversed(saved):
                projection.parameter[element] = value
