"""The fits cache: the key that makes a hit the same computation on the same data, and where entries live.

The key covers the store's identity and committed state, the dask names of the arrays
actually fitted (so the exact selection and any transformation: see analysis/_snapshot.py),
the coordinate labels, every fit option and the fitting code itself. A Dataset that did
not come from ``open_store``, or whose fitted arrays are in memory, has no key and is
never cached.

Reading never needs write access. ``cache="local"`` (the default) keeps one zarr per key
under ``$ACTIVATION_CACHE/fits`` (else ``~/.cache/activation-datasets/fits``), written
under a temporary name and renamed into place, so readers analysing one store at once
never race or see half an entry. ``cache="store"`` writes the store's own ``fits`` group,
only on request, only for the whole underived Dataset and only after checking, before any
work, that the store is writable. Either kind is read only when its key matches exactly.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import xarray as xr
from dask.base import tokenize

from analysis._snapshot import SNAPSHOT_KEY, StoreSnapshot, coordinate_labels, dask_name, digest
from store import (
    CACHE_ENV,
    ConfigError,
    InputError,
    StoreLocationError,
    cache_root,
    consolidate,
    structure_lease,
)
from store.errors import first_line

CACHE_FORMAT = 2  # bump when the layout or meaning of a cached entry changes
FITS_GROUP = "fits"
KEY_ATTR = "fits_key"
WHERE_KEY = "fits_cache"  # in the result's encoding: where it was read from or written to
HIT_KEY = "fits_cache_hit"  # in the result's encoding: True when read from the cache
MODES = ("local", "store", "off")
# every module of the package but these computes fits: a change to any of them makes old entries stale
# (a denylist, so that a new fitting module counts without anyone remembering to add it)
_NOT_FITTING = {"__init__.py", "_cli.py", "_fits_cache.py", "_open.py", "_snapshot.py", "fit.py", "plot.py",
                "plots.py", "_figure_kit.py", "_fit_figures.py", "_vector_figures.py", "_superweight_figures.py",
                "_card_figures.py", "_dashboard.py"}


def cache_mode(cache: bool | str | None) -> str:
    """``True`` / ``"local"`` -> local, ``"store"``, ``False`` / ``None`` / ``"off"`` -> off."""
    if cache is True:
        return "local"
    if cache is False or cache is None:
        return "off"
    if cache in MODES:
        return str(cache)
    raise ConfigError(f"unknown cache mode {cache!r}; use 'local' (the default), 'store' or False")


def local_entry(key: str) -> Path:
    return cache_root() / FITS_GROUP / f"{key}.zarr"


def _snapshot(dataset: xr.Dataset) -> StoreSnapshot | None:
    return dataset.encoding.get(SNAPSHOT_KEY)


@functools.cache
def _code_digest() -> str:
    hasher = hashlib.sha256()
    for module in sorted(Path(__file__).parent.glob("*.py")):
        if module.name not in _NOT_FITTING:
            hasher.update(module.name.encode() + module.read_bytes())
    return hasher.hexdigest()


def fits_key(dataset: xr.Dataset, fitted: Mapping[str, xr.DataArray | None],
             options: Mapping[str, Any]) -> str | None:
    """The cache key of fitting ``fitted`` (variable -> array, None if skipped) with ``options``."""
    snapshot = _snapshot(dataset)
    names = {variable: "absent" if array is None else dask_name(array) for variable, array in fitted.items()}
    if snapshot is None or snapshot.identity is None or None in names.values():
        return None
    channel_index = tokenize(dataset["channel_index"].data) if "channel_index" in dataset else "absent"
    basis = {"format": CACHE_FORMAT, "code": _code_digest(), "store": snapshot.identity, "arrays": names,
             "labels": coordinate_labels(dataset), "channel_index": channel_index, "options": options}
    return digest(basis)


def require_store_cache(dataset: xr.Dataset, variables: list[str], key: str | None) -> None:
    """Refuse ``cache="store"`` before any work unless the store can take this Dataset's fits."""
    snapshot = _snapshot(dataset)
    if snapshot is None or key is None:
        raise InputError("cache='store' needs a Dataset straight from open_store (on a listable store); "
                         "use cache='local' (the default) or cache=False")
    if not snapshot.is_underived(dataset, variables):
        raise InputError("cache='store' keeps the fits of the whole store as open_store returns it, not of a "
                         "selection or derived data; use cache='local' (the default) for this Dataset")
    _require_writable(snapshot)


def _require_writable(snapshot: StoreSnapshot) -> None:
    location = snapshot.location
    try:
        if location.zarr_store().read_only:  # a store object that refuses writes
            raise StoreLocationError("the store is read-only")
        location.check_writable()
    except StoreLocationError as error:
        raise InputError(
            f"cache='store' needs write access to the store {location.display()!r}, which this reader lacks "
            f"({first_line(error)}); use cache='local' (--cache local, the default: it writes only under "
            f"{cache_root()}) or cache=False (--cache off)"
        ) from error


def read(dataset: xr.Dataset, variables: list[str], key: str | None, mode: str) -> xr.Dataset | None:
    """The cached fits for ``key``, or None: the local entry (mode local), then the store's group.

    The store's group holds the fits of the whole store, so it answers only for the
    fitted ``variables`` exactly as ``open_store`` returned them.
    """
    if key is None or mode == "off":
        return None
    found = _open_entry(local_entry(key), None, key, str(local_entry(key))) if mode == "local" else None
    snapshot = _snapshot(dataset)
    if found is None and snapshot is not None and snapshot.is_underived(dataset, variables):
        store = snapshot.location.zarr_store(read_only=True)
        found = _open_entry(store, FITS_GROUP, key, _store_group(snapshot))
    return found


def _store_group(snapshot: StoreSnapshot) -> str:
    return f"the {FITS_GROUP!r} group of {snapshot.location.display()}"


def _open_entry(where: Any, group: str | None, key: str, described: str) -> xr.Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            entry = xr.open_zarr(where, group=group)
    except (KeyError, FileNotFoundError, OSError, ValueError):
        return None
    if entry.attrs.get(KEY_ATTR) != key:
        return None
    entry.encoding[WHERE_KEY] = described
    entry.encoding[HIT_KEY] = True
    return entry


def write(dataset: xr.Dataset, key: str, mode: str, result: xr.Dataset) -> xr.Dataset:
    """Compute ``result`` and cache it; a failed cache write warns and still returns the results."""
    computed = result.compute()
    computed.attrs[KEY_ATTR] = key
    try:
        where = _write_store(dataset, computed) if mode == "store" else _write_local(key, computed)
        computed.encoding[WHERE_KEY] = where
    except Exception as error:  # noqa: BLE001 - whatever stops the cache write, the results must not be lost
        fix = "pass cache='local'" if mode == "store" else f"set {CACHE_ENV} to a writable folder"
        warnings.warn(f"the fits were computed but not cached ({first_line(error)}); {fix} or pass cache=False",
                      RuntimeWarning, stacklevel=3)
    return computed


def _write_local(key: str, computed: xr.Dataset) -> str:
    final = local_entry(key)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # consolidated metadata notice from zarr
            computed.to_zarr(temporary, mode="w-", zarr_format=3, consolidated=True)
        os.rename(temporary, final)  # atomic: readers see no entry or a whole one
    except OSError:
        if not (final / "zarr.json").exists():
            raise
        # another reader published the same key first; its entry is the same computation
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return str(final)


def _write_store(dataset: xr.Dataset, computed: xr.Dataset) -> str:
    snapshot = _snapshot(dataset)
    if snapshot is None:  # require_store_cache refuses this before any work; kept for direct callers
        raise InputError("cache='store' needs a Dataset straight from open_store; use cache='local'")
    # the root's consolidated metadata is shared with builds: change it only under the store lease
    with structure_lease(snapshot.location, "cache fits"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        computed.to_zarr(snapshot.location.zarr_store(), group=FITS_GROUP, mode="w", zarr_format=3,
                         consolidated=False)
        consolidate(snapshot.location)
    return _store_group(snapshot)
