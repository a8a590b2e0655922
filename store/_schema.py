"""The ``stats`` group: names, dimensions, chunking and the empty template.

docs/store-format.md is the prose version of this module; keep them in step.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

# A model label: it becomes one path segment in every group (stats slots, vectors, superweights/<label>).
MODEL_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

STATS_GROUP = "stats"
FORMAT_NAME = "activation-stats"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # format 1 (no unit markers) still opens; a build upgrades it in place
MIN_SHARD_BYTES = 1 << 20
FLOAT_FILL = np.float32("nan")
# Group attribute of stores whose writer stores every committed inner chunk, even all-fill ones:
# in them a missing chunk inside a committed range is damage (older stores may omit all-fill chunks).
EMPTY_CHUNKS_ATTR = "empty_chunks_written"
UNIT_TOKENS_ATTR = "unit_tokens"  # tokens per work unit (= per shard), format 2

# unit_state values: what a work unit of one model holds (readers trust only UNIT_COMMITTED)
UNIT_EMPTY = 0  # nothing
UNIT_TOKENIZED = 1  # token_id and doc_index written, statistics not yet
UNIT_COMMITTED = 2  # every variable of the unit final

DIMS = {
    "value": ("model", "layer", "metric", "token"),
    "argmax_channel": ("model", "layer", "token"),
    "channel_value": ("model", "layer", "token", "channel"),
    "channel_index": ("model", "layer", "channel"),
    "token_id": ("model", "token"),
    "doc_index": ("model", "token"),
    "layer_index": ("model", "layer"),
    "committed_tokens": ("model",),
    "unit_state": ("model", "unit"),
}
DTYPES = {
    "value": np.float32,
    "argmax_channel": np.int32,
    "channel_value": np.float32,
    "channel_index": np.int32,
    "token_id": np.int32,
    "doc_index": np.int64,
    "layer_index": np.int32,
    "committed_tokens": np.int64,
    "unit_state": np.int8,
}
# Variables written token chunk by token chunk; the others are written with the template.
STREAMED = ("value", "argmax_channel", "channel_value", "token_id", "doc_index")
# Variables that stores written before them lack: readers, validator and builds go on without them.
ARGMAX_CHANNEL = "argmax_channel"
OPTIONAL = (ARGMAX_CHANNEL,)


@dataclass(frozen=True)
class StatsLayout:
    """Shape and chunking of one ``stats`` group; identical for every model in it."""

    layers: tuple[str, ...]
    metrics: tuple[str, ...]
    n_tokens: int
    n_channels: int
    token_chunk: int
    requested_shard_tokens: int = 0  # 0: the default rule below; else rounded up to whole token chunks

    @property
    def shard_tokens(self) -> int:
        """Tokens per shard, the work unit: whole token chunks adding up to at least 1 MiB of float32.

        ``requested_shard_tokens`` (rounded up to whole chunks) replaces the rule, unclamped: a
        stored store's shards keep their size when its token axis shrinks.
        """
        if self.requested_shard_tokens:
            return self.token_chunk * math.ceil(self.requested_shard_tokens / self.token_chunk)
        chunks_per_shard = math.ceil(MIN_SHARD_BYTES / 4 / self.token_chunk)
        chunks_in_store = math.ceil(self.n_tokens / self.token_chunk)
        return self.token_chunk * max(1, min(chunks_per_shard, chunks_in_store))

    @property
    def n_units(self) -> int:
        """Work units: one per shard along the token axis."""
        return math.ceil(self.n_tokens / self.shard_tokens)

    def shape(self, name: str, n_models: int = 1) -> tuple[int, ...]:
        sizes = {
            "model": n_models,
            "layer": len(self.layers),
            "metric": len(self.metrics),
            "token": self.n_tokens,
            "channel": self.n_channels,
            "unit": self.n_units,
        }
        return tuple(sizes[dim] for dim in DIMS[name])

    def chunks(self, name: str, along_token: int) -> tuple[int, ...]:
        """One chunk per (model, layer, metric/channel) series, ``along_token`` tokens long."""
        return tuple(along_token if dim == "token" else 1 for dim in DIMS[name])


@dataclass(frozen=True)
class ModelSlot:
    """What is known about one model before its first token is collected."""

    label: str
    layer_index: np.ndarray  # (layer,) resolved decoder-layer number, -1 for embed
    channel_index: np.ndarray  # (layer, channel) sampled hidden dimensions
    provenance: dict[str, Any]


def template(layout: StatsLayout, slot: ModelSlot, attrs: dict[str, Any]) -> xr.Dataset:
    """The one-model ``stats`` Dataset: streamed variables lazy, the rest in memory."""
    data_vars: dict[str, Any] = {
        name: (DIMS[name], _lazy_zeros(layout, name)) for name in STREAMED
    }
    data_vars["layer_index"] = (DIMS["layer_index"], slot.layer_index[None].astype(np.int32))
    data_vars["channel_index"] = (DIMS["channel_index"], slot.channel_index[None].astype(np.int32))
    data_vars["committed_tokens"] = (DIMS["committed_tokens"], np.zeros(1, np.int64))
    data_vars["unit_state"] = (DIMS["unit_state"], np.zeros((1, layout.n_units), np.int8))
    coords = {
        "model": np.array([slot.label], dtype=object),
        "layer": np.array(layout.layers, dtype=object),
        "metric": np.array(layout.metrics, dtype=object),
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _lazy_zeros(layout: StatsLayout, name: str) -> da.Array:
    shard = layout.chunks(name, layout.shard_tokens)
    return da.zeros(layout.shape(name), dtype=DTYPES[name], chunks=shard)


def encoding(layout: StatsLayout) -> dict[str, dict[str, Any]]:
    """Zarr encoding: shards for readers, small inner chunks as the commit unit."""
    result: dict[str, dict[str, Any]] = {}
    for name in STREAMED:
        result[name] = {
            "chunks": layout.chunks(name, layout.token_chunk),
            "shards": layout.chunks(name, layout.shard_tokens),
        }
        if np.issubdtype(DTYPES[name], np.floating):
            result[name]["_FillValue"] = FLOAT_FILL
    result["committed_tokens"] = {"chunks": (1,)}
    result["unit_state"] = {"chunks": (1, 1)}  # one object per unit: units finish in any order, by any writer
    return result
