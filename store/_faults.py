"""Storage faults under a running build, turned into one clear error with the way out.

A full disk, a store made read-only, or an S3 endpoint that stops answering surface as
different exception types (OSError, botocore and aiohttp errors, timeouts) from deep
inside zarr and s3fs. The writer's commit protocol keeps every committed token intact,
so the message says so and tells the user to rerun the same command.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Iterator
from contextlib import contextmanager

from store._location import StoreLocation
from store.errors import InputError, StoreLocationError, first_line


@functools.cache
def transport_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean the storage failed, not the program (looked up once)."""
    errors: list[type[BaseException]] = [OSError]
    try:
        from botocore.exceptions import BotoCoreError
        errors.append(BotoCoreError)
    except ImportError:  # no S3 support installed: only local faults
        pass
    try:
        from aiohttp import ClientError
        errors.append(ClientError)
    except ImportError:
        pass
    return tuple(errors)


def _remedy(location: StoreLocation, error: BaseException) -> str:
    if location.is_remote:
        return "check the endpoint and your credentials"
    code = getattr(error, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "free some disk space"
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "make the store writable again"
    return "fix the storage"


def write_fault(location: StoreLocation, error: BaseException) -> StoreLocationError:
    """The one-line error for a storage failure while a build writes ``location``."""
    return StoreLocationError(
        f"writing store {location.display()!r}{location.endpoint_note()} failed: {first_line(error)}; every committed token "
        f"is kept: {_remedy(location, error)}, then rerun the same command to resume"
    )


@contextmanager
def reporting_write_faults(location: StoreLocation) -> Iterator[None]:
    """Inside, a storage failure becomes :func:`write_fault`; input errors pass through unchanged."""
    try:
        yield
    except InputError:
        raise
    except transport_errors() as error:
        raise write_fault(location, error) from error
