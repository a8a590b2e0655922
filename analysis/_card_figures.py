"""Figures of the vocabulary cards (JSON cards of ``analysis.vocab``): a neuron's top tokens, a super
weight's deltas against its controls and its logit-lens cascade."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from analysis._figure_kit import _pyplot

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _token_text(token: dict[str, Any]) -> str:
    """A token's text made visible: repr() shows spaces, newlines and control bytes."""
    return repr(token["str"])[1:-1] or repr(token["tok"])


def neuron_effects(card: dict[str, Any]) -> Figure:
    """A neuron's top tokens up and down: the effect of its output direction on each token's logit."""
    plt = _pyplot()
    figure, (up, down) = plt.subplots(1, 2, figsize=(10, 0.25 * len(card["top_tokens_up"]) + 1.6))
    for ax, key, colour in ((up, "top_tokens_up", "tab:blue"), (down, "top_tokens_down", "tab:red")):
        tokens = card[key][::-1]
        ax.barh(range(len(tokens)), [token["effect"] or 0.0 for token in tokens], color=colour)
        ax.set_yticks(range(len(tokens)), [_token_text(token) for token in tokens], fontsize=7)
        ax.set_xlabel("effect (unembedding . direction)")
        ax.set_title(key.replace("_", " "))
    moments = card["moments"]
    figure.suptitle(f"{card['model']} layer {card['layer']} neuron {card['neuron']} ({card['label']}): "
                    f"var {moments['var']:.3g}, skew {moments['skew'] or 0:.3g}, kurt {moments['kurt'] or 0:.3g}")
    figure.tight_layout()
    return figure


def _card_title(card: dict[str, Any]) -> str:
    expert = "" if card.get("expert") is None else f" expert {card['expert']}"
    return f"{card['model']} {card['tensor']} layer {card['layer']}{expert} W[{card['row']}, {card['col']}]"


def weight_deltas(card: dict[str, Any]) -> Figure:
    """Each metric's change with the weight zeroed (bootstrap interval if any), beside the two controls."""
    plt = _pyplot()
    metrics = list(card["deltas"])
    figure, axes = plt.subplots(1, len(metrics), figsize=(3 * len(metrics), 3.4))
    bootstrap = card.get("bootstrap", {})
    for ax, metric in zip(axes, metrics):
        values = [card["deltas"][metric], card["controls"]["random_coord_delta"][metric],
                  card["controls"]["neuron_zero_delta"][metric]]
        heights = np.array([np.nan if value is None else value for value in values])
        ax.bar(range(3), heights, color=["tab:red", "tab:grey", "tab:orange"])
        if metric in bootstrap:
            low, high = [value for key, value in bootstrap[metric].items() if key.startswith("ci_")]
            if low is not None and high is not None:  # a percentile interval need not contain the bar's top
                ax.plot([0, 0], [low, high], color="black", marker="_", markersize=14)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(range(3), ["weight", "random\ncoord", "whole\nneuron"], fontsize=8)
        ax.set_title(f"delta {metric}", fontsize=9)
    figure.suptitle(_card_title(card) + " zeroed", fontsize=10)
    figure.tight_layout()
    return figure


def weight_cascade(card: dict[str, Any]) -> Figure:
    """Entropy and top-k margin deltas layer by layer (logit lens), with the weight zeroed."""
    plt = _pyplot()
    cascade = card["cascade"]
    figure, ax = plt.subplots(figsize=(6, 3.6))
    for key, label in (("delta_entropy", "delta entropy (nats)"), ("delta_margin", "delta top-k margin")):
        ax.plot(cascade["layers"], [np.nan if value is None else value for value in cascade[key]], marker="o",
                label=label)
    ax.axvline(card["layer"], color="grey", linestyle=":", label=f"weight's layer {card['layer']}")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlabel("layer (logit lens)")
    ax.set_title(_card_title(card) + " zeroed: cascade", fontsize=10)
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure
