"""What the analysis commands share: the store and cache arguments, opening the store.

Flags follow the house convention, the builders' too: underscored spellings (``--storage_options``),
with the hyphenated ones accepted as aliases (``--storage-options``). The singular
``--storage-option`` / ``--storage_option`` these commands once documented still work, with a
deprecation note on standard error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import xarray as xr

from analysis._open import open_store
from store import InputError, parse_storage_options

DEPRECATED = ("--storage_option", "--storage-option")


class _StorageOption(argparse._AppendAction):
    """Appends like ``action="append"``; the deprecated singular spellings also print a note, once each."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        noted: set[str] = self.__dict__.setdefault("noted", set())  # per parser: once per spelling and command
        if option_string in DEPRECATED and option_string not in noted:
            print(f"note: {option_string} is deprecated; use --storage_options (the spelling every command "
                  "shares), same meaning", file=sys.stderr)
            noted.add(option_string)
        super().__call__(parser, namespace, values, option_string)


def flag(*words: str) -> list[str]:
    """``--alpha_range`` and its alias ``--alpha-range`` for the words ``alpha``, ``range``."""
    return [f"--{'_'.join(words)}", f"--{'-'.join(words)}"] if len(words) > 1 else [f"--{words[0]}"]


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="a catalog.yaml name, a local store path or an s3:// URL")
    parser.add_argument(*flag("storage", "options"), *DEPRECATED, dest="storage_options", action=_StorageOption,
                        default=[], metavar="KEY=VALUE",
                        help="fsspec option for the store, repeatable; values are YAML scalars "
                             "(anon=false is a boolean), e.g. endpoint_url=http://127.0.0.1:9000")


def add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", choices=("local", "store", "off"), default="local",
                        help="where fits are cached: local (default: $ACTIVATION_CACHE/fits, else "
                             "~/.cache/activation-datasets/fits; never writes the store), store (the store's "
                             "'fits' group; needs write access), off")
    parser.add_argument(*flag("no", "cache"), dest="cache", action="store_const", const="off",
                        help="same as --cache off")


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, then type the storage options with the parser every entry point shares."""
    namespace = parser.parse_args(argv)
    try:
        namespace.storage_options = parse_storage_options(namespace.storage_options)
    except InputError as error:
        parser.error(str(error))
    return namespace


def open_from_arguments(options: argparse.Namespace) -> xr.Dataset:
    """The store named on the command line; raises the store's InputError if it cannot be opened."""
    storage: dict[str, Any] = options.storage_options
    return open_store(options.store, storage_options=storage)
