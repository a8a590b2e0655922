"""Integrity of a store's bytes: damaged metadata, missing or truncated shards, lost inner chunks.

Why this is hand-written: zarr-python reads a missing shard, a missing inner chunk and a
shard whose index cannot be decoded (a truncated object, a failed crc32c) as the fill value
(NaN / 0) without any error, and it offers no integrity check. So a deleted or truncated
shard silently becomes "no data", and a reader cannot tell it from a real value. This module
reads only object sizes (one listing per array) and shard indexes (one ranged read per
shard), never the data, so it is cheap enough to run before every resume.

It mirrors zarr-python 3.1 (``zarr/codecs/sharding.py``): ``ShardingCodec`` (``index_location``
"end" by default, ``index_codecs`` bytes little-endian then crc32c by default), ``_ShardIndex``
(an array of chunks_per_shard x (offset, nbytes) uint64 in C order, (2**64-1, 2**64-1) marking
an empty inner chunk), ``_shard_index_size`` (16 bytes per inner chunk + 4 for the crc32c),
``_ShardReader.from_bytes`` (the index is the first or last bytes of the object) and
``_encode_shard_dict`` (offsets count from the object's start, including a leading index) and
``zarr/codecs/crc32c_.py`` (crc32c of the index bytes, appended as 4 little-endian bytes).
Shard keys come from zarr's own chunk key encoding.

Which absences are damage: a store whose ``stats`` group has ``empty_chunks_written: true``
was written with ``write_empty_chunks`` on, so every inner chunk of a committed region is
stored and any hole there is damage. Older stores drop inner chunks and whole shards that
equal the fill value, so for them only shards that exist are checked (size and index).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import google_crc32c
import numpy as np
import zarr
from zarr.core.chunk_key_encodings import ChunkKeyEncoding, parse_chunk_key_encoding

from store._location import StoreLocation
from store._schema import DIMS, EMPTY_CHUNKS_ATTR, OPTIONAL, STATS_GROUP, STREAMED
from store.errors import StoreMismatchError

EMPTY = 2**64 - 1  # zarr's MAX_UINT_64: offset and nbytes of an inner chunk that is not stored
ARRAYS = (*DIMS, "model", "layer", "metric")  # every array a stats group must have
_REQUIRED = {
    "group": ("zarr_format", "node_type"),
    "array": ("zarr_format", "node_type", "shape", "data_type", "chunk_grid", "chunk_key_encoding",
              "fill_value", "codecs"),
}
_BATCH = 1024  # shard indexes read at once: bounds memory on stores with many shards
_RECHECKS = 3  # fresh reads of a shard that looked damaged, while it keeps changing


@dataclass(frozen=True)
class Damage:
    """One damaged object: a node's metadata (``model`` is None) or a token range of a shard."""

    variable: str  # array name in the stats group, or "stats" / "(root)" for the groups
    problem: str  # for metadata, a predicate of the variable: "is missing (...)", "has a damaged ..." 
    model: str | None = None
    start: int | None = None
    end: int | None = None
    key: str = ""  # the damaged object, relative to the store's root

    @property
    def in_metadata(self) -> bool:
        return self.start is None

    def __str__(self) -> str:
        if self.in_metadata:
            subject = {"(root)": "the root group", STATS_GROUP: f"the {STATS_GROUP!r} group"}
            return f"{subject.get(self.variable, repr(self.variable))} {self.problem}"
        where = f"{self.variable!r} of model {self.model!r} tokens {self.start}..{self.end}"
        return f"{where}: {self.problem} ({self.key})"


@dataclass(frozen=True)
class _ShardLayout:
    """What the integrity check needs from one sharded array's zarr.json."""

    shape: tuple[int, ...]
    shard_shape: tuple[int, ...]
    chunks_per_shard: tuple[int, ...]
    token_axis: int
    index_at_start: bool
    index_dtype: str  # "<u8" or ">u8": the endian of the index's bytes codec
    checksummed: bool
    key_encoding: ChunkKeyEncoding

    @property
    def index_size(self) -> int:
        return 16 * math.prod(self.chunks_per_shard) + (4 if self.checksummed else 0)

    @property
    def token_chunk(self) -> int:
        return self.shard_shape[self.token_axis] // self.chunks_per_shard[self.token_axis]

    def key(self, coords: tuple[int, ...]) -> str:
        return self.key_encoding.encode_chunk_key(coords)


@dataclass(frozen=True)
class _Shard:
    """One shard holding committed tokens of one model: where it is and what it must hold."""

    variable: str
    model: str
    key: str
    start: int  # first token of the shard
    end: int  # last token + 1, clipped to the token axis
    committed: int  # the model's commit marker


@dataclass(frozen=True)
class _Commits:
    labels: list[str]
    committed: list[int]


def damage(location: StoreLocation, model: str | None = None) -> list[Damage]:
    """Every damaged metadata document and every damaged shard under committed tokens.

    ``model`` restricts the shard checks to that model's slot (metadata is always checked).
    Reads only metadata, object sizes and shard indexes.
    """
    fs, root = location.filesystem()
    root = root.rstrip("/")
    documents, found = _read_metadata(fs, root)
    if not {"(root)", STATS_GROUP, "model", "committed_tokens"} <= set(documents):
        return found  # without the groups and the commit marker nothing below can be located
    commits = _read_commits(location)
    if isinstance(commits, Damage):
        return [*found, commits]
    empty_written = documents[STATS_GROUP].get("attributes", {}).get(EMPTY_CHUNKS_ATTR) is True
    for name in STREAMED:
        if name in documents:
            found += _array_damage(fs, root, name, documents[name], commits, empty_written, model)
    return found


def check_intact(location: StoreLocation, label: str) -> None:
    """Refuse to resume model ``label`` when its committed tokens or the metadata are damaged."""
    found = damage(location, model=label)
    if found:
        shown = "; ".join(str(item) for item in found[:3])
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise StoreMismatchError(
            f"store {location.display()!r} is damaged: {shown}{more}; restore the store from a copy, "
            "collect the model into a new --store, or rebuild this one with --overwrite"
        )


# ---- metadata ------------------------------------------------------------------------------------


def _node_paths() -> dict[str, tuple[str, str]]:
    """Name -> (key of its zarr.json, node type) for the root, the stats group and its arrays."""
    nodes = {"(root)": ("zarr.json", "group"), STATS_GROUP: (f"{STATS_GROUP}/zarr.json", "group")}
    nodes.update({name: (f"{STATS_GROUP}/{name}/zarr.json", "array") for name in ARRAYS})
    return nodes


_FORMAT_2_ONLY = ("unit_state",)  # arrays a format-1 store does not have


def _format_version(documents: dict[str, dict[str, Any]]) -> Any:
    group = documents.get(STATS_GROUP, {})
    return group.get("attributes", {}).get("format_version") if isinstance(group, dict) else None


def _read_metadata(fs: fsspec.AbstractFileSystem,
                   root: str) -> tuple[dict[str, dict[str, Any]], list[Damage]]:
    """The parsed zarr.json of every node that has a sound one, and a Damage for every other."""
    nodes = _node_paths()
    fs.invalidate_cache(root)  # a listing cached earlier in this process must not hide a deletion
    raw = fs.cat([f"{root}/{key}" for key, _ in nodes.values()], on_error="return")
    documents: dict[str, dict[str, Any]] = {}
    found: list[Damage] = []
    for name, (key, node_type) in nodes.items():
        document = _parse_metadata(raw.get(f"{root}/{key}", FileNotFoundError(key)), node_type)
        if document is None and name in _FORMAT_2_ONLY and _format_version(documents) == 1:
            continue
        if document is None and name in OPTIONAL and not _consolidated_lists(documents, key):
            continue  # a store written before it; listed in the consolidated metadata, it was lost
        if document is None:
            found.append(Damage(name, f"is missing (no {key})", key=key))
        elif isinstance(document, str):
            found.append(Damage(name, f"has a damaged {key}: {document}", key=key))
        else:
            documents[name] = document
    return documents, found


def _consolidated_lists(documents: dict[str, dict[str, Any]], key: str) -> bool:
    """Whether the root's consolidated metadata describes the node whose zarr.json is ``key``."""
    consolidated = documents.get("(root)", {}).get("consolidated_metadata") or {}
    listed = consolidated.get("metadata", {}) if isinstance(consolidated, dict) else {}
    return isinstance(listed, dict) and key.removesuffix("/zarr.json") in listed


def _parse_metadata(raw: bytes | Exception, node_type: str) -> dict[str, Any] | str | None:
    """The document, what is wrong with it, or None if it does not exist."""
    if isinstance(raw, FileNotFoundError):
        return None
    if isinstance(raw, Exception):
        raise raw  # a transport failure is not damage: let the caller see it
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"not valid JSON ({error})"
    if not isinstance(document, dict):
        return "not a JSON object"
    missing = [key for key in _REQUIRED[node_type] if key not in document]
    if missing:
        return f"lacks {', '.join(missing)}"
    if document["zarr_format"] != 3 or document["node_type"] != node_type:
        return (f"describes a zarr_format {document['zarr_format']!r} {document['node_type']!r}, "
                f"expected a zarr_format 3 {node_type!r}")
    return document


def _read_commits(location: StoreLocation) -> _Commits | Damage:
    """Model labels and commit markers, read through zarr (they are small, unsharded arrays)."""
    try:
        group = zarr.open_group(location.zarr_store(read_only=True), path=STATS_GROUP, mode="r",
                                use_consolidated=False)
        labels = [str(label) for label in group["model"][:]]
        committed = [int(count) for count in group["committed_tokens"][:]]
    except (ValueError, RuntimeError, KeyError, TypeError) as error:  # codecs' decode errors: damage
        return Damage("committed_tokens", f"(the commit marker) cannot be read: {error}",
                      key=f"{STATS_GROUP}/committed_tokens")
    return _Commits(labels, committed)


def _shard_layout(document: dict[str, Any], token_axis: int) -> _ShardLayout | None:
    """Parse the chunk grid, sharding codec and chunk key encoding; None if not sharded."""
    sharding = next((c for c in document["codecs"] if c.get("name") == "sharding_indexed"), None)
    if sharding is None:
        return None  # not sharded at all: the validator's chunking rule names that
    config = sharding.get("configuration", {})
    shard_shape = tuple(int(s) for s in document["chunk_grid"]["configuration"]["chunk_shape"])
    inner = tuple(int(s) for s in config["chunk_shape"])
    if len(inner) != len(shard_shape) or any(s % c for s, c in zip(shard_shape, inner)):
        raise ValueError(f"inner chunks {inner} do not tile shards {shard_shape}")
    dtype, checksummed = _index_codecs(config.get("index_codecs"))
    return _ShardLayout(
        shape=tuple(int(s) for s in document["shape"]), shard_shape=shard_shape,
        chunks_per_shard=tuple(s // c for s, c in zip(shard_shape, inner)), token_axis=token_axis,
        index_at_start=config.get("index_location", "end") == "start", index_dtype=dtype,
        checksummed=checksummed, key_encoding=parse_chunk_key_encoding(document["chunk_key_encoding"]),
    )


def _index_codecs(codecs: list[dict[str, Any]] | None) -> tuple[str, bool]:
    """(numpy dtype of the index, whether a crc32c follows) for the codecs zarr writes."""
    if codecs is None:  # zarr's default index_codecs
        return "<u8", True
    names = [codec.get("name") for codec in codecs]
    if names not in (["bytes"], ["bytes", "crc32c"]):
        raise ValueError(f"shard index codecs {names} are not bytes (+ crc32c)")
    endian = codecs[0].get("configuration", {}).get("endian", "little")
    return ("<u8" if endian == "little" else ">u8"), names[-1] == "crc32c"


# ---- shards --------------------------------------------------------------------------------------


def _array_damage(fs: fsspec.AbstractFileSystem, root: str, name: str, document: dict[str, Any],
                  commits: _Commits, empty_written: bool, model: str | None) -> list[Damage]:
    key = f"{STATS_GROUP}/{name}/zarr.json"
    try:
        layout = _shard_layout(document, DIMS[name].index("token"))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        return [Damage(name, f"has unusable chunk metadata in {key}: {error}", key=key)]
    if layout is None:
        return []
    shards = [shard for shard in _committed_shards(name, layout, commits) if model in (None, shard.model)]
    sizes = _object_sizes(fs, f"{root}/{STATS_GROUP}/{name}")
    found = [_damage(shard, "shard is missing") for shard in shards
             if empty_written and f"{root}/{shard.key}" not in sizes]
    present = [shard for shard in shards if f"{root}/{shard.key}" in sizes]
    for first in range(0, len(present), _BATCH):
        batch = present[first:first + _BATCH]
        indexes = _read_indexes(fs, root, batch, sizes, layout)
        for shard, index in zip(batch, indexes):
            if _shard_damage(shard, sizes[f"{root}/{shard.key}"], index, layout, empty_written):
                found += _confirmed(fs, root, shard, layout, empty_written)
    return found


def _confirmed(fs: fsspec.AbstractFileSystem, root: str, shard: _Shard, layout: _ShardLayout,
               empty_written: bool) -> list[Damage]:
    """The damage seen again on a fresh read whose size did not change around the index read.

    A live build rewrites a partly filled shard whole (atomically) at each commit: read between
    the listing and the index read, the new object's tail looks like a broken index. Not damage.
    """
    path = f"{root}/{shard.key}"
    for _ in range(_RECHECKS):
        fs.invalidate_cache(path)
        size = int(fs.size(path))
        index = _read_indexes(fs, root, [shard], {path: size}, layout)[0]
        fs.invalidate_cache(path)
        if int(fs.size(path)) == size:
            return _shard_damage(shard, size, index, layout, empty_written)
    return []  # still being rewritten: a live build's shard, not a damaged one


def _committed_shards(name: str, layout: _ShardLayout, commits: _Commits) -> Iterator[_Shard]:
    """Every shard of ``name`` that holds a committed token of some model."""
    model_axis, token_axis = DIMS[name].index("model"), layout.token_axis
    tokens, shard_tokens = layout.shape[token_axis], layout.shard_shape[token_axis]
    slots = min(len(commits.labels), len(commits.committed), layout.shape[model_axis])
    for slot in range(slots):
        committed = min(commits.committed[slot], tokens)  # the validator reports a marker past the axis
        ranges = [range(math.ceil(s / c)) for s, c in zip(layout.shape, layout.shard_shape)]
        ranges[model_axis] = range(slot, slot + 1)
        ranges[token_axis] = range(math.ceil(committed / shard_tokens))
        for coords in itertools.product(*ranges):
            start = coords[token_axis] * shard_tokens
            key = f"{STATS_GROUP}/{name}/{layout.key(coords)}"
            label = commits.labels[slot] or f"#{slot}"  # an unlabelled slot: an interrupted extension
            yield _Shard(name, label, key, start, min(start + shard_tokens, tokens), committed)


def _object_sizes(fs: fsspec.AbstractFileSystem, folder: str) -> dict[str, int]:
    """Size of every object below ``folder``: one listing instead of one request per shard."""
    fs.invalidate_cache(folder)
    try:
        listing = fs.find(folder, detail=True)
    except FileNotFoundError:
        return {}
    return {path.rstrip("/"): int(info["size"]) for path, info in listing.items()
            if info.get("type") != "directory"}


def _read_indexes(fs: fsspec.AbstractFileSystem, root: str, shards: list[_Shard], sizes: dict[str, int],
                  layout: _ShardLayout) -> list[bytes | Exception | None]:
    """The index bytes of each shard (None where the object is shorter than its index)."""
    wanted = [(f"{root}/{shard.key}", sizes[f"{root}/{shard.key}"]) for shard in shards]
    readable = [(path, size) for path, size in wanted if size >= layout.index_size]
    starts = [0 if layout.index_at_start else size - layout.index_size for _, size in readable]
    ends = [start + layout.index_size for start in starts]
    data = iter(fs.cat_ranges([path for path, _ in readable], starts, ends) if readable else [])
    return [next(data) if size >= layout.index_size else None for _, size in wanted]


def _shard_damage(shard: _Shard, size: int, index: bytes | Exception | None, layout: _ShardLayout,
                  empty_written: bool) -> list[Damage]:
    if index is None:
        return [_damage(shard, f"shard truncated ({size:,} bytes, shorter than its "
                               f"{layout.index_size:,}-byte index)")]
    if isinstance(index, Exception):
        raise index  # a transport failure (or a deletion during the check) is not damage we can name
    entries = _decode_index(index, layout)
    if entries is None:
        return [_damage(shard, f"shard index unreadable: crc32c mismatch, the object is truncated or "
                               f"overwritten ({size:,} bytes)")]
    return _entry_damage(shard, size, entries, layout, empty_written)


def _decode_index(index: bytes, layout: _ShardLayout) -> np.ndarray | None:
    """(token chunk, other chunks, 2) offsets and nbytes, or None if the checksum fails."""
    body = index[:-4] if layout.checksummed else index
    if layout.checksummed and google_crc32c.value(body).to_bytes(4, "little") != index[-4:]:
        return None
    entries = np.frombuffer(body, dtype=layout.index_dtype).reshape(*layout.chunks_per_shard, 2)
    by_token = np.moveaxis(entries, layout.token_axis, 0)
    return by_token.reshape(by_token.shape[0], -1, 2).astype(np.uint64)


def _entry_damage(shard: _Shard, size: int, entries: np.ndarray, layout: _ShardLayout,
                  empty_written: bool) -> list[Damage]:
    """Missing or out-of-bounds inner chunks among those overlapping committed tokens."""
    low, high = (layout.index_size, size) if layout.index_at_start else (0, size - layout.index_size)
    found: list[Damage] = []
    for position, chunk_entries in enumerate(entries):
        start = shard.start + position * layout.token_chunk
        if start >= shard.committed:
            break  # past the commit marker nothing is promised
        end = min(start + layout.token_chunk, shard.end)
        for offset, nbytes in chunk_entries.tolist():
            if (offset, nbytes) == (EMPTY, EMPTY):
                if empty_written:
                    found.append(_damage(shard, "inner chunk is missing (its index entry is empty)",
                                         start, end))
            elif offset < low or offset + nbytes > high:
                found.append(_damage(shard, f"shard truncated: its index references bytes {offset:,}.."
                                            f"{offset + nbytes:,}, past its {size:,} bytes", start, end))
    return found


def _damage(shard: _Shard, problem: str, start: int | None = None, end: int | None = None) -> Damage:
    return Damage(shard.variable, problem, shard.model, shard.start if start is None else start,
                  shard.end if end is None else end, shard.key)
