"""The contract of the item groups (captures, encodings, hypercube views), for ``validate_store``."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

import numpy as np
import xarray as xr
import zarr

from store._items import (
    CAPTURES_GROUP,
    COMPLETE_ATTR,
    ENCODINGS_GROUP,
    HYPERCUBES_GROUP,
    ITEM_FORMATS,
    effective_exponent,
    open_item,
)
from store._location import StoreLocation

_BLOCK = re.compile(r"^layer_(\d+)$")
_CAPTURE_ATTRS = ("model_name", "prompt", "generated_text", "dtype", "layer_stats", "size_summary")


def item_problems(location: StoreLocation) -> list[str]:
    """Every broken rule of the item groups present in the store."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # _leases/ and _staging/ are not Zarr nodes
        return _item_problems(location)


def _item_problems(location: StoreLocation) -> list[str]:
    root = zarr.open_group(location.zarr_store(read_only=True), mode="r", use_consolidated=False)
    problems = []
    for group, check in _CHECKS.items():
        if group.split("/")[0] not in root:
            continue
        top = root[group.split("/")[0]]
        if top.attrs.get("format") != ITEM_FORMATS[group.split("/")[0]]:
            problems.append(f"group {group.split('/')[0]!r} has format {top.attrs.get('format')!r}")
        problems += _check_items(location, root, group, check)
    return sorted(set(problems))


def _check_items(location: StoreLocation, root: zarr.Group, group: str,
                 check: Callable[[StoreLocation, xr.Dataset, str], list[str]]) -> list[str]:
    if group not in root:
        return []
    problems = []
    for label, model in root[group].groups():
        for name, node in model.groups():
            path = f"{group}/{label}/{name}"
            if node.attrs.get(COMPLETE_ATTR) is not True:
                problems.append(f"{path} is incomplete (a build was interrupted: rerun it)")
                continue
            problems += [f"{path}: {problem}" for problem in check(location, open_item(location, path), path)]
    return problems


def _check_capture(location: StoreLocation, item: xr.Dataset, path: str) -> list[str]:
    if "hidden_state" not in item or item["hidden_state"].dims != ("layer", "position", "hidden"):
        return ["'hidden_state' (layer, position, hidden) is missing"]
    problems = [f"attrs lack {key!r}" for key in _CAPTURE_ATTRS if key not in item.attrs]
    layers = [str(layer) for layer in item["layer"].values]
    blocks = [f"layer_{i}" for i in range(len(layers) - 2)]
    if layers[:1] != ["embedding"] or layers[-1:] != ["final_norm"] or layers[1:-1] != blocks:
        problems.append(f"layers {layers[:3]}...{layers[-2:]} are not embedding, layer_0.., final_norm")
    if item["token_id"].shape != (item.sizes["position"],):
        problems.append("'token_id' does not have one id per position")
    stats = item.attrs.get("layer_stats", [])
    if len(stats) != len(layers) or any(entry.get("num_elements") != item.sizes["position"] * item.sizes["hidden"]
                                        for entry in stats):
        problems.append("layer_stats do not describe each layer's elements")
    return problems


def _check_encoding(location: StoreLocation, item: xr.Dataset, path: str) -> list[str]:
    magnitude, negative = item.get("magnitude"), item.get("negative")
    if magnitude is None or negative is None or magnitude.dtype != np.uint32 or negative.dtype != bool:
        return ["'magnitude' (uint32) or 'negative' (bool) is missing"]
    attrs = item.attrs
    problems = []
    if magnitude.shape[:-1] != negative.shape or attrs.get("limbs") != magnitude.shape[-1]:
        problems.append(f"magnitude {magnitude.shape} does not match negative {negative.shape} and "
                        f"limbs {attrs.get('limbs')!r}")
    try:
        expected = effective_exponent(int(attrs["scale_factor"]), float(attrs["quantize"]))
    except (KeyError, TypeError, ValueError):
        return [*problems, "attrs lack a readable scale_factor and quantize"]
    if attrs.get("exponent") != expected:
        problems.append(f"exponent {attrs.get('exponent')!r} is not scale_factor - floor(scale_factor * "
                        f"quantize / 100) = {expected}")
    return problems + _check_source(location, attrs.get("source"))


def _check_view(location: StoreLocation, item: xr.Dataset, path: str) -> list[str]:
    attrs = item.attrs
    offsets, ends = item["layer_offset"].values, item["layer_end"].values
    sizes = np.prod(item["layer_shape"].values, axis=1)
    n_real, total = attrs.get("total_real_elements"), attrs.get("total_size")
    problems = []
    if offsets.size and (offsets[0] != 0 or np.any(ends - offsets != sizes) or np.any(offsets[1:] != ends[:-1])):
        problems.append("the layer map is not contiguous flat ranges of each layer's size")
    if total != int(np.prod(attrs.get("dimensions", [0]))) or (ends.size and n_real != int(ends[-1])):
        problems.append(f"dimensions {attrs.get('dimensions')} do not hold {n_real} real values exactly "
                        f"as total_size {total}")
    pads = item["pad_source"].values
    if n_real is not None and total is not None and (pads.size != total - n_real or np.any((pads < 0) | (pads >= n_real))):
        problems.append("padding sources are not real flat indices, one per padding position")
    return problems + _check_source(location, attrs.get("source"))


def _check_source(location: StoreLocation, source: object) -> list[str]:
    try:
        complete = open_item(location, str(source)).attrs.get(COMPLETE_ATTR) is True
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError):
        complete = False
    return [] if complete else [f"its source {source!r} is missing or incomplete"]


_CHECKS = {CAPTURES_GROUP: _check_capture, ENCODINGS_GROUP: _check_encoding,
           f"{HYPERCUBES_GROUP}/{CAPTURES_GROUP}": _check_view, f"{HYPERCUBES_GROUP}/{ENCODINGS_GROUP}": _check_view}
