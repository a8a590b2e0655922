"""Refusing a build whose settings differ from those a group was built with."""

from __future__ import annotations

import json
from typing import Any

from store._location import StoreLocation
from store.errors import StoreMismatchError


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _normalise(mapping: dict[str, Any]) -> dict[str, Any]:
    return _flatten(json.loads(json.dumps(mapping)))


def check_same(
    stored: dict[str, Any], requested: dict[str, Any], location: StoreLocation, model: str | None = None
) -> None:
    old, new = _normalise(stored), _normalise(requested)
    differences = [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]
    if differences:
        what = f"model {model!r} in store" if model else "store"
        raise StoreMismatchError(
            f"{what} {location.display()!r} was built with a different configuration "
            f"({'; '.join(differences[:3])}); rerun with the stored settings, "
            "choose another --store, or pass --overwrite to replace it"
        )
