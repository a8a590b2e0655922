"""Faults under a running build: a paused S3 endpoint, a full disk, a store turned read-only.

Each ends in one ``error:`` line and exit code 2 within a stated time, keeps every committed
token, and the same command resumes once the fault is gone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

from store import StoreLocation, validate_store

REPO = Path(__file__).resolve().parents[2]
Runner = Callable[..., tuple[int, str, str]]
DEAD_ENDPOINT_BOUND_S = 60  # docs/store-format.md states this bound for a build's clear error
N_TOKENS = 8192


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def paused_endpoint() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A moto S3 server in its own process (so SIGSTOP pauses only it), with a bucket."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(Bucket="faults")
            break
        except Exception:  # noqa: BLE001 - the server is still starting
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    yield endpoint, server
    server.send_signal(signal.SIGCONT)
    server.kill()
    server.wait()


def _args(model: Path, store_args: list[str]) -> list[str]:
    return ["--model.name", str(model), *store_args, "--data.max_tokens", str(N_TOKENS), "--data.max_seq_len", "128",
            "--data.batch_size", "1", "--stats.channels", "4", "--stats.metrics", "rms,linf_norm",
            "--stats.commit_tokens", "256", "--stats.shard_tokens", "1024", "--model.device", "cpu",
            "--progress", "false"]


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    return subprocess.Popen([sys.executable, "-m", "builders.collect", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _committed(location: StoreLocation) -> int:
    try:
        group = zarr.open_group(location.zarr_store(read_only=True), path="stats", mode="r", use_consolidated=False)
        return int(group["committed_tokens"][0])
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def _wait_for_commits(process: subprocess.Popen[bytes], location: StoreLocation, tokens: int) -> None:
    deadline = time.monotonic() + 120
    while _committed(location) < tokens and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, f"the build ended before the fault: {process.stderr.read()!r}"


def _one_error_line(process: subprocess.Popen[bytes], timeout: float) -> tuple[str, float]:
    started = time.monotonic()
    _, err = process.communicate(timeout=timeout)
    elapsed = time.monotonic() - started
    text = err.decode()
    assert process.returncode == 2, text
    assert len(text.strip().splitlines()) == 1 and text.startswith("error: ") and "Traceback" not in text, text
    return text, elapsed


def test_a_paused_endpoint_ends_in_one_error_within_the_bound_and_the_build_resumes(
        tiny_model: Callable[[str], Path], paused_endpoint: tuple[str, subprocess.Popen[bytes]],
        collect_cli: Runner) -> None:
    endpoint, server = paused_endpoint
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    location = StoreLocation("s3://faults/paused.zarr", options)
    args = _args(tiny_model("llama"), ["--store", location.url, "--storage_options", f"endpoint_url={endpoint}"])
    build = _spawn(args)
    _wait_for_commits(build, location, 512)
    server.send_signal(signal.SIGSTOP)
    try:
        message, elapsed = _one_error_line(build, timeout=DEAD_ENDPOINT_BOUND_S + 30)
    finally:
        server.send_signal(signal.SIGCONT)
    print(f"dead endpoint: clear error after {elapsed:.1f} s: {message.strip()}")
    assert elapsed < DEAD_ENDPOINT_BOUND_S, f"took {elapsed:.1f} s"
    assert endpoint in message and "rerun the same command" in message
    kept = _committed(location)
    assert kept >= 512
    resumed = _spawn(args)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()
    dataset = validate_store(location)
    assert dataset.committed_tokens.values.tolist() == [N_TOKENS] and np.isfinite(dataset.value.values).all()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 384 KiB tmpfs (root only): a real full disk and a real read-only remount. The template, the
    vocabulary and a unit or two fit (the whole store takes about 590 KiB of it)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=384k", "tmpfs", str(mount_point)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _remount(mount_point: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount_point)], check=True)


def _resume_completes(args: list[str], location: StoreLocation, kept: int) -> None:
    resumed = _spawn(args)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()
    dataset = validate_store(location)
    assert dataset.committed_tokens.values.tolist() == [N_TOKENS] and np.isfinite(dataset.value.values).all()
    assert kept > 0


def test_a_full_disk_is_one_error_and_the_build_resumes_once_space_is_freed(
        tiny_model: Callable[[str], Path], small_disk: Path) -> None:
    location = StoreLocation(str(small_disk / "full.zarr"))
    args = _args(tiny_model("llama"), ["--store", location.url])
    message, _ = _one_error_line(_spawn(args), timeout=120)
    assert "No space left on device" in message and "free some disk space" in message, message
    kept = _committed(location)
    assert 0 < kept < N_TOKENS, "the disk did not fill mid-build"
    validate_store(location)  # what was committed before the disk filled is a valid store
    _remount(small_disk, "size=8m")
    _resume_completes(args, location, kept)


def test_a_store_turned_read_only_mid_build_is_one_error_and_resumes_when_writable(
        tiny_model: Callable[[str], Path], small_disk: Path) -> None:
    _remount(small_disk, "size=8m")
    location = StoreLocation(str(small_disk / "ro.zarr"))
    args = _args(tiny_model("llama"), ["--store", location.url])
    build = _spawn(args)
    _wait_for_commits(build, location, 512)
    _remount(small_disk, "ro")
    try:
        message, _ = _one_error_line(build, timeout=120)
    finally:
        _remount(small_disk, "rw")
    assert "Read-only file system" in message and "make the store writable again" in message, message
    _resume_completes(args, location, _committed(location))


def test_resuming_over_a_truncated_shard_is_refused_naming_variable_and_tokens(
        tiny_model: Callable[[str], Path], collect_cli: Runner, tmp_path: Path) -> None:
    from small_stores import tree_digest

    location = StoreLocation(str(tmp_path / "damaged.zarr"))
    args = _args(tiny_model("llama"), ["--store", location.url])
    build = _spawn(args)
    _wait_for_commits(build, location, 1024)
    build.send_signal(signal.SIGKILL)
    build.wait()
    shard = location.local_path / "stats" / "value" / "c" / "0" / "0" / "0" / "0"  # tokens 0..1024
    shard.write_bytes(shard.read_bytes()[:-100])  # a torn copy, a bad disk sector
    before = tree_digest(location.local_path)
    code, _, err = collect_cli(*args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert "'value' of model" in err and "tokens 0.." in err and "--overwrite" in err, err
    assert tree_digest(location.local_path) == before
