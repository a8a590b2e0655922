"""Vectors in the Activation Vector Project's files: ``.safetensors`` (float16) with a ``_metadata.json``,
and CSV of raw and centred vectors, for its notebooks and scripts.

Its outputs were one file pair per vector (``activation_vector_short_30.safetensors`` and
``activation_vector_short_30_metadata.json``); here a whole set fits one pair as well:

* set (default): ``activation_vectors_<pooling>.safetensors`` holding ``activation_vectors``
  (doc, feature) and ``doc_index`` (doc,) int64, and ``activation_vectors_<pooling>_metadata.json``;
* ``per_vector=True``: ``activation_vector_<pooling>_<doc>.safetensors`` holding ``activation_vector``
  (feature,) per document, each with its ``_metadata.json`` (``<doc>``: the document's position, as
  ids may hold characters a file name cannot);
* CSV: ``vectors_<pooling>_raw.csv`` and ``vectors_<pooling>_centered.csv``, one row per document
  (``doc_id``, then ``v0`` ... ``v<d-1>``), centred by the corpus mean as ``generate_vector_csv.py
  --center`` did.

The metadata carries the extraction parameters (the store's ``build_config``: layers, poolings, depths,
lengths, BOS, centring of the residual stream), the model's facts (its ``models`` entry: id,
revision, config) and the shape; the tensors are float16, as the reference stored them, unless
``dtype="float32"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from analysis._files import check_export_folder, write_csv, write_json
from analysis._vectors import _check_pooling, _model_mean, _one_model

MARKER = "activation-vectors-export.json"
EXPORT_FORMAT = "activation-vector-project"
_DTYPES = {"float16": np.float16, "float32": np.float32}


def _mark(root: Path) -> None:
    write_json(root / MARKER, {"format": EXPORT_FORMAT, "written_by": "python -m analysis.export"})


def _metadata(one: xr.Dataset, pooling: str, shape: tuple[int, ...], dtype: str, centred: bool,
              doc: dict[str, Any] | None = None) -> dict[str, Any]:
    model = str(one["model"].values)
    return {"model": model, "model_facts": one.attrs.get("models", {}).get(model, {}),
            "pooling_strategy": pooling, "extraction_parameters": one.attrs.get("build_config", {}),
            "shape": list(shape), "dtype": dtype, "centered": centred, "source": one.attrs.get("source", ""),
            **(doc or {})}


def _vectors(dataset: xr.Dataset, pooling: str, model: str | None, centred: bool) -> tuple[xr.Dataset, np.ndarray]:
    _check_pooling(dataset, pooling)
    one = _one_model(dataset, model)
    values = np.asarray(one[pooling].values, dtype=np.float32)
    return one, (values - _model_mean(one, pooling, None)) if centred else values


def export_safetensors(dataset: xr.Dataset, folder: str | Path, pooling: str = "short", model: str | None = None,
                       per_vector: bool = False, centred: bool = False, dtype: str = "float16") -> list[Path]:
    """The reference tool's ``.safetensors`` + ``_metadata.json`` of one model's ``pooling`` vectors."""
    from safetensors.numpy import save_file

    root = check_export_folder(folder, MARKER, EXPORT_FORMAT, "vectors")
    one, values = _vectors(dataset, pooling, model, centred)
    values = values.astype(_DTYPES[dtype])
    root.mkdir(parents=True, exist_ok=True)  # safetensors writes into an existing folder only
    doc_ids = [str(doc_id) for doc_id in one["doc_id"].values]
    written: list[Path] = []
    if per_vector:
        for index, (doc_id, vector) in enumerate(zip(doc_ids, values)):
            stem = root / f"activation_vector_{pooling}_{index}"
            save_file({"activation_vector": np.ascontiguousarray(vector)}, f"{stem}.safetensors")
            doc = {"doc_id": doc_id, "doc_index": index}
            metadata = _metadata(one, pooling, vector.shape, dtype, centred, doc)
            written += [Path(f"{stem}.safetensors"), write_json(Path(f"{stem}_metadata.json"), metadata)]
    else:
        stem = root / f"activation_vectors_{pooling}"
        save_file({"activation_vectors": np.ascontiguousarray(values), "doc_index": np.arange(len(doc_ids))},
                  f"{stem}.safetensors")
        written += [Path(f"{stem}.safetensors"),
                    write_json(Path(f"{stem}_metadata.json"),
                               _metadata(one, pooling, values.shape, dtype, centred, {"doc_ids": doc_ids}))]
    _mark(root)
    return written


def export_csv(dataset: xr.Dataset, folder: str | Path, pooling: str = "short", model: str | None = None) -> list[Path]:
    """``vectors_<pooling>_raw.csv`` and ``vectors_<pooling>_centered.csv``: doc_id, v0 ... v<d-1>."""
    root = check_export_folder(folder, MARKER, EXPORT_FORMAT, "vectors")
    written = []
    for kind, centred in (("raw", False), ("centered", True)):
        one, values = _vectors(dataset, pooling, model, centred)
        frame = pd.DataFrame(values, columns=[f"v{i}" for i in range(values.shape[1])])
        frame.insert(0, "doc_id", [str(doc_id) for doc_id in one["doc_id"].values])
        written.append(write_csv(root / f"vectors_{pooling}_{kind}.csv", frame))
    _mark(root)
    return written
