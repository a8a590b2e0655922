"""``--export npy DIR``: the reference tools' file layout, for downstream verifiers that read it.

- capture: ``<model>_stats.json`` per model (the last capture's, as the reference tool keeps one);
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
