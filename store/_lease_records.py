"""Lease records and where they live: ``_leases/<key>/<generation>.json`` inside a store.

The two primitives the lease protocol (``store/_lease.py``) needs, on every backend:
create-if-absent (local: ``link(2)`` of a fully written temporary file, so readers never see
half a record; S3: a PUT with ``If-None-Match: *``) and atomic overwrite (local: rename;
S3: a PUT).
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import asdict, dataclass, fields

from store._location import StoreLocation, entry_name, publish_local

LEASE_DIR = "_leases"
HOST = socket.gethostname()
GENERATION_FILE = re.compile(r"^(\d{10})\.json$")
# S3 answers a lost conditional race with 412 PreconditionFailed or 409 ConditionalRequestConflict;
# s3fs maps only the first (and only with its Condition field) to FileExistsError.
_CONFLICT = ("PreconditionFailed", "ConditionalRequestConflict", "pre-conditions you specified did not hold")


def _machine() -> str:
    """Host name, boot and pid namespace: pids are comparable only between processes sharing all three."""
    parts = [HOST]
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
            parts.append(boot.read().strip())
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:  # not Linux: the host name alone
        pass
    return ":".join(parts)


MACHINE = _machine()


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


@dataclass(frozen=True)
class LeaseRecord:
    """One generation of a lease: who holds it, for what, until when (epoch seconds; 0: released)."""

    key: str
    generation: int
    owner: str
    host: str
    pid: int
    purpose: str
    token: str
    acquired: float
    expires: float
    machine: str = ""

    def holds(self, now: float) -> bool:
        """Whether it still excludes others: not expired, and its process alive if it ran on this machine."""
        if now >= self.expires:
            return False
        return self.machine != MACHINE or process_alive(self.pid)

    def describe(self, now: float) -> str:
        return (f"{self.owner}@{self.host} pid {self.pid} ({self.purpose}; "
                f"lease expires in {max(0.0, self.expires - now):.0f} s)")

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseRecord:
        document = json.loads(data)
        known = {field.name for field in fields(cls)}
        return cls(**{name: value for name, value in document.items() if name in known})


class LeaseFolder:
    """The generations of one key: list, read, create-if-absent, overwrite, delete."""

    def __init__(self, location: StoreLocation, key: str) -> None:
        self.fs, root = location.filesystem()
        self.path = f"{root.rstrip('/')}/{LEASE_DIR}/{key}"
        self.is_local = not location.is_remote

    def file(self, generation: int) -> str:
        return f"{self.path}/{generation:010d}.json"

    def generations(self) -> list[int]:
        """Every generation number present, lowest first (fresh: never from a listing cache)."""
        try:
            names = self.fs.ls(self.path, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        found = (GENERATION_FILE.match(entry_name(name)) for name in names)
        return sorted(int(match.group(1)) for match in found if match)

    def read(self, generation: int) -> LeaseRecord | None:
        """The record, or None when it is gone or unreadable (a damaged record excludes no one)."""
        try:
            return LeaseRecord.from_bytes(self.fs.cat_file(self.file(generation)))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def newest(self) -> tuple[int, LeaseRecord | None]:
        """The highest generation number (0 if none) and its record."""
        generations = self.generations()
        if not generations:
            return 0, None
        return generations[-1], self.read(generations[-1])

    def create(self, record: LeaseRecord) -> None:
        """Write ``record`` only if its generation does not exist yet (FileExistsError otherwise)."""
        target = self.file(record.generation)
        if self.is_local:
            os.makedirs(self.path, exist_ok=True)
            publish_local(target, record.to_bytes(), os.link)  # link fails if the target exists
            return
        try:
            self.fs.pipe_file(target, record.to_bytes(), mode="create")
        except OSError as error:
            if isinstance(error, FileExistsError) or any(code in str(error) for code in _CONFLICT):
                raise FileExistsError(str(error)) from error
            raise

    def overwrite(self, record: LeaseRecord) -> None:
        target = self.file(record.generation)
        if self.is_local:
            publish_local(target, record.to_bytes(), os.replace)
        else:
            self.fs.pipe_file(target, record.to_bytes())

    def delete(self, generation: int) -> None:
        try:
            self.fs.rm_file(self.file(generation))
        except FileNotFoundError:
            return
