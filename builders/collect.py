"""``python -m builders.collect``: per-token activation statistics of a causal LM into a Zarr store.

With no arguments it runs the embedded SmolLM2-135M-Instruct over Python's own
documentation text into ./stores/activations.zarr. Re-running the same command
resumes an interrupted build, or does nothing if the build is complete.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from builders import _models as models
from builders._cli import run_cli
from builders._config import CollectConfig
from builders._distributed import connect, models_on_workers, run_units
from builders._packing import count_rows, iter_rows, peek_rows, unit_rows
from builders._provenance import model_provenance, sample_channels, store_attrs
from builders._run import UnitJob, compute_unit
from builders._runtime import ModelRuntime, load_runtime
from builders._text import iter_documents
from builders._vocabulary import vocabulary_of
from builders.errors import DataError
from store import (
    STATS_GROUP,
    UNIT_COMMITTED,
    UNIT_EMPTY,
    UNIT_TOKENIZED,
    Lease,
    ModelSlot,
    StatsLayout,
    StoredStats,
    StoreLocation,
    Unit,
    Vocabulary,
    WriteSession,
    check_compatible,
    check_intact,
    check_ours_or_empty,
    finish,
    open_session,
    plan_units,
    publish_prefix,
    reporting_write_faults,
    slot_key,
    stale_metadata,
    structure_lease,
    unit_states,
    vocabulary_keys,
    write_unit_tokens,
    write_vocabulary,
)
from store.errors import ConfigError, InputError

DESCRIPTION = __doc__.split("\n\n")[0] if __doc__ else ""


def _layout(config: CollectConfig) -> StatsLayout:
    seq_len = config.data.max_seq_len
    n_tokens = (config.data.max_tokens // seq_len) * seq_len
    token_chunk = min(math.ceil(config.stats.commit_tokens / seq_len) * seq_len, n_tokens)
    shard_tokens = config.stats.shard_tokens and min(config.stats.shard_tokens, n_tokens)  # whole axis at most
    return StatsLayout(
        layers=tuple(config.stats.layers),
        metrics=tuple(config.stats.scalar_metrics),
        n_tokens=n_tokens,
        n_channels=config.stats.n_channels,
        token_chunk=token_chunk,
        requested_shard_tokens=shard_tokens,
    )


def _check_channels(config: CollectConfig, hidden_size: int) -> None:
    if config.stats.n_channels > hidden_size:
        raise ConfigError(
            f"stats.channels ({config.stats.n_channels}) exceeds the model's hidden size ({hidden_size}); "
            f"lower --stats.channels to at most {hidden_size}"
        )


def _summary(location: StoreLocation, label: str, layout: StatsLayout, committed: int, computed: int,
             seconds: float) -> str:
    rate = computed / seconds if seconds else 0.0
    where = location.display()
    return "\n".join([
        f"Collected model {label!r}: {committed:,} tokens x {len(layout.layers)} layers x "
        f"{len(layout.metrics)} metrics (+{layout.n_channels} channels) in {seconds:.1f} s ({rate:,.0f} tokens/s).",
        f"Store: {where} (group 'stats')",
        f"Open it: xarray.open_zarr({where!r}, group='stats')",
        f"     or: from analysis import open_store; open_store({where!r})",
    ])


@dataclass(frozen=True)
class _Checked:
    """Everything a build needs but the model, checked before the store is touched."""

    location: StoreLocation
    layout: StatsLayout
    label: str
    source: models.ModelSource
    model_config: Any
    hidden_size: int
    layer_indices: list[int]
    rows: Iterator[tuple[np.ndarray, np.ndarray]]
    stored: StoredStats | None  # what the store held when checked (None: new or replaced)
    vocabulary: Vocabulary  # kept in the store's vocab group, so queries decode ids without the tokenizer


def _check(config: CollectConfig) -> _Checked:
    """Every check that can fail runs here, cheapest first; nothing is written, no weights load."""
    location = StoreLocation(config.store, config.storage_options)
    location.check_writable()
    check_ours_or_empty(location)  # never write into, or --overwrite, a folder of other files
    documents = iter_documents(config.data)  # a missing local file fails here, before any loading
    source = models.resolve_source(config.model)
    model_config = models.load_model_config(source, config.model)
    models.check_sequence_length(model_config, config.data.max_seq_len, "data.max_seq_len")
    n_layers = models.num_layers(model_config)
    layer_indices = models.resolve_layers(config.stats.layers, n_layers)
    hidden_size = models.hidden_size(model_config)
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
    models.quiet_loading(config.progress)
    return _Checked(location, _layout(config), source.label, source, model_config, hidden_size,
                    layer_indices, rows, stored, vocabulary_of(tokenizer))


def _model_slot(config: CollectConfig, checked: _Checked, dtype: str) -> ModelSlot:
    layout = checked.layout
    channels = sample_channels(checked.hidden_size, layout.n_channels, len(layout.layers), config.stats.channel_seed)
    provenance = model_provenance(checked.source, config, checked.model_config, checked.hidden_size, dtype)
    return ModelSlot(checked.label, np.asarray(checked.layer_indices), channels, provenance)


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


# Computes the given units of a job, updating the progress bar, calling back after each commit.
Compute = Callable[[UnitJob, list[Unit], tqdm, Callable[[Unit], None]], int]


def run(config: CollectConfig) -> int:
    """Validate everything that can fail, load the model (here or on the cluster), then build."""
    checked = _check(config)
    if _complete(checked):  # a finished build re-run: no write, not a byte changed (but a missing vocabulary)
        _add_missing_vocabulary(checked)
        print(_nothing_to_do(checked.label, checked.location, checked.stored.n_tokens if checked.stored else 0))
        return 0
    if config.cluster.address:
        with connect(config.cluster) as client, models_on_workers(client, config) as (plugin, dtype):
            return _build(config, checked, dtype, functools.partial(run_units, client), plugin)
    runtime = load_runtime(config)
    return _build(config, checked, runtime.dtype, functools.partial(_compute_here, runtime))


def _compute_here(runtime: ModelRuntime, job: UnitJob, units: list[Unit], progress: tqdm,
                  on_committed: Callable[[Unit], None]) -> int:
    """The in-process build: units in order, in this process."""
    computed = 0
    for unit in units:
        computed += compute_unit(runtime, job, unit, progress)
        on_committed(unit)
    return computed


def _build(config: CollectConfig, checked: _Checked, dtype: str, compute: Compute, plugin: str = "") -> int:
    """Collect under the model slot's lease: tokens into the store, then every uncommitted unit."""
    location, label = checked.location, checked.label
    slot = _model_slot(config, checked, dtype)
    key = slot_key(STATS_GROUP, label)
    lease = Lease(location, key, f"collect model {label!r}")
    # the lease refuses a second build of this model; a full disk or a dead endpoint is one error line
    with reporting_write_faults(location), lease.acquire(interrupt=True):
        attrs = store_attrs(config, checked.layout.token_chunk)
        session = open_session(location, checked.layout, slot, attrs,
                               replace_for=key if config.overwrite else None, vocabulary=checked.vocabulary)
        if session.note:
            print(session.note)
        units, states = _tokenise(config, checked.rows, session, lease)
        return _compute_units(config, session, units, states, lease, compute, plugin)


def _add_missing_vocabulary(checked: _Checked) -> None:
    """A store collected before stores kept vocabularies gains this model's on a re-run."""
    if checked.label in vocabulary_keys(checked.location):
        return
    lease = Lease(checked.location, slot_key(STATS_GROUP, checked.label), f"collect model {checked.label!r}")
    try:
        with reporting_write_faults(checked.location), lease.acquire(interrupt=True), \
                structure_lease(checked.location, f"record the vocabulary of model {checked.label!r}"):
            write_vocabulary(checked.location, checked.label, checked.vocabulary)
    except InputError as error:  # a finished store this user may not write: the statistics are what matters
        print(f"warning: could not add the vocabulary of model {checked.label!r} ({error})", file=sys.stderr)
        return
    print(f"Added the vocabulary of model {checked.label!r} (queries decode its tokens from the store).")


def _tokenise(config: CollectConfig, rows: Iterator[tuple[np.ndarray, np.ndarray]], session: WriteSession,
              lease: Lease) -> tuple[list[Unit], np.ndarray]:
    """Write each unit's token ids once (cheap, CPU only); returns the units the text fills and
    every unit's state (read once here: the build keeps it up to date from then on)."""
    layout, group, slot = session.layout, session.group, session.slot
    states = unit_states(group, slot)
    planned = plan_units(layout.n_tokens, layout.shard_tokens)
    units = []
    with tqdm(total=layout.n_tokens, unit="tok", unit_scale=True, desc=f"tokenise {session.label}",
              disable=not config.progress, leave=False) as progress:
        for unit, token_ids, doc_index in unit_rows(rows, planned, config.data.max_seq_len):
            if states[unit.index] == UNIT_EMPTY:
                write_unit_tokens(group, slot, unit, token_ids, doc_index, lease)
                states[unit.index] = UNIT_TOKENIZED
            units.append(unit)
            progress.update(unit.n_tokens)
    return units, states


def _compute_units(config: CollectConfig, session: WriteSession, units: list[Unit], states: np.ndarray,
                   lease: Lease, compute: Compute, plugin: str) -> int:
    location, label, layout = session.location, session.label, session.layout
    pending = [unit for unit in units if states[unit.index] != UNIT_COMMITTED]
    n_tokens = units[-1].end
    done = n_tokens - sum(unit.n_tokens for unit in pending)
    if not pending:
        publish_prefix(session.group, session.slot, units, lease, states)
        finish(location, session, n_tokens, lease)  # repairs a build killed while finishing
        print(_nothing_to_do(label, location, n_tokens))
        return 0
    if done:
        print(f"Resuming model {label!r}: {len(units) - len(pending)} of {len(units)} units committed "
              f"({done:,} of {n_tokens:,} tokens).")
    job = UnitJob(location, label, session.slot, layout.metrics, config.data.max_seq_len,
                  config.data.batch_size, config.commit_seconds, plugin)
    started = time.perf_counter()
    def committed(unit: Unit) -> None:  # states known here: no read of every marker per unit
        states[unit.index] = UNIT_COMMITTED
        publish_prefix(session.group, session.slot, units, lease, states)

    with tqdm(total=n_tokens, initial=done, unit="tok", unit_scale=True, desc=f"collect {label}",
              disable=not config.progress, smoothing=0.1) as progress:
        computed = compute(job, pending, progress, committed)
    finish(location, session, n_tokens, lease)  # refuses to cut another model's commits
    print(_summary(location, label, layout, n_tokens, computed, time.perf_counter() - started))
    return 0


def _complete(checked: _Checked) -> bool:
    stored = checked.stored
    if stored is None or stored.committed.get(checked.label, 0) < stored.n_tokens:
        return False
    return not stale_metadata(checked.location)  # else finish() repairs it, under the lease


def _nothing_to_do(label: str, location: StoreLocation, n_tokens: int) -> str:
    return f"Nothing to do: model {label!r} is complete in {location.display()} ({n_tokens:,} tokens)."


def main(argv: list[str] | None = None) -> int:
    return run_cli(CollectConfig, argv, "python -m builders.collect", DESCRIPTION, run)

if __name__ == "__main__":
    sys.exit(main())
