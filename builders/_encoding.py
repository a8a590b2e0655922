"""The public exact-integer API: ``encode``, ``to_python_ints``, ``decode`` (re-exported by builders.integers).

An encoding holds ``round_half_even(x * 10**e)`` for every value ``x`` as fixed-width unsigned
limbs (``magnitude``, uint32, little-endian base 2**32 along the last axis) plus a sign
(``negative``, bool: set for every negative input, -0.0 included, so the sign of a value that
rounds to 0 survives). Any Zarr or NumPy reader decodes it: the integer is
``(-1)**negative * sum(magnitude[..., j] * 2**(32 * j))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from builders._exact import (
    FORMATS,
    FloatFormat,
    decompose,
    limbs_to_python,
    scaled_magnitudes,
    scaled_to_float64,
)
from store import InputError, effective_exponent

FORMULA = "integer = round_half_even(x * 10**exponent), on the exact binary value of x"
REVERSE = "x ~= integer / 10**exponent, rounded to the source dtype (exact when 10**-exponent <= ulp(x) / 4)"


class EncodingError(InputError):
    """Input the encoding refuses: NaN or infinite values, a bad scale or quantize setting."""


@dataclass(frozen=True)
class Encoded:
    """Exact scaled integers of an array of floats (see the module docstring for the layout)."""

    magnitude: np.ndarray  # (*shape, limbs) uint32
    negative: np.ndarray  # (*shape,) bool
    exponent: int  # e: the integer is x * 10**e
    scale_factor: int
    quantize: float
    source_dtype: str  # float32, float16 or bfloat16

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.negative.shape)

    def attrs(self) -> dict[str, Any]:
        """Everything needed to read or reverse the encoding, for a store's attributes."""
        return {"formula": FORMULA, "reverse": REVERSE, "exponent": self.exponent,
                "scale_factor": self.scale_factor, "quantize": self.quantize,
                "truncated_digits": self.scale_factor - self.exponent, "source_dtype": self.source_dtype,
                "limb_bits": 32, "limbs": int(self.magnitude.shape[-1]),
                "layout": "integer = (-1)**negative * sum(magnitude[..., j] * 2**(32 * j))"}


def float_bits(array: Any, source_dtype: str | None = None) -> tuple[np.ndarray, FloatFormat]:
    """The raw bits of a float array (NumPy, ml_dtypes or torch) and its format.

    ``source_dtype="bfloat16"`` reads float32 values that are exactly bfloat16 (as captures
    store bfloat16 models' states) by their upper 16 bits.
    """
    if hasattr(array, "detach"):  # a torch tensor: bfloat16 has no NumPy dtype of its own
        array = _torch_to_numpy(array)
        source_dtype = source_dtype or ("bfloat16" if array.dtype == np.uint16 else None)
    array = np.asarray(array)
    name = source_dtype or array.dtype.name
    if name not in FORMATS:
        raise EncodingError(f"cannot encode dtype {name!r}; encode float32, float16 or bfloat16 values")
    return _bits_of(array, name), FORMATS[name]


def _torch_to_numpy(tensor: Any) -> np.ndarray:
    import torch

    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


def _bits_of(array: np.ndarray, name: str) -> np.ndarray:
    if name == "bfloat16" and array.dtype == np.float32:
        bits = array.view(np.uint32)
        if np.any(bits & np.uint32(0xFFFF)):
            raise EncodingError("values given as bfloat16 are not all exactly bfloat16; pass the float32 "
                                "dtype or the bfloat16 tensor itself")
        return (bits >> np.uint32(16)).astype(np.uint16)
    if name == "bfloat16" and array.dtype in (np.uint16, np.int16):
        return array.view(np.uint16)
    if array.dtype.name == "bfloat16":  # ml_dtypes
        return array.view(np.uint16)
    if array.dtype.name != name:
        raise EncodingError(f"array of dtype {array.dtype.name!r} cannot be read as {name!r}")
    return array.view(np.uint32 if name == "float32" else np.uint16)


def check_settings(scale_factor: int, quantize: float) -> None:
    if isinstance(scale_factor, bool) or not isinstance(scale_factor, int) or not 0 <= scale_factor <= 400:
        raise EncodingError(f"scale_factor must be a whole number from 0 to 400, got {scale_factor!r}")
    if isinstance(quantize, bool) or not isinstance(quantize, (int, float)) or not 0 <= quantize <= 100:
        raise EncodingError(f"quantize must be a percentage from 0 to 100, got {quantize!r}")


def encode(array: Any, scale_factor: int | None = None, quantize: float = 0,
           source_dtype: str | None = None) -> Encoded:
    """Exact ``round_half_even(x * 10**e)`` of every value, ``e = scale_factor - floor(scale_factor * quantize / 100)``.

    ``scale_factor`` defaults to 32 for float32 and 16 for float16 and bfloat16. NaN and
    infinities are refused with the position of the first one.
    """
    bits, fmt = float_bits(array, source_dtype)
    scale_factor = fmt.default_scale if scale_factor is None else scale_factor
    check_settings(scale_factor, quantize)
    exponent = effective_exponent(scale_factor, quantize)
    negative, significand, binary_exponent, finite = decompose(bits.reshape(-1), fmt)
    _check_finite(finite, bits.shape)
    n_limbs = fmt.limbs(exponent)
    magnitude = scaled_magnitudes(significand, binary_exponent, exponent, n_limbs)
    return Encoded(magnitude.reshape(*bits.shape, n_limbs), negative.reshape(bits.shape), exponent, scale_factor,
                   float(quantize), fmt.name)


def _check_finite(finite: np.ndarray, shape: tuple[int, ...]) -> None:
    bad = np.flatnonzero(~finite)
    if bad.size:
        where = tuple(int(i) for i in np.unravel_index(int(bad[0]), shape))
        raise EncodingError(f"{bad.size:,} value(s) are NaN or infinite (the first at index {where}); "
                            "they have no integer encoding: remove or replace them first")


def to_python_ints(encoded: Encoded) -> np.ndarray:
    """The exact integers as an object array of Python ints (for checking and interop)."""
    values = limbs_to_python(encoded.magnitude).reshape(-1)  # object arrays throughout: no int64 overflow
    negative = encoded.negative.reshape(-1)
    values[negative] = -values[negative]
    return values.reshape(encoded.shape)


def decode(encoded: Encoded) -> np.ndarray:
    """Back to floats of the source dtype (bfloat16 values come back in float32).

    Exact (the original value) wherever the quantum ``10**-e`` is at most a quarter of the
    value's own spacing (ulp); below that the quantum hides low bits: e.g. float32 at e = 32
    for |x| under about 3.4e-25, and quantize settings that drop digits the value has.
    """
    approximate = scaled_to_float64(encoded.magnitude, encoded.exponent)
    signed = np.where(encoded.negative, -approximate, approximate)
    if encoded.source_dtype == "bfloat16":
        return _nearest_bfloat16(signed)
    return signed.astype(encoded.source_dtype)


def _nearest_bfloat16(values: np.ndarray) -> np.ndarray:
    """Round float64 values to bfloat16 once (float64 -> float32 -> bfloat16 would round twice)."""
    as_float32 = values.astype(np.float32)
    bits = as_float32.view(np.uint32)
    below = (bits & np.uint32(0xFFFF0000)).view(np.float32)
    above = ((bits & np.uint32(0xFFFF0000)) + np.uint32(0x10000)).view(np.float32)
    exact = (bits & np.uint32(0xFFFF)) == 0
    distance_below = np.abs(values - below.astype(np.float64))
    distance_above = np.abs(values - above.astype(np.float64))
    even_below = ((bits >> np.uint32(16)) & np.uint32(1)) == 0
    choose_below = (distance_below < distance_above) | ((distance_below == distance_above) & even_below)
    return np.where(exact | choose_below, below, above)
