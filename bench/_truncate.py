"""A forward pass cut after a given decoder block, by swapping the block list for its prefix.

The builders stop their forward at the last hooked block (``builders._capture`` raises once the
last collection point has run), so they never run the later blocks or the final norm. A bare
forward of the whole model would therefore flatter them; the fair baseline is the same blocks,
without hooks. ``truncated_body`` gives that baseline for any model ``builders._models`` knows,
and hands the original blocks back afterwards. Shared by collect_bench.py and vectors_bench.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from builders import _models as models

_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm")  # Llama/Qwen/OLMo/Mixtral, GPT-2, GPT-NeoX


def _owner(root: nn.Module, target: nn.Module) -> tuple[nn.Module, str]:
    """The parent module and attribute name under which ``target`` sits in ``root``."""
    for parent in root.modules():
        for name, child in parent.named_children():
            if child is target:
                return parent, name
    raise LookupError(f"{type(target).__name__} is not inside {type(root).__name__}")


@contextlib.contextmanager
def _swapped(parent: nn.Module, name: str, replacement: nn.Module) -> Iterator[None]:
    original = getattr(parent, name)
    setattr(parent, name, replacement)
    try:
        yield
    finally:
        setattr(parent, name, original)  # the same model serves the builder's rounds afterwards


@contextlib.contextmanager
def truncated_body(model: nn.Module, n_layers: int, last_block: int) -> Iterator[nn.Module]:
    """``decoder_body(model)`` running blocks ``0 .. last_block`` only, without hooks or final norm.

    The same computation as a builder's hooked forward, minus what the hooks do.
    """
    body = models.decoder_body(model)
    layers = models.decoder_layers(model, n_layers)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_swapped(*_owner(body, layers), nn.ModuleList(layers[: last_block + 1])))
        for name in _FINAL_NORMS:
            if isinstance(getattr(body, name, None), nn.Module):
                stack.enter_context(_swapped(body, name, nn.Identity()))
        yield body
