"""Reading never needs write access: fits of read-only stores, local and on S3, match a writable copy.

(a) A local store made read-only with ``chmod -R a-w``. Root ignores file modes, so when the
    tests run as root the store is also opened through read-only zarr stores
    (``zarr.storage.LocalStore(read_only=True)``, what a reader of a read-only mount gets), and
    one more test drops to an unprivileged user (``os.seteuid``) so the kernel itself refuses.
(b) An S3 bucket on a moto server that enforces IAM (``INITIAL_NO_AUTH_ACTION_COUNT``), read with
    an access key whose policy allows only ``s3:GetObject`` and ``s3:ListBucket``. The server runs
    in a subprocess because tests/conftest.py already imports moto in-process without auth.

Either way: the same numbers as a writable copy, nothing written into the store (its listing with
sizes and mtimes or ETags is unchanged), and ``cache="store"`` refused before any work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
import xarray as xr

import analysis
from analysis import _dataset_fit, open_store
from store import InputError, StoreLocation

SMALL = ["--data.max_tokens", "256", "--data.max_seq_len", "64", "--data.batch_size", "2",
         "--stats.channels", "2", "--stats.commit_tokens", "128", "--stats.layers", "embed,middle",
         "--stats.metrics", "rms,kurtosis,linf_norm,channel_wise", "--model.device", "cpu", "--progress", "false"]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NOBODY = 65534
BUCKET = "read-only-bucket"


@pytest.fixture(scope="module")
def shared_folder() -> Iterator[Path]:
    """A folder every user may read (pytest's own temporary folders are private to their owner)."""
    folder = Path(tempfile.mkdtemp(prefix="readonly-"))
    folder.chmod(0o755)
    yield folder
    _make_writable(folder)
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def built_store(shared_folder: Path, tiny_model: Callable[[str], Path]) -> Path:
    from builders.collect import main

    store = shared_folder / "built.zarr"
    assert main(["--model.name", str(tiny_model("llama")), "--store", str(store), *SMALL]) == 0
    return store


@pytest.fixture(scope="module")
def reference(built_store: Path) -> xr.Dataset:
    """The fits of a writable copy: what every read-only reader must get."""
    with dask.config.set(scheduler="synchronous"):
        return analysis.fit(open_store(str(built_store)), compare=False, cache=False).compute()


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ACTIVATION_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _make_writable(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


@pytest.fixture
def read_only_store(built_store: Path, shared_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    store = shared_folder / "read-only.zarr"
    shutil.copytree(built_store, store)
    for path in [store, *store.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    if IS_ROOT:  # chmod does not stop root: every zarr store of any location refuses writes instead
        real = StoreLocation.zarr_store
        monkeypatch.setattr(StoreLocation, "zarr_store", lambda self, read_only=False: real(self, read_only=True))
    yield store
    _make_writable(store)
    shutil.rmtree(store)


def _local_listing(store: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(store)): (p.stat().st_size, p.stat().st_mtime_ns) for p in [store, *store.rglob("*")]}


def _series_fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = _dataset_fit._fit_series
    monkeypatch.setattr(_dataset_fit, "_fit_series", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


def _assert_same_fits(fits: xr.Dataset, reference: xr.Dataset) -> None:
    for name in ("alpha", "xmin", "n_tail", "slope", "channel_alpha", "status"):
        np.testing.assert_array_equal(fits[name].values, reference[name].values)


def _check_reader(open_read_only: Callable[[], xr.Dataset], reference: xr.Dataset, cache: Path,
                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The library calls of a read-only reader: same fits, a local cache entry, cache='store' refused early."""
    calls = _series_fits(monkeypatch)
    with dask.config.set(scheduler="synchronous"):
        _assert_same_fits(analysis.fit(open_read_only(), compare=False).compute(), reference)
        assert len(list((cache / "fits").glob("*.zarr"))) == 1 and calls
        computed = len(calls)
        _assert_same_fits(analysis.fit(open_read_only(), compare=False).compute(), reference)
        assert len(calls) == computed  # served from the local cache
        with pytest.raises(InputError, match="cache='local'"):
            analysis.fit(open_read_only(), compare=False, n_boot=1, cache="store")
        assert len(calls) == computed  # refused before computing anything


def _check_commands(target: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m analysis.fit`` and ``python -m analysis.plot`` on a read-only store."""
    from analysis.fit import main as fit_main
    from analysis.plot import main as plot_main

    assert fit_main([*target, "--no_compare", "--scheduler", "synchronous"]) == 0
    printed = capsys.readouterr()  # the reader's library call cached these fits: a hit, nothing written
    assert "fits read from the cache" in printed.err and "written" not in printed.err + printed.out
    assert fit_main([*target, "--no_compare", "--cache", "store"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cache='store' needs write access") and err.count("\n") == 1
    with dask.config.set(scheduler="synchronous"):
        assert plot_main([*target, "--out", str(out), "--no_html"]) == 0
    assert len(list(out.glob("*_channel_heatmap.png"))) == 1 and len(list(out.glob("*.png"))) >= 3
    assert list(out.glob("ccdf/*/*.png")) and list(out.glob("rank_frequency/*/*.png"))


# ---- (a) a local store -----------------------------------------------------------------------------

def test_local_read_only_store(read_only_store: Path, reference: xr.Dataset, private_cache: Path,
                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    before = _local_listing(read_only_store)
    _check_reader(lambda: open_store(str(read_only_store)), reference, private_cache, monkeypatch)
    _check_commands([str(read_only_store)], tmp_path / "plots", capsys)
    assert _local_listing(read_only_store) == before


@contextlib.contextmanager
def _as_unprivileged_user() -> Iterator[None]:
    """Root acting as 'nobody' for file access; the saved user id lets it switch back."""
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.mark.skipif(not IS_ROOT, reason="as another user, test_local_read_only_store is already enforced by chmod")
def test_local_read_only_store_refuses_root_dropped_to_nobody(built_store: Path, shared_folder: Path,
                                                              reference: xr.Dataset,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store = shared_folder / "kernel-read-only.zarr"
    shutil.copytree(built_store, store)
    for path in [store, *store.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    cache = shared_folder / "nobody-cache"
    cache.mkdir()
    os.chown(cache, NOBODY, -1)
    monkeypatch.setenv("ACTIVATION_CACHE", str(cache))
    before = _local_listing(store)
    try:
        with _as_unprivileged_user():
            with pytest.raises(PermissionError):
                (store / "probe").write_text("x")  # the kernel really refuses this user
            _check_reader(lambda: open_store(str(store)), reference, cache, monkeypatch)
    finally:
        _make_writable(store)
        assert _local_listing(store) == before
        shutil.rmtree(store)
        shutil.rmtree(cache)


# ---- (b) an S3 bucket with a key that may only read ------------------------------------------------

_MOTO = """
import sys
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from moto.iam.access_control import IAMRequestBase
from moto.server import ThreadedMotoServer

original = IAMRequestBase._create_aws_request


def requoted(self):
    # moto checks signatures against the server's decoded query ('/' where the client signed %2F), so
    # any list with a '/' in its prefix fails as SignatureDoesNotMatch; re-quote it as AWS SigV4 does
    parts = urlsplit(self._path)
    query = urlencode(parse_qsl(parts.query, keep_blank_values=True), quote_via=quote, safe="-_.~")
    self._path = parts.path + ("?" + query if query else "")
    return original(self)


IAMRequestBase._create_aws_request = requoted
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()  # until the test closes our stdin
server.stop()
"""
_ADMIN_REQUESTS = 3  # create_user, put_user_policy, create_access_key: unauthenticated; then IAM applies
_READ_ONLY_POLICY = """{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::%(bucket)s/*"]},
  {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::%(bucket)s"]}]}"""
_ADMIN_POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}'


@pytest.fixture(scope="module")
def iam_endpoint() -> Iterator[str]:
    """A moto server on 127.0.0.1 that enforces IAM after its first few requests."""
    pytest.importorskip("moto")
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_ADMIN_REQUESTS)}  # the subprocess only
    server = subprocess.Popen([sys.executable, "-c", _MOTO], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env=env, text=True)  # no request log in test output
    try:
        yield f"http://127.0.0.1:{int(server.stdout.readline())}"  # type: ignore[union-attr]
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _user(iam: Any, name: str, policy: str) -> dict[str, str]:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}


def _client(service: str, endpoint: str, credentials: dict[str, str]) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=credentials["key"], aws_secret_access_key=credentials["secret"])


@pytest.fixture(scope="module")
def s3_read_only(iam_endpoint: str, built_store: Path) -> dict[str, Any]:
    """The store in a bucket: an admin's credentials (setup, listing) and a reader's (GetObject, ListBucket)."""
    admin = _user(_client("iam", iam_endpoint, {"key": "setup", "secret": "setup"}), "admin", _ADMIN_POLICY)
    s3 = _client("s3", iam_endpoint, admin)
    s3.create_bucket(Bucket=BUCKET)
    for path in sorted(p for p in built_store.rglob("*") if p.is_file()):
        s3.upload_file(str(path), BUCKET, f"store.zarr/{path.relative_to(built_store)}")
    reader = _user(_client("iam", iam_endpoint, admin), "reader", _READ_ONLY_POLICY % {"bucket": BUCKET})
    return {"url": f"s3://{BUCKET}/store.zarr", "endpoint": iam_endpoint, "admin": admin, "reader": reader}


def _bucket_listing(s3: Any) -> dict[str, tuple[int, str]]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return {o["Key"]: (o["Size"], o["ETag"]) for page in pages for o in page.get("Contents", [])}


def test_s3_store_read_with_a_key_that_cannot_write(s3_read_only: dict[str, Any], reference: xr.Dataset,
                                                    private_cache: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import s3fs

    reader, endpoint, url = s3_read_only["reader"], s3_read_only["endpoint"], s3_read_only["url"]
    options = {"endpoint_url": endpoint, "client_kwargs": {"region_name": "us-east-1"}, **reader}
    with pytest.raises(PermissionError):  # the reader really may not write
        s3fs.S3FileSystem(skip_instance_cache=True, **options).pipe_file(f"{BUCKET}/store.zarr/probe", b"x")
    admin_s3 = _client("s3", endpoint, s3_read_only["admin"])
    before = _bucket_listing(admin_s3)
    _check_reader(lambda: open_store(url, storage_options=options), reference, private_cache, monkeypatch)
    flags = ["--storage_options", f"endpoint_url={endpoint}", "--storage-options", f"key={reader['key']}",
             "--storage-options", f"secret={reader['secret']}", "--storage_options",
             "client_kwargs={region_name: us-east-1}"]
    _check_commands([url, *flags], tmp_path / "plots", capsys)
    assert _bucket_listing(admin_s3) == before
