"""Pooled document vectors, lazily: open, centre, compare, nearest neighbours chunk by chunk.

    from analysis import vectors, centre, nearest, cosine_similarity
    ds = vectors("stores/vectors.zarr")               # dask-backed; path, s3:// URL or catalog name
    centred = centre(ds, "short")                     # a lazy view: vector - corpus mean
    nearest(ds, "dict", k=5)                          # a stored document's neighbours (id or position)
    nearest(ds, vector, k=5)                          # any vector of the model's width

Nothing here loads a model: the vector of a new text comes from ``builders.vectors.TextVectors``
(or ``python -m builders.vectors --text``), which hands it to ``nearest``. A query reads the
store one dask chunk (about 16 MiB) at a time and keeps only one score per document, so a
store of a million documents on S3 is searched without being loaded whole.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from analysis._open import _open_group, describe_uncommitted
from store import POOLINGS, VECTORS_GROUP, StoreLocationError, resolve_location
from store.errors import InputError

DASK_CHUNK_BYTES = 16 << 20  # per task: big enough to amortise requests, small enough to read one row cheaply
Query = int | str | np.ndarray


def open_vectors(name_or_url: str, storage_options: dict[str, Any] | None = None,
                 catalog: str | Path | None = None) -> xr.Dataset:
    """The ``vectors`` group as a dask-backed Dataset (one task per ~16 MiB of the widest pooling).

    Documents of units not committed yet read as NaN; a warning names those units.
    """
    location = resolve_location(name_or_url, storage_options, catalog)
    opened = _open_group(location, VECTORS_GROUP)
    unit_docs = int(opened.attrs.get("unit_docs", 1))
    widest = max((opened[name].shape[-1] * opened[name].dtype.itemsize for name in POOLINGS if name in opened),
                 default=1)
    docs_per_task = unit_docs * max(1, DASK_CHUNK_BYTES // (unit_docs * widest))
    dataset = opened.chunk({"model": 1, "doc": docs_per_task})
    named = describe_uncommitted(opened)
    if named:
        warnings.warn(f"store {location.display()!r}: vectors not committed yet (NaN until they are): {named}; "
                      "rerun the build to finish", UserWarning, stacklevel=2)
    dataset.attrs["source"] = location.display()
    return dataset


def _check_pooling(dataset: xr.Dataset, pooling: str) -> None:
    if pooling not in POOLINGS or pooling not in dataset:
        built = [name for name in POOLINGS if name in dataset]
        raise InputError(f"no {pooling!r} vectors in this store (it holds {built!r}); pass pooling= one of those")


def _one_model(dataset: xr.Dataset, model: str | None) -> xr.Dataset:
    """The dataset of one model: ``model`` (a label), or the store's only model."""
    labels = [str(label) for label in dataset["model"].values]
    if model is None and len(labels) == 1:
        model = labels[0]
    if model not in labels:
        raise InputError(f"model {model!r} is not in this store (models: {labels!r}); pass model= one of those")
    return dataset.sel(model=model)


def corpus_mean(dataset: xr.Dataset, pooling: str = "short") -> xr.DataArray:
    """The stored corpus mean of ``pooling`` per model (float64, computed from the float32 vectors)."""
    _check_pooling(dataset, pooling)
    return dataset[f"{pooling}_mean"]


def centre(dataset: xr.Dataset, pooling: str = "short", mean: xr.DataArray | None = None) -> xr.DataArray:
    """``vector - mean`` as a lazy view in float32 (never a second copy in the store).

    ``mean``: another store's ``corpus_mean`` (to centre a small probe set by a big corpus' mean), with a
    ``model`` dimension (matched by label) or without one (applied to every model); default: this store's.
    """
    _check_pooling(dataset, pooling)
    vectors = dataset[pooling]
    mean = dataset[f"{pooling}_mean"] if mean is None else _matching_mean(vectors, mean)
    return vectors.astype(np.float32) - mean.astype(np.float32)


def _matching_mean(vectors: xr.DataArray, mean: xr.DataArray) -> xr.DataArray:
    """``mean`` fitted to ``vectors``: the same width, and per model (by label) when it has a model dimension."""
    feature = vectors.dims[-1]
    width = mean.shape[-1]
    if width != vectors.sizes[feature]:
        raise InputError(f"the mean has {width} features, the vectors {vectors.sizes[feature]}; "
                         "apply a mean of the same model width and pooling")
    mean = mean.rename({mean.dims[-1]: feature})
    if "model" not in mean.dims:
        return mean
    wanted = _texts(np.atleast_1d(vectors["model"].values))
    have = _texts(mean["model"].values)
    missing = [label for label in wanted if label not in have]
    if missing:
        raise InputError(f"the mean has no model {missing[0]!r} (it has {have!r}); "
                         "select one with mean.sel(model=...) to apply it to every model")
    return mean.sel(model=vectors["model"])


def _model_mean(one: xr.Dataset, pooling: str, mean: xr.DataArray | None,
                dtype: type[np.floating] = np.float32) -> np.ndarray:
    """The mean that centres one model's ``pooling`` vectors: its own corpus mean, or ``mean``."""
    chosen = one[f"{pooling}_mean"] if mean is None else _matching_mean(one[pooling], mean)
    values = np.asarray(chosen.values, dtype)
    if np.isnan(values).any():
        raise InputError(f"model {str(one['model'].values)!r} has no corpus mean yet (some units are not committed); "
                         "finish the build, pass centre=False, or pass another store's mean=")
    return values


def _query_vector(vectors: xr.DataArray, query: Query) -> tuple[np.ndarray, int | None]:
    """The query as a float32 vector, and its document position when it is a stored document."""
    if isinstance(query, np.ndarray):
        if query.shape != (vectors.sizes[vectors.dims[-1]],):
            raise InputError(f"the query vector has shape {query.shape}, the stored vectors "
                             f"{vectors.sizes[vectors.dims[-1]]} features; pool it with the store's model and pooling")
        return query.astype(np.float32), None
    position = _doc_position(vectors, query)
    vector = np.asarray(vectors.isel(doc=position).values, np.float32)
    if np.isnan(vector).any():
        raise InputError(f"document {query!r} is not committed yet (its unit was not written); "
                         "finish the build, or query another document")
    return vector, position


def _texts(values: np.ndarray) -> list[str]:
    """Ids as Python strings (zarr may give NumPy's variable-width StringDType, which casts to nothing else)."""
    return [str(value) for value in values]


def _doc_position(vectors: xr.DataArray, query: int | str) -> int:
    n_docs = vectors.sizes["doc"]
    if isinstance(query, (int, np.integer)) and not isinstance(query, bool):
        if not 0 <= query < n_docs:
            raise InputError(f"document {query!r} is out of range: the store holds {n_docs:,}; pass 0 .. {n_docs - 1}")
        return int(query)
    found = np.flatnonzero(np.asarray(_texts(vectors["doc_id"].values), dtype=object) == query)
    if not found.size:
        raise InputError(f"no document with id {query!r} in this store; pass a stored id or a position")
    return int(found[0])


def _cosine_block(block: np.ndarray, query: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """Cosine of each row of a block with a unit-norm query, in float32 (NaN for a zero or NaN row)."""
    # one pass: the float16 -> float32 cast and the centring together
    rows = block.astype(np.float32) if mean is None else np.subtract(block, mean, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, (rows @ query) / norms, np.nan).astype(np.float32)


def similarity_scores(vectors: xr.DataArray, query: np.ndarray, mean: np.ndarray | None = None) -> da.Array:
    """Lazy (doc,) cosine similarity of every stored vector (minus ``mean``) with ``query``, chunk by chunk."""
    query = query.astype(np.float32) - (0 if mean is None else mean)
    norm = float(np.linalg.norm(query))
    if not norm or not math.isfinite(norm):
        raise InputError("the query vector is zero (or not finite) after centring: it has no direction to compare")
    data = vectors.data if isinstance(vectors.data, da.Array) else da.from_array(vectors.values)
    data = data.rechunk({1: -1})  # whole vectors in each task
    return da.map_blocks(_cosine_block, data, query / norm, mean, drop_axis=1, dtype=np.float32)


def nearest(dataset: xr.Dataset, query: Query, k: int = 10, pooling: str = "short", model: str | None = None,
            centre: bool = True, mean: xr.DataArray | None = None, exclude_self: bool = True) -> pd.DataFrame:
    """The ``k`` stored documents most cosine-similar to ``query``: a document id, a position or a vector.

    ``centre``: compare vectors minus the corpus mean (``mean``: another store's, see ``centre()``).
    A stored document is left out of its own neighbours unless ``exclude_self`` is False.
    Returns rank, doc (position), doc_id, similarity; the store is read chunk by chunk.
    """
    if k < 1:
        raise InputError(f"k must be at least 1, got {k!r}")
    _check_pooling(dataset, pooling)
    one = _one_model(dataset, model)
    vectors = one[pooling]
    query_vector, position = _query_vector(vectors, query)
    centre_by = _model_mean(one, pooling, mean) if centre else None
    scores = similarity_scores(vectors, query_vector, centre_by).compute()
    if position is not None and exclude_self:
        scores[position] = np.nan
    return _top(scores, k, one["doc_id"])


def _top(scores: np.ndarray, k: int, doc_ids: xr.DataArray) -> pd.DataFrame:
    valid = np.flatnonzero(~np.isnan(scores))
    k = min(k, valid.size)
    if k:  # every document tied with the k-th best, then by similarity and position: ties go to the first
        kth = np.partition(-scores[valid], k - 1)[k - 1]
        valid = valid[-scores[valid] <= kth]
    best = valid[np.lexsort((valid, -scores[valid]))][:k]
    ids = _texts(doc_ids.isel(doc=best).values)  # only the chunks holding the winners are read
    return pd.DataFrame({"rank": np.arange(1, best.size + 1), "doc": best, "doc_id": ids, "similarity": scores[best]})


def cosine_similarity(dataset: xr.Dataset, docs: list[int | str] | None = None, pooling: str = "short",
                      model: str | None = None, centre: bool = True,
                      mean: xr.DataArray | None = None) -> xr.DataArray:
    """(doc, other_doc) cosine similarity between a set of stored documents (ids or positions; default all).

    Loads only those documents' vectors: meant for sets small enough to look at (a heatmap).
    """
    _check_pooling(dataset, pooling)
    one = _one_model(dataset, model)
    vectors = one[pooling]
    positions = list(range(vectors.sizes["doc"])) if docs is None else [_doc_position(vectors, d) for d in docs]
    rows = np.asarray(vectors.isel(doc=positions).values, np.float64)
    if centre:
        rows = rows - _model_mean(one, pooling, mean, np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = rows / norms
    labels = _texts(one["doc_id"].values[positions])
    return xr.DataArray(unit @ unit.T, dims=("doc", "other_doc"),
                        coords={"doc": labels, "other_doc": labels}, name="cosine_similarity")


def long_diagnostics(dataset: xr.Dataset, docs: list[int | str], model: str | None = None,
                     mean: xr.DataArray | None = None) -> xr.Dataset:
    """Per document and part of a ``long`` vector (last token, then one average per depth): the norms of
    raw, centred and raw - centred vectors, of the predicted mean contribution, and the cosine alignment
    of raw - centred with that prediction.

    The predicted contribution of a part is the centring mean pooled with the part's own weights:
    the weights sum to 1, so pooling a constant returns it, and it is the mean's part itself. So
    raw - centred equals it (alignment 1, equal norms, up to float32 rounding) whenever the centring
    subtracts the pooled mean and nothing else: the reference tool's check, kept as it is. What the
    table tells beyond that is how much of each part's norm is the shared mean (raw vs centred norm).
    """
    _check_pooling(dataset, "long")
    one = _one_model(dataset, model)
    positions = [_doc_position(one["long"], doc) for doc in docs]
    raw = np.asarray(one["long"].isel(doc=positions).values, np.float32)
    return long_diagnostics_of(dataset, raw, _texts(one["doc_id"].values[positions]), model, mean)


def long_diagnostics_of(dataset: xr.Dataset, raw: np.ndarray, names: list[str], model: str | None = None,
                        mean: xr.DataArray | None = None) -> xr.Dataset:
    """``long_diagnostics`` of long vectors given as values (rows of ``raw``, named ``names``), e.g. the
    vector of a new text (``python -m builders.vectors --text ... --diagnostics DIR``), centred by the
    store's corpus mean (or ``mean``)."""
    _check_pooling(dataset, "long")
    one = _one_model(dataset, model)
    raw = np.atleast_2d(np.asarray(raw, np.float32))
    mean_values = _model_mean(one, "long", mean)
    centred = raw - mean_values
    parts = _parts(dataset)
    shape = (len(raw), len(parts), -1)
    raw_p, centred_p = raw.reshape(shape), centred.reshape(shape)
    difference, predicted = raw_p - centred_p, np.broadcast_to(mean_values.reshape(1, len(parts), -1), raw_p.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        alignment = (difference * predicted).sum(-1) / (_norms(difference) * _norms(predicted))
    data = {"raw_norm": _norms(raw_p), "centred_norm": _norms(centred_p), "difference_norm": _norms(difference),
            "predicted_norm": _norms(predicted), "alignment": alignment}
    coords = {"doc": list(names), "part": parts}
    return xr.Dataset({name: (("doc", "part"), values) for name, values in data.items()}, coords=coords)


def _norms(values: np.ndarray) -> np.ndarray:
    """The Euclidean norm of each vector along the last axis."""
    return np.linalg.norm(values, axis=-1)


def _parts(dataset: xr.Dataset) -> list[str]:
    depths = dataset.attrs.get("build_config", {}).get("vectors", {}).get("long_depths", [])
    if len(depths) != 3:
        raise StoreLocationError("the vectors group records no long_depths in build_config; is it damaged?")
    return ["last_token", *(f"depth_{depth:g}" for depth in depths)]

