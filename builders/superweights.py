"""``python -m builders.superweights``: find super weights, measure what removing them costs, record both in the store.

For each model: (MoE) router analysis; iterative detection on the MLP down projections
(measure the spikes, zero the candidate, measure again); perplexity and task accuracy with
each super weight zeroed, all of them, and with the super activation restored. The records
go to the store's ``superweights`` group, one model at a time: a model that fails is
reported and the others still run; a rerun resumes, or does nothing. docs/superweights.md.
"""

from __future__ import annotations

import gc
import json
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from builders import _models as models
from builders._ablations import BASELINE, Evaluation, perplexity_of
from builders._accuracy import TaskSpec, check_tasks_loadable, evaluate_tasks, resolve_tasks
from builders._cli import run_cli
from builders._config import ModelConfig
from builders._detect import SuperWeight
from builders._down_proj import down_projections
from builders._superweight_configs import SuperweightsConfig
from builders._superweight_run import (
    Log,
    ModelRun,
    causal_scores,
    evaluation_attrs,
    run_detection,
    run_evaluations,
    run_router,
    stored_weights,
)
from builders._superweight_tables import (
    detection_lines,
    detection_table,
    evaluation_rows,
    evaluations_table,
    model_provenance,
    model_summary,
    router_attrs,
    router_table,
    weights_table,
)
from builders._superweight_text import calibration_rows, perplexity_tokens, router_texts
from builders.errors import DataError
from store import (
    SUPERWEIGHTS_GROUP,
    Lease,
    StoreLocation,
    StoreLocationError,
    StoreMismatchError,
    check_ours_or_empty,
    complete_tables,
    consolidate,
    model_attrs,
    prepare_superweights,
    read_table,
    remove_superweights_model,
    reporting_write_faults,
    slot_key,
    structure_lease,
    superweight_labels,
    write_summary,
    write_table,
)
from store.errors import first_line

DESCRIPTION = __doc__.split("\n\n")[0] if __doc__ else ""
_DETECTED = {"detection", "weights"}  # committed together: detection is reused from them on a rerun
_REQUIRED = {*_DETECTED, "evaluations"}


@dataclass(frozen=True)
class _Model:
    """One model, checked (config, tokenizer, texts) before any weights load."""

    config: ModelConfig
    source: models.ModelSource
    model_config: Any
    n_layers: int
    tokenizer: Any
    calibration: list[np.ndarray]
    perplexity_ids: np.ndarray | None
    router_texts: list[np.ndarray]

    @property
    def label(self) -> str:
        return self.source.label


def _check(config: SuperweightsConfig) -> tuple[StoreLocation, list[TaskSpec], list[_Model]]:
    """Every check that can fail, cheapest first; nothing is written, no weights load."""
    location = StoreLocation(config.store, config.storage_options)
    location.check_writable()
    check_ours_or_empty(location)
    tasks = [] if config.accuracy.skip else resolve_tasks(config.accuracy.tasks)
    checked = [_check_model(config, location, model_config) for model_config in config.model.model_configs()]
    labels = [model.label for model in checked]
    if len(set(labels)) != len(labels):
        raise DataError(f"two models get the same label {labels!r}; give each one with --model.label")
    check_tasks_loadable(tasks)  # last: it may try the network
    return location, tasks, checked


def _check_model(config: SuperweightsConfig, location: StoreLocation, model_config: ModelConfig) -> _Model:
    source = models.resolve_source(model_config)
    hf_config = models.load_model_config(source, model_config)
    if not config.perplexity.skip:
        models.check_sequence_length(hf_config, config.perplexity.window_len, "perplexity.window_len")
    models.check_sequence_length(hf_config, config.detect.seq_len, "detect.seq_len")
    if not config.overwrite:
        _check_settings(location, source.label, model_settings(config, source, model_config))
    tokenizer = models.load_tokenizer(source, model_config)
    ppl_ids = None if config.perplexity.skip else perplexity_tokens(config, tokenizer)
    return _Model(model_config, source, hf_config, models.num_layers(hf_config), tokenizer,
                  calibration_rows(config, tokenizer), ppl_ids, router_texts(config, tokenizer))


def _check_settings(location: StoreLocation, label: str, settings: dict[str, Any]) -> None:
    stored = _stored_attrs(location, label).get("settings")
    if stored is not None and json.loads(stored) != json.loads(json.dumps(settings)):
        raise StoreMismatchError(
            f"model {label!r} in store {location.display()!r} has super-weight records made with other settings "
            f"({stored[:200]}); rerun with those, choose another --store, or pass --overwrite to redo this model")


def _stored_attrs(location: StoreLocation, label: str) -> dict[str, Any]:
    """The model's attributes in the store; none when the store has no records of it yet."""
    return model_attrs(location, label) if label in superweight_labels(location) else {}


def run(config: SuperweightsConfig) -> int:
    location, tasks, checked = _check(config)
    models.quiet_loading(config.progress)
    failures = []
    for model in checked:
        try:
            written = _analyse_model(config, location, tasks, model)
        except StoreLocationError:
            raise  # the store, not the model: the next model would fail the same way
        except Exception as error:  # noqa: BLE001 - out of memory, an unknown layout...: report, go on
            failures.append(f"model {model.label!r} failed: {first_line(error)}")
            print(f"error: {failures[-1]}; the other models go on", file=sys.stderr)
            written = model.label in superweight_labels(location)  # it may have committed some tables
        finally:
            _release_memory()
        if written:  # after each model, so that a later failure or kill keeps a valid store
            _finish(location)
    if not config.quiet:
        print(f"Store: {location.display()} (group 'superweights'). Read it: python -m analysis.superweights {config.store}")
    return 1 if failures else 0


def _finish(location: StoreLocation) -> None:
    """The cross-model summary rewritten and the metadata consolidated."""
    with reporting_write_faults(location), structure_lease(location, "write the super-weight summary"):
        write_summary(location)
        consolidate(location)


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _analyse_model(config: SuperweightsConfig, location: StoreLocation, tasks: list[TaskSpec], model: _Model) -> bool:
    """Analyse one model and write its records; False when they were complete already."""
    if not config.overwrite and _complete(location, model.label):
        print(f"Nothing to do: model {model.label!r} is complete in {location.display()}.")
        return False
    loaded = models.load_model(model.source, model.config)
    model_run = ModelRun(loaded, model.tokenizer, down_projections(loaded, model.n_layers), model.calibration,
                         model.perplexity_ids, model.router_texts)
    lease = Lease(location, slot_key(SUPERWEIGHTS_GROUP, model.label), f"find super weights of {model.label!r}")
    with reporting_write_faults(location), lease.acquire(interrupt=True):
        _records(config, location, tasks, model, model_run)
    return True


def _complete(location: StoreLocation, label: str) -> bool:
    """Every table of the model committed (the router too for MoE models)."""
    done = complete_tables(location, label)
    return _REQUIRED <= done and ("router" in done or not _stored_attrs(location, label).get("is_moe"))


def _records(config: SuperweightsConfig, location: StoreLocation, tasks: list[TaskSpec], model: _Model,
             run: ModelRun) -> None:
    label = model.label
    log: Log = print if config.verbose else (lambda line: None)
    if config.overwrite:
        remove_superweights_model(location, label)
    prepare_superweights(location, label, _model_attrs(config, model, run))
    done = complete_tables(location, label)
    router = run_router(run, config)
    if _DETECTED <= done:
        weights = stored_weights(run, read_table(location, label, "weights"))
    else:
        detection = run_detection(run, config, router)
        weights = detection.weights
        write_table(location, label, "detection", detection_table(
            detection, config.detect.spike_threshold, config.detect.max_iterations, sum(map(len, run.calibration))))
        write_table(location, label, "weights", weights_table(weights))
        for line in detection_lines(detection):
            log(line)
    evaluations = _evaluations(config, location, tasks, model, run, weights, done, log)
    if router is not None:
        if config.moe.causal_scoring:
            causal_scores(run, config, router, perplexity_of(evaluations, BASELINE))
        write_table(location, label, "router", router_table(router, router_attrs(config)))
    print(model_summary(label, weights, evaluations))


def _evaluations(config: SuperweightsConfig, location: StoreLocation, tasks: list[TaskSpec], model: _Model,
                 run: ModelRun, weights: list[SuperWeight], done: set[str], log: Log) -> list[Evaluation]:
    if "evaluations" in done:
        table = read_table(location, model.label, "evaluations")
        return evaluation_rows(table)
    accuracy = None
    if tasks:
        def accuracy() -> list[tuple[str, str, float, int]]:
            results = evaluate_tasks(run.model, run.tokenizer, tasks, config.accuracy.samples, config.seed,
                                     config.accuracy.batch_size, config.accuracy.max_new_tokens, config.progress)
            return [(result.task, result.metric, result.value, result.n) for result in results]
    rows = run_evaluations(run, config, weights, accuracy, log)
    write_table(location, model.label, "evaluations", evaluations_table(rows, evaluation_attrs(config)))
    return rows


def _model_attrs(config: SuperweightsConfig, model: _Model, model_run: ModelRun) -> dict[str, Any]:
    settings = json.dumps(model_settings(config, model.source, model.config), sort_keys=True)
    return {**model_provenance(model.source, model.model_config, model_run), "settings": settings}


def model_settings(config: SuperweightsConfig, source: models.ModelSource, model_config: ModelConfig) -> dict[str, Any]:
    """What one model's records depend on: the run's settings and the weights (which files, which dtype)."""
    dtype = models.pick_dtype(model_config, models.pick_device(model_config))
    identity = {"model_id": source.model_id, "revision": source.revision, "file_sha256": source.file_sha256,
                "dtype": str(dtype).removeprefix("torch.")}
    return {**config.settings(), "model": identity}


def main(argv: list[str] | None = None) -> int:
    return run_cli(SuperweightsConfig, argv, "python -m builders.superweights", DESCRIPTION, run)


if __name__ == "__main__":
    sys.exit(main())
