"""Where a store lives: a local path or any fsspec URL, plus its storage options."""

from __future__ import annotations

import copy
import os
import shutil
import urllib.parse
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import zarr
import zarr.storage

from store.errors import StoreLocationError, first_line

# A dead endpoint fails a request within ~35 s (3 attempts of at most 10 s each, plus backoff) instead of
# botocore's and s3fs's minutes of nested retries; docs/store-format.md states the bound a build gives.
_S3_CLIENT_DEFAULTS = {"connect_timeout": 5, "read_timeout": 10, "retries": {"max_attempts": 3, "mode": "standard"}}
_S3FS_RETRIES = 1  # s3fs retries on top of botocore's: none


def _is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def entry_name(path: object) -> str:
    """The last component of a listed path: fsspec lists folders and S3 prefixes with or without '/'."""
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def _bound_retries(fs: fsspec.AbstractFileSystem) -> None:
    """s3fs has no option for its own retry loop (5 tries by default): set it on the instance."""
    if hasattr(fs, "retries") and "s3" in fs.protocol:
        fs.retries = _S3FS_RETRIES


def local_path_of(url: str) -> Path:
    """The absolute path of a local store given as a path or a ``file://`` URL."""
    if url.startswith("file://"):
        parts = urllib.parse.urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise StoreLocationError(
                f"file URL {url!r} names the host {parts.netloc!r}; use file:///absolute/path or a plain path"
            )
        url = urllib.parse.unquote(parts.path)
    return Path(url).expanduser().resolve()


def publish_local(target: str, data: bytes, publish: Callable[[str, str], None] = os.replace) -> None:
    """Write a temporary file in full, then ``publish`` it (link: create-if-absent; replace: overwrite).

    Readers never see half a file; the temporary file never outlives the call.
    """
    temporary = f"{target}.{uuid.uuid4().hex}.partial"
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
        publish(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


@dataclass(frozen=True)
class StoreLocation:
    """A Zarr hierarchy at ``url``; ``storage_options`` go to fsspec and are never persisted."""

    url: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_remote(self) -> bool:
        return _is_remote(self.url)

    @property
    def local_path(self) -> Path:
        return local_path_of(self.url)

    def display(self) -> str:
        """The URL for messages: absolute for local paths, without any credentials."""
        if not self.is_remote:
            return str(self.local_path)
        scheme, rest = self.url.split("://", 1)
        return f"{scheme}://{rest.rsplit('@', 1)[-1]}"

    def fsspec_options(self) -> dict[str, Any]:
        options = dict(self.storage_options)
        if self.url.startswith("s3://"):
            config = copy.deepcopy(dict(options.get("config_kwargs", {})))
            for key, value in copy.deepcopy(_S3_CLIENT_DEFAULTS).items():  # botocore edits 'retries' in place
                config.setdefault(key, value)
            options["config_kwargs"] = config
        return options

    def zarr_store(self, read_only: bool = False) -> zarr.abc.store.Store:
        """A zarr-python store; local writes are atomic (temp file + rename)."""
        if not self.is_remote:
            return zarr.storage.LocalStore(self.local_path, read_only=read_only)
        store = zarr.storage.FsspecStore.from_url(
            self.url, storage_options=self.fsspec_options(), read_only=read_only
        )
        _bound_retries(store.fs)
        return store

    def filesystem(self) -> tuple[fsspec.AbstractFileSystem, str]:
        if not self.is_remote:
            return fsspec.filesystem("file"), str(self.local_path)
        fs, path = fsspec.core.url_to_fs(self.url, **self.fsspec_options())
        _bound_retries(fs)
        return fs, path

    def exists(self) -> bool:
        """Whether a Zarr hierarchy already lives here."""
        fs, path = self.filesystem()
        try:
            return bool(fs.exists(f"{path.rstrip('/')}/zarr.json"))
        except Exception as error:  # noqa: BLE001 - any transport failure means unreachable
            raise StoreLocationError(self._unreachable(error)) from error


    def check_exists(self) -> None:
        """Refuse, in one line, a location that holds no store (no zarr.json)."""
        if not self.exists():
            raise StoreLocationError(f"no store at {self.display()!r} (no zarr.json); check the path or URL")
    def check_writable(self) -> None:
        """Write and delete a probe object, so a bad location fails before any work."""
        if not self.is_remote:
            self._check_local_writable()
            return
        fs, path = self.filesystem()
        probe = f"{path.rstrip('/')}/.write-probe-{uuid.uuid4().hex}"
        try:
            fs.pipe_file(probe, b"probe")
            fs.rm_file(probe)
        except Exception as error:  # noqa: BLE001 - any transport failure means unwritable
            raise StoreLocationError(self._unreachable(error)) from error

    def _check_local_writable(self) -> None:
        path = self.local_path
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
        if existing.exists() and not existing.is_dir():
            raise StoreLocationError(
                f"store path {str(path)!r} is blocked by the file {str(existing)!r}; "
                "choose another --store path"
            )
        # the effective ids are the ones writes are made as (plain os.access asks about the real ones)
        if not os.access(existing, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
            raise StoreLocationError(
                f"cannot write the store at {str(path)!r}: {str(existing)!r} is not writable; "
                "choose a writable --store path"
            )

    def endpoint_note(self) -> str:
        """`` (endpoint '...')`` for messages about a store behind a custom endpoint, else ``""``."""
        endpoint = self.storage_options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL")
        return f" (endpoint {endpoint!r})" if endpoint else ""

    def _unreachable(self, error: Exception) -> str:
        return (
            f"cannot reach store {self.display()!r}{self.endpoint_note()}: {first_line(error)}; "
            "check the URL, the endpoint and your credentials"
        )

    def remove_subtree(self, key: str) -> None:
        """Delete ``<store>/<key>`` and everything below it, if it exists.

        For this project's own folders inside a store (a model's items, checkpoints), never the store.
        """
        fs, root = self.filesystem()
        try:
            fs.rm(f"{root.rstrip('/')}/{key}", recursive=True)
        except FileNotFoundError:
            return

    def remove(self, keep: tuple[str, ...] = ()) -> None:
        """Delete the whole hierarchy (used by --overwrite only): a store of this project or nothing.

        Anything else (a folder of other files, someone else's Zarr) raises StoreLocationError
        and is left as it is. Entries named in ``keep`` (the leases of the build replacing it) stay.
        """
        from store._guard import check_ours_or_empty  # the guard reads stores through this class

        check_ours_or_empty(self, "remove")
        if self.is_remote:
            self._remove_remote(keep)
        else:
            self._remove_local(keep)

    def _remove_local(self, keep: tuple[str, ...]) -> None:
        if not self.local_path.exists():
            return
        for entry in self.local_path.iterdir():
            if entry.name in keep:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        if not any(self.local_path.iterdir()):
            self.local_path.rmdir()

    def _remove_remote(self, keep: tuple[str, ...]) -> None:
        fs, path = self.filesystem()
        if not fs.exists(path):
            return
        for entry in fs.ls(path, detail=False, refresh=True):
            if entry_name(entry) not in keep:
                fs.rm(entry, recursive=True)


def open_existing_group(location: StoreLocation, name: str, mode: str = "r+") -> zarr.Group | None:
    """The top-level group ``name`` of the store (``stats``, ``vectors``), or None when it has none.

    Damaged metadata (a zarr.json that is not JSON, or not Zarr metadata) is one error naming the fix.
    """
    try:
        root = zarr.open_group(location.zarr_store(read_only=mode == "r"), mode=mode, use_consolidated=False)
        group = root[name]
    except (KeyError, FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None
    except (ValueError, TypeError) as error:
        raise StoreLocationError(
            f"store {location.display()!r} has damaged metadata ({first_line(error)}); "
            "store.validate_store names what is damaged: restore it from a copy or choose another --store"
        ) from error
    return group if isinstance(group, zarr.Group) else None


@contextmanager
def quiet_top_node(location: StoreLocation, name: str) -> Iterator[zarr.Group | zarr.Array | None]:
    """The top-level node ``name`` of the store, opened read-only (None when it has none), for validators.

    Zarr's warnings stay silenced until the block ends; a missing or damaged root raises as zarr raises it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # _leases/ and _staging/ are not Zarr nodes
        root = zarr.open_group(location.zarr_store(read_only=True), mode="r", use_consolidated=False)
        yield root.get(name)
