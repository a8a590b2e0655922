"""``python -m analysis.plot`` on the default store with its fits cached: every figure, timed end to end.

Issue 16's goal: all plots of the default 32,768-token store in under 60 s on this 2-core CPU once
the fits are cached (the figures a ZipfActivation user looks at: a fitted rank-frequency and an
annotated CCDF per (model, layer, metric), the layer overlays, the dashboards, the HTML page). The
command runs in a fresh process, as a user runs it (imports, opening, reading the cached fits, drawing,
saving), once with one drawing process and once with one per core, in alternating order over
``--rounds`` rounds, so the ratio is measured side by side. The fits are computed (and cached) first,
untimed.

    python bench/plot_bench.py                                   # the default store, 2 rounds
    python bench/plot_bench.py --store stores/other.zarr --channels
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 60.0


def _plot(store: str, out: Path, workers: int, channels: bool) -> tuple[float, int]:
    """Seconds of one ``python -m analysis.plot`` run and the files it wrote."""
    command = [sys.executable, "-m", "analysis.plot", store, "--out", str(out), "--workers", str(workers)]
    started = time.perf_counter()
    done = subprocess.run([*command, *(["--channels"] if channels else [])], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds, sum(1 for path in out.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=str(ROOT / "stores" / "activations.zarr"), help="store path or catalog name")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (one process, every core), alternating")
    parser.add_argument("--channels", action="store_true", help="also the per-channel curves")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(f"store: {options.store}; caching the fits first (untimed)", flush=True)
        _plot(options.store, Path(folder) / "warm", 0, options.channels)
        seconds: dict[int, list[float]] = {1: [], 0: []}
        for round_index in range(options.rounds):
            order = (1, 0) if round_index % 2 == 0 else (0, 1)
            for workers in order:
                spent, files = _plot(options.store, Path(folder) / f"r{round_index}w{workers}", workers,
                                     options.channels)
                seconds[workers].append(spent)
        one, every = min(seconds[1]), min(seconds[0])
        print(f"  every plot, one drawing process          {one:7.1f} s  ({files} files)")
        print(f"  every plot, one process per core         {every:7.1f} s  goal < {GOAL_SECONDS:.0f} s "
              f"({'met' if every < GOAL_SECONDS else 'NOT met'})")
        print(f"  ratio (one process / every core)         {one / every:7.1f}x  (best of {options.rounds} rounds each)")


if __name__ == "__main__":
    main()
