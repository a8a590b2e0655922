"""Where this project keeps its caches on the user's machine (model conversions, analysis results)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "ACTIVATION_CACHE"


def cache_root() -> Path:
    """``$ACTIVATION_CACHE``, else ``$XDG_CACHE_HOME/activation-datasets`` (``~/.cache`` by default)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "activation-datasets"
