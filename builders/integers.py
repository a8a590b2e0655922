"""``python -m builders.integers``: stored captures as exact scaled integers (group ``encodings``).

Every finite value x becomes ``round_half_even(x * 10**e)``, computed on the exact binary
value of x, ``e = scale_factor - floor(scale_factor * quantize / 100)``. Stored as fixed-width
uint32 limbs plus a sign: no pickle, no object arrays (see docs/store-format.md). The Python
API works on plain arrays: ``encode``, ``to_python_ints``, ``decode``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from builders._cli import run_cli
from builders._encoding import Encoded, EncodingError, decode, encode, to_python_ints
from builders._item_configs import IntegersConfig
from builders._item_pass import source_items, write_models
from builders._npy_export import export_integers, file_stem
from store import (
    CAPTURES_GROUP,
    ENCODINGS_GROUP,
    Lease,
    StoreLocation,
    check_output_path,
    complete_items,
    item_path,
    open_item,
    prepare_group,
    write_item,
)
from store.errors import StoreMismatchError

__all__ = ["Encoded", "EncodingError", "decode", "encode", "main", "to_python_ints"]
DESCRIPTION = __doc__.split("\n\n")[0] if __doc__ else ""


def encoded_dataset(capture: xr.Dataset, source: str, scale_factor: int | None, quantize: float) -> xr.Dataset:
    """The encoding of one stored capture, layer by layer (one layer in memory at a time)."""
    dtype = capture.attrs.get("dtype", str(capture["hidden_state"].dtype))
    magnitudes, signs = [], []
    for layer in capture["layer"].values:
        values = capture["hidden_state"].sel(layer=layer).values
        try:
            encoded = encode(values, scale_factor, quantize, source_dtype=dtype)
        except EncodingError as error:
            raise EncodingError(f"capture {source!r}, layer {str(layer)!r}: {error}") from error
        magnitudes.append(encoded.magnitude)
        signs.append(encoded.negative)
    attrs = {**encoded.attrs(), "source": source, "model_name": capture.attrs.get("model_name", ""),
             "layer_shapes": [list(m.shape[:-1]) for m in magnitudes]}
    return xr.Dataset({"magnitude": (("layer", "position", "hidden", "limb"), np.stack(magnitudes)),
                       "negative": (("layer", "position", "hidden"), np.stack(signs))},
                      coords={"layer": capture["layer"].values}, attrs=attrs)


def as_encoded(stored: xr.Dataset, layer: str | None = None) -> Encoded:
    """A stored encoding (or one layer of it) as an ``Encoded``, for ``to_python_ints`` and ``decode``."""
    picked = stored.sel(layer=layer) if layer is not None else stored
    attrs = stored.attrs
    return Encoded(picked["magnitude"].values, picked["negative"].values, int(attrs["exponent"]),
                   int(attrs["scale_factor"]), float(attrs["quantize"]), str(attrs["source_dtype"]))


def _settings(config: IntegersConfig) -> tuple[int | None, float]:
    return (config.scale_factor or None), config.quantize


def run(config: IntegersConfig) -> int:
    location = StoreLocation(config.store, config.storage_options)
    if config.export:
        check_output_path(config.export[1], "export folder", folder=True)
    work = source_items(location, CAPTURES_GROUP, config.model, "capture with python -m builders.capture")
    for label in work:
        _check_existing(location, label, config)  # every check before anything is written
    write_models(location, ENCODINGS_GROUP, work, "encode",
                 lambda label, items, lease: _encode_model(location, config, label, items, lease))
    print(f"Encoded {sum(len(items) for items in work.values())} capture(s) of {len(work)} model(s) "
          f"into {location.display()} (group {ENCODINGS_GROUP!r}).")
    return 0


def _check_existing(location: StoreLocation, label: str, config: IntegersConfig) -> None:
    done = complete_items(location, ENCODINGS_GROUP, label)
    if config.overwrite or not done:
        return
    stored = open_item(location, next(iter(done.values()))).attrs
    scale_factor, quantize = _settings(config)
    if (scale_factor is not None and stored["scale_factor"] != scale_factor) or stored["quantize"] != quantize:
        raise StoreMismatchError(f"model {label!r} is encoded with scale_factor {stored['scale_factor']} and "
                                 f"quantize {stored['quantize']} in {location.display()!r}; pass those, or "
                                 "--overwrite to encode again")


def _encode_model(location: StoreLocation, config: IntegersConfig, label: str, items: dict[int, str],
                  lease: Lease) -> None:
    done = {} if config.overwrite else complete_items(location, ENCODINGS_GROUP, label)
    for index, source in tqdm(sorted(items.items()), desc=f"encode {label}", disable=not config.progress):
        target = item_path(ENCODINGS_GROUP, label, index)
        capture = open_item(location, source)
        if index not in done:
            dataset = encoded_dataset(capture, source, *_settings(config))
            lease.ensure_held()
            prepare_group(location, ENCODINGS_GROUP, label, {})
            write_item(location, target, dataset, {"magnitude": {"chunks": (1, *dataset["magnitude"].shape[1:])}})
        if config.export:
            _export(location, target, capture, Path(config.export[1]).expanduser(), index)


def _export(location: StoreLocation, path: str, capture: xr.Dataset, folder: Path, index: int) -> None:
    stored = open_item(location, path)
    layers = {str(layer): to_python_ints(as_encoded(stored, str(layer))) for layer in stored["layer"].values}
    attrs = stored.attrs
    metadata = {"model_name": capture.attrs["model_name"], "prompt": capture.attrs["prompt"],
                "generated_text": capture.attrs["generated_text"],
                "conversion": {"scale_factor": attrs["scale_factor"], "quantize_pct": attrs["quantize"],
                               "truncated_digits": attrs["truncated_digits"], "effective_scale": attrs["exponent"],
                               "formula": attrs["formula"], "reverse": attrs["reverse"]},
                "layers": [_layer_entry(name, values, capture) for name, values in layers.items()]}
    export_integers(folder / f"{file_stem(capture.attrs['model_name'])}_int_activations_{index:04d}", layers, metadata)


def _layer_entry(name: str, values: np.ndarray, capture: xr.Dataset) -> dict[str, Any]:
    original = capture["hidden_state"].sel(layer=name).values
    return {"layer": name, "original_shape": [1, *original.shape], "num_elements": int(original.size),
            "original_dtype": f"torch.{capture.attrs.get('dtype', original.dtype)}", "npy_file": f"{name}.npy",
            "sample_original": float(original.flat[0]), "sample_converted": int(values.flat[0])}


def main(argv: list[str] | None = None) -> int:
    return run_cli(IntegersConfig, argv, "python -m builders.integers", DESCRIPTION, run)

if __name__ == "__main__":
    sys.exit(main())
