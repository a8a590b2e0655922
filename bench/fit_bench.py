"""Benchmark of ``analysis.fit_power_law`` against ``powerlaw.Fit``, side by side in one run.

1. The same samples through both, at 10K and 50K values: seconds, speed-up, and whether
   xmin and alpha agree (goal: >= 100x faster, identical xmin).
2. Ours alone on 10 million values, no subsampling (goal: under 60 s on a 2-core CPU).

    python bench/fit_bench.py                          # Pareto and lognormal samples
    python bench/fit_bench.py --sizes 10000 --big 1000000
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from analysis import fit_power_law


def _samples(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "pareto":
        return rng.pareto(1.5, n) + 1.0  # alpha = 2.5: every value is in the power-law regime
    return rng.lognormal(0.0, 1.0, n)


def _timed(function, *args, **kwargs):  # noqa: ANN001, ANN202
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def side_by_side(kinds: list[str], sizes: list[int]) -> None:
    import powerlaw

    print(f"{'sample':<10} {'n':>7} {'powerlaw s':>11} {'ours s':>8} {'speed-up':>9} {'xmin same':>10} {'alpha rel diff':>15}")
    for kind in kinds:
        for n in sizes:
            values = _samples(kind, n, seed=n)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reference, reference_s = _timed(powerlaw.Fit, values, verbose=0)
            ours, ours_s = _timed(fit_power_law, values, alpha_range=(0, 3))  # powerlaw's default range
            same = ours.xmin == reference.xmin
            relative = abs(ours.alpha - reference.alpha) / reference.alpha
            print(f"{kind:<10} {n:>7} {reference_s:>11.2f} {ours_s:>8.3f} {reference_s / ours_s:>8.0f}x "
                  f"{str(same):>10} {relative:>15.2e}", flush=True)


def large(kinds: list[str], n: int) -> None:
    print(f"\nours alone, {n:,} values, no subsampling")
    for kind in kinds:
        values = _samples(kind, n, seed=7)
        result, seconds = _timed(fit_power_law, values)
        print(f"  {kind:<10} {seconds:8.1f} s   xmin {result.xmin:.5g}  alpha {result.alpha:.5f}  n_tail {result.n_tail:,}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--big", type=int, default=10_000_000)
    parser.add_argument("--kinds", nargs="+", default=["pareto", "lognormal"])
    options = parser.parse_args()
    fit_power_law(_samples("pareto", 1000, 0))  # load the compiled kernel once (about 0.5 s), as a session would
    side_by_side(options.kinds, options.sizes)
    large(options.kinds, options.big)


if __name__ == "__main__":
    main()
