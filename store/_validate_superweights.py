"""The contract of the ``superweights`` group (store/_superweights.py), for ``validate_store``.

``table_problems`` is also what ``write_table`` checks before writing, so a table off the
schema is refused when it is made, not found later.
"""

from __future__ import annotations

import json
import re

import numpy as np
import xarray as xr
import zarr

from store._items import COMPLETE_ATTR, open_item
from store._location import StoreLocation, quiet_top_node
from store._schema import MODEL_LABEL
from store._superweights import (
    ABLATION,
    CARD_METRICS,
    CARD_SOURCES,
    CARD_TABLES,
    LAYOUTS,
    METRICS,
    MODEL_ATTRS,
    STOP_REASONS,
    STRING,
    SUMMARY_TABLE,
    SUPERWEIGHT_TABLES,
    SUPERWEIGHTS_FORMAT,
    SUPERWEIGHTS_GROUP,
    SUPERWEIGHTS_VERSION,
    TABLE_ATTRS,
    TABLE_SCHEMAS,
)

_ZEROED = re.compile(r"^(\d+(,\d+)*)?$")


def superweight_problems(location: StoreLocation) -> list[str]:
    """Every broken rule of the store's ``superweights`` group ([] when it has none)."""
    with quiet_top_node(location, SUPERWEIGHTS_GROUP) as group:
        if group is None:
            return []
        problems = _format_problems(group)
        for name, node in [] if problems else group.groups():
            if name == SUMMARY_TABLE:
                problems += _table_node_problems(location, f"{SUPERWEIGHTS_GROUP}/{name}", name, node)[0]
            else:
                problems += _model_problems(location, name, node)
        return problems


def _format_problems(group: zarr.Group) -> list[str]:
    if group.attrs.get("format") != SUPERWEIGHTS_FORMAT:
        return [f"superweights: format is {group.attrs.get('format')!r}, not {SUPERWEIGHTS_FORMAT!r}"]
    if group.attrs.get("format_version") != SUPERWEIGHTS_VERSION:
        version = group.attrs.get("format_version")
        return [f"superweights: format_version is {version!r}; this version reads {SUPERWEIGHTS_VERSION}"]
    return []


def _model_problems(location: StoreLocation, label: str, node: zarr.Group) -> list[str]:
    where = f"{SUPERWEIGHTS_GROUP}/{label}"
    if not MODEL_LABEL.match(label):
        return [f"{where}: the label {label!r} is not a plain name (letters, digits, '.', '_', '-')"]
    built = {name for name, _ in node.groups()} - set(CARD_TABLES)
    problems = _model_attr_problems(where, dict(node.attrs), needs_settings=bool(built))
    tables: dict[str, xr.Dataset] = {}
    for name, child in node.groups():
        found, table = _table_node_problems(location, f"{where}/{name}", name, child)
        problems += found
        if table is not None:
            tables[name] = table
    return problems + _cross_problems(where, dict(node.attrs), tables)


def _model_attr_problems(where: str, attrs: dict[str, object], needs_settings: bool) -> list[str]:
    """The model node's provenance; ``settings`` are the super-weight builder's, absent with card tables only."""
    missing = [name for name in MODEL_ATTRS if name not in attrs and (needs_settings or name != "settings")]
    if missing:
        return [f"{where}: attrs lack {missing!r}"]
    if "settings" not in attrs:
        return []
    try:
        json.loads(str(attrs["settings"]))
    except json.JSONDecodeError:
        return [f"{where}: attrs['settings'] {str(attrs['settings'])[:60]!r} is not JSON text"]
    return []


def _table_node_problems(location: StoreLocation, path: str, name: str,
                         node: zarr.Group) -> tuple[list[str], xr.Dataset | None]:
    """The problems of one table node, and the table when it is complete and follows the schema."""
    if name not in (*SUPERWEIGHT_TABLES, SUMMARY_TABLE):
        return [f"{path} is not a superweights table (expected {list(SUPERWEIGHT_TABLES)!r})"], None
    if node.attrs.get(COMPLETE_ATTR) is not True:
        return [f"{path} is incomplete (a build was interrupted: rerun it)"], None
    try:
        table = open_item(location, path).load()
    except (ValueError, KeyError, TypeError, FileNotFoundError) as error:
        return [f"{path}: xarray cannot open it ({error})"], None
    problems = [f"{path}: {problem}" for problem in table_problems(name, table)]
    return problems, None if problems else table


def table_problems(table: str, dataset: xr.Dataset) -> list[str]:
    """What in one table breaks the schema: variables, dims, dtypes and attrs, then its values."""
    schema = TABLE_SCHEMAS[table]
    problems = [_variable_problem(dataset, name, dims, dtype) for name, (dims, dtype) in schema.items()]
    allowed = {dim for dims, _ in schema.values() for dim in dims}
    if set(dataset.dims) - allowed:
        problems.append(f"dims {sorted(map(str, dataset.dims))!r}, expected only {sorted(allowed)!r}")
    problems += [f"attrs lack {name!r}" for name in TABLE_ATTRS[table] if name not in dataset.attrs]
    problems = [problem for problem in problems if problem]
    return problems or _CONTENT[table](dataset)


def _variable_problem(dataset: xr.Dataset, name: str, dims: tuple[str, ...], dtype: str) -> str:
    if name not in dataset.variables:
        return f"variable {name!r} is missing"
    if dataset[name].dims != dims:
        return f"{name!r} has dims {dataset[name].dims}, expected {dims}"
    found = dataset[name].dtype
    matches = found.kind in "OUT" if dtype == STRING else found == np.dtype(dtype)
    return "" if matches else f"{name!r} has dtype {found}, expected {dtype}"


def _below(dataset: xr.Dataset, names: tuple[str, ...], floor: int) -> list[str]:
    """A problem for each variable holding a value below ``floor``, naming the first such value."""
    problems = []
    for name in names:
        values = dataset[name].values.ravel()
        if (values < floor).any():
            problems.append(f"{name!r} holds {values[values < floor][0].item()!r}, below {floor}")
    return problems


def _not_in(dataset: xr.Dataset, name: str, allowed: tuple[str, ...]) -> list[str]:
    unknown = sorted({str(value) for value in dataset[name].values} - set(allowed))
    return [f"{name!r} holds {unknown[0]!r}, expected one of {list(allowed)!r}"] if unknown else []


def _detection_content(dataset: xr.Dataset) -> list[str]:
    problems = [f"{dim!r} is {dataset[dim].values.tolist()!r}, expected 0..{dataset.sizes[dim] - 1}"
                for dim in ("iteration", "layer") if (dataset[dim].values != np.arange(dataset.sizes[dim])).any()]
    if dataset.attrs["stop_reason"] not in STOP_REASONS:
        problems.append(f"stop_reason {dataset.attrs['stop_reason']!r} is not one of {list(STOP_REASONS)!r}")
    threshold = float(dataset.attrs["spike_threshold"])
    expected = (dataset["input_max"] > threshold) & (dataset["output_max"] > threshold)
    if (dataset["passed"] != expected).any():
        problems.append(f"'passed' is not input_max > {threshold} and output_max > {threshold}")
    # A layer with no eligible projection (every expert under the MoE floor) has NaN maxima and -1 positions.
    measured = dataset.where(dataset["input_max"].notnull(), drop=False).fillna(0)
    names = ("input_channel", "input_token", "output_channel", "output_token")
    return problems + _below(measured, names, 0) + _below(dataset, ("expert",), -1)


def _weights_content(dataset: xr.Dataset) -> list[str]:
    problems = _below(dataset, ("layer", "row", "col", "iteration"), 0) + _below(dataset, ("expert",), -1)
    if any(not str(tensor) for tensor in dataset["tensor"].values):
        problems.append("'tensor' holds an empty parameter name")
    return problems + _not_in(dataset, "layout", LAYOUTS)


def _evaluations_content(dataset: xr.Dataset) -> list[str]:
    problems = [f"ablation {name!r} is not baseline, all, all_restored or swN[_restored]"
                for name in sorted({str(value) for value in dataset["ablation"].values}) if not ABLATION.match(name)]
    problems += [f"zeroed {text!r} is not comma-separated record indices"
                 for text in sorted({str(value) for value in dataset["zeroed"].values}) if not _ZEROED.match(text)]
    problems += _not_in(dataset, "kind", tuple(METRICS))
    for kind, metric in sorted({(str(k), str(m)) for k, m in zip(dataset["kind"].values, dataset["metric"].values)}):
        if kind in METRICS and metric not in METRICS[kind]:
            problems.append(f"metric {metric!r} of kind {kind!r}, expected one of {list(METRICS[kind])!r}")
    return problems + _below(dataset, ("n",), 0)


def _router_content(dataset: xr.Dataset) -> list[str]:
    p_active = dataset["p_active"].values
    # NaN where a layer has no such expert (a dense layer of an MoE model); the rest are fractions
    measured = p_active[~np.isnan(p_active)]
    if ((measured < 0) | (measured > 1)).any():
        return [f"'p_active' holds values outside 0..1: {measured[(measured < 0) | (measured > 1)][:3]!r}"]
    return []


def _summary_content(dataset: xr.Dataset) -> list[str]:
    labels = [str(label) for label in dataset["model"].values]
    return [] if len(set(labels)) == len(labels) else [f"model labels repeat: {labels!r}"]


def _card_who_problems(dataset: xr.Dataset) -> list[str]:
    return _below(dataset, ("layer",), 0) + _below(dataset, ("expert",), -1) + _not_in(
        dataset, "tensor", ("mlp_out", "expert_out", "shared_expert_out"))


def _neuron_cards_content(dataset: xr.Dataset) -> list[str]:
    problems = _card_who_problems(dataset) + _below(dataset, ("neuron",), 0) + _not_in(dataset, "source", CARD_SOURCES)
    return problems + _below(dataset, ("up_id", "down_id", "enrichment_count"), 0)


def _weight_cards_content(dataset: xr.Dataset) -> list[str]:
    problems = _card_who_problems(dataset) + _below(dataset, ("row", "col", "random_row", "random_col"), 0)
    if [str(metric) for metric in dataset["metric"].values] != list(CARD_METRICS):
        problems.append(f"'metric' is {dataset['metric'].values.tolist()!r}, expected {list(CARD_METRICS)!r}")
    problems += _below(dataset, ("weights_record",), -1) + _below(dataset, ("window_tokens",), 1)
    inverted = (dataset["ci_low"] > dataset["ci_high"]).values  # NaN (no bootstrap) compares False
    if inverted.any():
        problems.append("'ci_low' lies above 'ci_high' somewhere")
    return problems + _below(dataset, ("gain_id", "loss_id"), 0)


_CONTENT = {"detection": _detection_content, "weights": _weights_content, "evaluations": _evaluations_content,
            "router": _router_content, "neuron_cards": _neuron_cards_content, "weight_cards": _weight_cards_content,
            SUMMARY_TABLE: _summary_content}


def _cross_problems(where: str, attrs: dict[str, object], tables: dict[str, xr.Dataset]) -> list[str]:
    """Rules across a model's tables: a router only for MoE models; ablations zero weights that exist."""
    problems = []
    if "router" in tables and attrs.get("is_moe") is not True:
        problems.append(f"{where}/router: a router table, but the model's is_moe is {attrs.get('is_moe')!r}")
    if "weight_cards" in tables and "weights" in tables:
        records = tables["weight_cards"]["weights_record"].values
        if (records >= tables["weights"].sizes["record"]).any():
            problems.append(f"{where}/weight_cards: names weights record {int(records.max())}, but weights has "
                            f"{tables['weights'].sizes['record']} records")
    elif "weight_cards" in tables and (tables["weight_cards"]["weights_record"].values >= 0).any():
        problems.append(f"{where}/weight_cards: names weights records, but the model has no weights table "
                        "(cards of given or detected weights say -1)")
    if "weights" in tables and "evaluations" in tables:
        n_weights = tables["weights"].sizes["record"]
        beyond = sorted(index for index in _zeroed_records(tables["evaluations"]) if index >= n_weights)
        if beyond:
            problems.append(f"{where}/evaluations: zeroes weights record {beyond[0]}, but weights has "
                            f"{n_weights} records")
    return problems


def _zeroed_records(evaluations: xr.Dataset) -> set[int]:
    """Every weights record an ablation names (swN) or zeroes (the zeroed lists)."""
    zeroed = {int(index) for text in evaluations["zeroed"].values for index in str(text).split(",") if index}
    named = {int(match.group(3)) for name in evaluations["ablation"].values
             if (match := ABLATION.match(str(name))) and match.group(3)}
    return zeroed | named
