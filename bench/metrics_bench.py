"""Cost of the per-token metrics in the forward hook, per (tokens x d) batch.

Times what the hook does for each batch (every default metric plus 64 sampled channels), then
each metric alone, on SmolLM2-shaped activations (d = 576) with two massive channels. With
``--baseline FILE`` a second metrics module (e.g. the previous version, saved with
``git show HEAD:builders/_metrics.py > /tmp/old_metrics.py``) is timed in the same run, the two
alternating call by call, since shared machines are noisy. Prints the median and the minimum.

    python bench/metrics_bench.py
    python bench/metrics_bench.py --baseline /tmp/old_metrics.py --repeats 100 --threads 1
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import torch

from builders import _metrics
from builders._config import StatsConfig

Work = Callable[[], object]


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"metrics_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def _activations(tokens: int, d: int, device: str) -> torch.Tensor:
    x = torch.randn(tokens, d, generator=torch.Generator().manual_seed(0))
    x[:, [3, 77]] *= 300.0  # massive activations, as in real residual streams
    return x.to(device)


def _timings_ms(works: dict[str, Work], repeats: int, device: str) -> dict[str, list[float]]:
    """Milliseconds of each call, the works alternating so that load spikes hit all of them."""
    times: dict[str, list[float]] = {label: [] for label in works}
    for _ in range(repeats):
        for label, work in works.items():
            started = time.perf_counter()
            work()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[label].append(1e3 * (time.perf_counter() - started))
    return times


def _summary(times: list[float]) -> str:
    return f"{statistics.median(times):8.3f} (min {min(times):7.3f})"


def _hook(module: ModuleType, x: torch.Tensor, names: Sequence[str], channels: torch.Tensor) -> Work:
    return lambda: (module.compute_metrics(x, names), x.index_select(1, channels).float())


def _one_metric(module: ModuleType, x: torch.Tensor, name: str) -> Work:
    return lambda: module.compute_metrics(x, [name])


def _print_rows(rows: dict[str, dict[str, Work]], repeats: int, device: str) -> None:
    for row, works in rows.items():
        for work in works.values():  # warm-up: first calls allocate and dispatch
            work()
        timings = _timings_ms(works, repeats, device)
        print(f"  {row:<20} " + "   ".join(f"{label} {_summary(t)}" for label, t in timings.items()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--d", type=int, default=576)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--baseline", type=Path, help="another metrics module to time alongside")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    x = _activations(args.tokens, args.d, args.device)
    channels = torch.arange(0, args.d, max(1, args.d // 64), device=args.device)[:64]
    names = StatsConfig().scalar_metrics
    modules = {"current": _metrics} | ({"baseline": _load(args.baseline)} if args.baseline else {})
    print(f"ms per ({args.tokens} x {args.d}) batch, median (min) of {args.repeats}, {args.device}, "
          f"{torch.get_num_threads()} threads")
    hook = {label: _hook(module, x, names, channels) for label, module in modules.items()}
    _print_rows({f"hook ({len(names)} + {len(channels)} ch)": hook}, args.repeats, args.device)
    each = {
        name: {label: _one_metric(m, x, name) for label, m in modules.items() if name in m.METRICS}
        for name in _metrics.METRICS
    }
    _print_rows(each, args.repeats, args.device)


if __name__ == "__main__":
    main()
