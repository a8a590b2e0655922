"""Which tokens, which channels, which text: queries answered from a store alone, pandas out.

Every query reads the (model, layer, metric) series it names through the dask-backed Dataset of
``open_store`` (one task per shard, never more than those series), then only the few values
around its hits straight from Zarr (token ids for the context windows, document numbers and
peak channels: Zarr fetches just the inner chunks holding them), and the model's vocabulary from
the store's ``vocab`` group. No model and no tokenizer is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from analysis._open import open_store
from analysis._query_reduce import group_stats, top_k, value_counts
from analysis._snapshot import SNAPSHOT_KEY
from analysis._tokens import TokenText, check_shared, vocabularies
from store import ARGMAX_CHANNEL as ARGMAX
from store import STATS_GROUP, InputError, StoreLocation

KINDS = ("first_in_row", "after_eos", "other")  # position_stats(by="kind")


@dataclass
class Source:
    """An opened store: its ``stats`` Dataset and where it lives (for the reads around the hits)."""

    dataset: xr.Dataset
    location: StoreLocation

    @cached_property
    def group(self) -> zarr.Group:
        return zarr.open_group(self.location.zarr_store(read_only=True), path=STATS_GROUP, mode="r",
                               use_consolidated=False)

    @cached_property
    def labels(self) -> list[str]:
        return [str(label) for label in self.dataset["model"].values]

    @cached_property
    def layers(self) -> list[str]:
        return [str(label) for label in self.dataset["layer"].values]

    def slot(self, model: str) -> int:
        return self.labels.index(model)

    @cached_property
    def seq_len(self) -> int:
        data = self.dataset.attrs.get("build_config", {}).get("data", {})
        if not isinstance(data, dict) or not data.get("max_seq_len"):
            raise InputError("the store's build_config names no data.max_seq_len: rows and positions are unknown")
        return int(data["max_seq_len"])

    def read(self, name: str, selection: tuple[Any, ...]) -> np.ndarray:
        """Values of stored variable ``name`` at an orthogonal selection (only their chunks are fetched)."""
        return np.asarray(self.group[name].get_orthogonal_selection(selection))


def source(store: xr.Dataset | str, storage_options: dict[str, Any] | None = None) -> Source:
    """A store name, path or URL is opened; a Dataset must come from ``open_store`` (it knows its store)."""
    dataset = open_store(store, storage_options=storage_options) if isinstance(store, str) else store
    snapshot = dataset.encoding.get(SNAPSHOT_KEY)
    # a narrowed Dataset would be read at the wrong Zarr slots and token positions
    if snapshot is None or not snapshot.is_underived(dataset, ["value", "token_id"]):
        raise InputError("this Dataset is not the one analysis.open_store returned (narrowed with .sel or "
                         ".isel, or built elsewhere); pass that Dataset, or the store's path or URL, and pick "
                         "models with model=...")
    return Source(dataset, snapshot.location)


def _choice(kind: str, value: str, known: Sequence[str]) -> str:
    if value not in known:
        raise InputError(f"unknown {kind} {value!r}; this store has {', '.join(map(repr, known))}")
    return value


def resolve_layer(src: Source, layer: str | int) -> str:
    """A layer label ('middle', 'layer_15'), or a decoder-layer number matching ``layer_index``."""
    text = str(layer)
    if text in src.layers:
        return text
    if text.lstrip("-").isdigit():  # the same block in every model, or none: depths differ between models
        matches = np.flatnonzero((src.dataset["layer_index"].values == int(text)).all(axis=0))
        if matches.size:
            return src.layers[int(matches[0])]
    return _choice("layer", text, src.layers)


def resolve_metric(src: Source, metric: str) -> str:
    return _choice("metric", metric, [str(name) for name in src.dataset["metric"].values])


def resolve_models(src: Source, model: str | Sequence[str] | None) -> list[str]:
    """Every model of the store (None), or the ones named."""
    if model is None:
        return list(src.labels)
    named = [model] if isinstance(model, str) else list(model)
    return [_choice("model", label, src.labels) for label in named]


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InputError(f"{name} must be a positive whole number, got {value!r}; pass e.g. --{name} 20")
    return int(value)


def _context_width(context: int) -> int:
    if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or context < 0:
        raise InputError(f"context must be 0 or more tokens, got {context!r}; pass e.g. --context 8")
    return int(context)


def _series(src: Source, model: str, layer: str, metric: str) -> Any:
    return src.dataset["value"].sel(model=model, layer=layer, metric=metric).data


# ---- hits: top-k and thresholds ---------------------------------------------------------------------------


def _windows(src: Source, tokens: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Each token's context window [start, end): ``width`` tokens either side, within its row."""
    row_start = tokens // src.seq_len * src.seq_len
    starts = np.maximum(row_start, tokens - width)
    ends = np.minimum(np.minimum(row_start + src.seq_len, src.dataset.sizes["token"]), tokens + width + 1)
    return starts, ends


def _token_ids(src: Source, model: str, tokens: np.ndarray, windows: tuple[np.ndarray, np.ndarray]) -> dict[int, int]:
    """Token position -> id for the hits and their windows, in one read (only the chunks holding them)."""
    wanted = np.unique(np.concatenate([tokens, *(np.arange(a, b) for a, b in zip(*windows))]))
    return dict(zip(wanted.tolist(), src.read("token_id", (src.slot(model), wanted)).tolist()))


def _context(tokens: np.ndarray, windows: tuple[np.ndarray, np.ndarray], width: int, ids: dict[int, int],
             vocabulary: TokenText | None) -> list[str]:
    """The text of each token's window (within its row), the token in [[ ]]."""
    if width <= 0 or vocabulary is None:
        return [""] * tokens.size
    starts, ends = windows
    texts = []
    for start, token, end in zip(starts, tokens, ends):
        run = [ids[i] for i in range(int(start), int(end))]
        at = int(token - start)
        texts.append(f"{vocabulary.decode(run[:at])}[[{vocabulary.decode(run[at:at + 1])}]]"
                     f"{vocabulary.decode(run[at + 1:])}")
    return texts


def _hit_rows(src: Source, model: str, layer: str, metric: str, values: np.ndarray, tokens: np.ndarray,
              context: int, vocabulary: TokenText | None) -> pd.DataFrame:
    slot = src.slot(model)
    windows = _windows(src, tokens, context if vocabulary is not None else 0)
    ids = _token_ids(src, model, tokens, windows) if tokens.size else {}
    token_ids = np.array([ids[int(token)] for token in tokens], np.int32)
    frame = pd.DataFrame({
        "model": model, "layer": layer, "metric": metric, "rank": np.arange(1, tokens.size + 1),
        "value": values.astype(np.float64), "token_index": tokens.astype(np.int64), "row": tokens // src.seq_len,
        "position": tokens % src.seq_len,
        "doc_index": src.read("doc_index", (slot, tokens)) if tokens.size else np.zeros(0, np.int64),
        "token_id": token_ids,
        "text": vocabulary.text(token_ids) if vocabulary is not None else [""] * tokens.size,
    })
    if ARGMAX in src.dataset:
        layer_slot = src.layers.index(layer)
        frame[ARGMAX] = src.read(ARGMAX, (slot, layer_slot, tokens)) if tokens.size else np.zeros(0, np.int32)
    frame["context"] = _context(tokens, windows, context, ids, vocabulary)
    return frame


def top_tokens(store: xr.Dataset | str, metric: str = "linf_norm", layer: str | int = "middle", k: int = 20,
               model: str | Sequence[str] | None = None, context: int = 8, smallest: bool = False,
               storage_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """The ``k`` tokens with the largest (``smallest``: lowest) ``metric`` at ``layer``, per model.

    Columns: model, layer, metric, rank, value, token_index (the token's place in the store), row,
    position (in the row), doc_index, token_id, text (the id decoded alone), argmax_channel (where stored) and
    context (``context`` tokens either side, within the row, the token in [[ ]]). Ties go to the
    earlier token; NaN values are never ranked.
    """
    src = source(store, storage_options)
    k, context = _positive("k", k), _context_width(context)
    layer, metric = resolve_layer(src, layer), resolve_metric(src, metric)
    labels = resolve_models(src, model)
    texts = vocabularies(src.location, labels)
    frames = []
    for label in labels:
        values, tokens = top_k(_series(src, label, layer, metric), k, largest=not smallest)
        frames.append(_hit_rows(src, label, layer, metric, values, tokens, context, texts[label]))
    return pd.concat(frames, ignore_index=True)


def tokens_above(store: xr.Dataset | str, metric: str = "linf_norm", layer: str | int = "middle",
                 threshold: float | None = None, times_median: float | None = None, median_of: str | None = None,
                 model: str | Sequence[str] | None = None, limit: int | None = 1000, context: int = 8,
                 storage_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """Tokens whose ``metric`` exceeds ``threshold`` and/or ``times_median`` x the median, largest first.

    The median is over the committed tokens of the ``median_of`` series (default: the metric's own)
    at the same layer. Massive activations in the sense of Sun et al. (2024), |h| > 100 and about
    1000x the median magnitude: ``metric="linf_norm", threshold=100, times_median=1000,
    median_of="mean_abs"``; the median of each token's mean |x| stands in for the median of every
    activation (for a Gaussian-shaped vector it is about 1.2x larger). The columns are
    :func:`top_tokens`'s, plus ``median`` when ``times_median`` is given; at most ``limit`` rows
    (None: all) per model. The series is loaded whole (8 bytes per token, twice with ``median_of``).
    """
    if threshold is None and times_median is None:
        raise InputError("tokens_above needs a bound: pass threshold=..., times_median=... or both "
                         "(--threshold / --times_median)")
    src = source(store, storage_options)
    layer, metric = resolve_layer(src, layer), resolve_metric(src, metric)
    median_metric = resolve_metric(src, median_of or metric)
    limit = None if limit is None else _positive("limit", limit)
    context = _context_width(context)
    labels = resolve_models(src, model)
    texts = vocabularies(src.location, labels)
    frames = [_above_one(src, label, layer, metric, median_metric, threshold, times_median, limit, context,
                         texts[label]) for label in labels]
    return pd.concat(frames, ignore_index=True)


def _median(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(np.median(finite)) if finite.size else float("nan")


def _above_one(src: Source, model: str, layer: str, metric: str, median_metric: str, threshold: float | None,
               times_median: float | None, limit: int | None, context: int,
               vocabulary: TokenText | None) -> pd.DataFrame:
    values = np.asarray(_series(src, model, layer, metric).compute(), np.float64)
    keep = ~np.isnan(values)
    if threshold is not None:
        keep &= values > threshold
    median = np.nan
    if times_median is not None:
        reference = values if median_metric == metric else _series(src, model, layer, median_metric).compute()
        median = _median(np.asarray(reference, np.float64))
        keep &= values > times_median * median  # a NaN median (no value at all) keeps nothing
    tokens = np.flatnonzero(keep)
    order = np.lexsort((tokens, -values[tokens]))[:limit]
    frame = _hit_rows(src, model, layer, metric, values[tokens[order]], tokens[order], context, vocabulary)
    if times_median is not None:
        frame.insert(frame.columns.get_loc("value") + 1, "median", median)
    return frame


# ---- aggregates -------------------------------------------------------------------------------------------


def token_stats(store: xr.Dataset | str, metric: str = "linf_norm", layer: str | int = "middle",
                model: str | Sequence[str] | None = None, sort: str = "count",
                storage_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """count, mean and max of ``metric`` per vocabulary item (token id), with its token and text.

    Several models are compared token by token only when they share a tokenizer (the same
    vocabulary entry in the store); the table is long (one row per model and token id), sorted
    by model, then by ``sort`` (count, mean or max) descending, then by token id.
    """
    src = source(store, storage_options)
    layer, metric = resolve_layer(src, layer), resolve_metric(src, metric)
    sort = _choice("sort column", sort, ("count", "mean", "max"))
    labels = resolve_models(src, model)
    texts = vocabularies(src.location, labels)
    check_shared(texts)
    frames = []
    for label in labels:
        stats = group_stats(src.dataset["token_id"].sel(model=label).data, _series(src, label, layer, metric))
        frame = stats.rename_axis("token_id").reset_index()
        vocabulary = texts[label]
        frame.insert(0, "model", label)
        frame.insert(2, "token", [str(vocabulary.tokens[i]) if vocabulary is not None and i < vocabulary.tokens.size
                                  else "" for i in frame["token_id"]])
        frame.insert(3, "text", vocabulary.text(frame["token_id"].to_numpy()) if vocabulary is not None else "")
        frames.append(frame.sort_values([sort, "token_id"], ascending=[False, True], kind="stable"))
    return pd.concat(frames, ignore_index=True)


def _kinds(src: Source, model: str, eos_token_id: int) -> Any:
    """0 first token of a row, 1 the token after an EOS (a new document inside a row), 2 any other."""
    import dask.array as da

    token_ids = src.dataset["token_id"].sel(model=model).data
    n_tokens = token_ids.shape[0]
    position = da.arange(n_tokens, chunks=token_ids.chunks) % src.seq_len
    previous_is_eos = da.concatenate([da.zeros(1, bool), token_ids[:-1] == eos_token_id])[:n_tokens]
    after_eos = previous_is_eos.rechunk(token_ids.chunks)
    return da.where(position == 0, 0, da.where(after_eos, 1, 2)), position


def position_stats(store: xr.Dataset | str, metric: str = "linf_norm", layer: str | int = "middle",
                   model: str | Sequence[str] | None = None, by: str = "position",
                   storage_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """count, mean and max of ``metric`` per position in the row (``by="position"``), or per kind of
    position (``by="kind"``): first_in_row, after_eos (a document starting inside a row), other."""
    src = source(store, storage_options)
    layer, metric = resolve_layer(src, layer), resolve_metric(src, metric)
    by = _choice("grouping", by, ("position", "kind"))
    labels = resolve_models(src, model)
    texts = vocabularies(src.location, labels) if by == "kind" else {}
    frames = []
    for label in labels:
        vocabulary = texts.get(label)
        if by == "kind" and vocabulary is None:
            raise InputError(f"positions by kind needs model {label!r}'s EOS token, kept with its vocabulary, "
                             "which this store lacks; rerun the same python -m builders.collect command to add it")
        kinds, positions = _kinds(src, label, vocabulary.eos_token_id if vocabulary is not None else -1)
        stats = group_stats(kinds if by == "kind" else positions, _series(src, label, layer, metric))
        frame = stats.rename_axis(by).reset_index()
        if by == "kind":
            frame["kind"] = [KINDS[int(kind)] for kind in frame["kind"]]
        frame.insert(0, "model", label)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def channel_histogram(store: xr.Dataset | str, layer: str | int | None = None,
                      model: str | Sequence[str] | None = None, top: int | None = None,
                      storage_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """How often each hidden channel holds a token's largest |value| (``argmax_channel``), per layer.

    Columns model, layer, channel (the hidden dimension), count, share (of the layer's tokens);
    the most frequent channels first, at most ``top`` per (model, layer) (None: every channel hit).
    """
    src = source(store, storage_options)
    if ARGMAX not in src.dataset:
        raise InputError(f"store {src.location.display()!r} has no argmax_channel (collected before it "
                         "existed); collect the model into a new store to get it")
    layers = src.layers if layer is None else [resolve_layer(src, layer)]
    top = None if top is None else _positive("top", top)
    frames = []
    for label in resolve_models(src, model):
        for name in layers:
            peaks = src.dataset[ARGMAX].sel(model=label, layer=name).data
            counts = value_counts(peaks, _hidden_size(src, label))
            frames.append(_histogram_frame(label, name, counts, top))
    return pd.concat(frames, ignore_index=True)


def _hidden_size(src: Source, model: str) -> int:
    size = src.dataset.attrs.get("models", {}).get(model, {}).get("hidden_size")
    if size:
        return int(size)
    peaks = src.dataset[ARGMAX].sel(model=model)
    return int(peaks.max().compute()) + 1 if peaks.size else 0


def _histogram_frame(model: str, layer: str, counts: np.ndarray, top: int | None) -> pd.DataFrame:
    channels = np.flatnonzero(counts)
    order = np.lexsort((channels, -counts[channels]))[:top]
    total = max(int(counts.sum()), 1)
    return pd.DataFrame({"model": model, "layer": layer, "channel": channels[order],
                         "count": counts[channels[order]], "share": counts[channels[order]] / total})
