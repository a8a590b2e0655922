"""Top-k query speed, and bytes read from S3 for a one-series query.

    python bench/query_bench.py                 # 10,000,000 tokens of one (model, layer, metric) series
    python bench/query_bench.py --tokens 2000000 --rounds 3

A synthetic store (written through the store API, no model) holds four series (layers embed and
middle, metrics rms and linf_norm) of heavy-tailed values, with a massive activation on the first
token of every 10th row in linf_norm at middle, the token ids, document numbers, argmax_channel and
a 49,152-token vocabulary. The query touches one of the four series. Side by side in one run, alternating:

* ``analysis.query.top_tokens(store, k=20)`` from the store's path (open, top-20, the hits' token
  ids, documents and peak channels, 8 tokens of decoded context each): goal under 2 s;
* the floor: the same series read whole with zarr-python and ``np.argpartition`` (no texts).

Then the store is copied to a moto S3 server on 127.0.0.1 and the same query is run once, counting
the bytes s3fs hands to zarr (``_cat_file`` and ``_cat_ranges``, which every chunk read goes through):
goal at most 1.2x the stored size of that one series (its shards' objects).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).parent))
from _moto import moto_bucket
from _synthetic_store import HIDDEN_SIZE, SEQ_LEN, VOCABULARY
from _synthetic_store import build_store as build_synthetic
from _timing import paired

from analysis.query import top_tokens
from store import StoreLocation, Vocabulary, write_vocabulary


def _unit_data(rng: np.random.Generator, start: int, n: int) -> tuple[np.ndarray, ...]:
    values = rng.lognormal(1.0, 0.6, (2, 2, n)).astype(np.float32)  # (layer, metric, token)
    first_tokens = np.arange(-start % SEQ_LEN, n, SEQ_LEN)
    values[1, 1, first_tokens[::10]] *= 1000.0  # a massive activation on the first token of every 10th row
    peaks = rng.integers(0, HIDDEN_SIZE, (2, n)).astype(np.int32)
    return values, np.zeros((2, n, 0), np.float32), peaks


def build_store(path: Path, n_tokens: int) -> StoreLocation:
    location = build_synthetic(path, n_tokens, ("embed", "middle"), ("rms", "linf_norm"), 0, _unit_data)
    tokens = [f"tok{i}" for i in range(VOCABULARY)]
    write_vocabulary(location, "synthetic", Vocabulary(tokens, [f" w{i}" for i in range(VOCABULARY)],
                                                       np.zeros(VOCABULARY, bool), 0))
    return location


def series_bytes(path: Path) -> int:
    """Stored size of the queried series (model 0, middle, linf_norm): its shard objects."""
    return sum(file.stat().st_size for file in (path / "stats" / "value" / "c" / "0" / "1" / "1").iterdir())


def floor(path: Path) -> float:
    series = zarr.open_array(str(path / "stats" / "value"), mode="r")[0, 1, 1, :]
    return float(series[np.argpartition(series, -20)[-20:]].max())


class ReadCounter:
    """Bytes s3fs returns to its callers (every chunk and metadata read goes through these two)."""

    def __init__(self) -> None:
        self.bytes = 0

    def patch(self) -> Iterator[None]:
        import contextlib
        from unittest import mock

        import s3fs

        cat_file, cat_ranges = s3fs.S3FileSystem._cat_file, s3fs.S3FileSystem._cat_ranges

        async def counted_file(fs: Any, *args: Any, **kwargs: Any) -> bytes:
            data = await cat_file(fs, *args, **kwargs)
            self.bytes += len(data)
            return data

        async def counted_ranges(fs: Any, *args: Any, **kwargs: Any) -> list[Any]:
            parts = await cat_ranges(fs, *args, **kwargs)
            self.bytes += sum(len(part) for part in parts if isinstance(part, bytes))
            return parts

        stack = contextlib.ExitStack()
        stack.enter_context(mock.patch.object(s3fs.S3FileSystem, "_cat_file", counted_file))
        stack.enter_context(mock.patch.object(s3fs.S3FileSystem, "_cat_ranges", counted_ranges))
        return stack  # type: ignore[return-value]


def s3_bytes(path: Path, bucket: str = "bench") -> tuple[int, float]:
    import s3fs

    with moto_bucket(bucket) as options:
        fs = s3fs.S3FileSystem(key=options["key"], secret=options["secret"],
                               client_kwargs={"endpoint_url": options["endpoint_url"]})
        fs.put(str(path), f"{bucket}/q.zarr", recursive=True)
        counter = ReadCounter()
        started = time.perf_counter()
        with counter.patch():
            top_tokens(f"s3://{bucket}/q.zarr", "linf_norm", "middle", k=20, storage_options=options)
        return counter.bytes, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=10_000_000, help="tokens in the series (default 10M)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of each path (default 5)")
    options = parser.parse_args()
    n_tokens = options.tokens // SEQ_LEN * SEQ_LEN
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "q.zarr"
        started = time.perf_counter()
        build_store(path, n_tokens)
        print(f"synthetic store: {n_tokens:,} tokens x 4 series, the queried one {series_bytes(path) / 1e6:.1f} MB stored, "
              f"built in {time.perf_counter() - started:.1f} s")
        query = top_tokens(str(path), "linf_norm", "middle", k=20)
        if not (query["position"] == 0).all():
            raise SystemExit("the top 20 are not the planted massive activations: the query is wrong")
        times = paired(lambda: top_tokens(str(path), "linf_norm", "middle", k=20), lambda: floor(path),
                       rounds=options.rounds)
        ours, bare = statistics.median(times[0]), statistics.median(times[1])
        print(f"top-20 query (open, rank, texts, context): median {ours:.3f} s, best {min(times[0]):.3f} s "
              f"(goal < 2 s)")
        print(f"floor (zarr read + argpartition):          median {bare:.3f} s; ratio query / floor "
              f"{ours / bare:.2f}")
        read, seconds = s3_bytes(path)
        size = series_bytes(path)
        print(f"S3 (moto): the same query read {read / 1e6:.2f} MB in {seconds:.2f} s for a series of "
              f"{size / 1e6:.2f} MB: ratio {read / size:.3f} (goal <= 1.2)")


if __name__ == "__main__":
    main()
