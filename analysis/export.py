"""``python -m analysis.export STORE --to npz DIR``: a store's statistics and fits in the files older notebooks read.

The layout is ZipfActivation's results folder, so its notebooks load our stores unchanged:
  DIR/statistics/<layer>.npz   one per layer: an array per metric, shape [N] (float32), and
                               channel_wise, shape [N, k]: ``np.load(...)["rms"]``  (--to npz)
  DIR/fits/fit_results.json    {layer: {metric: {alpha, xmin, sigma, ks_statistic, n_tail, slope,
                               intercept, r_squared, comparisons: {lognormal: {R, p}, ...}, ...},
                               channel_wise: {<hidden channel>: {...}}}}  (--to json)
Layers are named as ZipfActivation resolved them: ``embed`` and ``layer_<decoder index>``. A store
of several models gives one such folder per model, DIR/<model label>/, unless --model picks one.

A store's ``vectors`` group goes out in the Activation Vector Project's files (analysis/_vector_exports.py):
  DIR/activation_vectors_<pooling>.safetensors + _metadata.json   float16 (doc, feature)  (--to safetensors;
                               --per_vector: activation_vector_<pooling>_<doc>.* per document; --centre)
  DIR/vectors_<pooling>_raw.csv, vectors_<pooling>_centered.csv   doc_id, v0 ... v<d-1>    (--to csv)
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from analysis._cli import add_cache_arguments, add_store_arguments, open_from_arguments, parse_arguments
from analysis._dataset_fit import STATUS
from analysis._dataset_fit import fit as fit_dataset
from analysis._files import check_export_folder, json_number, write_json
from analysis._open import open_store
from analysis._vector_exports import export_csv, export_safetensors
from analysis._vectors import open_vectors
from store import InputError, OneLineParser

MARKER = "activation-export.json"  # names the folder's kind, so a rerun may write into it again
EXPORT_FORMAT = "zipf-activation-results"
TARGETS = ("npz", "json", "safetensors", "csv")
VECTOR_TARGETS = ("safetensors", "csv")
_STATUS_WORDS = {code: word for word, code in STATUS.items()}


def layer_names(dataset: xr.Dataset, model: str) -> dict[str, str]:
    """Store layer label -> ZipfActivation's name: ``embed`` or ``layer_<decoder index>``."""
    indices = dataset["layer_index"].sel(model=model).values
    names: dict[str, str] = {}
    for label, index in zip((str(x) for x in dataset["layer"].values), indices):
        name = "embed" if int(index) < 0 else f"layer_{int(index)}"
        if name in names.values():  # two labels of one block (middle and layer_15): one file each
            name = f"{name}_{label}"
        names[label] = name
    return names


def _folders(dataset: xr.Dataset, folder: str | Path, model: str | None) -> dict[str, Path]:
    labels = [str(label) for label in dataset["model"].values]
    if model is not None and model not in labels:
        raise InputError(f"unknown model {model!r}; this store has {', '.join(map(repr, labels))}")
    root = check_export_folder(folder, MARKER, EXPORT_FORMAT, "results")
    chosen = [model] if model is not None else labels
    return {label: root if len(chosen) == 1 else root / label for label in chosen}


def check_results_folder(folder: str | Path) -> Path:
    """A results folder ``python -m builders.pipeline`` may write: new, empty, or an earlier export."""
    return check_export_folder(folder, MARKER, EXPORT_FORMAT, "results")


def mark_results_folder(root: Path) -> None:
    """Mark ``root`` as a results export, once checked: the store written into it since is the pipeline's own."""
    root.mkdir(parents=True, exist_ok=True)
    _mark(root)


def _mark(root: Path) -> None:
    write_json(root / MARKER, {"format": EXPORT_FORMAT, "written_by": "python -m analysis.export"})


def _write_npz(path: Path, arrays: Iterable[tuple[str, Callable[[], np.ndarray]]]) -> None:
    """np.savez's format, one array in memory at a time; the file appears whole (renamed when done)."""
    partial = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, load in arrays:
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(load()), allow_pickle=False)
    os.replace(partial, path)


def _layer_arrays(dataset: xr.Dataset, model: str, layer: str) -> list[tuple[str, Callable[[], np.ndarray]]]:
    def metric(name: str) -> Callable[[], np.ndarray]:
        return lambda: dataset["value"].sel(model=model, layer=layer, metric=name).values

    arrays = [(str(name), metric(str(name))) for name in dataset["metric"].values]
    if dataset.sizes.get("channel", 0):
        arrays.append(("channel_wise", lambda: dataset["channel_value"].sel(model=model, layer=layer).values))
    return arrays


def export_npz(store: xr.Dataset | str, folder: str | Path, model: str | None = None,
               storage_options: dict[str, Any] | None = None, progress: bool = False) -> list[Path]:
    """One ``<layer>.npz`` per (model, layer) under ``folder``/statistics; returns the files written."""
    dataset = open_store(store, storage_options=storage_options) if isinstance(store, str) else store
    written = []
    folders = _folders(dataset, folder, model)
    _mark(Path(folder))
    jobs = [(label, layer, name) for label in folders for layer, name in layer_names(dataset, label).items()]
    for label, layer, name in tqdm(jobs, desc="export npz", unit="layer", disable=not progress):
        path = folders[label] / "statistics" / f"{name}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_npz(path, _layer_arrays(dataset, label, layer))
        written.append(path)
    return written


def _fit_record(cell: xr.Dataset, prefix: str = "") -> dict[str, Any]:
    def number(name: str) -> float | None:
        return json_number(cell[f"{prefix}{name}"].values) if f"{prefix}{name}" in cell else None

    record: dict[str, Any] = {
        "alpha": number("alpha"), "xmin": number("xmin"), "sigma": number("sigma"),
        "ks_statistic": number("ks_d"), "n_tail": _whole(number("n_tail")), "n_excluded": _whole(number("n_excluded")),
        "slope": number("slope"), "intercept": number("intercept"), "r_squared": number("r2"),
        "status": _STATUS_WORDS.get(_whole(number("status")) or 0, "unknown"),
    }
    if f"{prefix}R" in cell:
        record["comparisons"] = {str(alt): {"R": json_number(cell[f"{prefix}R"].sel(alternative=alt).values),
                                            "p": json_number(cell[f"{prefix}p"].sel(alternative=alt).values)}
                                 for alt in cell["alternative"].values}
    return record


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)


def fit_results(fits: xr.Dataset, dataset: xr.Dataset, model: str) -> dict[str, Any]:
    """``fit_results.json`` of one model: {layer: {metric: record, channel_wise: {channel: record}}}."""
    document: dict[str, Any] = {}
    for layer, name in layer_names(dataset, model).items():
        cells = fits.sel(model=model, layer=layer)
        entry = {str(metric): _fit_record(cells.sel(metric=metric)) for metric in fits["metric"].values}
        if "channel_alpha" in fits:
            channels = cells["channel_index"].values
            entry["channel_wise"] = {str(int(c)): _fit_record(cells.isel(channel=i), "channel_")
                                     for i, c in enumerate(channels)}
        document[name] = entry
    return document


def export_fits_json(store: xr.Dataset | str, folder: str | Path, model: str | None = None,
                     cache: bool | str = "local", compare: bool = True,
                     storage_options: dict[str, Any] | None = None, fits: xr.Dataset | None = None) -> list[Path]:
    """``fits/fit_results.json`` per model under ``folder``, from :func:`analysis.fit` (cached as it caches),
    or from ``fits`` already computed over the same store."""
    dataset = open_store(store, storage_options=storage_options) if isinstance(store, str) else store
    folders = _folders(dataset, folder, model)
    _mark(Path(folder))
    fitted = dataset if model is None else dataset.sel(model=[model])  # the other models are not fitted
    if fits is None:
        fits = fit_dataset(fitted, compare=compare, channels=True, cache=cache).compute()
    return [write_json(root / "fits" / "fit_results.json", fit_results(fits, dataset, label))
            for label, root in folders.items()]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m analysis.export", description=__doc__.split("\n\n")[0],
                           epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_store_arguments(parser)
    parser.add_argument("--to", nargs=2, action="append", required=True, metavar=("FORMAT", "DIR"),
                        help="npz (statistics/<layer>.npz) or json (fits/fit_results.json) into the results "
                             "folder DIR; safetensors or csv: the vectors group's vectors; repeatable")
    parser.add_argument("--model", default=None, help="one model label (default: every model, DIR/<label>/ each; "
                                                      "vectors: the store's only model)")
    parser.add_argument("--pooling", choices=("short", "long"), default="short", help="safetensors, csv: which vectors")
    parser.add_argument("--per_vector", "--per-vector", dest="per_vector", action="store_true",
                        help="safetensors: one file pair per document instead of one for the set")
    parser.add_argument("--centre", "--center", dest="centre", action="store_true",
                        help="safetensors: each vector minus the corpus mean (csv writes both)")
    parser.add_argument("--no_compare", "--no-compare", dest="no_compare", action="store_true",
                        help="json: skip the likelihood-ratio comparisons")
    add_cache_arguments(parser)
    options = parse_arguments(parser, argv)
    unknown = [target for target, _ in options.to if target not in TARGETS]
    if unknown:
        parser.error(f"--to {unknown[0]!r} is not a format; use --to npz, json, safetensors or csv DIR")
    return options


def _export(target: str, folder: str, options: argparse.Namespace, dataset: xr.Dataset | None,
            vectors: xr.Dataset | None) -> list[Path]:
    from dask.diagnostics import ProgressBar

    if target == "safetensors":
        return export_safetensors(vectors, folder, options.pooling, options.model, options.per_vector, options.centre)
    if target == "csv":
        return export_csv(vectors, folder, options.pooling, options.model)
    if target == "npz":
        return export_npz(dataset, folder, options.model, progress=True)
    with ProgressBar():
        return export_fits_json(dataset, folder, options.model, cache=options.cache, compare=not options.no_compare)


def main(argv: list[str] | None = None) -> int:
    options = _parse(argv)
    try:
        targets = {target for target, _ in options.to}
        # statistics and vectors are groups of their own: a store may hold either, so open what is asked for
        dataset = open_from_arguments(options) if targets - set(VECTOR_TARGETS) else None
        vectors = open_vectors(options.store, options.storage_options) if targets & set(VECTOR_TARGETS) else None
        for target, folder in options.to:
            written = _export(target, folder, options, dataset, vectors)
            print(f"wrote {len(written)} {target} file(s) under {folder}")
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
