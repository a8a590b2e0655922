"""Timing one step inside a build without changing it: a wrapper around a module attribute."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any
from unittest import mock


@contextlib.contextmanager
def timing_calls(module: ModuleType, name: str, spent: list[float]) -> Iterator[None]:
    """Append to ``spent`` the seconds of each call of ``module.name`` made inside the block.

    The builders call the store's session openers through their own module namespace, so
    patching it there times exactly the calls a build makes (store creation, kept out of or
    reported beside a throughput figure).
    """
    original = getattr(module, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - started)

    with mock.patch.object(module, name, timed):
        yield
