"""``analysis.fit`` at store scale, side by side with the implementation before issue 13, in one run.

1. A synthetic store of 1,000,000 tokens, 3 layers x 13 metrics + 3 x 64 channels, drawn from known
   laws (Pareto, lognormal, exponential, stretched exponential, bounded near-ceiling metrics, Student-t
   channels). ``fit`` with the comparisons on all 231 series (goal: under 3 minutes on 2 cores).
2. The same store through the implementation before issue 13 (commit 953d770, checked out from git into a
   temporary folder) and this one, on the first ``--old_layers`` layer(s): 13 metric + 64 channel series
   each. The old one takes about a minute per layer here, so the ratio is measured on identical work.
3. The real store (default ``stores/activations.zarr``, 32,768 SmolLM2 tokens, 231 series) through both.
4. Verdicts with goodness-of-fit p-values (precision 0.01: at most 2,500 replicates, fewer where p is
   clearly above or below 0.1) for the 39 metric series of the synthetic store (goal: under 10 minutes).

Every fit runs in a fresh subprocess with the dask processes scheduler (``python -m analysis.fit``'s
default: threads reach about one core, as much of a fit holds the GIL: one layer of the synthetic
store took 59.8 s on threads, 35.2 s on processes), without the cache; the seconds are the fit's own
(opening and imports excluded).

    python bench/fit_store_bench.py                       # the whole comparison, about 20 minutes
    python bench/fit_store_bench.py --tokens 100000 --old_layers 0 --no_verdict
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _synthetic_store import HIDDEN_SIZE, SEQ_LEN, build_store

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "953d770"  # the last commit before issue 13's changes to the fitting code
LAYERS = ("embed", "middle", "pre_last")
METRICS = ("rms", "l2_norm", "l1_norm", "linf_norm", "variance", "kurtosis", "skewness", "entropy", "gini",
           "participation_ratio", "mean_abs", "max_value", "hoyer")
CEILINGS = {"entropy": np.log(HIDDEN_SIZE), "gini": 1.0, "hoyer": 1.0, "participation_ratio": float(HIDDEN_SIZE)}
CHANNELS = 64
RUNNER = """
import json, sys, time
import dask
from analysis import fit, open_store
ds = open_store(sys.argv[1])
layers = int(sys.argv[2])
if layers:
    ds = ds.isel(layer=slice(0, layers))
options = json.loads(sys.argv[3])
with dask.config.set(scheduler="processes"):
    started = time.perf_counter()
    fits = fit(ds, cache=False, **options).compute()
    seconds = time.perf_counter() - started
summary = {"seconds": seconds, "series": int(fits.alpha.size + (fits.channel_alpha.size if "channel_alpha" in fits else 0))}
if "verdict" in fits:
    meanings = fits.verdict.attrs["flag_meanings"].split()
    summary["verdicts"] = [meanings[int(code)] for code in fits.verdict.values.ravel()]
    summary["gof_n"] = [int(n) for n in fits.gof_n.values.ravel()]
    summary["gof_p"] = [float(p) for p in fits.gof_p.values.ravel()]
    summary["names"] = [f"{layer}/{metric}" for layer in fits.layer.values for metric in fits.metric.values]
print(json.dumps(summary))
"""


def _law(rng: np.random.Generator, kind: int, size: int) -> np.ndarray:
    """One of six known laws, by ``kind``: the tails the fits and verdicts should tell apart."""
    laws = (lambda: rng.pareto(1.5, size) + 1.0, lambda: rng.lognormal(0.0, 1.0, size),
            lambda: rng.exponential(1.0, size), lambda: rng.weibull(0.5, size),
            lambda: rng.pareto(0.9, size) + 1.0, lambda: (rng.pareto(1.2, size) + 1.0) * np.exp(-rng.exponential(0.01, size)))
    return laws[kind % len(laws)]()


def _draw(rng: np.random.Generator, start: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    values = np.empty((len(LAYERS), len(METRICS), n), np.float32)
    for layer in range(len(LAYERS)):
        for index, metric in enumerate(METRICS):
            if metric in CEILINGS:  # the approach to a fixed maximum, as the bounded metrics have
                values[layer, index] = CEILINGS[metric] * (1 - rng.beta(2.0, 30.0, n))
            else:
                values[layer, index] = _law(rng, layer * len(METRICS) + index, n)
    degrees = np.where(np.arange(CHANNELS) % 2, 3.0, 30.0)  # half heavy-tailed (t3), half near-Gaussian
    channel_values = rng.standard_t(degrees, (len(LAYERS), n, CHANNELS)).astype(np.float32)
    peaks = rng.integers(0, HIDDEN_SIZE, (len(LAYERS), n)).astype(np.int32)
    return values, channel_values, peaks


def _old_code(folder: Path) -> Path | None:
    """The fitting code as it was at ``BEFORE``, unpacked from git (analysis and store only); None without it."""
    folder.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE, "analysis", "store"], check=False,
                             capture_output=True)
    if archive.returncode:
        print(f"  (no side-by-side: commit {BEFORE} is not in this clone; a shallow clone lacks it)")
        return None
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


def _fit(code: Path, store: Path, layers: int, options: dict[str, Any]) -> dict[str, Any]:
    environment = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run([sys.executable, "-c", RUNNER, str(store), str(layers), json.dumps(options)],
                          check=False, env=environment, capture_output=True, text=True, cwd=code)
    if done.returncode:
        raise SystemExit(f"the fit in {code} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _line(label: str, result: dict[str, Any], goal: str = "") -> None:
    print(f"  {label:<52} {result['seconds']:8.1f} s  ({result['series']} series){goal}", flush=True)


def _side_by_side(label: str, old: Path, store: Path, layers: int) -> None:
    before = _fit(old, store, layers, {})
    now = _fit(ROOT, store, layers, {})
    _line(f"{label}, before issue 13 ({BEFORE})", before)
    _line(f"{label}, now", now)
    print(f"  {'ratio (before / now)':<52} {before['seconds'] / now['seconds']:8.1f}x", flush=True)


def _verdicts(store: Path, precision: float) -> None:
    result = _fit(ROOT, store, 0, {"channels": False, "verdict": True, "gof_precision": precision})
    _line(f"verdicts, 39 metric series, GoF precision {precision}", result, "   goal < 600 s")
    counts = {name: result["verdicts"].count(name) for name in sorted(set(result["verdicts"]))}
    replicates = np.array(result["gof_n"])
    print(f"  verdicts: {counts}")
    print(f"  GoF replicates per series: median {np.median(replicates):.0f}, max {replicates.max()}, "
          f"total {replicates.sum():,}", flush=True)
    for index in np.argsort(-replicates)[:3]:  # the long ones: p near 0.1 cannot stop early
        print(f"    {result['names'][index]}: {replicates[index]} replicates, p = {result['gof_p'][index]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1_000_000, help="synthetic tokens (default 1,000,000)")
    parser.add_argument("--old_layers", type=int, default=1,
                        help="layers of the synthetic store fitted by both implementations (0: skip)")
    parser.add_argument("--real", type=Path, default=ROOT / "stores" / "activations.zarr",
                        help="a real store fitted by both (skipped if absent)")
    parser.add_argument("--no_verdict", action="store_true", help="skip the verdicts")
    parser.add_argument("--gof_precision", type=float, default=0.01,
                        help="precision of the verdicts' p-values (default 0.01: at most 2,500 replicates)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "synthetic.zarr"
        build_store(store, options.tokens // SEQ_LEN * SEQ_LEN, LAYERS, METRICS, CHANNELS, _draw)
        old = _old_code(Path(folder) / "before")
        print(f"synthetic store: {options.tokens:,} tokens, {len(LAYERS)} layers x {len(METRICS)} metrics + "
              f"{len(LAYERS)} x {CHANNELS} channels")
        _line("fit with comparisons, every series, now", _fit(ROOT, store, 0, {}), "   goal < 180 s")
        if options.old_layers and old:
            _side_by_side(f"first {options.old_layers} layer(s)", old, store, options.old_layers)
        if options.real.exists() and old:
            print(f"real store: {options.real}")
            _side_by_side("every series", old, options.real, 0)
        if not options.no_verdict:
            _verdicts(store, options.gof_precision)


if __name__ == "__main__":
    main()
