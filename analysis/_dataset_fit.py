"""``fit``: power-law fits of every (model, layer, metric) and (model, layer, channel) series.

One dask task per series, so the same call runs on threads, processes or a
``dask.distributed`` cluster. Results are cached (analysis/_fits_cache.py) under a key
that covers the store's committed state, the exact data fitted and every option, so a
cache hit is always the same computation on the same data.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr

from analysis import _fits_cache
from analysis._compare import ALTERNATIVES
from analysis._fit_one import fit_power_law
from analysis._ols import rank_ols
from analysis._verdict import bounded_series, verdicts
from store import InputError

FITS_GROUP = _fits_cache.FITS_GROUP
SCALARS = ("alpha", "xmin", "sigma", "ks_d", "n_tail", "n_excluded", "slope", "intercept", "r2", "gof_p",
           "gof_failed", "gof_n", "status")
STATUS = {"ok": 0, "constant series": 1, "fewer than 3 distinct positive values": 2,
          "no candidate xmin gives a valid alpha": 3}
TRANSFORMS = {"abs": np.abs, "positive": lambda x: x, "negative": lambda x: -x}
PREFIXES = {"value": "", "channel_value": "channel_"}  # fitted variable -> prefix of its result variables


def _fit_series(values: np.ndarray, bounded: bool, transform: str, discrete: bool | None, alpha_range: Any,
                alternatives: tuple[str, ...], n_boot: int, gof_precision: float | None) -> np.ndarray:
    """All numbers of one series, flat: SCALARS, then R and p per alternative.

    A bounded metric's verdict is settled without its goodness of fit: its bootstrap is skipped.
    """
    prepared = TRANSFORMS[transform](np.asarray(values, dtype=np.float64))
    result = fit_power_law(prepared, discrete, alpha_range, alternatives or False, n_boot,
                           gof_precision=None if bounded else gof_precision)
    ols = rank_ols(prepared)
    scalars = [result.alpha, result.xmin, result.sigma, result.ks_d, result.n_tail, result.n_excluded,
               ols.slope, ols.intercept, ols.r2, result.gof_p, result.gof_failed, result.gof_n,
               STATUS.get(result.status, 9)]
    comparisons = [result.comparisons.get(name) for name in alternatives]
    tests = [value for c in comparisons for value in ((c.R, c.p) if c else (np.nan, np.nan))]
    return np.asarray(scalars + tests, dtype=np.float64)


def _fit_array(array: xr.DataArray, bounded: xr.DataArray, options: dict[str, Any]) -> xr.DataArray:
    size = len(SCALARS) + 2 * len(options["alternatives"])
    series_chunks = {dim: (-1 if dim == "token" else 1) for dim in array.dims}
    return xr.apply_ufunc(
        _fit_series, array.chunk(series_chunks), bounded,
        kwargs=options, input_core_dims=[["token"], []], output_core_dims=[["field"]],
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
    cache: bool | str = "local",
    verdict: bool = False,
    gof_precision: float = 0.01,
    channel_verdict: bool | None = None,
    progress: bool = False,
) -> xr.Dataset:
    """Fits of every series of a ``stats`` Dataset, one dask task per series.

    ``cache``: ``"local"`` (default, also ``True``) reuses or writes an entry in the
    local cache folder (``$ACTIVATION_CACHE/fits``, else ``~/.cache/activation-datasets/fits``)
    and never writes into the store; ``"store"`` writes the store's ``fits`` group (the
    whole Dataset from ``open_store`` only; refused before any work if the store is not
    writable); ``False`` / ``"off"`` neither reads nor writes. Cached fits are returned
    lazily as stored, fresh ones computed; a Dataset that is not cacheable (not from
    ``open_store``, or in memory) or ``cache=False`` gives a lazy result: call
    ``.compute()`` under any dask scheduler.

    ``transform`` picks what is fitted: ``abs`` (default, |value|: heavy tails of
    either sign), ``positive`` or ``negative`` (the values above or below zero).
    ``discrete=None`` fits float variables (the stored statistics) as continuous and
    integer ones as discrete. Non-finite values and zeros are excluded and counted in
    ``n_excluded``; ``status`` is 0 when the fit succeeded (see its ``flag_meanings``).

    ``verdict=True`` adds the goodness-of-fit p-value (``gof_p`` over ``gof_n`` replicates:
    ``n_boot`` if given, else as many as ``gof_precision`` asks, 1 / (4 eps^2), stopping once p
    is clearly above or below 0.1) and ``verdict`` / ``channel_verdict``: Clauset et al.'s
    support for the power law per series (analysis/_verdict.py has the rule; codes in the
    ``flag_meanings`` attribute). It needs the comparisons. ``channel_verdict`` (default: as
    ``verdict``) decides for the channel series alone: ``False`` keeps their bootstrap off (192
    raw-activation series near p = 0.1 can take many times the metric series' time). ``progress=True`` shows one progress
    bar with an ETA while the fits compute (none on a cache hit).
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; use one of {sorted(TRANSFORMS)}")
    _check_verdict_options(verdict or bool(channel_verdict), compare, gof_precision)
    mode = _fits_cache.cache_mode(cache)
    alternatives = ALTERNATIVES if compare else ()
    common = {"transform": transform, "alpha_range": tuple(alpha_range) if alpha_range else None,
              "alternatives": alternatives, "n_boot": n_boot}
    asked = {"value": verdict, "channel_value": verdict if channel_verdict is None else channel_verdict}
    fitted = _fitted_arrays(dataset, channels)
    judged = {name: asked[name] for name, array in fitted.items() if array is not None}
    options = {name: {**common, "discrete": _discrete(fitted[name], discrete),  # per variable: its dtype decides
                      "gof_precision": float(gof_precision) if wanted and not n_boot else None}
               for name, wanted in judged.items()}
    every_option = {"channels": channels, "fits": options, "verdict": judged}
    key = _fits_cache.fits_key(dataset, fitted, every_option) if mode != "off" else None
    if mode == "store":
        _fits_cache.require_store_cache(dataset, list(options), key)
    cached = _fits_cache.read(dataset, list(options), key, mode)
    if cached is not None:
        return cached
    result = _compute(dataset, fitted, options, alternatives, judged)
    if progress:
        result = _with_progress(result)
    return _fits_cache.write(dataset, key, mode, result) if key else result


def _check_verdict_options(verdict: bool, compare: bool, gof_precision: float) -> None:
    if verdict and not compare:
        raise InputError("verdict=True needs the likelihood-ratio comparisons; drop compare=False (--no_compare) "
                         "or pass verdict=False (--no_verdict)")
    if verdict and not 0 < gof_precision < 0.5:
        raise InputError(f"gof_precision must lie in (0, 0.5), such as 0.01 (2,500 replicates); got {gof_precision!r}")


def _with_progress(result: xr.Dataset) -> xr.Dataset:
    """Computed under one tqdm bar (tasks done, rate, ETA): dask's own ProgressBar has no ETA."""
    from tqdm.dask import TqdmCallback

    with TqdmCallback(desc="fits", unit="task"):
        return result.compute()


def _fitted_arrays(dataset: xr.Dataset, channels: bool) -> dict[str, xr.DataArray | None]:
    """The variables this call fits; None marks a skipped one (it still shapes the cache key)."""
    has_channels = channels and "channel_value" in dataset and dataset.sizes.get("channel", 0) > 0
    return {"value": dataset["value"], "channel_value": dataset["channel_value"] if has_channels else None}


def _discrete(array: xr.DataArray, discrete: bool | None) -> bool:
    """The stored statistics are float reductions: continuous unless the variable is integer-typed."""
    return bool(np.issubdtype(array.dtype, np.integer)) if discrete is None else bool(discrete)


def _compute(dataset: xr.Dataset, fitted: dict[str, xr.DataArray | None], options: dict[str, dict[str, Any]],
             alternatives: tuple[str, ...], judged: dict[str, bool]) -> xr.Dataset:
    variables: dict[str, xr.DataArray] = {}
    for name, array in fitted.items():
        if array is not None:
            bounded = bounded_series(dataset, PREFIXES[name])
            variables.update(_unpack(_fit_array(array, bounded, options[name]), alternatives, PREFIXES[name]))
    result = xr.Dataset(variables, coords=_coords(dataset, alternatives))
    for name in (name for name, wanted in judged.items() if wanted):
        result[f"{PREFIXES[name]}verdict"] = verdicts(result, PREFIXES[name])
    result.attrs.update(_fit_attrs(options))
    for name in [v for v in result.data_vars if v.endswith("status")]:
        result[name].attrs.update(flag_values=list(STATUS.values()), flag_meanings=" ".join(
            s.replace(" ", "_") for s in STATUS))
    return result


def _coords(dataset: xr.Dataset, alternatives: tuple[str, ...]) -> dict[str, Any]:
    coords = {dim: dataset[dim].values for dim in ("model", "layer", "metric") if dim in dataset.coords}
    if alternatives:
        coords["alternative"] = np.array(alternatives, dtype=object)
    if "channel_index" in dataset:
        coords["channel_index"] = dataset["channel_index"].variable.compute()
    return coords


def _fit_attrs(options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"description": "power-law fits (Clauset et al. 2009) of each stats series",
            "fit_options": json.dumps(options, default=str)}
