"""Lazy analysis of activation stores (xarray + dask): open, fit power laws, plot.

    from analysis import open_store, fit, fit_power_law
    ds = open_store("smollm2-pydoc")          # catalog name, path or s3:// URL
    fits = fit(ds).compute()                  # one dask task per series
    analysis.plots.ccdf(...)                  # matplotlib, imported lazily
    vecs = vectors("stores/vectors.zarr")     # pooled document vectors (builders.vectors)
    nearest(vecs, "dict", k=5)                # centred cosine, chunk by chunk
    superweight_summary("stores/sw.zarr")     # Super Weight analyses (builders.superweights)

Token queries (which tokens, channels and text) are in ``analysis.query``, exports in the layouts of
older tools in ``analysis.export``; both are imported on use.
"""

from typing import Any

from analysis._compare import ALTERNATIVES, Comparison
from analysis._dataset_fit import FITS_GROUP
from analysis._dataset_fit import fit as _fit_dataset
from analysis._fit_one import fit_power_law
from analysis._ols import RankFit, rank_ols
from analysis._open import open_store
from analysis._powerlaw import PowerLawFit
from analysis._vectors import (
    centre,
    corpus_mean,
    cosine_similarity,
    long_diagnostics,
    long_diagnostics_of,
    nearest,
    open_vectors,
    similarity_scores,
)

fit = _fit_dataset
vectors = open_vectors  # analysis.vectors(store): the vectors group, as analysis.open_store is the stats group
_SUPERWEIGHTS = {"open_superweights": "open_superweights", "superweight_records": "records",
                 "superweight_summary": "summary"}


def __getattr__(name: str) -> Any:
    """The super weight readers, imported on first use: ``python -m analysis.superweights`` must not find
    its module imported by the package already (runpy warns that it may run twice)."""
    if name in _SUPERWEIGHTS:
        from analysis import superweights

        return getattr(superweights, _SUPERWEIGHTS[name])
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")


__all__ = [
    "ALTERNATIVES",
    "FITS_GROUP",
    "Comparison",
    "PowerLawFit",
    "RankFit",
    "centre",
    "corpus_mean",
    "cosine_similarity",
    "fit",
    "fit_power_law",
    "long_diagnostics",
    "long_diagnostics_of",
    "nearest",
    "open_store",
    "open_superweights",
    "open_vectors",
    "rank_ols",
    "similarity_scores",
    "superweight_records",
    "superweight_summary",
    "vectors",
]
