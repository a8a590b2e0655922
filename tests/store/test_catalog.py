"""The catalog: names to locations; relative URLs resolve against the catalog file."""

from __future__ import annotations

from pathlib import Path

import pytest

from store import CatalogError, load_catalog, resolve_location


def test_repository_catalog_parses() -> None:
    entries = load_catalog(Path(__file__).resolve().parents[2] / "catalog.yaml")
    assert "smollm2-pydoc" in entries and entries["smollm2-pydoc"]["url"].endswith("stores/activations.zarr")


def test_names_resolve_with_options(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("stores:\n  local: {url: data/a.zarr}\n"
                       "  remote: {url: 's3://b/a.zarr', storage_options: {endpoint_url: 'http://127.0.0.1:1'}}\n")
    local = resolve_location("local", catalog=catalog)
    assert local.url == str(tmp_path / "data" / "a.zarr")
    remote = resolve_location("remote", {"anon": True}, catalog=catalog)
    assert remote.storage_options == {"endpoint_url": "http://127.0.0.1:1", "anon": True}


def test_unknown_name_lists_known_ones(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("stores:\n  known: {url: x.zarr}\n")
    with pytest.raises(CatalogError, match=r"'nope' is neither a catalog name \(known: known\)"):
        resolve_location("nope", catalog=catalog)


def test_entry_without_url_is_an_error(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("stores:\n  broken: {description: no url}\n")
    with pytest.raises(CatalogError, match="'broken' needs a 'url:'"):
        load_catalog(catalog)


def test_file_urls_resolve_like_paths(tmp_path: Path) -> None:
    from small_stores import build_valid_store

    from store import validate_store

    store = tmp_path / "my stores" / "a.zarr"
    build_valid_store(store)
    url = store.as_uri()  # file:///…/my%20stores/a.zarr
    assert url.startswith("file:///") and "%20" in url
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(f"stores:\n  by-url: {{url: '{url}'}}\n")
    for location in (resolve_location("by-url", catalog=catalog), resolve_location(url, catalog=catalog)):
        assert location.local_path == store and not location.is_remote
        assert validate_store(location).sizes["token"] == 600
    with pytest.raises(CatalogError, match="neither a catalog name"):
        resolve_location((tmp_path / "missing.zarr").as_uri(), catalog=catalog)


def test_file_url_with_a_host_is_refused() -> None:
    from store import StoreLocation, StoreLocationError

    with pytest.raises(StoreLocationError, match="names the host 'server'"):
        _ = StoreLocation("file://server/share/a.zarr").local_path
