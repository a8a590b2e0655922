"""A model loaded and ready to compute statistics: the same in a build's process and on a dask worker."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from builders import _models as models
from builders._config import CollectConfig


@dataclass(frozen=True)
class ModelRuntime:
    """The loaded model, the modules hooked for statistics, and the dtype it runs in."""

    model: nn.Module
    modules: list[nn.Module]

    @property
    def body(self) -> nn.Module:
        return models.decoder_body(self.model)

    @property
    def device(self) -> torch.device:
        return models.input_device(self.model)

    @property
    def dtype(self) -> str:
        return str(next(self.model.parameters()).dtype).removeprefix("torch.")


def load_runtime(config: CollectConfig) -> ModelRuntime:
    """Load the configured model (checked beforehand by the builder) with its collection points."""
    source = models.resolve_source(config.model)
    n_layers = models.num_layers(models.load_model_config(source, config.model))
    layer_indices = models.resolve_layers(config.stats.layers, n_layers)
    model = models.load_model(source, config.model)
    return ModelRuntime(model, models.collection_modules(model, layer_indices, n_layers))
