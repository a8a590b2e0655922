"""One contract suite, run against every backend: a local folder and S3 (moto on 127.0.0.1)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from conftest import BUCKET
from store import (
    ContractError,
    ModelSlot,
    StatsBlock,
    StatsLayout,
    StatsWriter,
    StoreLocation,
    StoreMismatchError,
    check_compatible,
    finish,
    open_session,
    validate_store,
)

LAYOUT = StatsLayout(layers=("embed", "layer_1"), metrics=("rms", "kurtosis"), n_tokens=1000, n_channels=3,
                     token_chunk=256)


@pytest.fixture(params=["local", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    if request.param == "local":
        return StoreLocation(str(tmp_path / "store.zarr"))
    options = request.getfixturevalue("s3_options")
    return StoreLocation(f"s3://{BUCKET}/{uuid.uuid4().hex}.zarr", options)


def _slot(label: str = "m") -> ModelSlot:
    provenance = {"model_id": label, "revision": "", "config": {"name": label}, "created": "now",
                  "versions": {"numpy": np.__version__}}
    return ModelSlot(label, np.array([-1, 1]), np.array([[0, 2, 4], [0, 2, 4]]), provenance)


def _attrs(**build: Any) -> dict[str, Any]:
    return {"format": "activation-stats", "format_version": 1, "metric_definitions": {"rms": "", "kurtosis": ""},
            "dataset": {"name": "test"}, "build_config": {"max_tokens": 1000, **build}, "token_chunk": 256,
            "created": "now", "versions": {}}


_RNG = np.random.default_rng(0)
FULL_VALUES = _RNG.normal(size=(2, 2, 1000)).astype(np.float32)
FULL_CHANNELS = _RNG.normal(size=(2, 1000, 3)).astype(np.float32)


def _block(start: int, n: int) -> StatsBlock:
    """Tokens start..start+n of one fixed data set, however the stream is cut."""
    end = start + n
    return StatsBlock(start, FULL_VALUES[:, :, start:end], FULL_CHANNELS[:, start:end],
                      np.arange(start, end, dtype=np.int32), np.arange(start, end) // 100)


def _write(location: StoreLocation, starts: range, step: int, slot: ModelSlot | None = None) -> StatsWriter:
    session = open_session(location, LAYOUT, slot or _slot(), _attrs())
    writer = StatsWriter(session.group, session.slot, LAYOUT.token_chunk, session.committed)
    for start in starts:
        writer.append(_block(start, min(step, 1000 - start)))
    return writer


def test_full_build_follows_the_contract(location: StoreLocation) -> None:
    writer = _write(location, range(0, 1000, 300), 300)
    writer.flush()
    finish(location, open_session(location, LAYOUT, _slot(), _attrs()), 1000)
    dataset = validate_store(location)
    assert dataset.committed_tokens.values.tolist() == [1000]
    np.testing.assert_array_equal(dataset.value.values[0], FULL_VALUES)
    np.testing.assert_array_equal(dataset.channel_value.values[0], FULL_CHANNELS)
    assert dataset.value.encoding["chunks"] == (1, 1, 1, 256)


def test_only_whole_chunks_are_committed(location: StoreLocation) -> None:
    writer = _write(location, range(0, 600, 300), 300)  # 600 tokens in, 512 committed
    assert writer.committed == 512
    stored = xr.open_zarr(location.zarr_store(read_only=True), group="stats", consolidated=False)
    assert int(stored.committed_tokens.values[0]) == 512
    assert np.isnan(stored.value.values[0, :, :, 512:]).all()


def test_resume_equals_uninterrupted(location: StoreLocation, tmp_path: Path) -> None:
    _write(location, range(0, 600, 300), 300)  # "killed" with 88 tokens buffered
    writer = _write(location, range(0, 1000, 100), 100)  # rerun from scratch; committed part skipped
    writer.flush()
    reference = StoreLocation(str(tmp_path / "reference.zarr"))
    _write(reference, range(0, 1000, 1000), 1000).flush()
    for name in ("value", "channel_value", "token_id", "doc_index"):
        ours = xr.open_zarr(location.zarr_store(), group="stats", consolidated=False)[name].values
        theirs = xr.open_zarr(reference.zarr_store(), group="stats", consolidated=False)[name].values
        assert ours.tobytes() == theirs.tobytes(), name


def test_second_model_gets_its_own_slot(location: StoreLocation) -> None:
    _write(location, range(0, 1000, 500), 500).flush()
    writer = _write(location, range(0, 1000, 500), 500, slot=_slot("other"))
    writer.flush()
    finish(location, open_session(location, LAYOUT, _slot("other"), _attrs()), 1000)
    dataset = validate_store(location)
    assert list(dataset.model.values) == ["m", "other"]
    assert dataset.committed_tokens.values.tolist() == [1000, 1000]


def test_different_build_config_is_refused(location: StoreLocation) -> None:
    _write(location, range(0, 300, 300), 300)
    with pytest.raises(StoreMismatchError, match=r"max_tokens: 1000 -> 5"):
        open_session(location, LAYOUT, _slot(), _attrs(max_tokens=5))


def test_location_probe_and_remove(location: StoreLocation) -> None:
    location.check_writable()
    assert not location.exists()
    _write(location, range(0, 300, 300), 300)
    assert location.exists()
    location.remove()
    assert not location.exists()


def test_validator_rejects_leaked_secret(location: StoreLocation) -> None:
    session = open_session(location, LAYOUT, _slot(), {**_attrs(), "storage_options": {"secret": "hunter2"}})
    finish(location, session, 1000)
    with pytest.raises(ContractError, match="secret-looking"):
        validate_store(location)


def test_finish_never_cuts_another_models_commits(location: StoreLocation) -> None:
    _write(location, range(0, 1000, 500), 500).flush()
    session = open_session(location, LAYOUT, _slot("short"), _attrs())
    with pytest.raises(StoreMismatchError, match="another model committed"):
        finish(location, session, 600)
    dataset = xr.open_zarr(location.zarr_store(read_only=True), group="stats", consolidated=False)
    assert dataset.sizes["token"] == 1000
    np.testing.assert_array_equal(dataset.value.values[0], FULL_VALUES)


def test_finish_repairs_a_half_finished_shrink(location: StoreLocation) -> None:
    writer = _write(location, range(0, 600, 300), 300)
    writer.flush()
    session = open_session(location, LAYOUT, _slot(), _attrs())
    session.group["value"].resize((1, 2, 2, 600))  # killed after the first resize of finish
    finish(location, session, 600)
    dataset = validate_store(location)
    assert dataset.sizes["token"] == 600 and dataset.committed_tokens.values.tolist() == [600]
    np.testing.assert_array_equal(dataset.channel_value.values[0], FULL_CHANNELS[:, :600])


def test_check_compatible_reports_what_is_committed(location: StoreLocation) -> None:
    assert check_compatible(location, _attrs()["build_config"], "m", {"name": "m"}) is None  # nothing yet
    _write(location, range(0, 600, 300), 300)
    stored = check_compatible(location, _attrs()["build_config"], "new", {"name": "new"})
    assert stored is not None and stored.n_tokens == 1000 and stored.committed == {"m": 512}
    assert stored.committed_by_others("m") == {} and stored.committed_by_others("new") == {"m": 512}
