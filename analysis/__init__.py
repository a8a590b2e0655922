"""Lazy analysis of activation stores (xarray + dask): open, fit power laws, plot.

    from analysis import open_store, fit, fit_power_law
    ds = open_store("smollm2-pydoc")          # catalog name, path or s3:// URL
    fits = fit(ds).compute()                  # one dask task per series
    analysis.plots.ccdf(...)                  # matplotlib, imported lazily
    vecs = vectors("stores/vectors.zarr")     # pooled document vectors (builders.vectors)
    nearest(vecs, "dict", k=5)                # centred cosine, chunk by chunk
"""

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
    nearest,
    open_vectors,
    similarity_scores,
)

fit = _fit_dataset
vectors = open_vectors  # analysis.vectors(store): the vectors group, as analysis.open_store is the stats group

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
    "nearest",
    "open_store",
    "open_vectors",
    "rank_ols",
    "similarity_scores",
    "vectors",
]
