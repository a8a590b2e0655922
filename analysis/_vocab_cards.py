"""The stored card tables nested back into run_vocab_analyses.py's JSON cards, and flattened for CSV.

The JSON cards keep the old script's field names and nesting (``moments``, ``top_tokens_up``,
``baselines``, ``deltas``, ``controls.random_coord_delta``...), so notebooks that read its
``neurons.jsonl`` and ``super_weights.jsonl`` keep working. Optional parts appear only when the
run computed them (``moments_cos``, ``enrichment``, ``cascade``, ``bootstrap``), as in the old
cards. Added fields: ``expert`` and ``p_active`` (MoE), ``parameter``, ``value``, ``source``,
``random_coord`` and ``token_prob_changes`` (the interventional "dual" view).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from analysis._files import json_number as number
from store import CARD_METRICS


def _metrics(values: np.ndarray) -> dict[str, float | None]:
    return {metric: number(value) for metric, value in zip(CARD_METRICS, values)}


def _tokens(table: xr.Dataset, prefix: str, card: int, value: str) -> list[dict[str, Any]]:
    columns = (table[f"{prefix}_id"].values[card], table[f"{prefix}_tok"].values[card],
               table[f"{prefix}_str"].values[card], table[f"{prefix}_{value}"].values[card])
    return [{"id": int(token_id), "tok": str(tok), "str": str(text), value: number(amount)}
            for token_id, tok, text, amount in zip(*columns)]


def _who(table: xr.Dataset, card: int) -> dict[str, Any]:
    expert = int(table["expert"].values[card])
    return {"expert": expert if expert >= 0 else None, "p_active": number(table["p_active"].values[card]),
            "parameter": str(table["parameter"].values[card])}


def _moments(table: xr.Dataset, card: int, prefix: str) -> dict[str, float | None]:
    return {name: number(table[f"{prefix}{name}"].values[card]) for name in ("var", "skew", "kurt")}


def _enrichment(table: xr.Dataset, card: int) -> list[dict[str, Any]]:
    return [{"class": str(token_class), "score": number(score), "examples": json.loads(str(examples))}
            for token_class, score, examples in zip(table["token_class"].values, table["enrichment_score"].values[card],
                                                    table["enrichment_examples"].values[card])]


def neuron_cards(label: str, table: xr.Dataset) -> list[dict[str, Any]]:
    """One JSON card per neuron, as neurons.jsonl holds them."""
    cards = []
    for card in range(table.sizes["card"]):
        document: dict[str, Any] = {"model": label, "layer": int(table["layer"].values[card]),
                                    "neuron": int(table["neuron"].values[card]),
                                    "moments": _moments(table, card, "")}
        if table.attrs.get("cosine"):
            document["moments_cos"] = _moments(table, card, "cos_")
        document["top_tokens_up"] = _tokens(table, "up", card, "effect")
        document["top_tokens_down"] = _tokens(table, "down", card, "effect")
        if table.attrs.get("enrichment"):
            document["enrichment"] = _enrichment(table, card)
        document.update({"label": str(table["label"].values[card]), "source": str(table["source"].values[card]),
                         **_who(table, card)})
        cards.append(document)
    return cards


def _ci_names(confidence: float) -> tuple[str, str]:
    """``ci_2.5`` and ``ci_97.5`` at 95 %: the old cards' keys, named by percentile."""
    tail = (1 - confidence) / 2 * 100
    return f"ci_{tail:g}", f"ci_{100 - tail:g}"


def _bootstrap(table: xr.Dataset, card: int) -> dict[str, dict[str, float | None]]:
    low_name, high_name = _ci_names(float(table.attrs["confidence"]))
    parts = (table["bootstrap_mean"].values[card], table["ci_low"].values[card], table["ci_high"].values[card])
    return {metric: {"mean": number(mean), low_name: number(low), high_name: number(high)}
            for metric, mean, low, high in zip(CARD_METRICS, *parts)}


def _cascade(table: xr.Dataset, card: int) -> dict[str, list[Any]]:
    return {"layers": [int(layer) for layer in table["cascade_layer"].values],
            "delta_entropy": [number(value) for value in table["cascade_entropy"].values[card]],
            "delta_margin": [number(value) for value in table["cascade_margin"].values[card]]}


def weight_cards(label: str, table: xr.Dataset) -> list[dict[str, Any]]:
    """One JSON card per super weight, as super_weights.jsonl holds them."""
    cards = []
    for card in range(table.sizes["card"]):
        document: dict[str, Any] = {"model": label, "tensor": str(table["tensor"].values[card]),
                                    **{name: int(table[name].values[card]) for name in ("layer", "row", "col")},
                                    "baselines": _metrics(table["baseline"].values[card]),
                                    "deltas": _metrics(table["delta"].values[card]),
                                    "controls": {"random_coord_delta": _metrics(table["random_coord_delta"].values[card]),
                                                 "neuron_zero_delta": _metrics(table["neuron_zero_delta"].values[card])}}
        if table.sizes["cascade_layer"]:
            document["cascade"] = _cascade(table, card)
        if int(table.attrs.get("bootstrap", 0)):
            document["bootstrap"] = _bootstrap(table, card)
        document.update({"token_prob_changes": {"gains": _tokens(table, "gain", card, "delta_prob"),
                                                "losses": _tokens(table, "loss", card, "delta_prob")},
                         "value": number(table["value"].values[card]),
                         "random_coord": [int(table["random_row"].values[card]), int(table["random_col"].values[card])],
                         **_who(table, card)})
        cards.append(document)
    return cards


def neuron_rows(cards: list[dict[str, Any]]) -> pd.DataFrame:
    """summaries/neurons.csv: one flat row per neuron card."""
    rows = []
    for card in cards:
        row = {key: card[key] for key in ("model", "layer", "neuron", "expert", "p_active", "label", "source")}
        row.update({f"moments_{key}": value for key, value in card["moments"].items()})
        row.update({f"moments_cos_{key}": value for key, value in card.get("moments_cos", {}).items()})
        for side in ("up", "down"):
            row[f"top_{side}"] = " | ".join(token["str"] for token in card[f"top_tokens_{side}"][:10])
        row.update({f"enrichment_{item['class']}": item["score"] for item in card.get("enrichment", [])})
        rows.append(row)
    return pd.DataFrame(rows)


def weight_rows(cards: list[dict[str, Any]]) -> pd.DataFrame:
    """summaries/super_weights.csv: one flat row per super-weight card."""
    rows = []
    for card in cards:
        row = {key: card[key] for key in ("model", "tensor", "layer", "row", "col", "expert", "p_active", "value")}
        for part, values in (("baseline", card["baselines"]), ("delta", card["deltas"]),
                             ("random_coord_delta", card["controls"]["random_coord_delta"]),
                             ("neuron_zero_delta", card["controls"]["neuron_zero_delta"])):
            row.update({f"{part}_{metric}": value for metric, value in values.items()})
        for metric, interval in card.get("bootstrap", {}).items():
            row.update({f"bootstrap_{metric}_{key}": value for key, value in interval.items()})
        rows.append(row)
    return pd.DataFrame(rows)
