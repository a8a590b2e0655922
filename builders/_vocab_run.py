"""One model's vocabulary analyses, step by step: which weights, which neurons, their cards.

The weights come from ``--weights`` (checked against the loaded model's shapes), else from the
store's ``weights`` table, else from the super-weight builder's detection run here. Each step
returns records; ``builders/vocab.py`` writes them as the ``neuron_cards`` and ``weight_cards``
tables (``builders/_vocab_tables.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from builders._detect import SuperWeight
from builders._down_proj import NO_EXPERT, DownProjection
from builders._superweight_run import ModelRun
from builders._vocab_classes import class_masks
from builders._vocab_configs import VocabConfig
from builders._vocab_interventions import (
    Bootstrap,
    Evaluator,
    WindowSums,
    bootstrap_delta,
    bootstrap_resamples,
    probability_changes,
    random_coordinate,
)
from builders._vocab_neurons import Neuron, NeuronCard, Vocabulary, neuron_card
from store.errors import ConfigError

Log = Callable[[str], None]
GIVEN = -1  # weights_record of a weight given with --weights or detected here (no weights table record)


@dataclass(frozen=True)
class WeightCard:
    weight: SuperWeight
    record: int  # its row in the store's weights table, GIVEN if none
    p_active: float  # its expert's routing probability; NaN for dense layers
    random_coord: tuple[int, int]
    delta: np.ndarray  # (N_METRICS,) zeroed minus baseline
    random_coord_delta: np.ndarray
    neuron_zero_delta: np.ndarray
    window_delta: np.ndarray  # (n_windows, N_METRICS): per window's mean
    bootstrap: Bootstrap | None
    gains: list[tuple[int, float]]
    losses: list[tuple[int, float]]
    cascade: np.ndarray  # (n_cascade, 2): entropy and margin deltas


def _projection(run: ModelRun, layer: int, expert: int, flag: str, text: str) -> DownProjection:
    """The down projection of ``layer`` that holds ``expert`` (a dense or shared one for none)."""
    if layer >= len(run.layers):
        raise ConfigError(f"{flag} {text!r}: the model has layers 0..{len(run.layers) - 1}; pass one of those")
    for projection in run.layers[layer]:
        if expert == NO_EXPERT and projection.kind != "experts" and projection.expert == NO_EXPERT:
            return projection
        if expert != NO_EXPERT and (projection.expert == expert or
                                    (projection.kind == "experts" and expert < projection.n_experts)):
            return projection
    kind = "dense down projection" if expert == NO_EXPERT else f"expert {expert}"
    raise ConfigError(f"{flag} {text!r}: layer {layer} has no {kind}; name the expert as the last number, "
                      "or another layer")


def _check_inside(projection: DownProjection, row: int, col: int, flag: str, text: str) -> None:
    n_rows, n_cols = projection.shape
    if row >= n_rows or col >= n_cols:
        raise ConfigError(f"{flag} {text!r}: W of layer {projection.layer} has rows 0..{n_rows - 1} and columns "
                          f"0..{n_cols - 1}; pass a coordinate inside it")


def given_weights(run: ModelRun, coordinates: list[list[int]]) -> list[SuperWeight]:
    """``--weights`` as super weights of the loaded model (their value read from it)."""
    weights = []
    for numbers in coordinates:
        layer, row, col, *rest = numbers
        expert, text = rest[0] if rest else NO_EXPERT, ",".join(map(str, numbers))
        projection = _projection(run, layer, expert, "--weights", text)
        _check_inside(projection, row, col, "--weights", text)
        expert = expert if projection.kind == "experts" else projection.expert
        value = float(projection.parameter[projection.element(row, col, expert)].detach())
        weights.append(SuperWeight(layer, row, col, expert, projection.tensor, projection.layout, value,
                                   math.nan, math.nan, GIVEN, projection))
    return weights


def card_neurons(run: ModelRun, weights: list[SuperWeight], asked: list[list[int]]) -> list[Neuron]:
    """Each super weight's neuron (its column), then the asked ones; each once."""
    neurons = {(weight.layer, weight.col, weight.expert, weight.projection.tensor):
               Neuron(weight.layer, weight.col, weight.expert, weight.projection, "superweight") for weight in weights}
    for numbers in asked:
        layer, neuron, *rest = numbers
        expert, text = rest[0] if rest else NO_EXPERT, ",".join(map(str, numbers))
        projection = _projection(run, layer, expert, "--cards.neurons", text)
        _check_inside(projection, 0, neuron, "--cards.neurons", text)
        expert = expert if projection.kind == "experts" else projection.expert
        neurons.setdefault((layer, neuron, expert, projection.tensor), Neuron(layer, neuron, expert, projection, "asked"))
    return list(neurons.values())


def neuron_cards(config: VocabConfig, neurons: list[Neuron], vocab: Vocabulary) -> list[NeuronCard]:
    masks = class_masks(vocab.decoded) if config.cards.enable_enrichment else None
    return [neuron_card(neuron, vocab, config.cards.top_k, config.cards.enable_cosine, masks,
                        config.cards.enrichment_top) for neuron in neurons]


def p_active(table: np.ndarray | None, layer: int, expert: int, projection: DownProjection) -> float:
    """How often ``expert`` of ``layer`` is routed (a router's (layer, expert) p_active); NaN for dense weights."""
    if table is None or expert == NO_EXPERT or projection.kind != "experts":
        return math.nan
    return float(table[layer, expert])


def _delta(changed: WindowSums, baseline: WindowSums) -> np.ndarray:
    return (changed.sums - baseline.sums).sum(0) / baseline.tokens.sum()


def weight_card(config: VocabConfig, evaluator: Evaluator, baseline: WindowSums, weight: SuperWeight, record: int,
                routing: float, resamples: np.ndarray | None) -> WeightCard:
    """Zero the weight, a random coordinate, the whole neuron: each against the baseline."""
    projection, name = weight.projection, f"L{weight.layer} W[{weight.row},{weight.col}]"
    zeroed = evaluator.run_zeroed([weight.cell], f"zero {name}")
    coordinate = random_coordinate(projection, weight.row, weight.col, weight.expert, config.seed)
    random_run = evaluator.run_zeroed([(projection, projection.element(*coordinate, weight.expert))],
                                      f"control: random W[{coordinate[0]},{coordinate[1]}]", cascade=False)
    neuron_run = evaluator.run_zeroed([(projection, projection.column(weight.col, weight.expert))],
                                      f"control: neuron {weight.col}", cascade=False)
    delta_sums = zeroed.sums - baseline.sums
    interval = None if resamples is None else bootstrap_delta(delta_sums, baseline.tokens, resamples,
                                                               config.cards.confidence)
    gains, losses = probability_changes(baseline, zeroed, config.cards.top_k)
    cascade = (zeroed.cascade - baseline.cascade).sum(0) / baseline.tokens.sum()
    return WeightCard(weight, record, routing, coordinate, _delta(zeroed, baseline), _delta(random_run, baseline),
                      _delta(neuron_run, baseline), delta_sums / baseline.tokens[:, None], interval, gains, losses,
                      cascade)


def weight_cards(config: VocabConfig, evaluator: Evaluator, weights: list[SuperWeight], records: list[int],
                 routing: list[float]) -> tuple[WindowSums, list[WeightCard]]:
    """The baseline over the windows, then every weight's card."""
    baseline = evaluator.run("baseline")
    resamples = (bootstrap_resamples(len(evaluator.windows), config.cards.bootstrap, config.seed)
                 if config.cards.bootstrap else None)
    cards = [weight_card(config, evaluator, baseline, weight, record, p, resamples)
             for weight, record, p in zip(weights, records, routing)]
    return baseline, cards
