"""Write amplification of ``builders.collect``: bytes handed to the store over the final store size.

The tiny Llama of tests/tiny_models.py (hidden size 32, so 32 sampled channels), default metrics
and layers, 512-token rows.

Every byte zarr writes goes through its store's ``set`` (local: one file written and
renamed; S3: one PUT), so wrapping ``set`` counts what a build writes, including the
rewrites of partly filled shards at each commit. The final size is the sum of the
objects in the store afterwards. Issue 7's goal: at most 1.5 for a 1,000,000-token
build, local and through moto.

    python bench/write_amplification.py                       # tiny Llama, 1,000,000 tokens, local
    python bench/write_amplification.py --tokens 200000 --backends local,s3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import zarr.storage
from _moto import moto_bucket

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


class _Counter:
    """Bytes and calls through every zarr store's ``set`` while active."""

    def __init__(self) -> None:
        self.bytes = 0
        self.calls = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        originals = {cls: cls.set for cls in (zarr.storage.LocalStore, zarr.storage.FsspecStore)}

        def wrap(original: Any) -> Any:
            async def counted_set(store: Any, key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
                self.bytes += len(value.to_bytes())
                self.calls += 1
                return await original(store, key, value, *args, **kwargs)
            return counted_set

        with contextlib.ExitStack() as stack:
            for cls, original in originals.items():
                stack.enter_context(mock.patch.object(cls, "set", wrap(original)))
            yield


def _store_size(url: str, options: dict[str, Any]) -> tuple[int, int]:
    from store import StoreLocation

    fs, path = StoreLocation(url, options).filesystem()
    listing = fs.find(path, detail=True)
    files = [info for name, info in listing.items() if info.get("type") != "directory" and "/_leases/" not in name]
    return sum(int(info["size"]) for info in files), len(files)


def _build(model: Path, url: str, options: dict[str, Any], tokens: int, commit: int) -> tuple[_Counter, float]:
    from builders.collect import main

    counter = _Counter()
    argv = ["--model.name", str(model), "--store", url, "--data.max_tokens", str(tokens), "--data.max_seq_len",
            "512", "--data.batch_size", "4", "--stats.channels", "32", "--model.device", "cpu", "--progress", "false"]
    if commit:
        argv += ["--stats.commit_tokens", str(commit)]
    if options.get("endpoint_url"):
        argv += ["--storage_options", f"endpoint_url={options['endpoint_url']}"]
    started = time.perf_counter()
    with counter.counting(), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    if code != 0:
        raise SystemExit(f"the build failed with exit code {code}")
    return counter, time.perf_counter() - started


@contextlib.contextmanager
def _backend(name: str, folder: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if name == "local":
        yield os.path.join(folder, "amplification.zarr"), {}
        return
    with moto_bucket("bench") as options:
        yield f"s3://bench/{uuid.uuid4().hex}.zarr", options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1_000_000, help="tokens collected (default 1,000,000)")
    parser.add_argument("--commit_tokens", type=int, default=0, help="commit interval (default: the builder's)")
    parser.add_argument("--backends", default="local", help="comma-separated: local, s3 (moto on 127.0.0.1)")
    args = parser.parse_args()
    from tiny_models import save_tiny_model

    with tempfile.TemporaryDirectory() as folder:
        with contextlib.redirect_stderr(io.StringIO()):
            model = save_tiny_model("llama", Path(folder) / "llama")
        for name in args.backends.split(","):
            with _backend(name.strip(), folder) as (url, options):
                counter, seconds = _build(model, url, options, args.tokens, args.commit_tokens)
                size, objects = _store_size(url, options)
            print(f"{name:>5}: {args.tokens:,} tokens in {seconds:.0f} s; wrote {counter.bytes / 1e6:,.1f} MB in "
                  f"{counter.calls:,} writes for a {size / 1e6:,.1f} MB store of {objects:,} objects: "
                  f"amplification {counter.bytes / size:.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
