"""``fit``: power-law fits of every (model, layer, metric) and (model, layer, channel) series.

One dask task per series, so the same call runs on threads, processes or a
``dask.distributed`` cluster. Results can be cached in the store's ``fits``
group; the cache is keyed by a fingerprint of the statistics and the options,
so changed statistics are refitted.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from typing import Any

import numpy as np
import xarray as xr

from analysis._compare import ALTERNATIVES
from analysis._fit_one import fit_power_law
from analysis._ols import rank_ols

FITS_GROUP = "fits"
SCALARS = ("alpha", "xmin", "sigma", "ks_d", "n_tail", "n_excluded", "slope", "intercept", "r2", "gof_p", "status")
STATUS = {"ok": 0, "constant series": 1, "fewer than 3 distinct positive values": 2,
          "no candidate xmin gives a valid alpha": 3}
TRANSFORMS = {"abs": np.abs, "positive": lambda x: x, "negative": lambda x: -x}


def _fit_series(values: np.ndarray, transform: str, discrete: bool | None, alpha_range: Any,
                alternatives: tuple[str, ...], n_boot: int) -> np.ndarray:
    """All numbers of one series, flat: SCALARS, then R and p per alternative."""
    prepared = TRANSFORMS[transform](np.asarray(values, dtype=np.float64))
    result = fit_power_law(prepared, discrete, alpha_range, alternatives or False, n_boot)
    ols = rank_ols(prepared)
    scalars = [result.alpha, result.xmin, result.sigma, result.ks_d, result.n_tail, result.n_excluded,
               ols.slope, ols.intercept, ols.r2, result.gof_p, STATUS.get(result.status, 9)]
    comparisons = [result.comparisons.get(name) for name in alternatives]
    tests = [value for c in comparisons for value in ((c.R, c.p) if c else (np.nan, np.nan))]
    return np.asarray(scalars + tests, dtype=np.float64)


def _fit_array(array: xr.DataArray, options: dict[str, Any]) -> xr.DataArray:
    size = len(SCALARS) + 2 * len(options["alternatives"])
    series_chunks = {dim: (-1 if dim == "token" else 1) for dim in array.dims}
    return xr.apply_ufunc(
        _fit_series, array.chunk(series_chunks),
        kwargs=options, input_core_dims=[["token"]], output_core_dims=[["field"]],
        vectorize=True, dask="parallelized", output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"field": size}},
    )


def _unpack(flat: xr.DataArray, alternatives: tuple[str, ...], prefix: str) -> dict[str, xr.DataArray]:
    variables = {f"{prefix}{name}": flat.isel(field=i) for i, name in enumerate(SCALARS)}
    if alternatives:
        tests = flat.isel(field=slice(len(SCALARS), None))
        pairs = tests.data.reshape(*tests.shape[:-1], len(alternatives), 2)
        dims = (*flat.dims[:-1], "alternative")
        variables[f"{prefix}R"] = xr.DataArray(pairs[..., 0], dims=dims)
        variables[f"{prefix}p"] = xr.DataArray(pairs[..., 1], dims=dims)
    return variables


def fit(
    dataset: xr.Dataset,
    alpha_range: tuple[float, float] | None = None,
    discrete: bool | None = None,
    compare: bool = True,
    n_boot: int = 0,
    transform: str = "abs",
    channels: bool = True,
    cache: bool = True,
) -> xr.Dataset:
    """Fits of every series of a ``stats`` Dataset, one dask task per series.

    With ``cache=True`` and a Dataset from ``open_store``, a fresh ``fits`` group in
    the store is returned lazily as is; otherwise the fits are computed now and
    written there. Without a store (or ``cache=False``) the result is lazy: call
    ``.compute()`` under any dask scheduler.

    ``transform`` picks what is fitted: ``abs`` (default, |value|: heavy tails of
    either sign), ``positive`` or ``negative`` (the values above or below zero).
    Non-finite values and zeros are excluded and counted in ``n_excluded``;
    ``status`` is 0 when the fit succeeded (see its ``flag_meanings``).
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; use one of {sorted(TRANSFORMS)}")
    alternatives = ALTERNATIVES if compare else ()
    options = {"transform": transform, "discrete": discrete,
               "alpha_range": tuple(alpha_range) if alpha_range else None,
               "alternatives": alternatives, "n_boot": n_boot}
    cached = _read_cache(dataset, options) if cache else None
    if cached is not None:
        return cached
    variables = _unpack(_fit_array(dataset["value"], options), alternatives, "")
    if channels and "channel_value" in dataset and dataset.sizes.get("channel", 0):
        variables.update(_unpack(_fit_array(dataset["channel_value"], options), alternatives, "channel_"))
    result = xr.Dataset(variables, coords=_coords(dataset, alternatives))
    result.attrs.update(_fit_attrs(dataset, options))
    for name in [v for v in result.data_vars if v.endswith("status")]:
        result[name].attrs.update(flag_values=list(STATUS.values()), flag_meanings=" ".join(
            s.replace(" ", "_") for s in STATUS))
    return _write_cache(dataset, result) if cache else result


def _coords(dataset: xr.Dataset, alternatives: tuple[str, ...]) -> dict[str, Any]:
    coords = {dim: dataset[dim].values for dim in ("model", "layer", "metric") if dim in dataset.coords}
    if alternatives:
        coords["alternative"] = np.array(alternatives, dtype=object)
    if "channel_index" in dataset:
        coords["channel_index"] = dataset["channel_index"].variable.compute()
    return coords


def fingerprint(dataset: xr.Dataset, options: dict[str, Any]) -> str:
    """Changes whenever the statistics (commits, models, config) or the fit options change."""
    committed = dataset["committed_tokens"].values.tolist() if "committed_tokens" in dataset else []
    basis = {"committed": committed, "tokens": int(dataset.sizes.get("token", 0)),
             "models": dataset.attrs.get("models", {}), "build": dataset.attrs.get("build_config", {}),
             "options": options}
    return hashlib.sha256(json.dumps(basis, sort_keys=True, default=str).encode()).hexdigest()


def _fit_attrs(dataset: xr.Dataset, options: dict[str, Any]) -> dict[str, Any]:
    return {"description": "power-law fits (Clauset et al. 2009) of each stats series",
            "fit_options": json.dumps(options, default=str),
            "stats_fingerprint": fingerprint(dataset, options)}


def _location(dataset: xr.Dataset) -> Any:
    """Where ``open_store`` found this Dataset (kept out of attrs: it may hold credentials)."""
    return dataset.encoding.get("store_location")


def _read_cache(dataset: xr.Dataset, options: dict[str, Any]) -> xr.Dataset | None:
    location = _location(dataset)
    if location is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cached = xr.open_zarr(location.zarr_store(read_only=True), group=FITS_GROUP)
    except (KeyError, FileNotFoundError, OSError, ValueError):
        return None
    return cached if cached.attrs.get("stats_fingerprint") == fingerprint(dataset, options) else None


def _write_cache(dataset: xr.Dataset, result: xr.Dataset) -> xr.Dataset:
    location = _location(dataset)
    if location is None:
        return result
    from store import consolidate

    computed = result.compute()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        computed.to_zarr(location.zarr_store(), group=FITS_GROUP, mode="w", zarr_format=3, consolidated=False)
    consolidate(location)
    return computed
