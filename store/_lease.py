"""Leases: which build may write which part of a store, and until when.

A lease is a small JSON object ``_leases/<key>/<generation>.json`` inside the store,
naming its holder (owner, host, pid, purpose) and an expiry. The holder renews it
from a heartbeat thread and checks it before every commit; readers never look at it.

Hand-written because neither zarr nor fsspec offers a lock. The protocol needs only
two primitives every backend has, so it is the same on local disks and S3:
create-if-absent (local: ``link(2)`` of a finished temporary file; S3: a PUT with
``If-None-Match: *``) and atomic overwrite. Acquiring reads the highest generation;
if it still holds (not released, not expired, its process alive when on this host)
the caller is refused or waits, otherwise it creates the next generation. Exactly one
contender can create a given generation, and a winner that then finds a higher
generation has lost (this closes the gap opened by deleting old generations).

Keys are paths: ``store`` guards metadata changes (create, add a model slot, resize,
consolidate, overwrite) and is held for seconds; ``stats/<model>`` guards a model
slot for a whole build. Finer claims (work units of one build) are further keys of
the same kind under their slot's key.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import threading
import time
import urllib.parse
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any, Self

from store._faults import transport_errors
from store._location import StoreLocation
from store.errors import InputError, StoreLocationError, first_line

LEASE_DIR = "_leases"
STRUCTURE_KEY = "store"
DEFAULT_TTL = 60.0  # seconds a lease outlives its last renewal
_POLL = 0.2  # seconds between attempts while waiting
_RELEASE_WAIT = 3.0  # seconds the release's delete may take before the build exits anyway
_JOIN_WAIT = 1.0  # seconds to wait for the heartbeat threads to stop
_WATCH_PERIOD = 1.0  # seconds between the watchdog's checks
HOST = socket.gethostname()


class LeaseError(InputError):
    """Another build holds the lease, or this build lost it: nothing committed is harmed."""


def slot_key(group: str, label: str) -> str:
    """The lease key of one model slot of a group."""
    return f"{group}/{urllib.parse.quote(label, safe='')}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


@dataclass(frozen=True)
class LeaseRecord:
    """One generation of a lease: who holds it, for what, until when (epoch seconds)."""

    key: str
    generation: int
    owner: str
    host: str
    pid: int
    purpose: str
    token: str
    acquired: float
    expires: float

    def holds(self, now: float) -> bool:
        """Whether it still excludes others: not expired, and its process alive if it ran here."""
        if now >= self.expires:
            return False
        return self.host != HOST or _process_alive(self.pid)

    def describe(self, now: float) -> str:
        return (f"{self.owner}@{self.host} pid {self.pid} ({self.purpose}; "
                f"lease expires in {max(0.0, self.expires - now):.0f} s)")

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseRecord:
        return cls(**json.loads(data))


class _LeaseFolder:
    """The generations of one key: list, read, create-if-absent, overwrite, delete."""

    def __init__(self, location: StoreLocation, key: str) -> None:
        self.fs, root = location.filesystem()
        self.path = f"{root.rstrip('/')}/{LEASE_DIR}/{key}"
        self.is_local = not location.is_remote

    def file(self, generation: int) -> str:
        return f"{self.path}/{generation:010d}.json"

    def records(self) -> list[LeaseRecord]:
        """Every readable generation, oldest first; an unreadable one no longer excludes anyone."""
        try:
            names = self.fs.ls(self.path, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        records = []
        for name in sorted(str(n) for n in names if str(n).endswith(".json")):
            try:
                records.append(LeaseRecord.from_bytes(self.fs.cat_file(name)))
            except (FileNotFoundError, ValueError, TypeError):  # released meanwhile, or damaged
                continue
        return records

    def create(self, record: LeaseRecord) -> None:
        """Write ``record`` only if its generation does not exist yet (FileExistsError otherwise)."""
        target = self.file(record.generation)
        if not self.is_local:
            self.fs.pipe_file(target, record.to_bytes(), mode="create")
            return
        os.makedirs(self.path, exist_ok=True)
        temporary = f"{target}.{uuid.uuid4().hex}.partial"
        with open(temporary, "wb") as handle:
            handle.write(record.to_bytes())
        try:
            os.link(temporary, target)  # fails if the target exists: readers never see half a record
        finally:
            os.unlink(temporary)

    def overwrite(self, record: LeaseRecord) -> None:
        target = self.file(record.generation)
        if not self.is_local:
            self.fs.pipe_file(target, record.to_bytes())
            return
        temporary = f"{target}.{uuid.uuid4().hex}.partial"
        with open(temporary, "wb") as handle:
            handle.write(record.to_bytes())
        os.replace(temporary, target)

    def delete(self, generation: int) -> None:
        try:
            self.fs.rm_file(self.file(generation))
        except FileNotFoundError:
            return
        if self.is_local:  # leave no empty folders behind; a racing creator re-makes them
            self._remove_empty_folders()

    def _remove_empty_folders(self) -> None:
        folder = self.path
        while True:
            try:
                os.rmdir(folder)
            except OSError:  # not empty (another key, or a contender's record): stop there
                return
            if os.path.basename(folder) == LEASE_DIR:
                return
            folder = os.path.dirname(folder)


class Lease:
    """A lease on ``key`` of a store: ``with Lease(...).acquire():`` holds it and releases it after."""

    def __init__(self, location: StoreLocation, key: str, purpose: str, ttl: float = DEFAULT_TTL) -> None:
        self.location, self.key, self.purpose, self.ttl = location, key, purpose, ttl
        self._folder = _LeaseFolder(location, key)
        self._record: LeaseRecord | None = None
        self._valid_until = 0.0  # monotonic time after which this holder must stop writing
        self._lost_to: LeaseRecord | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._previous_handler: Any = None

    def acquire(self, wait: float = 0.0, interrupt: bool = False) -> Lease:
        """Take the lease, waiting up to ``wait`` seconds for its holder; LeaseError names the holder.

        With ``interrupt`` (main thread only), losing the lease raises LeaseError in the main thread
        even while it is blocked in a write to a store that stopped answering.
        """
        deadline = time.monotonic() + wait
        while True:
            holder = self._attempt()
            if holder is None:
                self._start_heartbeat(interrupt)
                return self
            if time.monotonic() >= deadline:
                raise LeaseError(self._refusal(holder))
            time.sleep(_POLL)

    def _attempt(self) -> LeaseRecord | None:
        """Take the lease now, or return the record that holds it."""
        try:
            for _ in range(3):
                try:
                    return self._claim_next()
                except FileExistsError:  # another contender created that generation first: look again
                    continue
            records = self._folder.records()
        except transport_errors() as error:
            raise StoreLocationError(
                f"cannot take the write lease on {self.location.display()!r}: {first_line(error)}; "
                "check that the store is writable and reachable"
            ) from error
        if records:
            return records[-1]
        raise LeaseError(f"could not take the write lease on {self.location.display()!r}: "
                         "other builds kept taking it first; rerun the command")

    def _claim_next(self) -> LeaseRecord | None:
        records = self._folder.records()
        now = time.time()
        if records and records[-1].holds(now):
            return records[-1]
        record = self._new_record(records[-1].generation + 1 if records else 1, now)
        self._folder.create(record)
        newest = self._folder.records()[-1]
        if newest.generation != record.generation:  # lost to a contender that read later
            self._folder.delete(record.generation)
            return newest
        self._hold(record)
        for older in records:
            self._folder.delete(older.generation)
        return None

    def _new_record(self, generation: int, now: float) -> LeaseRecord:
        return LeaseRecord(key=self.key, generation=generation, owner=_owner(), host=HOST, pid=os.getpid(),
                           purpose=self.purpose, token=uuid.uuid4().hex, acquired=now, expires=now + self.ttl)

    def _hold(self, record: LeaseRecord) -> None:
        self._record = record
        self._valid_until = time.monotonic() + self.ttl * 0.75  # a quarter of the TTL for clock skew

    def _refusal(self, holder: LeaseRecord) -> str:
        return (f"store {self.location.display()!r} is being written by {holder.describe(time.time())}; "
                "wait for that build to end (a killed build's lease is taken over when it expires, "
                "at once on the same host) or choose another --store")

    def _start_heartbeat(self, interrupt: bool) -> None:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._renew_until_stopped, daemon=True, name=f"lease-{self.key}")]
        if interrupt and threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1"):
            self._previous_handler = signal.signal(signal.SIGUSR1, self._raise_lost)
            self._threads.append(threading.Thread(target=self._watch_until_stopped, daemon=True,
                                                  name=f"lease-watch-{self.key}"))
        for thread in self._threads:
            thread.start()

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self.renew()
            except Exception:  # noqa: BLE001, S112 - unreachable store: the watchdog stops the build in time
                continue

    def _watch_until_stopped(self) -> None:
        """Signal the main thread once this build may no longer write (a renewal may itself be stuck)."""
        while not self._stop.wait(_WATCH_PERIOD):
            if self._lost_to is not None or time.monotonic() > self._valid_until:
                os.kill(os.getpid(), signal.SIGUSR1)
                return

    def _raise_lost(self, signum: int, frame: object) -> None:
        self.ensure_held()

    def renew(self) -> None:
        """Push the expiry one TTL ahead, unless another build took the lease over."""
        record = self._record
        if record is None or self._lost_to is not None:
            return
        newest = self._folder.records()
        if newest and newest[-1].generation > record.generation:
            self._lost_to = newest[-1]
            return
        renewed = replace(record, expires=time.time() + self.ttl)
        self._folder.overwrite(renewed)
        self._hold(renewed)

    def ensure_held(self) -> None:
        """Raise LeaseError unless this build may still write (checked before every commit, no I/O)."""
        if self._lost_to is not None:
            raise LeaseError(f"lost the write lease on {self.location.display()!r} to "
                             f"{self._lost_to.describe(time.time())}; committed data is kept, rerun to resume")
        if self._record is None or time.monotonic() > self._valid_until:
            endpoint = self.location.storage_options.get("endpoint_url")
            where = f" (endpoint {endpoint!r})" if endpoint else ""
            raise LeaseError(f"store {self.location.display()!r}{where} did not answer for {self.ttl * 0.75:.0f} s "
                             "(the write lease could not be renewed); every committed token is kept: check the "
                             "endpoint or the disk, then rerun the same command to resume")

    def release(self) -> None:
        """Stop renewing and delete this build's record; if the store does not answer, it just expires."""
        self._stop.set()
        for thread in self._threads:
            thread.join(_JOIN_WAIT)  # a renewal stuck on a dead endpoint is left to die with the process
        if self._previous_handler is not None:
            signal.signal(signal.SIGUSR1, self._previous_handler)
            self._previous_handler = None
        record, self._record = self._record, None
        if record is None:
            return
        # a dead endpoint must not hold up the exit: the record expires, or a rerun here takes it over
        deleter = threading.Thread(target=self._delete_quietly, args=(record.generation,), daemon=True)
        deleter.start()
        deleter.join(_RELEASE_WAIT)

    def _delete_quietly(self, generation: int) -> None:
        try:
            self._folder.delete(generation)
        except Exception:  # noqa: BLE001 - already failing: an unreleased lease expires by itself
            return

    def __enter__(self) -> Self:
        if self._record is None:
            self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _owner() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return f"uid{os.getuid()}"


def live_leases(location: StoreLocation, prefix: str) -> list[LeaseRecord]:
    """Leases under ``prefix`` (e.g. a group's slot keys) that still hold, for refusals that name them."""
    fs, root = location.filesystem()
    base = f"{root.rstrip('/')}/{LEASE_DIR}/{prefix}"
    try:
        keys = fs.ls(base, detail=False, refresh=True)
    except FileNotFoundError:
        return []
    now = time.time()
    live = []
    for key_path in keys:
        key = f"{prefix}/{str(key_path).rstrip('/').rsplit('/', 1)[-1]}"
        records = _LeaseFolder(location, key).records()
        if records and records[-1].holds(now):
            live.append(records[-1])
    return live
