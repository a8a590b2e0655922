"""New texts pooled exactly as a store's build pooled its documents, with the settings it recorded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from builders import _models as models
from builders._cli import from_dict
from builders._documents import bos_id, corpus_of, document_tokens
from builders._runtime import ModelRuntime
from builders._vector_configs import VectorsConfig
from builders._vector_run import pooled_layers, unit_vectors
from builders.errors import DataError
from store import StoreLocation, Unit, open_vectors_group, resolve_location
from store.errors import StoreLocationError


class TextVectors:
    """A store's model, loaded once, pooling new texts exactly as the store's build pooled its documents.

        pool = TextVectors("stores/vectors.zarr")
        pool(["some text"])["short"]        # (1, d) float32
    """

    def __init__(self, store: str, model: str = "", storage_options: dict[str, Any] | None = None) -> None:
        self.config = stored_config(resolve_location(store, storage_options), model)
        source = models.resolve_source(self.config.model)
        model_config = models.load_model_config(source, self.config.model)
        n_layers = models.num_layers(model_config)
        self._tokenizer = models.load_tokenizer(source, self.config.model)
        self.label = source.label
        loaded = models.load_model(source, self.config.model)
        self._runtime = ModelRuntime(loaded, models.collection_modules(loaded, pooled_layers(self.config, n_layers), n_layers))

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Each pooling's (texts, features) float32 vectors, through the build's own code path."""
        if isinstance(texts, str) or not texts or not all(isinstance(text, str) and text.strip() for text in texts):
            raise DataError(f"texts must be a non-empty list of texts with words in them, got {texts!r:.80}")
        doc_ids = [f"text {number}" for number in range(len(texts))]
        tokens = document_tokens(list(texts), doc_ids, self._tokenizer, self.config.vectors.prepend_bos,
                                 self.config.data)
        corpus = corpus_of(doc_ids, tokens, self.config.data)
        return unit_vectors(self._runtime, self.config, corpus, Unit(0, 0, len(texts)), bos_id(self._tokenizer))


def stored_config(location: StoreLocation, model: str = "") -> VectorsConfig:
    """The configuration a store's vectors of model ``model`` (label; may be empty for a one-model store)
    were built with: the settings a new text must be pooled with to be comparable."""
    group = open_vectors_group(location, mode="r")
    if group is None:
        raise StoreLocationError(f"no vectors in {location.display()!r}; build them first with "
                                 "python -m builders.vectors --store ...")
    stored = group.attrs.get("models", {})
    labels = [str(label) for label in group["model"][:] if str(label)]
    if not model and len(labels) == 1:
        model = labels[0]
    if model not in labels:
        raise StoreLocationError(f"no vectors of model {model!r} in {location.display()!r} (found: {labels!r}); "
                                 "pass --model.label with one of those")  # empty: the store has several
    build, model_settings = group.attrs["build_config"], dict(stored[model]["config"])
    batch_size, layers = model_settings.pop("batch_size"), model_settings.pop("layers")
    return from_dict(VectorsConfig, {
        "model": model_settings, "data": {**build["data"], "batch_size": batch_size},
        "vectors": {**build["vectors"], "layers": layers}, "query": {"pooling": build["vectors"]["poolings"][0]},
        "store": location.url,
        "storage_options": dict(location.storage_options)})


