"""Benchmark of the super-weight cards' interventional evaluation against bare forward passes, side by side.

One intervention is one pass of ``builders._vocab_interventions.Evaluator`` over the sliding
windows with one weight zeroed (``run_zeroed``): the scored positions' logits (``logits_to_keep``),
then loss, entropy, top-k margin, stopword mass and the probability sums from ``exp(logits - max)``,
32 positions at a time, moved to the host per window. The bare paths are forward passes of the same
windows in the same batches through the whole causal LM, nothing computed from the logits: with
every position's logits (what a plain forward does; the goal's reference), and with the same
``logits_to_keep`` as the intervention (so the figures' own cost shows). The figure is windows per
second of the intervention over each bare pass (goal >= 0.9 against the first). With ``--cascade``
the logit lens at about eight layers is timed too (not part of the goal: the controls run without it).

Rounds alternate the order of the paths; each figure is the ratio of the medians, with the ratio
of the bests beside it. On a GPU every timed call ends with ``torch.cuda.synchronize()``.

    python bench/vocab_bench.py                          # SmolLM2 (embedded), 4,096 tokens, windows of 1024 / 512
    python bench/vocab_bench.py --model PATH --rounds 3 --tokens 1024 --window_len 256 --stride 128
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from _timing import bare_windows, load_bench_model, model_bench_parser, paired

from builders import _models as models
from builders._down_proj import down_projections
from builders._vocab_interventions import Evaluator, default_cascade_layers, evaluation_windows


def _arguments() -> argparse.Namespace:
    parser = model_bench_parser(__doc__ or "")
    parser.add_argument("--tokens", type=int, default=4096, help="tokens evaluated (default: %(default)s)")
    parser.add_argument("--cascade", action="store_true", help="also time the logit-lens cascade")
    return parser.parse_args()


def _report(name: str, measured: list[float], bare: list[float], n_windows: int, goal: str) -> None:
    print(f"{name}: {statistics.median(measured):.3f} s vs bare {statistics.median(bare):.3f} s (medians; "
          f"{n_windows / statistics.median(measured):.2f} vs {n_windows / statistics.median(bare):.2f} windows/s)")
    print(f"  windows/s over bare: {statistics.median(bare) / statistics.median(measured):.3f} (medians), "
          f"{min(bare) / min(measured):.3f} (bests){goal}")


def main() -> None:
    arguments = _arguments()
    source, n_layers, model = load_bench_model(arguments)
    vocab = model.get_output_embeddings().weight.shape[0]
    token_ids = np.random.default_rng(0).integers(0, vocab, arguments.tokens)
    windows = evaluation_windows(len(token_ids), arguments.window_len, arguments.stride, drop_first_token=False)
    stopwords = np.zeros(vocab, bool)
    stopwords[:200] = True  # which tokens count changes no cost
    projection = down_projections(model, n_layers)[n_layers // 2][0]
    cells = [(projection, projection.element(0, 0))]
    evaluator = Evaluator(model, token_ids, windows, arguments.batch_size, stopwords, 2,
                          default_cascade_layers(n_layers) if arguments.cascade else [], n_layers, progress=False)
    tokens = torch.as_tensor(token_ids, device=models.input_device(model))
    print(f"model {source.label}: {n_layers} layers, vocabulary {vocab}, {len(windows)} windows of "
          f"{arguments.window_len} (stride {arguments.stride}), batch {arguments.batch_size}, "
          f"device {tokens.device}, {torch.get_num_threads()} threads")
    paths = [lambda: evaluator.run_zeroed(cells, "intervention", cascade=False),
             lambda: bare_windows(model, tokens, windows, arguments.batch_size, keep_scored=False),
             lambda: bare_windows(model, tokens, windows, arguments.batch_size, keep_scored=True)]
    if arguments.cascade:
        paths.append(lambda: evaluator.run_zeroed(cells, "intervention", cascade=True))
    times = paired(*paths, rounds=arguments.rounds)
    _report("one intervention vs bare with all logits", times[0], times[1], len(windows), "; goal >= 0.9")
    _report("one intervention vs bare with the scored positions' logits", times[0], times[2], len(windows), "")
    if arguments.cascade:
        _report(f"one intervention with the cascade at {len(evaluator.cascade_layers)} layers", times[3], times[1],
                len(windows), "")


if __name__ == "__main__":
    main()
