"""Lease overhead per commit, local disk and S3 (moto on 127.0.0.1), measured side by side in one run.

Each round writes the same commits (one work unit each: its tokens, its statistics, its
marker and the committed prefix) twice into fresh stores of one layout through the unit
writer (``store.write_unit_tokens``, ``store.UnitWriter``, ``store.publish_prefix``): once
holding the build's lease and a claim per unit (as ``builders.collect`` does: the writer
checks them before every write, heartbeats renew them in the background, and acquiring and
releasing them are part of the build), once without. Rounds alternate the
order. Printed: median time per commit with and without and their ratio (goal: within
noise, under 1.01), and the lease's parts measured alone: the check before each commit
(no I/O), one heartbeat renewal (a LIST and a PUT, every 15 s) and one acquire + release.

    python bench/lease_bench.py                  # 5 rounds of 32 commits on each backend
    python bench/lease_bench.py --rounds 3 --commits 16 --backends local
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
from _moto import moto_bucket

from store import (
    Lease,
    ModelSlot,
    StatsBlock,
    StatsLayout,
    StoreLocation,
    Unit,
    UnitWriter,
    claim_unit,
    open_session,
    plan_units,
    publish_prefix,
    slot_key,
    write_unit_tokens,
)

TOKEN_CHUNK = 1024


def _layout(commits: int) -> StatsLayout:
    return StatsLayout(layers=("embed", "middle", "pre_last"), metrics=("rms", "kurtosis", "linf_norm"),
                       n_tokens=commits * TOKEN_CHUNK, n_channels=8, token_chunk=TOKEN_CHUNK,
                       requested_shard_tokens=TOKEN_CHUNK)  # one commit = one work unit


def _slot() -> ModelSlot:
    provenance = {"model_id": "bench", "revision": "", "config": {}, "created": "now", "versions": {}}
    return ModelSlot("bench", np.array([-1, 1, 2]), np.tile(np.arange(8), (3, 1)), provenance)


def _attrs() -> dict[str, Any]:
    return {"format": "activation-stats", "format_version": 2, "metric_definitions": {}, "dataset": {},
            "build_config": {}, "token_chunk": TOKEN_CHUNK, "created": "now", "versions": {}}


def _block(start: int, layout: StatsLayout) -> StatsBlock:
    rng = np.random.default_rng(start)
    n = layout.token_chunk
    return StatsBlock(start, rng.normal(size=(3, 3, n)).astype(np.float32),
                      rng.normal(size=(3, n, 8)).astype(np.float32), rng.integers(0, 8, (3, n), dtype=np.int32))


def _commit(location: StoreLocation, session: Any, units: list[Unit], unit: Unit, block: StatsBlock,
            lease: Lease | None) -> None:
    """One unit as a build commits it: tokens, statistics under the unit's claim, marker, prefix."""
    token_ids = np.arange(unit.start, unit.end, dtype=np.int32) % 50_000
    write_unit_tokens(session.group, session.slot, unit, token_ids, np.zeros(unit.n_tokens, np.int64), lease)
    claim = claim_unit(location, slot_key("stats", "bench"), unit, "bench") if lease else nullcontext()
    with claim as held:
        writer = UnitWriter(session.group, session.slot, unit, held, None, commit_seconds=60.0)
        writer.append(block)
        writer.commit()
    publish_prefix(session.group, session.slot, units, lease)


def _build(location: StoreLocation, commits: int, with_lease: bool) -> float:
    """Seconds per commit of one build, lease acquire and release included when held."""
    layout = _layout(commits)
    units = plan_units(layout.n_tokens, layout.shard_tokens)
    blocks = [_block(unit.start, layout) for unit in units]
    started = time.perf_counter()
    lease = Lease(location, slot_key("stats", "bench"), "bench") if with_lease else None
    with lease.acquire() if lease else nullcontext():
        session = open_session(location, layout, _slot(), _attrs())
        for unit, block in zip(units, blocks):
            _commit(location, session, units, unit, block, lease)
    return (time.perf_counter() - started) / commits


def _lease_costs(location: StoreLocation, times: int = 20) -> tuple[float, float, float]:
    """Seconds per acquire + release, per renewal (the heartbeat's I/O) and per commit-time check."""
    started = time.perf_counter()
    for _ in range(times):
        Lease(location, "store", "bench").acquire().release()
    acquire_release = (time.perf_counter() - started) / times
    with Lease(location, "store", "bench").acquire() as lease:
        started = time.perf_counter()
        for _ in range(times):
            lease.renew()
        renew = (time.perf_counter() - started) / times
        started = time.perf_counter()
        for _ in range(10_000):
            lease.ensure_held()
        check = (time.perf_counter() - started) / 10_000
    return acquire_release, renew, check


@contextmanager
def _backend(name: str) -> Iterator[Callable[[], StoreLocation]]:
    if name == "local":
        with tempfile.TemporaryDirectory() as folder:
            yield lambda: StoreLocation(os.path.join(folder, f"{uuid.uuid4().hex}.zarr"))
        return
    with moto_bucket("bench") as options:
        yield lambda: StoreLocation(f"s3://bench/{uuid.uuid4().hex}.zarr", options)


def _measure(name: str, rounds: int, commits: int) -> None:
    with _backend(name) as new_location:
        with_lease, without = [], []
        for round_ in range(rounds):
            order = (True, False) if round_ % 2 == 0 else (False, True)
            for held in order:
                (with_lease if held else without).append(_build(new_location(), commits, held))
        acquire_release, renew, check = _lease_costs(new_location())
    held, bare = statistics.median(with_lease), statistics.median(without)
    print(f"{name:>5}: per commit {held * 1e3:8.2f} ms with lease, {bare * 1e3:8.2f} ms without "
          f"({held / bare:.3f}x side by side); lease parts: check {check * 1e6:.2f} us per commit, "
          f"renewal {renew * 1e3:.1f} ms every 15 s, acquire+release {acquire_release * 1e3:.1f} ms per build")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per backend")
    parser.add_argument("--commits", type=int, default=32, help="commits of 1,024 tokens per build")
    parser.add_argument("--backends", default="local,s3", help="comma-separated: local, s3")
    args = parser.parse_args()
    for name in args.backends.split(","):
        _measure(name.strip(), args.rounds, args.commits)


if __name__ == "__main__":
    main()
