"""Pooling a document's hidden states into one vector (docs/vectors.md is the prose version).

For a document of n tokens (positions i = 0 .. n-1, the last at n-1) and an e-folding depth
given as a fraction f of its length, token i gets the weight

    w_i = exp(-(n - 1 - i) / (f * n)) / Z,   Z = sum_j exp(-(n - 1 - j) / (f * n))

so the last token weighs most and a token f * n positions before it weighs 1/e of that. The
weights sum to 1. One token: w = [1]. Two tokens at f = 0.067: [0.000574, 0.999426]. Weights are
computed in float64 (Z in closed form) and applied in float32; positions outside a segment
(padding in a batch) get weight 0, so padding never enters a pooled vector.

A *segment* is the part of a document one batch row pools: the whole (truncated) document, or
one window of a long one, which may start with ``lead`` tokens of context (the end of the window
before) that it runs but does not pool. Each segment contributes its pooled tokens' terms of the
sums above, with i counted in the whole document, and the document's vector is the sum of its
segments' contributions (``combine``): windows pool every token once, with the weights of the
whole document; only the context each hidden state saw is bounded.

- ``short``: the mean over the chosen layers, then the weighted average with f = 0.067 (d values).
- ``long``: [last token, weighted averages with f = 0.023, 0.067, 0.159] of that layer mean (4 d).

With ``center`` (--vectors.center_residual) each layer's token vectors first lose their mean
over d (``center_over_hidden``): the residual stream TransformerLens hooks on a LayerNorm model
after its default weight processing, so vectors made with it can be extended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

SHORT_DEPTHS = (0.067,)
LONG_DEPTHS = (0.023, 0.067, 0.159)
# Pythia-12B's layers 25, 26 and 27 of 36: the default's relative depth on any model
REFERENCE_FIRST_LAYER, REFERENCE_LAYERS = 25, 36


def default_layers(n_layers: int, count: int = 3) -> list[int]:
    """``count`` consecutive blocks starting at Pythia-12B's relative depth 25/36, inside the model."""
    first = round(REFERENCE_FIRST_LAYER / REFERENCE_LAYERS * n_layers)
    first = max(0, min(first, n_layers - count))
    return list(range(first, min(first + count, n_layers)))


@dataclass(frozen=True)
class Segments:
    """Where each row of a batch sits in its document (all arrays of one entry per row)."""

    doc_lengths: np.ndarray  # tokens pooled for the row's document (every window's)
    offsets: np.ndarray  # the position in its document of the row's first pooled token
    lengths: np.ndarray  # tokens the row pools
    leads: np.ndarray  # tokens of context before them in the row, run but not pooled (the rest is padding)

    @classmethod
    def whole(cls, lengths: Sequence[int] | np.ndarray) -> Segments:
        """Rows that each hold one whole document."""
        lengths = np.asarray(lengths, np.int64)
        return cls(lengths, np.zeros_like(lengths), lengths, np.zeros_like(lengths))

    @property
    def holds_last_token(self) -> np.ndarray:
        return self.offsets + self.lengths == self.doc_lengths


def pooling_weights(lengths: np.ndarray, width: int, depth: float) -> np.ndarray:
    """(documents, width) float64 weights of whole documents; zero past each document's length."""
    return segment_weights(Segments.whole(lengths), width, depth)


def segment_weights(segments: Segments, width: int, depth: float) -> np.ndarray:
    """(rows, width) float64: each row's tokens' weights within its whole document; zero elsewhere."""
    if depth <= 0:
        raise ValueError(f"an e-folding depth must be above 0, got {depth!r}")
    doc_lengths = segments.doc_lengths[:, None].astype(np.float64)
    scale = depth * doc_lengths  # the e-folding length in tokens
    column = np.arange(width)[None, :]
    leads = segments.leads[:, None]
    from_end = doc_lengths - 1 - (segments.offsets[:, None] - leads + column)
    inside = (column >= leads) & (column < leads + segments.lengths[:, None])
    # Z = sum_{k=0}^{n-1} exp(-k / scale), a geometric series; expm1 keeps it exact for long documents
    normaliser = np.expm1(-doc_lengths / scale) / np.expm1(-1.0 / scale)
    return np.where(inside, np.exp(-np.where(inside, from_end, 0) / scale), 0.0) / normaliser


def pool(layer_mean: torch.Tensor, segments: Segments, depths: Sequence[float], last_token: bool) -> torch.Tensor:
    """(rows, features) float32: each row's contribution to [last token,] one weighted average per depth.

    ``layer_mean`` is (rows, width, d) float32, right-padded. A row without its document's last
    token contributes zeros to the last-token part.
    """
    rows, width = layer_mean.shape[:2]
    parts = []
    if last_token:
        index = torch.as_tensor(segments.leads + np.maximum(segments.lengths - 1, 0), device=layer_mean.device)
        has_last = torch.as_tensor(segments.holds_last_token, device=layer_mean.device)[:, None]
        last = layer_mean[torch.arange(rows, device=layer_mean.device), index]
        parts.append(torch.where(has_last, last, torch.zeros_like(last)))
    for depth in depths:
        weights = torch.as_tensor(segment_weights(segments, width, depth), dtype=torch.float32,
                                  device=layer_mean.device)
        parts.append(torch.einsum("bt,btd->bd", weights, layer_mean))
    return torch.cat(parts, dim=1)


def center_over_hidden(states: torch.Tensor) -> torch.Tensor:
    """``states`` (..., d) in float32, each vector minus its mean over d.

    TransformerLens' center_writing_weights removes this mean from every weight and bias that
    writes to the residual stream; a LayerNorm ignores it, so the model computes the same and
    its hooked stream is the raw stream minus each token's mean (checked on GPT-NeoX in
    tests/builders/test_vectors_center_residual.py).
    """
    states = states.float()  # in bfloat16 the difference would keep only about 3 significant digits
    return states - states.mean(dim=-1, keepdim=True)


def pool_layers(outputs: Sequence[torch.Tensor], segments: Segments, short_depth: float,
                long_depths: Sequence[float], poolings: Sequence[str],
                center: bool = False) -> dict[str, np.ndarray]:
    """Each pooling's (rows, features) float32 contributions from the hooked layers' outputs
    (with ``center``, each token's mean over d removed first, layer by layer)."""
    device = outputs[0].device  # blocks spread over GPUs (device_map) meet on the first one
    states = torch.stack([output.to(device).float() for output in outputs])  # (layer, rows, width, d) float32
    if center:  # each hooked layer as TransformerLens sees it; centring is linear, so the order only rounds
        states = center_over_hidden(states)
    layer_mean = states.mean(dim=0)
    pooled = {}
    if "short" in poolings:
        pooled["short"] = pool(layer_mean, segments, (short_depth,), last_token=False)
    if "long" in poolings:
        pooled["long"] = pool(layer_mean, segments, tuple(long_depths), last_token=True)
    return {name: vectors.cpu().numpy() for name, vectors in pooled.items()}


def combine(contributions: Sequence[np.ndarray]) -> np.ndarray:
    """A document's vector from its segments' contributions, in document order (float32 sums)."""
    total = contributions[0].copy()
    for contribution in contributions[1:]:
        total += contribution
    return total
