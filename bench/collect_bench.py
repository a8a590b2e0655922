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
import io
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import nn

from builders import _models as models
from builders._config import CollectConfig, ModelConfig
from builders._packing import Batch, iter_batches, iter_rows, peek_rows
from builders._provenance import store_attrs
from builders._text import iter_documents
from builders.collect import _collect_into, _prepare, _Prepared
from store import StoreLocation, open_session

_MAXRSS = (
    "import resource, sys; from builders.collect import main; code = main(sys.argv[1:]); "
    "print('MAXRSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"
)
_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm")  # Llama/Qwen/OLMo/Mixtral, GPT-2, GPT-NeoX


@dataclasses.dataclass(frozen=True)
class _Setup:
    """What every round shares: the loaded model, the builder's prepared pieces, the text."""

    config: CollectConfig
    prepared: _Prepared
    tokenizer: Any
    batches: list[Batch]
    n_layers: int
    last_block: int


def _rows(config: CollectConfig, tokenizer: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The token rows exactly as ``builders.collect._prepare`` makes them (tokenising is lazy)."""
    rows = iter_rows(iter_documents(config.data), tokenizer, config.data.max_seq_len)
    return peek_rows(rows, config.data.name, config.data.max_seq_len)


def _setup(config: CollectConfig) -> _Setup:
    source = models.resolve_source(config.model)
    n_layers = models.num_layers(models.load_model_config(source, config.model))
    model = models.load_model(source, config.model)
    # the builder's own checks, layout, channel sample and hooked modules, with the model loaded once
    with mock.patch.object(models, "load_model", lambda *_: model):
        prepared = _prepare(config)
    tokenizer = models.load_tokenizer(source, config.model)
    max_rows = prepared.layout.n_tokens // config.data.max_seq_len
    batches = list(iter_batches(_rows(config, tokenizer), config.data.batch_size, max_rows))
    last_block = max(models.resolve_layers(config.stats.layers, n_layers))
    return _Setup(config, prepared, tokenizer, batches, n_layers, last_block)


def _owner(root: nn.Module, target: nn.Module) -> tuple[nn.Module, str]:
    """The parent module and attribute name under which ``target`` sits in ``root``."""
    for parent in root.modules():
        for name, child in parent.named_children():
            if child is target:
                return parent, name
    raise LookupError(f"{type(target).__name__} is not inside {type(root).__name__}")


@contextlib.contextmanager
def _swapped(parent: nn.Module, name: str, replacement: nn.Module) -> Iterator[None]:
    original = getattr(parent, name)
    setattr(parent, name, replacement)
    try:
        yield
    finally:
        setattr(parent, name, original)


@contextlib.contextmanager
def truncated_body(model: nn.Module, n_layers: int, last_block: int) -> Iterator[nn.Module]:
    """``decoder_body(model)`` running blocks ``0 .. last_block`` only, without hooks or final norm.

    Collect's forward stops right after the last hooked block (``builders._capture``), never
    reaching the later blocks or the final norm; this is the same computation minus the statistics.
    """
    body = models.decoder_body(model)
    layers = models.decoder_layers(model, n_layers)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_swapped(*_owner(body, layers), nn.ModuleList(layers[: last_block + 1])))
        for name in _FINAL_NORMS:
            if isinstance(getattr(body, name, None), nn.Module):
                stack.enter_context(_swapped(body, name, nn.Identity()))
        yield body


def _bare(setup: _Setup, batches: list[Batch]) -> float:
    """Tokens/s of the truncated forward over already packed batches."""
    model = setup.prepared.model
    device = models.input_device(model)
    with truncated_body(model, setup.n_layers, setup.last_block) as body, torch.inference_mode():
        started = time.perf_counter()
        for batch in batches:
            body(input_ids=torch.as_tensor(batch.token_ids, device=device), use_cache=False)
        seconds = time.perf_counter() - started
    return sum(b.n_tokens for b in batches) / seconds


@dataclasses.dataclass(frozen=True)
class _CollectRound:
    tokens_per_second: float
    open_seconds: float  # creating the store: once per build, not per token, so not in the rate
    text_seconds: float  # tokenising and packing alone (inside the rate), to show its share


def _text_seconds(setup: _Setup) -> float:
    """Time to tokenise and pack one build's rows on their own, as the builder does."""
    started = time.perf_counter()
    max_rows = setup.prepared.layout.n_tokens // setup.config.data.max_seq_len
    for _ in iter_batches(_rows(setup.config, setup.tokenizer), setup.config.data.batch_size, max_rows):
        pass
    return time.perf_counter() - started


def _collect(setup: _Setup, folder: Path) -> _CollectRound:
    """One whole build into a fresh store through ``builders.collect``'s own loop."""
    config, prepared = setup.config, setup.prepared
    location = StoreLocation(str(folder / f"round-{time.monotonic_ns()}.zarr"))
    opened = time.perf_counter()
    attrs = store_attrs(config, prepared.layout.token_chunk)
    session = open_session(location, prepared.layout, prepared.slot, attrs)
    started = time.perf_counter()
    build = dataclasses.replace(prepared, location=location, rows=_rows(config, setup.tokenizer))
    with contextlib.redirect_stdout(io.StringIO()):  # the build's summary
        _collect_into(config, build, session)
    seconds = time.perf_counter() - started
    return _CollectRound(prepared.layout.n_tokens / seconds, started - opened, _text_seconds(setup))


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
        config.store = str(Path(folder) / "checks.zarr")  # _prepare probes it; rounds write fresh stores
        setup = _setup(config)
        assert sum(b.n_tokens for b in setup.batches) == setup.prepared.layout.n_tokens, "the text ran out"
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
