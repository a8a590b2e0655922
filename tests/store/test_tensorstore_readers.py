"""TensorStore opens every array of every group of a store built by each builder and reads what zarr-python reads.

TensorStore is an independent Zarr v3 implementation: if it reads every numeric array of a store byte
for byte equal to zarr-python, the stores are plain Zarr v3 and not an artefact of one library. It does
not know zarr-python's variable-length ``string`` data type, so each group keeps its string arrays'
values as JSON in its ``zarr.json`` (``attrs["labels"]``, store/_labels.py); these tests read that
``zarr.json`` through TensorStore's own key-value store and compare it with the arrays.

One small store per builder (tiny random models, a few hundred tokens), each case parametrized by the
builder, so a failure names it; the integers and hypercube stores build on the capture store, and the
vocab store on the superweights store, as those builders need.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorstore as ts
import zarr
from small_stores import copy_store

from store import validate_store

Tiny = Callable[[str], Path]
Groups = dict[str, dict[str, zarr.Array]]  # group path ("" for the root): {array name: array}

COLLECT_ARGS = ["--data.max_tokens", "128", "--data.max_seq_len", "64", "--data.batch_size", "2",
                "--stats.channels", "1", "--stats.commit_tokens", "64", "--stats.layers", "embed,middle",
                "--stats.metrics", "rms,kurtosis,channel_wise", "--model.device", "cpu", "--progress", "false"]
VECTORS_ARGS = ["--data.max_docs", "8", "--data.max_seq_len", "64", "--data.batch_size", "4",
                "--vectors.unit_docs", "8", "--model.device", "cpu", "--progress", "false"]
DETECT_ARGS = ["--model.device", "cpu", "--detect.calibration_tokens", "128", "--detect.seq_len", "64",
               "--progress", "false"]
SUPERWEIGHTS_ARGS = [*DETECT_ARGS, "--perplexity.window_len", "64", "--perplexity.stride", "32",
                     "--perplexity.max_tokens", "256", "--moe.router_samples", "3", "--accuracy.skip", "true"]
VOCAB_ARGS = [*DETECT_ARGS, "--eval.tokens", "256", "--eval.window_len", "64", "--eval.stride", "32"]
# the groups each builder writes (fnmatch patterns; collect's "vocab" is the tokenizer's): each must
# hold numeric arrays that TensorStore read
WRITTEN = {"collect": ("stats", "vocab", "fits"), "capture": ("captures",), "integers": ("encodings",),
           "hypercube": ("hypercubes",), "vectors": ("vectors",), "superweights": ("superweights",),
           "vocab": ("superweights/*/neuron_cards", "superweights/*/weight_cards")}


def _built(code: int, store: Path) -> Path:
    assert code == 0, f"the build of {store} failed"
    return store


# ---- one store per builder (module scope: built once, only read by the tests) ----------------------


@pytest.fixture(scope="module")
def collect_store(tmp_path_factory: pytest.TempPathFactory, tiny_model: Tiny) -> Path:
    """Statistics of a tiny Llama, and their power-law fits cached in the store's ``fits`` group."""
    import analysis
    from builders.collect import main

    store = tmp_path_factory.mktemp("collect") / "collect.zarr"
    _built(main(["--model.name", str(tiny_model("llama")), "--store", str(store), *COLLECT_ARGS]), store)
    analysis.fit(analysis.open_store(str(store)), compare=False, cache="store").compute()
    return store


@pytest.fixture(scope="module")
def capture_store(captured_store: Path) -> Path:
    return captured_store  # conftest's capture of a tiny Llama; read only here


@pytest.fixture(scope="module")
def integers_store(captured_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from builders.integers import main

    store = copy_store(captured_store, tmp_path_factory.mktemp("integers") / "integers.zarr")
    return _built(main(["--store", str(store), "--progress", "false"]), store)


@pytest.fixture(scope="module")
def hypercube_store(integers_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Materialized cubes of both sources, so both cube layouts (float, limbs and signs) are read."""
    from builders.hypercube import main

    store = copy_store(integers_store, tmp_path_factory.mktemp("hypercube") / "hypercube.zarr")
    for source in ("captures", "encodings"):
        _built(main(["--store", str(store), "--source", source, "--materialize", "--min_dim", "3",
                     "--max_dim", "9", "--progress", "false"]), store)
    return store


@pytest.fixture(scope="module")
def vectors_store(tmp_path_factory: pytest.TempPathFactory, tiny_model: Tiny) -> Path:
    from builders.vectors import main

    store = tmp_path_factory.mktemp("vectors") / "vectors.zarr"
    return _built(main(["--model.name", str(tiny_model("llama")), "--store", str(store), *VECTORS_ARGS]), store)


@pytest.fixture(scope="module")
def superweights_store(tmp_path_factory: pytest.TempPathFactory, planted: dict[str, Path],
                       text_file: Path) -> Path:
    """A planted Llama's records: detection, weights and evaluations tables (string columns among them)."""
    from builders.superweights import main

    store = tmp_path_factory.mktemp("superweights") / "superweights.zarr"
    return _built(main(["--model.name", str(planted["llama"]), "--data.name", str(text_file),
                        "--store", str(store), *SUPERWEIGHTS_ARGS]), store)


@pytest.fixture(scope="module")
def vocab_store(superweights_store: Path, tmp_path_factory: pytest.TempPathFactory, planted: dict[str, Path],
                text_file: Path) -> Path:
    """The superweights store plus the vocabulary cards of its recorded weight (no detection run)."""
    from builders.vocab import main

    store = copy_store(superweights_store, tmp_path_factory.mktemp("vocab") / "vocab.zarr")
    return _built(main(["--model.name", str(planted["llama"]), "--data.name", str(text_file),
                        "--store", str(store), *VOCAB_ARGS]), store)


@pytest.fixture(params=list(WRITTEN))
def built(request: pytest.FixtureRequest) -> tuple[str, Path]:
    """(builder, the store it built): each test runs once per builder, named by it."""
    return request.param, request.getfixturevalue(f"{request.param}_store")


# ---- reading a store both ways -----------------------------------------------------------------------


def arrays_by_group(store: Path) -> Groups:
    """Every array below the root, by the group holding it, from each node's own zarr.json."""
    root = zarr.open_group(str(store), mode="r", use_consolidated=False)
    groups: Groups = {}
    for path, node in root.members(max_depth=None):
        if isinstance(node, zarr.Array):
            group, _, name = path.rpartition("/")
            groups.setdefault(group, {})[name] = node
    return groups


def is_string(array: zarr.Array) -> bool:
    """zarr-python's string data types (variable-length ``string``, fixed-length UTF-32)."""
    return np.dtype(array.dtype).kind in "OUT"


def tensorstore_open(store: Path, path: str) -> Any:
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(store / path)}}
    return ts.open(spec, open=True).result()


def tensorstore_or_none(store: Path, path: str) -> Any:
    """The array opened by TensorStore, or None where it refuses its data type (and only that)."""
    try:
        return tensorstore_open(store, path)
    except ValueError as error:
        assert "data type is not one of the supported" in str(error), f"{path}: {error}"
        return None


def group_json(store: Path, group: str) -> dict[str, Any]:
    """A group's zarr.json read through TensorStore's key-value store: what any Zarr v3 reader sees."""
    kvstore = ts.KvStore.open({"driver": "file", "path": str(store) + "/"}).result()
    read = kvstore.read(f"{group}/zarr.json" if group else "zarr.json").result()
    assert read.state == "value", f"group {group or '/'!r} has no zarr.json"
    return json.loads(read.value)


def assert_same_bytes(store: Path, path: str, array: zarr.Array) -> None:
    expected = np.asarray(array[...])
    read = np.asarray(tensorstore_open(store, path).read().result())
    assert (read.dtype, read.shape) == (expected.dtype, expected.shape), path
    assert read.tobytes() == expected.tobytes(), f"TensorStore reads other values in {path}"


def as_text(values: Any) -> Any:
    """``ndarray.tolist()``'s nesting with every value a str, as store/_labels.py writes labels
    (numpy cannot ``astype(str)`` its StringDType, which zarr-python returns for ``string`` arrays)."""
    return [as_text(value) for value in values] if isinstance(values, list) else str(values)


def label_values(array: zarr.Array) -> list[Any]:
    return as_text(np.asarray(array[...]).tolist())


def _path(group: str, name: str) -> str:
    return f"{group}/{name}" if group else name


def _below(path: str, pattern: str) -> bool:
    return fnmatch(path, pattern) or fnmatch(path, f"{pattern}/*")


# ---- the tests -------------------------------------------------------------------------------------


def test_the_store_validates(built: tuple[str, Path]) -> None:
    validate_store(str(built[1]))  # raises on any problem, labels included


def test_tensorstore_reads_every_numeric_array_byte_for_byte(built: tuple[str, Path]) -> None:
    builder, store = built
    checked: dict[str, int] = {}
    for group, arrays in arrays_by_group(store).items():
        for name, array in arrays.items():
            if not is_string(array):
                assert_same_bytes(store, _path(group, name), array)
                checked[group] = checked.get(group, 0) + 1
    for written in WRITTEN[builder]:  # nothing skipped silently: each group the builder wrote was read
        assert sum(n for group, n in checked.items() if _below(group, written)) > 0, f"no array read in {written!r}"


def test_every_string_array_is_in_its_group_json_for_tensorstore(built: tuple[str, Path]) -> None:
    _, store = built
    checked = 0
    for group, arrays in arrays_by_group(store).items():
        strings = {name: array for name, array in arrays.items() if is_string(array)}
        if not strings:
            continue
        attributes = group_json(store, group).get("attributes", {})
        assert "labels" in attributes, f"group {group or '/'!r} has string arrays {sorted(strings)} but no labels"
        assert sorted(attributes["labels"]) == sorted(strings), f"group {group or '/'!r} labels other arrays"
        for name, array in strings.items():
            expected = label_values(array)
            assert attributes["labels"].get(name) == expected, f"labels of {_path(group, name)} differ"
            opened = tensorstore_or_none(store, _path(group, name))
            # today TensorStore refuses the data type: the JSON copy is how it reads the labels
            if opened is not None:
                assert as_text(np.asarray(opened.read().result()).tolist()) == expected
            checked += 1
    assert checked > 0, "no string array: the labels were never checked"
