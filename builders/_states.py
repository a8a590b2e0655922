"""Whole hidden states of one sequence: generation, then one forward pass that keeps every layer.

Layer names: ``embedding`` is ``output_hidden_states[0]`` (the input to block 0: token, and for
GPT-2 position, embeddings); ``layer_N`` is decoder block N's raw output, taken by a forward
hook (for N < last it equals ``output_hidden_states[N + 1]``; the last block's raw output is
not among them); ``final_norm`` is the final norm's output, ``output_hidden_states[-1]`` in
transformers v5.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from builders import _models as models
from builders._item_configs import GenerateConfig


@dataclass(frozen=True)
class Capture:
    """One prompt's continuation and every hidden state of prompt + continuation."""

    token_ids: np.ndarray  # (position,)
    n_prompt_tokens: int
    generated_text: str
    layer_names: list[str]
    states: torch.Tensor  # (layer, position, hidden), the model's dtype, on the CPU


@contextmanager
def block_outputs(blocks: Sequence[nn.Module]) -> Iterator[list[torch.Tensor | None]]:
    """Record each block's raw output during a forward pass; the hooks are removed on exit."""
    outputs: list[torch.Tensor | None] = [None] * len(blocks)
    handles = []
    try:
        for index, block in enumerate(blocks):
            handles.append(block.register_forward_hook(_recorder(outputs, index)))
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def _recorder(outputs: list[torch.Tensor | None], index: int) -> Any:
    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        # Llama-style decoder layers return a Tensor, GPT-2-style ones a tuple
        outputs[index] = (output[0] if isinstance(output, tuple) else output).detach()
    return hook


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every device, CUDA included


def make_deterministic() -> None:
    """Deterministic kernels everywhere; the cuBLAS setting must precede CUDA's initialisation."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def capture(model: nn.Module, tokenizer: Any, prompt: str, settings: GenerateConfig, n_layers: int) -> Capture:
    """Generate from ``prompt``, then run prompt + continuation once and keep every hidden state."""
    device = models.input_device(model)
    encoded = tokenizer(prompt, return_tensors="pt").to(device)
    seed_everything(settings.seed)
    with torch.inference_mode():
        sequence = model.generate(**encoded, max_new_tokens=settings.max_new_tokens, do_sample=settings.do_sample,
                                  temperature=settings.temperature if settings.do_sample else None,
                                  top_p=None, top_k=None, pad_token_id=tokenizer.eos_token_id)
        states = _states(model, sequence, n_layers)
    n_prompt = int(encoded["input_ids"].shape[1])
    generated = tokenizer.decode(sequence[0, n_prompt:], skip_special_tokens=True)
    names = ["embedding", *(f"layer_{i}" for i in range(n_layers)), "final_norm"]
    return Capture(sequence[0].cpu().numpy(), n_prompt, generated, names, states)


def _states(model: nn.Module, sequence: torch.Tensor, n_layers: int) -> torch.Tensor:
    blocks = models.decoder_layers(model, n_layers)
    with block_outputs(list(blocks)) as outputs:
        hidden = model(input_ids=sequence, output_hidden_states=True, use_cache=False).hidden_states
    if any(output is None for output in outputs):
        raise RuntimeError("a decoder block did not run during the forward pass")
    layers = [hidden[0], *outputs, hidden[-1]]
    return torch.stack([layer[0] for layer in layers]).cpu()  # type: ignore[index]
