"""``python -m builders.hypercube``: least-padded hypercube views of stored encodings or captures.

All layers of one capture are flattened in C order and concatenated in layer order into N
values; the cube is ``(d,) * k`` with the least padding ``d**k - N`` for d in
[min_dim, max_dim] (``shape_for``). Padding copies real values chosen with ``--pad_seed``.
The store keeps only the layout (group ``hypercubes``): ``open_view`` reads it back as a
lazy k-dimensional dask array over the source's data, never copied; ``--materialize`` also
stores a copy. ``CubeLayout`` maps between cube coordinates, flat indices and (layer,
position), vectorised.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from builders._cli import run_cli
from builders._cube import CubeError, CubeLayout, cube_view, plan_cube, shape_for
from builders._item_configs import HypercubeConfig
from builders._item_pass import source_items, write_models
from builders._npy_export import export_hypercube, file_stem
from store import (
    HYPERCUBES_GROUP,
    Lease,
    StoreLocation,
    check_output_path,
    item_path,
    open_item,
    prepare_group,
    write_item,
)

__all__ = ["CubeError", "CubeLayout", "cube_view", "layout_of", "main", "open_view", "plan_cube", "shape_for"]
DESCRIPTION = __doc__.split("\n\n")[0] if __doc__ else ""
_VALUES = {"encodings": ("magnitude", "negative"), "captures": ("hidden_state",)}


def layout_dataset(layout: CubeLayout, source_group: str, source: str) -> xr.Dataset:
    """The stored form of a view: the layer map and padding sources as small arrays, the rest attrs."""
    offsets = layout.offsets
    return xr.Dataset(
        {"pad_source": (("pad",), layout.pad_source),
         "layer_offset": (("layer",), offsets[:-1]), "layer_end": (("layer",), offsets[1:]),
         "layer_shape": (("layer", "axis"), np.array(layout.layer_shapes, np.int64))},
        coords={"layer": np.array(layout.layer_names, dtype=object)},
        attrs={"dimensions": list(layout.dims), "total_real_elements": layout.n_real, "total_size": layout.size,
               "padding": layout.size - layout.n_real, "pad_seed": layout.pad_seed,
               "source_group": source_group, "source": source,
               "order": "layers flattened in C order, concatenated in layer order; then padding"})


def layout_of(stored: xr.Dataset) -> CubeLayout:
    """The ``CubeLayout`` of a stored view."""
    shapes = tuple(tuple(int(s) for s in row) for row in stored["layer_shape"].values)
    return CubeLayout(tuple(stored.attrs["dimensions"]), tuple(str(x) for x in stored["layer"].values), shapes,
                      stored["pad_source"].values.astype(np.int64), int(stored.attrs["pad_seed"]))


def views_group(source: str) -> str:
    """Where the views of a source group live: ``hypercubes/encodings`` or ``hypercubes/captures``."""
    return f"{HYPERCUBES_GROUP}/{source}"


def open_view(store: str, label: str, capture: int = 0, source: str = "encodings",
              storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The cube of one capture as lazy dask arrays (name -> array: ``magnitude`` (with a trailing limb
    axis) and ``negative`` for an encoding, ``hidden_state`` for a capture); nothing is read yet."""
    location = StoreLocation(store, storage_options or {})
    stored = open_item(location, item_path(views_group(source), label, capture))
    layout = layout_of(stored)
    source = open_item(location, stored.attrs["source"])
    return {name: _view(source[name], layout) for name in _VALUES[stored.attrs["source_group"]]}


def _view(variable: xr.DataArray, layout: CubeLayout) -> Any:
    data = variable.data
    trailing = tuple(variable.shape[3:])  # the limbs of an encoding
    return cube_view([data[i] for i in range(variable.shape[0])], layout, trailing)


def run(config: HypercubeConfig) -> int:
    location = StoreLocation(config.store, config.storage_options)
    if config.export:
        check_output_path(config.export[1], "export folder", folder=True)
    how = "encode with python -m builders.integers" if config.source == "encodings" else "capture"
    work = source_items(location, config.source, config.model, how)
    # every item opened and planned once, before anything is written (a shape that cannot be made fails here)
    sources = {path: open_item(location, path) for items in work.values() for path in items.values()}
    layouts = {path: _plan(source, config) for path, source in sources.items()}
    write_models(location, views_group(config.source), work, "hypercube",
                 lambda label, items, lease: _model_views(location, config, label, items, lease, sources, layouts))
    print(f"Wrote {sum(len(items) for items in work.values())} hypercube view(s) into {location.display()} "
          f"(group {views_group(config.source)!r}); read one with builders.hypercube.open_view.")
    return 0


def _plan(source: xr.Dataset, config: HypercubeConfig) -> CubeLayout:
    values = source[_VALUES["encodings" if "magnitude" in source else "captures"][-1]]
    shape = tuple(int(s) for s in values.shape[1:3])
    names = [str(layer) for layer in source["layer"].values]
    return plan_cube(names, [shape] * len(names), config.min_dim, config.max_dim, config.num_dims or None,
                     config.pad_seed)


def _model_views(location: StoreLocation, config: HypercubeConfig, label: str, items: dict[int, str],
                 lease: Lease, sources: dict[str, xr.Dataset], layouts: dict[str, CubeLayout]) -> None:
    group = views_group(config.source)
    for index, source_path in tqdm(sorted(items.items()), desc=f"hypercube {label}", disable=not config.progress):
        source, layout = sources[source_path], layouts[source_path]
        dataset = layout_dataset(layout, config.source, source_path)
        if config.materialize:
            dataset = dataset.assign({name: (_cube_dims(layout, name), _view(source[name], layout).rechunk("auto"))
                                      for name in _VALUES[config.source]})
        lease.ensure_held()
        prepare_group(location, group, label, {})
        path = item_path(group, label, index)
        write_item(location, path, dataset)
        if config.export:
            _export(location, path, source, Path(config.export[1]).expanduser(), index)


def _cube_dims(layout: CubeLayout, name: str) -> tuple[str, ...]:
    return tuple(f"cube_{i}" for i in range(len(layout.dims))) + (("limb",) if name == "magnitude" else ())


def _export(location: StoreLocation, path: str, source: xr.Dataset, folder: Path, index: int) -> None:
    stored = open_item(location, path)
    layout = layout_of(stored)
    source_group, label = path.split("/")[1:3]
    views = open_view(location.url, label, index, source_group, location.storage_options)
    if "magnitude" in views:
        from builders._exact import limbs_to_python

        magnitude = limbs_to_python(np.asarray(views["magnitude"]))
        cube = np.where(np.asarray(views["negative"]), -magnitude, magnitude)
    else:
        cube = np.asarray(views["hidden_state"])
    metadata = {"hypercube": {"dimensions": list(layout.dims), "total_real_elements": layout.n_real,
                              "total_size": layout.size, "padding": layout.size - layout.n_real,
                              "pad_seed": layout.pad_seed, "pad_source_indices": layout.pad_source.tolist()},
                "layer_map": [{**entry, "original_shape": [1, *entry["original_shape"]]}  # the reference's batch axis
                              for entry in layout.layer_map()]}
    name = file_stem(str(source.attrs.get("model_name", label)))
    export_hypercube(folder / f"{name}_int_activations_{index:04d}_hypercube", cube, metadata)


def main(argv: list[str] | None = None) -> int:
    return run_cli(HypercubeConfig, argv, "python -m builders.hypercube", DESCRIPTION, run)

if __name__ == "__main__":
    sys.exit(main())
