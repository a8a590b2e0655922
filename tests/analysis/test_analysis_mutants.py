"""Behaviours of analysis/ (open_store, the fits cache) that surviving mutants showed no test pinned."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
from small_stores import build_valid_store

from analysis import _fits_cache, open_store
from store import CACHE_ENV, InputError, StoreLocation, StoreLocationError


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small valid store (one model, 600 tokens) written through the store API."""
    path = tmp_path_factory.mktemp("mutants") / "s.zarr"
    build_valid_store(path)
    return path


@pytest.fixture
def opened(store_path: Path) -> xr.Dataset:
    return open_store(str(store_path))


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private local cache root for one test."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _key(dataset: xr.Dataset, options: dict[str, Any] | None = None) -> str | None:
    return _fits_cache.fits_key(dataset, {"value": dataset["value"]}, options or {"n_boot": 0})


def _result() -> xr.Dataset:
    return xr.Dataset({"alpha": ("model", np.array([2.5]))})


# ---- analysis._open.open_store ----------------------------------------------------------------------


def test_a_folder_without_a_stats_group_names_the_fix(tmp_path: Path) -> None:
    """Opening a folder that holds no store names the S3 endpoint fix, as written."""
    with pytest.raises(StoreLocationError, match=r"for S3-compatible endpoints pass --storage_options endpoint_url="):
        open_store(str(tmp_path))


def test_an_in_place_edit_of_a_chunk_gives_new_dask_names(tmp_path: Path) -> None:
    """Dask names follow the store's state: rewriting committed values (same shapes) renames every array."""
    from analysis._snapshot import dask_name

    location = build_valid_store(tmp_path / "s.zarr")
    before = dask_name(open_store(str(tmp_path / "s.zarr"))["value"])
    group = zarr.open_group(location.zarr_store(), mode="r+", use_consolidated=False)["stats"]
    group["value"][0, 0, 0, :10] = 7.0
    assert dask_name(open_store(str(tmp_path / "s.zarr"))["value"]) != before


# ---- analysis._snapshot ------------------------------------------------------------------------------------


def test_a_store_whose_path_ends_in_x_is_cacheable(tmp_path: Path) -> None:
    """The listing prefix strips only trailing slashes: a path ending in 'X' still lists its objects."""
    build_valid_store(tmp_path / "STOREX")
    assert _key(open_store(str(tmp_path / "STOREX"))) is not None


# ---- analysis._fits_cache.fits_key ------------------------------------------------------------------


def test_the_key_ignores_the_order_of_the_options(opened: xr.Dataset) -> None:
    """The same options given in another order are the same computation: the same key."""
    assert _key(opened, {"a": 1, "b": 2}) == _key(opened, {"b": 2, "a": 1})


def test_the_key_accepts_options_that_json_cannot_encode(opened: xr.Dataset) -> None:
    """An option of any type (here a Path) is part of the key through its text."""
    assert _key(opened, {"where": Path("a")}) != _key(opened, {"where": Path("b")})


def test_the_key_covers_the_channel_index(opened: xr.Dataset) -> None:
    """Other channels sampled (a changed ``channel_index``) give another key."""
    other = opened.assign(channel_index=opened["channel_index"] + 1)
    assert _key(opened) != _key(other)


def test_a_dataset_without_channel_index_has_a_key(opened: xr.Dataset) -> None:
    """Dropping ``channel_index`` leaves a cacheable Dataset (its key says 'absent')."""
    assert _key(opened.drop_vars("channel_index")) is not None


# ---- analysis._fits_cache.cache_mode / require_store_cache ----------------------------------------


def test_an_unknown_cache_mode_names_the_choices() -> None:
    """An unknown mode is refused with the accepted ones."""
    with pytest.raises(Exception, match=r"unknown cache mode 'disk'; use 'local' \(the default\), 'store' or False"):
        _fits_cache.cache_mode("disk")


def test_store_cache_on_a_read_only_store_object_says_so(opened: xr.Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store object that refuses writes is named as read-only in the refusal."""
    def read_only_store(self: StoreLocation, read_only: bool = False) -> zarr.storage.LocalStore:
        return zarr.storage.LocalStore(self.local_path, read_only=True)

    monkeypatch.setattr(StoreLocation, "zarr_store", read_only_store)
    with pytest.raises(InputError, match=r"which this reader lacks \(the store is read-only\)"):
        _fits_cache.require_store_cache(opened, ["value"], _key(opened))


# ---- analysis._fits_cache.write / _write_local -------------------------------------------------------


def test_writing_the_same_key_twice_keeps_one_entry_quietly(opened: xr.Dataset, cache_dir: Path) -> None:
    """A second writer of the same key (a race lost) neither warns nor replaces the entry."""
    key = _key(opened)
    assert key is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = _fits_cache.write(opened, key, "local", _result())
        second = _fits_cache.write(opened, key, "local", _result())
    assert first.encoding["fits_cache"] == second.encoding["fits_cache"] == str(cache_dir / "fits" / f"{key}.zarr")
    assert [p.name for p in (cache_dir / "fits").iterdir()] == [f"{key}.zarr"]


def test_a_local_entry_has_consolidated_metadata(opened: xr.Dataset, cache_dir: Path) -> None:
    """A local entry is written with consolidated metadata, so reading it costs one metadata request."""
    key = _key(opened)
    assert key is not None
    _fits_cache.write(opened, key, "local", _result())
    entry = zarr.open_group(cache_dir / "fits" / f"{key}.zarr", mode="r")
    assert entry.metadata.consolidated_metadata is not None


def test_a_cache_root_with_missing_parents_is_created(opened: xr.Dataset, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache folder and its missing parents are created on the first write."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "a" / "b"))
    key = _key(opened)
    assert key is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fits_cache.write(opened, key, "local", _result())
    assert (tmp_path / "a" / "b" / "fits" / f"{key}.zarr" / "zarr.json").exists()


def test_a_failed_local_write_warns_with_the_reason_and_the_fix(opened: xr.Dataset, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An unwritable cache root warns with the error's first line and the local fix; results still come."""
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "file"))
    key = _key(opened)
    assert key is not None
    with pytest.warns(RuntimeWarning, match=r"not cached \(\[Errno \d+\] .+\); set ACTIVATION_CACHE to a writable "
                                            r"folder or pass cache=False") as caught:
        result = _fits_cache.write(opened, key, "local", _result())
    assert result["alpha"].values.tolist() == [2.5] and len(caught) == 1


def test_a_failed_store_write_names_the_local_cache_as_the_fix(opened: xr.Dataset,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed write of the store's fits group points to cache='local'."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError("denied")

    monkeypatch.setattr(xr.Dataset, "to_zarr", refuse)
    key = _key(opened)
    assert key is not None
    with pytest.warns(RuntimeWarning, match=r"not cached \(denied\); pass cache='local' or pass cache=False"):
        _fits_cache.write(opened, key, "store", _result())


def test_a_failure_without_a_message_is_named_by_its_type(opened: xr.Dataset,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An error with an empty message is reported by its type name."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError()

    monkeypatch.setattr(xr.Dataset, "to_zarr", refuse)
    key = _key(opened)
    assert key is not None
    with pytest.warns(RuntimeWarning, match=r"not cached \(PermissionError\); set ACTIVATION_CACHE"):
        _fits_cache.write(opened, key, "local", _result())


# ---- analysis._fits_cache.read -----------------------------------------------------------------------


def test_a_local_hit_says_where_it_was_read_from(opened: xr.Dataset, cache_dir: Path) -> None:
    """A cached entry is found again for its key and names its folder in the encoding."""
    key = _key(opened)
    assert key is not None
    _fits_cache.write(opened, key, "local", _result())
    found = _fits_cache.read(opened, ["value"], key, "local")
    assert found is not None and found.encoding["fits_cache"] == str(cache_dir / "fits" / f"{key}.zarr")
    assert found["alpha"].values.tolist() == [2.5]


def test_mode_off_never_reads_an_existing_entry(opened: xr.Dataset, cache_dir: Path) -> None:
    """With the cache off, even an entry that exists for the key is not read."""
    key = _key(opened)
    assert key is not None
    _fits_cache.write(opened, key, "local", _result())
    assert _fits_cache.read(opened, ["value"], key, "off") is None


# ---- analysis._fits_cache: the store's own fits group ------------------------------------------------


def test_store_cache_needs_a_dataset_from_open_store(opened: xr.Dataset) -> None:
    """A Dataset that did not come from open_store is refused for cache='store', with the alternatives."""
    loaded = opened.load()
    loaded.encoding.clear()
    with pytest.raises(InputError, match=r"^cache='store' needs a Dataset straight from open_store \(on a listable "
                                         r"store\); use cache='local' \(the default\) or cache=False$"):
        _fits_cache.require_store_cache(loaded, ["value"], "somekey")


def test_store_cache_refuses_a_selection(opened: xr.Dataset) -> None:
    """A selection of the store is refused for cache='store', pointing to the local cache."""
    selected = opened.isel(token=slice(0, 100))
    with pytest.raises(InputError, match=r"^cache='store' keeps the fits of the whole store as open_store returns "
                                         r"it, not of a selection or derived data; use cache='local' \(the default\) "
                                         r"for this Dataset$"):
        _fits_cache.require_store_cache(selected, ["value"], _key(selected))


def test_the_store_fits_group_round_trips_and_leaves_a_valid_store(tmp_path: Path) -> None:
    """The store's fits group (written twice: a refresh) keeps the stats valid; it is read unless the cache is off."""
    from store import validate_store

    location = build_valid_store(tmp_path / "s.zarr")
    dataset = open_store(str(tmp_path / "s.zarr"))
    key = _key(dataset)
    assert key is not None
    _fits_cache.require_store_cache(dataset, ["value"], key)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fits_cache.write(dataset, key, "store", _result())
        _fits_cache.write(dataset, key, "store", _result())
    found = _fits_cache.read(dataset, ["value"], key, "store")
    assert found is not None and found.encoding["fits_cache"] == f"the 'fits' group of {tmp_path / 's.zarr'}"
    assert _fits_cache.read(dataset, ["value"], key, "off") is None
    validate_store(location)


def test_the_store_fits_group_is_zarr_v3_whatever_zarr_defaults_to(tmp_path: Path) -> None:
    """The fits group is written as Zarr v3 even where zarr's configured default format is 2."""
    build_valid_store(tmp_path / "s.zarr")
    dataset = open_store(str(tmp_path / "s.zarr"))
    key = _key(dataset)
    assert key is not None
    with zarr.config.set({"default_zarr_format": 2}):
        _fits_cache.write(dataset, key, "store", _result())
    assert (tmp_path / "s.zarr" / "fits" / "zarr.json").exists()


# ---- analysis._powerlaw / analysis._xmin_scan (fit core) -------------------------------------------------


def test_the_discrete_tail_mean_is_zero_not_nan_for_a_vast_alpha() -> None:
    """Where alpha is vast the Euler-Maclaurin rest overflows but its weight is 0: E[log(x/xmin)] is 0."""
    from analysis._powerlaw import _mean_log_ratio

    with np.errstate(all="ignore"):
        assert _mean_log_ratio(np.array([1e60, 1e200]), np.array([1.0, 5.0])).tolist() == [0.0, 0.0]


def test_the_smallest_of_exactly_count_values_are_all_of_them() -> None:
    """Asking for as many smallest values as there are returns every position."""
    from analysis._xmin_scan import _smallest

    assert sorted(_smallest(np.array([3.0, 1.0, 2.0]), 3).tolist()) == [0, 1, 2]


def test_a_fit_as_a_dict_holds_every_field() -> None:
    """``PowerLawFit.as_dict`` gives every field by name (a constant series: a failed fit, NaN numbers)."""
    from analysis._powerlaw import clauset_fit

    fitted = clauset_fit(np.ones(10)).as_dict()
    assert fitted["n"] == 10 and fitted["status"] == "constant series" and np.isnan(fitted["alpha"])
