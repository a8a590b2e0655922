"""builders.hypercube: least-padded cube shapes, the layout's recovery mappings, lazy views and the CLI.

Shapes are checked against a brute-force search written from the stated rule; every mapping is
checked exhaustively on small layouts against enumerations (itertools.product walks C order).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from small_stores import copy_store, tree_digest

from builders.hypercube import CubeError, CubeLayout, cube_view, main, open_view, plan_cube, shape_for
from builders.integers import main as integers_main
from store import InputError, StoreLocation, item_path, open_item, prepare_group, write_item

EXAMPLES = int(os.environ.get("HYPERCUBE_PROPERTY_EXAMPLES", "60"))
EXPLORE = settings(max_examples=EXAMPLES, deadline=None)

# ---- shapes ----------------------------------------------------------------------------------------


def brute_force_shape(n: int, min_dim: int, max_dim: int, num_dims: int | None) -> tuple[int, ...] | None:
    """Every (d, k) with d**k >= n, k the fewest for its d (or num_dims): least padding, then smaller d."""
    best: tuple[int, int, int] | None = None
    for d in range(min_dim, max_dim + 1):
        fits = [k for k in range(1, 64) if d**k >= n]
        if num_dims is not None:
            fits = [num_dims] if d**num_dims >= n else []
        if not fits:
            continue
        k = min(fits)
        candidate = (d**k - n, d, k)
        if best is None or candidate[:2] < best[:2]:
            best = candidate
    return None if best is None else (best[1],) * best[2]


RANGES = [(4, 10, None), (2, 3, None), (2, 16, None), (5, 5, None), (3, 7, None),
          (4, 10, 1), (4, 10, 2), (4, 10, 3), (2, 6, 6), (7, 9, 4)]


@pytest.mark.parametrize(("min_dim", "max_dim", "num_dims"), RANGES)
def test_shape_for_every_n_up_to_5000_is_the_least_padded(min_dim: int, max_dim: int, num_dims: int | None) -> None:
    for n in range(1, 5001):
        expected = brute_force_shape(n, min_dim, max_dim, num_dims)
        if expected is None:
            with pytest.raises(CubeError):
                shape_for(n, min_dim, max_dim, num_dims)
        else:
            assert shape_for(n, min_dim, max_dim, num_dims) == expected, n


def test_the_issue_example_takes_eleven_dimensions_of_four() -> None:
    n = 2_408_448
    assert 4**11 - n < 9**7 - n  # 1,785,856 padding values against 2,374,521
    assert shape_for(n) == (4,) * 11
    assert shape_for(n, 4, 10) == brute_force_shape(n, 4, 10, None)


@pytest.mark.parametrize(("n", "min_dim", "max_dim", "expected"), [
    (60, 4, 10, (4, 4, 4)),  # 4**3 = 8**2 = 64
    (60, 4, 8, (4, 4, 4)),
    (60, 2, 8, (2,) * 6),  # 2**6 = 4**3 = 8**2 = 64
    (60, 5, 8, (8, 8)),
    (700, 4, 9, (9, 9, 9)),  # 9**3 = 729 beats 4**5 = 1024
    (256, 2, 16, (2,) * 8),  # no padding for 2, 4 and 16: the smallest wins
])
def test_ties_in_padding_go_to_the_smaller_dimension(n: int, min_dim: int, max_dim: int,
                                                     expected: tuple[int, ...]) -> None:
    assert shape_for(n, min_dim, max_dim) == expected


@pytest.mark.parametrize(("n", "min_dim", "max_dim", "num_dims", "named"), [
    (0, 4, 10, None, "at least one"), (-5, 4, 10, None, "at least one"), (10, 1, 10, None, "min_dim"),
    (10, 0, 10, None, "min_dim"), (10, 8, 4, None, "min_dim"), (10, 4, 10, 0, "num_dims"),
    (1000, 4, 10, 2, "10"),  # 10**2 < 1000
])
def test_shape_for_refuses_what_cannot_be_shaped(n: int, min_dim: int, max_dim: int, num_dims: int | None,
                                                 named: str) -> None:
    with pytest.raises(CubeError, match=named) as raised:
        shape_for(n, min_dim, max_dim, num_dims)
    assert isinstance(raised.value, InputError)


# ---- layouts and their recovery mappings -------------------------------------------------------------


def c_order(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every index of ``shape`` in C order (the last axis fastest)."""
    return list(itertools.product(*(range(size) for size in shape)))


def as_rows(index_arrays: tuple[np.ndarray, ...]) -> list[tuple[int, ...]]:
    return [tuple(int(i) for i in row) for row in zip(*index_arrays)]


def size_of(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def check_every_mapping(layout: CubeLayout, shapes: list[tuple[int, ...]]) -> None:
    """All mappings of ``layout``, every index, against enumerations."""
    n_real = sum(size_of(shape) for shape in shapes)
    every = np.arange(layout.size)
    assert layout.n_real == n_real and layout.size == size_of(layout.dims)
    assert layout.pad_source.shape == (layout.size - n_real,)
    # flat <-> cube coordinates
    assert as_rows(layout.flat_to_coords(every)) == c_order(layout.dims)
    np.testing.assert_array_equal(layout.coords_to_flat(tuple(np.array(c_order(layout.dims)).T)), every)
    # padding and where each value comes from
    np.testing.assert_array_equal(layout.is_padding(every), every >= n_real)
    sources = layout.source_of(every)
    np.testing.assert_array_equal(sources[:n_real], np.arange(n_real))
    np.testing.assert_array_equal(sources[n_real:], layout.pad_source)
    # flat <-> (layer, position within the layer) <-> the layer's own index
    owners = [(layer, position) for layer, shape in enumerate(shapes) for position in range(size_of(shape))]
    layers, positions = layout.flat_to_layer(np.arange(n_real))
    assert list(zip(layers.tolist(), positions.tolist())) == owners
    np.testing.assert_array_equal(layout.layer_to_flat(layers, positions), np.arange(n_real))
    for layer, shape in enumerate(shapes):
        inside = np.arange(size_of(shape))
        assert as_rows(layout.unravel_in_layer(layer, inside)) == c_order(shape)
        np.testing.assert_array_equal(layout.ravel_in_layer(layer, tuple(np.array(c_order(shape)).T)), inside)
    for flat in range(n_real, layout.size):
        with pytest.raises(CubeError):
            layout.flat_to_layer(flat)
    offsets = np.cumsum([0] + [size_of(shape) for shape in shapes]).tolist()
    assert layout.layer_map() == [{"layer": name, "flat_offset": offsets[i], "flat_end": offsets[i + 1],
                                   "original_shape": list(shapes[i])} for i, name in enumerate(layout.layer_names)]


THREE_LAYERS = [(2, 3), (2, 3), (2, 3)]


@pytest.mark.parametrize(("min_dim", "max_dim", "dims"), [
    (2, 2, (2,) * 5), (3, 3, (3,) * 3), (4, 4, (4,) * 3), (2, 4, (3,) * 3), (2, 3, (3,) * 3), (5, 6, (5, 5)),
])
def test_every_mapping_round_trips_on_three_small_layers(min_dim: int, max_dim: int, dims: tuple[int, ...]) -> None:
    layout = plan_cube(["a", "b", "c"], THREE_LAYERS, min_dim, max_dim, None, pad_seed=7)
    assert layout.dims == dims
    check_every_mapping(layout, THREE_LAYERS)


@EXPLORE
@given(st.lists(st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple), min_size=1, max_size=4),
       st.integers(2, 4), st.integers(0, 2), st.integers(0, 2**32 - 1))
def test_every_mapping_round_trips_on_any_small_layout(shapes: list[tuple[int, ...]], min_dim: int, extra: int,
                                                       seed: int) -> None:
    names = [f"layer_{i}" for i in range(len(shapes))]
    layout = plan_cube(names, shapes, min_dim, min_dim + extra, None, pad_seed=seed)
    assert layout.dims == brute_force_shape(sum(size_of(s) for s in shapes), min_dim, min_dim + extra, None)
    check_every_mapping(layout, shapes)


@pytest.mark.parametrize(("layer", "position"), [(3, 0), (-1, 0), (0, 6), (2, -1), (1, 100)])
def test_layer_to_flat_refuses_positions_outside_the_layers(layer: int, position: int) -> None:
    layout = plan_cube(["a", "b", "c"], THREE_LAYERS, 2, 4)
    with pytest.raises(CubeError):
        layout.layer_to_flat(layer, position)


def test_flat_to_layer_refuses_padding_and_negative_indices_in_a_batch() -> None:
    layout = plan_cube(["a", "b", "c"], THREE_LAYERS, 2, 4)
    for bad in ([0, 5, layout.n_real], [-1, 3]):
        with pytest.raises(CubeError):
            layout.flat_to_layer(np.array(bad))


def test_padding_copies_only_real_values_and_is_reproducible_by_seed() -> None:
    shapes = [(7, 13)] * 3  # 273 real values: (3,) * 6 = 729 holds them with 456 padding values
    layout = plan_cube(["a", "b", "c"], shapes, 3, 3, None, pad_seed=42)
    assert layout.dims == (3,) * 6 and layout.pad_source.size == 729 - 273
    assert layout.pad_source.min() >= 0 and layout.pad_source.max() < 273
    assert np.issubdtype(layout.pad_source.dtype, np.integer)
    again = plan_cube(["a", "b", "c"], shapes, 3, 3, None, pad_seed=42)
    other = plan_cube(["a", "b", "c"], shapes, 3, 3, None, pad_seed=43)
    np.testing.assert_array_equal(again.pad_source, layout.pad_source)
    assert not np.array_equal(other.pad_source, layout.pad_source)
    assert layout.pad_seed == 42 and other.pad_seed == 43
    assert len(np.unique(layout.pad_source)) > 1  # drawn, not one value repeated


def test_a_cube_without_padding_has_no_padding_sources() -> None:
    layout = plan_cube(["a", "b"], [(4, 4), (4, 4)], 2, 2)
    assert layout.dims == (2,) * 5 and layout.pad_source.size == 0
    np.testing.assert_array_equal(layout.source_of(np.arange(32)), np.arange(32))


# ---- the lazy view ----------------------------------------------------------------------------------


def expected_cube(layers: list[np.ndarray], layout: CubeLayout, trailing: tuple[int, ...] = ()) -> np.ndarray:
    """Flattened layers in order, then the padding copies, shaped as the cube."""
    real = np.concatenate([layer.reshape(-1, *trailing) for layer in layers])
    return np.concatenate([real, real[layout.pad_source]]).reshape(*layout.dims, *trailing)


def distinct_layers(shapes: list[tuple[int, ...]], dtype: type = np.float32) -> list[np.ndarray]:
    """Layers whose every value is different, so any misplaced value shows."""
    start = 0
    layers = []
    for shape in shapes:
        layers.append((np.arange(size_of(shape)) + start).astype(dtype).reshape(shape))
        start += size_of(shape)
    return layers


@pytest.mark.parametrize("chunked", [False, True])
def test_view_values_are_the_concatenated_layers_then_the_padding(chunked: bool) -> None:
    shapes = [(3, 5), (3, 5), (2, 4)]
    layers = distinct_layers(shapes)
    layout = plan_cube(["a", "b", "c"], shapes, 2, 5, None, pad_seed=1)
    inputs = [da.from_array(layer, chunks=2) for layer in layers] if chunked else layers
    view = cube_view(inputs, layout)
    assert isinstance(view, da.Array) and view.shape == layout.dims
    values = view.compute()
    np.testing.assert_array_equal(values, expected_cube(layers, layout))
    for flat in range(layout.size):  # each cube cell holds the value its mappings name
        layer, position = layout.flat_to_layer(layout.source_of(flat))
        index = layout.unravel_in_layer(int(layer), position)
        assert values[layout.flat_to_coords(flat)] == layers[int(layer)][index]


def test_view_keeps_trailing_axes_at_the_end_of_every_value() -> None:
    shapes = [(2, 3), (2, 3)]
    layers = [layer.reshape(*shape, 1) * np.array([1, 1000], np.int64)
              for layer, shape in zip(distinct_layers(shapes, np.int64), shapes)]
    layout = plan_cube(["a", "b"], shapes, 3, 3)
    view = cube_view(layers, layout, trailing=(2,))
    assert view.shape == (*layout.dims, 2)
    np.testing.assert_array_equal(view.compute(), expected_cube(layers, layout, trailing=(2,)))


def test_view_creation_reads_nothing() -> None:
    reads: list[int] = []

    def load(number: int) -> np.ndarray:
        reads.append(number)
        return np.zeros((999, 1001), np.float32)

    layers = [da.from_delayed(dask.delayed(load)(i), (999, 1001), np.float32) for i in range(100)]
    layout = plan_cube([f"layer_{i}" for i in range(100)], [(999, 1001)] * 100)
    view = cube_view(layers, layout)
    assert isinstance(view, da.Array)
    assert view.shape == layout.dims == brute_force_shape(100 * 999 * 1001, 4, 10, None)
    assert reads == []


# ---- the command line --------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], run: Callable[[list[str]], int], *args: str) -> tuple[int, str]:
    try:
        code = run(list(args))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def encoded_store(captured_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared capture, copied and encoded."""
    store = copy_store(captured_store, tmp_path_factory.mktemp("hypercube") / "encoded.zarr")
    assert integers_main(["--store", str(store), "--progress", "false"]) == 0
    return store


@pytest.fixture
def store_copy(encoded_store: Path, tmp_path: Path) -> Path:
    return copy_store(encoded_store, tmp_path / "store.zarr")


def the_label(store: Path) -> str:
    (label,) = [path.name for path in (store / "captures").iterdir() if path.is_dir()]
    return label


def exact_integers(values: np.ndarray, exponent: int) -> np.ndarray:
    return np.array([round(Fraction(float(v)) * 10**exponent) for v in values.reshape(-1)], object).reshape(
        values.shape)


def signed_integers(magnitude: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """The documented limb layout read by hand."""
    total = np.zeros(negative.shape, object)
    for limb in range(magnitude.shape[-1]):
        total = total + magnitude[..., limb].astype(np.int64).astype(object) * (1 << (32 * limb))
    return np.where(negative, -total, total)


@pytest.mark.parametrize("source", ["captures", "encodings"])
def test_materialized_cube_matches_the_lazy_view_and_the_source(store_copy: Path, source: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    label = the_label(store_copy)
    code, err = run_cli(capsys, main, "--store", str(store_copy), "--source", source, "--materialize",
                        "--min_dim", "3", "--max_dim", "9", "--pad_seed", "5", "--progress", "false")
    assert code == 0, err
    location = StoreLocation(str(store_copy))
    stored = open_item(location, item_path(f"hypercubes/{source}", label, 0))
    capture = open_item(location, item_path("captures", label, 0))
    states = capture["hidden_state"].values
    n_real = states.size
    dims = brute_force_shape(n_real, 3, 9, None)
    assert stored.attrs["dimensions"] == list(dims)
    assert stored.attrs["total_real_elements"] == n_real and stored.attrs["total_size"] == size_of(dims)
    assert stored.attrs["padding"] == size_of(dims) - n_real and stored.attrs["pad_seed"] == 5
    pad_source = stored["pad_source"].values
    assert pad_source.shape == (size_of(dims) - n_real,) and pad_source.min() >= 0 and pad_source.max() < n_real
    np.testing.assert_array_equal(stored["layer_shape"].values, [states.shape[1:]] * states.shape[0])
    layout = plan_cube([str(name) for name in capture["layer"].values], [states.shape[1:]] * states.shape[0],
                       3, 9, None, pad_seed=5)
    np.testing.assert_array_equal(pad_source, layout.pad_source)

    views = open_view(str(store_copy), label, 0, source)
    cube_dims = tuple(f"cube_{i}" for i in range(len(dims)))
    if source == "captures":
        assert set(views) == {"hidden_state"} and isinstance(views["hidden_state"], da.Array)
        assert stored["hidden_state"].dims == cube_dims
        np.testing.assert_array_equal(stored["hidden_state"].values, views["hidden_state"].compute())
        np.testing.assert_array_equal(stored["hidden_state"].values, expected_cube(list(states), layout))
    else:
        assert set(views) == {"magnitude", "negative"}
        assert stored["magnitude"].dims == (*cube_dims, "limb") and stored["negative"].dims == cube_dims
        magnitude, negative = stored["magnitude"].values, stored["negative"].values
        np.testing.assert_array_equal(magnitude, views["magnitude"].compute())
        np.testing.assert_array_equal(negative, views["negative"].compute())
        integers = exact_integers(states, 32)
        assert signed_integers(magnitude, negative).tolist() == expected_cube(list(integers), layout).tolist()


def test_a_view_without_materialize_stores_only_the_layout(store_copy: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    label = the_label(store_copy)
    code, err = run_cli(capsys, main, "--store", str(store_copy), "--progress", "false")
    assert code == 0, err
    stored = open_item(StoreLocation(str(store_copy)), item_path("hypercubes/encodings", label, 0))
    assert "magnitude" not in stored and "negative" not in stored
    assert {"pad_source", "layer_offset", "layer_end", "layer_shape"} <= set(stored.data_vars)
    assert stored.attrs["source"] == item_path("encodings", label, 0)
    views = open_view(str(store_copy), label)
    assert views["magnitude"].shape[:-1] == tuple(stored.attrs["dimensions"])


@pytest.mark.parametrize("source", ["encodings", "captures"])
def test_npy_export_loads_with_numpy_and_matches_the_store(store_copy: Path, tmp_path: Path, source: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    label = the_label(store_copy)
    export = tmp_path / "export"
    code, err = run_cli(capsys, main, "--store", str(store_copy), "--source", source, "--export", "npy", str(export),
                        "--progress", "false")
    assert code == 0, err
    location = StoreLocation(str(store_copy))
    capture = open_item(location, item_path("captures", label, 0))
    states = capture["hidden_state"].values
    stem = capture.attrs["model_name"].replace("/", "_")
    folder = export / f"{stem}_int_activations_0000_hypercube"
    metadata = json.loads((folder / "hypercube_metadata.json").read_text())
    cube_meta = metadata["hypercube"]
    assert {"dimensions", "total_real_elements", "total_size", "padding", "pad_seed",
            "pad_source_indices"} <= cube_meta.keys()
    dims = tuple(cube_meta["dimensions"])
    assert dims == brute_force_shape(states.size, 4, 10, None)
    assert cube_meta["total_real_elements"] == states.size and cube_meta["pad_seed"] == 42
    assert cube_meta["padding"] == size_of(dims) - states.size == len(cube_meta["pad_source_indices"])
    layer_size = size_of(states.shape[1:])
    assert metadata["layer_map"] == [
        {"layer": str(name), "flat_offset": i * layer_size, "flat_end": (i + 1) * layer_size,
         "original_shape": [1, *states.shape[1:]]} for i, name in enumerate(capture["layer"].values)]

    cube = np.load(folder / "hypercube.npy", allow_pickle=True)
    assert cube.shape == dims
    real = (exact_integers(states, 32) if source == "encodings" else states).reshape(-1)
    expected = np.concatenate([real, real[np.array(cube_meta["pad_source_indices"], np.int64)]]).reshape(dims)
    assert cube.tolist() == expected.tolist()
    if source == "captures":
        assert cube.dtype == np.float32
        np.testing.assert_array_equal(cube, np.load(folder / "hypercube.npy"))  # no pickle needed for floats


def assert_refused_untouched(store: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                             named: list[str]) -> None:
    """Exit 2, one error line naming the problem, the store unchanged."""
    before = tree_digest(store)
    code, err = run_cli(capsys, main, "--store", str(store), "--progress", "false", *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in named:
        assert word in lines[0]
    assert tree_digest(store) == before
    assert not (store / "hypercubes").exists()


@pytest.mark.parametrize(("args", "named"), [
    (["--min_dim", "8", "--max_dim", "4"], ["min_dim", "max_dim"]),
    (["--min_dim", "1"], ["min_dim"]),
    (["--source", "tokens"], ["source", "tokens"]),
    (["--model", "no-such-model"], ["no-such-model"]),
    (["--source", "captures", "--model", "no-such-model"], ["no-such-model"]),
    (["--num_dims", "1", "--max_dim", "10"], ["num_dims"]),  # 10 values on one axis cannot hold a capture
])
def test_cli_bad_input_is_one_error_line_and_writes_nothing(store_copy: Path, capsys: pytest.CaptureFixture[str],
                                                            args: list[str], named: list[str]) -> None:
    assert_refused_untouched(store_copy, capsys, args, named)


def plant_float16_capture(store: Path) -> tuple[StoreLocation, np.ndarray]:
    """Two float16 layers of (4, 8): 64 values, a (4, 4, 4) cube with no padding."""
    states = (np.arange(64, dtype=np.float16).reshape(2, 4, 8) - 30) * np.float16(0.375)
    location = StoreLocation(str(store))
    dataset = xr.Dataset({"hidden_state": (("layer", "position", "hidden"), states)},
                         coords={"layer": np.array(["first", "second"], dtype=object)},
                         attrs={"dtype": "float16", "model_name": "org/half", "prompt": "p", "generated_text": "g"})
    prepare_group(location, "captures", "half", {})
    write_item(location, item_path("captures", "half", 0), dataset)
    return location, states


def test_a_float16_capture_without_padding_through_both_clis(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from builders.integers import main as integers_main

    location, states = plant_float16_capture(tmp_path / "half.zarr")
    assert run_cli(capsys, integers_main, "--store", location.url, "--progress", "false")[0] == 0
    code, err = run_cli(capsys, main, "--store", location.url, "--materialize", "--progress", "false")
    assert code == 0, err
    stored = open_item(location, item_path("hypercubes/encodings", "half", 0))
    assert stored.attrs["dimensions"] == [4, 4, 4] and stored.attrs["padding"] == 0
    assert stored["pad_source"].shape == (0,)
    expected = exact_integers(states, 16).reshape(4, 4, 4)  # the default scale of float16 is 16
    assert signed_integers(stored["magnitude"].values, stored["negative"].values).tolist() == expected.tolist()
    views = open_view(location.url, "half")
    assert signed_integers(views["magnitude"].compute(), views["negative"].compute()).tolist() == expected.tolist()


def test_cli_encodings_source_without_encodings_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plant_float16_capture(tmp_path / "half.zarr")
    assert_refused_untouched(tmp_path / "half.zarr", capsys, [], ["encodings"])
