"""Write amplification of ``builders.collect``: bytes handed to the store over the final store size.

The tiny Llama of tests/tiny_models.py (hidden size 32, so 32 sampled channels), default metrics
and layers, 512-token rows.

Every byte zarr writes goes through its store's ``set`` (local: one file written and
renamed; S3: one PUT), so wrapping ``set`` counts what a build writes, including any
rewrite of a shard; checkpoints inside a work unit (``store/_staging.py``) are counted
too. Lease records are left out of both sides (a few hundred bytes per unit). The final
size is the sum of the objects in the store afterwards. Issue 7's goal: at most 1.5 for
a 1,000,000-token build, local and through moto. ``--commit_seconds`` below the time a
unit takes shows the cost of checkpoints (a slow model: at most about 2).

    python bench/write_amplification.py                       # tiny Llama, 1,000,000 tokens, local
    python bench/write_amplification.py --tokens 200000 --backends local,s3
    python bench/write_amplification.py --commit_seconds 1       # checkpoints every second
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
from _corpus import write_corpus
from _moto import moto_bucket

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


class _Counter:
    """Bytes and calls through every zarr store's ``set`` while active."""

    def __init__(self) -> None:
        self.bytes = 0
        self.calls = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        from store._staging import Staging

        originals = {cls: cls.set for cls in (zarr.storage.LocalStore, zarr.storage.FsspecStore)}
        original_save = Staging.save

        def counted_save(staging: Any, start: int, end: int, arrays: dict[str, Any]) -> None:
            self.bytes += sum(array.nbytes for array in arrays.values())
            self.calls += 1
            original_save(staging, start, end, arrays)

        def wrap(original: Any) -> Any:
            async def counted_set(store: Any, key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
                self.bytes += len(value.to_bytes())
                self.calls += 1
                return await original(store, key, value, *args, **kwargs)
            return counted_set

        with contextlib.ExitStack() as stack:
            for cls, original in originals.items():
                stack.enter_context(mock.patch.object(cls, "set", wrap(original)))
            stack.enter_context(mock.patch.object(Staging, "save", counted_save))
            yield


def _store_size(url: str, options: dict[str, Any]) -> tuple[int, int]:
    from store import StoreLocation

    fs, path = StoreLocation(url, options).filesystem()
    listing = fs.find(path, detail=True)
    files = [info for name, info in listing.items() if info.get("type") != "directory" and "/_leases/" not in name]
    return sum(int(info["size"]) for info in files), len(files)


def _collected(url: str, options: dict[str, Any]) -> int:
    import xarray as xr

    from store import StoreLocation

    store = StoreLocation(url, options).zarr_store(read_only=True)
    return int(xr.open_zarr(store, group="stats", consolidated=False).committed_tokens.values.min())


def _build(model: Path, corpus: Path, url: str, options: dict[str, Any], tokens: int, commit: int,
           commit_seconds: float) -> tuple[_Counter, float]:
    from builders.collect import main

    counter = _Counter()
    argv = ["--model.name", str(model), "--data.name", str(corpus), "--store", url, "--data.max_tokens", str(tokens),
            "--data.max_seq_len",
            "512", "--data.batch_size", "4", "--stats.channels", "32", "--model.device", "cpu", "--progress", "false",
            "--commit_seconds", str(commit_seconds)]
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
    parser.add_argument("--commit_tokens", type=int, default=0, help="inner chunk (default: the builder's)")
    parser.add_argument("--commit_seconds", type=float, default=60.0, help="checkpoint interval (default 60)")
    parser.add_argument("--backends", default="local", help="comma-separated: local, s3 (moto on 127.0.0.1)")
    args = parser.parse_args()
    from tiny_models import save_tiny_model

    with tempfile.TemporaryDirectory() as folder:
        with contextlib.redirect_stderr(io.StringIO()):
            model = save_tiny_model("llama", Path(folder) / "llama")
        corpus = write_corpus(Path(folder), args.tokens)
        for name in args.backends.split(","):
            with _backend(name.strip(), folder) as (url, options):
                counter, seconds = _build(model, corpus, url, options, args.tokens, args.commit_tokens,
                                          args.commit_seconds)
                size, objects = _store_size(url, options)
                collected = _collected(url, options)
            print(f"{name:>5}: {collected:,} tokens in {seconds:.0f} s; wrote {counter.bytes / 1e6:,.1f} MB in "
                  f"{counter.calls:,} writes for a {size / 1e6:,.1f} MB store of {objects:,} objects: "
                  f"amplification {counter.bytes / size:.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
