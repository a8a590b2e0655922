"""The ``vectors`` group's write/resume/validate cycle, on every backend: a local folder and S3 (moto).

The same commit protocol as ``stats`` (tests/store/test_contract.py), with a unit of documents.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr

from store import (
    ConfigError,
    ContractError,
    StoreLocation,
    StoreMismatchError,
    VectorSession,
    VectorsLayout,
    VectorSlot,
    check_vectors_documents,
    check_vectors_settings,
    committed_units,
    finish_vectors,
    open_vectors_session,
    validate_store,
    write_vector_unit,
)

# 50 documents in units of 16: 16, 16, 16 and 2 documents
LAYOUT = VectorsLayout(doc_ids=tuple(f"d{i}" for i in range(50)), hidden_size=4, poolings=("short", "long"),
                       unit_docs=16, dtype="float16")
_RNG = np.random.default_rng(0)
SHORT = _RNG.normal(size=(50, 4)).astype(np.float32)
LONG = _RNG.normal(size=(50, 16)).astype(np.float32)
N_TOKENS = _RNG.integers(1, 300, size=50)


def _attrs(**build: Any) -> dict[str, Any]:
    return {"format": "activation-vectors", "format_version": 1, "hidden_size": 4, "unit_docs": 16,
            "build_config": {"vectors": {"long_depths": [0.023, 0.067, 0.159]}, **build}}


def _session(location: StoreLocation, label: str = "m", **build: Any) -> VectorSession:
    return open_vectors_session(location, LAYOUT, VectorSlot(label, {"config": {"name": label}}), _attrs(**build))


def _commit(session: VectorSession, index: int) -> None:
    unit = LAYOUT.units()[index]
    docs = slice(unit.start, unit.end)
    write_vector_unit(session.group, session.slot, unit, {"short": SHORT[docs], "long": LONG[docs]},
                      N_TOKENS[docs], None)


def _stored(location: StoreLocation) -> xr.Dataset:
    return xr.open_zarr(location.zarr_store(read_only=True), group="vectors", consolidated=False).load()


def test_units_commit_in_any_order_and_a_resume_skips_them(location: StoreLocation) -> None:
    session = _session(location)
    for index in (3, 1):
        _commit(session, index)
    resumed = _session(location)  # a new session: what is committed is read from the markers
    assert committed_units(resumed.group, resumed.slot).tolist() == [False, True, False, True]
    for index in (0, 2):
        _commit(resumed, index)
    finish_vectors(resumed, None)
    validate_store(location)
    stored = _stored(location)
    np.testing.assert_array_equal(stored["short"].values[0], SHORT.astype(np.float16))
    np.testing.assert_array_equal(stored["n_tokens"].values[0], N_TOKENS)
    # the mean is float64 of the float32 vectors handed over, whatever the stored dtype
    np.testing.assert_allclose(stored["long_mean"].values[0], LONG.astype(np.float64).mean(axis=0), rtol=1e-12)
    assert stored["short"].encoding["chunks"] == (1, 16, 4)


def test_an_uncommitted_unit_reads_as_nan_and_finish_refuses(location: StoreLocation) -> None:
    session = _session(location)
    _commit(session, 0)
    stored = _stored(location)
    assert np.isnan(stored["short"].values[0, 16:]).all() and np.isnan(stored["short_mean"].values).all()
    with pytest.raises(RuntimeError, match="uncommitted units"):
        finish_vectors(session, None)
    validate_store(location)  # a build in progress is a valid store


def test_a_second_model_gets_its_own_slot_and_settings_must_match(location: StoreLocation) -> None:
    first = _session(location, "a")
    for index in range(4):
        _commit(first, index)
    finish_vectors(first, None)
    second = _session(location, "b")
    assert second.slot == 1 and not committed_units(second.group, 1).any()
    assert committed_units(second.group, 0).all()  # the first model's commits stay
    with pytest.raises(StoreMismatchError, match="different configuration"):
        check_vectors_settings(location, _attrs(other=1)["build_config"], "a", {"name": "a"})
    wider = VectorsLayout(LAYOUT.doc_ids, 8, LAYOUT.poolings, 16)
    with pytest.raises(StoreMismatchError, match="hidden size 4"):
        check_vectors_documents(location, wider)
    # a build whose checks ran before the first commit is refused again under the lease, not added
    with pytest.raises(StoreMismatchError, match="different configuration"):
        _session(location, "late", other=1)
    assert [str(label) for label in _stored(location)["model"].values] == ["a", "b"]


def test_overwrite_resumes_when_settings_match_and_replaces_when_they_differ(location: StoreLocation) -> None:
    session = _session(location)
    _commit(session, 0)
    resumed = open_vectors_session(location, LAYOUT, VectorSlot("m", {"config": {"name": "m"}}), _attrs(),
                                   replace=True)
    assert committed_units(resumed.group, resumed.slot).tolist() == [True, False, False, False]
    replaced = open_vectors_session(location, LAYOUT, VectorSlot("m", {"config": {"name": "m"}}),
                                    _attrs(other=1), replace=True)
    assert not committed_units(replaced.group, replaced.slot).any()


def test_a_value_beyond_float16_is_refused_before_the_unit_is_written(location: StoreLocation) -> None:
    session = _session(location)
    unit = LAYOUT.units()[0]
    huge = SHORT[:16].copy()
    huge[3, 1] = 70000.0
    with pytest.raises(ConfigError, match="vectors.dtype float32"), warnings.catch_warnings():
        warnings.simplefilter("error")  # the refusal is the only message: no NumPy overflow warning first
        write_vector_unit(session.group, session.slot, unit, {"short": huge, "long": LONG[:16]}, N_TOKENS[:16], None)
    assert not committed_units(session.group, session.slot).any()
    assert np.isnan(_stored(location)["short"].values).all()


def test_the_validator_names_a_committed_unit_with_a_lost_chunk(location: StoreLocation) -> None:
    session = _session(location)
    for index in range(4):
        _commit(session, index)
    finish_vectors(session, None)
    fs, root = location.filesystem()
    chunk = next(path for path in fs.find(f"{root.rstrip('/')}/vectors/short") if "/c/" in path)
    fs.rm(chunk)
    with pytest.raises(ContractError, match="committed but its chunk is missing"):
        validate_store(location)


def test_a_wrong_mean_or_marker_is_named(location: StoreLocation) -> None:
    session = _session(location)
    for index in range(4):
        _commit(session, index)
    finish_vectors(session, None)
    group = zarr.open_group(location.zarr_store(), path="vectors", mode="r+", use_consolidated=False)
    group["short_mean"][0, 0] = 9.0
    with pytest.raises(ContractError, match="short_mean: model 'm'"):
        validate_store(location)
    group["short_mean"][0] = SHORT.astype(np.float64).mean(axis=0)
    group["unit_state"][0, 2] = 1
    with pytest.raises(ContractError, match="unit states"):
        validate_store(location)
