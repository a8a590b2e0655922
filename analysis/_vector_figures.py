"""Figures of document vectors (``analysis.cosine_similarity``, ``analysis.long_diagnostics``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from analysis._figure_kit import _heatmap, _pyplot

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def similarity_heatmap(similarity: xr.DataArray, title: str = "cosine similarity") -> Figure:
    """A (doc, other_doc) similarity table (``analysis.cosine_similarity``) on a fixed -1 .. 1 scale."""
    return _heatmap(similarity, title, "cosine similarity", limits=(-1.0, 1.0), cmap="RdBu_r")


_DIAGNOSTIC_NORMS = {"raw_norm": "raw", "centred_norm": "centred", "difference_norm": "raw - centred",
                     "predicted_norm": "predicted mean contribution"}


def long_vector_diagnostics(diagnostics: xr.Dataset, max_docs: int = 4) -> Figure:
    """Per part of ``long`` vectors (``analysis.long_diagnostics``): the norms of raw, centred and
    raw - centred vectors against the predicted mean contribution (bars), and the cosine alignment
    of raw - centred with that prediction (line, right axis); one panel per document."""
    plt = _pyplot()
    docs = diagnostics["doc"].values[:max_docs]
    figure, axes = plt.subplots(1, len(docs), figsize=(4.5 * len(docs), 4), squeeze=False)
    parts = [str(part) for part in diagnostics["part"].values]
    width = 0.8 / len(_DIAGNOSTIC_NORMS)
    for ax, doc in zip(axes[0], docs):
        row = diagnostics.sel(doc=doc)
        for offset, (name, label) in enumerate(_DIAGNOSTIC_NORMS.items()):
            ax.bar(np.arange(len(parts)) + (offset - 1.5) * width, row[name].values, width, label=label)
        ax.set_xticks(range(len(parts)), parts, rotation=30, ha="right")
        ax.set(title=str(doc), ylabel="norm")
        twin = ax.twinx()
        twin.plot(range(len(parts)), row["alignment"].values, "k.-", label="alignment")
        twin.set(ylim=(-1.05, 1.05), ylabel="cosine(raw - centred, predicted)")
    axes[0][0].legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    return figure
