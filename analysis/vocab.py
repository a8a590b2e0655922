"""``python -m analysis.vocab STORE``: vocabulary cards of super weights and neurons; computed, read, exported.

    from analysis.vocab import open_cards, neuron_cards, weight_cards, export
    open_cards("stores/sw.zarr")        # label -> {"neuron_cards", "weight_cards"} -> Dataset
    weight_cards("stores/sw.zarr")      # every model's super-weight cards, as JSON documents
    export("stores/sw.zarr", "vocab")   # run_vocab_analyses.py's folder layout

The Python functions only read the store: importing this module imports neither torch nor
``builders/``. The command computes the cards a store lacks first: when any option of
``python -m builders.vocab`` is given (``--models``, ``--weights``, ``--tokens``,
``--enable-cascade``...), or when a model recorded in the store has no cards yet, it runs that
builder with them, which loads the model. That is this package's one use of ``builders/`` (a
floor below); the command parses the builder's options (one parser: every flag is checked, and
``--help`` lists it, before anything runs). ``--export DIR`` (alias ``--output-dir``) then writes
the old layout: ``run_config.json``, ``cross_model_summary.json``, ``README.md`` and per model
``metrics/``, ``summaries/``, ``plots/``, ``run_config.json`` (that model's settings under the old option
names) and ``analysis.log`` (what the export read and wrote for it). The top-level ``run_config.json``
marks the folder as an export: written first as a placeholder and last in full, so a later export may
replace the files in it, and a folder without it that holds other files is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from analysis import _files as files
from analysis import _vocab_cards as cards
from analysis._cli import flag
from store import (
    CARD_TABLES,
    ConfigError,
    StoreLocation,
    StoreLocationError,
    complete_tables,
    load_catalog,
    read_table,
    resolve_location,
    superweight_labels,
)
from store._options import check_path_text

Cards = dict[str, dict[str, xr.Dataset]]
EXPORT_FORMAT = "activation-vocab-export"  # run_config.json says it: a folder we may write into again


def _existing(store: str, storage_options: dict[str, Any] | None) -> StoreLocation:
    location = resolve_location(store, storage_options, None)
    location.check_exists()
    return location


def _carded(location: StoreLocation) -> list[str]:
    """The models whose neuron and weight cards are both complete."""
    return [label for label in superweight_labels(location) if set(CARD_TABLES) <= complete_tables(location, label)]


def open_cards(store: str | StoreLocation, storage_options: dict[str, Any] | None = None,
               models: list[str] | None = None) -> Cards:
    """Label -> ``neuron_cards`` / ``weight_cards`` -> Dataset, for every model with complete cards."""
    location = store if isinstance(store, StoreLocation) else _existing(store, storage_options)
    carded = _carded(location)
    unknown = [label for label in models or [] if label not in carded]
    if unknown or not carded:
        raise StoreLocationError(f"no cards of {unknown[0] if unknown else 'any model'!r} in store "
                                 f"{location.display()!r} (carded models: {carded!r}); compute them with "
                                 f"python -m analysis.vocab {location.display()} [--models ...]")
    return {label: {table: read_table(location, label, table) for table in CARD_TABLES}
            for label in (models or carded)}


def _opened(store: str | Cards, storage_options: dict[str, Any] | None) -> Cards:
    return open_cards(store, storage_options) if isinstance(store, str) else store


def neuron_cards(store: str | Cards, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every model's neuron cards, in neurons.jsonl's shape."""
    return [card for label, found in _opened(store, storage_options).items()
            for card in cards.neuron_cards(label, found["neuron_cards"])]


def weight_cards(store: str | Cards, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every model's super-weight cards, in super_weights.jsonl's shape."""
    return [card for label, found in _opened(store, storage_options).items()
            for card in cards.weight_cards(label, found["weight_cards"])]


# Export ---------------------------------------------------------------------------


def check_export_folder(folder: str | Path) -> Path:
    """The export folder, refused unless it is new, empty, or an earlier export (its run_config.json says so)."""
    return files.check_export_folder(folder, "run_config.json", EXPORT_FORMAT, "vocabulary")


def _settings(found: dict[str, xr.Dataset]) -> dict[str, Any]:
    return dict(json.loads(str(found["weight_cards"].attrs.get("settings", "{}"))))


def _model_id(label: str, found: dict[str, xr.Dataset]) -> str:
    return str(_settings(found).get("model", {}).get("model_id", label))


def _old_options(settings: dict[str, Any], models: list[str]) -> dict[str, Any]:
    """``settings`` (one model's) under run_vocab_analyses.py's option names; None where not recorded."""
    section = {name: settings.get(name) or {} for name in ("data", "eval", "cards", "detect", "moe")}
    return {"models": models, "dataset": section["data"].get("name"),
            **{name: section["eval"].get(name) for name in ("tokens", "window_len", "stride", "drop_first_token")},
            "seed": settings.get("seed"),
            **{f"enable_{name}": section["cards"].get(f"enable_{name}") for name in ("cosine", "cascade", "enrichment")},
            "bootstrap": section["cards"].get("bootstrap"),
            "spike_threshold": section["detect"].get("spike_threshold"),
            "max_iterations": section["detect"].get("max_iterations"),
            "router_analysis_samples": section["moe"].get("router_samples"),
            "p_active_floor": section["moe"].get("p_active_floor"),
            "co_spike_threshold": section["moe"].get("co_spike_threshold")}


def run_config(location: StoreLocation, opened: Cards) -> dict[str, Any]:
    """The run's options under run_vocab_analyses.py's names, from the first model's cards (per model below)."""
    settings = _settings(next(iter(opened.values())))
    models = [_model_id(label, found) for label, found in opened.items()]
    return {"format": EXPORT_FORMAT, "format_version": 1, "store": location.display(),
            **_old_options(settings, models), "settings": {label: _settings(found) for label, found in opened.items()}}


def model_run_config(location: StoreLocation, label: str, found: dict[str, xr.Dataset]) -> dict[str, Any]:
    """One model's ``<label>/run_config.json``: its own options under the old names, and its full settings."""
    settings = _settings(found)
    return {"model": label, "store": location.display(), **_old_options(settings, [_model_id(label, found)]),
            "settings": settings}


def _model_summary(neurons: list[dict[str, Any]], weights: list[dict[str, Any]]) -> dict[str, Any]:
    deltas = pd.DataFrame([card["deltas"] for card in weights])
    return {"n_neurons": len(neurons), "n_super_weights": len(weights),
            "neuron_labels": pd.Series([card["label"] for card in neurons]).value_counts().to_dict(),
            "mean_deltas": {key: files.json_number(value) for key, value in deltas.mean().items()} if len(deltas) else {},
            "max_delta_loss": files.json_number(deltas["loss"].max()) if len(deltas) else None,
            "super_weights": [f"L{card['layer']} W[{card['row']},{card['col']}]" for card in weights]}


def _stem(card: dict[str, Any]) -> str:
    expert = "" if card.get("expert") is None else f"-E{card['expert']}"
    return f"{card['tensor']}-L{card['layer']}-R{card['row']}-C{card['col']}{expert}"


def _plots(folder: Path, neurons: list[dict[str, Any]], weights: list[dict[str, Any]]) -> list[Path]:
    from analysis import plots

    written = []
    for card in neurons:
        expert = "" if card.get("expert") is None else f"-E{card['expert']}"
        written += plots.save(plots.neuron_effects(card), folder / "neurons" / f"{card['layer']}-{card['neuron']}{expert}-effects")
    for card in weights:
        written += plots.save(plots.weight_deltas(card), folder / "super_weights" / f"{_stem(card)}-deltas")
        if "cascade" in card:
            written += plots.save(plots.weight_cascade(card), folder / "super_weights" / f"{_stem(card)}-cascade")
    return written


def _export_model(location: StoreLocation, folder: Path, label: str,
                  found: dict[str, xr.Dataset]) -> tuple[list[Path], dict[str, Any]]:
    neurons = cards.neuron_cards(label, found["neuron_cards"])
    weights = cards.weight_cards(label, found["weight_cards"])
    written = [files.write_lines(folder / "metrics" / "neurons" / "neurons.jsonl", neurons),
               files.write_lines(folder / "metrics" / "super_weights" / "super_weights.jsonl", weights),
               files.write_csv(folder / "summaries" / "neurons.csv", cards.neuron_rows(neurons)),
               files.write_csv(folder / "summaries" / "super_weights.csv", cards.weight_rows(weights))]
    written += _plots(folder / "plots", neurons, weights)
    written.append(files.write_json(folder / "run_config.json", model_run_config(location, label, found)))
    log = _log_lines(location, label, found, neurons, weights) + [
        f"wrote {path.relative_to(folder).as_posix()}" for path in written]
    (folder / "analysis.log").write_text("\n".join(log) + "\n", encoding="utf-8")
    return [*written, folder / "analysis.log"], _model_summary(neurons, weights)


def _log_lines(location: StoreLocation, label: str, found: dict[str, xr.Dataset], neurons: list[dict[str, Any]],
               weights: list[dict[str, Any]]) -> list[str]:
    """The first lines of ``<label>/analysis.log``: which model, what was read."""
    neuron_attrs, weight_attrs = found["neuron_cards"].attrs, found["weight_cards"].attrs
    labels = pd.Series([card["label"] for card in neurons], dtype=object).value_counts().to_dict()
    return [f"python -m analysis.vocab --export: model {label!r} of store {location.display()!r}",
            f"model_id {_model_id(label, found)!r}",
            (f"read neuron_cards: {len(neurons)} cards, made {neuron_attrs.get('created')!r} (top_k "
             f"{neuron_attrs.get('top_k')}, cosine {neuron_attrs.get('cosine')}, "
             f"enrichment {neuron_attrs.get('enrichment')})"),
            (f"read weight_cards: {len(weights)} cards, made {weight_attrs.get('created')!r} (weights from "
             f"{weight_attrs.get('weights_from')!r}; {weight_attrs.get('n_tokens')} tokens of "
             f"{weight_attrs.get('text')!r} in {weight_attrs.get('n_windows')} windows; "
             f"bootstrap {weight_attrs.get('bootstrap')})"),
            "neuron labels: " + (", ".join(f"{name} {count}" for name, count in labels.items()) or "none"),
            "super weights: " + (", ".join(_stem(card) for card in weights) or "none")]


def _readme(config: dict[str, Any], summary: dict[str, Any]) -> str:
    lines = ["# Vocabulary analysis", "", f"Exported from `{config['store']}` by `python -m analysis.vocab`.", "",
             "| model | neurons | super weights | mean delta loss | labels |", "|---|---|---|---|---|"]
    for label, model in summary["models"].items():
        loss = model["mean_deltas"].get("loss")
        lines.append(f"| {label} | {model['n_neurons']} | {', '.join(model['super_weights']) or 'none'} | "
                     f"{'' if loss is None else f'{loss:+.4g}'} | {model['neuron_labels']} |")
    lines += ["", ("Per model: `metrics/` (JSONL cards), `summaries/` (CSV), `plots/`, `run_config.json` (its "
                   "settings) and `analysis.log`. Definitions: docs/superweights.md.")]
    return "\n".join(lines) + "\n"


def export(store: str | StoreLocation, folder: str | Path, storage_options: dict[str, Any] | None = None,
           models: list[str] | None = None) -> list[Path]:
    """Write run_vocab_analyses.py's layout to ``folder``; refuses a non-empty folder that is not an earlier export."""
    target = check_export_folder(folder)
    location = store if isinstance(store, StoreLocation) else _existing(store, storage_options)
    opened = open_cards(location, models=models)
    # first a marker, so a folder left half-written by a failure is still ours to write again
    files.write_json(target / "run_config.json", {"format": EXPORT_FORMAT, "format_version": 1, "complete": False})
    written, summary = [], {"models": {}}
    for label, found in opened.items():
        model_files, summary["models"][label] = _export_model(location, target / label, label, found)
        written += model_files
    config = run_config(location, opened)
    written += [files.write_json(target / "cross_model_summary.json", summary)]
    (target / "README.md").write_text(_readme(config, summary), encoding="utf-8")
    return [*written, target / "README.md", files.write_json(target / "run_config.json", config)]  # last: marks it ours


# Command line ---------------------------------------------------------------------

_READING = {"store", "export", "storage_options"}  # every other option given asks for computing


def _parser() -> argparse.ArgumentParser:
    """The builder's options with STORE first, and --export: one parser, so every flag is checked first."""
    from builders._cli import build_parser
    from builders._vocab_configs import VocabConfig

    parser = build_parser(VocabConfig, "python -m analysis.vocab", __doc__.split("\n\n")[0], store_positional=True)
    parser.add_argument(*flag("export"), *flag("output", "dir"), dest="export", type=Path, metavar="DIR",
                        help="write run_vocab_analyses.py's layout (JSONL cards, CSV, plots) to DIR")
    return parser


def _config(given: dict[str, Any]) -> Any:
    """The builder's config of the command line and any --config file: every value checked before anything."""
    from builders._cli import config_from
    from builders._vocab_configs import VocabConfig

    return config_from(VocabConfig, {key: value for key, value in given.items() if key != "export"})


def _location(config: Any) -> tuple[StoreLocation, bool]:
    """The store, which need not exist yet (the builder creates it), and whether it is a catalog name
    (resolved, read-only: cards are read from it, never computed)."""
    check_path_text(config.store, "store")
    if config.store in load_catalog():
        return resolve_location(config.store, config.storage_options, None), True
    location = StoreLocation(config.store, config.storage_options)
    if not location.is_remote and not location.local_path.parent.is_dir():  # a typo, more likely than a wish
        raise ConfigError(f"no store at {location.display()!r}, and no folder {str(location.local_path.parent)!r} "
                          "to make one in; pass an existing store, or create the folder first")
    return location, False


def _needs_cards(location: StoreLocation, given: dict[str, Any]) -> bool:
    """Compute when asked to (any option of the builder), or when a recorded model has no cards yet."""
    if set(given) - _READING or not location.exists():
        return True
    return bool(set(superweight_labels(location)) - set(_carded(location)))


def _compute(config: Any) -> int:
    from builders import vocab as builder  # loads the model: only when cards must be made

    return int(builder.run(config))


def main(argv: list[str] | None = None) -> int:
    from builders._cli import one_line_errors

    given = vars(_parser().parse_args(argv))  # bad flags: one error line, exit 2, before anything
    return one_line_errors(lambda: _run(given))


def _run(given: dict[str, Any]) -> int:
    if "export" in given:
        check_export_folder(given["export"])  # a bad folder must not come after the cards
    config = _config(given)
    location, catalogued = _location(config)
    code = _compute(config) if not catalogued and _needs_cards(location, given) else 0
    if code == 0 or _carded(location):
        _report(location, given.get("export"))
    return code


def _report(location: StoreLocation, folder: Path | None) -> None:
    if folder is not None:
        print(f"wrote {len(export(location, folder))} files to {folder}")
        return
    frame = cards.weight_rows(weight_cards(open_cards(location)))
    columns = [name for name in ("model", "layer", "row", "col", "expert", "delta_loss", "random_coord_delta_loss",
                                 "neuron_zero_delta_loss", "delta_stopword_mass") if name in frame]
    print(frame[columns].to_string(index=False) if len(frame) else "no super weights carded")


if __name__ == "__main__":
    sys.exit(main())
