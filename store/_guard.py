"""The deletion guard: only a store of this project, or an empty folder, is ever written into or replaced.

A typo in ``--store`` (``.``, ``~/data``) must never cost a user their files: before a
build writes a new store or ``--overwrite`` removes one, the location must hold nothing,
or be recognisably ours: its ``stats`` group says ``format: activation-stats``, or it
is a bare Zarr root holding only the groups this project writes (a template interrupted
before its first group landed).
"""

from __future__ import annotations

import json
import re
from typing import Any

from store._items import ITEM_GROUPS
from store._lease import LEASE_DIR
from store._location import StoreLocation, entry_name
from store._schema import FORMAT_NAME, STATS_GROUP
from store._staging import STAGING_DIR
from store._superweights import SUPERWEIGHTS_GROUP
from store._vectors import VECTORS_GROUP
from store._vocab import VOCAB_GROUP
from store.errors import StoreLocationError

OUR_ENTRIES = {"zarr.json", STATS_GROUP, "fits", LEASE_DIR, STAGING_DIR, *ITEM_GROUPS, VECTORS_GROUP,
               SUPERWEIGHTS_GROUP, VOCAB_GROUP}  # what a store of this project holds at its root
# leftovers of a kill: zarr's atomic-write temporaries ("zarr.<hex>.partial") and our write probes
_LEFTOVER = re.compile(r"^(zarr\.[0-9a-f]{32}\.partial|\.write-probe-[0-9a-f]{32})$")
_SHOWN = 3  # entries named in the refusal


def _entries(location: StoreLocation) -> list[str]:
    """Names directly under the location (files and folders / S3 prefixes); [] if it does not exist."""
    fs, path = location.filesystem()
    try:
        if not fs.exists(path):
            return []
        return sorted(entry_name(name) for name in fs.ls(path, detail=False))
    except NotADirectoryError:
        return [entry_name(path)]
    except Exception as error:  # noqa: BLE001 - any transport failure means unreachable
        raise StoreLocationError(location._unreachable(error)) from error


def _read_json(location: StoreLocation, key: str) -> Any:
    fs, path = location.filesystem()
    try:
        return json.loads(fs.cat_file(f"{path.rstrip('/')}/{key}"))
    except Exception:  # noqa: BLE001 - missing or unreadable: not evidence that the store is ours
        return None


def is_our_store(location: StoreLocation, entries: list[str] | None = None) -> bool:
    """Whether the location holds a store of this project (complete or an interrupted template)."""
    entries = _entries(location) if entries is None else entries
    if "zarr.json" not in entries or any(e not in OUR_ENTRIES and not _LEFTOVER.match(e) for e in entries):
        return False
    stats = _read_json(location, f"{STATS_GROUP}/zarr.json")
    if isinstance(stats, dict):
        return stats.get("attributes", {}).get("format") == FORMAT_NAME
    root = _read_json(location, "zarr.json")
    is_group = isinstance(root, dict) and root.get("zarr_format") == 3 and root.get("node_type") == "group"
    return is_group and STATS_GROUP not in entries  # a root whose first group never landed


def check_ours_or_empty(location: StoreLocation, action: str = "write a store into") -> None:
    """Refuse (nothing touched) a location that holds anything but a store of this project."""
    entries = _entries(location)
    if not [e for e in entries if e != LEASE_DIR] or is_our_store(location, entries):  # leases of a build
        return
    shown = ", ".join(repr(name) for name in entries[:_SHOWN]) + (", ..." if len(entries) > _SHOWN else "")
    raise StoreLocationError(
        f"refusing to {action} {location.display()!r}: it is not a store of this project "
        f"(it holds {len(entries)} entries: {shown}); choose a new or empty --store path"
    )
