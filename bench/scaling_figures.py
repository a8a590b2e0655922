"""Scaling figures of a ``builders.collect`` build: store size, objects, S3 request rates, worker memory.

Issue 7's plan (docs/scaling.md) asks for figures "computed from the code's real chunking, not
guessed". This script imports what the builder itself uses: ``builders.collect._layout`` (the
command-line settings to a ``store._schema.StatsLayout``), ``template`` and ``encoding`` (every
array of the ``stats`` group, its shape and its object shape), the lease TTL and the age below
which ``live_leases`` reads a record (``store._lease``), the store lease's wait
(``store._stats_store``), the checkpoint interval (``CollectConfig.commit_seconds``) and zarr's
request concurrency; the rest is arithmetic.

S3 requests per work unit follow the code path a unit takes (``builders._run.compute_unit`` on
a worker; ``_tokenise`` and ``publish_prefix``, with the unit states the client keeps in memory,
in the client), priced by what each call costs through zarr 3.1 and s3fs (REQUEST COSTS below;
checked against a request log of a small build through moto, see docs/scaling.md). Three inputs are not in the code and come from the command
line: ``--compression`` (stored/raw bytes, measured on a real store), ``--tokens_per_second``
per worker (an estimate for GPUs) and ``--request_ms`` (an assumed S3 round trip).

Run from the repository root (the project is installed with ``pip install -e .``; otherwise
prefix ``PYTHONPATH=.``):

    python bench/scaling_figures.py                      # 100M tokens x 4 models, 8 workers at 5,000 tokens/s
    python bench/scaling_figures.py --tokens 1000000 --workers 16
    python bench/scaling_figures.py --shard_tokens 65536 --layers 32 --channels 256
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import zarr

from builders._config import CollectConfig, DataConfig, StatsConfig
from builders._metrics import CHANNEL_METRIC, METRICS
from builders.collect import _layout
from store._lease import _RECENT as LEASE_RECENT  # live_leases reads only records written this recently
from store._lease import DEFAULT_TTL
from store._schema import DIMS, DTYPES, STREAMED, ModelSlot, StatsLayout, encoding, template
from store._stats_store import STRUCTURE_WAIT

# S3's published request rates per partitioned prefix (Amazon S3 User Guide, "Best practices design
# patterns: optimizing Amazon S3 performance"); S3 adds partitions as a prefix's load grows.
S3_PUT_LIMIT = 3500.0  # PUT/COPY/POST/DELETE per second
S3_GET_LIMIT = 5500.0  # GET/HEAD per second; LIST is counted here too (no separate figure is published)
S3_LIST_PAGE = 1000  # keys per ListObjectsV2 answer
FETCH_BATCH = 128  # fsspec's default number of concurrent requests in cat_ranges (the resume check)
RENEW_PERIOD = DEFAULT_TTL / 4  # Lease._renew_until_stopped renews every ttl / 4
GIB = 2**30


@dataclass(frozen=True)
class Requests:
    """S3 requests, in the classes S3's limits count: PUT (and DELETE), GET (and HEAD), LIST."""

    put: float = 0.0
    get: float = 0.0
    list: float = 0.0

    def __add__(self, other: Requests) -> Requests:
        return Requests(self.put + other.put, self.get + other.get, self.list + other.list)

    def __mul__(self, factor: float) -> Requests:
        return Requests(self.put * factor, self.get * factor, self.list * factor)

    @property
    def reads(self) -> float:
        return self.get + self.list

    @property
    def total(self) -> float:
        return self.put + self.reads


# ---- REQUEST COSTS: what one call of the code costs on S3 (zarr 3.1 FsspecStore over s3fs) -------------
READ_OBJECT = Requests(get=2)  # s3fs's whole-object read asks the size first: HEAD, then GET
# zarr's sharding codec reads a shard before writing it, even a whole one: HEAD (404), then s3fs
# LISTs "<key>/" to tell a missing object from a folder, then the PUT.
WRITE_SHARD = Requests(put=1, get=1, list=1)
WRITE_CHUNK = Requests(put=1)  # unsharded chunks (unit_state, committed_tokens): one PUT
WRITE_SHARD_ROUND_TRIPS = 3  # HEAD, LIST, PUT of one shard, one after another
OPEN_ARRAY = READ_OBJECT  # every group[name] reads the array's zarr.json
# zarr.open_group(use_consolidated=False): stats/zarr.json, and HEAD + LIST for each of Zarr v2's
# .zgroup, .zattrs and .zmetadata
OPEN_GROUP = Requests(get=5, list=3)
LIST_MISSING = Requests(list=2)  # s3fs's ls of a missing folder lists its parent too
CLAIM_CREATE = Requests(put=1, get=1, list=1)  # PUT If-None-Match, then re-read the newest: LIST + GET
RENEWAL = Requests(put=1, get=2, list=2)  # newest (LIST + GET), overwrite (PUT), newest again
RELEASE = Requests(put=1)  # the record is rewritten with expires = 0 and kept
CHECKPOINT = Requests(put=1)  # one _staging/.../<start>-<end>.npz object
CLEAR_EMPTY = Requests(get=2, list=3)  # fs.rm(recursive) of a unit folder without checkpoints
CLEAR_SAVED = Requests(put=1, list=1)  # with checkpoints: one LIST, one DeleteObjects (<= 1,000 keys)


# ---- the plan and its layout ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The command-line settings of the plan, before the layout code turns them into shapes."""

    tokens: int
    models: int
    layers: int
    metrics: int
    channels: int
    commit_tokens: int
    shard_tokens: int
    seq_len: int


def collect_config(plan: Plan) -> CollectConfig:
    """The CollectConfig of a ``builders.collect`` command line with these settings."""
    scalar = list(METRICS)[: plan.metrics]
    metrics = [*scalar, CHANNEL_METRIC] if plan.channels else scalar
    stats = StatsConfig(layers=[f"layer_{i}" for i in range(plan.layers)], metrics=metrics,
                        channels=max(plan.channels, 1),  # must be positive; unused without channel_wise
                        commit_tokens=plan.commit_tokens,
                        shard_tokens=plan.shard_tokens)
    return CollectConfig(data=DataConfig(max_tokens=plan.tokens, max_seq_len=plan.seq_len), stats=stats)


def layout_of(plan: Plan) -> StatsLayout:
    """The builder's own mapping of the settings to shapes and chunking."""
    return _layout(collect_config(plan))


# ---- objects and bytes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrayFigures:
    """One array of the stats group, all models together."""

    name: str
    per_model: bool  # indexed by model (else one copy shared by all models)
    objects: int
    raw_bytes: int
    stored_bytes: float


def group_arrays(layout: StatsLayout) -> dict[str, tuple[str, ...]]:
    """Every array a build creates (data variables and coordinates) with its dims, from ``template``."""
    tiny = StatsLayout(layout.layers, layout.metrics, layout.token_chunk, layout.n_channels, layout.token_chunk)
    n_layers = len(layout.layers)
    slot = ModelSlot("m", np.zeros(n_layers), np.zeros((n_layers, layout.n_channels)), {})
    dataset = template(tiny, slot, {})  # names and dims do not depend on the token count
    return {str(name): tuple(str(dim) for dim in var.dims) for name, var in dataset.variables.items()}


def array_shape(layout: StatsLayout, name: str, dims: tuple[str, ...], n_models: int) -> tuple[int, ...]:
    if name in DIMS:
        return layout.shape(name, n_models)
    return tuple(n_models if dim == "model" else len(getattr(layout, f"{dim}s")) for dim in dims)


def object_shape(layout: StatsLayout, name: str, dims: tuple[str, ...]) -> tuple[int, ...]:
    """Shard (streamed), chunk (encoded), else zarr's default for a small array: one model's whole array."""
    spec = encoding(layout).get(name, {})
    if "shards" in spec or "chunks" in spec:
        return tuple(spec.get("shards") or spec["chunks"])
    return array_shape(layout, name, dims, 1)


def count_objects(shape: Sequence[int], step: Sequence[int]) -> int:
    """Objects of an array of ``shape`` cut into ``step`` pieces (an empty axis has none; zarr steps are >= 1)."""
    return math.prod(math.ceil(size / max(each, 1)) for size, each in zip(shape, step))


def item_bytes(name: str) -> int:
    """Bytes per element; the string coordinates (model, layer, metric labels) count as nothing."""
    return np.dtype(DTYPES[name]).itemsize if name in DTYPES else 0


def shard_index_bytes(layout: StatsLayout) -> int:
    """zarr's shard index: 16 bytes per inner chunk + a 4-byte crc32c (see store/_integrity.py)."""
    return 16 * (layout.shard_tokens // layout.token_chunk) + 4


def array_figures(layout: StatsLayout, n_models: int, compression: float) -> list[ArrayFigures]:
    figures = []
    for name, dims in group_arrays(layout).items():
        shape = array_shape(layout, name, dims, n_models)
        objects = count_objects(shape, object_shape(layout, name, dims))
        raw = math.prod(shape) * item_bytes(name)
        stored = raw * compression + objects * shard_index_bytes(layout) if name in STREAMED else raw
        figures.append(ArrayFigures(name, "model" in dims, objects, raw, stored))
    return figures


def metadata_objects(layout: StatsLayout) -> int:
    """zarr.json of the root, of the stats group and of each array."""
    return 2 + len(group_arrays(layout))


def lease_objects(layout: StatsLayout, n_models: int) -> int:
    """Records kept after a build: the store key, each slot, each unit claim (released, not deleted)."""
    return 1 + n_models * (1 + layout.n_units)


# ---- requests per unit ---------------------------------------------------------------------------------


def series_per_unit(layout: StatsLayout, name: str) -> int:
    """Shards of ``name`` in one unit of one model: one per series (layer x metric, layer x channel)."""
    steps = layout.chunks(name, layout.shard_tokens)
    return math.prod(math.ceil(size / step) for dim, size, step in zip(DIMS[name], layout.shape(name), steps)
                     if dim not in ("model", "token"))


def unit_seconds(layout: StatsLayout, tokens_per_second: float) -> float:
    return layout.shard_tokens / tokens_per_second


def checkpoints_per_unit(seconds: float, commit_seconds: float) -> int:
    """UnitWriter checkpoints each time commit_seconds pass, unless the unit is complete by then."""
    return max(0, math.ceil(seconds / commit_seconds) - 1) if commit_seconds else 0


def renewals_per_unit(seconds: float) -> int:
    return math.floor(seconds / RENEW_PERIOD)


def claim_acquire(layout: StatsLayout) -> Requests:
    """A fresh claim: LIST its missing folder and the parent units/ (a page per 1,000 claims), create."""
    return Requests(list=1 + math.ceil(layout.n_units / S3_LIST_PAGE)) + CLAIM_CREATE


Profile = dict[str, Requests]  # requests by store prefix


def add(profile: Profile, prefix: str, requests: Requests) -> None:
    profile[prefix] = profile.get(prefix, Requests()) + requests


SHARD_WRITES = ("value", "channel_value")  # written by the worker's commit, one array after the other


def worker_requests(layout: StatsLayout, seconds: float, commit_seconds: float) -> Profile:
    """``compute_unit`` on a worker: claim, read the unit's tokens, checkpoint, write the unit once."""
    checkpoints = checkpoints_per_unit(seconds, commit_seconds)
    profile: Profile = {}
    add(profile, "_leases", claim_acquire(layout) + RENEWAL * renewals_per_unit(seconds) + RELEASE)
    add(profile, "stats (group)", OPEN_GROUP)
    # unit_state(): the unit's own marker (one object); mark_unit() later writes it
    add(profile, "stats/unit_state", OPEN_ARRAY + READ_OBJECT + OPEN_ARRAY + WRITE_CHUNK)
    clear = CLEAR_SAVED if checkpoints else CLEAR_EMPTY
    add(profile, "_staging", LIST_MISSING + CHECKPOINT * checkpoints + clear)
    add(profile, "stats/token_id", OPEN_ARRAY + READ_OBJECT)
    add(profile, "stats/channel_index", OPEN_ARRAY + READ_OBJECT)
    for name in SHARD_WRITES:
        add(profile, f"stats/{name}", OPEN_ARRAY + WRITE_SHARD * series_per_unit(layout, name))
    return profile


def worker_store_seconds(layout: StatsLayout, seconds: float, commit_seconds: float,
                         request_ms: float) -> float:
    """Round-trip time of the requests that hold up a unit on a worker, transfer time left out: the
    shard writes with zarr's async.concurrency in flight, every other request one after another;
    the claim's renewals run in their own thread and are left out."""
    concurrency = int(zarr.config.get("async.concurrency") or 1)
    total = summed(worker_requests(layout, seconds, commit_seconds)).total - RENEWAL.total * renewals_per_unit(seconds)
    shards = sum(series_per_unit(layout, name) for name in SHARD_WRITES)
    rounds = sum(math.ceil(series_per_unit(layout, name) / concurrency) for name in SHARD_WRITES)
    return ((total - WRITE_SHARD.total * shards) + rounds * WRITE_SHARD_ROUND_TRIPS) * request_ms / 1000


def tokenise_requests(layout: StatsLayout) -> Profile:
    """``_tokenise`` in the client: the unit's token_id and doc_index once, then marker UNIT_TOKENIZED."""
    profile: Profile = {}
    for name in ("token_id", "doc_index"):
        add(profile, f"stats/{name}", OPEN_ARRAY + WRITE_SHARD * series_per_unit(layout, name))
    add(profile, "stats/unit_state", OPEN_ARRAY + WRITE_CHUNK)
    return profile


def publish_requests(layout: StatsLayout) -> Profile:
    """``publish_prefix`` in the client after each committed unit, from the states it keeps in memory
    (upper bound: the prefix moves each time, so ``committed_tokens`` is rewritten)."""
    profile: Profile = {}
    add(profile, "stats/committed_tokens", OPEN_ARRAY + READ_OBJECT + OPEN_ARRAY + WRITE_CHUNK)
    return profile


def build_requests(layout: StatsLayout) -> Requests:
    """Once per build in the client: the row of unit states, read by ``_tokenise`` and ``_compute_units``."""
    return (OPEN_ARRAY + READ_OBJECT * layout.n_units) * 2


def unit_requests(layout: StatsLayout, seconds: float, commit_seconds: float) -> Profile:
    """Everything one unit costs, worker and client together, by prefix."""
    profile: Profile = {}
    parts = (worker_requests(layout, seconds, commit_seconds), tokenise_requests(layout), publish_requests(layout))
    for part in parts:
        for prefix, requests in part.items():
            add(profile, prefix, requests)
    return profile


def summed(profile: Profile) -> Requests:
    return sum(profile.values(), Requests())


# ---- rates, limits and times ---------------------------------------------------------------------------


def units_per_second(layout: StatsLayout, aggregate_tokens_per_second: float) -> float:
    return aggregate_tokens_per_second / layout.shard_tokens


def limit_tokens_per_second(layout: StatsLayout, per_unit: Requests) -> tuple[float, float]:
    """Aggregate tokens/s at which these per-unit requests reach S3's PUT and GET limits."""
    put = S3_PUT_LIMIT * layout.shard_tokens / per_unit.put if per_unit.put else math.inf
    read = S3_GET_LIMIT * layout.shard_tokens / per_unit.reads if per_unit.reads else math.inf
    return put, read


def object_reads_seconds(n_objects: int, request_ms: float) -> float:
    """zarr reads ``n_objects`` with async.concurrency in flight, each a HEAD then a GET."""
    concurrency = int(zarr.config.get("async.concurrency") or 1)
    return math.ceil(n_objects / concurrency) * 2 * request_ms / 1000


@dataclass(frozen=True)
class LeaseListing:
    keys: int  # slot keys and unit claims under _leases/stats/, one record each after a build
    pages: int  # the one recursive listing, 1,000 keys per page
    recent: int  # keys written in the last LEASE_RECENT seconds while builds run: read with LIST + GET

    def seconds(self, recent: int, request_ms: float) -> float:
        return (self.pages + 2 * recent) * request_ms / 1000


def lease_listing(layout: StatsLayout, n_models: int, workers: int, seconds: float) -> LeaseListing:
    """``live_leases(stats)``: one recursive listing, then LIST + GET of each recently written key.

    While all models build: every slot lease (renewed), every held claim (one per busy worker) and
    the claims released in the last LEASE_RECENT seconds. After the builds: none.
    """
    keys = n_models * (1 + layout.n_units)
    recent = n_models + workers + math.ceil(workers * LEASE_RECENT / seconds)
    return LeaseListing(keys, math.ceil(keys / S3_LIST_PAGE), min(recent, keys))


def resume_check(layout: StatsLayout, n_models: int, request_ms: float) -> tuple[int, int, float]:
    """``check_intact`` before a resume: list each streamed array (all models), read each shard index."""
    def shards(name: str, models: int) -> int:
        return count_objects(layout.shape(name, models), layout.chunks(name, layout.shard_tokens))

    pages = sum(math.ceil(shards(name, n_models) / S3_LIST_PAGE) for name in STREAMED)
    indexes = sum(shards(name, 1) for name in STREAMED)
    return pages, indexes, (pages + math.ceil(indexes / FETCH_BATCH)) * request_ms / 1000


def unit_buffer_bytes(layout: StatsLayout) -> int:
    """UnitWriter holds the whole unit: (layer, metric) values and (layer, channel) samples per token."""
    per_token = len(layout.layers) * (len(layout.metrics) + layout.n_channels)
    return per_token * layout.shard_tokens * np.dtype(DTYPES["value"]).itemsize


def worker_peak_bytes(layout: StatsLayout, weight_bytes: float) -> float:
    """The buffer plus concat_blocks' merged copy at a commit or checkpoint, plus the weights."""
    return 2 * unit_buffer_bytes(layout) + weight_bytes


def fitting_shard_tokens(layout: StatsLayout, budget_bytes: float) -> int:
    """The largest --stats.shard_tokens (whole inner chunks) whose doubled buffer fits; 0: none does."""
    per_chunk = 2 * unit_buffer_bytes(layout) / layout.shard_tokens * layout.token_chunk
    return int(max(0.0, budget_bytes) // per_chunk) * layout.token_chunk


def busy_fraction(n_units: int, workers: int) -> float:
    """Busy share of the workers over a build of ``n_units`` equal tasks."""
    return n_units / (math.ceil(n_units / workers) * workers)


# ---- printing ------------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:,.2f}"


def rate(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def percent(share: float) -> str:
    return "< 1%" if share < 0.005 else f"{share:.0%}"


def tokens_rate(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:,.0f}"


def print_layout(plan: Plan, layout: StatsLayout) -> None:
    shape = f"{plan.models} x {len(layout.layers)} x {len(layout.metrics)} + {layout.n_channels}"
    print("== Layout (builders.collect._layout -> store._schema.StatsLayout)")
    print(table(["figure", "value"], [
        ["tokens requested / on the token axis (whole rows)", f"{plan.tokens:,} / {layout.n_tokens:,}"],
        ["models x layers x metrics + channels", shape],
        ["token_chunk (inner chunk, tokens)", f"{layout.token_chunk:,}"],
        ["shard_tokens = unit tokens", f"{layout.shard_tokens:,}"],
        ["inner chunks per shard", f"{layout.shard_tokens // layout.token_chunk:,}"],
        ["units per model / in total", f"{layout.n_units:,} / {layout.n_units * plan.models:,}"],
    ]))


def object_rows(figures: list[ArrayFigures], n_models: int) -> list[list[str]]:
    return [[f.name, f"{f.objects // n_models:,}" if f.per_model else "shared", f"{f.objects:,}",
             gb(f.raw_bytes), gb(f.stored_bytes), f"{f.stored_bytes / f.objects / 1e6:,.3f}" if f.objects else "-"]
            for f in sorted(figures, key=lambda f: -f.stored_bytes)]


def print_objects(plan: Plan, layout: StatsLayout, compression: float) -> None:
    figures = array_figures(layout, plan.models, compression)
    meta, leases = metadata_objects(layout), lease_objects(layout, plan.models)
    rows = object_rows(figures, plan.models)
    rows += [["zarr.json (metadata)", "-", f"{meta:,}", "-", "-", "-"],
             ["_leases records kept", "-", f"{leases:,}", "-", "-", "-"]]
    objects = sum(f.objects for f in figures) + meta + leases
    raw, stored = sum(f.raw_bytes for f in figures), sum(f.stored_bytes for f in figures)
    rows.append(["TOTAL", "-", f"{objects:,}", gb(raw), gb(stored), "-"])
    print(f"\n== Store: objects and bytes ({plan.models} models; stored = raw x {compression} + shard index)")
    print(table(["array", "objects/model", "objects", "raw GB", "stored GB", "MB/object"], rows))


def print_unit_requests(layout: StatsLayout, n_models: int, tokens_per_second: float,
                        commit_seconds: float) -> Profile:
    seconds = unit_seconds(layout, tokens_per_second)
    profile = unit_requests(layout, seconds, commit_seconds)
    print(f"\n== S3 requests per committed unit at {tokens_per_second:,.0f} tokens/s per worker (a unit takes "
          f"{seconds:,.0f} s: {checkpoints_per_unit(seconds, commit_seconds)} checkpoints, "
          f"{renewals_per_unit(seconds)} claim renewals)")
    rows = [[prefix, rate(r.put), rate(r.get), rate(r.list)]
            for prefix, r in sorted(profile.items(), key=lambda item: -item[1].total)]
    total = summed(profile)
    rows.append(["TOTAL", rate(total.put), rate(total.get), rate(total.list)])
    print(table(["prefix", "PUT+DELETE", "GET+HEAD", "LIST"], rows))
    build = total * (layout.n_units * n_models) + build_requests(layout) * n_models
    print(f"whole plan ({layout.n_units * n_models:,} units, and the client's two reads of the unit_state row "
          f"per build): {build.put:,.0f} PUT+DELETE, {build.get:,.0f} GET+HEAD, {build.list:,.0f} LIST")
    return profile


def print_rates(layout: StatsLayout, workers: int, tokens_per_second: float, profile: Profile) -> None:
    aggregate = workers * tokens_per_second
    units = units_per_second(layout, aggregate)
    print(f"\n== Requests per second: {workers} workers x {tokens_per_second:,.0f} tokens/s = {aggregate:,.0f} "
          f"tokens/s = {units:,.3f} units/s (all models together)")
    named = sorted(profile.items(), key=lambda item: -item[1].total)
    rows = []
    for prefix, per_unit in [*named, ("whole store as ONE partition", summed(profile))]:
        put_at, read_at = limit_tokens_per_second(layout, per_unit)
        rows.append([prefix, rate(per_unit.put * units), rate(per_unit.reads * units),
                     tokens_rate(put_at), tokens_rate(read_at)])
    print(table(["prefix", "PUT/s", "GET+LIST/s", f"tokens/s at {S3_PUT_LIMIT:,.0f} PUT/s",
                 f"tokens/s at {S3_GET_LIMIT:,.0f} GET/s"], rows))


def speed_row(plan: Plan, layout: StatsLayout, args: argparse.Namespace, tokens_per_second: float) -> list[str]:
    seconds = unit_seconds(layout, tokens_per_second)
    profile = unit_requests(layout, seconds, args.commit_seconds)
    units = units_per_second(layout, args.workers * tokens_per_second)
    total = summed(profile) * units
    compute_hours = layout.n_tokens * plan.models / (args.workers * tokens_per_second) / 3600
    return [f"{tokens_per_second:,.0f}", f"{seconds:,.0f}", str(checkpoints_per_unit(seconds, args.commit_seconds)),
            str(renewals_per_unit(seconds)), rate(max(r.put for r in profile.values()) * units),
            rate(max(r.reads for r in profile.values()) * units), rate(total.put), rate(total.reads),
            f"{compute_hours:,.1f}"]


def print_speeds(plan: Plan, layout: StatsLayout, args: argparse.Namespace) -> None:
    rows = [speed_row(plan, layout, args, tokens_per_second) for tokens_per_second in args.speeds]
    print(f"\n== Speeds ({args.workers} workers; tokens/s per worker are inputs, see docs/scaling.md)")
    print(table(["tokens/s/worker", "s/unit", "checkpoints", "renewals", "hottest PUT/s", "hottest GET/s",
                 "store PUT/s", "store GET/s", "compute hours"], rows))


def fit_text(layout: StatsLayout, fit: int) -> str:
    if fit >= layout.shard_tokens:
        return "default fits"
    return f"{fit:,}" if fit else f"< {layout.token_chunk:,}: lower --stats.commit_tokens too"


def print_memory(plan: Plan, args: argparse.Namespace) -> None:
    weights = args.model_params * args.bytes_per_param
    budget = args.worker_memory_gb * GIB - weights
    rows = []
    for layers, channels in [(plan.layers, plan.channels), *args.wider]:
        wide = layout_of(dataclasses.replace(plan, layers=layers, channels=channels))
        rows.append([f"{layers} x ({len(wide.metrics)} + {channels})", f"{wide.shard_tokens:,}",
                     gb(unit_buffer_bytes(wide)), gb(worker_peak_bytes(wide, weights)),
                     fit_text(wide, fitting_shard_tokens(wide, budget))])
    print(f"\n== Worker memory (unit buffer x 2 at a commit + weights {gb(weights)} GB = "
          f"{args.model_params:,.0f} params x {args.bytes_per_param:g} bytes)")
    print(table(["layers x (metrics + channels)", "unit tokens", "buffer GB", "peak GB",
                 f"shard_tokens to fit {args.worker_memory_gb:g} GiB"], rows))


def print_units_vs_workers(plan: Plan, workers: int, token_counts: Sequence[int]) -> None:
    rows = []
    for tokens in token_counts:
        layout = layout_of(dataclasses.replace(plan, tokens=tokens))
        rows.append([f"{tokens:,}", f"{layout.shard_tokens:,}", f"{layout.n_units:,}",
                     str(max(0, workers - layout.n_units)), f"{busy_fraction(layout.n_units, workers):.0%}"])
    print(f"\n== Units of one model vs {workers} workers (one build = one model)")
    print(table(["tokens", "unit tokens", "units", "idle workers", "busy fraction"], rows))


def s3_limit_rows(layout: StatsLayout, profile: Profile) -> list[list[str]]:
    put_prefix, put_requests = max(profile.items(), key=lambda item: item[1].put)
    read_prefix, read_requests = max(profile.items(), key=lambda item: item[1].reads)
    return [[f"PUT limit on {put_prefix}", f"{tokens_rate(limit_tokens_per_second(layout, put_requests)[0])} tokens/s"],
            [f"GET+LIST limit on {read_prefix}",
             f"{tokens_rate(limit_tokens_per_second(layout, read_requests)[1])} tokens/s"]]


def per_unit_rows(layout: StatsLayout, args: argparse.Namespace) -> list[list[str]]:
    rows = [["worker: store round trips per unit", "transfer time not included"]]
    for tokens_per_second in args.speeds:
        seconds = unit_seconds(layout, tokens_per_second)
        store = worker_store_seconds(layout, seconds, args.commit_seconds, args.request_ms)
        share = percent(store / (store + seconds))
        rows.append([f"  at {tokens_per_second:,.0f} tokens/s",
                     f"{store:,.2f} s + {seconds:,.1f} s of compute: {share} of the worker's time"])
    publish = summed(publish_requests(layout)).total * args.request_ms / 1000
    row_read = object_reads_seconds(layout.n_units, args.request_ms)
    keeps_up = layout.shard_tokens / publish
    return [*rows, ["client publish_prefix per unit", f"{publish:,.2f} s: keeps up with {keeps_up:,.0f} tokens/s per build"],
            ["client unit_state row reads per build", f"2 x {row_read:,.2f} s ({layout.n_units:,} objects each)"]]


def client_rows(plan: Plan, layout: StatsLayout, args: argparse.Namespace) -> list[list[str]]:
    tokenise = layout.n_tokens / args.tokenizer_tokens_per_second
    writes = summed(tokenise_requests(layout)).total * layout.n_units * args.request_ms / 1000
    pages, indexes, check = resume_check(layout, plan.models, args.request_ms)
    leases = lease_listing(layout, plan.models, args.workers, unit_seconds(layout, args.tokens_per_second))
    return [["tokenise one model: tokenizer alone", f"{tokenise:,.0f} s"],
            ["  + token_id/doc_index/unit_state writes", f"{writes:,.0f} s of sequential requests"],
            ["resume: re-tokenise + check_intact",
             f"{tokenise:,.0f} s + {pages:,} LIST pages and {indexes:,} index GETs ({check:,.0f} s)"],
            ["live_leases(stats): keys / LIST pages", f"{leases.keys:,} / {leases.pages:,}"],
            ["  after the builds: nothing to read", f"{leases.seconds(0, args.request_ms):,.2f} s"],
            ["  during the builds: recent keys read",
             f"<= {leases.recent:,} (LIST + GET each): {leases.seconds(leases.recent, args.request_ms):,.2f} s"],
            ["  others wait for the store lease", f"{STRUCTURE_WAIT:.0f} s"],
            ["consolidated metadata", f"{metadata_objects(layout)} zarr.json documents, whatever the tokens"]]


def print_limits(plan: Plan, layout: StatsLayout, profile: Profile, args: argparse.Namespace) -> None:
    rows = [*s3_limit_rows(layout, profile), *per_unit_rows(layout, args), *client_rows(plan, layout, args)]
    print(f"\n== Limits (aggregate tokens/s of all workers; S3 round trip {args.request_ms:g} ms assumed)")
    print(table(["limit", "figure"], rows))


# ---- command line --------------------------------------------------------------------------------------


def floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part]


def ints(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part]


def pairs(text: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in (part.split("x") for part in text.split(",") if part)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    arg = parser.add_argument
    arg("--tokens", type=int, default=100_000_000, help="tokens per model (default 100,000,000)")
    arg("--models", type=int, default=4, help="models in the store (default 4)")
    arg("--layers", type=int, default=3, help="collection points (default 3: embed, middle, pre_last)")
    arg("--metrics", type=int, default=13, choices=range(1, len(METRICS) + 1), metavar="N",
        help=f"scalar metrics, 1 to {len(METRICS)} (default 13)")
    arg("--channels", type=int, default=64, help="sampled channels, 0 for none (default 64)")
    arg("--commit_tokens", type=int, default=16384, help="--stats.commit_tokens (default 16,384)")
    arg("--shard_tokens", type=int, default=0, help="--stats.shard_tokens (default 0: the 1 MiB rule)")
    arg("--seq_len", type=int, default=512, help="--data.max_seq_len (default 512)")
    arg("--commit_seconds", type=float, default=CollectConfig().commit_seconds, help="checkpoint interval")
    arg("--tokens_per_second", type=float, default=5000.0,
        help="per worker (default 5,000: an estimate for one GPU and a SmolLM2-sized model)")
    arg("--speeds", type=floats, default=[500.0, 5000.0, 50000.0], help="per-worker tokens/s to tabulate")
    arg("--workers", type=int, default=8, help="dask workers, all models together (default 8)")
    arg("--compression", type=float, default=0.73,
        help="stored / raw bytes of the streamed arrays (default 0.73, measured: docs/scaling.md)")
    arg("--tokenizer_tokens_per_second", type=float, default=1.4e6,
        help="the client's tokenising pass (default 1.4M, measured on a 2-core CPU: docs/scaling.md)")
    arg("--request_ms", type=float, default=20.0, help="S3 round trip of a small request (default 20, assumed)")
    arg("--model_params", type=float, default=135e6, help="parameters of the model (default 135M)")
    arg("--bytes_per_param", type=float, default=2.0, help="2 for bfloat16 (the GPU default), 4 for float32")
    arg("--worker_memory_gb", type=float, default=16.0, help="memory per worker, GiB (default 16)")
    arg("--wider", type=pairs, default=[(8, 256), (32, 64), (32, 512)],
        help="LAYERSxCHANNELS configurations to size memory for (default 8x256,32x64,32x512)")
    arg("--unit_token_counts", type=ints, default=[1_000_000, 10_000_000, 100_000_000],
        help="tokens per model for the units-vs-workers table")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    plan = Plan(args.tokens, args.models, args.layers, args.metrics, args.channels, args.commit_tokens,
                args.shard_tokens, args.seq_len)
    layout = layout_of(plan)
    print_layout(plan, layout)
    print_objects(plan, layout, args.compression)
    profile = print_unit_requests(layout, plan.models, args.tokens_per_second, args.commit_seconds)
    print_rates(layout, args.workers, args.tokens_per_second, profile)
    print_speeds(plan, layout, args)
    print_memory(plan, args)
    print_units_vs_workers(plan, args.workers, args.unit_token_counts)
    print_limits(plan, layout, profile, args)


if __name__ == "__main__":
    main()
