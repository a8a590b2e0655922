"""Benchmark of super-weight detection and perplexity evaluation against bare forward passes, side by side.

1. Detection: one detection iteration (``builders._detect.run_passes``: the calibration batch
   through the decoder body with ``SpikeHooks`` on every MLP down projection, maxima gathered
   with one device sync) over one bare forward of the same batch through the same body, no
   hooks. Goal: detection / bare <= 1.2.
2. Perplexity: tokens per second of ``builders._perplexity.perplexity`` (sliding windows, the
   scored positions' logits, cross-entropy in float32, summed in float64) over a bare forward
   of the same windows in the same batches through the whole causal LM (all logits, no loss).
   ``perplexity`` asks the LM head for the scored positions only (``logits_to_keep``), so the
   ratio can exceed 1 when stride < window_len; a bare forward with the same ``logits_to_keep``
   is timed too, so the loss's own cost shows. Goal: perplexity / bare >= 0.95.

Rounds alternate the order of the paths; each figure is the ratio of the medians, with the
ratio of the bests beside it. On a GPU every timed call ends with ``torch.cuda.synchronize()``.
The model loads once and serves every path.

    python bench/superweights_bench.py                      # SmolLM2 (embedded), 512 calibration tokens, 4,096 ppl tokens
    python bench/superweights_bench.py --model PATH --rounds 3 --ppl_tokens 1024 --window_len 256 --stride 128
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from _timing import bare_windows, load_bench_model, model_bench_parser, paired

from builders import _models as models
from builders._detect import run_passes
from builders._down_proj import down_projections
from builders._perplexity import perplexity, sliding_windows
from builders._spikes import SpikeHooks


def _arguments() -> argparse.Namespace:
    parser = model_bench_parser(__doc__ or "")
    parser.add_argument("--calibration_rows", type=int, default=2, help="calibration rows (default: %(default)s)")
    parser.add_argument("--seq_len", type=int, default=256, help="tokens per calibration row (default: %(default)s)")
    parser.add_argument("--ppl_tokens", type=int, default=4096, help="tokens of perplexity text (default: %(default)s)")
    return parser.parse_args()


def _report(name: str, measured: list[float], bare: list[float], goal: str, tokens: int) -> None:
    median_ratio = statistics.median(measured) / statistics.median(bare)
    best_ratio = min(measured) / min(bare)
    print(f"{name}: {statistics.median(measured):.3f} s vs bare {statistics.median(bare):.3f} s (medians; "
          f"{tokens / statistics.median(measured):,.0f} vs {tokens / statistics.median(bare):,.0f} tokens/s)")
    print(f"  time ratio {median_ratio:.3f} (medians), {best_ratio:.3f} (bests); goal {goal}")


def main() -> None:
    arguments = _arguments()
    source, n_layers, model = load_bench_model(arguments)
    device = models.input_device(model)
    vocab = model.get_input_embeddings().weight.shape[0]
    generator = np.random.default_rng(0)
    calibration = torch.as_tensor(generator.integers(0, vocab, (arguments.calibration_rows, arguments.seq_len)), device=device)
    body = models.decoder_body(model)
    projections = [projection for layer in down_projections(model, n_layers) for projection in layer]
    print(f"model {source.label}: {n_layers} layers, {len(projections)} down projections, device {device}, "
          f"{torch.get_num_threads()} threads")

    with SpikeHooks(projections, 50.0) as hooks:
        detecting = paired(lambda: run_passes(body, hooks, [calibration]), lambda: _bare_body(body, calibration),
                            rounds=arguments.rounds)
    _report(f"detection iteration ({calibration.numel()} tokens)", detecting[0], detecting[1], "<= 1.2",
            calibration.numel())

    token_ids = generator.integers(0, vocab, arguments.ppl_tokens)
    windows = sliding_windows(len(token_ids), arguments.window_len, arguments.stride)
    tokens = torch.as_tensor(token_ids, device=device)
    n_run = sum(window.end - window.start for window in windows)
    evaluating = paired(lambda: perplexity(model, token_ids, windows, arguments.batch_size, progress=False),
                         lambda: bare_windows(model, tokens, windows, arguments.batch_size, keep_scored=False),
                         lambda: bare_windows(model, tokens, windows, arguments.batch_size, keep_scored=True),
                         rounds=arguments.rounds)
    for bare, name in ((evaluating[1], "all logits"), (evaluating[2], "the scored positions' logits")):
        _report(f"perplexity ({len(windows)} windows, {n_run} tokens run) vs bare with {name}", evaluating[0], bare,
                ">= 0.95 in tokens/s, i.e. time ratio <= 1.053", n_run)
        print(f"  perplexity tokens/s over bare: {statistics.median(bare) / statistics.median(evaluating[0]):.3f} "
              f"(medians), {min(bare) / min(evaluating[0]):.3f} (bests)")


def _bare_body(body: torch.nn.Module, batch: torch.Tensor) -> None:
    with torch.inference_mode():
        body(input_ids=batch, use_cache=False)


if __name__ == "__main__":
    main()
