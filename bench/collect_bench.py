"""Benchmark of ``builders.collect``, printed side by side in one run (these machines are noisy).

1. Throughput: the real collect loop (``builders.collect``'s own pieces: tokenising and packing
   the text, hooks computing every metric at the configured layers, early stop, region writes
   and commits, finish) over a bare forward of the same model cut after the same last hooked
   block (no hooks, no final norm: exactly the blocks collect runs) on the same batches.
   Rounds are interleaved and paired. Goal: ratio >= 0.97.
2. Peak memory (max RSS) of a whole ``python -m builders.collect`` at N and 10N tokens, each in
   its own process. Goal: ratio <= 1.1.

    python bench/collect_bench.py                    # SmolLM2 (embedded), 6 rounds of 8 batches of 2x512
    python bench/collect_bench.py --rounds 4 --batches 4 --skip-memory
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _timing import timing_calls
from _truncate import truncated_body

from builders import _models as models
from builders import collect
from builders._config import CollectConfig, ModelConfig
from builders._packing import Batch, iter_rows, peek_rows, unit_batches, unit_rows
from builders._runtime import ModelRuntime, load_runtime
from builders._text import iter_documents
from store import StoreLocation, Unit, check_compatible, plan_units

_MAXRSS = (
    "import resource, sys; from builders.collect import main; code = main(sys.argv[1:]); "
    "print('MAXRSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"
)


@dataclasses.dataclass(frozen=True)
class _Setup:
    """What every round shares: the builder's checks, the loaded model, the tokenizer, the batches."""

    config: CollectConfig
    checked: Any  # builders.collect._Checked
    runtime: ModelRuntime
    tokenizer: Any
    batches: list[Batch]  # exactly the batches the build computes, unit by unit

    @property
    def n_layers(self) -> int:
        return models.num_layers(self.checked.model_config)

    @property
    def last_block(self) -> int:
        return max(self.checked.layer_indices)

    @property
    def n_tokens(self) -> int:
        return self.checked.layout.n_tokens


def _rows(config: CollectConfig, tokenizer: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The token rows exactly as ``builders.collect._check`` makes them (tokenising is lazy)."""
    rows = iter_rows(iter_documents(config.data), tokenizer, config.data.max_seq_len)
    return peek_rows(rows, config.data.name, config.data.max_seq_len)


_UnitRows = tuple[Unit, np.ndarray, np.ndarray]  # a unit, its token ids, their document indexes


def _units(config: CollectConfig, checked: Any, tokenizer: Any) -> Iterator[_UnitRows]:
    """Each work unit with its rows, as ``builders.collect._tokenise`` cuts the text."""
    layout = checked.layout
    planned = plan_units(layout.n_tokens, layout.shard_tokens)
    return unit_rows(_rows(config, tokenizer), planned, config.data.max_seq_len)


def _batches(config: CollectConfig, checked: Any, tokenizer: Any) -> list[Batch]:
    """The batches ``builders._run.compute_unit`` forms from each unit's stored tokens."""
    seq_len, batch_size = config.data.max_seq_len, config.data.batch_size
    return [batch for unit, token_ids, _ in _units(config, checked, tokenizer)
            for batch in unit_batches(token_ids, unit.start, seq_len, batch_size)]


def _setup(config: CollectConfig) -> _Setup:
    checked = collect._check(config)  # the builder's own checks; it writes nothing
    runtime = load_runtime(config)  # loaded once: both paths run this model, loading timed in neither
    tokenizer = models.load_tokenizer(checked.source, config.model)
    return _Setup(config, checked, runtime, tokenizer, _batches(config, checked, tokenizer))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # kernels are asynchronous: time the work, not its launch


def _bare(setup: _Setup, batches: list[Batch]) -> float:
    """Tokens/s of the truncated forward over already packed batches."""
    model, device = setup.runtime.model, setup.runtime.device
    with truncated_body(model, setup.n_layers, setup.last_block) as body, torch.inference_mode():
        started = time.perf_counter()
        for batch in batches:
            body(input_ids=torch.as_tensor(batch.token_ids, device=device), use_cache=False)
        _sync(device)
        seconds = time.perf_counter() - started
    return sum(b.n_tokens for b in batches) / seconds


@dataclasses.dataclass(frozen=True)
class _CollectRound:
    tokens_per_second: float
    open_seconds: float  # creating the store: once per build, not per token, so not in the rate
    text_seconds: float  # tokenising and packing alone (inside the rate), to show its share


def _text_seconds(setup: _Setup) -> float:
    """Time to tokenise the text and cut it into units on their own, as the builder does."""
    started = time.perf_counter()
    for _ in _units(setup.config, setup.checked, setup.tokenizer):
        pass
    return time.perf_counter() - started


def _check_complete(config: CollectConfig, setup: _Setup) -> None:
    """Refuse a round whose build did not commit every token: its rate would mean nothing."""
    location = StoreLocation(config.store)
    stored = check_compatible(location, config.build_config(), setup.checked.label, config.model_config())
    committed = stored.committed.get(setup.checked.label, 0) if stored else 0
    if committed != setup.n_tokens:
        raise RuntimeError(f"the build into {config.store} committed {committed} of {setup.n_tokens} tokens")


def _collect(setup: _Setup, folder: Path) -> _CollectRound:
    """One whole build into a fresh store through ``builders.collect._build``, as ``run`` calls it."""
    config = dataclasses.replace(setup.config, store=str(folder / f"round-{time.monotonic_ns()}.zarr"))
    runtime = setup.runtime
    compute = functools.partial(collect._compute_here, runtime)
    spent: list[float] = []
    with timing_calls(collect, "open_session", spent), contextlib.redirect_stdout(io.StringIO()):  # the build's summary
        started = time.perf_counter()
        # fresh rows made inside the timing: tokenising and packing are part of the build's loop
        checked = dataclasses.replace(setup.checked, location=StoreLocation(config.store),
                                      rows=_rows(config, setup.tokenizer))
        code = collect._build(config, checked, runtime.dtype, compute)
        _sync(runtime.device)
        seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"the build into {config.store} exited {code}")
    _check_complete(config, setup)
    open_seconds = sum(spent)
    return _CollectRound(setup.n_tokens / (seconds - open_seconds), open_seconds, _text_seconds(setup))


def _interleaved(steps: list[Callable[[], None]], rounds: int) -> None:
    for round_index in range(rounds):
        # alternate which path goes first, so drift in machine load hits both alike
        for step in steps if round_index % 2 == 0 else steps[::-1]:
            step()


def throughput(config: CollectConfig, rounds: int, n_batches: int) -> None:
    config.data.max_tokens = n_batches * config.data.batch_size * config.data.max_seq_len
    config.progress = False
    bare: list[float] = []
    ours: list[_CollectRound] = []
    with tempfile.TemporaryDirectory() as folder:
        config.store = str(Path(folder) / "checks.zarr")  # _check probes it; rounds write fresh stores
        setup = _setup(config)
        assert sum(b.n_tokens for b in setup.batches) == setup.n_tokens, "the text ran out"
        _bare(setup, setup.batches[:1])  # warm-up of both paths
        _collect(setup, Path(folder))
        _interleaved([lambda: bare.append(_bare(setup, setup.batches)),
                      lambda: ours.append(_collect(setup, Path(folder)))], rounds)
    _report(setup, bare, ours)


def _report(setup: _Setup, bare: list[float], ours: list[_CollectRound]) -> None:
    config = setup.config
    rates = [r.tokens_per_second for r in ours]
    paired = np.asarray(rates) / np.asarray(bare)
    print(f"\nthroughput, {config.model.name}, layers {config.stats.layers}, "
          f"{len(config.stats.metrics)} metrics, "
          f"{len(bare)} rounds x {config.data.max_tokens} tokens (batches of {config.data.batch_size}x"
          f"{config.data.max_seq_len}); both stop after block {setup.last_block} of {setup.n_layers}")
    round_seconds = config.data.max_tokens / np.median(rates)
    text_seconds = statistics.median([r.text_seconds for r in ours])
    bare_label = f"bare forward, blocks 0-{setup.last_block}"
    print(f"  {bare_label:<26}: median {np.median(bare):8.1f} tokens/s  "
          f"(rounds: {', '.join(f'{x:.0f}' for x in bare)})")
    print(f"  {'collect, whole loop':<26}: median {np.median(rates):8.1f} tokens/s  "
          f"(rounds: {', '.join(f'{x:.0f}' for x in rates)})")
    print(f"  {'per-round ratios':<26}: {', '.join(f'{x:.3f}' for x in paired)}")
    print(f"  {'ratio collect / bare':<26}: {np.median(paired):.3f} median of paired rounds; "
          f"ratio of medians {np.median(rates) / np.median(bare):.3f}   (goal >= 0.97)")
    print(f"  {'of a collect round':<26}: tokenising + packing {text_seconds:.3f} s "
          f"({text_seconds / round_seconds:.1%}, in the rate); store creation "
          f"{statistics.median([r.open_seconds for r in ours]):.3f} s (once per build, not in the rate)")


def _peak_rss_mib(tokens: int, folder: str) -> float:
    args = ["--store", f"{folder}/m{tokens}.zarr", "--data.max_tokens", str(tokens), "--progress", "false"]
    done = subprocess.run([sys.executable, "-c", _MAXRSS, *args], capture_output=True, text=True, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("MAXRSS_KIB"))
    return int(line.split()[1]) / 1024


def memory(tokens: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        small = _peak_rss_mib(tokens, folder)
        large = _peak_rss_mib(10 * tokens, folder)
    print("\npeak memory of python -m builders.collect (max RSS, whole process)")
    print(f"  N   = {tokens:>7} tokens : {small:8.1f} MiB")
    print(f"  10N = {10 * tokens:>7} tokens : {large:8.1f} MiB")
    print(f"  ratio 10N / N        : {large / small:.3f}   (goal <= 1.1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds of each path")
    parser.add_argument("--batches", type=int, default=8, help="batches of 2x512 tokens per round")
    parser.add_argument("--memory-tokens", type=int, default=4096, help="N for the memory comparison")
    parser.add_argument("--model", default=ModelConfig().name, help="model name, as --model.name")
    parser.add_argument("--skip-memory", action="store_true")
    options = parser.parse_args()
    config = CollectConfig(model=ModelConfig(name=options.model, device="cpu"))
    throughput(config, options.rounds, options.batches)
    if not options.skip_memory:
        memory(options.memory_tokens)


if __name__ == "__main__":
    main()
