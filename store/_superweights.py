"""The ``superweights`` group: per model, the tables of one Super Weight analysis, and a cross-model summary.

``superweights/<model label>/<table>`` holds one table each (``detection``, ``weights``,
``evaluations``, and ``router`` for mixture-of-experts models; ``neuron_cards`` and
``weight_cards`` from the vocabulary analyses of ``python -m analysis.vocab``), written with the item
protocol of ``store/_items.py``: the table is written whole, then its ``complete``
attribute is set, its commit marker. Readers and resumed builds trust complete tables
only. ``superweights/_summary`` is one more table, one row per model whose weights and
evaluations are complete, rewritten after each model. A build holds the lease
``superweights/<label>`` while it writes that model. docs/store-format.md has the schema.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from typing import Any

import pandas as pd
import xarray as xr
import zarr

from store._items import complete_children, string_columns, write_item
from store._location import StoreLocation, open_existing_group
from store._schema import MODEL_LABEL
from store.errors import ConfigError, ContractError, StoreLocationError

SUPERWEIGHTS_GROUP = "superweights"
SUPERWEIGHTS_FORMAT = "activation-superweights"
SUPERWEIGHTS_VERSION = 1
SUPERWEIGHT_TABLES = ("detection", "weights", "evaluations", "router", "neuron_cards", "weight_cards")
CARD_TABLES = ("neuron_cards", "weight_cards")
CARD_METRICS = ("loss", "entropy", "topk_margin", "stopword_mass")  # the weight cards' ``metric`` coordinate
SUMMARY_TABLE = "_summary"
STRING = "str"  # any text dtype: zarr gives NumPy's StringDType back, callers may hand object or <U arrays

_DETECTION = ("iteration", "layer")
_RECORD = ("record",)
_ROUTER = ("layer", "expert")
_CARD = ("card",)
_RANKED = ("card", "rank")
_BY_METRIC = ("card", "metric")
# which down projection (``tensor``: mlp_out, expert_out or shared_expert_out; ``parameter``: its full name),
# which expert, and how often that expert is routed (NaN for dense layers)
_CARD_WHO = {"tensor": (_CARD, STRING), "parameter": (_CARD, STRING), "layer": (_CARD, "int32"),
             "expert": (_CARD, "int32"), "p_active": (_CARD, "float32")}
# table -> variable -> (dims, dtype): what every table must hold (docs/store-format.md)
TABLE_SCHEMAS: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {
    "detection": {
        "iteration": (("iteration",), "int32"), "layer": (("layer",), "int32"),
        "input_max": (_DETECTION, "float32"), "input_channel": (_DETECTION, "int32"),
        "input_token": (_DETECTION, "int32"), "output_max": (_DETECTION, "float32"),
        "output_channel": (_DETECTION, "int32"), "output_token": (_DETECTION, "int32"),
        "expert": (_DETECTION, "int32"), "passed": (_DETECTION, "bool"),
    },
    "weights": {
        "tensor": (_RECORD, STRING), "layer": (_RECORD, "int32"), "row": (_RECORD, "int32"),
        "col": (_RECORD, "int32"), "expert": (_RECORD, "int32"), "layout": (_RECORD, STRING),
        "value": (_RECORD, "float32"), "input_spike": (_RECORD, "float32"),
        "output_spike": (_RECORD, "float32"), "iteration": (_RECORD, "int32"),
    },
    "evaluations": {
        "ablation": (_RECORD, STRING), "zeroed": (_RECORD, STRING), "kind": (_RECORD, STRING),
        "task": (_RECORD, STRING), "metric": (_RECORD, STRING), "value": (_RECORD, "float64"),
        "n": (_RECORD, "int64"),
    },
    "router": {
        "p_active": (_ROUTER, "float32"), "scored": (_ROUTER, "bool"), "co_spike": (_ROUTER, "float32"),
        "co_spiking": (_ROUTER, "bool"), "causal_delta_ppl": (_ROUTER, "float32"),
    },
    "neuron_cards": {
        **_CARD_WHO, "neuron": (_CARD, "int32"), "source": (_CARD, STRING), "label": (_CARD, STRING),
        "var": (_CARD, "float64"), "skew": (_CARD, "float64"), "kurt": (_CARD, "float64"),
        "cos_var": (_CARD, "float64"), "cos_skew": (_CARD, "float64"), "cos_kurt": (_CARD, "float64"),
        **{f"{side}_{part}": (_RANKED, dtype) for side in ("up", "down")
           for part, dtype in (("id", "int32"), ("tok", STRING), ("str", STRING), ("effect", "float32"))},
        "token_class": (("token_class",), STRING), "enrichment_score": (("card", "token_class"), "float64"),
        "enrichment_count": (("card", "token_class"), "int32"),
        "enrichment_examples": (("card", "token_class"), STRING),
    },
    "weight_cards": {
        **_CARD_WHO, "row": (_CARD, "int32"), "col": (_CARD, "int32"),
        "value": (_CARD, "float32"), "weights_record": (_CARD, "int32"),
        "random_row": (_CARD, "int32"), "random_col": (_CARD, "int32"),
        "metric": (("metric",), STRING), "baseline": (_BY_METRIC, "float64"), "delta": (_BY_METRIC, "float64"),
        "random_coord_delta": (_BY_METRIC, "float64"), "neuron_zero_delta": (_BY_METRIC, "float64"),
        "bootstrap_mean": (_BY_METRIC, "float64"), "ci_low": (_BY_METRIC, "float64"),
        "ci_high": (_BY_METRIC, "float64"),
        **{f"{side}_{part}": (_RANKED, dtype) for side in ("gain", "loss")
           for part, dtype in (("id", "int32"), ("tok", STRING), ("str", STRING), ("delta_prob", "float64"))},
        "cascade_layer": (("cascade_layer",), "int32"),
        "cascade_entropy": (("card", "cascade_layer"), "float64"),
        "cascade_margin": (("card", "cascade_layer"), "float64"),
        "window_tokens": (("window",), "int64"), "window_baseline": (("window", "metric"), "float64"),
        "window_delta": (("card", "window", "metric"), "float64"),
    },
    SUMMARY_TABLE: {
        "model": (("model",), STRING), "architecture": (("model",), STRING), "n_layers": (("model",), "int32"),
        "n_superweights": (("model",), "int32"), "layers": (("model",), STRING),
        "relative_depth": (("model",), STRING), "baseline_perplexity": (("model",), "float64"),
        "all_zeroed_perplexity": (("model",), "float64"), "severity": (("model",), "float64"),
        "worst_single_ratio": (("model",), "float64"),
    },
}
TABLE_ATTRS = {
    "detection": ("spike_threshold", "max_iterations", "calibration_tokens", "stop_reason"),
    "weights": (),
    "evaluations": ("window_len", "stride", "text", "samples", "accuracy_samples", "seed"),
    "router": ("router_samples", "p_active_floor", "co_spike_threshold", "causal_scoring"),
    "neuron_cards": ("settings", "top_k", "cosine", "enrichment", "enrichment_top", "created"),
    "weight_cards": ("settings", "text", "n_tokens", "n_windows", "window_len", "stride", "drop_first_token",
                     "margin_k", "bootstrap", "confidence", "seed", "weights_from", "created"),
    SUMMARY_TABLE: (),
}
LAYOUTS = ("out_in", "in_out")  # Linear and fused experts: [expert,] row, col; GPT-2's Conv1D: col, row
CARD_SOURCES = ("superweight", "asked")  # a neuron card's neuron: a super weight's column, or --cards.neurons
STOP_REASONS = ("nothing passed the threshold", "max_iterations reached", "only known candidates passed")
METRICS = {"perplexity": ("perplexity", "loss"), "accuracy": ("acc", "acc_norm", "exact_match")}  # by kind
# "swN" zeroes weights record N; "_restored" puts the super activation back (all, or each with restore=each)
ABLATION = re.compile(r"^(baseline|(all|sw(\d+))(_restored)?)$")
MODEL_ATTRS = ("model_id", "architecture", "n_layers", "hidden_size", "intermediate_size", "is_moe", "n_experts",
               "dtype", "device", "versions", "created", "settings")  # "settings": the builder's; a model with
# card tables only (vocabulary analyses of weights given by hand) has none: its cards carry their own


def check_label(label: str) -> None:
    """Refuse a label that is not a plain name (it becomes a path in the store)."""
    if not isinstance(label, str) or not MODEL_LABEL.match(label):  # never "_summary": the two cannot clash
        raise ConfigError(f"model label {label!r} is not a plain name (letters, digits, '.', '_', '-', starting "
                          "with a letter or digit); give another one with --model.label")


def _check_table(table: str, known: tuple[str, ...]) -> None:
    if table not in known:
        raise ContractError(f"unknown superweights table {table!r}; name one of {list(known)!r}")


def _table_path(label: str, table: str) -> str:
    return f"{SUPERWEIGHTS_GROUP}/{label}/{table}"


def _jsonable(attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` as plain JSON values (NumPy scalars become Python numbers); refuses anything else."""
    try:
        return json.loads(json.dumps(attrs, default=lambda value: value.item()))
    except (TypeError, AttributeError, ValueError) as error:
        raise ContractError(f"model attributes {attrs!r} are not JSON values ({error}); "
                            "pass numbers, strings, lists and dicts") from error


def prepare_superweights(location: StoreLocation, label: str, model_attrs: dict[str, Any], replace: bool = True) -> None:
    """Create the ``superweights`` group (with its format) if needed, and the model node with ``model_attrs``;
    with ``replace=False`` a node that has attributes already keeps them (the cards of a model the
    super-weight builder recorded leave its provenance as it is)."""
    check_label(label)
    root = zarr.open_group(location.zarr_store(), mode="a", use_consolidated=False, zarr_format=3)
    group = root.require_group(SUPERWEIGHTS_GROUP)
    if group.attrs.get("format") != SUPERWEIGHTS_FORMAT:
        group.attrs.update({"format": SUPERWEIGHTS_FORMAT, "format_version": SUPERWEIGHTS_VERSION,
                            "description": "see docs/store-format.md"})
    node = group.require_group(label)
    if replace or "model_id" not in node.attrs:
        node.attrs.update(_jsonable(model_attrs))


def write_table(location: StoreLocation, label: str, table: str, dataset: xr.Dataset) -> None:
    """Write one table of model ``label`` whole, then its commit marker; a table off the schema is refused."""
    check_label(label)
    _check_table(table, SUPERWEIGHT_TABLES)
    _write_checked(location, _table_path(label, table), table, string_columns(dataset))


def _write_checked(location: StoreLocation, path: str, table: str, dataset: xr.Dataset) -> None:
    """Refuse a table off the schema (before anything is written), else write it as an item."""
    from store._validate_superweights import table_problems  # the validator imports this module's schema

    problems = table_problems(table, dataset)
    if problems:
        raise ContractError(f"superweights table {path!r} breaks the schema: {'; '.join(problems)}; "
                            "fix the table (docs/store-format.md)")
    write_item(location, path, dataset)


def complete_tables(location: StoreLocation, label: str) -> set[str]:
    """The tables of model ``label`` whose commit marker is set."""
    return set(complete_children(location, f"{SUPERWEIGHTS_GROUP}/{label}")) & set(SUPERWEIGHT_TABLES)


def _as_written(dataset: xr.Dataset, table: str) -> xr.Dataset:
    """Variables in the schema's order (Zarr lists them in any order), and StringDType columns as object
    arrays of str, which pandas and plain comparisons take as they are."""
    schema = [name for name in TABLE_SCHEMAS[table] if name in dataset.data_vars]
    dataset = dataset[schema + [name for name in dataset.data_vars if name not in schema]]
    for name in [name for name, values in dataset.variables.items() if values.dtype.kind == "T"]:
        dataset[name] = dataset[name].astype(object)
    return dataset


def read_table(location: StoreLocation, label: str, table: str) -> xr.Dataset:
    """One complete table (or the ``_summary``, label ``""``), loaded into memory: they are small."""
    _check_table(table, (*SUPERWEIGHT_TABLES, SUMMARY_TABLE))
    path = f"{SUPERWEIGHTS_GROUP}/{table}" if table == SUMMARY_TABLE else _table_path(label, table)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr's consolidated-metadata and string dtype notices
            dataset = xr.open_zarr(location.zarr_store(read_only=True), group=path, consolidated=False,
                                   zarr_format=3).load()
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError) as error:
        builder = "python -m analysis.vocab" if table in CARD_TABLES else "python -m builders.superweights"
        raise StoreLocationError(f"no {path!r} table in store {location.display()!r}; build it with "
                                 f"{builder}") from error
    if dataset.attrs.get("complete") is not True:
        raise StoreLocationError(f"table {path!r} in store {location.display()!r} is incomplete (a build was "
                                 "interrupted); rerun the build")
    return _as_written(dataset, table)


def _group(location: StoreLocation) -> zarr.Group | None:
    """The ``superweights`` group, None without one; damaged metadata is one error naming the fix."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # _leases/ and _staging/ are not Zarr nodes
        return open_existing_group(location, SUPERWEIGHTS_GROUP, mode="r")


def superweight_labels(location: StoreLocation) -> list[str]:
    """The labels of the model nodes in ``superweights`` (not the summary; [] without the group)."""
    group = _group(location)
    return [] if group is None else sorted(name for name, _ in group.groups() if name != SUMMARY_TABLE)


def model_attrs(location: StoreLocation, label: str) -> dict[str, Any]:
    """The provenance and settings of model ``label`` (its node's attributes)."""
    group = _group(location)
    if group is None or label == SUMMARY_TABLE or label not in group:
        raise StoreLocationError(f"no superweights model {label!r} in store {location.display()!r} (models: "
                                 f"{superweight_labels(location)!r}); pass one of those")
    return dict(group[label].attrs)


def remove_superweights_model(location: StoreLocation, label: str) -> None:
    """Delete model ``label``'s node and tables (for ``--overwrite``; its lease is held). The summary is
    the caller's to rewrite."""
    check_label(label)
    location.remove_subtree(f"{SUPERWEIGHTS_GROUP}/{label}")


def remove_card_tables(location: StoreLocation, label: str) -> None:
    """Delete model ``label``'s card tables (``--overwrite`` of the vocabulary analyses; its lease is held)."""
    check_label(label)
    for table in CARD_TABLES:
        location.remove_subtree(_table_path(label, table))


def ablation_perplexities(evaluations: xr.Dataset) -> pd.Series:
    """Ablation -> perplexity, in stored order (of the first text source, should there be several)."""
    frame = evaluations.to_dataframe()
    rows = frame[(frame["kind"] == "perplexity") & (frame["metric"] == "perplexity")]
    return rows.groupby("ablation", sort=False)["value"].first()


def _summary_row(label: str, attrs: dict[str, Any], weights: xr.Dataset, evaluations: xr.Dataset) -> dict[str, Any]:
    layers = [int(layer) for layer in weights["layer"].values]
    n_layers = int(attrs.get("n_layers", 0))
    perplexity = ablation_perplexities(evaluations).to_dict()
    baseline = perplexity.get("baseline", math.nan)
    # a single super weight may have no separate "all" ablation: zeroing it alone is zeroing all
    all_zeroed = perplexity.get("all", perplexity.get("sw0", math.nan) if len(layers) == 1 else math.nan)
    singles = [perplexity[f"sw{i}"] for i in range(len(layers)) if f"sw{i}" in perplexity]
    return {"model": label, "architecture": str(attrs.get("architecture", "")), "n_layers": n_layers,
            "n_superweights": len(layers), "layers": ",".join(map(str, layers)),
            "relative_depth": ",".join(f"{layer / max(n_layers - 1, 1):.3f}" for layer in layers),
            "baseline_perplexity": baseline, "all_zeroed_perplexity": all_zeroed,
            "severity": all_zeroed / baseline, "worst_single_ratio": max(singles, default=math.nan) / baseline}


def summarise(location: StoreLocation) -> xr.Dataset:
    """The ``_summary`` table: one row per model whose weights and evaluations are complete."""
    rows = [_summary_row(label, model_attrs(location, label), read_table(location, label, "weights"),
                         read_table(location, label, "evaluations"))
            for label in superweight_labels(location)
            if {"weights", "evaluations"} <= complete_tables(location, label)]
    frame = pd.DataFrame(rows, columns=list(TABLE_SCHEMAS[SUMMARY_TABLE]))  # the columns, also with no row
    columns = {name: ("model", frame[name].to_numpy(dtype=object if dtype == STRING else dtype))
               for name, (_, dtype) in TABLE_SCHEMAS[SUMMARY_TABLE].items() if name != "model"}
    return xr.Dataset(columns, coords={"model": frame["model"].to_numpy(dtype=object)})


def write_summary(location: StoreLocation) -> None:
    """Rewrite ``superweights/_summary`` from the complete tables of every model (a committed item)."""
    _write_checked(location, f"{SUPERWEIGHTS_GROUP}/{SUMMARY_TABLE}", SUMMARY_TABLE, string_columns(summarise(location)))
