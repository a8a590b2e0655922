"""Property: any sequence of builds of models with different token yields, killed or not, re-run or not,
leaves every committed token of every model intact, and the validator right about the store.

Each step runs the real ``builders.collect`` entry point on tiny models; a kill is an exception raised
after a chosen number of commits (or between the final resize and the consolidation), which, like
SIGKILL, leaves the store exactly as the last completed write left it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import store._stats_store
from builders.collect import main
from conftest import TINY_ARGS
from store import ContractError, UnitWriter, validate_store
from tiny_models import merged_tokenizer, save_tiny_model

TEXT = " ".join(f"sentence {i} about the quick brown fox." for i in range(160))  # ~6,000 bytes
STREAMED = ("value", "argmax_channel", "channel_value", "token_id", "doc_index")


@pytest.fixture(scope="module")
def models(tiny_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Labels -> model folders: two byte tokenizers (full yield) and a merging one (fewer tokens)."""
    merged = save_tiny_model("llama", tmp_path_factory.mktemp("merged"), tokenizer=merged_tokenizer(TEXT))
    return {"llama": tiny_model("llama"), "gpt2": tiny_model("gpt2"), "merged": merged}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(TEXT)
    return path


@contextmanager
def _killed_after(commits: int | None, in_finish: bool) -> Iterator[None]:
    """Raise KeyboardInterrupt after ``commits`` unit commits, or when finishing: a kill."""
    original_write, original_consolidate = UnitWriter.commit, store._stats_store.consolidate_if_stale
    written = [0]

    def write_region(self: UnitWriter) -> None:
        if commits is not None and written[0] >= commits:
            raise KeyboardInterrupt
        original_write(self)
        written[0] += 1

    def consolidate_if_stale(location: object) -> bool:
        raise KeyboardInterrupt

    UnitWriter.commit = write_region  # type: ignore[method-assign]
    if in_finish:
        store._stats_store.consolidate_if_stale = consolidate_if_stale
    try:
        yield
    finally:
        UnitWriter.commit = original_write  # type: ignore[method-assign]
        store._stats_store.consolidate_if_stale = original_consolidate


def _committed_data(path: Path) -> dict[str, xr.Dataset]:
    """Per model label with commits, every committed token of every streamed variable, loaded."""
    if not (path / "stats").exists():
        return {}
    dataset = xr.open_zarr(path, group="stats", consolidated=False)
    result = {}
    for index, label in enumerate(str(x) for x in dataset.model.values):
        committed = int(dataset.committed_tokens.values[index])
        if not committed:
            continue  # a slot with nothing committed holds nothing to lose (a new build may reuse the store)
        result[label] = dataset[list(STREAMED)].isel(model=index, token=slice(0, committed)).load()
    return result


def _assert_intact(before: dict[str, xr.Dataset], after: dict[str, xr.Dataset]) -> None:
    for label, committed in before.items():
        assert label in after, f"model {label!r} vanished"
        n_tokens = committed.sizes["token"]
        assert after[label].sizes["token"] >= n_tokens, f"committed tokens of {label!r} went back"
        for name in STREAMED:
            old, new = committed[name].values, after[label][name].isel(token=slice(0, n_tokens)).values
            assert old.tobytes() == new.tobytes(), f"committed {name} of {label!r} changed"


def _run(path: Path, corpus: Path, folder: Path, label: str) -> int:
    return main(["--model.name", str(folder), "--model.label", label, "--store", str(path),
                 "--data.name", str(corpus), *TINY_ARGS])


STEP = st.tuples(st.sampled_from(["llama", "gpt2", "merged"]),
                 st.one_of(st.none(), st.integers(0, 3)),  # commits before a kill (None: runs to the end)
                 st.booleans())  # killed while finishing


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, min_size=1, max_size=3))
def test_builds_never_lose_committed_tokens(steps: list[tuple[str, int | None, bool]], models: dict[str, Path],
                                            corpus: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.zarr"
        for label, commits, in_finish in steps:
            before = _committed_data(path)
            with _killed_after(commits, in_finish):
                code = _run(path, corpus, models[label], label)
            assert code in (0, 2, 130)
            after = _committed_data(path)
            _assert_intact(before, after)
            if code == 2:
                assert after.keys() == before.keys(), "a refused build changed the store"
                assert all(after[label].identical(before[label]) for label in before)
            _check_validator(path, killed_in_finish=code == 130 and in_finish)
        _complete_and_check(path, corpus, models, {label for label, _, _ in steps})


def _check_validator(path: Path, killed_in_finish: bool) -> None:
    if not (path / "stats").exists():
        return
    try:
        validate_store(str(path))
    except ContractError as error:
        assert killed_in_finish and "consolidated metadata" in str(error), error


def _complete_and_check(path: Path, corpus: Path, models: dict[str, Path], labels: set[str]) -> None:
    """Re-running every model without kills ends in a valid store: each slot full and finite, or its
    re-run refused with nothing changed (a model whose text turned out short after another joined)."""
    for label in sorted(labels):
        before = _committed_data(path)
        if _run(path, corpus, models[label], label) == 2:
            after = _committed_data(path)
            assert after.keys() == before.keys() and all(after[m].identical(before[m]) for m in before)
    if not (path / "stats").exists():
        return
    dataset = validate_store(str(path))
    complete = dataset.committed_tokens.values == dataset.sizes["token"]
    assert np.isfinite(dataset.value.isel(model=np.flatnonzero(complete)).values).all()
