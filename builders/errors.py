"""Errors of the builders; all are user input errors (exit code 2)."""

from store.errors import InputError


class ModelError(InputError):
    """The model cannot be found or loaded, or its layers cannot be resolved."""


class DataError(InputError):
    """The text source is missing, empty or lacks the text field."""
