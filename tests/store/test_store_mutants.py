"""Behaviours of store/ that surviving mutants showed no test pinned; one test per behaviour."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from small_stores import ATTRS, LAYOUT, build_valid_store, model_slot

from store import (
    UNIT_COMMITTED,
    UnitWriter,
    plan_units,
    CACHE_ENV,
    CatalogError,
    ContractError,
    StatsBlock,
    StoreLocation,
    StoreLocationError,
    StoreMismatchError,
    cache_root,
    check_compatible,
    load_catalog,
    open_session,
    resolve_location,
    validate_stats,
    validate_store,
)
from store._catalog import CATALOG_ENV, default_catalog_path


@pytest.fixture(scope="module")
def valid_location(tmp_path_factory: pytest.TempPathFactory) -> StoreLocation:
    """One valid single-model store, every token committed (not to be modified)."""
    return build_valid_store(tmp_path_factory.mktemp("valid") / "s.zarr")


@pytest.fixture
def valid_dataset(valid_location: StoreLocation) -> xr.Dataset:
    """The valid store's stats group, loaded: a fresh copy for each test to break."""
    return xr.open_zarr(valid_location.zarr_store(read_only=True), group="stats").load()

# ---- store._cache.cache_root ---------------------------------------------------------------------


def test_cache_root_is_the_environment_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``$ACTIVATION_CACHE`` wins over ``$XDG_CACHE_HOME``."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "mine"


def test_cache_root_defaults_under_the_home_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With neither variable set the root is ``~/.cache/activation-datasets``."""
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == tmp_path / ".cache" / "activation-datasets"


# ---- store._catalog ------------------------------------------------------------------------------


def test_catalog_path_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``$ACTIVATION_CATALOG`` names the catalog even when ./catalog.yaml exists."""
    (tmp_path / "catalog.yaml").write_text("stores: {}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(CATALOG_ENV, str(tmp_path / "elsewhere.yaml"))
    assert default_catalog_path() == tmp_path / "elsewhere.yaml"


def test_catalog_entries_keep_their_description(tmp_path: Path) -> None:
    """An entry's ``description`` is returned as written; a missing one is the empty string."""
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("stores:\n  a: {url: a.zarr, description: the a store}\n  b: {url: b.zarr}\n")
    entries = load_catalog(catalog)
    assert entries["a"]["description"] == "the a store" and entries["b"]["description"] == ""


def test_unknown_name_with_an_empty_catalog_says_none_are_known(tmp_path: Path) -> None:
    """With no catalog entries the message lists the known names as ``none``."""
    with pytest.raises(CatalogError, match=r"\(known: none\)"):
        resolve_location("nope", catalog=tmp_path / "absent.yaml")


# ---- store._location ------------------------------------------------------------------------------------


def test_a_file_url_on_localhost_is_a_local_path(tmp_path: Path) -> None:
    """``file://localhost/...`` names this machine, like ``file:///...``."""
    from store._location import local_path_of

    assert local_path_of(f"file://localhost{tmp_path}/s.zarr") == tmp_path / "s.zarr"


# ---- store._location.StoreLocation ----------------------------------------------------------------


class _UnreachableFs:
    """A filesystem whose every call fails like a dead endpoint."""

    def exists(self, path: str) -> bool:
        raise ConnectionError("connection refused\nsecond line")


def _unreachable(location: StoreLocation, monkeypatch: pytest.MonkeyPatch) -> StoreLocation:
    monkeypatch.setattr(StoreLocation, "filesystem", lambda self: (_UnreachableFs(), "bucket/s.zarr"))
    return location


def test_unreachable_message_names_the_endpoint_and_first_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A transport failure names the URL, the endpoint option and the error's first line only."""
    location = _unreachable(StoreLocation("s3://bucket/s.zarr", {"endpoint_url": "http://10.0.0.1:9"}),
                            monkeypatch)
    with pytest.raises(StoreLocationError) as raised:
        location.exists()
    message = str(raised.value)
    assert "cannot reach store 's3://bucket/s.zarr' (endpoint 'http://10.0.0.1:9'): connection refused;" in message
    assert "second line" not in message


def test_unreachable_message_uses_the_environment_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an endpoint option the message names ``$AWS_ENDPOINT_URL``."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.0.0.2:9")
    location = _unreachable(StoreLocation("s3://bucket/s.zarr"), monkeypatch)
    with pytest.raises(StoreLocationError, match=r"\(endpoint 'http://10.0.0.2:9'\)"):
        location.exists()


def test_unreachable_message_without_an_endpoint_has_no_endpoint_part(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without any endpoint the message goes straight from the URL to the reason."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    location = _unreachable(StoreLocation("s3://bucket/s.zarr"), monkeypatch)
    with pytest.raises(StoreLocationError, match=r"cannot reach store 's3://bucket/s.zarr': connection refused"):
        location.exists()


def test_unwritable_local_folder_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local store under a folder this user cannot write is refused with the fix."""
    monkeypatch.setattr("store._location.os.access", lambda path, mode, **options: False)
    with pytest.raises(StoreLocationError, match="is not writable; choose a writable --store path"):
        StoreLocation(str(tmp_path / "s.zarr")).check_writable()


def test_a_read_only_remote_store_refuses_writes() -> None:
    """``zarr_store(read_only=True)`` on a URL gives a store object that says it is read-only."""
    location = StoreLocation("s3://bucket/s.zarr", {"anon": True, "endpoint_url": "http://127.0.0.1:9"})
    assert location.zarr_store(read_only=True).read_only is True
    assert location.zarr_store().read_only is False


def _options_of(location: StoreLocation) -> dict[str, Any]:
    return location.fsspec_options()


def test_s3_client_defaults_fill_only_what_is_unset() -> None:
    """S3 gets the fail-fast client settings, except those the user set."""
    options = _options_of(StoreLocation("s3://b/s.zarr", {"config_kwargs": {"connect_timeout": 1}}))
    assert options["config_kwargs"] == {"connect_timeout": 1, "read_timeout": 10, "retries": {"max_attempts": 3, "mode": "standard"}}


# ---- store._stats_store: refusing a build with other settings ---------------------------------------


def test_a_different_build_config_is_named_key_by_key(tmp_path: Path) -> None:
    """The refusal names the store and each differing key without any prefix."""
    location = build_valid_store(tmp_path / "s.zarr")
    other = {**ATTRS, "build_config": {"max_tokens": 5}}
    with pytest.raises(StoreMismatchError, match=r"^store '.+' was built with a different configuration "
                                                 r"\(max_tokens: 600 -> 5\);"):
        open_session(location, LAYOUT, model_slot("m"), other)


def test_a_model_with_other_model_settings_is_refused(tmp_path: Path) -> None:
    """A model already in the store must come back with the same model settings."""
    location = build_valid_store(tmp_path / "s.zarr")
    slot = model_slot("m")
    changed = type(slot)(slot.label, slot.layer_index, slot.channel_index,
                         {**slot.provenance, "config": {"name": "m", "dtype": "float16"}})
    with pytest.raises(StoreMismatchError, match=r"^model 'm' in store '.+s\.zarr' .*\(dtype: None -> 'float16'\)"):
        open_session(location, LAYOUT, changed, ATTRS)


def test_a_new_store_is_zarr_v3_whatever_zarr_defaults_to(tmp_path: Path) -> None:
    """The stats group is written as Zarr v3 even where zarr's configured default format is 2."""
    import zarr

    with zarr.config.set({"default_zarr_format": 2}):
        open_session(StoreLocation(str(tmp_path / "s.zarr")), LAYOUT, model_slot("m"), ATTRS)
    assert (tmp_path / "s.zarr" / "stats" / "zarr.json").exists()


# ---- store._validate -----------------------------------------------------------------------------------


def _problems(dataset: xr.Dataset) -> str:
    """The validator's message for ``dataset``, or '' if it passes."""
    try:
        validate_stats(dataset)
    except ContractError as error:
        return str(error)
    return ""


def test_the_valid_dataset_passes(valid_dataset: xr.Dataset) -> None:
    """The base of the tests below is valid, so each failure is the change's own."""
    assert _problems(valid_dataset) == ""


def test_a_store_given_as_a_path_string_is_validated(valid_location: StoreLocation) -> None:
    """``validate_store`` takes a plain path as well as a StoreLocation."""
    assert list(validate_store(valid_location.url).model.values) == ["m"]


def test_leaked_secrets_are_named_by_their_full_path(valid_dataset: xr.Dataset) -> None:
    """Secret-looking keys are named by their dotted path, nested and inside JSON strings."""
    valid_dataset.attrs["dataset"] = {"auth": {"password": "x"}, "extra": '{"session_token": "y"}'}
    message = _problems(valid_dataset)
    assert "secret-looking keys ['dataset.auth.password', 'dataset.extra.session_token']" in message


def test_a_token_chunk_of_one_is_valid(valid_dataset: xr.Dataset) -> None:
    """``token_chunk`` 1 is a positive integer: the attribute rule accepts it."""
    one_token = valid_dataset.isel(token=slice(0, 1)).assign(committed_tokens=valid_dataset.committed_tokens * 0 + 1)
    one_token.attrs["token_chunk"] = 1
    one_token.attrs["unit_tokens"] = 1
    for name in ("value", "argmax_channel", "channel_value", "token_id", "doc_index"):
        shape = [1] * one_token[name].ndim
        one_token[name].encoding.update(chunks=tuple(shape), shards=tuple(shape))
    assert _problems(one_token) == ""


def test_every_streamed_variable_is_checked_after_one_without_encoding(valid_dataset: xr.Dataset) -> None:
    """A variable without chunk encoding does not stop the checks of the variables after it."""
    valid_dataset["value"].encoding.clear()
    valid_dataset["doc_index"].encoding.update(chunks=(1, 100), shards=(1, 600))
    message = _problems(valid_dataset)
    assert "'value' has no chunk encoding" in message and "'doc_index' inner chunks" in message


def test_a_store_with_nothing_committed_is_valid(valid_dataset: xr.Dataset) -> None:
    """Zero committed tokens (a build that has not written yet) is within 0..n_tokens."""
    assert _problems(valid_dataset.assign(committed_tokens=valid_dataset.committed_tokens * 0)) == ""


def test_a_store_without_token_chunk_attr_takes_the_requested_one(tmp_path: Path) -> None:
    """Resuming a store that lacks the ``token_chunk`` attribute uses the requested token chunk."""
    import zarr

    location = build_valid_store(tmp_path / "s.zarr")
    group = zarr.open_group(location.zarr_store(), mode="r+", use_consolidated=False)["stats"]
    del group.attrs["token_chunk"]
    session = open_session(location, LAYOUT, model_slot("n"), ATTRS)
    assert session.layout.token_chunk == LAYOUT.token_chunk


def test_a_store_without_models_attr_is_checked_by_build_config_only(tmp_path: Path) -> None:
    """A store lacking the ``models`` attribute is still compatible; only the build settings are compared."""
    import zarr

    location = build_valid_store(tmp_path / "s.zarr")
    group = zarr.open_group(location.zarr_store(), mode="r+", use_consolidated=False)["stats"]
    del group.attrs["models"]
    stored = check_compatible(location, ATTRS["build_config"], "m", {"name": "other"})
    assert stored is not None and stored.committed == {"m": 600}


# ---- store._writer.UnitWriter ------------------------------------------------------------------------


def test_a_unit_is_written_only_when_committed(tmp_path: Path) -> None:
    """Blocks are held until commit: the shard is written once, then the unit's marker."""
    session = open_session(StoreLocation(str(tmp_path / "s.zarr")), LAYOUT, model_slot("m"), ATTRS)
    unit = plan_units(LAYOUT.n_tokens, LAYOUT.shard_tokens)[0]
    writer = UnitWriter(session.group, session.slot, unit, None, None, commit_seconds=0.0)
    writer.append(StatsBlock(0, np.ones((2, 2, 100), np.float32), np.ones((2, 100, 2), np.float32),
                             np.ones((2, 100), np.int32)))
    assert np.isnan(session.group["value"][0, 0, 0, :100]).all()
    with pytest.raises(RuntimeError, match="holds tokens 0..100"):
        writer.commit()  # an incomplete unit is never committed
    rest = unit.n_tokens - 100
    writer.append(StatsBlock(100, np.ones((2, 2, rest), np.float32), np.ones((2, rest, 2), np.float32),
                             np.ones((2, rest), np.int32)))
    writer.commit()
    assert int(session.group["unit_state"][0, 0]) == UNIT_COMMITTED
    assert (session.group["value"][0, 0, 0, :unit.end] == 1).all()