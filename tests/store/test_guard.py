"""The deletion guard, on a local folder and on S3 (moto): only our stores or nothing are replaced."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pytest
from conftest import BUCKET
from small_stores import build_valid_store

from store import StoreLocation, StoreLocationError, check_ours_or_empty, is_our_store


@pytest.fixture(params=["local", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    if request.param == "local":
        return StoreLocation(str(tmp_path / "target"))
    return StoreLocation(f"s3://{BUCKET}/{uuid.uuid4().hex}", request.getfixturevalue("s3_options"))


def _put(location: StoreLocation, name: str, data: bytes = b"precious") -> None:
    fs, path = location.filesystem()
    target = f"{path}/{name}"
    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(target, data)
    fs.invalidate_cache()


def _listing(location: StoreLocation) -> dict[str, bytes]:
    fs, path = location.filesystem()
    fs.invalidate_cache()
    return {name: fs.cat_file(name) for name in fs.find(path)}


def test_foreign_files_survive_remove(location: StoreLocation) -> None:
    _put(location, "thesis.tex")
    _put(location, "data.csv", b"1,2,3")
    before = _listing(location)
    with pytest.raises(StoreLocationError, match=r"refusing to remove .*2 entries: 'data.csv', 'thesis.tex'"):
        location.remove()
    assert _listing(location) == before


def test_someone_elses_zarr_is_not_ours(location: StoreLocation) -> None:
    _put(location, "zarr.json", b'{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    _put(location, "images/zarr.json", b'{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    assert not is_our_store(location)
    with pytest.raises(StoreLocationError, match="not a store of this project"):
        check_ours_or_empty(location)


def test_our_store_and_empty_or_missing_places_are_accepted(location: StoreLocation, tmp_path: Path) -> None:
    check_ours_or_empty(location)  # missing
    if not location.is_remote:
        Path(location.url).mkdir()
        check_ours_or_empty(location)  # an empty folder
        build_valid_store(Path(location.url))
        _put(location, f"zarr.{uuid.uuid4().hex}.partial")  # a kill's leftover does not make it foreign
        assert is_our_store(location)
        location.remove()
        assert not Path(location.url).exists()


def test_a_file_where_the_store_should_be_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    with pytest.raises(StoreLocationError, match="not a store of this project"):
        check_ours_or_empty(StoreLocation(str(blocker)))
    assert blocker.read_text() == "keep me"


def test_an_s3_store_of_ours_is_replaced(s3_options: dict[str, object], tmp_path: Path) -> None:
    local = build_valid_store(tmp_path / "s.zarr")
    remote = StoreLocation(f"s3://{BUCKET}/{uuid.uuid4().hex}.zarr", s3_options)
    fs, path = remote.filesystem()
    fs.put(str(local.local_path), path, recursive=True)
    fs.invalidate_cache()
    assert is_our_store(remote)
    remote.remove()
    assert not fsspec.filesystem("s3", **remote.fsspec_options()).exists(path)
