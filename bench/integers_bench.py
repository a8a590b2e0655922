"""Exact integer encoding and hypercube views, side by side in one run.

1. Encoding: ``builders.integers.encode`` against the reference converter's method (per element,
   ``decimal`` with its default 28-digit context: ``Decimal(x) * 10**e`` rounded half-even) on the
   same float32 values at scale 32. Both are checked against exact ``fractions.Fraction``
   arithmetic on a sample: ours must match everywhere, the 28-digit one does not. Goal: >= 10x.
2. Hypercube view over 100 million stored float32 values (100 layers of 1,000 x 1,000 in a Zarr
   store): time to open the capture lazily and build the k-dimensional view, and the peak of
   memory allocated meanwhile (tracemalloc, which sees NumPy's buffers), against the data's
   size. Goal: under 1 s, no copy.

    python bench/integers_bench.py                       # 1,000,000 values; 100,000,000 for the view
    python bench/integers_bench.py --values 200000 --view_values 10000000
"""

from __future__ import annotations

import argparse
import decimal
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from builders.integers import encode, to_python_ints

T = TypeVar("T")


def _decimal_reference(values: np.ndarray, exponent: int) -> list[int]:
    """The reference converter: per element, the default 28-digit decimal context."""
    scale = decimal.Decimal(10) ** exponent
    return [int((decimal.Decimal(float(x)) * scale).to_integral_value(rounding=decimal.ROUND_HALF_EVEN))
            for x in values.tolist()]


def _exact(values: np.ndarray, exponent: int) -> list[int]:
    return [round(Fraction(float(x)) * 10**exponent) for x in values.tolist()]


def _best_of(rounds: int, run: Callable[[], T]) -> tuple[float, T]:
    """The fastest of ``rounds`` runs (this machine is noisy) and the last result."""
    best, result = float("inf"), None
    for _ in range(rounds):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result  # type: ignore[return-value]


def encoding(n_values: int, sample: int, spread: float, label: str) -> None:
    rng = np.random.default_rng(0)
    values = (rng.standard_normal(n_values) * np.exp(rng.uniform(-spread, spread, n_values))).astype(np.float32)
    encode(values[:1000], scale_factor=32)  # warm-up: first-call costs are not the method's
    ours_seconds, encoded = _best_of(3, lambda: encode(values, scale_factor=32))
    decimal_seconds, reference = _best_of(2, lambda: _decimal_reference(values, 32))
    ours = to_python_ints(encoded).tolist()
    exact = _exact(values[:sample], 32)
    ours_wrong = sum(a != b for a, b in zip(ours[:sample], exact))
    decimal_wrong = sum(a != b for a, b in zip(reference[:sample], exact))
    differ = sum(a != b for a, b in zip(ours, reference))
    print(f"encode {n_values:,} float32 values at scale 32 ({label}; best of 3 runs, decimal of 2)")
    print(f"  builders.integers.encode : {ours_seconds:7.3f} s   {n_values / ours_seconds:13,.0f} values/s")
    print(f"  decimal, 28 digits       : {decimal_seconds:7.3f} s   {n_values / decimal_seconds:13,.0f} values/s")
    print(f"  speed-up: {decimal_seconds / ours_seconds:.1f}x (goal >= 10)")
    print(f"  against exact Fraction arithmetic on {sample:,} of them: ours wrong on {ours_wrong}, "
          f"decimal wrong on {decimal_wrong} ({decimal_wrong / sample:.2%})")
    print(f"  ours and decimal differ on {differ:,} of all {n_values:,} values ({differ / n_values:.2%})")


def view(n_values: int, folder: Path) -> None:
    import xarray as xr

    from builders._cube import cube_view, plan_cube
    from store import StoreLocation, item_path, open_item, write_item

    layers, positions = 100, 1000
    hidden = n_values // (layers * positions)
    location = StoreLocation(str(folder / "view.zarr"))
    lazy = xr.Dataset({"hidden_state": (("layer", "position", "hidden"),
                                        _lazy_values(layers, positions, hidden))},
                      coords={"layer": [f"layer_{i}" for i in range(layers)]})
    write_item(location, item_path("captures", "bench", 0), lazy, {"hidden_state": {"chunks": (1, positions, hidden)}})
    data_mib = layers * positions * hidden * 4 / 2**20
    tracemalloc.start()  # NumPy reports its buffers to tracemalloc: a copy of the data would show
    started = time.perf_counter()
    stored = open_item(location, item_path("captures", "bench", 0))
    layout = plan_cube(list(stored["layer"].values), [(positions, hidden)] * layers)
    cube = cube_view([stored["hidden_state"].data[i] for i in range(layers)], layout)
    seconds = time.perf_counter() - started
    grown = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(f"\nhypercube view over {layers * positions * hidden:,} stored float32 values ({data_mib:,.0f} MiB)")
    print(f"  shape {layout.dims}, padding {layout.size - layout.n_real:,}: created in {seconds:.3f} s (goal < 1 s)")
    print(f"  peak memory allocated while creating it: {grown:,.1f} MiB ({grown / data_mib:.2%} of the data: no copy)")
    first = np.asarray(cube[(0,) * (len(layout.dims) - 1)])  # one row read lazily, to show it is real
    print(f"  first row of the view equals the stored values: "
          f"{np.array_equal(first, stored['hidden_state'].values[0].reshape(-1)[:first.size])}")


def _lazy_values(layers: int, positions: int, hidden: int):
    import dask.array as da

    return da.random.default_rng(0).standard_normal((layers, positions, hidden), dtype=np.float32,
                                                    chunks=(1, positions, hidden))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", type=int, default=1_000_000, help="values encoded (default 1,000,000)")
    parser.add_argument("--sample", type=int, default=100_000, help="values checked against Fraction")
    parser.add_argument("--view_values", type=int, default=100_000_000, help="values under the view")
    args = parser.parse_args()
    encoding(args.values, min(args.sample, args.values), 0.0, "normal, standard deviation 1")
    encoding(args.values, min(args.sample, args.values), 8.0, "normal times e**U(-8, 8): many magnitudes")
    with tempfile.TemporaryDirectory() as folder:
        view(args.view_values, Path(folder))


if __name__ == "__main__":
    main()
