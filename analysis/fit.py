"""``python -m analysis.fit STORE_OR_NAME``: fit every series, print a table, cache the fits.

This module is also what ``analysis.fit`` names once it is imported: calling it
(``analysis.fit(ds)``) calls :func:`analysis._dataset_fit.fit`, so the function
and the command share one name whichever was imported first.
"""

from __future__ import annotations

import argparse
import sys
import types
from typing import Any

import numpy as np
import xarray as xr

from analysis._cli import (
    add_cache_arguments,
    add_store_arguments,
    flag,
    open_from_arguments,
    parse_arguments,
)
from analysis._dataset_fit import fit as fit_dataset
from analysis._fits_cache import WHERE_KEY
from store import InputError, OneLineParser


def table(fits: xr.Dataset) -> str:
    """One line per (model, layer, metric): the numbers a researcher scans first."""
    header = f"{'model':<24} {'layer':<9} {'metric':<20} {'alpha':>7} {'xmin':>10} {'n_tail':>7} {'ks_d':>6} {'slope':>7} {'R_ln':>6}"
    lines = [header, "-" * len(header)]
    for model in fits.model.values:
        for layer in fits.layer.values:
            for metric in fits.metric.values:
                cell = fits.sel(model=model, layer=layer, metric=metric)
                r_lognormal = float(cell.R.sel(alternative="lognormal")) if "R" in cell else np.nan
                lines.append(
                    f"{str(model)[:24]:<24} {layer!s:<9} {metric!s:<20} {float(cell.alpha):7.3f} "
                    f"{float(cell.xmin):10.4g} {int(np.nan_to_num(cell.n_tail)):7d} {float(cell.ks_d):6.3f} "
                    f"{float(cell.slope):7.3f} {r_lognormal:6.2f}"
                )
    return "\n".join(lines)


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
                        help="skip the likelihood-ratio comparisons")
    parser.add_argument(*flag("no", "channels"), dest="no_channels", action="store_true",
                        help="skip the per-channel fits")
    add_cache_arguments(parser)
    parser.add_argument("--scheduler", choices=SCHEDULERS, default="threads",
                        help="dask scheduler: threads, processes or synchronous (or their dask aliases)")
    return parse_arguments(parser, argv)


def main(argv: list[str] | None = None) -> int:
    import dask
    from dask.diagnostics import ProgressBar

    options = parse(argv)
    try:
        dataset = open_from_arguments(options)
        with dask.config.set(scheduler=options.scheduler), ProgressBar():
            fits = fit_dataset(dataset, alpha_range=options.alpha_range, compare=not options.no_compare,
                               n_boot=options.n_boot, transform=options.transform,
                               channels=not options.no_channels, cache=options.cache)
            where = fits.encoding.get(WHERE_KEY)
            fits = fits.compute()
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table(fits))
    if where:
        print(f"\nfits cached in {where}")
    return 0


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> xr.Dataset:
        return fit_dataset(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
