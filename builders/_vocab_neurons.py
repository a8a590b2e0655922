"""Neuron cards: what an MLP neuron's output direction does to the vocabulary, read off the weights.

A neuron is input channel ``col`` of a layer's down projection (of one expert, for MoE); its
output direction is the column ``w = W[:, col]``, what it adds to the residual stream per unit of
activation. Its *vocabulary effect* is that direction as the unembedding ``U`` (``[vocab, hidden]``)
sees it through the final norm, linearised: the norm's division by the token's RMS (or standard
deviation) is a positive factor per token that scales every effect alike, what remains is its
per-channel gain ``g`` and, for a LayerNorm, the removal of the mean across channels:

    seen      = g * w                (RMSNorm; g read off the norm itself: Gemma's is 1 + weight)
    seen      = g * (w - mean(w))    (LayerNorm: GPT-2, GPT-NeoX, OLMo)
    effect[t] = U[t] . seen                        (dot; the default)
    cosine[t] = effect[t] / (|U[t]| |seen|)        (with --cards.enable_cosine)

The moments are over the vocabulary, population moments (as ``scipy.stats`` with ``bias=True``):
``var`` = m2, ``skew`` = m3 / m2^1.5, ``kurt`` = m4 / m2^2 - 3 (excess kurtosis: 0 for a normal).
The label follows Gurnee et al. (2024, "Universal neurons in GPT-2"): a heavy tail (kurt >= 1)
with positive skew is a *prediction* neuron (it promotes a few tokens), with negative skew a
*suppression* neuron; otherwise *diffuse*. With enrichment, the label gains the class whose
enrichment score is highest when that score is at least 1 (twice the vocabulary's share), e.g.
``prediction:digits_years``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from builders import _models as models
from builders._down_proj import DownProjection
from builders._vocab_classes import Enrichment, enrichment

HEAVY_TAIL = 1.0  # excess kurtosis at which a neuron's effects count as heavy-tailed
ENRICHED = 1.0  # log2 enrichment at which a class names the neuron (twice its vocabulary share)


@dataclass(frozen=True)
class Neuron:
    """Input channel ``neuron`` of one layer's down projection (of ``expert`` for fused experts)."""

    layer: int
    neuron: int
    expert: int
    projection: DownProjection
    source: str  # "superweight" (a super weight's column) or "asked" (--cards.neurons)


@dataclass(frozen=True)
class Moments:
    var: float
    skew: float
    kurt: float


@dataclass(frozen=True)
class Vocabulary:
    """The model's unembedding as the cards read it, and every token id's text."""

    unembedding: torch.Tensor  # [vocab, hidden], float32
    gain: torch.Tensor  # the final norm's per-channel scale
    centred: bool  # the final norm removes the mean across channels (a LayerNorm)
    raw: list[str]  # convert_ids_to_tokens ("Ġthe"); "" past the tokenizer's vocabulary
    decoded: list[str]  # decode([id]) (" the")


@dataclass(frozen=True)
class NeuronCard:
    neuron: Neuron
    moments: Moments
    moments_cos: Moments | None
    up: list[tuple[int, float]]  # (token id, effect), largest effect first
    down: list[tuple[int, float]]  # smallest (most negative) first
    enrichment: list[Enrichment]
    label: str


def vocabulary(model: nn.Module, tokenizer: object) -> Vocabulary:
    """The unembedding, the final norm's gain and the text of every row of the unembedding."""
    unembedding = model.get_output_embeddings().weight.detach().float()
    gain, centred = norm_gain(models.final_norm(model), unembedding.shape[1], next(model.parameters()))
    known = min(len(tokenizer), unembedding.shape[0])  # type: ignore[arg-type]
    raw = [str(token) for token in tokenizer.convert_ids_to_tokens(list(range(known)))]  # type: ignore[attr-defined]
    decoded = tokenizer.batch_decode([[token_id] for token_id in range(known)])  # type: ignore[attr-defined]
    padding = [""] * (unembedding.shape[0] - known)  # rows the tokenizer never emits
    return Vocabulary(unembedding, gain, centred, raw + padding, decoded + padding)


def norm_gain(norm: nn.Module, hidden: int, like: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(per-channel gain, centred) of a final norm. A LayerNorm's gain is its weight (ones without one); an
    RMS-type norm is asked: ``norm(c * ones) = g`` for a large ``c`` (the eps then weighs nothing), which
    also gives Gemma's ``1 + weight``."""
    name = type(norm).__name__.lower()
    if "layernorm" in name and "rms" not in name:
        weight = getattr(norm, "weight", None)
        return (torch.ones(hidden) if weight is None else weight.detach().float().cpu()), True
    probe = torch.full((1, hidden), 1000.0, dtype=like.dtype, device=like.device)
    with torch.no_grad():
        return norm(probe)[0].float().cpu(), False


def direction(neuron: Neuron) -> torch.Tensor:
    """``W[:, col]``: what one unit of the neuron's activation adds to the residual stream."""
    projection = neuron.projection
    return projection.parameter[projection.column(neuron.neuron, neuron.expert)].detach().float()


def effects(vocab: Vocabulary, output_direction: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per token: the dot effect and the cosine (float64)."""
    seen = output_direction.to(vocab.unembedding.device)
    if vocab.centred:
        seen = seen - seen.mean()
    seen = seen * vocab.gain.to(seen.device)
    dot = vocab.unembedding @ seen
    norms = vocab.unembedding.norm(dim=1) * seen.norm()
    cosine = torch.where(norms > 0, dot / norms.clamp_min(torch.finfo(norms.dtype).tiny), torch.zeros_like(dot))
    return dot.double().cpu().numpy(), cosine.double().cpu().numpy()


def moments(values: np.ndarray) -> Moments:
    """Population variance, skewness and excess kurtosis (NaN for a constant)."""
    centred = values - values.mean()
    m2 = float(np.mean(centred**2))
    if m2 == 0:
        return Moments(0.0, float("nan"), float("nan"))
    return Moments(m2, float(np.mean(centred**3)) / m2**1.5, float(np.mean(centred**4)) / m2**2 - 3.0)


def label(card_moments: Moments, enriched: list[Enrichment]) -> str:
    if card_moments.kurt >= HEAVY_TAIL:
        kind = "prediction" if card_moments.skew >= 0 else "suppression"
    else:
        kind = "diffuse"
    best = max(enriched, key=lambda found: found.score, default=None)
    return f"{kind}:{best.token_class}" if best is not None and best.score >= ENRICHED else kind


def neuron_card(neuron: Neuron, vocab: Vocabulary, top_k: int, cosine: bool,
                masks: dict[str, np.ndarray] | None, enrichment_top: int) -> NeuronCard:
    """One neuron's card; ``masks`` (token classes) only with enrichment."""
    dot, cos = effects(vocab, direction(neuron))
    order = np.argsort(-dot, kind="stable")
    up = [(int(token_id), float(dot[token_id])) for token_id in order[:top_k]]
    down = [(int(token_id), float(dot[token_id])) for token_id in order[::-1][:top_k]]
    enriched = [] if masks is None else enrichment(order[:enrichment_top], masks, vocab.decoded)
    card_moments = moments(dot)
    return NeuronCard(neuron, card_moments, moments(cos) if cosine else None, up, down, enriched,
                      label(card_moments, enriched))
