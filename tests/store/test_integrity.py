"""Damaged bytes are named (store._integrity): shards, inner chunks and metadata, local and on S3.

Every store here has three shards per series: tokens 0..262144, 262144..524288 and 524288..600000,
two inner chunks of 131072 tokens each. Model 'tiny-llama' committed every token, model 'half'
the first three inner chunks (0..393216). The damage is done with fsspec, byte for byte, as a
disk or a careless copy would do it; keys and index bytes are spelled out here, independently of
the module under test.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import fsspec
import google_crc32c
import numpy as np
import pytest
import zarr
from conftest import BUCKET

from store import (
    ContractError,
    ModelSlot,
    StatsLayout,
    StoreLocation,
    StoreMismatchError,
    consolidate,
    finish,
    open_session,
    validate_store,
)
from small_stores import downgrade_to_format_1, write_slot
from store._integrity import check_intact, damage

N_TOKENS, CHUNK, SHARD = 600_000, 131_072, 262_144
LAYOUT = StatsLayout(layers=("embed",), metrics=("rms",), n_tokens=N_TOKENS, n_channels=1, token_chunk=CHUNK)
ATTRS = {"format": "activation-stats", "format_version": 2, "metric_definitions": {"rms": ""},
         "dataset": {"name": "test"}, "build_config": {"max_tokens": N_TOKENS}, "token_chunk": CHUNK,
         "created": "now", "versions": {}}
HALF = 3 * CHUNK  # what model 'half' committed
INDEX_BYTES = 2 * 16 + 4  # two inner chunks per shard: (offset, nbytes) uint64 each, then a crc32c
EMPTY = 2**64 - 1


def _slot(label: str) -> ModelSlot:
    provenance = {"model_id": label, "revision": "", "config": {"name": label}, "created": "now",
                  "versions": {}}
    return ModelSlot(label, np.array([-1]), np.array([[0]]), provenance)


def _block(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tokens 0..n. value is NaN (its fill) over the second inner chunk, doc_index 0 (its fill)
    over the whole first shard: chunks the old writer left out, the new one stores."""
    values = (np.arange(n, dtype=np.float32) / 7)[None, None]
    values[..., CHUNK:2 * CHUNK] = np.nan
    channels = np.arange(n, dtype=np.float32)[None, :, None] + 0.5
    return values, channels, np.arange(n, dtype=np.int32) % 1000 + 1, np.arange(n) // 300_000


def _write_like_the_old_writer(group: zarr.Group, slot: int, n: int) -> None:
    """The writer before empty_chunks_written: region writes that drop all-fill chunks and shards."""
    values, channels, token_ids, doc_index = _block(n)
    for start in range(0, n, CHUNK):
        end = min(start + CHUNK, n)
        group["value"][slot, :, :, start:end] = values[:, :, start:end]
        group["channel_value"][slot, :, start:end] = channels[:, start:end]
        group["token_id"][slot, start:end] = token_ids[start:end]
        group["doc_index"][slot, start:end] = doc_index[start:end]
        group["committed_tokens"][slot] = end


def _build(location: StoreLocation, new: bool) -> None:
    for label, n in (("tiny-llama", N_TOKENS), ("half", HALF)):
        session = open_session(location, LAYOUT, _slot(label), ATTRS)
        if new:  # the new writer's mark and setting, whether or not open_session already set them
            session.group.attrs["empty_chunks_written"] = True
            with zarr.config.set({"array.write_empty_chunks": True}):
                write_slot(session, *_block(n))
        else:
            session.group.attrs.pop("empty_chunks_written", None)
            with zarr.config.set({"array.write_empty_chunks": False}):
                _write_like_the_old_writer(session.group, session.slot, n)
        consolidate(location)
        finish(location, session, N_TOKENS)
    if not new:
        downgrade_to_format_1(location)


@dataclass(frozen=True)
class Stores:
    """Fresh copies of a built store on one backend: ``fresh(new=...)``."""

    make_location: Callable[[], StoreLocation]
    templates: dict[bool, StoreLocation]

    def fresh(self, new: bool = True) -> StoreLocation:
        if new not in self.templates:
            self.templates[new] = self.make_location()
            _build(self.templates[new], new)
        copy = self.make_location()
        _copy_tree(self.templates[new], copy)
        return copy


def _copy_tree(source: StoreLocation, target: StoreLocation) -> None:
    if not source.is_remote:
        shutil.copytree(source.local_path, target.local_path)
        return
    fs, source_root = source.filesystem()
    _, target_root = target.filesystem()
    for path in fs.find(source_root):
        fs.copy(path, target_root + path[len(source_root):])


@pytest.fixture(scope="module")
def local_templates() -> dict[bool, StoreLocation]:
    return {}


@pytest.fixture(scope="module")
def s3_templates() -> dict[bool, StoreLocation]:
    return {}


@pytest.fixture(params=["local", "s3"])
def stores(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stores:
    """Templates are built once per backend and module, each test damages its own copy."""
    if request.param == "local":
        def local() -> StoreLocation:
            return StoreLocation(str(tmp_path_factory.mktemp("integrity") / "store.zarr"))

        return Stores(local, request.getfixturevalue("local_templates"))
    options = request.getfixturevalue("s3_options")

    def remote() -> StoreLocation:
        return StoreLocation(f"s3://{BUCKET}/integrity-{uuid.uuid4().hex}.zarr", options)

    return Stores(remote, request.getfixturevalue("s3_templates"))


# ---- byte-level damage ---------------------------------------------------------------------------


def _path(location: StoreLocation, key: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = location.filesystem()
    return fs, f"{root.rstrip('/')}/{key}"


def _read(location: StoreLocation, key: str) -> bytes:
    fs, path = _path(location, key)
    return bytes(fs.cat_file(path))


def _put(location: StoreLocation, key: str, data: bytes) -> None:
    fs, path = _path(location, key)
    fs.pipe_file(path, data)


def _exists(location: StoreLocation, key: str) -> bool:
    fs, path = _path(location, key)
    fs.invalidate_cache()
    return bool(fs.exists(path))


def _delete(location: StoreLocation, key: str) -> None:
    fs, path = _path(location, key)
    fs.rm_file(path)


def _index(location: StoreLocation, key: str) -> np.ndarray:
    """The (offset, nbytes) of both inner chunks of a shard, its crc32c checked."""
    tail = _read(location, key)[-INDEX_BYTES:]
    assert google_crc32c.value(tail[:-4]).to_bytes(4, "little") == tail[-4:]
    return np.frombuffer(tail[:-4], "<u8").reshape(2, 2).copy()


def _set_index_entry(location: StoreLocation, key: str, chunk: int, entry: tuple[int, int]) -> None:
    """Rewrite one index entry with a valid checksum: only the entry itself is wrong."""
    entries = _index(location, key)
    entries[chunk] = entry
    body = entries.astype("<u8").tobytes()
    data = _read(location, key)[:-INDEX_BYTES] + body + google_crc32c.value(body).to_bytes(4, "little")
    _put(location, key, data)


def _named(location: StoreLocation, line: str) -> None:
    """validate_store raises a ContractError with ``line`` among its problems."""
    with pytest.raises(ContractError, match=re.escape(line)):
        validate_store(location)


# ---- healthy stores ------------------------------------------------------------------------------


def test_a_healthy_new_store_reports_nothing(stores: Stores) -> None:
    location = stores.fresh(new=True)
    # the all-fill committed chunks the old writer dropped are stored: nothing may be taken for a hole
    assert (_index(location, "stats/value/c/0/0/0/0")[1] != EMPTY).all()
    assert _exists(location, "stats/doc_index/c/0/0")
    assert damage(location) == []
    validate_store(location)
    check_intact(location, "tiny-llama")


def test_a_healthy_old_store_with_absent_all_fill_chunks_reports_nothing(stores: Stores) -> None:
    location = stores.fresh(new=False)
    assert (_index(location, "stats/value/c/0/0/0/0")[1] == EMPTY).all()  # an absent all-NaN inner chunk
    assert not _exists(location, "stats/doc_index/c/0/0")  # an absent all-zero shard, tokens committed
    assert damage(location) == []
    validate_store(location)
    check_intact(location, "tiny-llama")


# ---- damaged shards ------------------------------------------------------------------------------


@pytest.mark.parametrize("new", [True, False], ids=["new", "old"])
def test_a_truncated_shard_is_named(stores: Stores, new: bool) -> None:
    location = stores.fresh(new=new)
    key = "stats/value/c/0/0/0/1"
    data = _read(location, key)
    _put(location, key, data[: len(data) // 2])
    _named(location, "'value' of model 'tiny-llama' tokens 262144..524288: shard index unreadable: crc32c "
                     f"mismatch, the object is truncated or overwritten ({len(data) // 2:,} bytes) ({key})")


def test_a_shard_shorter_than_its_index_is_named(stores: Stores) -> None:
    location = stores.fresh(new=False)
    _put(location, "stats/token_id/c/0/2", b"0123456789")
    _named(location, "'token_id' of model 'tiny-llama' tokens 524288..600000: shard truncated (10 bytes, "
                     "shorter than its 36-byte index)")


def test_a_deleted_shard_is_named(stores: Stores) -> None:
    location = stores.fresh(new=True)
    _delete(location, "stats/channel_value/c/1/0/1/0")
    _named(location, "'channel_value' of model 'half' tokens 262144..524288: shard is missing "
                     "(stats/channel_value/c/1/0/1/0)")


@pytest.mark.parametrize("new", [True, False], ids=["new", "old"])
def test_a_flipped_byte_in_a_shard_index_is_named(stores: Stores, new: bool) -> None:
    location = stores.fresh(new=new)
    key = "stats/doc_index/c/0/2"
    data = bytearray(_read(location, key))
    data[-INDEX_BYTES + 3] ^= 0x01  # one bit of the first inner chunk's offset
    _put(location, key, bytes(data))
    _named(location, "'doc_index' of model 'tiny-llama' tokens 524288..600000: shard index unreadable")


def test_a_deleted_inner_chunk_is_named(stores: Stores) -> None:
    location = stores.fresh(new=True)
    _set_index_entry(location, "stats/token_id/c/0/0", 1, (EMPTY, EMPTY))
    _named(location, "'token_id' of model 'tiny-llama' tokens 131072..262144: inner chunk is missing")


def test_an_inner_chunk_past_the_end_of_its_shard_is_named(stores: Stores) -> None:
    location = stores.fresh(new=False)
    key = "stats/value/c/1/0/0/1"
    offset, nbytes = _index(location, key)[0]
    _set_index_entry(location, key, 0, (int(offset), int(nbytes) + 10_000))
    _named(location, "'value' of model 'half' tokens 262144..393216: shard truncated: its index "
                     "references bytes")


def test_every_damaged_object_is_listed(stores: Stores) -> None:
    location = stores.fresh(new=True)
    _delete(location, "stats/value/c/0/0/0/0")
    _put(location, "stats/doc_index/c/1/1", b"")
    found = {(d.variable, d.model, d.start, d.end) for d in damage(location)}
    assert found == {("value", "tiny-llama", 0, SHARD), ("doc_index", "half", SHARD, 2 * SHARD)}


# ---- uncommitted regions -------------------------------------------------------------------------


def test_uncommitted_regions_are_never_reported(stores: Stores) -> None:
    location = stores.fresh(new=True)
    # 'half' committed 0..393216: its third shard was never written, the second holds one chunk
    assert not _exists(location, "stats/value/c/1/0/0/2")
    assert tuple(_index(location, "stats/value/c/1/0/0/1")[1]) == (EMPTY, EMPTY)
    _put(location, "stats/token_id/c/1/2", b"garbage past the commit marker")
    assert damage(location) == []
    validate_store(location)


def test_the_committed_part_of_a_partly_committed_shard_is_checked(stores: Stores) -> None:
    location = stores.fresh(new=True)
    _set_index_entry(location, "stats/value/c/1/0/0/1", 0, (EMPTY, EMPTY))
    _named(location, "'value' of model 'half' tokens 262144..393216: inner chunk is missing")


# ---- metadata ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "data", "line"), [
    ("stats/channel_value/zarr.json", b"\x00\xff garbage",
     "'channel_value' has a damaged stats/channel_value/zarr.json: not valid JSON"),
    ("stats/channel_value/zarr.json", None, "'channel_value' is missing (no stats/channel_value/zarr.json)"),
    # optional in stores from before it, but this one's consolidated metadata lists it: lost, not absent
    ("stats/argmax_channel/zarr.json", None, "'argmax_channel' is missing (no stats/argmax_channel/zarr.json)"),
    ("stats/committed_tokens/zarr.json", b'{"zarr_format": 3, "node_type": "array"}',
     "'committed_tokens' has a damaged stats/committed_tokens/zarr.json: lacks shape"),
    ("stats/zarr.json", b"{not json", "the 'stats' group has a damaged stats/zarr.json: not valid JSON"),
    ("stats/zarr.json", None, "the 'stats' group is missing (no stats/zarr.json)"),
    ("zarr.json", b'{"zarr_format": 3, "node_type": "array"}',
     "the root group has a damaged zarr.json: describes a zarr_format 3 'array'"),
], ids=["array-garbage", "array-deleted", "optional-array-deleted", "array-lacks-fields", "group-garbage", "group-deleted", "root"])
def test_damaged_metadata_is_a_contract_error_naming_the_node(stores: Stores, key: str, data: bytes | None,
                                                              line: str) -> None:
    location = stores.fresh(new=True)
    if data is None:
        _delete(location, key)
    else:
        _put(location, key, data)
    _named(location, line)
    with pytest.raises(StoreMismatchError, match=re.escape(line)):
        check_intact(location, "tiny-llama")


def test_an_unreadable_commit_marker_is_named(stores: Stores) -> None:
    location = stores.fresh(new=True)
    _put(location, "stats/committed_tokens/c/0", b"not zstd")
    _named(location, "'committed_tokens' (the commit marker) cannot be read")


# ---- check_intact --------------------------------------------------------------------------------


def test_check_intact_names_the_damage_and_the_fix_for_the_damaged_model_only(stores: Stores) -> None:
    location = stores.fresh(new=True)
    _delete(location, "stats/doc_index/c/0/1")
    with pytest.raises(StoreMismatchError) as raised:
        check_intact(location, "tiny-llama")
    message = str(raised.value)
    assert "'doc_index' of model 'tiny-llama' tokens 262144..524288: shard is missing" in message
    fix = "restore the store from a copy, collect the model into a new --store, or rebuild this one with --overwrite"
    assert fix in message
    assert location.display() in message
    check_intact(location, "half")  # its own committed tokens are intact

