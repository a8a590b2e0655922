"""Pooling one work unit of documents: its batches through the hooked model, each document's vector.

The same function pools a build's units and a new text (``TextVectors``): a text equal to a
stored document gets that document's vector, centred or not as the store's build was
(--vectors.center_residual, refused on RMSNorm models by ``check_center_residual``).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from builders import _models as models
from builders._capture import LayerOutputs
from builders._documents import Corpus, unit_batches
from builders._pooling import combine, default_layers, pool_layers
from builders._runtime import ModelRuntime
from builders._vector_configs import AUTO_LAYERS, VectorsConfig
from store import Unit
from store.errors import ConfigError


def pooled_layers(config: VectorsConfig, n_layers: int) -> list[int]:
    """The blocks pooled: the configured ones (checked against the model), or auto's."""
    if config.vectors.layers == [AUTO_LAYERS]:
        return default_layers(n_layers)
    return models.resolve_layers(config.vectors.layers, n_layers)


def check_center_residual(model: nn.Module, config: VectorsConfig) -> None:
    """Refuse --vectors.center_residual on an RMSNorm model: TransformerLens skips centring there
    (RMSNorm does not ignore the mean), so its vectors of such a model are raw, and so must ours be."""
    value = config.vectors.center_residual
    if not value:
        return
    norms = sorted({type(module).__name__ for module in model.modules() if "RMSNorm" in type(module).__name__})
    if norms:
        raise ConfigError(f"vectors.center_residual {value!r} is refused for {type(model).__name__}, which "
                          f"normalises with {norms[0]}: use --vectors.center_residual false; "
                          "TransformerLens does not centre RMSNorm models")


def unit_vectors(runtime: ModelRuntime, config: VectorsConfig, corpus: Corpus, unit: Unit, pad_id: int,
                 progress: tqdm | None = None) -> dict[str, np.ndarray]:
    """Each pooling's (documents, features) float32 vectors of the unit's documents, in order."""
    parts: dict[int, list[tuple[int, dict[str, np.ndarray]]]] = defaultdict(list)
    settings = config.vectors
    with LayerOutputs(runtime.modules) as capture:
        for batch in unit_batches(corpus, unit, config.data.max_seq_len, config.data.batch_size, pad_id):
            outputs = capture.run(runtime.body, torch.as_tensor(batch.token_ids, device=runtime.device),
                                  torch.as_tensor(batch.attention_mask, device=runtime.device))
            pooled = pool_layers(outputs, batch.segments, settings.short_depth, settings.long_depths,
                                 settings.poolings, center=settings.center_residual)
            for row, (doc, offset) in enumerate(zip(batch.docs, batch.segments.offsets)):
                parts[int(doc)].append((int(offset), {name: values[row] for name, values in pooled.items()}))
            if progress is not None:
                progress.update(int(batch.segments.holds_last_token.sum()))
    return {name: np.stack([combine([part[name] for _, part in sorted(parts[doc], key=lambda p: p[0])])
                            for doc in range(unit.start, unit.end)])
            for name in settings.poolings}


