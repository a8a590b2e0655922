"""Lazy analysis of activation stores (xarray + dask)."""

from analysis._open import open_store

__all__ = ["open_store"]
