"""Leases: which build may write which part of a store, and until when.

A lease is a small JSON record ``_leases/<key>/<generation>.json`` inside the store
(``store/_lease_records.py``) naming its holder (owner, host, pid, purpose) and an
expiry. The holder renews it from a heartbeat thread and checks it before every
commit; readers never look at it.

Hand-written because neither zarr nor fsspec offers a lock. Acquiring reads the
highest generation; if it still holds (not expired; its process alive when it ran on
this machine) the caller is refused or waits, otherwise it creates the next generation
*if absent*. Exactly one contender creates a given generation, and a winner re-reads:
it holds only if the newest record carries its token. Generation numbers only grow:
a release marks the record expired instead of deleting it, and the winner of a
generation deletes the older records, which can no longer hold.

Keys are paths: ``store`` guards metadata changes (create, add a model slot, resize,
consolidate, overwrite) and is held for seconds; ``stats/<model>`` guards a model
slot for a whole build. Finer claims (work units of one build) are further keys of
the same kind under their slot's key.
"""

from __future__ import annotations

import getpass
import os
import signal
import threading
import time
import urllib.parse
import uuid
from dataclasses import replace
from typing import Any, Self

from store._faults import transport_errors
from store._lease_records import GENERATION_FILE, HOST, LEASE_DIR, MACHINE, LeaseFolder, LeaseRecord
from store._location import StoreLocation, entry_name
from store.errors import InputError, StoreLocationError, first_line

STRUCTURE_KEY = "store"
DEFAULT_TTL = 60.0  # seconds a lease outlives its last renewal
SAFE_FRACTION = 0.75  # a holder stops writing this far into a TTL: the rest absorbs clock skew
_POLL = 0.2  # seconds between attempts while waiting
_ATTEMPTS = 5  # create attempts per acquisition try while contenders keep winning generations
_RELEASE_WAIT = 3.0  # seconds the release's write may take before the build exits anyway
_JOIN_WAIT = 1.0  # seconds to wait for the heartbeat threads to stop
_WATCH_PERIOD = 1.0  # seconds between the watchdog's checks
_NOT_INSTALLED = object()

__all__ = ["LEASE_DIR", "STRUCTURE_KEY", "Lease", "LeaseError", "LeaseRecord", "live_leases", "slot_key"]


class LeaseError(InputError):
    """Another build holds the lease, or this build lost it: nothing committed is harmed."""


def slot_key(group: str, label: str) -> str:
    """The lease key of one model slot of a group."""
    return f"{group}/{urllib.parse.quote(label, safe='')}"


def _owner() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return f"uid{os.getuid()}"


class Lease:
    """A lease on ``key`` of a store: ``with Lease(...).acquire():`` holds it and releases it after."""

    def __init__(self, location: StoreLocation, key: str, purpose: str, ttl: float = DEFAULT_TTL) -> None:
        self.location, self.key, self.purpose, self.ttl = location, key, purpose, ttl
        self._folder = LeaseFolder(location, key)
        self._record: LeaseRecord | None = None
        self._pending: LeaseRecord | None = None  # the record this build tried to create last
        self._valid_until = 0.0  # monotonic time after which this holder must stop writing
        self._lost_to: LeaseRecord | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._previous_handler: Any = _NOT_INSTALLED
        self._renewal_error: Exception | None = None  # the last failed renewal's, named when the build stops

    # -- acquiring -------------------------------------------------------------------------------

    def acquire(self, wait: float = 0.0, interrupt: bool = False) -> Self:
        """Take the lease, waiting up to ``wait`` seconds for its holder; LeaseError names the holder.

        With ``interrupt`` (main thread only), losing the lease raises LeaseError in the main thread
        even while it is blocked in a write to a store that stopped answering.
        """
        deadline = time.monotonic() + wait
        while True:
            holder = self._attempt()
            if holder is None:
                self._start_threads(interrupt)
                return self
            if time.monotonic() >= deadline:
                raise LeaseError(self._refusal(holder))
            time.sleep(_POLL)

    def _attempt(self) -> LeaseRecord | None:
        """Take the lease now (None), or return the record that holds it."""
        try:
            for _ in range(_ATTEMPTS):
                try:
                    return self._claim_next()
                except FileExistsError:  # a contender (or our own retried PUT) made it: look again
                    continue
            newest = self._folder.newest()[1]
        except transport_errors() as error:
            raise StoreLocationError(
                f"cannot take the write lease on {self.location.display()!r}{self.location.endpoint_note()}: "
                f"{first_line(error)}; every committed token is kept: check that the store is writable and "
                "reachable, then rerun the same command to resume"
            ) from error
        if newest is None:
            raise LeaseError(f"could not take the write lease on {self.location.display()!r}: other "
                             "builds kept taking it first; rerun the command")
        return newest

    def _claim_next(self) -> LeaseRecord | None:
        started = time.monotonic()
        read = self._folder.generations()
        newest = self._folder.read(read[-1]) if read else None
        if newest is not None and self._pending is not None and newest.token == self._pending.token:
            return self._won(newest, read[:-1], started)  # our create landed though it reported a conflict
        if newest is not None and newest.holds(time.time()):
            return newest
        record = self._new_record(read[-1] + 1 if read else 1)
        self._pending = record
        self._folder.create(record)
        after = self._folder.newest()[1]
        if after is None or after.token != record.token:  # a contender that read later won
            self._delete_if_ours(record)
            return after or record
        return self._won(record, read, started)

    def _won(self, record: LeaseRecord, older: list[int], started: float) -> None:
        self._pending = None
        self._hold(record, started)
        for generation in older:  # expired or released: they can no longer hold
            self._folder.delete(generation)

    def _delete_if_ours(self, record: LeaseRecord) -> None:
        stored = self._folder.read(record.generation)
        if stored is not None and stored.token == record.token:
            self._folder.delete(record.generation)
        self._pending = None

    def _new_record(self, generation: int) -> LeaseRecord:
        now = time.time()
        return LeaseRecord(key=self.key, generation=generation, owner=_owner(), host=HOST, pid=os.getpid(),
                           purpose=self.purpose, token=uuid.uuid4().hex, acquired=now, expires=now + self.ttl,
                           machine=MACHINE)

    def _hold(self, record: LeaseRecord, started: float) -> None:
        """Hold ``record``, whose expiry was set after ``started``: stop writing well before it."""
        self._record = record
        self._valid_until = started + self.ttl * SAFE_FRACTION

    def _refusal(self, holder: LeaseRecord) -> str:
        return (f"store {self.location.display()!r} is being written by {holder.describe(time.time())}; "
                "wait for that build to end (a killed build's lease is taken over when it expires, "
                "at once on the same machine) or choose another --store")

    # -- holding ---------------------------------------------------------------------------------

    def _start_threads(self, interrupt: bool) -> None:
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
            except Exception as error:  # noqa: BLE001 - unreachable store: the watchdog stops the build in time
                self._renewal_error = error

    def _watch_until_stopped(self) -> None:
        """Signal the main thread once this build may no longer write (a renewal may itself be stuck)."""
        while not self._stop.wait(_WATCH_PERIOD):
            if self._lost_to is not None or time.monotonic() > self._valid_until:
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
                return

    def _raise_lost(self, signum: int, frame: object) -> None:
        if not self._stop.is_set():  # a signal landing during release changes nothing
            self.ensure_held()

    def renew(self) -> None:
        """Push the expiry one TTL ahead, unless it is too late or another build took the lease over."""
        record, started = self._record, time.monotonic()
        if record is None or self._lost_to is not None or self._stop.is_set() or started > self._valid_until:
            return  # too late to renew: rewriting could revive a record another build has replaced
        if not self._still_newest(record):
            return
        renewed = replace(record, expires=time.time() + self.ttl)
        self._folder.overwrite(renewed)
        if self._still_newest(record):
            self._hold(renewed, started)

    def _still_newest(self, record: LeaseRecord) -> bool:
        newest = self._folder.newest()[1]
        if newest is None or newest.token != record.token:
            self._lost_to = newest or replace(record, owner="(record gone)")
            return False
        return True

    def ensure_held(self) -> None:
        """Raise LeaseError unless this build may still write (checked before every commit, no I/O)."""
        where = self.location.display()
        if self._lost_to is not None:
            raise LeaseError(f"lost the write lease on {where!r} to {self._lost_to.describe(time.time())}; "
                             "every committed token is kept: rerun the same command to resume")
        if self._record is None:
            raise LeaseError(f"this build does not hold the write lease on {where!r} (it was released)")
        if time.monotonic() > self._valid_until:
            last = f": {first_line(self._renewal_error)}" if self._renewal_error is not None else ""
            raise LeaseError(f"store {where!r}{self.location.endpoint_note()} did not answer for {self.ttl * SAFE_FRACTION:.0f} s "
                             f"(the write lease could not be renewed{last}); every committed token is kept: "
                             "check the endpoint or the disk, then rerun the same command to resume")

    # -- releasing -------------------------------------------------------------------------------

    def release(self) -> None:
        """Stop renewing and mark this build's record released; if the store does not answer, it expires."""
        self._stop.set()
        try:
            for thread in self._threads:
                thread.join(_JOIN_WAIT)  # a renewal stuck on a dead endpoint is left to die with the process
        finally:
            self._restore_handler()
        record, self._record = self._record, None
        if record is None:
            return
        # kept, not deleted, so generation numbers only grow; a dead endpoint must not hold up the exit
        writer = threading.Thread(target=self._mark_released, args=(record,), daemon=True)
        writer.start()
        writer.join(_RELEASE_WAIT)

    def _restore_handler(self) -> None:
        if self._previous_handler is _NOT_INSTALLED:
            return
        previous, self._previous_handler = self._previous_handler, _NOT_INSTALLED
        signal.signal(signal.SIGUSR1, signal.SIG_DFL if previous is None else previous)

    def _mark_released(self, record: LeaseRecord) -> None:
        try:
            if self._lost_to is None:  # a lost record belongs to history: the new holder deletes it
                self._folder.overwrite(replace(record, expires=0.0))
        except Exception:  # noqa: BLE001 - already failing: an unreleased lease expires by itself
            return

    def __enter__(self) -> Self:
        if self._record is None:
            self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def other_writers(location: StoreLocation, group: str, own_key: str) -> list[LeaseRecord]:
    """Live leases of builds writing ``group`` other than the one holding ``own_key``."""
    return [record for record in live_leases(location, group) if record.key != own_key]


def live_leases(location: StoreLocation, prefix: str) -> list[LeaseRecord]:
    """Leases under ``prefix`` (slot keys and the unit claims under them) that still hold.

    One recursive listing; only records written in the last TTL (plus the clock allowance) are
    read: an older one has expired, so the released claims a large build leaves cost nothing.
    """
    fs, root = location.filesystem()
    base = f"{root.rstrip('/')}/{LEASE_DIR}/"
    try:
        listing = fs.find(f"{base}{prefix}", detail=True, **({"refresh": True} if location.is_remote else {}))
    except FileNotFoundError:
        return []
    now = time.time()
    keys = [key for key, info in _newest_files(listing, base).items() if _written_since(info, now - _RECENT)]
    newest = (LeaseFolder(location, key).newest()[1] for key in sorted(keys))
    return [record for record in newest if record is not None and record.holds(now)]


# A record last written longer ago than this has expired, even with the writer's clock ahead by the allowance.
_RECENT = DEFAULT_TTL + DEFAULT_TTL * (1 - SAFE_FRACTION)


def _newest_files(listing: dict[str, dict[str, Any]], base: str) -> dict[str, dict[str, Any]]:
    """Lease key -> the listing entry of its highest generation."""
    newest: dict[str, tuple[int, dict[str, Any]]] = {}
    for path, info in listing.items():
        match = GENERATION_FILE.match(entry_name(path))
        if match is None or not str(path).startswith(base):
            continue
        key, generation = str(path)[len(base):].rsplit("/", 1)[0], int(match.group(1))
        if key not in newest or generation > newest[key][0]:
            newest[key] = (generation, info)
    return {key: info for key, (_, info) in newest.items()}


def _written_since(info: dict[str, Any], moment: float) -> bool:
    """Whether a listed object was last written after ``moment`` (true when the listing does not say)."""
    modified = info.get("mtime", info.get("LastModified"))
    if hasattr(modified, "timestamp"):
        modified = modified.timestamp()
    return not isinstance(modified, (int, float)) or modified > moment
