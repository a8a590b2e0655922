"""Benchmark of ``builders.collect``, printed side by side in one run (these machines are noisy).

1. Throughput: the full collect path (hooks computing every metric at the configured layers,
   early stop, region writes to a store) over a bare forward pass of the same model's decoder
   stack on the same batches, rounds interleaved. Goal: ratio >= 0.97.
2. Peak memory (max RSS) of a whole ``python -m builders.collect`` at N and 10N tokens, each in
   its own process. Goal: ratio <= 1.1.

    python bench/collect_bench.py                    # SmolLM2 (embedded), 6 rounds of 8 batches of 2x512
    python bench/collect_bench.py --rounds 5 --memory-tokens 4096
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from builders import _models as models
from builders._capture import StatsCapture
from builders._config import CollectConfig, ModelConfig
from builders._packing import iter_batches, iter_rows
from builders._provenance import sample_channels
from builders._run import collect
from builders._text import iter_documents
from builders.collect import _layout
from store import ModelSlot, StatsWriter, StoreLocation, open_session

_MAXRSS = (
    "import resource, sys; from builders.collect import main; code = main(sys.argv[1:]); "
    "print('MAXRSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"
)


def _batches(config: CollectConfig, tokenizer: object, n_batches: int) -> list:
    rows = iter_rows(iter_documents(config.data), tokenizer, config.data.max_seq_len)
    return list(iter_batches(rows, config.data.batch_size, n_batches * config.data.batch_size))


def _bare(body: torch.nn.Module, batches: list) -> float:
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            body(input_ids=torch.as_tensor(batch.token_ids), use_cache=False)
    return sum(b.n_tokens for b in batches) / (time.perf_counter() - started)


def _collect(model, config, batches, layer_indices, n_layers, hidden_size, folder: Path) -> float:  # noqa: ANN001
    layout = _layout(config)
    channels = sample_channels(hidden_size, layout.n_channels, len(layout.layers), 0)
    slot = ModelSlot("bench", np.asarray(layer_indices), channels,
                     {"model_id": "bench", "revision": "", "config": {}, "created": "", "versions": {}})
    location = StoreLocation(str(folder / f"bench-{time.monotonic_ns()}.zarr"))
    session = open_session(location, layout, slot, {"build_config": {}, "token_chunk": layout.token_chunk})
    capture = StatsCapture(models.collection_modules(model, layer_indices, n_layers), layout.metrics, channels)
    writer = StatsWriter(session.group, 0, layout.token_chunk, 0)
    with tqdm(disable=True) as progress:
        result = collect(models.decoder_body(model), capture, batches, writer, torch.device("cpu"), progress)
    return result.tokens_computed / result.seconds


def throughput(config: CollectConfig, rounds: int, n_batches: int) -> None:
    source = models.resolve_source(config.model)
    model_config = models.load_model_config(source, config.model)
    n_layers = models.num_layers(model_config)
    layer_indices = models.resolve_layers(config.stats.layers, n_layers)
    model = models.load_model(source, config.model)
    batches = _batches(config, models.load_tokenizer(source, config.model), n_batches)
    config.data.max_tokens = sum(b.n_tokens for b in batches)
    body = models.decoder_body(model)
    _bare(body, batches[:1])  # warm-up
    bare, ours = [], []
    with tempfile.TemporaryDirectory() as folder:
        for round_index in range(rounds):
            # alternate which path goes first, so drift in machine load hits both alike
            steps = [lambda: bare.append(_bare(body, batches)),
                     lambda: ours.append(_collect(model, config, batches, layer_indices, n_layers,
                                                  model_config.hidden_size, Path(folder)))]
            for step in steps if round_index % 2 == 0 else steps[::-1]:
                step()
    print(f"\nthroughput, {config.model.name}, layers {config.stats.layers}, {len(config.stats.metrics)} metrics, "
          f"{rounds} rounds x {config.data.max_tokens} tokens")
    print(f"  bare decoder forward : median {np.median(bare):8.1f} tokens/s  (rounds: {', '.join(f'{x:.0f}' for x in bare)})")
    print(f"  collect              : median {np.median(ours):8.1f} tokens/s  (rounds: {', '.join(f'{x:.0f}' for x in ours)})")
    paired = np.asarray(ours) / np.asarray(bare)
    print(f"  ratio collect / bare : {np.median(paired):.3f} median of paired rounds "
          f"({', '.join(f'{x:.3f}' for x in paired)}); ratio of medians {np.median(ours) / np.median(bare):.3f}"
          "   (goal >= 0.97)")


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
