"""``--export npy DIR``: the reference tools' file layout, for downstream verifiers that read it.

- capture: ``<model>_stats.json`` per model (the last capture's, as the reference tool keeps one), and
  in place of its pickled ``<model>_activations.pt`` the same fields without pickle:
  ``<model>_activations.safetensors`` (``token_sequence`` (1, seq_len) int64, ``hidden_states.<i>``
  (1, seq_len, hidden) in the model's dtype, bfloat16 included; index 0 the embedding output, i the
  output of block i-1; ``model_name``, ``prompt``, ``generated_text`` in the file's metadata too) and
  ``<model>_activations.json`` (those three fields, the count, names, shapes and dtype of the tensors);
- integers: ``<model>_int_activations[_<capture>]/`` with one ``.npy`` per layer (object arrays of
  Python ints with a batch axis of 1, as the reference converter writes; load with
  ``allow_pickle=True``) and ``conversion_metadata.json``;
- hypercube: ``hypercube.npy`` and ``hypercube_metadata.json`` in ``<that folder>_hypercube/``.

The store itself never holds pickled or object arrays; these files exist only for interop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from store.errors import ConfigError


def _folder(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create export folder {str(path)!r} ({error.strerror}); "
                          "pass a writable folder to --export npy") from error
    return path


def file_stem(model_name: str) -> str:
    """The reference tools' file prefix: the model id with '/' replaced by '_'."""
    return model_name.replace("/", "_")


def export_stats(reports: list[dict[str, Any]], folder: Path) -> None:
    for report in reports:
        path = _folder(folder) / f"{file_stem(report['model_name'])}_stats.json"
        keys = ("model_name", "prompt", "generated_text", "size_summary", "layer_stats")
        path.write_text(json.dumps({key: report[key] for key in keys}, indent=2) + "\n", encoding="utf-8")


def export_integers(folder: Path, layers: dict[str, np.ndarray], metadata: dict[str, Any]) -> Path:
    """Write one .npy per layer (object ints, batch axis added) and conversion_metadata.json."""
    target = _folder(folder)
    for name, values in layers.items():
        np.save(target / f"{name}.npy", values[None], allow_pickle=True)
    (target / "conversion_metadata.json").write_text(json.dumps(metadata, indent=2, default=int) + "\n",
                                                     encoding="utf-8")
    return target


def export_hypercube(folder: Path, cube: np.ndarray, metadata: dict[str, Any]) -> Path:
    target = _folder(folder)
    np.save(target / "hypercube.npy", cube, allow_pickle=cube.dtype == object)
    (target / "hypercube_metadata.json").write_text(json.dumps(metadata, indent=2, default=int) + "\n",
                                                    encoding="utf-8")
    return target


def export_activations(stored: xr.Dataset, folder: Path) -> Path:
    """``<model>_activations.safetensors`` + ``.json`` of one stored capture (its fields as the reference
    ``.pt`` holds them: ``data["hidden_states"][i]`` is ``tensors[f"hidden_states.{i}"]``)."""
    import torch
    from safetensors.torch import save_file

    fields = {key: str(stored.attrs[key]) for key in ("model_name", "prompt", "generated_text")}
    dtype = getattr(torch, str(stored.attrs.get("dtype", stored["hidden_state"].dtype)))
    states = torch.from_numpy(np.ascontiguousarray(stored["hidden_state"].values)).to(dtype)  # bfloat16 exactly
    tensors = {f"hidden_states.{i}": layer[None].contiguous() for i, layer in enumerate(states)}
    tensors["token_sequence"] = torch.from_numpy(stored["token_id"].values.astype(np.int64))[None]
    stem = _folder(folder) / f"{file_stem(fields['model_name'])}_activations"
    save_file(tensors, str(stem.with_suffix(".safetensors")), metadata=fields)
    described = {**fields, "token_sequence": {"shape": list(tensors["token_sequence"].shape), "dtype": "int64"},
                 "hidden_states": {"count": len(states), "names": [str(name) for name in stored["layer"].values],
                                   "shape": [1, *states.shape[1:]], "dtype": str(dtype).removeprefix("torch."),
                                   "index": "0 = embedding output, i = transformer block i-1 output"}}
    stem.with_suffix(".json").write_text(json.dumps(described, indent=2) + "\n", encoding="utf-8")
    return stem.with_suffix(".safetensors")
