"""Error hierarchy shared by the store, the builders and the analysis layer.

Every error a user can cause derives from :class:`InputError`; entry points turn
it into one line on stderr and exit code 2, so a traceback always means a bug.
"""

from __future__ import annotations


class ActivationStoreError(Exception):
    """Base class of every error this project raises on purpose."""


class InputError(ActivationStoreError):
    """Bad user input: the message names the problem and the fix."""


class ConfigError(InputError):
    """A configuration value is invalid."""


class StoreLocationError(InputError):
    """The store URL cannot be read or written (missing, unwritable, unreachable)."""


class StoreMismatchError(InputError):
    """An existing store was built with a different configuration."""


class ContractError(ActivationStoreError):
    """A store does not follow the format in docs/store-format.md."""


class CatalogError(InputError):
    """A catalog file or one of its entries is invalid."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (or its type's name): what a one-line error quotes."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
