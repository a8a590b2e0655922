"""The verdict per series, in the terms of Clauset, Shalizi & Newman (2009), Table 6.2.

Their last column judges the support for the power law: "none" (probably not power-law
distributed), "moderate" (a good fit, but other alternatives are plausible too), "good" (a good
fit and none of the alternatives plausible), "with cut-off" (the power law with exponential
cut-off clearly favoured). The paper states the categories, not a procedure; this rule, applied in
this order, gives their column for all 24 rows of Table 6.2 from the paper's own p-values and
likelihood ratios (tests/analysis/test_verdict.py):

1. ``not assessed``: the fit failed.
2. ``bounded metric``: the metric has a maximum fixed by the hidden size d (entropy <= log d,
   gini and hoyer <= 1, participation_ratio and effective_channels <= d): its tail is the approach
   to that ceiling, not a heavy tail, and its alpha is no result (``fit`` skips its bootstrap).
   Then ``not assessed`` again where no goodness-of-fit p-value was computed.
3. ``too few tail points``: n_tail < 30. Below that the tests have almost no power (Clauset et al.
   discuss n of about 50 and under); 30 keeps every row of Table 6.2 assessed, the smallest tail
   there being religions' 39.
4. ``with cut-off``: the truncated power law is favoured (raw R < 0) at p <= 0.1, whatever the
   goodness of fit (quakes and web hits: p = 0, "with cut-off").
5. ``none``: goodness-of-fit p < 0.1.
6. ``good``: every non-nested alternative has R > 0 (the power law is the likelier, significantly
   or not: words' lognormal R = 0.395, p = 0.69, is "good").
7. ``moderate``: otherwise (some alternative is at least as likely: every "moderate" row of the
   table has a negative lognormal R).
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike

from analysis._bootstrap import THRESHOLD
from analysis._powerlaw import PowerLawFit

VERDICTS = ("not assessed", "good", "moderate", "with cut-off", "none", "too few tail points", "bounded metric")
CODES = {name: code for code, name in enumerate(VERDICTS)}
# maxima fixed by the hidden size d (builders/_metrics.py's definitions)
BOUNDED_METRICS = {"entropy": "<= log d", "gini": "<= 1", "hoyer": "<= 1", "participation_ratio": "<= d",
                   "effective_channels": "<= d"}
MIN_TAIL = 30
CUT_OFF = "truncated_power_law"


def flag_labels(flags: xr.DataArray) -> dict[int, str]:
    """Code -> meaning of a CF flag variable (``flag_values`` and space-separated ``flag_meanings``)."""
    codes = np.atleast_1d(flags.attrs.get("flag_values", [])).astype(int).tolist()
    meanings = str(flags.attrs.get("flag_meanings", "")).split()
    if len(codes) != len(meanings):
        raise ValueError(f"{flags.name}: {len(codes)} flag_values but {len(meanings)} flag_meanings")
    return dict(zip(codes, meanings))


def verdict_attrs() -> dict[str, object]:
    """CF flag attributes, so that a reader without this package decodes the codes."""
    return {"flag_values": list(CODES.values()), "flag_meanings": " ".join(v.replace(" ", "_") for v in VERDICTS),
            "rule": " ".join(__doc__.split("\n\n")[1:3]).replace("\n", " ")}


def rule(failed: ArrayLike, bounded: ArrayLike, n_tail: ArrayLike, cut_off_R: ArrayLike, cut_off_p: ArrayLike,
         gof_p: ArrayLike, likelier: ArrayLike) -> ArrayLike:
    """Codes into ``VERDICTS`` from the numbers (NumPy or dask arrays, or scalars): the module's rule."""
    rules = [  # first match wins
        (failed, "not assessed"),
        (bounded, "bounded metric"),
        (np.isnan(gof_p), "not assessed"),
        (np.less(n_tail, MIN_TAIL), "too few tail points"),
        (np.less(cut_off_R, 0) & np.less_equal(cut_off_p, THRESHOLD), "with cut-off"),
        (np.less(gof_p, THRESHOLD), "none"),
        (likelier, "good"),
    ]
    code: ArrayLike = np.int8(CODES["moderate"])
    for condition, name in reversed(rules):
        code = np.where(condition, np.int8(CODES[name]), code)
    return code


def verdict_of(fit: PowerLawFit, metric: str | None = None) -> str:
    """The verdict of one ``fit_power_law`` result (with comparisons and a goodness-of-fit p)."""
    comparisons = fit.comparisons
    if fit.status != "ok" or CUT_OFF not in comparisons:
        return "not assessed"
    likelier = all(c.R > 0 for name, c in comparisons.items() if name != CUT_OFF)
    cut_off = comparisons[CUT_OFF]
    code = rule(False, metric in BOUNDED_METRICS, fit.n_tail, cut_off.R, cut_off.p, fit.gof_p, likelier)
    return VERDICTS[int(code)]


def bounded_series(fits: xr.Dataset, prefix: str = "") -> xr.DataArray:
    """True for the series of a bounded metric (over ``metric``; a 0-d False for channel series)."""
    if prefix or "metric" not in fits.coords:  # channel series are raw activations: not bounded
        return xr.DataArray(False)
    return xr.DataArray([str(name) in BOUNDED_METRICS for name in fits.metric.values], dims="metric",
                        coords={"metric": fits.metric})


def verdicts(fits: xr.Dataset, prefix: str = "") -> xr.DataArray:
    """int8 codes into ``VERDICTS`` for each series of ``fits`` (``prefix`` "channel_" for channels)."""
    R, p, gof = fits[f"{prefix}R"], fits[f"{prefix}p"], fits[f"{prefix}gof_p"]
    others = [name for name in R.alternative.values if name != CUT_OFF]
    failed = fits[f"{prefix}status"] != 0
    likelier = (R.sel(alternative=others) > 0).all("alternative")
    parts = xr.broadcast(failed, bounded_series(fits, prefix), fits[f"{prefix}n_tail"], R.sel(alternative=CUT_OFF, drop=True),
                         p.sel(alternative=CUT_OFF, drop=True), gof, likelier)
    code = rule(*(part.data for part in parts))
    return xr.DataArray(code, dims=parts[0].dims, coords=parts[0].coords).astype(np.int8).assign_attrs(verdict_attrs())
