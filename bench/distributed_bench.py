"""Throughput of ``builders.collect`` in-process against ``--cluster local:2``, side by side in one run.

The tiny Llama of tests/tiny_models.py (hidden size 32, 32 sampled channels), default metrics and
layers, 512-token rows, 1,048,576 tokens: four work units of 262,144 tokens, two per worker. The
in-process build uses torch's default threads (every core); each cluster worker gets one thread,
so on this 2-core machine the two configurations use the same cores. Each build runs as a user
runs it (``python -m builders.collect`` in a subprocess); the figure compared is the build's own
tokens/s over its compute phase (after the model loads and the text is tokenised into the store),
and the whole command's wall time is shown beside it. Issue 7's goal: local:2 >= 0.9x in-process.

    python bench/distributed_bench.py                      # 1 round of each, alternating
    python bench/distributed_bench.py --rounds 2 --tokens 524288
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from _corpus import write_corpus  # noqa: E402 - bench/ is on the path when run as a script
_RATE = re.compile(r"\(([\d,]+) tokens/s\)")


def _build(model: Path, corpus: Path, store: Path, tokens: int, cluster: str) -> tuple[float, float]:
    """(compute-phase tokens/s, whole-command seconds) of one build."""
    argv = [sys.executable, "-m", "builders.collect", "--model.name", str(model), "--data.name", str(corpus),
            "--store", str(store),
            "--data.max_tokens", str(tokens), "--data.max_seq_len", "512", "--data.batch_size", "4",
            "--stats.channels", "32", "--model.device", "cpu", "--progress", "false"]
    if cluster:
        argv += ["--cluster", cluster, "--cluster.threads_per_worker", "1"]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    seconds = time.perf_counter() - started
    rate = _RATE.search(done.stdout)
    if done.returncode != 0 or rate is None:
        raise SystemExit(f"build failed ({done.returncode}): {done.stderr[-2000:]}")
    if f"{tokens // 512 * 512:,} tokens x" not in done.stdout:
        raise SystemExit(f"the build collected fewer tokens than asked: {done.stdout.splitlines()[0]}")
    return float(rate.group(1).replace(",", "")), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1_048_576, help="tokens per build (default 1,048,576)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of both builds (default 1)")
    args = parser.parse_args()
    from tiny_models import save_tiny_model

    results: dict[str, list[tuple[float, float]]] = {"in-process": [], "local:2": []}
    with tempfile.TemporaryDirectory() as folder:
        with contextlib.redirect_stderr(io.StringIO()):
            model = save_tiny_model("llama", Path(folder) / "llama")
        corpus = write_corpus(Path(folder), args.tokens)
        for round_number in range(args.rounds):
            for name, cluster in (("in-process", ""), ("local:2", "local:2")):
                store = Path(folder) / f"{name.replace(':', '-')}-{round_number}.zarr"
                results[name].append(_build(model, corpus, store, args.tokens, cluster))
    for name, runs in results.items():
        rate, wall = statistics.median(r for r, _ in runs), statistics.median(w for _, w in runs)
        print(f"{name:>10}: {rate:>9,.0f} tokens/s while computing; {wall:6.1f} s for the whole command")
    ratio = statistics.median(r for r, _ in results["local:2"]) / statistics.median(r for r, _ in results["in-process"])
    walls = statistics.median(w for _, w in results["in-process"]) / statistics.median(w for _, w in results["local:2"])
    print(f"local:2 / in-process: {ratio:.2f}x while computing (goal >= 0.9), {walls:.2f}x whole command")


if __name__ == "__main__":
    main()
