"""Builds on dask.distributed (``--cluster local:2``): the same store as in-process, whatever is killed.

Every build here runs ``python -m builders.collect`` in a subprocess, as a user would: the
LocalCluster's worker processes are its children, so killing them (or it) is a real kill.
A tiny Llama computes 4 work units of 4,096 tokens.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from analysis import open_store
from store import UNIT_COMMITTED, StoreLocation, live_leases, validate_store
from store._staging import STAGING_DIR

REPO = Path(__file__).resolve().parents[2]
N_TOKENS, UNIT_TOKENS = 16384, 4096
COMPARED = ("value", "channel_value", "token_id", "doc_index", "unit_state", "committed_tokens", "channel_index",
            "layer_index")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pydoc_data.topics import topics

    path = tmp_path_factory.mktemp("corpus") / "pydoc.txt"
    path.write_text("\n\n".join(topics.values()))
    return path


@pytest.fixture(scope="module")
def build_args(tiny_model: Callable[[str], Path], corpus: Path) -> list[str]:
    return ["--model.name", str(tiny_model("llama")), "--model.label", "tiny", "--data.name", str(corpus),
            "--data.max_tokens", str(N_TOKENS), "--data.max_seq_len", "128", "--data.batch_size", "2",
            "--stats.channels", "4", "--stats.commit_tokens", "1024", "--stats.shard_tokens", str(UNIT_TOKENS),
            "--model.device", "cpu", "--progress", "false"]


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    return subprocess.Popen([sys.executable, "-m", "builders.collect", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(process: subprocess.Popen[bytes], timeout: float = 300) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out.decode(), err.decode()


@pytest.fixture(scope="module")
def reference(build_args: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The in-process build's arrays: what every other build must equal, bitwise."""
    path = tmp_path_factory.mktemp("reference") / "ref.zarr"
    code, _, err = _finish(_spawn([*build_args, "--store", str(path)]))
    assert code == 0, err
    return _arrays(StoreLocation(str(path)))


def _arrays(location: StoreLocation) -> dict[str, np.ndarray]:
    dataset = xr.open_zarr(location.zarr_store(read_only=True), group="stats", consolidated=False)
    return {name: dataset[name].values for name in COMPARED}


def _assert_same(reference: dict[str, np.ndarray], location: StoreLocation) -> None:
    validate_store(location)
    actual = _arrays(location)
    for name, expected in reference.items():
        assert expected.tobytes() == actual[name].tobytes(), f"{name} differs from the in-process build"


def _unit_states(location: StoreLocation) -> np.ndarray:
    try:
        group = zarr.open_group(location.zarr_store(read_only=True), path="stats", mode="r", use_consolidated=False)
        return np.asarray(group["unit_state"][0])
    except (FileNotFoundError, KeyError):
        return np.zeros(0, np.int8)


def _wait_for(find: Callable[[], object], process: subprocess.Popen[bytes], timeout: float = 240) -> object:
    """Poll ``find`` until it returns something truthy, which is returned; fail if the build ends first."""
    deadline = time.monotonic() + timeout
    while not (found := find()):
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the build ended before the moment to act: {_finish(process)[2][-2000:]}")
        time.sleep(0.02)
    return found


def test_local_cluster_build_is_bitwise_the_in_process_build(
        build_args: list[str], reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    location = StoreLocation(str(tmp_path / "cluster.zarr"))
    code, out, err = _finish(_spawn([*build_args, "--store", location.url, "--cluster", "local:2"]))
    assert code == 0, err
    assert "Collected model 'tiny'" in out
    _assert_same(reference, location)
    assert not (tmp_path / "cluster.zarr" / STAGING_DIR / "stats").exists() or not any(
        (tmp_path / "cluster.zarr" / STAGING_DIR / "stats").rglob("*.npz")), "checkpoints outlived their units"


def _checkpointing_worker(location: StoreLocation, client_pid: int) -> int | None:
    """The pid of a worker that holds a unit claim and has checkpointed part of that unit."""
    staged = {path.parent.name for path in Path(location.url, STAGING_DIR).rglob("*.npz")}
    for record in live_leases(location, "stats"):
        if "/units/" in record.key and record.pid != client_pid and record.key.rsplit("/", 1)[-1] in staged:
            return record.pid
    return None


def test_killed_worker_is_replaced_and_the_store_ends_identical(
        build_args: list[str], reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    location = StoreLocation(str(tmp_path / "killed-worker.zarr"))
    process = _spawn([*build_args, "--store", location.url, "--cluster", "local:2", "--commit_seconds", "0"])
    victim = _wait_for(lambda: _checkpointing_worker(location, process.pid), process)
    os.kill(int(victim), signal.SIGKILL)  # mid-unit: the nanny restarts it, dask reruns its task
    code, _, err = _finish(process)
    assert code == 0, err
    _assert_same(reference, location)


def test_killed_client_then_rerun_ends_identical(
        build_args: list[str], reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    location = StoreLocation(str(tmp_path / "killed-client.zarr"))
    args = [*build_args, "--store", location.url, "--cluster", "local:2", "--commit_seconds", "0"]
    process = _spawn(args)
    _wait_for(lambda: (_unit_states(location) == UNIT_COMMITTED).any(), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (_unit_states(location) == UNIT_COMMITTED).all(), "the build was not interrupted mid-way"
    code, out, err = _finish(_spawn(args))
    assert code == 0, err
    assert "Resuming model 'tiny'" in out
    _assert_same(reference, location)


def test_reader_during_a_cluster_build_sees_only_committed_units(
        build_args: list[str], reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    location = StoreLocation(str(tmp_path / "read-while-building.zarr"))
    process = _spawn([*build_args, "--store", location.url, "--cluster", "local:2", "--commit_seconds", "0"])
    seen = set()
    for dataset, states in _read_while_running(location, process):
        n_tokens = dataset.sizes["token"]
        assert all(states[index] == UNIT_COMMITTED for index in range(n_tokens // UNIT_TOKENS)), states
        values = dataset.value.values[0]
        np.testing.assert_array_equal(values, reference["value"][0][..., :n_tokens])
        seen.add(n_tokens)
    code, _, err = _finish(process)
    assert code == 0, err
    assert seen, "no read happened while the build was running"


def _read_while_running(location: StoreLocation,
                        process: subprocess.Popen[bytes]) -> Iterator[tuple[xr.Dataset, np.ndarray]]:
    while process.poll() is None:
        if (Path(location.url) / "stats" / "unit_state").exists():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "not committed yet: ..." is expected here
                    dataset = open_store(location.url)
            except Exception:  # noqa: BLE001 - a store still being created or consolidated
                time.sleep(0.05)
                continue
            yield dataset.load(), _unit_states(location)  # markers read after the data: never fewer
        time.sleep(0.05)


def test_cluster_build_and_in_process_build_of_one_model_never_lose_tokens(
        build_args: list[str], reference: dict[str, np.ndarray], target: tuple[StoreLocation, list[str]]) -> None:
    location, store_args = target
    cluster = _spawn([*build_args, *store_args, "--cluster", "local:2"])
    _wait_for(lambda: location.exists(), cluster)
    second = _finish(_spawn([*build_args, *store_args]))
    first = _finish(cluster)
    outcomes = sorted([first, second], key=lambda result: result[0])
    assert outcomes[0][0] == 0, outcomes[0][2]
    code, out, err = outcomes[1]
    if code == 2:  # refused: one line naming the other build
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "is being written by" in lines[0], err
    else:  # it started after the other ended: nothing left to do
        assert code == 0 and "Nothing to do" in out, err
    _assert_same(reference, location)
