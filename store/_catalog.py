"""The catalog: short names for stores (``catalog.yaml``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from store._location import StoreLocation, _is_remote, local_path_of
from store._options import check_path_text
from store.errors import CatalogError, first_line

CATALOG_ENV = "ACTIVATION_CATALOG"
_REPO_CATALOG = Path(__file__).resolve().parent.parent / "catalog.yaml"


def default_catalog_path() -> Path:
    """``$ACTIVATION_CATALOG``, else ``./catalog.yaml``, else the repository's own."""
    if os.environ.get(CATALOG_ENV):
        return Path(os.environ[CATALOG_ENV])
    local = Path.cwd() / "catalog.yaml"
    return local if local.exists() else _REPO_CATALOG


def load_catalog(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Entries by name, each with ``url``, ``storage_options`` and ``description``."""
    catalog_path = Path(path) if path is not None else default_catalog_path()
    check_path_text(str(catalog_path), "catalog")
    if not catalog_path.exists():
        return {}
    document = _read(catalog_path)
    stores = document.get("stores", {}) if isinstance(document, dict) else None
    if not isinstance(stores, dict):
        raise CatalogError(
            f"catalog {str(catalog_path)!r} has no 'stores:' mapping; see catalog.yaml in the repository"
        )
    return {name: _entry(name, entry, catalog_path.parent) for name, entry in stores.items()}


def _read(catalog_path: Path) -> Any:
    """The catalog's YAML document ({} when empty); anything unreadable is a CatalogError naming the file."""
    try:
        with open(catalog_path, encoding="utf-8") as file:
            return yaml.safe_load(file) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as error:  # Recursion: deep nesting
        raise CatalogError(
            f"cannot read catalog {str(catalog_path)!r} ({first_line(error)}); fix it, or point "
            f"${CATALOG_ENV} at a YAML file with a 'stores:' mapping"
        ) from error


def _entry(name: str, entry: Any, base: Path) -> dict[str, Any]:
    if not isinstance(entry, dict) or not isinstance(entry.get("url"), str) or not entry["url"].strip():
        raise CatalogError(f"catalog entry {name!r} needs a 'url:' field holding a path or URL")
    if not isinstance(entry.get("storage_options") or {}, dict):
        raise CatalogError(f"catalog entry {name!r}: 'storage_options:' must be a mapping of fsspec options")
    url = entry["url"]
    check_path_text(url, f"catalog entry {name!r} url")
    if not _is_remote(url) and not url.startswith("file://") and not Path(url).expanduser().is_absolute():
        url = str((base / url).resolve())
    return {
        "url": url,
        "storage_options": dict(entry.get("storage_options") or {}),
        "description": str(entry.get("description", "")),
    }


def resolve_location(
    name_or_url: str,
    storage_options: dict[str, Any] | None = None,
    catalog: str | Path | None = None,
) -> StoreLocation:
    """A catalog name, a local path or a URL, as a :class:`StoreLocation`."""
    entries = load_catalog(catalog)
    check_path_text(name_or_url, "store")
    if name_or_url in entries:
        entry = entries[name_or_url]
        options = {**entry["storage_options"], **(storage_options or {})}
        return StoreLocation(entry["url"], options)
    if not _is_remote(name_or_url) and not local_path_of(name_or_url).exists():
        known = ", ".join(sorted(entries)) or "none"
        raise CatalogError(
            f"{name_or_url!r} is neither a catalog name (known: {known}) nor an existing store path; "
            "pass a path, an s3:// URL, or add it to catalog.yaml"
        )
    return StoreLocation(name_or_url, storage_options or {})
