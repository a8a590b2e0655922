"""The lease protocol on every backend: exclusive, named in refusals, renewed, taken over only when dead."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import BUCKET

from store import (
    LEASE_DIR,
    Lease,
    LeaseError,
    LeaseRecord,
    StoreLocation,
    StoreLocationError,
    live_leases,
    slot_key,
)
from store._lease_records import MACHINE, LeaseFolder


@pytest.fixture(params=["local", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    if request.param == "local":
        return StoreLocation(str(tmp_path / "store.zarr"))
    return StoreLocation(f"s3://{BUCKET}/{uuid.uuid4().hex}.zarr", request.getfixturevalue("s3_options"))


def _lease_files(location: StoreLocation) -> list[str]:
    fs, root = location.filesystem()
    try:
        return sorted(fs.find(f"{root}/{LEASE_DIR}"))
    except FileNotFoundError:
        return []


def test_a_held_lease_refuses_a_second_holder_by_name_and_leaves_nothing_when_released(
        location: StoreLocation) -> None:
    with Lease(location, "stats/m", "collect model 'm'").acquire():
        assert len(_lease_files(location)) == 1
        with pytest.raises(LeaseError) as refusal:
            Lease(location, "stats/m", "collect model 'm'").acquire()
        message = str(refusal.value)
        assert "collect model 'm'" in message and f"pid {os.getpid()}" in message
        assert "choose another --store" in message
        with Lease(location, "stats/other", "another slot").acquire():  # other keys are independent
            pass
    assert live_leases(location, "stats") == []
    assert len(_lease_files(location)) == 2  # one released record per key: generations only grow
    with Lease(location, "stats/m", "again").acquire():  # released: free to take
        pass


def _race(location: StoreLocation, key: str, contenders: int) -> int:
    """How many of ``contenders`` threads starting at once believe they hold ``key``."""
    winners: list[Lease] = []
    barrier = threading.Barrier(contenders)

    def contend() -> None:
        lease = Lease(location, key, "race")
        barrier.wait()
        try:
            winners.append(lease.acquire())
        except LeaseError:
            pass

    threads = [threading.Thread(target=contend) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for lease in winners:
        lease.release()
    return len(winners)


def test_only_one_of_many_racing_contenders_wins(location: StoreLocation) -> None:
    assert [_race(location, f"race/{round_}", 6) for round_ in range(8)] == [1] * 8


def test_waiting_takes_the_lease_once_its_holder_releases(location: StoreLocation) -> None:
    holder = Lease(location, "store", "brief metadata change").acquire()
    threading.Timer(0.5, holder.release).start()
    started = time.monotonic()
    with Lease(location, "store", "waiter").acquire(wait=20):
        assert 0.3 < time.monotonic() - started < 15


def _plant(location: StoreLocation, key: str, **fields: object) -> LeaseRecord:
    now = time.time()
    record = LeaseRecord(key=key, generation=1, owner="someone", host="elsewhere", pid=1, purpose="collect",
                         token="t", acquired=now, expires=now + 60)
    record = replace(record, **fields)
    LeaseFolder(location, key).create(record)
    return record


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(location: StoreLocation) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    _plant(location, "stats/m", machine=MACHINE, pid=int(finished.stdout))  # as kill -9 leaves it
    with Lease(location, "stats/m", "resume").acquire():
        assert LeaseFolder(location, "stats/m").generations() == [2]  # the dead one's record was replaced


def test_a_live_lease_elsewhere_holds_until_it_expires(location: StoreLocation) -> None:
    _plant(location, "stats/m", expires=time.time() + 1.5)
    with pytest.raises(LeaseError, match=r"someone@elsewhere pid 1 \(collect; lease expires in"):
        Lease(location, "stats/m", "second").acquire()
    assert [lease.owner for lease in live_leases(location, "stats")] == ["someone"]
    with Lease(location, "stats/m", "second").acquire(wait=10):
        assert live_leases(location, "stats")[0].purpose == "second"


def test_the_heartbeat_keeps_a_short_lease_alive_and_detects_a_takeover(location: StoreLocation) -> None:
    lease = Lease(location, "stats/m", "long build", ttl=1.0).acquire()
    time.sleep(2.5)  # well past the first expiry: only the heartbeat keeps it
    lease.ensure_held()
    with pytest.raises(LeaseError):
        Lease(location, "stats/m", "intruder").acquire()
    _plant(location, "stats/m", generation=99)  # another build took it over (as after a long stall)
    time.sleep(1.0)
    with pytest.raises(LeaseError, match="lost the write lease .* to someone@elsewhere"):
        lease.ensure_held()
    lease.release()


def test_a_holder_that_cannot_renew_stops_before_its_lease_could_be_taken(location: StoreLocation) -> None:
    lease = Lease(location, "stats/m", "stalled", ttl=1.0).acquire()
    lease._stop.set()  # as if every renewal failed (endpoint down)
    time.sleep(0.9)
    with pytest.raises(LeaseError, match="did not answer for 1 s"):
        lease.ensure_held()
    lease.release()


def test_slot_keys_are_one_path_segment_per_label() -> None:
    assert slot_key("stats", "org/model v1") == "stats/org%2Fmodel%20v1"


def test_an_unwritable_store_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "store.zarr"
    blocker.write_text("a file where the store should be")
    with pytest.raises(StoreLocationError, match="cannot take the write lease on .*store.zarr.*rerun the same command"):
        Lease(StoreLocation(str(blocker)), "store", "x").acquire()
    assert blocker.read_text() == "a file where the store should be"


def test_a_contender_with_a_stale_read_never_displaces_the_holder(location: StoreLocation) -> None:
    _plant(location, "k", expires=time.time() - 1)  # an expired generation 1
    holder = Lease(location, "k", "the holder").acquire()
    stale = Lease(location, "k", "stale")
    real_generations = stale._folder.generations
    reads = iter([[1]])  # its first listing predates the holder's generation 2
    stale._folder.generations = lambda: next(reads, None) or real_generations()  # type: ignore[method-assign]
    with pytest.raises(LeaseError, match="the holder"):
        stale.acquire()
    holder.ensure_held()
    holder.release()
    with Lease(location, "k", "after").acquire():  # generation numbers keep growing after a release
        assert LeaseFolder(location, "k").generations() == [3]


def test_a_create_that_landed_but_reported_a_conflict_is_recognised_as_ours(location: StoreLocation) -> None:
    lease = Lease(location, "k", "retried PUT")
    real_create = lease._folder.create

    def landed_then_conflict(record: LeaseRecord) -> None:  # botocore retried a PUT that had succeeded
        real_create(record)
        raise FileExistsError("At least one of the pre-conditions you specified did not hold")

    lease._folder.create = landed_then_conflict  # type: ignore[method-assign]
    with lease.acquire():
        lease.ensure_held()


def test_a_failing_renewal_is_named_when_the_build_stops(location: StoreLocation) -> None:
    lease = Lease(location, "stats/m", "renewing", ttl=1.0).acquire()

    def unreachable(record: LeaseRecord) -> None:
        raise ConnectionError("endpoint http://127.0.0.1:9 refused the connection")

    lease._folder.overwrite = unreachable  # type: ignore[method-assign]
    time.sleep(1.2)
    with pytest.raises(LeaseError, match="could not be renewed: endpoint http://127.0.0.1:9 refused"):
        lease.ensure_held()
    lease.release()


def test_live_leases_finds_unit_claims_and_reads_only_recent_records(
        location: StoreLocation, monkeypatch: pytest.MonkeyPatch) -> None:
    for unit in range(3):  # released claims of a finished build: listed, never read
        Lease(location, f"stats/m/units/{unit:06d}", "done").acquire().release()
    _plant(location, "stats/m/units/000003", expires=time.time() + 30)  # a worker elsewhere, computing
    reads: list[int] = []
    original = LeaseFolder.read
    monkeypatch.setattr(LeaseFolder, "read", lambda folder, generation: reads.append(1) or original(folder, generation))
    assert [record.key for record in live_leases(location, "stats")] == ["stats/m/units/000003"]
    assert len(reads) == 4  # all four were written just now: each is read once
    monkeypatch.setattr("store._lease._RECENT", -60.0)  # as if every record were written long ago
    reads.clear()
    assert live_leases(location, "stats") == [] and reads == []
