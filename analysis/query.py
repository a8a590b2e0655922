"""``python -m analysis.query STORE QUERY``: which tokens, channels and text, answered from the store alone.

Queries (each also a Python function returning a pandas DataFrame):
  top        the k tokens with the largest metric at a layer, with their text and context  (top_tokens)
  above      tokens above a threshold and/or a multiple of the median, e.g. massive activations  (tokens_above)
  tokens     count, mean and max of a metric per vocabulary item  (token_stats)
  positions  the same per position in the row, or per kind: first in row, after EOS, other  (position_stats)
  channels   how often each hidden channel holds a token's largest |value|, per layer  (channel_histogram)

    python -m analysis.query stores/activations.zarr top --layer middle --metric linf_norm -k 20
    python -m analysis.query stores/activations.zarr above --threshold 100 --times_median 1000 --median_of mean_abs
    python -m analysis.query s3://bucket/a.zarr tokens --metric kurtosis --format csv --output kurtosis.csv
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from analysis._cli import add_store_arguments, flag, parse_arguments
from analysis._queries import channel_histogram, position_stats, token_stats, tokens_above, top_tokens
from store import InputError, OneLineParser, check_output_path

__all__ = ["channel_histogram", "position_stats", "token_stats", "tokens_above", "top_tokens"]

FORMATS = ("table", "csv", "json", "parquet")
QUERIES = ("top", "above", "tokens", "positions", "channels")
_TEXT_WIDTH = 60  # characters of context shown per row in the printed table (the files keep it whole)


# option -> the queries it applies to; given to another query it is refused, not silently ignored
_APPLIES = {"k": ("top",), "smallest": ("top",), "context": ("top", "above"), "threshold": ("above",),
            "times_median": ("above",), "median_of": ("above",), "limit": ("above", "tokens"), "sort": ("tokens",),
            "by": ("positions",), "top": ("channels",), "metric": ("top", "above", "tokens", "positions")}
_DEFAULTS = {"k": 20, "context": 8, "limit": None, "sort": "count", "by": "position", "top": 10,
             "metric": "linf_norm"}


def _build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m analysis.query", description=__doc__.split("\n\n")[0],
                           epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_store_arguments(parser)
    parser.add_argument("query", nargs="?", default="top", choices=QUERIES, help="which query (default: top)")
    parser.add_argument("--model", action="append", default=None, metavar="LABEL",
                        help="a model label of the store, repeatable (default: every model)")
    parser.add_argument("--layer", default=None,
                        help="layer label (embed, middle, pre_last, layer_N) or decoder-layer number "
                             "(default: middle; channels: every layer)")
    parser.add_argument("--metric", default=None, help="a metric of the store (default: linf_norm)")
    parser.add_argument("-k", "--k", type=int, default=None, help="top: how many tokens (default: 20)")
    parser.add_argument("--smallest", action="store_true", default=None, help="top: the k smallest values instead")
    parser.add_argument("--context", type=int, default=None,
                        help="top, above: tokens of context either side of each hit, within its row (default: 8; 0: none)")
    parser.add_argument("--threshold", type=float, default=None, help="above: keep values above this")
    parser.add_argument(*flag("times", "median"), dest="times_median", type=float, default=None,
                        help="above: keep values above this multiple of the median (Sun et al.: 1000)")
    parser.add_argument(*flag("median", "of"), dest="median_of", default=None,
                        help="above: the metric whose median is meant (default: the metric itself; mean_abs "
                             "approximates the median |activation|)")
    parser.add_argument("--limit", type=int, default=None,
                        help="above: at most this many rows per model (default: 1000); tokens: the same (default: all)")
    parser.add_argument("--sort", choices=("count", "mean", "max"), default=None, help="tokens: order by (default: count)")
    parser.add_argument("--by", choices=("position", "kind"), default=None,
                        help="positions: position in the row (default), or kind: first_in_row, after_eos, other")
    parser.add_argument("--top", type=int, default=None, help="channels: channels per layer (default: 10)")
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="table (printed, default), csv, json (records) or parquet (needs --output)")
    parser.add_argument("--output", default=None, metavar="FILE", help="write the result to FILE instead of printing it")
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = _build_parser()
    options = parse_arguments(parser, argv)
    for name, queries in _APPLIES.items():
        if getattr(options, name) is not None and options.query not in queries:
            spelled = "-k" if name == "k" else f"--{name}"
            parser.error(f"{spelled} applies to the {' and '.join(queries)} quer{'ies' if len(queries) > 1 else 'y'}, "
                         f"not to {options.query!r}; drop it")
        if getattr(options, name) is None:
            setattr(options, name, _DEFAULTS.get(name))
    if options.query == "above" and options.limit is None:
        options.limit = 1000
    if options.query != "channels" and options.layer is None:
        options.layer = "middle"
    problem = _bad_values(options)
    if problem:
        parser.error(problem)
    return options


def _bad_values(options: argparse.Namespace) -> str:
    """What the parser's types cannot see: counts below 1, NaN bounds, a file where no file can go."""
    for name in ("k", "limit", "top"):
        value = getattr(options, name)
        if value is not None and value < 1:
            spelled = "-k" if name == "k" else f"--{name}"
            return f"{spelled} must be at least 1, got {value!r}; pass e.g. {spelled} 20"
    if options.threshold is not None and not math.isfinite(options.threshold):
        return f"--threshold must be a finite number, got {options.threshold!r}; pass e.g. --threshold 100"
    if options.times_median is not None and not (math.isfinite(options.times_median) and options.times_median > 0):
        return f"--times_median must be a positive number, got {options.times_median!r}; pass e.g. --times_median 1000"
    if options.median_of is not None and options.times_median is None:
        return "--median_of needs --times_median (the multiple of that median to exceed); pass both"
    if options.format == "parquet" and options.output is None:
        return "--format parquet writes a file: pass --output FILE.parquet"
    try:
        if options.output is not None:
            check_output_path(options.output, "--output file")
    except InputError as error:
        return str(error)
    return ""


def _run_query(options: argparse.Namespace) -> pd.DataFrame:
    common: dict[str, Any] = {"model": options.model, "storage_options": options.storage_options}
    queries: dict[str, Callable[[], pd.DataFrame]] = {
        "top": lambda: top_tokens(options.store, options.metric, options.layer, options.k, context=options.context,
                                  smallest=bool(options.smallest), **common),
        "above": lambda: tokens_above(options.store, options.metric, options.layer, options.threshold,
                                      options.times_median, options.median_of, limit=options.limit,
                                      context=options.context, **common),
        "tokens": lambda: _limited(token_stats(options.store, options.metric, options.layer, sort=options.sort,
                                               **common), options.limit),
        "positions": lambda: position_stats(options.store, options.metric, options.layer, by=options.by, **common),
        "channels": lambda: channel_histogram(options.store, options.layer, top=options.top, **common),
    }
    return queries[options.query]()


def _limited(frame: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    if limit is None:
        return frame
    return frame.groupby("model", sort=False).head(limit).reset_index(drop=True)


def printable(frame: pd.DataFrame) -> str:
    """The table for a terminal: text with its newlines and tabs shown as \\n and \\t, long text cut."""
    shown = frame.copy()
    for column in ("text", "context", "token"):
        if column in shown:
            shown[column] = [_escaped(str(value)) for value in shown[column]]
    return shown.to_string(index=False) if len(shown) else "(no rows)"


def _escaped(text: str) -> str:
    text = text.encode("unicode_escape").decode("ascii") if any(ch in text for ch in "\n\t\r") else text
    return text if len(text) <= _TEXT_WIDTH else text[: _TEXT_WIDTH - 1] + "…"


_RENDERED: dict[str, Callable[[pd.DataFrame], str]] = {
    "table": lambda frame: printable(frame) + "\n",
    "csv": lambda frame: frame.to_csv(index=False),
    "json": lambda frame: frame.to_json(orient="records", indent=1, force_ascii=False),
}


def write(frame: pd.DataFrame, output_format: str, output: str | None) -> str | None:
    """Write ``frame`` to ``output`` (checked by the parser) in ``output_format``; without a file,
    return the text to print (parquet always needs a file)."""
    if output is None:
        return _RENDERED[output_format](frame)
    path = Path(output).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    if output_format == "parquet":
        frame.to_parquet(path, index=False)
    else:
        path.write_text(_RENDERED[output_format](frame), encoding="utf-8")
    return None


def _one_line_warning(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    options = _parse(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning  # a store without a vocabulary: one line, not two
            frame = _run_query(options)
        text = write(frame, options.format, options.output)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if text is not None:
        print(text.rstrip("\n"))
    else:
        print(f"{len(frame):,} rows written to {options.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
