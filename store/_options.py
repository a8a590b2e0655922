"""What every command line shares: one-line errors, and ``KEY=VALUE`` storage options typed one way.

Values are YAML scalars, as in a ``--config`` file: ``anon=false`` is the boolean False
(a plain string "false" would be truthy and silently make S3 access anonymous),
``retries=3`` an int, ``config_kwargs={connect_timeout: 3}`` a mapping, and an empty
value the empty string.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import Any, NoReturn

import yaml

from store.errors import ConfigError, first_line

_FIX = "write each storage option as KEY=VALUE, e.g. --storage_options anon=false"


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments end in one ``error: ...`` line and exit code 2, in every entry point."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}; see --help", file=sys.stderr)
        raise SystemExit(2)


def parse_storage_option(item: str) -> tuple[str, Any]:
    """One ``KEY=VALUE`` item as (key, typed value); raises ConfigError naming the item."""
    key, separator, text = item.partition("=")
    if not separator or not key.strip():
        raise ConfigError(f"storage option {item!r} is not KEY=VALUE; {_FIX}")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"storage option {item!r}: its value is not valid YAML ({first_line(error)}); {_FIX}") from error
    return key.strip(), value


def parse_storage_options(items: Iterable[str]) -> dict[str, Any]:
    """``["anon=false", "endpoint_url=http://…"]`` as ``{"anon": False, "endpoint_url": "http://…"}``."""
    return dict(parse_storage_option(item) for item in items)
