"""``python -m analysis.superweights STORE``: the Super Weight tables of a store, as pandas tables and files.

    from analysis import open_superweights, superweight_records, superweight_summary
    tables = open_superweights("stores/sw.zarr")        # label -> table -> Dataset (complete tables only)
    superweight_records("stores/sw.zarr", "weights")    # every model's super weights, one row each
    superweight_summary("stores/sw.zarr")               # one row per model: count, depth, severity

``--export DIR`` writes CSV, JSON Lines and one ``analysis.json`` per model (see ``export``), and beside
them the layout of the Super Weight scripts' ``comprehensive_super_weight_analysis.py``
(``complete_analysis_<timestamp>.json``, ``summary_plots/``, per model ``data/``, ``plots/``, ``logs/``;
analysis/_superweight_layout.py). Its ``<timestamp>`` is the model's build time in the store (its
``created`` attribute, UTC), not the export's: the files are named after the run that made the figures,
as the old script named them, and exporting an unchanged store again gives the same names (replaced in
place). ``--plots DIR`` draws every figure of ``analysis.plots`` for the tables. Nothing here loads a
model: the tables come from ``python -m builders.superweights``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from analysis import _files as files
from analysis._cli import add_store_arguments, parse_arguments
from store import (
    SUPERWEIGHT_TABLES,
    InputError,
    OneLineParser,
    StoreLocation,
    StoreLocationError,
    ablation_perplexities,
    check_output_path,
    complete_tables,
    model_attrs,
    read_table,
    resolve_location,
    summarise,
    superweight_labels,
)

Tables = dict[str, dict[str, xr.Dataset]]
EXPORT_FORMAT = "activation-superweights-export"  # summary.json says it: a folder we may write into again
# the accuracy reported per task when it has several metrics (HellaSwag: acc and acc_norm)
PRIMARY_ACCURACY = ("acc_norm", "acc", "exact_match")


def _location(store: str, storage_options: dict[str, Any] | None, catalog: str | Path | None) -> StoreLocation:
    location = resolve_location(store, storage_options, catalog)
    location.check_exists()
    if not superweight_labels(location):
        raise StoreLocationError(f"store {location.display()!r} holds no super weight analyses; build them with "
                                 "python -m builders.superweights")
    return location


def _labels(location: StoreLocation, models: list[str] | None) -> list[str]:
    """The store's model labels, or ``models`` once each is known to be there."""
    stored = superweight_labels(location)
    unknown = [label for label in models or [] if label not in stored]
    if unknown:
        raise InputError(f"model {unknown[0]!r} has no super weight analysis in {location.display()!r} "
                         f"(models: {stored!r}); pass --models with some of those")
    return list(models) if models else stored


def open_superweights(store: str, storage_options: dict[str, Any] | None = None, models: list[str] | None = None,
                      catalog: str | Path | None = None) -> Tables:
    """Label -> table name -> Dataset, in memory, for every complete table (incomplete ones are left out)."""
    return _read(_location(store, storage_options, catalog), models)


def _read(location: StoreLocation, models: list[str] | None) -> Tables:
    return {label: {table: read_table(location, label, table)
                    for table in SUPERWEIGHT_TABLES if table in complete_tables(location, label)}
            for label in _labels(location, models)}


def _opened(store: str | Tables, storage_options: dict[str, Any] | None, models: list[str] | None) -> Tables:
    """Tables from a store name, or the tables ``open_superweights`` gave (not read again)."""
    return open_superweights(store, storage_options, models) if isinstance(store, str) else store


def _frame(dataset: xr.Dataset, label: str) -> pd.DataFrame:
    """One row per cell of the table's dims (detection: per iteration and layer), with a ``model`` column."""
    frame = dataset.to_dataframe().reset_index()
    frame.insert(0, "model", label)
    return frame


def records(store: str | Tables, table: str, storage_options: dict[str, Any] | None = None,
            models: list[str] | None = None) -> pd.DataFrame:
    """Every model's rows of one table (``detection``, ``weights``, ``evaluations`` or ``router``)."""
    if table not in SUPERWEIGHT_TABLES:
        raise InputError(f"unknown table {table!r}; pass one of {list(SUPERWEIGHT_TABLES)!r}")
    tables = _opened(store, storage_options, models)
    frames = [_frame(found[table], label) for label, found in tables.items() if table in found]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"model": []})


def summary(store: str, storage_options: dict[str, Any] | None = None, models: list[str] | None = None,
            catalog: str | Path | None = None) -> pd.DataFrame:
    """One row per model with complete weights and evaluations: counts, layers, depth, perplexity severity."""
    return _summary(_location(store, storage_options, catalog), models)


def _summary(location: StoreLocation, models: list[str] | None) -> pd.DataFrame:
    frame = summarise(location).to_dataframe().reset_index()
    return frame[frame["model"].isin(_labels(location, models))].reset_index(drop=True)


perplexities = ablation_perplexities  # ablation -> perplexity, in stored order (the store's own reading)


def accuracies(evaluations: xr.Dataset) -> pd.DataFrame:
    """Ablation x task: each task's primary accuracy (acc_norm, else acc, else exact_match), in stored order."""
    frame = evaluations.to_dataframe()
    rows = frame[frame["kind"] == "accuracy"].assign(
        rank=lambda rows: rows["metric"].map({metric: i for i, metric in enumerate(PRIMARY_ACCURACY)}))
    best = rows.sort_values("rank", kind="stable").groupby(["ablation", "task"], sort=False)["value"].first()
    table = best.unstack("task") if len(best) else pd.DataFrame(index=pd.Index([], name="ablation"))
    order = [name for name in pd.unique(frame["ablation"]) if name in table.index]
    return table.reindex(index=order, columns=list(pd.unique(rows["task"])))


# Export ---------------------------------------------------------------------------


def _json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON values: NaN and infinities as null, NumPy numbers as Python ones (floats exact, unlike
    to_json's fixed decimal places)."""
    finite = frame.replace([math.inf, -math.inf], math.nan)  # JSON has neither NaN nor infinity
    return finite.astype(object).where(finite.notna(), None).to_dict(orient="records")


def check_export_folder(folder: str | Path) -> Path:
    """The export folder, refused unless it is new, empty, or an earlier export (its summary.json says so)."""
    return files.check_export_folder(folder, "summary.json", EXPORT_FORMAT, "super weight")


def _write_lines(path: Path, frame: pd.DataFrame) -> Path:
    return files.write_lines(path, _json_rows(frame))


def _nested_evaluations(evaluations: xr.Dataset) -> dict[str, dict[str, Any]]:
    """{ablation: {zeroed, perplexity, loss, accuracy: {task: value}, accuracy_metrics: {task: {metric: value}}}}
    in stored order (perplexity and loss of the first text source)."""
    frame = evaluations.to_dataframe()
    primary = accuracies(evaluations)
    nested = {}
    for ablation, rows in frame.groupby("ablation", sort=False):
        perplexity = rows[rows["kind"] == "perplexity"].groupby("metric", sort=False)["value"].first()
        accuracy = rows[rows["kind"] == "accuracy"]
        nested[str(ablation)] = {
            "zeroed": [int(i) for i in str(rows["zeroed"].iloc[0]).split(",") if i],
            "perplexity": files.json_number(perplexity.get("perplexity")), "loss": files.json_number(perplexity.get("loss")),
            "accuracy": primary.loc[ablation].dropna().to_dict() if ablation in primary.index else {},
            "accuracy_metrics": {task: {metric: files.json_number(value) for metric, value in zip(group["metric"], group["value"])}
                                 for task, group in accuracy.groupby("task", sort=False)}}
    return nested


def _iterations(detection: xr.Dataset) -> list[dict[str, Any]]:
    """Per detection iteration: the layers that passed, and each layer's largest input and output."""
    frame = _frame(detection, "").drop(columns="model")
    return [{"iteration": int(iteration), "passed_layers": rows.loc[rows["passed"], "layer"].tolist(),
             "layers": _json_rows(rows.drop(columns=["iteration", "passed"]))}
            for iteration, rows in frame.groupby("iteration")]


def analysis_document(label: str, attrs: dict[str, Any], tables: dict[str, xr.Dataset]) -> dict[str, Any]:
    """One model's analysis as one JSON document: provenance, super weights, iterations, evaluations."""
    settings = attrs.get("settings", "{}")
    document: dict[str, Any] = {"model": label, "attrs": {**attrs, "settings": json.loads(settings)}}
    if "weights" in tables:
        document["super_weights"] = _json_rows(_frame(tables["weights"], label).drop(columns="model"))
    if "detection" in tables:
        document["detection"] = {key: value for key, value in tables["detection"].attrs.items() if key != "complete"}
        document["iterations"] = _iterations(tables["detection"])
    if "evaluations" in tables:
        document["evaluations"] = _nested_evaluations(tables["evaluations"])
    return document


def _export_model(folder: Path, label: str, attrs: dict[str, Any], tables: dict[str, xr.Dataset]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = [files.write_csv(folder / f"{table}.csv", _frame(dataset, label)) for table, dataset in tables.items()]
    written += [_write_lines(folder / f"{table}.jsonl", _frame(tables[table], label))
                for table in ("weights", "evaluations") if table in tables]
    return [*written, files.write_json(folder / "analysis.json", analysis_document(label, attrs, tables))]


def export(store: str, folder: str | Path, storage_options: dict[str, Any] | None = None,
           models: list[str] | None = None, catalog: str | Path | None = None) -> list[Path]:
    """Write every model's tables (CSV; weights and evaluations also as JSON Lines; ``analysis.json``) to
    ``folder/<label>/``, and ``summary.json``, ``summary.csv``, ``superweights.jsonl`` (every model's weights);
    beside them the comprehensive script's layout (``analysis/_superweight_layout.py``).

    Refuses a non-empty folder that is not an earlier export; an earlier export's files are replaced (the
    timestamped ones when the store did not change: their names are the models' build times)."""
    target = check_export_folder(folder)
    return _export(_location(store, storage_options, catalog), target, models)


def _export(location: StoreLocation, target: Path, models: list[str] | None) -> list[Path]:
    from analysis import _superweight_layout as layout  # matplotlib and the figures: only when exporting

    tables = _read(location, models)
    attrs = {label: model_attrs(location, label) for label in tables}
    # first a marker, so a folder left half-written by a failure (a figure, a full disk) is still ours
    files.write_json(target / "summary.json", {"format": EXPORT_FORMAT, "format_version": 1, "complete": False})
    written = [path for label, found in tables.items()
               for path in _export_model(target / label, label, attrs[label], found)]
    table = _summary(location, models)
    written.append(files.write_csv(target / "summary.csv", table))
    written.append(_write_lines(target / "superweights.jsonl", records(tables, "weights")))
    written += layout.write_layout(location.display(), target, tables, attrs, table)
    document = {"format": EXPORT_FORMAT, "format_version": 1, "store": location.display(),
                "models": _json_rows(table)}
    return [*written, files.write_json(target / "summary.json", document)]  # last: it marks the folder as ours


# Command line ---------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m analysis.superweights", description=__doc__.split("\n\n")[0])
    add_store_arguments(parser)
    parser.add_argument("--models", nargs="+", default=None, metavar="LABEL",
                        help="only these models (labels as stored; default: every model)")
    parser.add_argument("--export", "--results-dir", "--results_dir", type=Path, default=None, metavar="DIR",
                        help="write CSV, JSON Lines and analysis.json per model, the summary, and the "
                             "comprehensive script's layout (complete_analysis_<time>.json, data/, plots/, logs/) "
                             "to DIR (--results-dir: the comprehensive script's spelling)")
    parser.add_argument("--plots", type=Path, default=None, metavar="DIR",
                        help="write every figure to the output folder DIR (one subfolder per model)")
    parser.add_argument("--format", choices=("png", "pdf", "both"), default="png", help="figure file format")
    return parse_arguments(parser, argv)


def _print_tables(location: StoreLocation, models: list[str] | None) -> None:
    table = _summary(location, models)
    print(table.to_string(index=False) if len(table) else "no model has complete weights and evaluations yet")
    weights = records(_read(location, models), "weights")
    columns = ["model", "layer", "row", "col", "expert", "value", "input_spike", "output_spike", "tensor"]
    if len(weights):
        print("\nsuper weights:\n" + weights[columns].to_string(index=False))


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    try:
        _run(options)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _run(options: argparse.Namespace) -> None:
    # every folder is checked before any work, so a bad --plots does not come after a finished --export
    target = None if options.export is None else check_export_folder(options.export)
    if options.plots is not None:
        check_output_path(str(options.plots), "--plots", folder=True)
    location = _location(options.store, options.storage_options, None)
    if target is not None:
        print(f"wrote {len(_export(location, target, options.models))} files to {options.export}")
    if options.plots is not None:
        print(f"wrote {len(_plot_all(location, options))} figures to {options.plots}")
    if options.export is None and options.plots is None:
        _print_tables(location, options.models)


def _plot_all(location: StoreLocation, options: argparse.Namespace) -> list[Path]:
    from analysis import plots

    written = []
    for label, found in _read(location, options.models).items():
        for name, figure in plots.superweight_figures(found).items():
            written += plots.save(figure, options.plots / label / name, options.format)
    comparison = plots.model_comparison(_summary(location, options.models))
    return written + plots.save(comparison, options.plots / "model_comparison", options.format)


if __name__ == "__main__":
    sys.exit(main())
