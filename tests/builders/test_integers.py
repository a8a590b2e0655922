"""builders.integers: exact scaled integers of float32, float16 and bfloat16 values, and its CLI.

The reference is ``fractions.Fraction``: ``round(Fraction(x) * 10**e)`` is exact and rounds half
to even. Inputs are drawn as raw bit patterns, so every finite value of each format (signed
zeros, subnormals, the largest values) can turn up.

``INTEGERS_PROPERTY_EXAMPLES=2000 python -m pytest tests/builders/test_integers.py`` explores
further than the default, which keeps the file to a few seconds.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from small_stores import copy_store, tree_digest

from builders.integers import Encoded, EncodingError, decode, encode, main, to_python_ints
from store import InputError, StoreLocation, complete_items, item_path, open_item, prepare_group, write_item

EXAMPLES = int(os.environ.get("INTEGERS_PROPERTY_EXAMPLES", "120"))
EXPLORE = settings(max_examples=EXAMPLES, deadline=None)

SCALE_FACTORS = (0, 1, 16, 32, 40)
QUANTIZE = (0, 25, 50, 100, 12.5)

# ---- the binary formats, written out from IEEE 754 (not read from the code under test) -----------


@dataclass(frozen=True)
class BinaryFormat:
    name: str
    width: int
    exponent_bits: int
    fraction_bits: int

    @property
    def bias(self) -> int:
        return (1 << (self.exponent_bits - 1)) - 1

    @property
    def sign_bit(self) -> int:
        return 1 << (self.width - 1)

    @property
    def exponent_field_max(self) -> int:
        return (1 << self.exponent_bits) - 1

    def exponent_field(self, bits: int) -> int:
        return (bits >> self.fraction_bits) & self.exponent_field_max

    def is_finite(self, bits: int) -> bool:
        return self.exponent_field(bits) != self.exponent_field_max

    def ulp(self, bits: int) -> Fraction:
        """The spacing of the format at this value (the weight of its last fraction bit)."""
        return Fraction(2) ** (max(self.exponent_field(bits), 1) - self.bias - self.fraction_bits)

    def edge_patterns(self) -> list[int]:
        fraction_mask = (1 << self.fraction_bits) - 1
        largest = ((self.exponent_field_max - 1) << self.fraction_bits) | fraction_mask
        one = self.bias << self.fraction_bits
        magnitudes = [0, 1, fraction_mask, 1 << self.fraction_bits, largest, largest - 1, one, one + 1, one - 1]
        return magnitudes + [self.sign_bit | bits for bits in magnitudes]


FLOAT32 = BinaryFormat("float32", 32, 8, 23)
FLOAT16 = BinaryFormat("float16", 16, 5, 10)
BFLOAT16 = BinaryFormat("bfloat16", 16, 8, 7)


def finite_patterns(fmt: BinaryFormat) -> st.SearchStrategy[np.ndarray]:
    """Arrays of raw bit patterns of finite values: anything, plus zeros, subnormals and extremes."""
    anything = st.integers(0, (1 << fmt.width) - 1).filter(fmt.is_finite)
    element = st.one_of(anything, st.sampled_from(fmt.edge_patterns()))
    unsigned = np.uint32 if fmt.width == 32 else np.uint16
    return st.lists(element, min_size=1, max_size=40).map(lambda bits: np.array(bits, unsigned))


def float_values(bits: np.ndarray, fmt: BinaryFormat) -> np.ndarray:
    """The values of raw bit patterns: float32 / float16, or float32 holding the bfloat16 values."""
    if fmt is BFLOAT16:
        return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return bits.view(np.float32 if fmt is FLOAT32 else np.float16)


def bfloat16_tensor(bits: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(bits.astype(np.uint16).view(np.int16).copy()).view(torch.bfloat16)


# ---- references ------------------------------------------------------------------------------------


def reference_exponent(scale_factor: int, quantize: float) -> int:
    return scale_factor - math.floor(Fraction(scale_factor) * Fraction(quantize) / 100)


def exact_integers(values: np.ndarray, exponent: int) -> list[int]:
    """round_half_even(x * 10**e) of each value, on Fractions (Python's round is half-to-even)."""
    return [round(Fraction(float(value)) * 10**exponent) for value in values.reshape(-1)]


def integers_from_limbs(encoded: Encoded) -> list[int]:
    """The documented layout read by hand: (-1)**negative * sum(magnitude[..., j] * 2**(32 j))."""
    limbs = encoded.magnitude.reshape(-1, encoded.magnitude.shape[-1])
    signs = encoded.negative.reshape(-1)
    magnitudes = [sum(int(limb) << (32 * j) for j, limb in enumerate(row)) for row in limbs]
    return [-m if negative else m for m, negative in zip(magnitudes, signs)]


def decimal_method(value: float, exponent: int) -> int:
    """The replaced tool's method: Decimal arithmetic in the default 28-digit context."""
    with localcontext(Context(prec=28)):
        scaled = Decimal(float(value)) * Decimal(10) ** exponent
        return int(scaled.to_integral_value(rounding=ROUND_HALF_EVEN))


def sign_bits(bits: np.ndarray, fmt: BinaryFormat) -> np.ndarray:
    return (bits.astype(np.uint64) & np.uint64(fmt.sign_bit)) != 0


def check_encoding(encoded: Encoded, values: np.ndarray, bits: np.ndarray, fmt: BinaryFormat,
                   exponent: int) -> None:
    expected = exact_integers(values, exponent)
    assert encoded.exponent == exponent
    assert encoded.magnitude.dtype == np.uint32
    assert encoded.magnitude.shape[:-1] == values.shape
    assert encoded.negative.dtype == bool
    np.testing.assert_array_equal(encoded.negative, sign_bits(bits, fmt))
    assert integers_from_limbs(encoded) == expected
    assert to_python_ints(encoded).reshape(-1).tolist() == expected


# ---- the encoding equals exact rational arithmetic ---------------------------------------------------


@pytest.mark.parametrize("fmt", [FLOAT32, FLOAT16], ids=["float32", "float16"])
@EXPLORE
@given(data=st.data(), scale_factor=st.sampled_from(SCALE_FACTORS), quantize=st.sampled_from(QUANTIZE))
def test_encoding_is_exact_rational_arithmetic(fmt: BinaryFormat, data: st.DataObject, scale_factor: int,
                                               quantize: float) -> None:
    bits = data.draw(finite_patterns(fmt))
    values = float_values(bits, fmt)
    encoded = encode(values, scale_factor, quantize)
    check_encoding(encoded, values, bits, fmt, reference_exponent(scale_factor, quantize))
    assert encoded.source_dtype == values.dtype.name
    from_torch = encode(torch.from_numpy(values.copy()), scale_factor, quantize)
    assert integers_from_limbs(from_torch) == integers_from_limbs(encoded)


@EXPLORE
@given(finite_patterns(BFLOAT16), st.sampled_from(SCALE_FACTORS), st.sampled_from(QUANTIZE))
def test_bfloat16_encoding_is_exact_rational_arithmetic(bits: np.ndarray, scale_factor: int, quantize: float) -> None:
    values = float_values(bits, BFLOAT16)
    exponent = reference_exponent(scale_factor, quantize)
    from_tensor = encode(bfloat16_tensor(bits), scale_factor, quantize)
    from_float32 = encode(values, scale_factor, quantize, source_dtype="bfloat16")
    for encoded in (from_tensor, from_float32):
        check_encoding(encoded, values, bits, BFLOAT16, exponent)
        assert encoded.source_dtype == "bfloat16"


@EXPLORE
@given(st.integers(0, 400), st.one_of(st.integers(0, 100), st.sampled_from([12.5, 0.5, 99.5, 33.25])))
def test_exponent_is_scale_factor_less_the_dropped_digits(scale_factor: int, quantize: float) -> None:
    encoded = encode(np.array([1.0], np.float32), scale_factor, quantize)
    exponent = reference_exponent(scale_factor, quantize)
    assert (encoded.exponent, encoded.scale_factor, encoded.quantize) == (exponent, scale_factor, quantize)
    assert to_python_ints(encoded).tolist() == [10**exponent]


@pytest.mark.parametrize(("fmt", "dtype", "default_scale"), [(FLOAT32, "float32", 32), (FLOAT16, "float16", 16),
                                                          (BFLOAT16, "bfloat16", 16)])
def test_default_scale_factor_follows_the_dtype(fmt: BinaryFormat, dtype: str, default_scale: int) -> None:
    bits = np.array(fmt.edge_patterns(), np.uint32 if fmt.width == 32 else np.uint16)
    values = float_values(bits, fmt)
    encoded = encode(bfloat16_tensor(bits)) if fmt is BFLOAT16 else encode(values)
    assert (encoded.scale_factor, encoded.exponent) == (default_scale, default_scale)
    check_encoding(encoded, values, bits, fmt, default_scale)
    assert encoded.attrs()["exponent"] == default_scale and encoded.attrs()["source_dtype"] == dtype


TWO = Fraction(2)
EDGE_VALUES = {  # exact values from the IEEE 754 definitions of each format
    "float32 largest": (FLOAT32, (2 - TWO**-23) * TWO**127),
    "float32 smallest normal": (FLOAT32, TWO**-126),
    "float32 smallest subnormal": (FLOAT32, TWO**-149),
    "float32 largest subnormal": (FLOAT32, (1 - TWO**-23) * TWO**-126),
    "float16 largest": (FLOAT16, Fraction(65504)),
    "float16 smallest normal": (FLOAT16, TWO**-14),
    "float16 smallest subnormal": (FLOAT16, TWO**-24),
    "bfloat16 largest": (BFLOAT16, (2 - TWO**-7) * TWO**127),
    "bfloat16 smallest normal": (BFLOAT16, TWO**-126),
    "bfloat16 smallest subnormal": (BFLOAT16, TWO**-133),
}


def array_of(value: Fraction, fmt: BinaryFormat) -> np.ndarray:
    """A one-element array holding exactly ``value`` (bfloat16: as float32, used with source_dtype)."""
    array = np.array([float(value)], np.float16 if fmt is FLOAT16 else np.float32)
    assert Fraction(float(array[0])) == value  # the value is representable, so nothing was rounded
    return array


@pytest.mark.parametrize("case", sorted(EDGE_VALUES))
@pytest.mark.parametrize("scale_factor", [0, 1, 16, 32, 40, 400])
@pytest.mark.parametrize("sign", [1, -1])
def test_edge_values_encode_exactly(case: str, scale_factor: int, sign: int) -> None:
    fmt, magnitude = EDGE_VALUES[case]
    value = sign * magnitude
    encoded = encode(array_of(value, fmt), scale_factor, source_dtype=fmt.name)
    assert to_python_ints(encoded).tolist() == [round(value * 10**scale_factor)]
    assert encoded.negative.tolist() == [sign < 0]


def exact_array(value: float, dtype: str) -> np.ndarray | None:
    """``[value]`` in ``dtype`` (bfloat16: float32 holding it), or None where it is not representable."""
    array = np.array([value], np.float16 if dtype == "float16" else np.float32)
    if Fraction(float(array[0])) != Fraction(value):
        return None
    if dtype == "bfloat16" and array.view(np.uint32)[0] & 0xFFFF:
        return None
    return array


HALVES = [(0.5, 0), (1.5, 2), (2.5, 2), (3.5, 4), (-0.5, 0), (-1.5, -2), (-2.5, -2), (5.5, 6), (6.5, 6),
          (-3.5, -4), (2047.5, 2048), (2046.5, 2046), (4095.5, 4096), (-4094.5, -4094)]


@pytest.mark.parametrize(("value", "expected", "dtype"), [
    (value, expected, dtype) for dtype in ("float32", "float16", "bfloat16") for value, expected in HALVES
    if exact_array(value, dtype) is not None])
def test_exact_halves_round_to_even_at_exponent_zero(value: float, expected: int, dtype: str) -> None:
    encoded = encode(exact_array(value, dtype), 0, source_dtype=dtype)
    assert to_python_ints(encoded).tolist() == [expected]
    assert encoded.negative.tolist() == [value < 0]


@pytest.mark.parametrize(("value", "exponent", "expected"), [
    (0.25, 1, 2),  # 2.5 -> 2
    (0.75, 1, 8),  # 7.5 -> 8
    (0.125, 2, 12),  # 12.5 -> 12
    (0.375, 2, 38),  # 37.5 -> 38
    (-0.125, 2, -12),
    (2.0**-33, 32, (5**32 - 1) // 2),  # 5**32 / 2: (5**32 - 1) / 2 is even
    (2.0**-17, 16, (5**16 - 1) // 2),  # 5**16 / 2: (5**16 - 1) / 2 = 76293945312 is even
    (3 * 2.0**-17, 16, (3 * 5**16 + 1) // 2),  # 3 * 5**16 / 2: the odd neighbour below rounds up
])
def test_products_landing_exactly_on_a_half_round_to_even(value: float, exponent: int, expected: int) -> None:
    product = Fraction(value) * 10**exponent
    assert (product - Fraction(1, 2)).denominator == 1 and expected % 2 == 0 and abs(product - expected) == 0.5
    tried = 0
    for dtype in ("float32", "float16", "bfloat16"):
        array = exact_array(value, dtype)
        if array is not None:
            tried += 1
            assert to_python_ints(encode(array, exponent, source_dtype=dtype)).tolist() == [expected]
    assert tried >= 2


@pytest.mark.parametrize("layout", ["transposed", "strided", "fortran"])
def test_any_memory_layout_encodes_as_its_values(layout: str) -> None:
    base = np.random.default_rng(5).standard_normal((6, 8)).astype(np.float32)
    values = {"transposed": base.T, "strided": base[::2, 1::3], "fortran": np.asfortranarray(base)}[layout]
    encoded = encode(values, 32)
    assert encoded.shape == values.shape and encoded.negative.shape == values.shape
    assert np.asarray(to_python_ints(encoded)).reshape(-1).tolist() == exact_integers(values, 32)
    np.testing.assert_array_equal(decode(encoded), values)  # 10**-32 is far below a quarter ulp of these


@pytest.mark.parametrize("values", [np.array(-1.75, np.float32), np.array(3.0, np.float16)], ids=["float32", "float16"])
def test_a_zero_dimensional_array_gives_its_exact_integer(values: np.ndarray) -> None:
    encoded = encode(values, 32)
    assert encoded.shape == ()
    assert to_python_ints(encoded).tolist() == round(Fraction(float(values)) * 10**32)


@pytest.mark.parametrize("shape", [(0,), (2, 0)])
def test_an_empty_array_encodes_to_an_empty_encoding(shape: tuple[int, ...]) -> None:
    encoded = encode(np.zeros(shape, np.float32))
    assert encoded.magnitude.shape[:-1] == shape and encoded.negative.shape == shape
    assert to_python_ints(encoded).shape == shape
    assert decode(encoded).shape == shape


# ---- the defect the issue names: 28-digit decimal arithmetic is not exact at scale 32 --------------


def test_28_digit_decimal_differs_from_exact_arithmetic_where_ours_does_not() -> None:
    rng = np.random.default_rng(8)
    values = np.concatenate([rng.standard_normal(2000), rng.standard_normal(500) * 1e-3]).astype(np.float32)
    exact = exact_integers(values, 32)
    by_decimal = [decimal_method(value, 32) for value in values]
    differing = [i for i, (a, b) in enumerate(zip(by_decimal, exact)) if a != b]
    assert differing, "the 28-digit decimal method matched exact arithmetic on every value"
    assert to_python_ints(encode(values, 32)).tolist() == exact
    assert to_python_ints(encode(values[differing], 32)).tolist() == [exact[i] for i in differing]


# ---- decoding -------------------------------------------------------------------------------------


def decoded_bits(decoded: np.ndarray, fmt: BinaryFormat) -> np.ndarray:
    """Decoded values as raw patterns of the source format (bfloat16 comes back in float32)."""
    if fmt is BFLOAT16:
        as_bits = decoded.view(np.uint32)
        assert not np.any(as_bits & np.uint32(0xFFFF)), "decoded values are not bfloat16 values"
        return (as_bits >> np.uint32(16)).astype(np.uint16)
    return decoded.view(np.uint32 if fmt is FLOAT32 else np.uint16)


def exactly_decodable(bits: np.ndarray, fmt: BinaryFormat, exponent: int) -> np.ndarray:
    """Where the docs promise a bit-identical round trip: 10**-e <= ulp(x) / 4."""
    return np.array([Fraction(1, 10**exponent) <= fmt.ulp(int(b)) / 4 for b in bits], bool)


def encode_bits(bits: np.ndarray, fmt: BinaryFormat, scale_factor: int, quantize: float = 0) -> Encoded:
    if fmt is BFLOAT16:
        return encode(bfloat16_tensor(bits), scale_factor, quantize)
    return encode(float_values(bits, fmt), scale_factor, quantize)


ROUND_TRIP_SCALES = (0, 1, 16, 32, 40, 100, 200)


@EXPLORE
@given(st.sampled_from([FLOAT32, FLOAT16, BFLOAT16]).flatmap(
    lambda fmt: st.tuples(st.just(fmt), finite_patterns(fmt))), st.sampled_from(ROUND_TRIP_SCALES),
    st.sampled_from(QUANTIZE))
def test_decode_is_bit_identical_where_the_quantum_is_below_a_quarter_ulp(
        format_and_bits: tuple[BinaryFormat, np.ndarray], scale_factor: int, quantize: float) -> None:
    fmt, bits = format_and_bits
    encoded = encode_bits(bits, fmt, scale_factor, quantize)
    decoded = decode(encoded)
    assert decoded.dtype == (np.float16 if fmt is FLOAT16 else np.float32)
    assert decoded.shape == bits.shape
    promised = exactly_decodable(bits, fmt, encoded.exponent)
    np.testing.assert_array_equal(decoded_bits(decoded, fmt)[promised], bits[promised])


@pytest.mark.parametrize("fmt", [FLOAT32, FLOAT16, BFLOAT16], ids=lambda fmt: fmt.name)
def test_decode_restores_every_edge_value_at_a_fine_enough_scale(fmt: BinaryFormat) -> None:
    bits = np.array(fmt.edge_patterns(), np.uint32 if fmt.width == 32 else np.uint16)
    scale_factor = 60 if fmt is FLOAT16 else 200  # 10**-e below a quarter of the smallest subnormal
    assert exactly_decodable(bits, fmt, scale_factor).all()
    np.testing.assert_array_equal(decoded_bits(decode(encode_bits(bits, fmt, scale_factor)), fmt), bits)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("scale_factor", [300, 400])
def test_decode_is_exact_at_the_largest_scale_factors(scale_factor: int) -> None:
    values = np.array([np.finfo(np.float32).max, 1.0, -2.5], np.float32)
    assert exactly_decodable(values.view(np.uint32), FLOAT32, scale_factor).all()
    np.testing.assert_array_equal(decode(encode(values, scale_factor)).view(np.uint32), values.view(np.uint32))


def test_decode_is_not_exact_below_the_documented_limit() -> None:
    """float32 at e = 32: a value near 1e-30 keeps only three digits, the smallest subnormal none."""
    values = np.array([1.2345678e-30, 2.0**-149], np.float32)
    assert not exactly_decodable(values.view(np.uint32), FLOAT32, 32).any()
    encoded = encode(values, 32)
    assert to_python_ints(encoded).tolist() == [123, 0]
    decoded = decode(encoded)
    assert decoded[0] != values[0]
    assert decoded[0] == np.float32(1.23e-30)
    assert decoded[1] == 0.0 and not np.signbit(decoded[1])


# ---- signs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [FLOAT32, FLOAT16, BFLOAT16], ids=lambda fmt: fmt.name)
def test_negative_zero_and_negative_values_rounding_to_zero_keep_their_sign(fmt: BinaryFormat) -> None:
    smallest_subnormal = 1
    bits = np.array([fmt.sign_bit, 0, fmt.sign_bit | smallest_subnormal, smallest_subnormal],
                    np.uint32 if fmt.width == 32 else np.uint16)
    encoded = encode_bits(bits, fmt, 0)
    integers = to_python_ints(encoded)
    assert integers.tolist() == [0, 0, 0, 0]
    assert all(type(integer) is int for integer in integers)
    assert encoded.negative.tolist() == [True, False, True, False]
    decoded = decode(encoded)
    assert np.all(decoded == 0)
    assert np.signbit(decoded).tolist() == [True, False, True, False]


def test_signs_of_nonzero_integers_follow_the_values() -> None:
    values = np.array([[-3.25, 3.25], [-1e-3, 7.0]], np.float32)
    encoded = encode(values, 2)
    assert to_python_ints(encoded).tolist() == [[-325, 325], [0, 700]]
    assert encoded.negative.tolist() == [[True, False], [True, False]]


# ---- refused input -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_nan_and_infinity_are_refused_naming_the_count_and_first_index(bad: float, dtype: str) -> None:
    values = np.zeros((3, 4), np.float16 if dtype == "float16" else np.float32)
    values[1, 2] = bad
    values[2, 0] = bad
    with pytest.raises(EncodingError, match=r"\(1, 2\)") as raised:
        encode(values, source_dtype=dtype)
    assert isinstance(raised.value, InputError)
    assert re.search(r"\b2\b", str(raised.value).replace("(1, 2)", ""))  # the count, besides the index


def test_nan_in_a_bfloat16_tensor_is_refused_with_its_index() -> None:
    tensor = torch.zeros(5, dtype=torch.bfloat16)
    tensor[3] = float("nan")
    with pytest.raises(EncodingError, match=r"\(3,\)"):
        encode(tensor)


@pytest.mark.parametrize("scale_factor", [-1, 401, 2.5, "32", True])
def test_bad_scale_factor_is_refused(scale_factor: object) -> None:
    with pytest.raises(EncodingError, match="scale_factor"):
        encode(np.ones(2, np.float32), scale_factor)  # type: ignore[arg-type]


@pytest.mark.parametrize("quantize", [-0.5, -1, 100.5, 150, math.nan])
def test_quantize_outside_0_to_100_is_refused(quantize: float) -> None:
    with pytest.raises(EncodingError, match="quantize"):
        encode(np.ones(2, np.float32), 32, quantize)


def test_float64_and_inexact_bfloat16_input_are_refused() -> None:
    with pytest.raises(EncodingError, match="float64"):
        encode(np.ones(2, np.float64))
    not_bfloat16 = np.array([1.0, 1.0 + 2.0**-20], np.float32)
    with pytest.raises(EncodingError, match="bfloat16"):
        encode(not_bfloat16, source_dtype="bfloat16")


# ---- the command line ------------------------------------------------------------------------------


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def only_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def store_copy(captured_store: Path, tmp_path: Path) -> Path:
    return copy_store(captured_store, tmp_path / "store.zarr")


def only_label(store: Path, group: str = "captures") -> str:
    labels = sorted(path.name for path in (store / group).iterdir() if path.is_dir())
    assert len(labels) == 1
    return labels[0]


def plant_capture(store: Path, label: str, hidden_state: np.ndarray, dtype: str = "float32") -> StoreLocation:
    """A capture written straight through the store API (values no model would give)."""
    location = StoreLocation(str(store))
    layers = [f"layer_{i}" for i in range(hidden_state.shape[0])]
    dataset = xr.Dataset({"hidden_state": (("layer", "position", "hidden"), hidden_state)},
                         coords={"layer": np.array(layers, dtype=object)},
                         attrs={"dtype": dtype, "model_name": f"org/{label}", "prompt": "p", "generated_text": "g"})
    prepare_group(location, "captures", label, {})
    write_item(location, item_path("captures", label, 0), dataset)
    return location


def test_cli_encodes_every_layer_exactly_and_exports_the_reference_layout(
        store_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    label = only_label(store_copy)
    export = tmp_path / "export"
    code, _, err = run_main(capsys, "--store", str(store_copy), "--export", "npy", str(export), "--progress", "false")
    assert code == 0, err
    location = StoreLocation(str(store_copy))
    capture = open_item(location, item_path("captures", label, 0))
    stored = open_item(location, item_path("encodings", label, 0))
    states = capture["hidden_state"].values
    layers = [str(layer) for layer in capture["layer"].values]
    assert [str(layer) for layer in stored["layer"].values] == layers
    assert stored["magnitude"].dims == ("layer", "position", "hidden", "limb")
    assert stored["magnitude"].dtype == np.uint32 and stored["negative"].dtype == bool
    assert stored["negative"].dims == ("layer", "position", "hidden")
    attrs = stored.attrs
    assert (attrs["exponent"], attrs["scale_factor"], attrs["quantize"]) == (32, 32, 0)
    assert attrs["source"] == item_path("captures", label, 0)
    assert attrs["formula"] and attrs["reverse"]
    for index, layer in enumerate(layers):
        encoded = Encoded(stored["magnitude"].values[index], stored["negative"].values[index], 32, 32, 0.0, "float32")
        assert integers_from_limbs(encoded) == exact_integers(states[index], 32)

    model_name = capture.attrs["model_name"]
    folder = export / f"{model_name.replace('/', '_')}_int_activations_0000"
    for index, layer in enumerate(layers):
        loaded = np.load(folder / f"{layer}.npy", allow_pickle=True)
        assert loaded.shape == (1, *states[index].shape)
        assert loaded.reshape(-1).tolist() == exact_integers(states[index], 32)
    metadata = json.loads((folder / "conversion_metadata.json").read_text())
    assert {"model_name", "prompt", "generated_text", "conversion", "layers"} <= metadata.keys()
    assert (metadata["model_name"], metadata["prompt"]) == (model_name, "Hello world")
    assert metadata["generated_text"] == capture.attrs["generated_text"]
    assert metadata["conversion"]["scale_factor"] == 32 and metadata["conversion"]["quantize_pct"] == 0
    assert metadata["conversion"]["truncated_digits"] == 0 and metadata["conversion"]["effective_scale"] == 32
    assert {"formula", "reverse"} <= metadata["conversion"].keys()
    assert [entry["layer"] for entry in metadata["layers"]] == layers
    assert all(entry["original_shape"] == [1, *states.shape[1:]] for entry in metadata["layers"])


def test_cli_scale_factor_and_quantize_set_the_exponent(store_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    label = only_label(store_copy)
    code, _, err = run_main(capsys, "--store", str(store_copy), "--scale_factor", "20", "--quantize", "25",
                            "--progress", "false")
    assert code == 0, err
    location = StoreLocation(str(store_copy))
    stored = open_item(location, item_path("encodings", label, 0))
    states = open_item(location, item_path("captures", label, 0))["hidden_state"].values
    assert (stored.attrs["exponent"], stored.attrs["scale_factor"], stored.attrs["truncated_digits"]) == (15, 20, 5)
    encoded = Encoded(stored["magnitude"].values[-1], stored["negative"].values[-1], 15, 20, 25.0, "float32")
    assert integers_from_limbs(encoded) == exact_integers(states[-1], 15)


def test_cli_encodes_a_bfloat16_capture_at_scale_16(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    bits = (rng.integers(0, 1 << 16, (2, 3, 5)) & ~0x7F80).astype(np.uint32)  # never NaN or infinity
    states = (bits << np.uint32(16)).view(np.float32)
    location = plant_capture(tmp_path / "bf16.zarr", "bf", states, dtype="bfloat16")
    code, _, err = run_main(capsys, "--store", location.url, "--progress", "false")
    assert code == 0, err
    stored = open_item(location, item_path("encodings", "bf", 0))
    assert (stored.attrs["exponent"], stored.attrs["source_dtype"]) == (16, "bfloat16")
    encoded = Encoded(stored["magnitude"].values, stored["negative"].values, 16, 16, 0.0, "bfloat16")
    assert integers_from_limbs(encoded) == exact_integers(states, 16)


def assert_refused_untouched(store: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                             named: list[str]) -> None:
    """Exit 2, one error line naming the problem, the store unchanged and no encoding written."""
    before = tree_digest(store)
    code, _, err = run_main(capsys, "--store", str(store), "--progress", "false", *args)
    assert code == 2
    line = only_error_line(err)
    for word in named:
        assert word in line
    assert tree_digest(store) == before
    assert not (store / "encodings").exists()


def test_cli_unknown_model_label_is_refused(store_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused_untouched(store_copy, capsys, ["--model", "no-such-model"], ["no-such-model"])


@pytest.mark.parametrize("quantize", ["150", "-1"])
def test_cli_quantize_outside_0_to_100_is_refused(store_copy: Path, capsys: pytest.CaptureFixture[str],
                                                  quantize: str) -> None:
    assert_refused_untouched(store_copy, capsys, ["--quantize", quantize], ["quantize", quantize])


def test_cli_scale_factor_over_400_is_refused(store_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused_untouched(store_copy, capsys, ["--scale_factor", "401"], ["scale_factor", "401"])


def nan_store(tmp_path: Path) -> tuple[Path, StoreLocation]:
    states = np.ones((3, 4, 5), np.float32)
    states[1, 2, 3] = np.nan
    store = tmp_path / "nan.zarr"
    return store, plant_capture(store, "nan-model", states)


def test_cli_capture_with_nan_is_refused_naming_layer_and_index(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    store, location = nan_store(tmp_path)
    captures_before = tree_digest(store / "captures")
    code, _, err = run_main(capsys, "--store", location.url, "--progress", "false")
    assert code == 2
    line = only_error_line(err)
    assert "NaN" in line and "layer_1" in line and "(2, 3)" in line
    assert tree_digest(store / "captures") == captures_before
    assert complete_items(location, "encodings", "nan-model") == {}
    assert not (store / item_path("encodings", "nan-model", 0)).exists()


def test_cli_capture_with_nan_creates_no_encodings_group(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, location = nan_store(tmp_path)
    code, _, _ = run_main(capsys, "--store", location.url, "--progress", "false")
    assert code == 2
    assert not (store / "encodings").exists()
