"""Hypercube views: the least-padded uniform shape, the layer map, and every recovery mapping.

All layers are flattened in C order and concatenated in layer order into N values. The cube
has k equal dimensions of size d; the N real values come first, then ``d**k - N`` padding
values copied from real values chosen with a seeded generator. Everything here is metadata
and index arithmetic: no value is copied (``cube_view`` builds a lazy dask array).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from store import InputError


class CubeError(InputError):
    """A hypercube that cannot be built as asked (bad dimension range, nothing to shape)."""


def shape_for(n: int, min_dim: int = 4, max_dim: int = 10, num_dims: int | None = None) -> tuple[int, ...]:
    """The uniform shape ``(d,) * k`` holding ``n`` values with the least padding ``d**k - n``.

    For each d in [min_dim, max_dim], k is the smallest with ``d**k >= n`` (or ``num_dims`` when
    given). Ties in padding go to the smaller d (more, smaller dimensions), as the reference
    tool's search does: 60 values give (4, 4, 4), not (8, 8), both 64 with 4 padding values.
    """
    _check_range(n, min_dim, max_dim, num_dims)
    candidates = []
    for size in range(min_dim, max_dim + 1):
        k = num_dims if num_dims is not None else _smallest_power(size, n)
        if size**k >= n:
            candidates.append((size**k - n, size, k))
    if not candidates:
        raise CubeError(f"no size from {min_dim} to {max_dim} reaches {n:,} values in {num_dims} dimensions "
                        f"({max_dim}**{num_dims} = {max_dim**num_dims:,}); raise --max_dim or --num_dims")
    _, size, k = min(candidates)
    return (size,) * k


def _smallest_power(size: int, n: int) -> int:
    k, total = 1, size
    while total < n:
        k, total = k + 1, total * size
    return k


def _check_range(n: int, min_dim: int, max_dim: int, num_dims: int | None) -> None:
    if n < 1:
        raise CubeError(f"a hypercube needs at least one value, got {n}")
    if min_dim < 2:
        raise CubeError(f"min_dim must be at least 2, got {min_dim}; pass e.g. --min_dim 4")
    if min_dim > max_dim:
        raise CubeError(f"min_dim ({min_dim}) is larger than max_dim ({max_dim}); pass min_dim <= max_dim")
    if num_dims is not None and num_dims < 1:
        raise CubeError(f"num_dims must be at least 1, got {num_dims}")


@dataclass(frozen=True)
class CubeLayout:
    """Where each value of the cube comes from: the layer map, the padding sources."""

    dims: tuple[int, ...]
    layer_names: tuple[str, ...]
    layer_shapes: tuple[tuple[int, ...], ...]
    pad_source: np.ndarray  # (d**k - N,) flat index of the real value each padding value copies
    pad_seed: int

    @property
    def offsets(self) -> np.ndarray:
        """Flat index of each layer's first value (then N, the end of the last)."""
        sizes = [int(np.prod(shape)) for shape in self.layer_shapes]
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    @property
    def n_real(self) -> int:
        return int(self.offsets[-1])

    @property
    def size(self) -> int:
        return int(np.prod(self.dims))

    def layer_map(self) -> list[dict[str, Any]]:
        """One entry per layer: name, flat_offset, flat_end, original_shape (the reference tool's fields)."""
        offsets = self.offsets.tolist()
        return [{"layer": name, "flat_offset": offsets[i], "flat_end": offsets[i + 1], "original_shape": list(shape)}
                for i, (name, shape) in enumerate(zip(self.layer_names, self.layer_shapes))]

    # -- recovery, vectorised over arrays of indices ------------------------------------------

    def coords_to_flat(self, coords: Any) -> np.ndarray:
        return np.ravel_multi_index(tuple(np.asarray(c) for c in coords), self.dims)

    def flat_to_coords(self, flat: Any) -> tuple[np.ndarray, ...]:
        return np.unravel_index(np.asarray(flat), self.dims)

    def is_padding(self, flat: Any) -> np.ndarray:
        return np.asarray(flat) >= self.n_real

    def source_of(self, flat: Any) -> np.ndarray:
        """The real flat index whose value sits at ``flat`` (itself, or the one a padding value copies)."""
        flat = np.asarray(flat, np.int64)
        padding = flat >= self.n_real
        sources = self.pad_source[np.where(padding, flat - self.n_real, 0)] if self.pad_source.size else flat
        return np.where(padding, sources, flat)

    def flat_to_layer(self, flat: Any) -> tuple[np.ndarray, np.ndarray]:
        """(layer number, flat position within that layer) of real flat indices; padding is an error."""
        flat = np.asarray(flat, np.int64)
        if np.any((flat < 0) | (flat >= self.n_real)):
            raise CubeError(f"flat indices must be real values 0..{self.n_real - 1}; padding has no layer "
                            "(use source_of to find the value a padding position copies)")
        layer = np.searchsorted(self.offsets, flat, side="right") - 1
        return layer, flat - self.offsets[layer]

    def layer_to_flat(self, layer: Any, position: Any) -> np.ndarray:
        layer, position = np.asarray(layer, np.int64), np.asarray(position, np.int64)
        sizes = np.diff(self.offsets)
        if np.any((layer < 0) | (layer >= len(self.layer_names))) or np.any((position < 0) | (position >= sizes[layer])):
            raise CubeError("a (layer, position) pair lies outside the layers of this cube")
        return self.offsets[layer] + position

    def unravel_in_layer(self, layer: int, position: Any) -> tuple[np.ndarray, ...]:
        """Multi-dimensional index, in the layer's original shape, of flat positions within it."""
        return np.unravel_index(np.asarray(position), self.layer_shapes[layer])

    def ravel_in_layer(self, layer: int, index: Any) -> np.ndarray:
        return np.ravel_multi_index(tuple(np.asarray(i) for i in index), self.layer_shapes[layer])


def plan_cube(layer_names: list[str], layer_shapes: list[tuple[int, ...]], min_dim: int = 4, max_dim: int = 10,
              num_dims: int | None = None, pad_seed: int = 42) -> CubeLayout:
    """The layout of a cube over these layers: shape, and padding sources drawn with ``pad_seed``."""
    n_real = int(sum(int(np.prod(shape)) for shape in layer_shapes))
    dims = shape_for(n_real, min_dim, max_dim, num_dims)
    padding = int(np.prod(dims)) - n_real
    sources = np.random.default_rng(pad_seed).integers(0, n_real, size=padding, dtype=np.int64)
    return CubeLayout(dims, tuple(layer_names), tuple(tuple(int(s) for s in shape) for shape in layer_shapes),
                      sources, pad_seed)


def cube_view(layers: list[Any], layout: CubeLayout, trailing: tuple[int, ...] = ()) -> Any:
    """The k-dimensional lazy view over ``layers`` (dask or NumPy arrays; never copied).

    ``trailing`` axes (e.g. the limbs of an integer encoding) stay at the end of every value.
    """
    import dask.array as da

    flat = da.concatenate([da.asarray(layer).reshape((-1, *trailing)) for layer in layers], axis=0)
    if layout.pad_source.size:
        flat = da.concatenate([flat, flat[layout.pad_source]], axis=0)
    return flat.reshape((*layout.dims, *trailing), merge_chunks=True)
