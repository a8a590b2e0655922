"""Open a store lazily: local path, ``s3://`` URL or catalog name."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import xarray as xr

from store import STATS_GROUP, resolve_location


def open_store(
    name_or_url: str,
    storage_options: dict[str, Any] | None = None,
    catalog: str | Path | None = None,
    group: str = STATS_GROUP,
) -> xr.Dataset:
    """The ``stats`` group as a dask-backed Dataset, trimmed to committed tokens.

    Dask chunks follow the Zarr shards (at least 1 MiB per series), so one task
    reads one shard. Tokens past the smallest ``committed_tokens`` (a build still
    running or interrupted) are left out, so analyses only see finished work.
    """
    location = resolve_location(name_or_url, storage_options, catalog)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata notice from zarr
        dataset = xr.open_zarr(location.zarr_store(read_only=True), group=group, chunks=None)
    shards = dataset["value"].encoding.get("shards") or dataset["value"].encoding["chunks"]
    # one dask chunk per series and shard, as the store is laid out (open_zarr would use inner chunks)
    dataset = dataset.chunk({"model": 1, "layer": 1, "metric": 1, "channel": 1, "token": shards[-1]})
    committed = int(dataset["committed_tokens"].values.min()) if dataset.sizes["model"] else 0
    if committed < dataset.sizes["token"]:
        dataset = dataset.isel(token=slice(0, committed))
    dataset.attrs["source"] = location.display()
    dataset.encoding["store_location"] = location  # for the fits cache; never written out
    return dataset
