"""``python -m analysis.plot STORE_OR_NAME --format png --out DIR``: every diagnostic plot of a store.

Per (model, layer, metric) a fitted rank-frequency and an annotated CCDF, per metric the layers
overlaid, the alpha / slope / channel / verdict dashboards and the HTML dashboard, laid out as
ZipfActivation's ``plots/`` (``rank_frequency/``, ``ccdf/``, ``multi_layer/``); ``--channels`` adds
both curves per sampled channel. Fits come from ``analysis.fit`` with its defaults (and its cache).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import xarray as xr

from analysis import plots
from analysis._cli import (
    add_cache_arguments,
    add_store_arguments,
    flag,
    open_from_arguments,
    parse_arguments,
)
from analysis._dataset_fit import fit
from store import InputError, OneLineParser, check_output_path


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m analysis.plot", description=__doc__.split("\n\n")[0])
    add_store_arguments(parser)
    parser.add_argument("--format", choices=sorted(plots.FORMATS), default="png", help="static file format")
    parser.add_argument("--out", type=Path, default=Path("plots"), help="output folder")
    parser.add_argument(*flag("no", "html"), dest="no_html", action="store_true",
                        help="skip the interactive HTML dashboard")
    parser.add_argument("--channels", action="store_true",
                        help="also a rank-frequency and a CCDF per (layer, sampled channel), under channels/")
    parser.add_argument("--workers", type=_workers, default=0,
                        help="processes drawing the figures (default 0: one per CPU core)")
    add_cache_arguments(parser)
    return parse_arguments(parser, argv)


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    try:
        check_out_folder(options.out)
        dataset = open_from_arguments(options)
        written = _plot_all(dataset, options)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {options.out}")
    return 0


def check_out_folder(out: Path) -> None:
    """Refuse an ``--out`` that cannot become a folder before any fit runs, not after minutes of work."""
    check_output_path(str(out), "--out", folder=True)


def _workers(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (one per core) or a number of processes, got {text!r}")
    return count


def _plot_all(dataset: xr.Dataset, options: argparse.Namespace) -> list[Path]:
    # python -m analysis.fit's defaults (verdicts for the metric series): one cache entry for both commands
    fits = fit(dataset, cache=options.cache, verdict=True, channel_verdict=False, progress=True).compute()
    written = plots.all_static(dataset.load(), fits, options.out, options.format, channels=options.channels,
                               workers=options.workers or None, progress=True)
    if not options.no_html:
        written.append(plots.html_dashboard(dataset, fits, options.out / "dashboard.html"))
    return written


if __name__ == "__main__":
    sys.exit(main())
