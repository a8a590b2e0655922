"""Forward hooks that reduce activations to per-token statistics on the model's device.

Only the reduced statistics (metrics x tokens, each token's peak channel, and k sampled channels) leave the
device; the full (tokens, d) activation never does. After the last hooked layer
the forward pass is cut short: the rest of the network would be wasted work.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import numpy as np
import torch
from torch import nn

from builders._metrics import compute_statistics


class _StopForward(Exception):
    """Raised by the last hook to end the forward pass early."""


def _hidden(output: Any) -> torch.Tensor:
    # Llama-style decoder layers return a Tensor, GPT-2-style ones a tuple.
    return output[0] if isinstance(output, tuple) else output


class ForwardHooks:
    """Context manager holding one forward hook per module; the hooks are always removed on exit."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self._modules = list(modules)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> Self:
        try:
            for position, module in enumerate(self._modules):
                self._handles.append(module.register_forward_hook(self._make_hook(position)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _make_hook(self, position: int) -> Any:
        raise NotImplementedError


class LayerOutputs(ForwardHooks):
    """The raw outputs of ``modules`` in one forward pass, which ends after the last of them."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__(modules)
        self._outputs: list[torch.Tensor | None] = []

    def _make_hook(self, position: int) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self._outputs[position] = _hidden(output)
            if all(value is not None for value in self._outputs):
                raise _StopForward  # the rest of the network would be wasted work

        return hook

    def run(self, body: nn.Module, token_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """Each hooked module's output, (rows, tokens, d), for one batch."""
        self._outputs = [None] * len(self._modules)
        with torch.inference_mode():
            try:
                body(input_ids=token_ids, attention_mask=attention_mask, use_cache=False)
            except _StopForward:
                pass
        if any(value is None for value in self._outputs):
            raise RuntimeError("a hooked layer did not run; the model skipped a collection point")
        return self._outputs  # type: ignore[return-value]


class StatsCapture(ForwardHooks):
    """Per-token statistics of ``modules``' outputs (see ``run``)."""

    def __init__(
        self,
        modules: Sequence[nn.Module],
        metric_names: Sequence[str],
        channel_index: np.ndarray,
        stop_after_last: bool = True,
    ) -> None:
        super().__init__(modules)
        self._metric_names = list(metric_names)
        self._channel_index = torch.as_tensor(channel_index, dtype=torch.long)
        self._stop_after_last = stop_after_last
        self._values: list[torch.Tensor | None] = []
        self._peaks: list[torch.Tensor | None] = []
        self._channels: list[torch.Tensor | None] = []

    def _make_hook(self, position: int) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            hidden = _hidden(output)
            flat = hidden.reshape(-1, hidden.shape[-1])
            self._values[position], self._peaks[position] = compute_statistics(flat, self._metric_names)
            if self._channel_index.shape[-1]:
                index = self._channel_index[position].to(flat.device)
                self._channels[position] = flat.index_select(1, index).float()
            if self._stop_after_last and self._all_captured():
                raise _StopForward

        return hook

    def _all_captured(self) -> bool:
        return all(value is not None for value in self._values)

    def run(self, body: nn.Module, token_ids: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Metrics (layer, metric, tokens), channels (layer, tokens, k) and the peak's channel
        (layer, tokens) int32 for one batch."""
        n_points = len(self._modules)
        self._values, self._peaks, self._channels = [None] * n_points, [None] * n_points, [None] * n_points
        with torch.inference_mode():
            try:
                body(input_ids=token_ids, use_cache=False)
            except _StopForward:
                pass
        if not self._all_captured():
            raise RuntimeError("a hooked layer did not run; the model skipped a collection point")
        n_tokens = token_ids.numel()
        values = np.stack([v.cpu().numpy() for v in self._values])  # type: ignore[union-attr]
        channels = np.stack(
            [c.cpu().numpy() if c is not None else np.zeros((n_tokens, 0), np.float32) for c in self._channels]
        )
        peaks = np.stack([p.cpu().numpy() for p in self._peaks])  # type: ignore[union-attr]
        return values, channels, peaks
