"""Timing helpers of the bench scripts: one step inside a build (a wrapper around a module attribute),
and paths timed side by side in alternating rounds."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any
from unittest import mock


@contextlib.contextmanager
def timing_calls(module: ModuleType, name: str, spent: list[float]) -> Iterator[None]:
    """Append to ``spent`` the seconds of each call of ``module.name`` made inside the block.

    The builders call the store's session openers through their own module namespace, so
    patching it there times exactly the calls a build makes (store creation, kept out of or
    reported beside a throughput figure).
    """
    original = getattr(module, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - started)

    with mock.patch.object(module, name, timed):
        yield


def paired(*paths: Callable[[], object], rounds: int) -> list[list[float]]:
    """Seconds of each path per round, the order reversed every other round; one untimed warm-up each."""
    import torch  # only the model benches need it

    for path in paths:
        path()
    times: list[list[float]] = [[] for _ in paths]
    for round_index in range(rounds):
        order = range(len(paths)) if round_index % 2 == 0 else reversed(range(len(paths)))
        for which in order:
            started = time.perf_counter()
            paths[which]()
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # a GPU path has returned before its kernels ran
            times[which].append(time.perf_counter() - started)
    return times


def model_bench_parser(doc: str) -> argparse.ArgumentParser:
    """The flags every model bench shares: which model, how many rounds, the windows, the threads."""
    from builders._config import EMBEDDED_SMOLLM2

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    parser.add_argument("--model", default=EMBEDDED_SMOLLM2, help="model name or folder (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per path (default: %(default)s)")
    parser.add_argument("--window_len", type=int, default=1024, help="window (default: %(default)s)")
    parser.add_argument("--stride", type=int, default=512, help="stride (default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=4, help="windows per batch (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return parser


def load_bench_model(arguments: argparse.Namespace) -> tuple[Any, int, Any]:
    """(source, number of layers, model) of --model, on the GPU when there is one; --threads applied."""
    import torch

    from builders import _models as models
    from builders._config import ModelConfig

    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    config = ModelConfig(name=arguments.model, device="cpu" if not torch.cuda.is_available() else "auto")
    source = models.resolve_source(config)
    n_layers = models.num_layers(models.load_model_config(source, config))
    return source, n_layers, models.load_model(source, config)


def bare_windows(model: Any, tokens: Any, windows: list[Any], batch_size: int, keep_scored: bool) -> None:
    """A bare forward of sliding windows (builders._perplexity.Window) in their batches, no figure computed:
    every position's logits, or (``keep_scored``) only the scored positions' ones."""
    import torch

    from builders._perplexity import window_batches

    with torch.inference_mode():
        for batch in window_batches(windows, batch_size):
            keep = batch[0].shape[1] + 1 if keep_scored else 0  # 0: every position's logits
            model(input_ids=torch.stack([tokens[window.start:window.end] for window in batch]), use_cache=False,
                  logits_to_keep=keep)
