"""Two builds at once into one store, local and S3 (moto): a clean refusal or cooperation, never lost tokens.

The first build runs in a subprocess (a real other process, with its own pid and lease);
the second runs in-process while the first is still writing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from store import StoreLocation, live_leases, open_session, slot_key, validate_store
from store._lease_records import LeaseFolder

REPO = Path(__file__).resolve().parents[2]
Runner = Callable[..., tuple[int, str, str]]
N_TOKENS = 4096  # 16 commits: long enough for a second build to start while the first writes


def _args(model: Path, label: str, store_args: list[str]) -> list[str]:
    return ["--model.name", str(model), "--model.label", label, *store_args, "--data.max_tokens", str(N_TOKENS),
            "--data.max_seq_len", "128", "--data.batch_size", "1", "--stats.channels", "4",
            "--stats.metrics", "rms,linf_norm", "--stats.commit_tokens", "256", "--stats.shard_tokens", "256",
            "--model.device", "cpu",
            "--progress", "false"]


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    return subprocess.Popen([sys.executable, "-m", "builders.collect", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _committed(location: StoreLocation, label: str) -> int:
    try:
        group = zarr.open_group(location.zarr_store(read_only=True), path="stats", mode="r", use_consolidated=False)
        labels = [str(name) for name in group["model"][:]]
        return int(group["committed_tokens"][labels.index(label)]) if label in labels else 0
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def _wait_until_writing(process: subprocess.Popen[bytes], location: StoreLocation, label: str) -> None:
    deadline = time.monotonic() + 120
    while _committed(location, label) == 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, f"the first build ended before the second began: {process.stderr.read()!r}"


def _finish(process: subprocess.Popen[bytes]) -> None:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode()


def test_two_models_built_at_once_both_land_whole(
        tiny_model: Callable[[str], Path], collect_cli: Runner, target: tuple[StoreLocation, list[str]],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    location, store_args = target
    first = _spawn(_args(tiny_model("llama"), "a", store_args))
    _wait_until_writing(first, location, "a")
    while_adding: list[bool] = []

    def open_session_observed(*args: object, **kwargs: object) -> object:
        while_adding.append(first.poll() is None and _committed(location, "a") < N_TOKENS)
        return open_session(*args, **kwargs)

    monkeypatch.setattr("builders.collect.open_session", open_session_observed)
    code, _, err = collect_cli(*_args(tiny_model("qwen3"), "b", store_args))
    assert code == 0, err
    _finish(first)
    reference = tmp_path / "reference.zarr"
    for model, label in (("llama", "a"), ("qwen3", "b")):
        assert collect_cli(*_args(tiny_model(model), label, ["--store", str(reference)]))[0] == 0
    shared = validate_store(location)
    expected = xr.open_zarr(reference, group="stats")
    assert shared.committed_tokens.values.tolist() == [N_TOKENS, N_TOKENS]
    for name in ("value", "argmax_channel", "channel_value", "token_id", "doc_index"):
        for label in ("a", "b"):
            assert shared[name].sel(model=label).values.tobytes() == expected[name].sel(model=label).values.tobytes()
    assert while_adding[:1] == [True], "the first build had ended before the second added its slot"


def test_a_second_build_is_refused_then_a_kill_9_leaves_a_lease_that_the_rerun_takes_over(
        tiny_model: Callable[[str], Path], collect_cli: Runner, target: tuple[StoreLocation, list[str]]) -> None:
    """One scenario (one build fewer on each backend than two tests): the same model built twice at once is
    refused naming the first build; the first is then killed with -9; the rerun takes its lease over."""
    location, store_args = target
    args = _args(tiny_model("llama"), "m", store_args)
    process = _spawn(args)
    _wait_until_writing(process, location, "m")
    code, _, err = collect_cli(*args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"pid {process.pid} (collect model 'm'" in err and "is being written by" in err
    process.send_signal(signal.SIGKILL)
    process.wait()
    left = LeaseFolder(location, slot_key("stats", "m")).newest()[1]
    assert left is not None and left.pid == process.pid and left.expires > time.time()  # unexpired record
    assert live_leases(location, "stats") == []  # yet its process is dead on this machine: it holds nothing
    group = zarr.open_group(location.zarr_store(read_only=True), path="stats", mode="r", use_consolidated=False)
    done = int((group["unit_state"][0] == 2).sum())  # the prefix may lag a unit behind a kill
    code, out, err = collect_cli(*args)
    assert code == 0, err
    assert f"Resuming model 'm': {done} of 16 units committed ({done * 256:,} of" in out
    dataset = validate_store(location)
    assert dataset.committed_tokens.values.tolist() == [N_TOKENS] and np.isfinite(dataset.value.values).all()
    assert live_leases(location, "stats") == []  # released: one record kept, holding nothing
    assert collect_cli(*args)[0] == 0 and live_leases(location, "stats") == []  # complete: nothing to do
