"""Pooling one work unit of documents: its batches through the hooked model, each document's vector.

The same function pools a build's units and a new text (``TextVectors``): a text equal to a
stored document gets that document's vector.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from tqdm.auto import tqdm

from builders import _models as models
from builders._capture import LayerOutputs
from builders._documents import Corpus, unit_batches
from builders._pooling import combine, default_layers, pool_layers
from builders._runtime import ModelRuntime
from builders._vector_configs import AUTO_LAYERS, VectorsConfig
from store import Unit


def pooled_layers(config: VectorsConfig, n_layers: int) -> list[int]:
    """The blocks pooled: the configured ones (checked against the model), or auto's."""
    if config.vectors.layers == [AUTO_LAYERS]:
        return default_layers(n_layers)
    return models.resolve_layers(config.vectors.layers, n_layers)


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
                                 settings.poolings)
            for row, (doc, offset) in enumerate(zip(batch.docs, batch.segments.offsets)):
                parts[int(doc)].append((int(offset), {name: values[row] for name, values in pooled.items()}))
            if progress is not None:
                progress.update(int(batch.segments.holds_last_token.sum()))
    return {name: np.stack([combine([part[name] for _, part in sorted(parts[doc], key=lambda p: p[0])])
                            for doc in range(unit.start, unit.end)])
            for name in settings.poolings}


