"""analysis.vectors and friends: corpus means, lazy centring, nearest neighbours chunk by chunk, diagnostics.

Every store here is written through the store API (no model), from known float32 vectors, so each
answer is checked against a brute-force NumPy computation in float64 over those same vectors.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from conftest import BUCKET
from numpy.testing import assert_allclose, assert_array_equal

import analysis
import analysis._vectors as vectors_module
from store import (
    StoreLocation,
    VectorsLayout,
    VectorSlot,
    finish_vectors,
    open_vectors_session,
    write_vector_unit,
)
from store.errors import InputError

HIDDEN = 8
UNIT_DOCS = 8
N_CORPUS = 50  # 7 units, the last one short (2 documents)
N_PROBE = 6
N_PARTIAL = 32  # 4 units; unit 1 (documents 8..15) is never written
SKIPPED_UNIT = 1
LONG_DEPTHS = [0.023, 0.067, 0.159]
PARTS = ["last_token", "depth_0.023", "depth_0.067", "depth_0.159"]
LABEL = "m"


@dataclass(frozen=True)
class WrittenStore:
    """A store's URL and the float32 vectors written into it (NaN rows for documents never written)."""

    url: str
    doc_ids: tuple[str, ...]
    pooled: dict[str, np.ndarray]

    @property
    def path(self) -> Path:
        return Path(self.url)


def random_vectors(n_docs: int, seed: int) -> dict[str, np.ndarray]:
    """Vectors around a shared non-zero offset, so that centring changes which documents are nearest."""
    rng = np.random.default_rng(seed)
    offset = rng.normal(scale=2.0, size=4 * HIDDEN)
    long = (offset + rng.normal(size=(n_docs, 4 * HIDDEN))).astype(np.float32)
    short = (offset[:HIDDEN] + rng.normal(size=(n_docs, HIDDEN))).astype(np.float32)
    return {"short": short, "long": long}


def write_store(location: StoreLocation, pooled: dict[str, np.ndarray], prefix: str = "d", label: str = LABEL,
                dtype: str = "float32", skip_units: tuple[int, ...] = ()) -> WrittenStore:
    """Write ``pooled`` unit by unit as a build does; the mean is set only when every unit is written."""
    n_docs = pooled["short"].shape[0]
    doc_ids = tuple(f"{prefix}{i}" for i in range(n_docs))
    layout = VectorsLayout(doc_ids=doc_ids, hidden_size=HIDDEN, poolings=("short", "long"), unit_docs=UNIT_DOCS,
                           dtype=dtype)
    attrs = {"format": "activation-vectors", "format_version": 1, "hidden_size": HIDDEN, "unit_docs": UNIT_DOCS,
             "build_config": {"vectors": {"long_depths": LONG_DEPTHS}}}
    session = open_vectors_session(location, layout, VectorSlot(label, {"config": {}}), attrs)
    written = {name: values.copy() for name, values in pooled.items()}
    for unit in layout.units():
        docs = slice(unit.start, unit.end)
        if unit.index in skip_units:
            for values in written.values():
                values[docs] = np.nan  # what the store reads back for a unit never committed
            continue
        write_vector_unit(session.group, session.slot, unit, {name: values[docs] for name, values in pooled.items()},
                          np.full(unit.size, 10), None)
    if not skip_units:
        finish_vectors(session, None)
    return WrittenStore(location.url, doc_ids, written)


def open_in_small_chunks(url: str, **kwargs: Any) -> xr.Dataset:
    """Open with one dask chunk per unit, so every query runs the chunk-by-chunk path over several tasks."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vectors_module, "DASK_CHUNK_BYTES", 1)
        return analysis.vectors(url, **kwargs)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> WrittenStore:
    location = StoreLocation(str(tmp_path_factory.mktemp("vectors") / "corpus.zarr"))
    return write_store(location, random_vectors(N_CORPUS, seed=1))


@pytest.fixture(scope="module")
def corpus_ds(corpus: WrittenStore) -> xr.Dataset:
    return open_in_small_chunks(corpus.url)


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> WrittenStore:
    location = StoreLocation(str(tmp_path_factory.mktemp("vectors") / "probe.zarr"))
    return write_store(location, random_vectors(N_PROBE, seed=2), prefix="p")


@pytest.fixture(scope="module")
def probe_ds(probe: WrittenStore) -> xr.Dataset:
    return open_in_small_chunks(probe.url)


@pytest.fixture(scope="module")
def other_model_ds(tmp_path_factory: pytest.TempPathFactory) -> tuple[WrittenStore, xr.Dataset]:
    """A probe store of a model labelled differently from the corpus' model."""
    location = StoreLocation(str(tmp_path_factory.mktemp("vectors") / "other.zarr"))
    written = write_store(location, random_vectors(N_PROBE, seed=3), prefix="o", label="other")
    return written, open_in_small_chunks(written.url)


@pytest.fixture(scope="module")
def partial(tmp_path_factory: pytest.TempPathFactory) -> WrittenStore:
    location = StoreLocation(str(tmp_path_factory.mktemp("vectors") / "partial.zarr"))
    return write_store(location, random_vectors(N_PARTIAL, seed=4), skip_units=(SKIPPED_UNIT,))


# ---------------------------------------------------------------- brute force


def brute_scores(rows: np.ndarray, query: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """Cosine of every row with the query, in float64 (NaN for NaN rows)."""
    rows, query = rows.astype(np.float64), query.astype(np.float64)
    if mean is not None:
        rows, query = rows - mean, query - mean
    return rows @ query / (np.linalg.norm(rows, axis=1) * np.linalg.norm(query))


def brute_nearest(rows: np.ndarray, query: np.ndarray, mean: np.ndarray | None, k: int,
                  exclude: int | None = None) -> tuple[list[int], np.ndarray]:
    """The k best positions (NaN skipped, ``exclude`` left out) and their similarities."""
    scores = brute_scores(rows, query, mean)
    if exclude is not None:
        scores[exclude] = np.nan
    valid = np.flatnonzero(np.isfinite(scores))
    best = valid[np.argsort(-scores[valid], kind="stable")][:k]
    return best.tolist(), scores[best]


def assert_same_neighbours(found: pd.DataFrame, positions: list[int], similarities: np.ndarray,
                           doc_ids: tuple[str, ...]) -> None:
    assert found["doc"].tolist() == positions
    assert found["doc_id"].tolist() == [doc_ids[p] for p in positions]
    assert found["rank"].tolist() == list(range(1, len(positions) + 1))
    assert_allclose(found["similarity"].to_numpy(np.float64), similarities, atol=1e-5)


def float64_mean(written: WrittenStore, pooling: str) -> np.ndarray:
    return written.pooled[pooling].astype(np.float64).mean(axis=0)


# ---------------------------------------------------------------- corpus_mean


@pytest.mark.parametrize("pooling", ["short", "long"])
def test_corpus_mean_is_the_float64_mean_of_the_written_vectors(corpus: WrittenStore, corpus_ds: xr.Dataset,
                                                                pooling: str) -> None:
    stored = analysis.corpus_mean(corpus_ds, pooling)
    assert stored.dtype == np.float64
    assert stored.dims == ("model", "feature" if pooling == "short" else "long_feature")
    assert_allclose(stored.sel(model=LABEL).values, float64_mean(corpus, pooling), rtol=1e-12)


def test_float16_store_mean_comes_from_the_float32_inputs(tmp_path: Path) -> None:
    pooled = random_vectors(N_CORPUS, seed=5)
    written = write_store(StoreLocation(str(tmp_path / "half.zarr")), pooled, dtype="float16")
    ds = analysis.vectors(written.url)
    assert ds["short"].dtype == np.float16
    stored = analysis.corpus_mean(ds, "short").sel(model=LABEL).values
    of_inputs = pooled["short"].astype(np.float64).mean(axis=0)
    of_stored_values = ds["short"].sel(model=LABEL).values.astype(np.float64).mean(axis=0)
    # the float16 rounding moves the mean by ~1e-4; a mean taken from the stored values would show it
    assert np.abs(of_stored_values - of_inputs).max() > 1e-6
    assert_allclose(stored, of_inputs, rtol=1e-12)


# ---------------------------------------------------------------- centre


def test_centre_is_a_lazy_view_equal_to_stored_minus_mean(corpus: WrittenStore, corpus_ds: xr.Dataset) -> None:
    centred = analysis.centre(corpus_ds, "long")
    assert isinstance(centred.data, da.Array)
    assert centred.dtype == np.float32
    expected = corpus.pooled["long"].astype(np.float64) - float64_mean(corpus, "long")
    assert_allclose(centred.sel(model=LABEL).values, expected, atol=1e-5)


def test_centre_writes_nothing_to_the_store(corpus: WrittenStore, corpus_ds: xr.Dataset) -> None:
    def arrays() -> set[str]:
        return set(zarr.open_group(corpus.url, mode="r")["vectors"].array_keys())

    def files() -> set[str]:
        return {os.path.join(folder, name) for folder, _, names in os.walk(corpus.path) for name in names}

    arrays_before, files_before = arrays(), files()
    analysis.centre(corpus_ds, "short").compute()
    analysis.centre(corpus_ds, "long").compute()
    assert arrays() == arrays_before
    assert files() == files_before


def test_centre_by_another_stores_mean(corpus: WrittenStore, corpus_ds: xr.Dataset, probe: WrittenStore,
                                       probe_ds: xr.Dataset) -> None:
    centred = analysis.centre(probe_ds, "short", mean=analysis.corpus_mean(corpus_ds, "short"))
    expected = probe.pooled["short"].astype(np.float64) - float64_mean(corpus, "short")
    assert_allclose(centred.sel(model=LABEL).values, expected, atol=1e-5)
    # not the probe's own mean: the two differ by far more than the tolerance
    assert np.abs(float64_mean(corpus, "short") - float64_mean(probe, "short")).max() > 1e-2


def test_centre_refuses_a_mean_of_another_width(corpus_ds: xr.Dataset, probe_ds: xr.Dataset) -> None:
    long_mean = analysis.corpus_mean(corpus_ds, "long")
    with pytest.raises(InputError, match=rf"{4 * HIDDEN} features, the vectors {HIDDEN}"):
        analysis.centre(probe_ds, "short", mean=long_mean)


def test_centre_refuses_a_mean_of_another_model_unless_selected(
        corpus: WrittenStore, corpus_ds: xr.Dataset, other_model_ds: tuple[WrittenStore, xr.Dataset]) -> None:
    other, other_ds = other_model_ds
    mean = analysis.corpus_mean(corpus_ds, "short")
    with pytest.raises(InputError, match="no model 'other'"):
        analysis.centre(other_ds, "short", mean=mean)
    # a mean without a model dimension applies to every model
    centred = analysis.centre(other_ds, "short", mean=mean.sel(model=LABEL))
    expected = other.pooled["short"].astype(np.float64) - float64_mean(corpus, "short")
    assert_allclose(centred.sel(model="other").values, expected, atol=1e-5)


# ---------------------------------------------------------------- nearest


def test_opened_store_has_several_doc_chunks(corpus_ds: xr.Dataset) -> None:
    assert len(corpus_ds["short"].chunksizes["doc"]) > 1
    assert len(corpus_ds["long"].chunksizes["doc"]) > 1


@pytest.mark.parametrize("pooling", ["short", "long"])
@pytest.mark.parametrize("centred", [True, False])
@pytest.mark.parametrize("by", ["id", "position"])
def test_nearest_to_a_stored_doc_matches_brute_force(corpus: WrittenStore, corpus_ds: xr.Dataset, pooling: str,
                                                     centred: bool, by: str) -> None:
    position = 17
    query = corpus.doc_ids[position] if by == "id" else position
    found = analysis.nearest(corpus_ds, query, k=10, pooling=pooling, centre=centred)
    rows = corpus.pooled[pooling]
    expected = brute_nearest(rows, rows[position], float64_mean(corpus, pooling) if centred else None, 10,
                             exclude=position)
    assert position not in found["doc"].tolist()
    assert_same_neighbours(found, *expected, corpus.doc_ids)


@pytest.mark.parametrize("pooling", ["short", "long"])
def test_nearest_includes_self_when_asked(corpus: WrittenStore, corpus_ds: xr.Dataset, pooling: str) -> None:
    found = analysis.nearest(corpus_ds, 4, k=6, pooling=pooling, exclude_self=False)
    rows = corpus.pooled[pooling]
    expected = brute_nearest(rows, rows[4], float64_mean(corpus, pooling), 6)
    assert found["doc"].iloc[0] == 4
    assert_same_neighbours(found, *expected, corpus.doc_ids)


@pytest.mark.parametrize("pooling", ["short", "long"])
@pytest.mark.parametrize("centred", [True, False])
def test_nearest_to_a_raw_vector_matches_brute_force(corpus: WrittenStore, corpus_ds: xr.Dataset, pooling: str,
                                                     centred: bool) -> None:
    query = random_vectors(1, seed=6)[pooling][0]
    found = analysis.nearest(corpus_ds, query, k=10, pooling=pooling, centre=centred)
    expected = brute_nearest(corpus.pooled[pooling], query, float64_mean(corpus, pooling) if centred else None, 10)
    assert_same_neighbours(found, *expected, corpus.doc_ids)


def test_nearest_to_a_stored_docs_vector_keeps_that_doc(corpus: WrittenStore, corpus_ds: xr.Dataset) -> None:
    # a vector is not a stored document: nothing is excluded, and its twin comes first
    found = analysis.nearest(corpus_ds, corpus.pooled["short"][9].copy(), k=3)
    assert found["doc_id"].iloc[0] == "d9"
    assert_allclose(found["similarity"].iloc[0], 1.0, atol=1e-5)


def test_nearest_centred_by_another_stores_mean(corpus: WrittenStore, corpus_ds: xr.Dataset, probe: WrittenStore,
                                                probe_ds: xr.Dataset) -> None:
    found = analysis.nearest(probe_ds, "p2", k=N_PROBE, mean=analysis.corpus_mean(corpus_ds, "short"))
    rows = probe.pooled["short"]
    expected = brute_nearest(rows, rows[2], float64_mean(corpus, "short"), N_PROBE, exclude=2)
    assert_same_neighbours(found, *expected, probe.doc_ids)


def test_similarity_scores_match_brute_force(corpus: WrittenStore, corpus_ds: xr.Dataset) -> None:
    mean = float64_mean(corpus, "long")
    query = corpus.pooled["long"][3]
    scores = analysis.similarity_scores(corpus_ds["long"].sel(model=LABEL), query, mean.astype(np.float32))
    assert isinstance(scores, da.Array)
    assert scores.numblocks[0] > 1
    assert_allclose(scores.compute(), brute_scores(corpus.pooled["long"], query, mean), atol=1e-5)


def test_nearest_with_k_beyond_the_store_returns_every_doc(corpus: WrittenStore, corpus_ds: xr.Dataset) -> None:
    others = analysis.nearest(corpus_ds, "d0", k=10 * N_CORPUS)
    assert sorted(others["doc"]) == list(range(1, N_CORPUS))
    everyone = analysis.nearest(corpus_ds, "d0", k=10 * N_CORPUS, exclude_self=False)
    assert sorted(everyone["doc"]) == list(range(N_CORPUS))
    assert everyone["similarity"].is_monotonic_decreasing


BAD_CALLS: dict[str, tuple[Callable[[xr.Dataset], object], str]] = {
    "k zero": (lambda ds: analysis.nearest(ds, "d0", k=0), "got 0"),
    "k negative": (lambda ds: analysis.nearest(ds, "d0", k=-3), "got -3"),
    "nearest pooling": (lambda ds: analysis.nearest(ds, "d0", pooling="medium"), "'medium'"),
    "mean pooling": (lambda ds: analysis.corpus_mean(ds, "medium"), "'medium'"),
    "centre pooling": (lambda ds: analysis.centre(ds, "medium"), "'medium'"),
    "nearest model": (lambda ds: analysis.nearest(ds, "d0", model="nobody"), "'nobody'"),
    "similarity model": (lambda ds: analysis.cosine_similarity(ds, ["d0"], model="nobody"), "'nobody'"),
    "nearest doc id": (lambda ds: analysis.nearest(ds, "no-such-doc"), "'no-such-doc'"),
    "similarity doc id": (lambda ds: analysis.cosine_similarity(ds, ["d0", "no-such-doc"]), "'no-such-doc'"),
    "diagnostics doc id": (lambda ds: analysis.long_diagnostics(ds, ["no-such-doc"]), "'no-such-doc'"),
    "position past the end": (lambda ds: analysis.nearest(ds, N_CORPUS), f"document {N_CORPUS} is out of range"),
    "negative position": (lambda ds: analysis.nearest(ds, -1), "document -1 is out of range"),
    "short query": (lambda ds: analysis.nearest(ds, np.ones(HIDDEN - 1, np.float32)), f"({HIDDEN - 1},)"),
    "query of long width": (lambda ds: analysis.nearest(ds, np.ones(4 * HIDDEN, np.float32)), f"({4 * HIDDEN},)"),
    "query with a batch axis": (lambda ds: analysis.nearest(ds, np.ones((1, HIDDEN), np.float32)), f"(1, {HIDDEN})"),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_arguments_name_the_bad_value(corpus_ds: xr.Dataset, name: str) -> None:
    call, named = BAD_CALLS[name]
    with pytest.raises(InputError, match=re.escape(named)):
        call(corpus_ds)


# ---------------------------------------------------------------- uncommitted units


@pytest.fixture(scope="module")
def partial_ds(partial: WrittenStore) -> xr.Dataset:
    with pytest.warns(UserWarning, match="not committed"):
        return open_in_small_chunks(partial.url)


def test_open_warns_of_uncommitted_units(partial: WrittenStore) -> None:
    with pytest.warns(UserWarning, match=rf"not committed.*units {SKIPPED_UNIT}\b"):
        analysis.vectors(partial.url)


@pytest.mark.parametrize("pooling", ["short", "long"])
def test_nearest_skips_docs_of_uncommitted_units(partial: WrittenStore, partial_ds: xr.Dataset, pooling: str) -> None:
    skipped = set(range(SKIPPED_UNIT * UNIT_DOCS, (SKIPPED_UNIT + 1) * UNIT_DOCS))
    found = analysis.nearest(partial_ds, "d0", k=10 * N_PARTIAL, pooling=pooling, centre=False)
    assert skipped.isdisjoint(found["doc"])
    assert len(found) == N_PARTIAL - len(skipped) - 1
    rows = partial.pooled[pooling]
    assert_same_neighbours(found, *brute_nearest(rows, rows[0], None, N_PARTIAL, exclude=0), partial.doc_ids)


def test_nearest_in_a_partial_store_centred_by_a_complete_stores_mean(
        corpus: WrittenStore, corpus_ds: xr.Dataset, partial: WrittenStore, partial_ds: xr.Dataset) -> None:
    # the partial store has no mean of its own yet: a complete store's mean still centres it
    vector = random_vectors(1, seed=7)["short"][0]
    found = analysis.nearest(partial_ds, vector, k=N_PARTIAL, mean=analysis.corpus_mean(corpus_ds, "short"))
    expected = brute_nearest(partial.pooled["short"], vector, float64_mean(corpus, "short"), N_PARTIAL)
    assert len(found) == N_PARTIAL - UNIT_DOCS
    assert_same_neighbours(found, *expected, partial.doc_ids)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[WrittenStore, xr.Dataset]:
    """Models "m" and "n" over the same documents; the first one's vectors are returned."""
    location = StoreLocation(str(tmp_path_factory.mktemp("vectors") / "two.zarr"))
    first = write_store(location, random_vectors(N_PROBE, seed=9))
    write_store(location, random_vectors(N_PROBE, seed=10), label="n")
    return first, open_in_small_chunks(first.url)


def test_nearest_of_one_model_takes_a_mean_of_that_model(corpus: WrittenStore, corpus_ds: xr.Dataset,
                                                         two_models: tuple[WrittenStore, xr.Dataset]) -> None:
    first, ds = two_models
    found = analysis.nearest(ds, "d1", k=N_PROBE, model=LABEL, mean=analysis.corpus_mean(corpus_ds, "short"))
    rows = first.pooled["short"]
    expected = brute_nearest(rows, rows[1], float64_mean(corpus, "short"), N_PROBE, exclude=1)
    assert_same_neighbours(found, *expected, first.doc_ids)


# ---------------------------------------------------------------- cosine_similarity


@pytest.mark.parametrize("centred", [True, False])
def test_cosine_similarity_matches_numpy(corpus: WrittenStore, corpus_ds: xr.Dataset, centred: bool) -> None:
    docs: list[int | str] = ["d3", 0, "d41", "d7"]
    positions = [3, 0, 41, 7]
    similarity = analysis.cosine_similarity(corpus_ds, docs, centre=centred)
    rows = corpus.pooled["short"][positions].astype(np.float64)
    if centred:
        rows = rows - float64_mean(corpus, "short")
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    assert_allclose(similarity.values, unit @ unit.T, atol=1e-12)


def test_cosine_similarity_is_symmetric_with_unit_diagonal(corpus_ds: xr.Dataset) -> None:
    ids = ["d10", "d2", "d33", "d49", "d5"]
    similarity = analysis.cosine_similarity(corpus_ds, ids, pooling="long")
    assert similarity.dims == ("doc", "other_doc")
    assert similarity["doc"].values.tolist() == ids
    assert similarity["other_doc"].values.tolist() == ids
    assert_allclose(similarity.values, similarity.values.T, atol=1e-12)
    assert_allclose(np.diag(similarity.values), 1.0, atol=1e-12)


def test_cosine_similarity_is_centred_by_default(corpus_ds: xr.Dataset) -> None:
    ids = ["d1", "d2", "d3"]
    default = analysis.cosine_similarity(corpus_ds, ids)
    xr.testing.assert_allclose(default, analysis.cosine_similarity(corpus_ds, ids, centre=True))
    # the shared offset makes raw vectors far more alike than centred ones
    assert np.abs(default.values - analysis.cosine_similarity(corpus_ds, ids, centre=False).values).max() > 0.1


# ---------------------------------------------------------------- long_diagnostics


def long_parts(values: np.ndarray) -> np.ndarray:
    """(docs, 4 * hidden) -> (docs, 4, hidden): last token, then the three depths."""
    return values.reshape(values.shape[0], len(PARTS), HIDDEN)


def test_long_diagnostics_with_own_mean_predicts_the_difference(corpus: WrittenStore, corpus_ds: xr.Dataset) -> None:
    diagnostics = analysis.long_diagnostics(corpus_ds, ["d2", "d9", "d40"])
    assert diagnostics["part"].values.tolist() == PARTS
    assert diagnostics["doc"].values.tolist() == ["d2", "d9", "d40"]
    assert_allclose(diagnostics["difference_norm"].values, diagnostics["predicted_norm"].values, rtol=1e-5)
    assert_allclose(diagnostics["alignment"].values, 1.0, atol=1e-5)
    mean_norms = np.linalg.norm(long_parts(float64_mean(corpus, "long")[None]), axis=-1)
    assert_allclose(diagnostics["predicted_norm"].values, np.repeat(mean_norms, 3, axis=0), rtol=1e-6)


def test_long_diagnostics_norms_match_numpy(corpus: WrittenStore, corpus_ds: xr.Dataset) -> None:
    positions = [2, 9, 40]
    diagnostics = analysis.long_diagnostics(corpus_ds, positions)
    raw = corpus.pooled["long"][positions].astype(np.float64)
    centred = raw - float64_mean(corpus, "long")
    assert_allclose(diagnostics["raw_norm"].values, np.linalg.norm(long_parts(raw), axis=-1), rtol=1e-6)
    assert_allclose(diagnostics["centred_norm"].values, np.linalg.norm(long_parts(centred), axis=-1), rtol=1e-5)


def test_long_diagnostics_with_another_stores_mean(corpus: WrittenStore, corpus_ds: xr.Dataset,
                                                   probe_ds: xr.Dataset) -> None:
    diagnostics = analysis.long_diagnostics(probe_ds, ["p0", "p5"], mean=analysis.corpus_mean(corpus_ds, "long"))
    mean_norms = np.linalg.norm(long_parts(float64_mean(corpus, "long")[None]), axis=-1)
    assert_allclose(diagnostics["predicted_norm"].values, np.repeat(mean_norms, 2, axis=0), rtol=1e-6)
    assert_allclose(diagnostics["difference_norm"].values, diagnostics["predicted_norm"].values, rtol=1e-5)


# ---------------------------------------------------------------- S3


def test_nearest_over_s3_equals_local(corpus: WrittenStore, corpus_ds: xr.Dataset,
                                      s3_options: dict[str, object]) -> None:
    location = StoreLocation(f"s3://{BUCKET}/{uuid.uuid4().hex}.zarr", s3_options)
    written = write_store(location, corpus.pooled)
    remote = open_in_small_chunks(written.url, storage_options=dict(s3_options))
    assert len(remote["short"].chunksizes["doc"]) > 1
    for query in ("d11", random_vectors(1, seed=8)["long"][0]):
        pooling = "short" if isinstance(query, str) else "long"
        pd.testing.assert_frame_equal(analysis.nearest(remote, query, k=7, pooling=pooling),
                                      analysis.nearest(corpus_ds, query, k=7, pooling=pooling))
    assert_array_equal(remote["long"].values, corpus_ds["long"].values)


def test_ties_go_to_the_first_document(tmp_path: Path) -> None:
    """Identical vectors in several units and chunks: the k best are the first of them, in order."""
    pooled = random_vectors(40, seed=7)
    for copy in (3, 11, 19, 27, 35):
        for name in pooled:
            pooled[name][copy] = pooled[name][3]
    written = write_store(StoreLocation(str(tmp_path / "ties.zarr")), pooled)
    dataset = open_in_small_chunks(written.url)
    query = pooled["short"][3]
    for k in (1, 2, 3):
        found = analysis.nearest(dataset, query, k=k, centre=False)
        assert found["doc"].tolist() == [3, 11, 19][:k]
    found = analysis.nearest(dataset, 11, k=2, centre=False)  # itself left out: the first two other copies
    assert found["doc"].tolist() == [3, 19]
