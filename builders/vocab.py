"""``python -m builders.vocab`` (also ``python -m analysis.vocab``): vocabulary cards of super weights and neurons.

For each model: which super weights (``--weights``, else the store's records, else detection
runs first), then neuron cards (each weight's neuron and ``--cards.neurons``: what its output
direction does to the vocabulary) and super-weight cards (loss, entropy, top-k margin and
stopword mass on held-out windows with the weight zeroed, against a random coordinate and the
whole neuron zeroed; token-probability changes; optional logit-lens cascade and bootstrap
intervals). The cards go to the store's ``superweights`` group beside the detection records;
``python -m analysis.vocab STORE --export DIR`` writes them in run_vocab_analyses.py's layout.
docs/superweights.md.
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
from builders._cli import run_cli
from builders._config import ModelConfig
from builders._detect import SuperWeight
from builders._down_proj import down_projections
from builders._provenance import now
from builders._router import RouterAnalysis
from builders._superweight_run import ModelRun, run_detection, run_router, stored_weights
from builders._superweight_tables import model_provenance
from builders._superweight_text import calibration_rows, leading_tokens, router_texts
from builders._vocab_classes import stopword_mask
from builders._vocab_configs import AUTO, VocabConfig
from builders._vocab_interventions import Evaluator, default_cascade_layers, evaluation_windows
from builders._vocab_neurons import Neuron, vocabulary
from builders._vocab_run import GIVEN, card_neurons, given_weights, neuron_cards, p_active, weight_cards
from builders._vocab_tables import neuron_table, weight_table
from builders.errors import DataError
from store import (
    CARD_TABLES,
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
    remove_card_tables,
    reporting_write_faults,
    slot_key,
    structure_lease,
    superweight_labels,
    write_table,
)
from store.errors import ConfigError, first_line

DESCRIPTION = __doc__.split("\n\n")[0] if __doc__ else ""


@dataclass(frozen=True)
class _Model:
    """One model, checked (config, tokenizer, text, windows) before any weights load."""

    config: ModelConfig
    source: models.ModelSource
    model_config: Any
    tokenizer: Any
    token_ids: np.ndarray
    settings: dict[str, Any]

    @property
    def label(self) -> str:
        return self.source.label


def _check(config: VocabConfig) -> tuple[StoreLocation, list[_Model]]:
    """Every check that can fail, cheapest first; nothing is written, no weights load."""
    location = StoreLocation(config.store, config.storage_options)
    location.check_writable()
    check_ours_or_empty(location)
    checked = [_check_model(config, location, model_config) for model_config in _model_configs(config, location)]
    labels = [model.label for model in checked]
    if len(set(labels)) != len(labels):
        raise DataError(f"two models get the same label {labels!r}; give each one with --model.label")
    return location, checked


def _model_configs(config: VocabConfig, location: StoreLocation) -> list[ModelConfig]:
    """--model.name's models, else every model recorded in the store (from its recorded model_id)."""
    if config.model.name:
        return config.model.model_configs()
    labels = superweight_labels(location)
    if config.weights and len(labels) > 1:
        raise ConfigError(f"--weights names weights of one model, but store {location.display()!r} records "
                          f"{len(labels)} ({labels!r}); name the model with --models")
    if not labels:
        raise ConfigError(f"store {location.display()!r} records no super weights; name models with --models "
                          "(and --weights, or let detection run), or build the store with python -m builders.superweights")
    return [ModelConfig(name=str(model_attrs(location, label)["model_id"]), label=label, dtype=config.model.dtype,
                        device=config.model.device, trust_remote_code=config.model.trust_remote_code)
            for label in labels]


def _check_model(config: VocabConfig, location: StoreLocation, model_config: ModelConfig) -> _Model:
    source = models.resolve_source(model_config)
    hf_config = models.load_model_config(source, model_config)
    models.check_sequence_length(hf_config, config.eval.window_len, "eval.window_len")
    detection = not config.weights and "weights" not in complete_tables(location, source.label)
    settings = model_settings(config, source, model_config, detection)
    if source.label in superweight_labels(location):
        _check_same_weights(location, source)
        if not config.overwrite:
            _check_settings(location, source.label, settings)
    tokenizer = models.load_tokenizer(source, model_config)
    token_ids = _evaluation_tokens(config, tokenizer)
    _check_windows(config, len(token_ids))
    return _Model(model_config, source, hf_config, tokenizer, token_ids, settings)


def _check_same_weights(location: StoreLocation, source: models.ModelSource) -> None:
    """Cards of a recorded model must come from the weights its records were made with."""
    recorded = model_attrs(location, source.label)
    for name in ("model_id", "file_sha256"):
        if recorded.get(name) and recorded.get(name) != getattr(source, name):
            raise StoreMismatchError(
                f"model {source.label!r} in store {location.display()!r} was recorded from {name} "
                f"{recorded[name]!r}, not {getattr(source, name)!r}; give this model another --model.label")


def _stored_card_settings(location: StoreLocation, label: str) -> list[str]:
    return [str(read_table(location, label, table).attrs.get("settings", ""))
            for table in sorted(set(CARD_TABLES) & complete_tables(location, label))]


def _check_settings(location: StoreLocation, label: str, settings: dict[str, Any]) -> None:
    wanted = json.loads(json.dumps(settings))
    for stored in _stored_card_settings(location, label):
        if json.loads(stored or "{}") != wanted:
            raise StoreMismatchError(
                f"model {label!r} in store {location.display()!r} has cards made with other settings "
                f"({stored[:200]}); rerun with those, choose another --store, or pass --overwrite to redo its cards")


def _evaluation_tokens(config: VocabConfig, tokenizer: Any) -> np.ndarray:
    """The first eval.tokens tokens of --data; fewer is an error that says how many there are."""
    token_ids = leading_tokens(config.data, tokenizer, config.eval.tokens)
    if len(token_ids) < config.eval.tokens:
        fits = max(len(token_ids), 2)
        raise ConfigError(
            f"eval.tokens ({config.eval.tokens}) is more than the text holds ({len(token_ids)} tokens of "
            f"{config.data.name!r}); pass --eval.tokens {len(token_ids)} or less"
            + (f" and --eval.window_len {fits} --eval.stride {max(fits // 2, 1)} or less"
               if fits < config.eval.window_len else "") + ", or point --data.name at more text")
    return token_ids


def _check_windows(config: VocabConfig, n_tokens: int) -> None:
    windows = evaluation_windows(n_tokens, config.eval.window_len, config.eval.stride, config.eval.drop_first_token)
    if config.cards.bootstrap and len(windows) < 2:  # one window: the tokens fit in it, whatever the stride
        window_len = max(n_tokens // 2, 2 + config.eval.drop_first_token)
        raise ConfigError(
            f"cards.bootstrap resamples windows, but {n_tokens} tokens make {len(windows)} window of "
            f"{config.eval.window_len}; pass --eval.window_len {window_len} --eval.stride {max(window_len // 2, 1)}, "
            f"more --eval.tokens, or --cards.bootstrap 0")


def model_settings(config: VocabConfig, source: models.ModelSource, model_config: ModelConfig,
                   detection: bool) -> dict[str, Any]:
    """What one model's cards depend on: the run's settings (the detection's only when it runs) and the
    weights (which files, which dtype)."""
    dtype = models.pick_dtype(model_config, models.pick_device(model_config))
    identity = {"model_id": source.model_id, "revision": source.revision, "file_sha256": source.file_sha256,
                "dtype": str(dtype).removeprefix("torch.")}
    settings = config.settings()
    if not detection:
        settings.pop("detect")
    return {**settings, "model": identity}


def run(config: VocabConfig) -> int:
    location, checked = _check(config)
    models.quiet_loading(config.progress)
    failures = []
    for model in checked:
        try:
            written = _analyse_model(config, location, model)
        except (StoreLocationError, ConfigError):
            raise  # the store, or a --weights coordinate outside the model: nothing else would go better
        except Exception as error:  # noqa: BLE001 - out of memory, an unknown layout...: report, go on
            failures.append(f"model {model.label!r} failed: {first_line(error)}")
            print(f"error: {failures[-1]}; the other models go on", file=sys.stderr)
            written = model.label in superweight_labels(location)
        finally:
            _release_memory()
        if written:  # after each model, so that a later failure or kill keeps a valid store
            with reporting_write_faults(location), structure_lease(location, "consolidate after the cards"):
                consolidate(location)
    if not config.quiet:
        print(f"Store: {location.display()} (group 'superweights'). Read or export the cards: "
              f"python -m analysis.vocab {config.store} [--export DIR]")
    return 1 if failures else 0


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _analyse_model(config: VocabConfig, location: StoreLocation, model: _Model) -> bool:
    """Card one model; False when its cards were complete already."""
    done = complete_tables(location, model.label)  # read once: nothing else writes this model (its lease)
    if not config.overwrite and set(CARD_TABLES) <= done:
        print(f"Nothing to do: the cards of model {model.label!r} are complete in {location.display()}.")
        return False
    loaded = models.load_model(model.source, model.config)
    run = ModelRun(loaded, model.tokenizer, down_projections(loaded, models.num_layers(model.model_config)),
                   calibration_rows(config, model.tokenizer), model.token_ids, router_texts(config, model.tokenizer))
    plan = _plan(config, location, model, run, done)  # every input checked against the model before any write
    lease = Lease(location, slot_key(SUPERWEIGHTS_GROUP, model.label), f"card super weights of {model.label!r}")
    with reporting_write_faults(location), lease.acquire(interrupt=True):
        prepare_superweights(location, model.label, model_provenance(model.source, model.model_config, run),
                             replace=False)
        if config.overwrite:  # both go first: a crash must not leave new neuron cards beside old weight cards
            remove_card_tables(location, model.label)
            done = done - set(CARD_TABLES)
        _cards(config, location, model, run, plan, done)
    return True


@dataclass(frozen=True)
class _Plan:
    """What one model's cards are made of, settled (and checked) before the store is touched."""

    weights: list[SuperWeight]
    records: list[int]  # each weight's weights-table record (GIVEN for none)
    weights_from: str  # "given", "store" or "detected"
    neurons: list[Neuron]
    cascade: list[int]
    p_active: np.ndarray | None  # (layer, expert) routing probabilities of an MoE model


def _plan(config: VocabConfig, location: StoreLocation, model: _Model, run: ModelRun, done: set[str]) -> _Plan:
    router, routing = _router(location, model, run, config, done)
    weights, records, source = _weights(config, location, model, run, router, done)
    return _Plan(weights, records, source, card_neurons(run, weights, config.cards.neurons),
                 _cascade_layers(config, len(run.layers)), routing)


def _weights(config: VocabConfig, location: StoreLocation, model: _Model, run: ModelRun,
             router: RouterAnalysis | None, done: set[str]) -> tuple[list[SuperWeight], list[int], str]:
    """The weights to card, their weights-table records, and where they came from."""
    if config.weights:
        return given_weights(run, config.weights), [GIVEN] * len(config.weights), "given"
    if "weights" in done:
        weights = stored_weights(run, read_table(location, model.label, "weights"))
        return weights, list(range(len(weights))), "store"
    detection = run_detection(run, config, router)  # type: ignore[arg-type]  # VocabConfig has its sections
    return detection.weights, [GIVEN] * len(detection.weights), "detected"


def _router(location: StoreLocation, model: _Model, run: ModelRun, config: VocabConfig,
            done: set[str]) -> tuple[RouterAnalysis | None, np.ndarray | None]:
    """(the router analysis, when one runs: it gates detection; the experts' p_active) of an MoE model, whose
    stored router table spares the analysis; (None, None) for dense models."""
    if not run.is_moe:
        return None, None
    if "router" in done:
        return None, np.asarray(read_table(location, model.label, "router")["p_active"].values)
    router = run_router(run, config)  # type: ignore[arg-type]  # VocabConfig has its sections
    return router, router.p_active


def _cards(config: VocabConfig, location: StoreLocation, model: _Model, run: ModelRun, plan: _Plan,
           done: set[str]) -> None:
    vocab = vocabulary(run.model, run.tokenizer)
    settings = json.dumps(model.settings, sort_keys=True)
    if "neuron_cards" not in done:
        _write_neuron_cards(config, location, model.label, plan, vocab, settings)
    if "weight_cards" not in done:  # present on a rerun that lacked only the neuron cards
        _write_weight_cards(config, location, model, run, plan, vocab, settings)


def _write_neuron_cards(config: VocabConfig, location: StoreLocation, label: str, plan: _Plan, vocab: Any,
                        settings: str) -> None:
    cards = neuron_cards(config, plan.neurons, vocab)
    routing = [p_active(plan.p_active, neuron.layer, neuron.expert, neuron.projection) for neuron in plan.neurons]
    write_table(location, label, "neuron_cards", neuron_table(cards, vocab, routing, _neuron_attrs(config, settings)))
    if config.verbose:
        for card in cards:
            print(f"  neuron L{card.neuron.layer} #{card.neuron.neuron}: {card.label}, kurt {card.moments.kurt:.3g}")


def _write_weight_cards(config: VocabConfig, location: StoreLocation, model: _Model, run: ModelRun, plan: _Plan,
                        vocab: Any, settings: str) -> None:
    windows = evaluation_windows(len(model.token_ids), config.eval.window_len, config.eval.stride,
                                 config.eval.drop_first_token)
    evaluator = Evaluator(run.model, model.token_ids, windows, config.eval.batch_size, stopword_mask(vocab.decoded),
                          config.cards.margin_k, plan.cascade, len(run.layers), config.progress)
    routing = [p_active(plan.p_active, weight.layer, weight.expert, weight.projection) for weight in plan.weights]
    baseline, cards = weight_cards(config, evaluator, plan.weights, plan.records, routing)
    attrs = _weight_attrs(config, settings, evaluator, plan.weights_from)
    write_table(location, model.label, "weight_cards", weight_table(cards, baseline, vocab, plan.cascade, attrs))
    print(_summary_line(model.label, cards))


def _cascade_layers(config: VocabConfig, n_layers: int) -> list[int]:
    if not config.cards.enable_cascade:
        return []
    asked = config.cards.cascade_layers
    layers = default_cascade_layers(n_layers) if asked == [AUTO] else [int(layer) for layer in asked]
    beyond = [layer for layer in layers if layer >= n_layers]
    if beyond:
        raise ConfigError(f"cards.cascade_layers {beyond!r} are past the model's last layer {n_layers - 1}; "
                          f"pass layers 0..{n_layers - 1}")
    return sorted(set(layers))


def _neuron_attrs(config: VocabConfig, settings: str) -> dict[str, Any]:
    return {"settings": settings, "top_k": config.cards.top_k, "cosine": config.cards.enable_cosine,
            "enrichment": config.cards.enable_enrichment, "enrichment_top": config.cards.enrichment_top,
            "created": now()}


def _weight_attrs(config: VocabConfig, settings: str, evaluator: Evaluator, weights_from: str) -> dict[str, Any]:
    return {"settings": settings, "text": config.data.name, "n_tokens": int(sum(w.shape[1] for w in evaluator.windows)),
            "n_windows": len(evaluator.windows), "window_len": config.eval.window_len, "stride": config.eval.stride,
            "drop_first_token": config.eval.drop_first_token, "margin_k": config.cards.margin_k,
            "bootstrap": config.cards.bootstrap, "confidence": config.cards.confidence, "seed": config.seed,
            "weights_from": weights_from, "created": now()}


def _summary_line(label: str, cards: list[Any]) -> str:
    if not cards:
        return f"{label}: no super weights to card"
    parts = [f"L{card.weight.layer} W[{card.weight.row},{card.weight.col}] dloss {card.delta[0]:+.4g} "
             f"(random {card.random_coord_delta[0]:+.3g}, neuron {card.neuron_zero_delta[0]:+.3g})" for card in cards]
    return f"{label}: " + "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    return run_cli(VocabConfig, argv, "python -m builders.vocab", DESCRIPTION, run)


if __name__ == "__main__":
    sys.exit(main())
