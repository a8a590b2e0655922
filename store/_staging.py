"""Checkpoints inside a work unit: what a kill would otherwise lose, kept until the unit commits.

A unit (one shard of every series) is written to the group once, when it is complete:
writing it piecemeal would rewrite each shard whole at every commit (zarr cannot
update part of a shard), the write amplification issue 7 removes. A unit that takes
longer than the commit interval saves the statistics computed since its last
checkpoint as one object ``_staging/<group>/<model>/<unit>/<start>-<end>.npz`` (NumPy's
own format: readable without this project), and a resumed build reloads the
contiguous checkpoints from the unit's start and computes only the rest. Committing
the unit deletes them. Hand-written because a Zarr array would need a fixed chunk
size, while checkpoints end wherever the interval runs out (always at a batch's end).
"""

from __future__ import annotations

import io
import os
import re
import urllib.parse

import numpy as np

from store._location import StoreLocation, entry_name, publish_local

STAGING_DIR = "_staging"
_CHECKPOINT = re.compile(r"^(\d{12})-(\d{12})\.npz$")


class Staging:
    """The checkpoints of one unit of one model slot."""

    def __init__(self, location: StoreLocation, group: str, label: str, unit: int) -> None:
        self.location = location
        self.fs, root = location.filesystem()
        self.key = f"{_slot_folder(group, label)}/{unit:06d}"
        self.path = f"{root.rstrip('/')}/{self.key}"

    def checkpoints(self) -> list[tuple[int, int]]:
        """(start, end) token ranges saved, in order (fresh: never from a listing cache)."""
        try:
            names = self.fs.ls(self.path, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        found = (_CHECKPOINT.match(entry_name(name)) for name in names)
        return sorted((int(match.group(1)), int(match.group(2))) for match in found if match)

    def save(self, start: int, end: int, arrays: dict[str, np.ndarray]) -> None:
        """Save tokens ``start .. end`` of each array atomically (a kill leaves all of it or none)."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        target = f"{self.path}/{start:012d}-{end:012d}.npz"
        if self.location.is_remote:
            self.fs.pipe_file(target, buffer.getvalue())  # one PUT: atomic
            return
        os.makedirs(self.path, exist_ok=True)
        publish_local(target, buffer.getvalue())

    def load(self, start: int) -> tuple[int, list[dict[str, np.ndarray]]]:
        """The checkpoints contiguous from token ``start``: where they end, and their arrays in order."""
        end, parts = start, []
        for first, last in self.checkpoints():
            if first != end:
                break  # a gap (never written by this protocol): recompute from here
            data = self.fs.cat_file(f"{self.path}/{first:012d}-{last:012d}.npz")
            with np.load(io.BytesIO(data)) as saved:
                parts.append({name: saved[name] for name in saved.files})
            end = last
        return end, parts

    def clear(self) -> None:
        """Delete every checkpoint of the unit (after its commit, or when it is already committed)."""
        self.location.remove_subtree(self.key)


def clear_staging(location: StoreLocation, group: str, label: str | None = None) -> None:
    """Delete the checkpoints of a whole group, or of one model slot (its data is being replaced)."""
    location.remove_subtree(f"{STAGING_DIR}/{group}" if label is None else _slot_folder(group, label))


def _slot_folder(group: str, label: str) -> str:
    return f"{STAGING_DIR}/{group}/{urllib.parse.quote(label, safe='')}"
