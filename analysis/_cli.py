"""What the analysis commands share: the store argument and opening it."""

from __future__ import annotations

import argparse

import xarray as xr

from analysis._open import open_store


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", help="a catalog.yaml name, a local store path or an s3:// URL")
    parser.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                        help="fsspec option for the store, e.g. endpoint_url=http://127.0.0.1:9000")


def open_from_arguments(options: argparse.Namespace) -> xr.Dataset:
    """The store named on the command line; raises the store's InputError if it cannot be opened."""
    storage = dict(item.split("=", 1) for item in options.storage_option)
    return open_store(options.store, storage_options=storage)
