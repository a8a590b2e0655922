"""The cards of one model as the ``neuron_cards`` and ``weight_cards`` tables (docs/store-format.md).

Nested card fields are flattened into columns along ``card`` and a second dim: ``rank`` for the
token lists, ``token_class`` for enrichment, ``metric`` for the figures, ``cascade_layer`` and
``window``; ``analysis/vocab.py`` nests them back into the cards' JSON shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr

from builders._down_proj import NO_EXPERT, DownProjection
from builders._vocab_classes import TOKEN_CLASSES
from builders._vocab_interventions import WindowSums
from builders._vocab_neurons import Moments, NeuronCard, Vocabulary
from builders._vocab_run import WeightCard
from store import CARD_METRICS

_RANKED = ("card", "rank")
_BY_METRIC = ("card", "metric")


def tensor_kind(projection: DownProjection) -> str:
    """The card's ``tensor``: mlp_out for a dense MLP, expert_out or shared_expert_out for MoE."""
    if projection.kind == "experts" or projection.expert != NO_EXPERT:
        return "expert_out"
    return "shared_expert_out" if "shared_expert" in projection.tensor else "mlp_out"


def _tokens(prefix: str, lists: list[list[tuple[int, float]]], vocab: Vocabulary, value: str,
            dtype: type) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """``prefix_id``, ``_tok``, ``_str`` and ``_<value>`` columns of ranked (token id, value) lists."""
    shape = (len(lists), len(lists[0]) if lists else 0)  # no card (a model without super weights): (0, 0)
    ids = np.array([[token_id for token_id, _ in ranked] for ranked in lists], dtype=np.int32).reshape(shape)
    return {f"{prefix}_id": (_RANKED, ids),
            f"{prefix}_tok": (_RANKED, np.vectorize(lambda i: vocab.raw[i], otypes=[object])(ids)),
            f"{prefix}_str": (_RANKED, np.vectorize(lambda i: vocab.decoded[i], otypes=[object])(ids)),
            f"{prefix}_{value}": (_RANKED, np.array([[v for _, v in ranked] for ranked in lists],
                                                    dtype=dtype).reshape(shape))}


def _who(projections: list[DownProjection], layers: list[int], experts: list[int],
         routing: list[float]) -> dict[str, tuple[str, np.ndarray]]:
    return {"tensor": ("card", np.array([tensor_kind(p) for p in projections], dtype=object)),
            "parameter": ("card", np.array([p.tensor for p in projections], dtype=object)),
            "layer": ("card", np.array(layers, dtype=np.int32)), "expert": ("card", np.array(experts, dtype=np.int32)),
            "p_active": ("card", np.array(routing, dtype=np.float32))}


def _moment_columns(cards: list[NeuronCard], pick: Callable[[NeuronCard], Moments | None],
                    prefix: str) -> dict[str, tuple[str, np.ndarray]]:
    def value(card: NeuronCard, name: str) -> float:
        found = pick(card)
        return np.nan if found is None else getattr(found, name)

    return {f"{prefix}{name}": ("card", np.array([value(card, name) for card in cards], dtype=np.float64))
            for name in ("var", "skew", "kurt")}


def _enrichment_columns(cards: list[NeuronCard]) -> dict[str, tuple[tuple[str, str], np.ndarray]]:
    """(card, token_class) scores, counts and examples (a JSON list); NaN / 0 / "[]" without enrichment."""
    shape = (len(cards), len(TOKEN_CLASSES))
    score, count, examples = np.full(shape, np.nan), np.zeros(shape, np.int32), np.full(shape, "[]", dtype=object)
    for index, card in enumerate(cards):
        for found in card.enrichment:
            column = TOKEN_CLASSES.index(found.token_class)
            score[index, column], count[index, column] = found.score, found.count
            examples[index, column] = json.dumps(list(found.examples), ensure_ascii=False)
    dims = ("card", "token_class")
    return {"enrichment_score": (dims, score), "enrichment_count": (dims, count), "enrichment_examples": (dims, examples)}


def neuron_table(cards: list[NeuronCard], vocab: Vocabulary, routing: list[float],
                 attrs: dict[str, Any]) -> xr.Dataset:
    neurons = [card.neuron for card in cards]
    variables: dict[str, Any] = _who([n.projection for n in neurons], [n.layer for n in neurons],
                                     [n.expert for n in neurons], routing)
    variables.update({"neuron": ("card", np.array([n.neuron for n in neurons], dtype=np.int32)),
                      "source": ("card", np.array([n.source for n in neurons], dtype=object)),
                      "label": ("card", np.array([card.label for card in cards], dtype=object))})
    variables.update(_moment_columns(cards, lambda card: card.moments, ""))
    variables.update(_moment_columns(cards, lambda card: card.moments_cos, "cos_"))
    variables.update(_tokens("up", [card.up for card in cards], vocab, "effect", np.float32))
    variables.update(_tokens("down", [card.down for card in cards], vocab, "effect", np.float32))
    variables.update(_enrichment_columns(cards))
    coords = {"card": np.arange(len(cards), dtype=np.int32), "token_class": np.array(TOKEN_CLASSES, dtype=object)}
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _by_metric(cards: list[WeightCard], pick: Callable[[WeightCard], np.ndarray]) -> tuple[tuple[str, str], np.ndarray]:
    return _BY_METRIC, np.array([pick(card) for card in cards], dtype=np.float64).reshape(len(cards), len(CARD_METRICS))


def _bootstrap_columns(cards: list[WeightCard]) -> dict[str, tuple[tuple[str, str], np.ndarray]]:
    def part(name: str) -> tuple[tuple[str, str], np.ndarray]:
        return _by_metric(cards, lambda card: np.full(len(CARD_METRICS), np.nan) if card.bootstrap is None
                          else getattr(card.bootstrap, name))

    return {"bootstrap_mean": part("mean"), "ci_low": part("low"), "ci_high": part("high")}


def weight_table(cards: list[WeightCard], baseline: WindowSums, vocab: Vocabulary, cascade_layers: list[int],
                 attrs: dict[str, Any]) -> xr.Dataset:
    weights = [card.weight for card in cards]
    variables: dict[str, Any] = _who([w.projection for w in weights], [w.layer for w in weights],
                                     [w.expert for w in weights], [card.p_active for card in cards])
    for name in ("row", "col"):
        variables[name] = ("card", np.array([getattr(w, name) for w in weights], dtype=np.int32))
    variables.update({
        "value": ("card", np.array([w.value for w in weights], dtype=np.float32)),
        "weights_record": ("card", np.array([card.record for card in cards], dtype=np.int32)),
        "random_row": ("card", np.array([card.random_coord[0] for card in cards], dtype=np.int32)),
        "random_col": ("card", np.array([card.random_coord[1] for card in cards], dtype=np.int32)),
        "baseline": _by_metric(cards, lambda card: baseline.means()),
        "delta": _by_metric(cards, lambda card: card.delta),
        "random_coord_delta": _by_metric(cards, lambda card: card.random_coord_delta),
        "neuron_zero_delta": _by_metric(cards, lambda card: card.neuron_zero_delta),
        **_bootstrap_columns(cards),
        **_tokens("gain", [card.gains for card in cards], vocab, "delta_prob", np.float64),
        **_tokens("loss", [card.losses for card in cards], vocab, "delta_prob", np.float64),
        "cascade_entropy": (("card", "cascade_layer"), _cascade(cards, cascade_layers, 0)),
        "cascade_margin": (("card", "cascade_layer"), _cascade(cards, cascade_layers, 1)),
        "window_tokens": ("window", baseline.tokens.astype(np.int64)),
        "window_baseline": (("window", "metric"), baseline.sums / baseline.tokens[:, None]),
        "window_delta": (("card", "window", "metric"),
                         np.array([card.window_delta for card in cards], dtype=np.float64).reshape(
                             len(cards), len(baseline.tokens), len(CARD_METRICS))),
    })
    coords = {"card": np.arange(len(cards), dtype=np.int32), "metric": np.array(CARD_METRICS, dtype=object),
              "cascade_layer": np.array(cascade_layers, dtype=np.int32)}
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _cascade(cards: list[WeightCard], cascade_layers: list[int], column: int) -> np.ndarray:
    return np.array([card.cascade[:, column] for card in cards], dtype=np.float64).reshape(len(cards),
                                                                                           len(cascade_layers))
