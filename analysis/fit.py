"""``python -m analysis.fit STORE_OR_NAME``: fit every series, print a table, cache the fits.

This module is also what ``analysis.fit`` names once it is imported: calling it
(``analysis.fit(ds)``) calls :func:`analysis._dataset_fit.fit`, so the function
and the command share one name whichever was imported first.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import types
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from analysis._cli import (
    add_cache_arguments,
    add_store_arguments,
    flag,
    open_from_arguments,
    parse_arguments,
)
from analysis._dataset_fit import fit as fit_dataset
from analysis._fits_cache import HIT_KEY, WHERE_KEY
from analysis._verdict import BOUNDED_METRICS, CUT_OFF, MIN_TAIL, THRESHOLD, flag_labels
from store import InputError, OneLineParser

STATUS_WORDS = {0: "ok", 1: "constant", 2: "<3 distinct", 3: "no valid xmin"}
SHORT = {"lognormal": "LN", "exponential": "EXP", "truncated_power_law": "TPL", "stretched_exponential": "SE"}
LEGEND = ("alpha ± sigma: exponent of the power-law tail x >= xmin (n_tail values; sigma its standard error); "
          "ks_d: KS distance of the fit; gof_p: bootstrap goodness-of-fit p (> 0.1: a power law is plausible); "
          "LN, EXP, TPL, SE: likelihood ratio R (p) against the lognormal, exponential, truncated power law and "
          "stretched exponential (R > 0 favours the power law; p <= 0.1 makes the sign significant); slope: "
          "log-log rank-frequency OLS; verdict: support for the power law in Clauset et al. (2009) Table 6.2's "
          "terms (docs/analysis.md); status: ok, or why the fit failed.")
POWER_LAW_LIKE = ("good", "moderate", "with cut-off")


def _words(codes: xr.DataArray) -> np.ndarray:
    meanings = flag_labels(codes)
    return np.vectorize(lambda code: meanings[int(code)].replace("_", " "), otypes=[object])(codes.values)


def fit_frame(fits: xr.Dataset) -> pd.DataFrame:
    """One row per (model, layer, metric): the fit's numbers, status and verdict in words."""
    columns = [name for name in ("alpha", "sigma", "xmin", "n_tail", "ks_d", "gof_p", "gof_n", "slope", "r2")
               if name in fits]
    frame = fits[columns].to_dataframe()[columns]
    frame["status"] = [STATUS_WORDS.get(int(code), "failed") for code in fits.status.values.ravel()]
    if "R" in fits:
        for alternative in fits.alternative.values:
            frame[f"R_{alternative}"] = fits.R.sel(alternative=alternative).values.ravel()
            frame[f"p_{alternative}"] = fits.p.sel(alternative=alternative).values.ravel()
    if "verdict" in fits:
        frame["verdict"] = _words(fits.verdict).ravel()
    return frame.reset_index()


def _test_cell(R: float, p: float) -> str:
    return "" if np.isnan(R) else f"{R:+.2f} ({p:.2f})"


def _row(row: pd.Series, alternatives: list[str]) -> str:
    tests = " ".join(f"{_test_cell(row[f'R_{name}'], row[f'p_{name}']):>13}" for name in alternatives)
    return (f"{str(row.model)[:24]:<24} {row.layer!s:<9} {row.metric!s:<19} {row.status:<13} {row.alpha:8.3f} "
            f"{row.sigma:6.3f} {row.xmin:10.4g} {int(np.nan_to_num(row.n_tail)):7d} {row.ks_d:6.3f} "
            f"{row.get('gof_p', np.nan):6.2f} {tests} {row.slope:7.3f}  {row.get('verdict', '')}")


def table(fits: xr.Dataset) -> str:
    """The legend, one line per (model, layer, metric), and notes for what needs one."""
    frame = fit_frame(fits)
    alternatives = [str(name) for name in fits.alternative.values] if "R" in fits else []
    tests = " ".join(f"{SHORT.get(name, name):>13}" for name in alternatives)
    header = (f"{'model':<24} {'layer':<9} {'metric':<19} {'status':<13} {'alpha':>8} {'±':>6} {'xmin':>10} "
              f"{'n_tail':>7} {'ks_d':>6} {'gof_p':>6} {tests} {'slope':>7}  verdict")
    lines = [textwrap.fill(LEGEND, width=110), "", header, "-" * len(header)]
    lines += [_row(row, alternatives) for _, row in frame.iterrows()]
    return "\n".join(lines + _notes(frame))


def _notes(frame: pd.DataFrame) -> list[str]:
    notes = []
    if "verdict" in frame and (frame.verdict == "bounded metric").any():
        bounded = ", ".join(f"{name} {limit}" for name, limit in BOUNDED_METRICS.items())
        notes.append(f"bounded metric: its maximum is fixed by the hidden size d ({bounded}); the tail fitted is "
                     "the approach to that ceiling, so its alpha is no heavy-tail result")
    if (frame.status != "ok").any():
        notes.append("status other than ok: the series has no fit (constant; fewer than 3 distinct positive "
                     "values; or no xmin candidate gives a valid alpha, e.g. outside --alpha_range): NaN numbers")
    if "verdict" in frame and (frame.verdict == "too few tail points").any():
        notes.append(f"too few tail points: n_tail < {MIN_TAIL}, too few to tell the laws apart")
    return ["", *(f"note: {note}" for note in notes)] if notes else []


def channel_summary(fits: xr.Dataset, top: int = 5) -> str:
    """Per (model, layer): how many of the k channels are power-law-like, and the top channels by alpha."""
    if "channel_alpha" not in fits:
        return ""
    lines = [("channels: power-law-like = verdict good, moderate or with cut-off; without channel verdicts "
              "(--channel_verdicts), fitted and no lognormal, exponential or stretched exponential significantly "
              "likelier (R < 0, p <= 0.1). Top channels by alpha, as hidden-channel index: alpha")]
    for model in fits.model.values:
        for layer in fits.layer.values:
            cell = fits.sel(model=model, layer=layer)
            lines.append(f"  {str(model)[:24]:<24} {layer!s:<9} {_plausible(cell)}/{cell.sizes['channel']} "
                         f"power-law-like; top: {_top_channels(cell, top)}")
    return "\n".join(lines)


def _plausible(cell: xr.Dataset) -> int:
    if "channel_verdict" in cell:
        return int(np.isin(_words(cell.channel_verdict), POWER_LAW_LIKE).sum())
    fitted = cell.channel_status == 0
    if "channel_R" not in cell:
        return int(fitted.sum())
    others = [name for name in cell.alternative.values if name != CUT_OFF]
    beaten = ((cell.channel_R.sel(alternative=others) < 0) & (cell.channel_p.sel(alternative=others) <= THRESHOLD))
    return int((fitted & ~beaten.any("alternative")).sum())


def _top_channels(cell: xr.Dataset, top: int) -> str:
    alpha = cell.channel_alpha.values
    order = [i for i in np.argsort(-np.nan_to_num(alpha, nan=-np.inf)) if np.isfinite(alpha[i])][:top]
    index = cell.channel_index.values if "channel_index" in cell.coords else np.arange(alpha.size)
    return ", ".join(f"{int(index[i])}: {alpha[i]:.2f}" for i in order) or "none fitted"


# dask's named schedulers but "distributed", which needs a client this command does not start
SCHEDULERS = ("threads", "threading", "processes", "multiprocessing", "synchronous", "sync", "single-threaded")


def _range(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    try:
        bounds = float(low), float(high)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH such as 0,3, got {text!r}") from error
    if not all(np.isfinite(bounds)) or bounds[0] >= bounds[1]:  # an empty range would fit nothing, silently
        raise argparse.ArgumentTypeError(f"expected finite LOW < HIGH such as 0,3, got {text!r}")
    return bounds


def _count(text: str) -> int:
    try:
        count = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a whole number such as 100, got {text!r}") from error
    if count < 0:
        raise argparse.ArgumentTypeError(f"expected 0 (skip) or a positive number, got {text!r}")
    return count


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m analysis.fit", description=__doc__.split("\n\n")[0])
    add_store_arguments(parser)
    parser.add_argument(*flag("alpha", "range"), dest="alpha_range", type=_range, default=None,
                        metavar="LOW,HIGH",
                        help="LOW,HIGH: restrict alpha as powerlaw.Fit does (0,3 reproduces its default)")
    parser.add_argument(*flag("n", "boot"), dest="n_boot", type=_count, default=0,
                        help="bootstrap goodness-of-fit samples (0: skip)")
    parser.add_argument("--transform", choices=("abs", "positive", "negative"), default="abs",
                        help="fit |value| (default), or the positive / negative side")
    parser.add_argument(*flag("no", "compare"), dest="no_compare", action="store_true",
                        help="skip the likelihood-ratio comparisons (and so the verdict)")
    parser.add_argument(*flag("no", "verdict"), dest="no_verdict", action="store_true",
                        help="skip the goodness-of-fit p-values and verdicts (the slow part: minutes on large stores)")
    parser.add_argument(*flag("channel", "verdicts"), dest="channel_verdicts", action="store_true",
                        help="verdicts for the channel series too (their bootstraps can take many times the "
                             "metric series' time)")
    parser.add_argument(*flag("gof", "precision"), dest="gof_precision", type=_precision, default=0.01,
                        metavar="EPS",
                        help="precision of the goodness-of-fit p-values: 1/(4 EPS^2) replicates at most (0.01: "
                             "2,500, as Clauset et al.), fewer where p is clearly above or below 0.1")
    parser.add_argument(*flag("no", "channels"), dest="no_channels", action="store_true",
                        help="skip the per-channel fits")
    add_cache_arguments(parser)
    parser.add_argument("--scheduler", choices=SCHEDULERS, default="processes",
                        help="dask scheduler: processes (default: one fit per core; much of a fit holds "
                             "Python's GIL, so threads reach about one core), threads or synchronous (or their "
                             "dask aliases)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                        help="table (default: legend, one line per series, channel summary), or the per-series "
                             "numbers as csv or json (one record per series) on standard output")
    return parse_arguments(parser, argv)


def _precision(text: str) -> float:
    try:
        precision = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a precision such as 0.01, got {text!r}") from error
    if not 0 < precision < 0.5:
        raise argparse.ArgumentTypeError(f"expected a precision in (0, 0.5) such as 0.01, got {text!r}")
    return precision


def main(argv: list[str] | None = None) -> int:
    import dask

    options = parse(argv)
    try:
        dataset = open_from_arguments(options)
        with dask.config.set(scheduler=options.scheduler):
            fits = fit_dataset(dataset, alpha_range=options.alpha_range, compare=not options.no_compare,
                               n_boot=options.n_boot, transform=options.transform,
                               channels=not options.no_channels, cache=options.cache,
                               verdict=not (options.no_verdict or options.no_compare),
                               channel_verdict=options.channel_verdicts and not options.no_compare,
                               gof_precision=options.gof_precision, progress=True)
            cache = dict(fits.encoding)
            fits = fits.compute()  # a cache hit is read lazily
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _print(fits, options.format, cache)
    return 0


def _print(fits: xr.Dataset, fmt: str, cache: dict[str, Any]) -> None:
    if fmt != "table":
        frame = fit_frame(fits)
        print(frame.to_csv(index=False) if fmt == "csv" else frame.to_json(orient="records", indent=1))
        return
    print(table(fits))
    summary = channel_summary(fits)
    print(f"\n{summary}" if summary else "")
    where = cache.get(WHERE_KEY)
    if cache.get(HIT_KEY):
        print(f"fits read from the cache ({where}): nothing recomputed", file=sys.stderr)
    elif where:
        print(f"fits written to the cache: {where}", file=sys.stderr)


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> xr.Dataset:
        return fit_dataset(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
