"""Check a store against the contract in docs/store-format.md."""

from __future__ import annotations

import json
import re
import warnings
from typing import Any

import numpy as np
import xarray as xr
import zarr

from store._consolidated import stale_metadata
from store._integrity import Damage, damage
from store._items import ITEM_GROUPS
from store._labels import label_problems
from store._location import StoreLocation
from store._schema import (
    DIMS,
    DTYPES,
    FORMAT_NAME,
    MIN_SHARD_BYTES,
    OPTIONAL,
    READABLE_VERSIONS,
    STATS_GROUP,
    STREAMED,
    UNIT_COMMITTED,
    UNIT_TOKENS_ATTR,
)
from store._superweights import SUPERWEIGHTS_GROUP
from store._units import committed_prefix, plan_units
from store._validate_items import item_problems
from store._validate_superweights import superweight_problems
from store._validate_vectors import vector_problems
from store._vectors import VECTORS_GROUP
from store._vocab import vocab_problems
from store.errors import ContractError

LAYER_LABEL = re.compile(r"^(embed|middle|pre_last|layer_\d+)$")
PROVENANCE_KEYS = ("model_id", "revision", "config", "created", "versions")
# Attribute keys that would mean a secret leaked into the store.
_SECRET_KEY = re.compile(r"(secret|password|access_key|session_token|storage_options|^key$|^token$)", re.I)


def validate_store(location: StoreLocation | str) -> xr.Dataset:
    """Open ``location`` with plain xarray, check the whole contract, return the ``stats`` Dataset.

    A store may hold ``stats``, the item groups (captures, encodings, hypercube views), ``vectors``,
    ``superweights``, or any of them together; for a store without ``stats`` the returned Dataset is empty.
    """
    if isinstance(location, str):
        location = StoreLocation(location)
    location.check_exists()
    groups = _top_groups(location)
    if STATS_GROUP not in groups and groups & {*ITEM_GROUPS, VECTORS_GROUP, SUPERWEIGHTS_GROUP}:  # no stats
        _raise(_stale_metadata(location) + _other_groups(location), location.display())
        return xr.Dataset()
    damaged = damage(location)
    if any(item.in_metadata for item in damaged):  # zarr and xarray would raise raw parser errors
        _raise(_damage_lines(damaged), location.display())
    problems = _stale_metadata(location)  # a missing stats group fails the open below
    try:
        dataset = xr.open_zarr(location.zarr_store(read_only=True), group=STATS_GROUP)
    except (ValueError, KeyError, FileNotFoundError) as error:  # e.g. arrays disagree on a dim's size
        _raise([*problems, f"xarray cannot open the {STATS_GROUP!r} group ({error})"], location.display())
    labels = [str(label) for label in dataset["model"].values] if "model" in dataset.variables else None
    problems += _check_dataset(dataset) + _damage_lines(damaged) + _other_groups(location, labels)
    _raise(problems, location.display())
    return dataset


def _other_groups(location: StoreLocation, stats_models: list[str] | None = None) -> list[str]:
    """Problems of the groups beside ``stats``: the item groups, ``vectors``, ``superweights`` and ``vocab``."""
    problems = (item_problems(location) + vector_problems(location) + superweight_problems(location)
                + vocab_problems(location, stats_models))
    groups = _top_groups(location)
    if not problems and VECTORS_GROUP in groups:
        try:
            xr.open_zarr(location.zarr_store(read_only=True), group=VECTORS_GROUP).close()
        except (ValueError, KeyError, FileNotFoundError) as error:
            problems.append(f"xarray cannot open the {VECTORS_GROUP!r} group ({error})")
    if not problems and SUPERWEIGHTS_GROUP in groups:  # a tree of small tables: read as one DataTree
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a missing consolidated copy is named by _stale_metadata
                xr.open_datatree(location.zarr_store(read_only=True), engine="zarr", group=SUPERWEIGHTS_GROUP).close()
        except (ValueError, KeyError, FileNotFoundError) as error:
            problems.append(f"xarray cannot open the {SUPERWEIGHTS_GROUP!r} group as a DataTree ({error})")
    return problems


def _top_groups(location: StoreLocation) -> set[str]:
    """The groups directly under the root (by their own zarr.json, not the consolidated copy)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # _leases/ and _staging/ are not Zarr nodes
            root = zarr.open_group(location.zarr_store(read_only=True), mode="r", use_consolidated=False)
            return {name for name, _ in root.groups()}
    except (ValueError, TypeError, KeyError):  # a damaged root: the stats checks below name it
        return {STATS_GROUP}


def _stale_metadata(location: StoreLocation) -> list[str]:
    """stale_metadata and label_problems, with a node outside the checked ones (e.g. fits/) that zarr
    cannot parse named."""
    try:
        return stale_metadata(location) + label_problems(location)
    except ValueError as error:  # JSONDecodeError and zarr's metadata errors are ValueErrors
        return [f"a node's zarr.json cannot be read ({type(error).__name__}: {error})"]


_SHOWN_DAMAGE = 20  # a wholesale loss would otherwise give a message of thousands of lines


def _damage_lines(damaged: list[Damage]) -> list[str]:
    lines = [str(item) for item in damaged[:_SHOWN_DAMAGE]]
    if len(damaged) > _SHOWN_DAMAGE:
        lines.append(f"and {len(damaged) - _SHOWN_DAMAGE:,} more damaged objects "
                     "(store.damage lists them all)")
    return lines


def validate_stats(dataset: xr.Dataset) -> None:
    """Check an opened ``stats`` Dataset (variables, labels, attrs, chunking)."""
    _raise(_check_dataset(dataset), "dataset")


def _raise(problems: list[str], where: str) -> None:
    if problems:
        raise ContractError(f"{where} breaks the store contract: " + "; ".join(problems))


def _check_dataset(dataset: xr.Dataset) -> list[str]:
    problems = _check_variables(dataset)
    if problems:
        return problems
    return _check_labels(dataset) + _check_attrs(dataset) + _check_chunks(dataset) + _check_commits(dataset)


def _check_variables(dataset: xr.Dataset) -> list[str]:
    problems = []
    for name, dims in DIMS.items():
        if name == "unit_state" and dataset.attrs.get("format_version") == 1:
            continue  # format 1 has one commit marker per model only
        if name not in dataset.variables:
            if name not in OPTIONAL:
                problems.append(f"variable {name!r} is missing")
        elif dataset[name].dims != dims:
            problems.append(f"{name!r} has dims {dataset[name].dims}, expected {dims}")
        elif dataset[name].dtype != DTYPES[name]:
            problems.append(f"{name!r} has dtype {dataset[name].dtype}, expected {np.dtype(DTYPES[name])}")
    return problems


def _check_labels(dataset: xr.Dataset) -> list[str]:
    problems = []
    for dim in ("model", "layer", "metric"):
        labels = [str(x) for x in dataset[dim].values]
        if len(set(labels)) != len(labels) or "" in labels:
            problems.append(f"{dim!r} labels must be unique and non-empty, got {labels!r}")
    for label in dataset["layer"].values:
        if not LAYER_LABEL.match(str(label)):
            problems.append(f"layer label {str(label)!r} is not embed, middle, pre_last or layer_N")
    layer_index = dataset["layer_index"].values
    for j, label in enumerate(str(x) for x in dataset["layer"].values):
        expected = -1 if label == "embed" else int(label[6:]) if label.startswith("layer_") else None
        if expected is not None and np.any(layer_index[:, j] != expected):
            problems.append(f"layer_index of {label!r} is {layer_index[:, j].tolist()}, expected {expected}")
    return problems


def _check_attrs(dataset: xr.Dataset) -> list[str]:
    attrs = dataset.attrs
    problems = []
    if attrs.get("format") != FORMAT_NAME:
        problems.append(f"attrs['format'] is {attrs.get('format')!r}, expected {FORMAT_NAME!r}")
    if attrs.get("format_version") not in READABLE_VERSIONS:
        problems.append(f"attrs['format_version'] is {attrs.get('format_version')!r}, expected one of "
                        f"{list(READABLE_VERSIONS)}")
    definitions = attrs.get("metric_definitions", {})
    missing = [str(m) for m in dataset["metric"].values if str(m) not in definitions]
    if missing:
        problems.append(f"metrics without a definition in attrs: {missing!r}")
    models = attrs.get("models", {})
    for label in (str(x) for x in dataset["model"].values):
        absent = [key for key in PROVENANCE_KEYS if key not in models.get(label, {})]
        if absent:
            problems.append(f"provenance of model {label!r} lacks {absent!r}")
    for key in ("dataset", "build_config", "created", "versions"):
        if key not in attrs:
            problems.append(f"attrs lack {key!r}")
    leaked = _secret_keys(attrs)
    if leaked:
        problems.append(f"attrs hold secret-looking keys {leaked!r}")
    return problems


def _secret_keys(value: Any, path: str = "") -> list[str]:
    if isinstance(value, dict):
        found = [f"{path}{k}" for k, v in value.items() if _SECRET_KEY.search(str(k)) and v]
        for key, item in value.items():
            found += _secret_keys(item, f"{path}{key}.")
        return found
    if isinstance(value, str) and value.startswith("{"):
        try:
            return _secret_keys(json.loads(value), path)
        except json.JSONDecodeError:
            return []
    return []


def _check_chunks(dataset: xr.Dataset) -> list[str]:
    token_chunk = dataset.attrs.get("token_chunk")
    if not isinstance(token_chunk, int) or isinstance(token_chunk, bool) or token_chunk <= 0:
        return [f"attrs['token_chunk'] is {token_chunk!r}, expected a positive integer"]
    problems = []
    n_tokens = dataset.sizes["token"]
    for name in (name for name in STREAMED if name in dataset.variables):
        encoding = dataset[name].encoding
        shards = encoding.get("shards") or encoding.get("chunks")
        if shards is None:
            problems.append(f"{name!r} has no chunk encoding")
            continue
        token_axis = DIMS[name].index("token")
        series_axes = [size for axis, size in enumerate(shards) if axis != token_axis]
        if any(size != 1 for size in series_axes):
            problems.append(f"{name!r} shards {shards} do not hold one series each")
        chunks = encoding.get("chunks") or shards
        if chunks[token_axis] != token_chunk or shards[token_axis] % token_chunk:
            problems.append(f"{name!r} inner chunks {chunks} / shards {shards} do not match "
                            f"token_chunk {token_chunk} (inner chunk = token_chunk, shards whole chunks)")
        token_bytes = shards[token_axis] * dataset[name].dtype.itemsize
        if token_bytes < MIN_SHARD_BYTES and shards[token_axis] < n_tokens and not _asked_small_shards(dataset):
            problems.append(f"{name!r} shards of {shards[token_axis]} tokens are under 1 MiB")
        unit_tokens = dataset.attrs.get(UNIT_TOKENS_ATTR)
        if unit_tokens is not None and shards[token_axis] != unit_tokens:
            problems.append(f"{name!r} shards of {shards[token_axis]} tokens differ from the work unit "
                            f"attrs[{UNIT_TOKENS_ATTR!r}] = {unit_tokens!r}")
    return problems


def _asked_small_shards(dataset: xr.Dataset) -> bool:
    """Smaller shards (more, smaller work units) are allowed when the build asked for them."""
    build_config = dataset.attrs.get("build_config", {})
    stats = build_config.get("stats", {}) if isinstance(build_config, dict) else {}
    return isinstance(stats, dict) and bool(stats.get("shard_tokens"))


def _check_commits(dataset: xr.Dataset) -> list[str]:
    committed = dataset["committed_tokens"].values
    n_tokens = dataset.sizes["token"]
    if np.any(committed < 0) or np.any(committed > n_tokens):
        return [f"committed_tokens {committed.tolist()} outside 0..{n_tokens}"]
    if "unit_state" not in dataset:
        return []
    return _check_units(dataset, committed)


def _check_units(dataset: xr.Dataset, committed: np.ndarray) -> list[str]:
    """Unit markers are 0, 1 or 2, and committed_tokens never passes the committed prefix they give.

    It may lag behind it: a build killed between a unit's marker and its prefix update.
    """
    states = dataset["unit_state"].values
    unit_tokens = dataset.attrs.get(UNIT_TOKENS_ATTR)
    if not isinstance(unit_tokens, int) or isinstance(unit_tokens, bool) or unit_tokens <= 0:
        return [f"attrs[{UNIT_TOKENS_ATTR!r}] is {unit_tokens!r}, expected a positive integer"]
    units = plan_units(dataset.sizes["token"], unit_tokens)
    if states.shape[-1] != len(units):
        return [f"unit_state has {states.shape[-1]} units, expected {len(units)} of {unit_tokens} tokens"]
    if np.any((states < 0) | (states > UNIT_COMMITTED)):
        return [f"unit_state holds values other than 0, 1, 2: {np.unique(states).tolist()}"]
    problems = []
    for label, row, count in zip(dataset["model"].values, states, committed):
        if count > committed_prefix(row, units):
            problems.append(f"committed_tokens of model {str(label)!r} is {int(count)}, past the end of its "
                            f"committed units from token 0 ({committed_prefix(row, units)})")
    return problems
