"""Lazy analysis of activation stores (xarray + dask): open, fit power laws, plot.

    from analysis import open_store, fit, fit_power_law
    ds = open_store("smollm2-pydoc")          # catalog name, path or s3:// URL
    fits = fit(ds).compute()                  # one dask task per series
    analysis.plots.ccdf(...)                  # matplotlib, imported lazily
"""

from analysis._compare import ALTERNATIVES, Comparison
from analysis._dataset_fit import FITS_GROUP
from analysis._dataset_fit import fit as _fit_dataset
from analysis._fit_one import fit_power_law
from analysis._ols import RankFit, rank_ols
from analysis._open import open_store
from analysis._powerlaw import PowerLawFit

fit = _fit_dataset

__all__ = [
    "ALTERNATIVES",
    "FITS_GROUP",
    "Comparison",
    "PowerLawFit",
    "RankFit",
    "fit",
    "fit_power_law",
    "open_store",
    "rank_ols",
]
