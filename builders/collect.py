"""``python -m builders.collect``: per-token activation statistics of a causal LM into a Zarr store.

With no arguments it runs the embedded SmolLM2-135M-Instruct over Python's own
documentation text into ./stores/activations.zarr. Re-running the same command
resumes an interrupted build, or does nothing if the build is complete.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn
from tqdm.auto import tqdm

from builders import _models as models
from builders._capture import StatsCapture
from builders._cli import parse_config
from builders._config import CollectConfig
from builders._packing import count_rows, iter_batches, iter_rows, peek_rows
from builders._provenance import model_provenance, sample_channels, store_attrs
from builders._run import RunResult, collect
from builders._text import iter_documents
from builders.errors import DataError
from store import (
    STATS_GROUP,
    InputError,
    Lease,
    ModelSlot,
    StatsLayout,
    StatsWriter,
    StoredStats,
    StoreLocation,
    WriteSession,
    check_compatible,
    check_intact,
    check_ours_or_empty,
    finish,
    open_session,
    reporting_write_faults,
    slot_key,
    stale_metadata,
)
from store.errors import ConfigError

DESCRIPTION = __doc__.split("\n\n")[0] if __doc__ else ""


def _hidden_size(model_config: Any) -> int:
    config = getattr(model_config, "text_config", None) or model_config
    return int(config.hidden_size)


def _layout(config: CollectConfig) -> StatsLayout:
    seq_len = config.data.max_seq_len
    n_tokens = (config.data.max_tokens // seq_len) * seq_len
    token_chunk = min(math.ceil(config.stats.commit_tokens / seq_len) * seq_len, n_tokens)
    return StatsLayout(
        layers=tuple(config.stats.layers),
        metrics=tuple(config.stats.scalar_metrics),
        n_tokens=n_tokens,
        n_channels=config.stats.n_channels,
        token_chunk=token_chunk,
    )


def _check_channels(config: CollectConfig, hidden_size: int) -> None:
    if config.stats.n_channels > hidden_size:
        raise ConfigError(
            f"stats.channels ({config.stats.n_channels}) exceeds the model's hidden size ({hidden_size}); "
            f"lower --stats.channels to at most {hidden_size}"
        )


def _summary(location: StoreLocation, label: str, session: WriteSession, result: RunResult) -> str:
    rate = result.tokens_computed / result.seconds if result.seconds else 0.0
    layout = session.layout
    where = location.display()
    return "\n".join([
        f"Collected model {label!r}: {result.tokens_committed:,} tokens x {len(layout.layers)} layers x "
        f"{len(layout.metrics)} metrics (+{layout.n_channels} channels) in {result.seconds:.1f} s ({rate:,.0f} tokens/s).",
        f"Store: {where} (group 'stats')",
        f"Open it: xarray.open_zarr({where!r}, group='stats')",
        f"     or: from analysis import open_store; open_store({where!r})",
    ])


@dataclass(frozen=True)
class _Prepared:
    """Everything a build needs, checked and loaded before the store is touched."""

    location: StoreLocation
    layout: StatsLayout
    slot: ModelSlot
    model: nn.Module
    modules: list[nn.Module]
    rows: Iterator[tuple[np.ndarray, np.ndarray]]
    stored: StoredStats | None  # what the store held when checked (None: new or replaced)


def _prepare(config: CollectConfig) -> _Prepared:
    """Every check that can fail runs here, cheapest first; nothing is written."""
    location = StoreLocation(config.store, config.storage_options)
    location.check_writable()
    check_ours_or_empty(location)  # never write into, or --overwrite, a folder of other files
    documents = iter_documents(config.data)  # a missing local file fails here, before any loading
    source = models.resolve_source(config.model)
    model_config = models.load_model_config(source, config.model)
    n_layers = models.num_layers(model_config)
    layer_indices = models.resolve_layers(config.stats.layers, n_layers)
    hidden_size = _hidden_size(model_config)
    _check_channels(config, hidden_size)
    stored = None if config.overwrite else check_compatible(
        location, config.build_config(), source.label, config.model_config())
    if stored is not None and stored.committed.get(source.label):
        check_intact(location, source.label)  # resuming over damaged chunks would mix in fill values
    tokenizer = models.load_tokenizer(source, config.model)
    if stored is not None and stored.committed_by_others(source.label):
        _check_yield(config, tokenizer, stored.n_tokens, source.label)
    rows = peek_rows(iter_rows(documents, tokenizer, config.data.max_seq_len),
                     config.data.name, config.data.max_seq_len)
    if not config.progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # its "Loading weights" bar too
    model = models.load_model(source, config.model)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    layout = _layout(config)
    channels = sample_channels(hidden_size, layout.n_channels, len(layout.layers), config.stats.channel_seed)
    provenance = model_provenance(source, config, model_config, hidden_size, dtype)
    slot = ModelSlot(source.label, np.asarray(layer_indices), channels, provenance)
    modules = models.collection_modules(model, layer_indices, n_layers)
    return _Prepared(location, layout, slot, model, modules, rows, stored)


def _check_yield(config: CollectConfig, tokenizer: Any, needed: int, label: str) -> None:
    """Every model in a store has the same token count: refuse a shorter one before writing anything.

    Tokenising is cheap next to the forward pass, so the text is read once more here.
    """
    rows = count_rows(iter_rows(iter_documents(config.data), tokenizer, config.data.max_seq_len),
                      needed // config.data.max_seq_len)
    if rows * config.data.max_seq_len < needed:
        raise DataError(
            f"model {label!r} yields only {rows * config.data.max_seq_len:,} tokens of this text, fewer than "
            f"the {needed:,} the store's other models committed; collect it into a new store with "
            "--data.max_tokens at most that, or give it more text"
        )


def run(config: CollectConfig) -> int:
    """Validate everything that can fail, then collect under the model slot's lease; returns the exit code."""
    prepared = _prepare(config)
    location, label = prepared.location, prepared.slot.label
    if _complete(prepared):  # a finished build re-run: no lease, no write, not a byte changed
        print(_nothing_to_do(label, location, prepared.stored.n_tokens if prepared.stored else 0))
        return 0
    key = slot_key(STATS_GROUP, label)
    lease = Lease(location, key, f"collect model {label!r}")
    # the lease refuses a second build of this model; a full disk or a dead endpoint is one error line
    with reporting_write_faults(location), lease.acquire(interrupt=True):
        attrs = store_attrs(config, prepared.layout.token_chunk)
        session = open_session(location, prepared.layout, prepared.slot, attrs,
                               replace_for=key if config.overwrite else None)
        return _collect_into(config, prepared, session, lease)


def _complete(prepared: _Prepared) -> bool:
    stored = prepared.stored
    if stored is None or stored.committed.get(prepared.slot.label, 0) < stored.n_tokens:
        return False
    return not stale_metadata(prepared.location)  # else finish() repairs it, under the lease


def _nothing_to_do(label: str, location: StoreLocation, n_tokens: int) -> str:
    return f"Nothing to do: model {label!r} is complete in {location.display()} ({n_tokens:,} tokens)."


def _collect_into(config: CollectConfig, prepared: _Prepared, session: WriteSession, lease: Lease) -> int:
    layout, label, location = session.layout, prepared.slot.label, prepared.location
    if session.committed >= layout.n_tokens:
        finish(location, session, layout.n_tokens, lease)  # repairs a build killed while finishing
        print(_nothing_to_do(label, location, layout.n_tokens))
        return 0
    if session.committed:
        print(f"Resuming model {label!r} at token {session.committed:,} of {layout.n_tokens:,}.")
    channel_index = session.group["channel_index"][session.slot]
    capture = StatsCapture(prepared.modules, layout.metrics, channel_index)
    writer = StatsWriter(session.group, session.slot, layout.token_chunk, session.committed, lease)
    max_rows = layout.n_tokens // config.data.max_seq_len
    batches = iter_batches(prepared.rows, config.data.batch_size, max_rows, first_token=session.committed)
    with tqdm(total=layout.n_tokens, initial=session.committed, unit="tok", unit_scale=True,
              desc=f"collect {label}", disable=not config.progress, smoothing=0.1) as progress:
        result = collect(models.decoder_body(prepared.model), capture, batches, writer,
                         models.input_device(prepared.model), progress)
    finish(location, session, result.tokens_committed, lease)  # refuses to cut another model's commits
    print(_summary(location, label, session, result))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_config(CollectConfig, argv, "python -m builders.collect", DESCRIPTION)
        return run(config)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: committed tokens are kept; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
