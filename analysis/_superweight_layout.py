"""The comprehensive script's export layout: what ``python -m analysis.superweights STORE --export DIR``
writes beside its CSV and JSON Lines files, so that notebooks written for
``comprehensive_super_weight_analysis.py`` read the store's records unchanged::

    DIR/complete_analysis_<timestamp>.json                       every model, and the cross-model statistics
    DIR/summary_plots/model_comparison.png
    DIR/<label>/data/analysis_<timestamp>.json                   one model's results
    DIR/<label>/data/combined_analysis_<timestamp>.json          every super weight zeroed together
    DIR/<label>/data/individual_analyses/sw_<n>_analysis_<timestamp>.json
    DIR/<label>/plots/detection_iterations.png, super_weight_distribution.png, impact_comparison.png,
                      combined_analysis.png, moe_analysis.png (mixture-of-experts models)
    DIR/<label>/logs/analysis_<timestamp>.log                    what the export read and wrote

``<timestamp>`` (``YYYYMMDD_HHMMSS``, UTC) is when the store's model was built, its ``created``
attribute, not when it is exported. The old script named its files by the wall-clock time of its
run, and the run that made these figures is the build: so exporting an unchanged store again gives
the same names and replaces the files in place (idempotent), while a model built again
(``--overwrite``, or a resumed build) gets new names, its earlier files left beside them as the old
script left its earlier runs. ``complete_analysis`` takes the newest of the exported models' times.
A model without a readable ``created`` (the builders always write one) gets the export's time, and
its log says so.

Field names are the old script's (``column``, ``input_value``, ``perplexity_ratio``, ``accuracy_drop``...),
with the store's names beside them where those differ (``col``, ``input_spike``, ``value``).
docs/superweights.md ("The comprehensive script's export layout") lists every key.
"""

from __future__ import annotations

import datetime
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from analysis import _files as files
from analysis._figure_kit import save
from analysis._superweight_figures import model_comparison, superweight_figures
from analysis.superweights import PRIMARY_ACCURACY, _frame, _json_rows, _nested_evaluations

Tables = dict[str, xr.Dataset]
STAMP = "%Y%m%d_%H%M%S"
REQUIRED = ("detection", "weights", "evaluations")  # a model's results; MoE models also have "router"
# the old script's severity classes, largest bound first: exceeding a bound gives its class, none "minimal"
PERPLEXITY_CLASSES = ((10.0, "catastrophic"), (3.0, "severe"), (1.5, "moderate"), (1.1, "mild"))  # by ratio
ACCURACY_CLASSES = ((0.5, "catastrophic"), (0.2, "severe"), (0.1, "moderate"), (0.05, "mild"))  # by drop
# the old iteration_data keys -> the detection table's variables (one value per layer)
ITERATION_COLUMNS = {"max_input_values": "input_max", "max_output_values": "output_max",
                     "max_input_indices": "input_channel", "max_output_indices": "output_channel",
                     "max_input_tokens": "input_token", "max_output_tokens": "output_token", "experts": "expert"}
# analysis.plots' figure (superweight_figures' key) -> the old script's plot file, and why it can be missing
PLOT_FILES = {"detection_iterations": "detection_iterations", "spike_scatter": "super_weight_distribution",
              "ablation_impact": "impact_comparison", "combined_effects": "combined_analysis",
              "router_analysis": "moe_analysis"}
PLOT_NEEDS = {"detection_iterations": "no detection table", "spike_scatter": "no weights or detection table",
              "ablation_impact": "no evaluations table", "combined_effects": "no evaluations table",
              "router_analysis": "no router table (only mixture-of-experts models have one)"}


def timestamp(attrs: dict[str, Any]) -> tuple[str, str]:
    """The model's build time as ``YYYYMMDD_HHMMSS`` (UTC), and where it came from (for the log)."""
    created = attrs.get("created")
    try:
        moment = datetime.datetime.fromisoformat(str(created))
    except ValueError:
        now = datetime.datetime.now(datetime.UTC)
        return now.strftime(STAMP), f"the export's time (no readable created attribute: {created!r})"
    utc = moment.astimezone(datetime.UTC) if moment.tzinfo else moment  # the builders write UTC times
    return utc.strftime(STAMP), f"the model's created attribute {created!r}"


def severity(value: float | None, classes: tuple[tuple[float, str], ...]) -> str | None:
    if value is None:
        return None
    return next((name for bound, name in classes if value > bound), "minimal")


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None:
        return None
    return files.json_number(numerator / denominator) if denominator else None


# One model ------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """A model's evaluations: per ablation as ``analysis.json`` nests them, with their sample counts."""

    ablations: dict[str, dict[str, Any]]
    counts: dict[tuple[str, str], int]  # (ablation, task, or "perplexity") -> questions, or tokens scored
    attrs: dict[str, Any]

    @classmethod
    def of(cls, evaluations: xr.Dataset | None) -> Measured:
        if evaluations is None:
            return cls({}, {}, {})
        frame = evaluations.to_dataframe()
        keys = frame["task"].where(frame["kind"] == "accuracy", "perplexity")
        counts = {(str(ablation), str(key)): int(n) for ablation, key, n in zip(frame["ablation"], keys, frame["n"])}
        attrs = {name: value for name, value in evaluations.attrs.items() if name != "complete"}
        return cls(_nested_evaluations(evaluations), counts, attrs)

    def get(self, ablation: str, name: str) -> Any:
        return self.ablations.get(ablation, {}).get(name)


def perplexity_impact(measured: Measured, ablation: str) -> dict[str, Any] | None:
    """The baseline's perplexity against ``ablation``'s; None when either was not measured."""
    baseline, modified = measured.get("baseline", "perplexity"), measured.get(ablation, "perplexity")
    if baseline is None or modified is None:
        return None
    ratio = _ratio(modified, baseline)
    return {"baseline_perplexity": baseline, "modified_perplexity": modified, "perplexity_ratio": ratio,
            "perplexity_increase": modified - baseline, "impact_severity": severity(ratio, PERPLEXITY_CLASSES),
            "baseline_loss": measured.get("baseline", "loss"), "modified_loss": measured.get(ablation, "loss"),
            "restored_perplexity": measured.get(f"{ablation}_restored", "perplexity"),
            "dataset_info": {"name": measured.attrs.get("text"), "n_samples": measured.attrs.get("samples"),
                             "n_tokens": measured.counts.get((ablation, "perplexity")),
                             "window_len": measured.attrs.get("window_len"), "stride": measured.attrs.get("stride")}}


def accuracy_impacts(measured: Measured, ablation: str) -> dict[str, dict[str, Any]]:
    """Per task measured both unablated and with ``ablation``: the old accuracy impact."""
    baseline = measured.get("baseline", "accuracy_metrics") or {}
    modified = measured.get(ablation, "accuracy_metrics") or {}
    impacts = {task: _accuracy_impact(task, baseline[task], metrics, measured.counts.get((ablation, task)))
               for task, metrics in modified.items() if task in baseline}
    return {task: impact for task, impact in impacts.items() if impact is not None}


def _accuracy_impact(task: str, baseline: dict[str, float | None], modified: dict[str, float | None],
                     n: int | None) -> dict[str, Any] | None:
    # the primary metric as analysis.json's "accuracy" picks it: acc_norm, else acc, else exact_match
    metric = next((name for name in (*PRIMARY_ACCURACY, *modified) if name in modified and name in baseline), None)
    if metric is None:
        return None
    before, after = baseline[metric], modified[metric]
    drop = None if before is None or after is None else before - after
    return {"task": task, "metric": metric, "baseline_accuracy": before, "modified_accuracy": after,
            "accuracy_drop": drop, "accuracy_ratio": (_ratio(after, before) or 0.0) if drop is not None else None,
            "impact_severity": severity(drop, ACCURACY_CLASSES), "n_samples": n,
            "metrics": {name: {"baseline_accuracy": baseline.get(name), "modified_accuracy": value}
                        for name, value in modified.items()}}


def _routing(router: xr.Dataset | None, layer: int, expert: int) -> dict[str, Any]:
    """The routing figures of an expert's super weight, from the router table (none without one)."""
    if router is None or layer not in router["layer"].values or expert not in router["expert"].values:
        return {}
    cell = router.sel(layer=layer, expert=expert)
    return {"p_active": files.json_number(cell["p_active"].item()),
            "co_spike_score": files.json_number(cell["co_spike"].item()), "co_spiking": bool(cell["co_spiking"].item()),
            "causal_delta_ppl": files.json_number(cell["causal_delta_ppl"].item())}


def _magnitude(input_spike: float | None, output_spike: float | None) -> float | None:
    """|input x output|, the old script's ``magnitude_product``."""
    if input_spike is None or output_spike is None:
        return None
    return files.json_number(abs(input_spike * output_spike))


def super_weight(index: int, row: dict[str, Any], router: xr.Dataset | None) -> dict[str, Any]:
    """Record ``index`` of the weights table under the old script's names, the store's beside them."""
    record = {"index": index, "layer": row["layer"], "row": row["row"], "column": row["col"],
              "coordinates": [row["row"], row["col"]], "component": row["tensor"],
              "input_value": row["input_spike"], "output_value": row["output_spike"],
              "original_value": row["value"], "iteration_found": row["iteration"] + 1,  # the old count from 1
              "magnitude_product": _magnitude(row["input_spike"], row["output_spike"]),
              **{name: row[name] for name in ("col", "tensor", "layout", "expert", "value", "input_spike",
                                              "output_spike", "iteration")}}
    if row["expert"] >= 0:  # the old script named the expert of expert weights only
        record |= {"expert_id": row["expert"], **_routing(router, row["layer"], row["expert"])}
    return record


def super_weights(tables: Tables) -> list[dict[str, Any]]:
    if "weights" not in tables:
        return []
    rows = _json_rows(_frame(tables["weights"], "").drop(columns=["model", "record"], errors="ignore"))
    return [super_weight(index, row, tables.get("router")) for index, row in enumerate(rows)]


def _per_layer(values: xr.DataArray) -> list[Any]:
    listed = values.values.tolist()
    return [files.json_number(value) for value in listed] if values.dtype.kind == "f" else listed


def iteration_data(detection: xr.Dataset) -> list[dict[str, Any]]:
    """Per detection iteration (counted from 1, as the old script did): each layer's maxima."""
    return [{"iteration": int(one["iteration"]) + 1,
             **{old: _per_layer(one[name]) for old, name in ITERATION_COLUMNS.items()},
             "passed_layers": one["layer"].values[one["passed"].values].tolist()}
            for one in (detection.isel(iteration=i) for i in range(detection.sizes["iteration"]))]


def detection_results(detection: xr.Dataset | None, weights: list[dict[str, Any]]) -> dict[str, Any]:
    config = {} if detection is None else {name: value for name, value in detection.attrs.items() if name != "complete"}
    return {"num_super_weights": len(weights), "super_weights": weights, "detection_config": config,
            "iteration_data": [] if detection is None else iteration_data(detection)}


def individual_analysis(record: dict[str, Any], measured: Measured, created: Any) -> dict[str, Any]:
    """Super weight ``record`` zeroed alone (ablation ``sw<index>``)."""
    ablation = f"sw{record['index']}"
    analysis: dict[str, Any] = {"super_weight": record, "timestamp": created, "ablation": ablation,
                                "zeroed": measured.get(ablation, "zeroed") or [record["index"]]}
    impact = perplexity_impact(measured, ablation)
    if impact is not None:
        analysis["perplexity_impact"] = impact
    return analysis | {"accuracy_impacts": accuracy_impacts(measured, ablation)}


def combined_ablation(measured: Measured, n_weights: int) -> str | None:
    """Every super weight zeroed: ``all``, or ``sw0`` for a single weight (zeroing it alone is zeroing all)."""
    if "all" in measured.ablations:
        return "all"
    return "sw0" if n_weights == 1 and "sw0" in measured.ablations else None


def combined_analysis(measured: Measured, n_weights: int, created: Any) -> dict[str, Any] | None:
    ablation = combined_ablation(measured, n_weights)
    if ablation is None:
        return None
    analysis: dict[str, Any] = {"num_super_weights": n_weights, "timestamp": created, "ablation": ablation,
                                "zeroed": measured.get(ablation, "zeroed")}
    impact = perplexity_impact(measured, ablation)
    if impact is not None:
        analysis["combined_perplexity_impact"] = impact | {
            "num_weights": n_weights, "average_impact_per_weight": impact["perplexity_increase"] / n_weights}
    analysis["combined_accuracy_impacts"] = {
        task: impact | {"num_weights": n_weights, "average_impact_per_weight": _ratio(impact["accuracy_drop"], n_weights)}
        for task, impact in accuracy_impacts(measured, ablation).items()}
    return analysis


def moe_analysis(router: xr.Dataset) -> dict[str, Any]:
    """The router table's settings and its co-spiking experts."""
    frame = _frame(router, "").drop(columns="model")
    co_spiking = frame[frame["co_spiking"]].rename(columns={"co_spike": "co_spike_score"})
    return {"router_config": {name: value for name, value in router.attrs.items() if name != "complete"},
            "n_layers": router.sizes["layer"], "n_experts": router.sizes["expert"],
            "scored_experts": int(frame["scored"].sum()),
            "co_spiking_experts": _json_rows(co_spiking[["layer", "expert", "p_active", "co_spike_score",
                                                         "causal_delta_ppl"]])}


def _status(tables: Tables, n_weights: int) -> str:
    if not set(REQUIRED) <= set(tables):
        return "incomplete"
    return "complete" if n_weights else "no_super_weights"


def missing_tables(attrs: dict[str, Any], tables: Tables) -> list[str]:
    wanted = [*REQUIRED, *(["router"] if attrs.get("is_moe") else [])]
    return [table for table in wanted if table not in tables]


def model_results(label: str, attrs: dict[str, Any], tables: Tables) -> dict[str, Any]:
    """One model's ``analysis_<timestamp>.json``."""
    weights, measured, created = super_weights(tables), Measured.of(tables.get("evaluations")), attrs.get("created")
    info = {**attrs, "settings": _settings(attrs), "architecture_type": attrs.get("architecture")}
    results: dict[str, Any] = {
        "model_name": label, "model_id": attrs.get("model_id"), "timestamp": created,
        "status": _status(tables, len(weights)), "model_directory": label, "model_info": info,
        "missing_tables": missing_tables(attrs, tables), "evaluation_config": measured.attrs,
        "detection_results": detection_results(tables.get("detection"), weights)}
    if weights:
        results["individual_analyses"] = {f"sw_{record['index']}": individual_analysis(record, measured, created)
                                          for record in weights}
    combined = combined_analysis(measured, len(weights), created)
    if combined is not None:
        results["combined_analysis"] = combined
    if "router" in tables:
        results["moe_analysis"] = moe_analysis(tables["router"])
    return results


def _settings(attrs: dict[str, Any]) -> Any:
    """The builder's settings, stored as JSON text, parsed."""
    return json.loads(attrs["settings"]) if isinstance(attrs.get("settings"), str) else attrs.get("settings")


# Across models --------------------------------------------------------------------


def _numbers(text: Any, kind: type) -> list[Any]:
    return [kind(value) for value in str(text or "").split(",") if value]


def _patterns(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[Any]]]:
    """Per architecture: its models, their super weight counts, layers and relative depths."""
    patterns: dict[str, dict[str, list[Any]]] = {}
    for row in rows:
        found = patterns.setdefault(row["architecture"], {"models": [], "super_weight_counts": [], "layers": [],
                                                          "relative_depths": []})
        found["models"].append(row["model"])
        found["super_weight_counts"].append(row["n_superweights"])
        found["layers"].append(_numbers(row["layers"], int))
        found["relative_depths"].append(_numbers(row["relative_depth"], float))
    return patterns


def _spread(values: list[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation, 0 for none, as the old script's summary gave them."""
    return (float(np.mean(values)), float(np.std(values))) if values else (0.0, 0.0)


def cross_model_analysis(results: dict[str, dict[str, Any]], summary: pd.DataFrame) -> dict[str, Any]:
    """Statistics over the models whose weights and evaluations are complete (the store's summary rows)."""
    rows = _json_rows(summary[summary["model"].isin(list(results))])
    counts = {row["model"]: row["n_superweights"] for row in rows}
    ratios = {row["model"]: row["severity"] for row in rows if row["severity"] is not None}
    (mean_count, std_count), (mean_ratio, std_ratio) = _spread(list(counts.values())), _spread(list(ratios.values()))
    statistics = {
        "super_weight_counts": counts, "perplexity_impacts": ratios,
        "accuracy_impacts": {label: {task: impact["accuracy_ratio"] for task, impact in
                                     results[label].get("combined_analysis", {}).get("combined_accuracy_impacts", {}).items()}
                             for label in counts},
        "impact_severity": {label: severity(ratio, PERPLEXITY_CLASSES) for label, ratio in ratios.items()},
        "worst_single_ratio": {row["model"]: row["worst_single_ratio"] for row in rows},
        "architecture_distribution": dict(Counter(row["architecture"] for row in rows)),
        "architecture_patterns": _patterns(rows),
        "summary": {"total_models": len(rows), "avg_super_weights": mean_count, "std_super_weights": std_count,
                    "avg_perplexity_ratio": mean_ratio, "std_perplexity_ratio": std_ratio}}
    return {"models_analyzed": list(counts), "summary_statistics": statistics}


def complete_analysis(store: str, results: dict[str, dict[str, Any]], summary: pd.DataFrame,
                      newest: str) -> dict[str, Any]:
    """``complete_analysis_<timestamp>.json``: every model's results; the configs of the first at the top
    (the old script ran every model with one), each model's under ``configs``."""
    first = next(iter(results.values()))
    configs = {label: {"detection_config": found["detection_results"]["detection_config"],
                       "evaluation_config": found["evaluation_config"]} for label, found in results.items()}
    metadata = {"timestamp": results[newest]["timestamp"], "model_names": list(results), "store": store,
                "exported_by": "python -m analysis.superweights --export", **configs[first["model_name"]],
                "configs": configs}
    return {"metadata": metadata, "model_results": results,
            "cross_model_analysis": cross_model_analysis(results, summary)}


# Files ----------------------------------------------------------------------------


def _described(name: str, table: xr.Dataset) -> str:
    """A table's sizes, and for detection and evaluations what a reader checks first."""
    text = " x ".join(f"{size} {dim}" for dim, size in table.sizes.items()) or "empty"
    if name == "detection":
        text += f"; stop reason {table.attrs.get('stop_reason')!r}"
    if name == "evaluations" and table.sizes.get("record"):
        text += f"; ablations {', '.join(map(str, pd.unique(table['ablation'].values)))}"
        text += f"; tasks {', '.join(map(str, pd.unique(table['task'].values)))}"
    return text


def _read_lines(label: str, store: str, attrs: dict[str, Any], tables: Tables, results: dict[str, Any],
                stamp: tuple[str, str]) -> list[str]:
    """The log's first lines: which model, which time, what was read, what is missing."""
    lines = [f"python -m analysis.superweights --export: model {label!r} of store {store!r}",
             (f"model_id {attrs.get('model_id')!r}, architecture {attrs.get('architecture')!r}, "
              f"{attrs.get('n_layers')} layers, built {attrs.get('created')!r}"),
             f"timestamp {stamp[0]}: {stamp[1]}"]
    lines += [f"read {name}: {_described(name, dataset)}" for name, dataset in tables.items()]
    lines += [f"missing table {name}: not in the store, or incomplete (an interrupted build); rerun "
              "python -m builders.superweights with the same options" for name in results["missing_tables"]]
    return lines + [f"status {results['status']}: {results['detection_results']['num_super_weights']} super weights"]


def _plots(folder: Path, tables: Tables, log: list[str]) -> list[Path]:
    figures = superweight_figures(tables)
    log += [f"no plot {PLOT_FILES[name]}.png: {PLOT_NEEDS[name]}" for name in PLOT_FILES if name not in figures]
    return [path for name, figure in figures.items() for path in save(figure, folder / PLOT_FILES[name])]


def _write_model(folder: Path, results: dict[str, Any], tables: Tables, stamp: str, log: list[str]) -> list[Path]:
    data = folder / "data"
    written = [files.write_json(data / f"analysis_{stamp}.json", results)]
    if "combined_analysis" in results:
        written.append(files.write_json(data / f"combined_analysis_{stamp}.json", results["combined_analysis"]))
    written += [files.write_json(data / "individual_analyses" / f"{name}_analysis_{stamp}.json", analysis)
                for name, analysis in results.get("individual_analyses", {}).items()]
    written += _plots(folder / "plots", tables, log)
    log += [f"wrote {path.relative_to(folder).as_posix()}" for path in written]
    log_file = folder / "logs" / f"analysis_{stamp}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("\n".join(log) + "\n", encoding="utf-8")
    return [*written, log_file]


def write_layout(store: str, target: Path, tables: dict[str, Tables], attrs: dict[str, dict[str, Any]],
                 summary: pd.DataFrame) -> list[Path]:
    """Write the comprehensive script's files for every model of ``tables`` to ``target``."""
    results, stamps, written = {}, {}, []
    for label, found in tables.items():
        stamp = timestamp(attrs[label])
        results[label], stamps[label] = model_results(label, attrs[label], found), stamp[0]
        log = _read_lines(label, store, attrs[label], found, results[label], stamp)
        written += _write_model(target / label, results[label], found, stamp[0], log)
    newest = max(stamps, key=lambda label: stamps[label])
    document = complete_analysis(store, results, summary, newest)
    written.append(files.write_json(target / f"complete_analysis_{stamps[newest]}.json", document))
    return written + save(model_comparison(summary), target / "summary_plots" / "model_comparison")
