"""Benchmark of ``python -m builders.vectors`` and of ``analysis.nearest``, side by side in one run.

1. Throughput: documents/s of the builder's whole build phase (``builders.vectors._build``: leases,
   store creation, the hooked forward cut after the last pooled block, pooling, unit writes and
   commits, the corpus mean) over a bare forward of the same documents in the same batches
   (``unit_batches`` of every unit, ``decoder_body(model)(input_ids=..., attention_mask=...)`` under
   inference_mode, no hooks). Checks, tokenising and model loading run untimed, and one loaded model
   serves both paths, so only the build loop is compared. The bare forward runs every block and the
   final norm while the builder stops after its last pooled block, so the ratio can exceed 1; a bare
   forward cut after the same block (``truncated_body``, bench/_truncate.py) is timed too, to show what
   hooks, pooling and writes cost on their own. Rounds are interleaved with alternating order, each
   build into a fresh store; ratios are paired per round. Goal: build / bare >= 0.95.
   One plain ``builders.vectors.main([...])`` (checks and model loading included; the load is warm,
   the model's second in this process) is timed once for scale.
2. Nearest neighbours: ``analysis.nearest(analysis.vectors(path), position, k=10)``, the open
   included, over N synthetic vectors of width d (seeded normal around a shared offset, float16 as a
   default build stores them) written once through the store API into a local store. The first call
   (cold-ish: the files are in the page cache, Python and dask are not warm) and the best of
   repeats, against a NumPy brute force over the same vectors already in memory (for scale), and
   whether both give the same top 10. Goal: under 0.5 s.

    python bench/vectors_bench.py                       # SmolLM2 (embedded): 64 docs x <=128 tokens; 100,000 x 576
    python bench/vectors_bench.py --docs 16 --max_seq_len 64 --skip_query
    python bench/vectors_bench.py --skip_build --nn_docs 1000000
    python bench/vectors_bench.py --threads 1           # steadier while another process shares the CPU
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _timing import timing_calls
from _truncate import truncated_body
from torch import nn

from analysis import nearest, open_vectors
from builders import _models as models
from builders import vectors
from builders._cli import parse_config
from builders._config import ModelConfig
from builders._documents import unit_batches
from builders._runtime import ModelRuntime
from builders._vector_configs import VectorsConfig
from store import (
    StoreLocation,
    VectorsLayout,
    VectorSlot,
    finish_vectors,
    open_vectors_session,
    vectors_complete,
    write_vector_unit,
)

# ---------------------------------------------------------------- 1. build throughput


def _argv(options: argparse.Namespace, store: str, docs: int) -> list[str]:
    """The command line of the build measured (also what ``builders.vectors.main`` gets)."""
    return ["--store", store, "--progress", "false", "--model.name", options.model,
            "--model.device", options.device, "--data.max_docs", str(docs),
            "--data.max_seq_len", str(options.max_seq_len), "--data.batch_size", str(options.batch_size)]


def _config(options: argparse.Namespace, store: str, docs: int | None = None) -> VectorsConfig:
    # parsed exactly as the CLI parses it, so the timed build is the one python -m builders.vectors runs
    argv = _argv(options, store, options.docs if docs is None else docs)
    return parse_config(VectorsConfig, argv, "python -m builders.vectors", "")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # kernels are asynchronous: time the work, not its launch


@dataclasses.dataclass(frozen=True)
class _Setup:
    """What every round shares: the options, the loaded model and the builder's checked corpus."""

    options: argparse.Namespace
    config: VectorsConfig
    checked: Any  # builders.vectors._Checked
    runtime: ModelRuntime

    @property
    def last_block(self) -> int:
        return max(self.checked.layer_indices)

    @property
    def n_tokens(self) -> int:
        return sum(len(ids) for ids in self.checked.corpus.token_ids)


def _setup(options: argparse.Namespace, folder: Path) -> _Setup:
    config = _config(options, str(folder / "checks.zarr"))
    checked = vectors._check(config)
    models.quiet_loading(config.progress)
    return _Setup(options, config, checked, vectors.load_runtime(config, checked))


def _bare(setup: _Setup, body: nn.Module) -> float:
    """Documents/s of ``body`` over every unit's batches, formed as the builder forms them."""
    config, checked, device = setup.config, setup.checked, setup.runtime.device
    started = time.perf_counter()
    with torch.inference_mode():
        for unit in checked.layout.units():
            for batch in unit_batches(checked.corpus, unit, config.data.max_seq_len, config.data.batch_size,
                                      checked.pad_id):
                body(input_ids=torch.as_tensor(batch.token_ids, device=device),
                     attention_mask=torch.as_tensor(batch.attention_mask, device=device), use_cache=False)
    _sync(device)
    return len(checked.corpus) / (time.perf_counter() - started)


def _bare_full(setup: _Setup) -> float:
    return _bare(setup, models.decoder_body(setup.runtime.model))


def _bare_cut(setup: _Setup) -> float:
    with truncated_body(setup.runtime.model, setup.checked.n_layers, setup.last_block) as body:
        return _bare(setup, body)


@dataclasses.dataclass(frozen=True)
class _BuildRound:
    docs_per_second: float
    open_seconds: float  # store creation, inside the rate (once per build)


def _build(setup: _Setup, folder: Path, docs: int | None = None) -> _BuildRound:
    """One whole build phase into a fresh store; its checks (tokenising included) run untimed."""
    config = _config(setup.options, str(folder / f"round-{time.monotonic_ns()}.zarr"), docs)
    checked = vectors._check(config)
    spent: list[float] = []
    with timing_calls(vectors, "open_vectors_session", spent), contextlib.redirect_stdout(io.StringIO()):  # the build's summary
        started = time.perf_counter()
        code = vectors._build(config, checked, setup.runtime)
        _sync(setup.runtime.device)
        seconds = time.perf_counter() - started
    if code != 0 or not vectors_complete(checked.location, checked.label):
        raise RuntimeError(f"the build into {config.store} did not complete (exit {code})")
    return _BuildRound(len(checked.corpus) / seconds, sum(spent))


def _interleaved(steps: list[Callable[[], None]], rounds: int) -> None:
    for round_index in range(rounds):
        # alternate which path goes first, so drift in machine load hits all alike
        for step in steps if round_index % 2 == 0 else steps[::-1]:
            step()


def _whole_main(options: argparse.Namespace, folder: Path) -> float:
    """Seconds of one plain ``builders.vectors.main`` (model loading and checks included)."""
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = vectors.main(_argv(options, str(folder / "main.zarr"), options.docs))
    if code != 0:
        raise RuntimeError(f"builders.vectors.main exited {code}")
    return time.perf_counter() - started


def throughput(options: argparse.Namespace) -> None:
    full: list[float] = []
    cut: list[float] = []
    ours: list[_BuildRound] = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        setup = _setup(options, folder)
        _bare_full(setup)  # warm-up: first-call allocations and kernel choices, out of every round
        _build(setup, folder, docs=options.batch_size)
        _interleaved([lambda: full.append(_bare_full(setup)), lambda: cut.append(_bare_cut(setup)),
                      lambda: ours.append(_build(setup, folder))], options.repeats)
        main_seconds = _whole_main(options, folder)
    _report_throughput(setup, full, cut, ours, main_seconds)


def _rounds(values: list[float]) -> str:
    return ", ".join(f"{value:.1f}" for value in values)


def _report_throughput(setup: _Setup, full: list[float], cut: list[float], ours: list[_BuildRound],
                       main_seconds: float) -> None:
    config, checked = setup.config, setup.checked
    rates = [r.docs_per_second for r in ours]
    to_full, to_cut = np.asarray(rates) / np.asarray(full), np.asarray(rates) / np.asarray(cut)
    n_docs, n_layers, last = len(checked.corpus), checked.n_layers, setup.last_block
    print(f"\nthroughput, {config.model.name} on {setup.runtime.device}, {n_docs} documents "
          f"({setup.n_tokens} tokens, <= {config.data.max_seq_len} each, batches of {config.data.batch_size}); "
          f"pooled blocks {checked.layer_indices} of {n_layers}; {len(ours)} interleaved rounds; "
          f"torch threads: {torch.get_num_threads()}")
    print(f"  {'bare forward, every block':<30}: best {max(full):7.2f}, median {np.median(full):7.2f} docs/s  (rounds: {_rounds(full)})")
    print(f"  {f'bare forward, blocks 0-{last}':<30}: best {max(cut):7.2f}, median {np.median(cut):7.2f} docs/s  (rounds: {_rounds(cut)})")
    print(f"  {'builders.vectors build':<30}: best {max(rates):7.2f}, median {np.median(rates):7.2f} docs/s  (rounds: {_rounds(rates)})")
    # noise here only ever slows a round down, so the ratio of the best rounds is the steadiest figure
    print(f"  {'ratio build / bare':<30}: {max(rates) / max(full):.3f} of bests; {np.median(to_full):.3f} median of "
          f"paired rounds ({', '.join(f'{x:.3f}' for x in to_full)})   (goal >= 0.95)")
    print(f"  {f'ratio build / bare 0-{last}':<30}: {max(rates) / max(cut):.3f} of bests; {np.median(to_cut):.3f} "
          f"median of paired rounds ({', '.join(f'{x:.3f}' for x in to_cut)}): hooks, pooling and writes alone")
    print(f"  why the ratio can exceed 1: the builder's forward stops after block {last} (LayerOutputs ends it "
          f"at the last hook), skipping {n_layers - 1 - last} of {n_layers} blocks and the final norm that the "
          "bare forward runs")
    build_seconds = n_docs / np.median(rates)
    opened = statistics.median(r.open_seconds for r in ours)
    print(f"  {'of a build round':<30}: store creation {opened:.3f} s ({opened / build_seconds:.1%}, in the rate)")
    print(f"  {'whole builders.vectors.main':<30}: {main_seconds:.1f} s once, checks and (warm) model loading included "
          f"({n_docs / main_seconds:.2f} docs/s)")


# ---------------------------------------------------------------- 2. nearest neighbours

_UNIT_DOCS = 512  # the builder's default unit (one chunk per unit)
_LABEL = "synthetic"


def write_synthetic_store(path: str, n_docs: int, width: int, seed: int) -> float:
    """A one-model ``vectors`` store of ``n_docs`` random short vectors, written as a build writes; seconds."""
    started = time.perf_counter()
    layout = VectorsLayout(doc_ids=tuple(f"doc {number}" for number in range(n_docs)), hidden_size=width,
                           poolings=("short",), unit_docs=_UNIT_DOCS, dtype="float16")
    attrs = {"hidden_size": width, "unit_docs": _UNIT_DOCS,
             "build_config": {"data": {"name": "synthetic"}, "vectors": {"poolings": ["short"]}}}
    session = open_vectors_session(StoreLocation(path), layout, VectorSlot(_LABEL, {"synthetic": True}), attrs)
    rng = np.random.default_rng(seed)
    # real pooled vectors share a large common direction; an offset makes the centring matter here too
    offset = 3 * rng.standard_normal(width, dtype=np.float32)
    for unit in layout.units():
        pooled = {"short": offset + rng.standard_normal((unit.size, width), dtype=np.float32)}
        write_vector_unit(session.group, session.slot, unit, pooled, np.full(unit.size, 128, np.int32), None)
    finish_vectors(session, None)
    return time.perf_counter() - started


def _timed_nearest(path: str, position: int, k: int) -> tuple[list[int], float]:
    """Top-k positions of ``analysis.nearest``, the store's open included, and the seconds taken."""
    started = time.perf_counter()
    found = nearest(open_vectors(path), position, k=k)
    return [int(doc) for doc in found["doc"]], time.perf_counter() - started


def _in_memory(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The stored vectors (as float32) and their stored corpus mean, loaded whole."""
    dataset = open_vectors(path).sel(model=_LABEL)
    return (np.asarray(dataset["short"].values, np.float32), np.asarray(dataset["short_mean"].values, np.float32))


def _brute_force(matrix: np.ndarray, mean: np.ndarray, position: int, k: int) -> tuple[list[int], float]:
    """Centred cosine of every row with row ``position`` (itself left out) in NumPy; top k and seconds."""
    started = time.perf_counter()
    rows = matrix - mean
    query = rows[position] / np.linalg.norm(rows[position])
    scores = (rows @ query) / np.sqrt(np.einsum("ij,ij->i", rows, rows))
    scores[position] = -np.inf
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.lexsort((best, -scores[best]))]
    return [int(doc) for doc in best], time.perf_counter() - started


def query(options: argparse.Namespace) -> None:
    position, k = options.nn_docs // 3, 10
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "synthetic.zarr")
        write_seconds = write_synthetic_store(path, options.nn_docs, options.width, options.seed)
        first_top, first = _timed_nearest(path, position, k)
        ours = [_timed_nearest(path, position, k)[1] for _ in range(options.nn_repeats)]
        matrix, mean = _in_memory(path)
        brute = [_brute_force(matrix, mean, position, k) for _ in range(options.nn_repeats)]
        size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    brute_top, brute_best = brute[0][0], min(seconds for _, seconds in brute)
    print(f"\nnearest neighbours, {options.nn_docs:,} vectors x {options.width} (float16, "
          f"{size / 2**20:.0f} MiB on disk, written in {write_seconds:.1f} s), k={k}, query = document {position}")
    print(f"  {'analysis.nearest, first call':<32}: {first:7.3f} s  (open included)")
    print(f"  {'analysis.nearest, best':<32}: {min(ours):7.3f} s  (median {statistics.median(ours):.3f} s "
          f"of {len(ours)}; open included)   (goal < 0.5 s)")
    print(f"  {'NumPy brute force, in memory':<32}: {brute_best:7.3f} s  (best of {len(brute)}; no I/O, for scale)")
    print(f"  {'ratio nearest / brute force':<32}: {min(ours) / brute_best:.2f}")
    same_set, same_order = set(first_top) == set(brute_top), first_top == brute_top
    print(f"  {'agree on the top 10':<32}: {'yes' if same_set else 'no'}"
          f"{'' if same_order or not same_set else ' (same documents, order differs)'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=ModelConfig().name, help="model name or local folder, as --model.name")
    parser.add_argument("--device", default="auto", help="as --model.device (default auto)")
    parser.add_argument("--docs", type=int, default=64, help="documents per build (default 64)")
    parser.add_argument("--max_seq_len", type=int, default=128, help="tokens per document at most (default 128)")
    parser.add_argument("--batch_size", type=int, default=8, help="documents per forward pass (default 8)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds of each path (default 5)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default); 1 is steadier when another process shares the CPU")
    parser.add_argument("--nn_docs", type=int, default=100_000, help="stored vectors searched (default 100,000)")
    parser.add_argument("--width", type=int, default=576, help="vector width (default 576, SmolLM2's)")
    parser.add_argument("--nn_repeats", type=int, default=5, help="timed queries after the first (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic vectors")
    parser.add_argument("--skip_build", action="store_true", help="leave out the build throughput")
    parser.add_argument("--skip_query", action="store_true", help="leave out the nearest-neighbour query")
    options = parser.parse_args()
    if options.threads:
        torch.set_num_threads(options.threads)
    if not options.skip_query:
        query(options)
    if not options.skip_build:
        throughput(options)


if __name__ == "__main__":
    main()
