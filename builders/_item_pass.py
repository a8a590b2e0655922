"""What ``builders.integers`` and ``builders.hypercube`` share: find the items to process, then
process each model's under its lease, then consolidate the store's metadata once."""

from __future__ import annotations

from collections.abc import Callable

from store import (
    Lease,
    StoreLocation,
    complete_items,
    consolidate,
    labels_in,
    reporting_write_faults,
    slot_key,
    structure_lease,
)
from store.errors import StoreLocationError

# Writes the items of one model: (label, item number -> source path, the model's lease); it creates
# the model's node (store.prepare_group) only once it has an item to write, so a refusal writes nothing.
ModelPass = Callable[[str, dict[int, str], Lease], None]


def source_items(location: StoreLocation, group: str, labels: list[str], how_to_make: str) -> dict[str, dict[int, str]]:
    """Model label -> its complete items in ``group`` (all models when ``labels`` is empty)."""
    if not location.exists():
        raise StoreLocationError(f"no store at {location.display()!r}; {how_to_make} first")
    available = labels_in(location, group)
    wanted = labels or available
    unknown = [label for label in wanted if label not in available]
    if unknown or not wanted:
        raise StoreLocationError(f"no {group} of model {(unknown or ['any'])[0]!r} in {location.display()!r} "
                                 f"(found: {available!r}); pass --model with one of those, or {how_to_make} first")
    return {label: complete_items(location, group, label) for label in wanted}


def write_models(location: StoreLocation, group: str, work: dict[str, dict[int, str]], verb: str,
                 write: ModelPass) -> None:
    """Each model's items under its lease ``<group>/<label>``, then one consolidation."""
    for label, items in work.items():
        lease = Lease(location, slot_key(group, label), f"{verb} model {label!r}")
        with reporting_write_faults(location), lease.acquire(interrupt=True):
            write(label, items, lease)
    with structure_lease(location, f"consolidate after {verb}"):
        consolidate(location)
