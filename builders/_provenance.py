"""What a store records about how it was made: versions, times, model identity, config."""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
from typing import Any, Protocol

import numpy as np

from builders._config import CollectConfig
from builders._metrics import CHANNEL_DEFINITION, CHANNEL_METRIC, definitions
from builders._models import ModelSource
from builders._text import describe
from builders._vector_configs import VectorsConfig
from store import FORMAT_NAME, FORMAT_VERSION, VECTORS_FORMAT, VECTORS_VERSION

_PACKAGES = ("activation-datasets", "torch", "transformers", "zarr", "xarray", "numpy", "dask", "fsspec")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def store_attrs(config: CollectConfig, token_chunk: int) -> dict[str, Any]:
    """Attributes of the ``stats`` group shared by every model in it."""
    metric_definitions = definitions(config.stats.scalar_metrics)
    if config.stats.n_channels:
        metric_definitions[CHANNEL_METRIC] = CHANNEL_DEFINITION
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "description": "per-token activation statistics; see docs/store-format.md",
        "metric_definitions": metric_definitions,
        "dataset": describe(config.data),
        "build_config": config.build_config(),
        "token_chunk": token_chunk,
        "created": now(),
        "versions": versions(),
    }


class BuildConfig(Protocol):
    def model_config(self) -> dict[str, Any]: ...


def model_provenance(
    source: ModelSource, config: BuildConfig, model_config: Any, hidden_size: int, dtype: str
) -> dict[str, Any]:
    """Attributes of one model slot: which weights ran, how, and when."""
    revision = source.revision or getattr(model_config, "_commit_hash", None) or ""
    return {
        "model_id": source.model_id,
        "revision": revision,
        "file_sha256": source.file_sha256,
        "architecture": type(model_config).__name__,
        "hidden_size": hidden_size,
        "dtype": dtype,
        "config": config.model_config(),
        "created": now(),
        "versions": versions(),
    }


def sample_channels(hidden_size: int, n_channels: int, n_layers: int, seed: int) -> np.ndarray:
    """(layer, k) channel numbers, sorted, the same sample at every layer."""
    if n_channels == 0:
        return np.zeros((n_layers, 0), np.int32)
    chosen = np.sort(np.random.default_rng(seed).choice(hidden_size, size=n_channels, replace=False))
    return np.tile(chosen.astype(np.int32), (n_layers, 1))


POOLING_DEFINITIONS = {
    "short": "mean over the chosen layers, then sum_i w_i h_i with w_i = exp(-(n-1-i)/(f n)) / Z, f = short_depth",
    "long": "[last token, the same weighted average at each of long_depths] of the layer mean, concatenated",
}


def vector_group_attrs(config: VectorsConfig, hidden_size: int, unit_docs: int) -> dict[str, Any]:
    """Attributes of the ``vectors`` group shared by every model in it."""
    return {
        "format": VECTORS_FORMAT, "format_version": VECTORS_VERSION,
        "description": "pooled document vectors; see docs/store-format.md and docs/vectors.md",
        "hidden_size": hidden_size, "unit_docs": unit_docs, "dataset": describe(config.data),
        "build_config": config.build_config(), "pooling_definitions": POOLING_DEFINITIONS,
        "created": now(), "versions": versions(),
    }
