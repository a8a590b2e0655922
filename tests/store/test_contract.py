"""One contract suite, run against every backend: a local folder and S3 (moto on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from store import (
    UNIT_COMMITTED,
    UNIT_TOKENIZED,
    ContractError,
    ModelSlot,
    Staging,
    StatsBlock,
    StatsLayout,
    StoreLocation,
    StoreMismatchError,
    Unit,
    UnitWriter,
    WriteSession,
    check_compatible,
    finish,
    open_session,
    plan_units,
    publish_prefix,
    unit_states,
    validate_store,
    write_unit_tokens,
)

# four work units of one shard each: 256, 256, 256 and 232 tokens
LAYOUT = StatsLayout(layers=("embed", "layer_1"), metrics=("rms", "kurtosis"), n_tokens=1000, n_channels=3,
                     token_chunk=128, requested_shard_tokens=256)
UNITS = plan_units(1000, 256)


def _slot(label: str = "m") -> ModelSlot:
    provenance = {"model_id": label, "revision": "", "config": {"name": label}, "created": "now",
                  "versions": {"numpy": np.__version__}}
    return ModelSlot(label, np.array([-1, 1]), np.array([[0, 2, 4], [0, 2, 4]]), provenance)


def _attrs(**build: Any) -> dict[str, Any]:
    return {"format": "activation-stats", "format_version": 2, "metric_definitions": {"rms": "", "kurtosis": ""},
            "dataset": {"name": "test"}, "build_config": {"max_tokens": 1000, "stats": {"shard_tokens": 256}, **build},
            "token_chunk": 128, "created": "now", "versions": {}}


_RNG = np.random.default_rng(0)
FULL_VALUES = _RNG.normal(size=(2, 2, 1000)).astype(np.float32)
FULL_CHANNELS = _RNG.normal(size=(2, 1000, 3)).astype(np.float32)
FULL_PEAKS = _RNG.integers(0, 64, size=(2, 1000), dtype=np.int32)


def _block(start: int, n: int) -> StatsBlock:
    """Tokens start..start+n of one fixed data set, however the stream is cut."""
    return StatsBlock(start, FULL_VALUES[:, :, start:start + n], FULL_CHANNELS[:, start:start + n],
                      FULL_PEAKS[:, start:start + n])


def _session(location: StoreLocation, label: str = "m") -> WriteSession:
    return open_session(location, LAYOUT, _slot(label), _attrs())


def _commit(session: WriteSession, unit: Unit, step: int = 100, staging: Staging | None = None) -> None:
    """Tokenise and commit one unit, its statistics handed over in blocks of ``step`` tokens."""
    tokens = slice(unit.start, unit.end)
    write_unit_tokens(session.group, session.slot, unit, np.arange(1000, dtype=np.int32)[tokens],
                      np.arange(1000)[tokens] // 100, None)
    writer = UnitWriter(session.group, session.slot, unit, None, staging, commit_seconds=60.0)
    for start in range(unit.start, unit.end, step):
        writer.append(_block(start, min(step, unit.end - start)))
    writer.commit()


def _write(location: StoreLocation, order: list[int], label: str = "m") -> WriteSession:
    session = _session(location, label)
    for index in order:
        _commit(session, UNITS[index])
    publish_prefix(session.group, session.slot, UNITS, None)
    return session


def _stored(location: StoreLocation) -> xr.Dataset:
    return xr.open_zarr(location.zarr_store(read_only=True), group="stats", consolidated=False)


def test_full_build_follows_the_contract(location: StoreLocation) -> None:
    session = _write(location, [3, 1, 0, 2])  # units finish in any order
    finish(location, session, 1000)
    dataset = validate_store(location)
    assert dataset.committed_tokens.values.tolist() == [1000]
    assert dataset.unit_state.values.tolist() == [[UNIT_COMMITTED] * 4]
    np.testing.assert_array_equal(dataset.value.values[0], FULL_VALUES)
    np.testing.assert_array_equal(dataset.channel_value.values[0], FULL_CHANNELS)
    np.testing.assert_array_equal(dataset.argmax_channel.values[0], FULL_PEAKS)
    assert dataset.argmax_channel.dtype == np.int32
    assert dataset.value.encoding["chunks"] == (1, 1, 1, 128)
    assert dataset.value.encoding["shards"] == (1, 1, 1, 256)


def test_committed_tokens_is_the_prefix_of_committed_units(location: StoreLocation) -> None:
    _write(location, [1, 3])  # unit 0 missing: nothing from token 0 on is a whole prefix
    stored = _stored(location)
    assert int(stored.committed_tokens.values[0]) == 0
    assert stored.unit_state.values.tolist() == [[0, UNIT_COMMITTED, 0, UNIT_COMMITTED]]
    assert np.isnan(stored.value.values[0, :, :, :256]).all()
    session = _session(location)
    _commit(session, UNITS[0])
    assert publish_prefix(session.group, session.slot, UNITS, None) == 512


def test_tokenised_unit_is_not_committed(location: StoreLocation) -> None:
    session = _session(location)
    write_unit_tokens(session.group, session.slot, UNITS[0], np.zeros(256, np.int32), np.zeros(256), None)
    assert unit_states(session.group, session.slot).tolist() == [UNIT_TOKENIZED, 0, 0, 0]
    assert publish_prefix(session.group, session.slot, UNITS, None) == 0
    validate_store(location)  # a tokenised unit is a valid state of a store being built


def test_checkpoints_resume_bitwise_and_vanish_on_commit(location: StoreLocation, tmp_path: Path) -> None:
    session = _session(location)
    unit = UNITS[1]
    staging = Staging(location, "stats", "m", unit.index)
    writer = UnitWriter(session.group, session.slot, unit, None, staging, commit_seconds=0.0)
    for start in (256, 320):  # two blocks, a checkpoint after each: then "killed"
        writer.append(_block(start, 64))
    assert staging.checkpoints() == [(256, 320), (320, 384)]
    assert np.isnan(_stored(location).value.values[0, :, :, 256:512]).all()  # nothing in the shard yet
    resumed = UnitWriter(session.group, session.slot, unit, None, staging, commit_seconds=60.0)
    assert resumed.resume_at == 384
    for start in range(256, 512, 100):  # the rerun replays from the unit's start; held tokens are dropped
        resumed.append(_block(start, min(100, 512 - start)))
    resumed.commit()
    assert staging.checkpoints() == []
    np.testing.assert_array_equal(_stored(location).value.values[0, :, :, 256:512], FULL_VALUES[:, :, 256:512])
    np.testing.assert_array_equal(_stored(location).argmax_channel.values[0, :, 256:512], FULL_PEAKS[:, 256:512])


def test_second_model_gets_its_own_slot(location: StoreLocation) -> None:
    _write(location, [0, 1, 2, 3])
    session = _write(location, [2, 0, 3, 1], label="other")
    finish(location, session, 1000)
    dataset = validate_store(location)
    assert list(dataset.model.values) == ["m", "other"]
    assert dataset.committed_tokens.values.tolist() == [1000, 1000]


def test_different_build_config_is_refused(location: StoreLocation) -> None:
    _write(location, [0])
    with pytest.raises(StoreMismatchError, match=r"max_tokens: 1000 -> 5"):
        open_session(location, LAYOUT, _slot(), _attrs(max_tokens=5))


def test_location_probe_and_remove(location: StoreLocation) -> None:
    location.check_writable()
    assert not location.exists()
    _write(location, [0])
    assert location.exists()
    location.remove()
    assert not location.exists()


def test_validator_rejects_leaked_secret(location: StoreLocation) -> None:
    session = open_session(location, LAYOUT, _slot(), {**_attrs(), "storage_options": {"secret": "hunter2"}})
    finish(location, session, 1000)
    with pytest.raises(ContractError, match="secret-looking"):
        validate_store(location)


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3]], ids=["prefix", "last-unit-only"])
def test_finish_never_cuts_another_models_commits(location: StoreLocation, order: list[int]) -> None:
    _write(location, order)
    session = _session(location, "short")
    with pytest.raises(StoreMismatchError, match="another model committed"):
        finish(location, session, 600)
    dataset = xr.open_zarr(location.zarr_store(read_only=True), group="stats", consolidated=False)
    assert dataset.sizes["token"] == 1000
    np.testing.assert_array_equal(dataset.value.values[0, :, :, 768:], FULL_VALUES[:, :, 768:])


def test_finish_repairs_a_half_finished_shrink(location: StoreLocation) -> None:
    session = _session(location)
    short = plan_units(600, 256)  # the text ran out in unit 2
    for unit in short:
        _commit(session, unit)
    publish_prefix(session.group, session.slot, short, None)
    session.group["value"].resize((1, 2, 2, 600))  # killed after the first resize of finish
    finish(location, session, 600)
    dataset = validate_store(location)
    assert dataset.sizes["token"] == 600 and dataset.committed_tokens.values.tolist() == [600]
    assert dataset.sizes["unit"] == 3
    np.testing.assert_array_equal(dataset.channel_value.values[0], FULL_CHANNELS[:, :600])


def test_check_compatible_reports_what_is_committed(location: StoreLocation) -> None:
    assert check_compatible(location, _attrs()["build_config"], "m", {"name": "m"}) is None  # nothing yet
    _write(location, [0, 1, 3])
    stored = check_compatible(location, _attrs()["build_config"], "new", {"name": "new"})
    assert stored is not None and stored.n_tokens == 1000 and stored.committed == {"m": 512}
    assert stored.committed_by_others("m") == {} and stored.committed_by_others("new") == {"m": 512}
