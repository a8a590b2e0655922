"""The fits cache answers only for the same computation on the same data (hypothesis), atomically.

Hits and misses are observed by counting the series fits actually computed: a hit computes none.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import analysis
from analysis import _dataset_fit, _fits_cache, open_store
from store import InputError

SMALL = ["--data.max_tokens", "128", "--data.max_seq_len", "64", "--data.batch_size", "2",
         "--stats.channels", "1", "--stats.commit_tokens", "64", "--stats.layers", "embed,middle",
         "--stats.metrics", "rms,kurtosis,channel_wise", "--model.device", "cpu", "--progress", "false"]
FAST = {"compare": False}  # comparisons cost ~0.3 s a series; they get their own test below


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory, tiny_model: Callable[[str], Path]) -> Path:
    """2 models x 2 layers x 2 metrics (+1 channel) x 128 tokens: one fit takes milliseconds."""
    from builders.collect import main

    store = tmp_path_factory.mktemp("cache") / "s.zarr"
    for family in ("llama", "gpt2"):
        assert main(["--model.name", str(tiny_model(family)), "--store", str(store), *SMALL]) == 0
    return store


@pytest.fixture(autouse=True)
def synchronous() -> Iterator[None]:
    with dask.config.set(scheduler="synchronous"):
        yield


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ACTIVATION_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


class FitCounter:
    """Wraps the series fit: how many series the last ``fit`` call computed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = _dataset_fit._fit_series

        def counted(*args: Any, **kwargs: Any) -> np.ndarray:
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(_dataset_fit, "_fit_series", counted)

    def fit(self, dataset: xr.Dataset, **options: Any) -> tuple[xr.Dataset, bool]:
        """(the computed fits, whether they came from the cache)."""
        before = self.calls
        fits = analysis.fit(dataset, **options).compute()
        return fits, self.calls == before


# ---- the property: sequences of selections, transformations, options and store edits -------------

INDICES = st.sampled_from([[0], [1], [1, 0], [0, 1]])
LABELED = {"model": None, "layer": ("embed", "middle"), "metric": ("rms", "kurtosis")}
DERIVED: dict[str, Callable[[xr.Dataset], xr.Dataset]] = {
    "square": lambda d: d.assign(value=d.value ** 2),
    "shift": lambda d: d.assign(value=d.value + 1),
    "round": lambda d: d.assign(value=(d.value * 100).round()),
    "channels_doubled": lambda d: d.assign(channel_value=d.channel_value * 2),
    "in_memory": lambda d: d.assign(value=d.value.compute()),  # no dask name: never cached
}
SELECTION = st.fixed_dictionaries({}, optional={
    "model": st.tuples(st.sampled_from(["isel", "sel"]), INDICES),
    "layer": st.tuples(st.sampled_from(["isel", "sel"]), INDICES),
    "metric": st.tuples(st.sampled_from(["isel", "sel"]), INDICES),
    "token": st.tuples(st.just("isel"), st.sampled_from([32, 96])),
})
OPTIONS = st.fixed_dictionaries({}, optional={
    "transform": st.sampled_from(["abs", "positive", "negative"]),
    "discrete": st.sampled_from([None, False, True]),
    "alpha_range": st.sampled_from([None, (0.0, 3.0), (1.0, 10.0)]),
    "n_boot": st.sampled_from([0, 2]),
    "channels": st.booleans(),
})
FIT = st.tuples(st.just("fit"), SELECTION, st.sampled_from([None, *DERIVED]), OPTIONS)
EDIT = st.tuples(st.just("edit"), st.sampled_from(["chunk", "attrs", "commit"]))
REPEAT = st.tuples(st.just("repeat"), st.integers(0, 50))
STEPS = st.lists(st.one_of(FIT, FIT, EDIT, REPEAT), min_size=2, max_size=6)


def _select(dataset: xr.Dataset, selection: dict[str, tuple[str, Any]]) -> xr.Dataset:
    for dim, (how, which) in selection.items():
        if dim == "token":
            dataset = dataset.isel(token=slice(0, which))
        elif how == "sel":
            dataset = dataset.sel({dim: [dataset[dim].values[i] for i in which]})
        else:
            dataset = dataset.isel({dim: which})
    return dataset


def _edit(store: Path, kind: str, serial: int) -> None:
    group = zarr.open_group(store, path="stats", mode="r+")
    if kind == "chunk":  # an in-place edit of committed data: no attrs, no commit marker change
        group["value"][0, 0, 0, :] = group["value"][0, 0, 0, :] * 1.5
    elif kind == "attrs":  # the node's own metadata only (the consolidated copy is left as it was)
        group.attrs["edited"] = serial
    else:
        group["committed_tokens"][:] = group["committed_tokens"][:] - 16


DEFAULTS = {"transform": "abs", "alpha_range": None, "n_boot": 0, "channels": True}


def _content(dataset: xr.Dataset, options: dict[str, Any]) -> str:
    """What a fit computes from: the fitted data, labels and resolved options (the oracle of 'changed')."""
    channels = options.get("channels", True)
    digest = hashlib.sha256()
    for name in ("value", "channel_value", "channel_index") if channels else ("value", "channel_index"):
        values = dataset[name].values
        digest.update(f"{name}{values.dtype}{values.shape}".encode() + values.tobytes())
    for dim in ("model", "layer", "metric"):
        digest.update(repr(dataset[dim].values.tolist()).encode())
    discrete = options.get("discrete")
    resolved = {**DEFAULTS, **options, "discrete": bool(discrete) if discrete is not None else
                np.issubdtype(dataset.value.dtype, np.integer)}
    digest.update(repr(sorted(resolved.items())).encode())
    return digest.hexdigest()


@settings(max_examples=10, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=STEPS)
def test_a_hit_is_always_the_same_computation_on_the_same_data(
        steps: list[tuple[Any, ...]], small_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = FitCounter(monkeypatch)
    with tempfile.TemporaryDirectory() as scratch, pytest.MonkeyPatch.context() as env:
        env.setenv("ACTIVATION_CACHE", str(Path(scratch) / "cache"))
        store = Path(scratch) / "s.zarr"
        shutil.copytree(small_store, store)
        version, done, exact_seen, content_seen = 0, [], set(), set()
        for step in steps:
            if step[0] == "edit":
                version += 1
                _edit(store, step[1], version)
                continue
            if step[0] == "repeat":
                if not done:
                    continue
                step = done[step[1] % len(done)]
            _, selection, derived, options = step
            dataset = _select(open_store(str(store)), selection)
            dataset = DERIVED[derived](dataset) if derived else dataset
            fits, hit = counter.fit(dataset, **FAST, **options)
            exact = (version, repr(step))
            content = (version, _content(dataset, options))
            if derived == "in_memory":
                assert not hit, f"in-memory data answered from the cache: {step}"
            elif exact in exact_seen:
                assert hit, f"identical input recomputed: {step}"
            if content not in content_seen:
                assert not hit, f"answered from the cache for new data or options: {step}"
            if hit:  # whatever was served must be exactly what computing now gives
                fresh = analysis.fit(dataset, **FAST, **options, cache=False).compute()
                xr.testing.assert_equal(fits, fresh)
            done.append(step)
            exact_seen.add(exact)
            content_seen.add(content)


# ---- each option, derived data, processes ----------------------------------------------------------

@pytest.mark.parametrize("option", [{"compare": True}, {"channels": False}, {"transform": "negative"},
                                    {"discrete": True}, {"alpha_range": (0, 3)}, {"n_boot": 2}])
def test_every_option_is_part_of_the_key(option: dict[str, Any], small_store: Path, cache_dir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    counter = FitCounter(monkeypatch)
    one_series = open_store(str(small_store)).isel(model=[0], layer=[1], metric=[0])
    plain = {"compare": False, "channels": True}
    assert not counter.fit(one_series, **plain)[1]
    changed, hit = counter.fit(one_series, **{**plain, **option})
    assert not hit
    xr.testing.assert_equal(changed, analysis.fit(one_series, **{**plain, **option}, cache=False).compute())
    assert counter.fit(one_series, **{**plain, **option})[1] and counter.fit(one_series, **plain)[1]


def test_the_key_is_the_same_in_another_process(small_store: Path, cache_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    script = ("import sys; from analysis import open_store, fit; "
              "d = open_store(sys.argv[1]).isel(layer=[1], token=slice(0, 96)); "
              "fit(d.assign(value=d.value ** 2), compare=False)")
    subprocess.run([sys.executable, "-c", script, str(small_store)], check=True, env=os.environ.copy(),
                   cwd=Path(__file__).resolve().parents[2])
    counter = FitCounter(monkeypatch)
    derived = open_store(str(small_store)).isel(layer=[1], token=slice(0, 96))
    assert counter.fit(derived.assign(value=derived.value ** 2), compare=False)[1]
    assert not counter.fit(derived.assign(value=derived.value ** 3), compare=False)[1]


def test_data_not_from_open_store_is_never_cached(small_store: Path, cache_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    counter = FitCounter(monkeypatch)
    loaded = open_store(str(small_store)).load()  # in memory: no dask names to key on
    copied = xr.Dataset(dict(open_store(str(small_store)).data_vars))  # no record of its store
    for dataset in (loaded, copied, loaded, copied):
        assert not counter.fit(dataset, compare=False)[1]
    assert not cache_dir.exists()


def test_the_store_group_serves_only_the_whole_underived_dataset(small_store: Path, tmp_path: Path,
                                                                 cache_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "s.zarr"
    shutil.copytree(small_store, store)
    counter = FitCounter(monkeypatch)
    whole, _ = counter.fit(open_store(str(store)), compare=False, cache="store")
    assert "fits" in zarr.open_group(store, mode="r") and not cache_dir.exists()
    assert counter.fit(open_store(str(store)), compare=False)[1]  # a local-mode reader reuses it
    part = open_store(str(store)).isel(layer=[0])
    assert not counter.fit(part, compare=False)[1]  # not the store's whole fits
    calls = counter.calls
    with pytest.raises(InputError, match="cache='local'"):
        analysis.fit(part.assign(value=part.value + 1), compare=False, cache="store")
    assert counter.calls == calls  # refused before computing anything
    xr.testing.assert_equal(whole, analysis.fit(open_store(str(store)), compare=False, cache=False).compute())


# ---- writing entries: atomic, concurrent, never losing results -------------------------------------

def test_concurrent_writers_publish_one_whole_entry(small_store: Path, cache_dir: Path) -> None:
    dataset = open_store(str(small_store))
    fits = analysis.fit(dataset, compare=False, cache=False).compute().assign_attrs(fits_key="k" * 64)
    seen: list[xr.Dataset | None] = []
    barrier = threading.Barrier(4)

    def write_then_read() -> None:
        barrier.wait()
        _fits_cache._write_local("k" * 64, fits)
        entry = _fits_cache.local_entry("k" * 64)
        seen.append(_fits_cache._open_entry(entry, None, "k" * 64, str(entry)))

    threads = [threading.Thread(target=write_then_read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 4 and all(entry is not None for entry in seen)
    for entry in seen:
        xr.testing.assert_equal(entry.compute(), fits)
    assert [p.name for p in (cache_dir / "fits").iterdir()] == [f"{'k' * 64}.zarr"]  # no temporaries left


def test_an_unwritable_cache_folder_warns_and_keeps_the_results(small_store: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # even root cannot create folders below a file
    monkeypatch.setenv("ACTIVATION_CACHE", str(blocker / "cache"))
    dataset = open_store(str(small_store)).isel(layer=[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fits = analysis.fit(dataset, compare=False)
    assert any("not cached" in str(w.message) for w in caught)
    xr.testing.assert_equal(fits.compute(), analysis.fit(dataset, compare=False, cache=False).compute())


def test_unknown_cache_mode_is_an_input_error(small_store: Path) -> None:
    with pytest.raises(InputError, match="'elsewhere'"):
        analysis.fit(open_store(str(small_store)), cache="elsewhere")
