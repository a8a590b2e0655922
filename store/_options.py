"""What every command line shares: one-line errors, and ``KEY=VALUE`` storage options typed one way.

Values are YAML scalars, as in a ``--config`` file: ``anon=false`` is the boolean False
(a plain string "false" would be truthy and silently make S3 access anonymous),
``retries=3`` an int, ``config_kwargs={connect_timeout: 3}`` a mapping, and an empty
value the empty string.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import yaml

from store.errors import ConfigError, first_line

_FIX = "write each storage option as KEY=VALUE, e.g. --storage_options anon=false"


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments end in one ``error: ...`` line and exit code 2, in every entry point."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {one_line(message)}; see --help", file=sys.stderr)
        raise SystemExit(2)


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped as ``repr`` writes them.

    argparse quotes some arguments raw ("unrecognized arguments: --\\r"), which would split the line.
    """
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def check_path_text(text: str, what: str) -> None:
    """Refuse a local path no file system call can take, naming ``what``, before pathlib raises far away.

    That is a NUL byte or an unencodable character (ValueError), a name over the file
    system's limit (ENAMETOOLONG), or ``~user`` of an unknown user (RuntimeError from
    ``Path.expanduser``). URLs are left to their file system.
    """
    if "://" in text:
        return
    expanded = os.path.expanduser(text)
    if text.startswith("~") and expanded == text:  # unchanged: no such user (or no home folder)
        raise ConfigError(f"{what} {text!r} starts with the home folder of an unknown user; write the path out")
    _check_stat(expanded, text, what)


def _check_stat(path: str, text: str, what: str) -> None:
    try:
        os.stat(path)
    except ValueError as error:
        raise ConfigError(f"{what} {text!r} is not a usable path ({first_line(error)}); pass a plain path") from error
    except OSError as error:  # a missing path is fine here: the caller decides whether it must exist
        if error.errno == errno.ENAMETOOLONG:
            raise ConfigError(f"{what} {text[:60]!r}... is too long a path for the file system; "
                              "pass a shorter one") from error


def parse_storage_option(item: Any) -> tuple[str, Any]:
    """One ``KEY=VALUE`` item as (key, typed value); raises ConfigError naming the item."""
    # a YAML list of storage options may hold numbers or mappings: those are not KEY=VALUE either
    key, separator, text = item.partition("=") if isinstance(item, str) else ("", "", "")
    if not separator or not key.strip():
        raise ConfigError(f"storage option {item!r} is not KEY=VALUE; {_FIX}")
    try:
        value = yaml.safe_load(text) if text else ""
    except (yaml.YAMLError, RecursionError) as error:  # RecursionError: brackets nested hundreds deep
        raise ConfigError(
            f"storage option {item!r}: its value is not valid YAML ({first_line(error)}); {_FIX}"
        ) from error
    return key.strip(), value


def parse_storage_options(items: Iterable[str]) -> dict[str, Any]:
    """``["anon=false", "endpoint_url=http://…"]`` as ``{"anon": False, "endpoint_url": "http://…"}``."""
    return dict(parse_storage_option(item) for item in items)


def check_output_path(text: str, what: str, folder: bool = False) -> Path:
    """An output file (or folder) that can be created: refused now, before any work, if it cannot."""
    check_path_text(text, what)  # first: expanduser raises RuntimeError on ~ of an unknown user
    if "://" in text:  # Path() would make a local folder named "s3:" of it
        raise ConfigError(f"{what} {text!r} is a URL; write to a local path (copy it to object storage afterwards)")
    path = Path(text).expanduser()
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    if existing == path and path.is_dir() != folder:
        raise ConfigError(f"{what} {text!r} is {'a file' if folder else 'a folder'}; pass a "
                          f"{'folder' if folder else 'file'} path")
    if existing != path and not existing.is_dir():
        raise ConfigError(f"{what} {text!r} cannot be created: {str(existing)!r} is a file; choose another path")
    if not os.access(existing, os.W_OK):
        raise ConfigError(f"{what} {text!r} cannot be written ({str(existing)!r} is not writable); choose another path")
    return path
