"""Exact scaled-integer encoding of binary floats, vectorised over NumPy arrays.

Every finite float is ``m * 2**q`` exactly (an integer significand ``m`` and an exponent ``q``),
so ``round_half_even(x * 10**e)`` is ``round_half_even(m * 5**e * 2**(q + e))``: a product of
integers, then a binary shift with banker's rounding. Both are done here in fixed-width
multi-limb integers (base 2**32 limbs in ``uint64`` lanes, so a limb product never overflows),
vectorised over elements; the only Python loops run over limbs (a handful) and over the
distinct shift amounts (at most a few hundred, one per binary exponent present), never over
elements. Hand-written because neither NumPy nor any maintained package does exact
arbitrary-precision scaling of float arrays: ``decimal`` and ``fractions`` are per element,
and ``decimal``'s default 28-digit context is not exact at scale 32 (issue 8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

LIMB_BITS = 32
_MASK = np.uint64((1 << LIMB_BITS) - 1)


@dataclass(frozen=True)
class FloatFormat:
    """An IEEE-style binary format: exponent and fraction bit counts, and its unsigned view."""

    name: str
    exponent_bits: int
    fraction_bits: int
    default_scale: int

    @property
    def bias(self) -> int:
        return (1 << (self.exponent_bits - 1)) - 1

    @property
    def largest(self) -> Fraction:
        """The largest finite value, exactly."""
        significand = (1 << (self.fraction_bits + 1)) - 1
        return Fraction(significand) * Fraction(2) ** (self.bias - self.fraction_bits)

    def limbs(self, exponent: int) -> int:
        """Limbs holding ``round(largest * 10**exponent)`` (rounding may add one bit)."""
        return math.ceil((math.floor(self.largest * 10**exponent).bit_length() + 1) / LIMB_BITS)


FORMATS = {
    "float32": FloatFormat("float32", 8, 23, 32),
    "float16": FloatFormat("float16", 5, 10, 16),
    "bfloat16": FloatFormat("bfloat16", 8, 7, 16),
}


def decompose(bits: np.ndarray, fmt: FloatFormat) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(negative, significand m, binary exponent q, finite) with |x| = m * 2**q, from the raw bits."""
    bits = bits.astype(np.uint64)
    exponent_field = (bits >> np.uint64(fmt.fraction_bits)) & np.uint64((1 << fmt.exponent_bits) - 1)
    fraction = bits & np.uint64((1 << fmt.fraction_bits) - 1)
    normal = exponent_field != 0
    significand = np.where(normal, fraction | np.uint64(1 << fmt.fraction_bits), fraction)
    offset = fmt.bias + fmt.fraction_bits
    exponent = np.where(normal, exponent_field.astype(np.int64) - offset, 1 - offset)
    negative = ((bits >> np.uint64(fmt.exponent_bits + fmt.fraction_bits)) & np.uint64(1)).astype(bool)
    finite = exponent_field != (1 << fmt.exponent_bits) - 1
    return negative, significand, exponent, finite


def scaled_magnitudes(significand: np.ndarray, exponent: np.ndarray, decimal_exponent: int,
                      n_limbs: int) -> np.ndarray:
    """(n, n_limbs) uint32 limbs of round_half_even(m * 10**e * 2**q), little-endian.

    Elements are sorted once by their shift ``t = q + e`` (a radix sort: shifts fit in 16 bits),
    so each shift's elements are one contiguous slice. For ``t >= 0`` the result is exact,
    ``m * (5**e * 2**t)``: one multiplication by a constant. For ``t < 0`` it is
    ``m * 5**e`` shifted right by ``-t`` with banker's rounding.
    """
    shifts = (exponent + decimal_exponent).astype(np.int16)
    order = np.argsort(shifts, kind="stable")
    significand, shifts = significand[order], shifts[order]
    values, starts = np.unique(shifts, return_index=True)
    ends = [*starts[1:].tolist(), shifts.shape[0]]
    result = np.zeros((significand.shape[0], n_limbs), np.uint32)
    five_power = 5**decimal_exponent
    for shift, start, end in zip(values.tolist(), starts.tolist(), ends):
        block = significand[start:end]
        if shift >= 0:
            _times_constant_into(result[start:end], block, five_power << shift)
        else:
            result[start:end] = _round_right(_times_constant(block, five_power), -shift, n_limbs)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.shape[0])
    return np.take(result, inverse, axis=0)  # np.take: far faster than fancy row indexing


def _times_constant_into(out: np.ndarray, values: np.ndarray, constant: int) -> None:
    """``out = values * constant`` exactly, into zeroed uint32 limbs (values < 2**31)."""
    limbs = _to_limbs(constant)
    first = next(index for index, limb in enumerate(limbs) if limb)  # low limbs of 2**t are zero
    carry = np.zeros(values.shape[0], np.uint64)
    for index in range(first, min(len(limbs) + 1, out.shape[1])):
        limb = limbs[index] if index < len(limbs) else 0
        partial = values * np.uint64(limb) + carry
        out[:, index] = partial & _MASK
        carry = partial >> np.uint64(LIMB_BITS)


def _times_constant(values: np.ndarray, constant: int) -> np.ndarray:
    """(n, limbs) of ``values * constant`` for values < 2**31: one limb product per constant limb."""
    constant_limbs = _to_limbs(constant)
    product = np.zeros((values.shape[0], len(constant_limbs) + 1), np.uint64)
    carry = np.zeros(values.shape[0], np.uint64)
    for index, limb in enumerate(constant_limbs):
        partial = values * np.uint64(limb) + carry  # < 2**31 * 2**32 + 2**31: fits in 64 bits
        product[:, index] = partial & _MASK
        carry = partial >> np.uint64(LIMB_BITS)
    product[:, -1] = carry
    return product


def _to_limbs(number: int) -> list[int]:
    limbs = []
    while True:
        limbs.append(number & ((1 << LIMB_BITS) - 1))
        number >>= LIMB_BITS
        if not number:
            return limbs


def _round_right(block: np.ndarray, shift: int, n_limbs: int) -> np.ndarray:
    """``block / 2**shift`` rounded half to even, in ``n_limbs`` limbs."""
    width = block.shape[1]
    padded = np.concatenate([block, np.zeros((block.shape[0], n_limbs + 1), np.uint64)], axis=1)
    limb_shift, bit_shift = divmod(shift, LIMB_BITS)
    out = np.zeros((block.shape[0], n_limbs), np.uint64)
    for index in range(n_limbs):
        source = index + limb_shift
        if source < width:
            out[:, index] = padded[:, source] >> np.uint64(bit_shift)
            if bit_shift:
                out[:, index] |= (padded[:, source + 1] << np.uint64(LIMB_BITS - bit_shift)) & _MASK
    round_up = _round_bit(padded, shift, width) & (_sticky(padded, shift, width) | (out[:, 0] & np.uint64(1)) > 0)
    return _add_one(out, round_up)


def _round_bit(padded: np.ndarray, shift: int, width: int) -> np.ndarray:
    """Bit ``shift - 1``: the first bit shifted out (worth half a unit of the result)."""
    limb, bit = divmod(shift - 1, LIMB_BITS)
    if limb >= width:
        return np.zeros(padded.shape[0], bool)
    return ((padded[:, limb] >> np.uint64(bit)) & np.uint64(1)).astype(bool)


def _sticky(padded: np.ndarray, shift: int, width: int) -> np.ndarray:
    """Whether any bit below ``shift - 1`` is set (then the remainder is above half)."""
    limb, bit = divmod(shift - 1, LIMB_BITS)
    if limb >= width:
        return np.any(padded[:, :width] != 0, axis=1)
    below = np.any(padded[:, :limb] != 0, axis=1) if limb else np.zeros(padded.shape[0], bool)
    return below | ((padded[:, limb] & np.uint64((1 << bit) - 1)) != 0)


def _add_one(limbs: np.ndarray, where: np.ndarray) -> np.ndarray:
    carry = where.astype(np.uint64)
    for index in range(limbs.shape[1]):
        total = limbs[:, index] + carry
        limbs[:, index] = total & _MASK
        carry = total >> np.uint64(LIMB_BITS)
    return limbs


def scaled_to_float64(magnitude: np.ndarray, decimal_exponent: int) -> np.ndarray:
    """``integer / 10**e`` in float64 (relative error a few 2**-53), for any e and integer size.

    The integer is its top three limbs (96 bits) times ``2**(32 * j)``, and ``1 / 10**e`` is
    ``5**-e * 2**-e``: the power of two is applied last, exactly (``ldexp``), so neither the
    integer (up to 2**1400) nor ``10**e`` ever has to fit in a float64.
    """
    limbs = magnitude.reshape(-1, magnitude.shape[-1]).astype(np.float64)
    nonzero = limbs != 0
    top = np.where(nonzero.any(axis=1), limbs.shape[1] - 1 - np.argmax(nonzero[:, ::-1], axis=1), 0)
    lowest = np.maximum(top - 2, 0)
    padded = np.concatenate([limbs, np.zeros((limbs.shape[0], 2))], axis=1)
    rows = np.arange(limbs.shape[0])
    mantissa = sum(padded[rows, lowest + i] * float(1 << (LIMB_BITS * i)) for i in range(3))
    fifth_power = float(Fraction(1, 5**decimal_exponent))
    value = np.ldexp(mantissa * fifth_power, LIMB_BITS * lowest - decimal_exponent)
    return value.reshape(magnitude.shape[:-1])


def limbs_to_python(magnitude: np.ndarray) -> np.ndarray:
    """The limbs' value as exact Python ints (an object array: for checking and interop only)."""
    total = np.zeros(magnitude.shape[:-1], object)
    for index in range(magnitude.shape[-1] - 1, -1, -1):
        total = total * (1 << LIMB_BITS) + magnitude[..., index].astype(np.int64).astype(object)
    return np.asarray(total, dtype=object).reshape(magnitude.shape[:-1])  # a 0-d result stays an array
