"""`operators.rounding.fround` is the built-in ``round(x, n)``, bit for bit."""

from __future__ import annotations

import math
import random
import struct

from hypothesis import given
from hypothesis import strategies as st

from operators.rounding import fround


def _bits(x: float) -> bytes:
    return struct.pack("<d", x)


def _same(x: float, n: int) -> bool:
    got, want = fround(x, n), round(x, n)
    if math.isnan(want):
        return math.isnan(got)
    return _bits(got) == _bits(want)


@given(st.floats(allow_nan=True, allow_infinity=True), st.integers(0, 15))
def test_any_float_rounds_to_the_same_double(x: float, n: int) -> None:
    assert _same(x, n)


@given(st.floats(-1e6, 1e6), st.integers(-3, 20))
def test_digits_outside_the_fast_range_fall_back(x: float, n: int) -> None:
    assert _same(x, n)


def test_near_halves_and_their_neighbours() -> None:
    """The hard cases: decimal halves (never exact in binary) and the doubles either side."""
    rng = random.Random(9)
    for _ in range(20_000):
        n = rng.randint(0, 8)
        k = rng.randint(-(10**9), 10**9)
        half = (k + 0.5) / 10**n
        for x in (half, math.nextafter(half, math.inf), math.nextafter(half, -math.inf)):
            assert _same(x, n), (x, n)


def test_values_as_the_flow_meets_them() -> None:
    """Prices, bps, ratios, USD, tiny and huge magnitudes, and exact zeros of both signs."""
    rng = random.Random(4)
    cases = [0.0, -0.0, 1e-300, -1e-300, 0.00004999, -0.00004999, 0.00005, -0.00005, 1e11, 1e15]
    for _ in range(100_000):
        scale = 10.0 ** rng.randint(-9, 12)
        cases.append(rng.uniform(-1, 1) * scale)
    for x in cases:
        for n in (0, 2, 4, 6):
            assert _same(x, n), (x, n)


def test_a_zero_keeps_the_sign_of_its_input() -> None:
    assert _bits(fround(-0.00001, 4)) == _bits(-0.0)
    assert _bits(fround(0.00001, 4)) == _bits(0.0)
    assert fround(-1.23456, 4) == -1.2346
