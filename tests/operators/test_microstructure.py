"""OFI, the micro-price estimator, VPIN and book walks against hand-computed values."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.microstructure import MAX_MOVE_TICKS, MicroPrice, Vpin, ofi_step, walk_book

# -- OFI (Cont, Kukanov & Stoikov) ----------------------------------------------------------------

# (bid, bid size, ask, ask size): a three-step sequence after an initial state
STATES = [
    (100.0, 5.0, 101.0, 3.0),
    (100.0, 7.0, 101.0, 3.0),  # bid queue +2               -> e = 7 - 5 - 3 + 3 = +2
    (100.5, 2.0, 101.0, 1.0),  # new better bid 2, ask -2  -> e = 2 + (-1 + 3) = +4
    (100.5, 2.0, 100.8, 4.0),  # new better ask 4           -> e = (2 - 2) - 4 = -4
]


def test_ofi_on_a_three_step_bbo_sequence() -> None:
    steps = [ofi_step(*a, *b) for a, b in itertools.pairwise(STATES)]
    assert steps == [2.0, 4.0, -4.0]
    assert sum(steps) == 2.0


@pytest.mark.parametrize(
    ("before", "after", "e"),
    [
        # bid falls: the old bid queue left (−q_b0), asks unchanged
        ((100.0, 5.0, 101.0, 3.0), (99.0, 4.0, 101.0, 3.0), -5.0),
        # ask rises: the old ask queue was taken (+q_a0)
        ((100.0, 5.0, 101.0, 3.0), (100.0, 5.0, 102.0, 6.0), 3.0),
        # nothing changed
        ((100.0, 5.0, 101.0, 3.0), (100.0, 5.0, 101.0, 3.0), 0.0),
    ],
)
def test_ofi_price_moves(
    before: tuple[float, float, float, float], after: tuple[float, float, float, float], e: float
) -> None:
    assert ofi_step(*before, *after) == e


# -- micro-price ----------------------------------------------------------------------------------


def test_micro_price_adjustment_is_the_mean_touch_level_mid_change_per_cell() -> None:
    m = MicroPrice(buckets=4, memory=1e15, min_obs=0.5, prior_obs=0.0)
    assert m.table() == [None] * 4
    m.observe(100.0, 3.0, 101.0, 1.0)  # I = 0.75 -> bucket 3, mid 100.5, spread 1 (one tick)
    m.observe(100.0, 3.0, 101.0, 1.0)  # same state again: bucket 3 has 2 pending states
    m.observe(101.0, 1.0, 102.0, 1.0)  # mid +1 = one tick = one spread: bucket 3 +1 twice
    m.observe(100.0, 1.0, 101.0, 3.0)  # mid −1: bucket 2 (I = .5) gets −1, bucket 1 +1
    # nothing caps the estimate: a tick is a whole spread at one tick wide
    assert m.table() == pytest.approx([-1.0, 1.0, -1.0, 1.0])
    assert m.g(3.0, 1.0, 1.0) == pytest.approx(1.0)  # bucket 3, one tick wide
    assert m.g(1.0, 3.0) == pytest.approx(1.0)  # bucket 1 (no spread given: one tick)
    assert m.g(0.0, 0.0) is None
    assert m.g(3.0, 1.0, 3.0) is None  # three ticks wide: that cell has seen nothing
    m.observe(103.0, 3.0, 104.0, 1.0)  # mid +3 ticks: not a touch-level move, dropped
    m.observe(104.0, 3.0, 105.0, 1.0)  # +1 tick: credits only the state after the jump
    assert m.table() == pytest.approx([-1.0, 1.0, -1.0, 1.0])  # bucket 3: (2·1 + 1)/3 = 1


def test_micro_price_drops_jumps_beyond_a_tick() -> None:
    m = MicroPrice(buckets=2, memory=1e15, min_obs=1.0, prior_obs=0.0)
    m.observe(100.0, 1.0, 101.0, 3.0)  # bucket 0, one tick
    m.observe(100.5, 1.0, 101.5, 3.0)  # +½ tick: bucket 0 gets +½, bucket 1 −½
    assert m.table() == pytest.approx([0.5, -0.5])
    m.observe(102.0, 3.0, 103.0, 1.0)  # +1.5 ticks: dropped (the pending bucket-0 state too)
    assert m.table() == pytest.approx([0.5, -0.5])
    m.observe(101.0, 3.0, 102.0, 1.0)  # −1 tick: the bucket-1 state waiting gets −1
    assert m.table() == pytest.approx([(0.5 + 1.0) / 2, -(0.5 + 1.0) / 2])


def test_micro_price_is_conditioned_on_the_spread_state() -> None:
    m = MicroPrice(buckets=2, memory=1e15, min_obs=1.0, prior_obs=0.0)
    m.observe(100.0, 3.0, 102.0, 1.0)  # bucket 1, spread 2 (the narrowest yet: the tick)
    m.observe(99.0, 3.0, 103.0, 1.0)  # same mid, spread 4 = two ticks: its own cell
    assert m.table() == [None, None]
    m.observe(102.0, 1.0, 104.0, 1.0)  # mid 101 -> 103: +2 = one tick
    # one-tick cell: 2/2 = 1 spread; two-tick cell: 2/4 = ½
    assert m.table(0) == pytest.approx([-1.0, 1.0])
    assert m.table(1) == pytest.approx([-0.5, 0.5])
    assert m.table(2) == [None, None]
    assert (m.spread_state(2.0), m.spread_state(4.0), m.spread_state(6.0)) == (0, 1, 2)


def test_micro_price_forgets_and_needs_min_obs() -> None:
    # each mid change halves the sums
    m = MicroPrice(buckets=2, memory=2.0, min_obs=1.5, prior_obs=0.0)
    m.observe(100.0, 3.0, 101.0, 1.0)  # bucket 1
    m.observe(101.0, 3.0, 102.0, 1.0)  # +1 -> bucket 1: num 1, den 1 (below min_obs)
    assert m.table() == [None, None]
    m.observe(102.0, 3.0, 103.0, 1.0)  # +1 again: num ½ + 1, den ½ + 1
    assert m.table() == pytest.approx([-1.0, 1.0])
    # skipped states: crossed, locked or empty
    for bad in ((101.0, 1.0, 101.0, 1.0), (102.0, 1.0, 101.0, 1.0), (100.0, 0.0, 101.0, 0.0)):
        m.observe(*bad)
    assert m.table() == pytest.approx([-1.0, 1.0])
    m.reset_pending()
    m.observe(50.0, 3.0, 51.0, 1.0)  # after a gap no move is credited across it
    assert m.table() == pytest.approx([-1.0, 1.0])


def test_micro_price_is_shrunk_towards_the_mid_by_its_prior() -> None:
    # the same credits as above, now with 2 pseudo-observations at 0 in every cell
    m = MicroPrice(buckets=4, memory=1e15, min_obs=0.5, prior_obs=2.0)
    m.observe(100.0, 3.0, 101.0, 1.0)  # bucket 3, twice
    m.observe(100.0, 3.0, 101.0, 1.0)
    m.observe(101.0, 1.0, 102.0, 1.0)  # +1 spread: bucket 3 has 2 credits of +1 (bucket 0: -1)
    assert m.table() == pytest.approx([-2.0 / 4.0, None, None, 2.0 / 4.0])  # 2 / (2 + 2)
    m.observe(100.0, 1.0, 101.0, 3.0)  # -1: bucket 2 (I = .5) gets -1 once, bucket 1 +1
    assert m.table() == pytest.approx([-0.5, 1.0 / 3.0, -1.0 / 3.0, 0.5])  # 1 / (1 + 2)
    assert m.g(3.0, 1.0, 1.0) == pytest.approx(0.5)
    # a cell with much data is barely moved: 200 credits of +1 -> 200 / 202
    for i in range(200):  # bucket-3 states, each followed by a +1 tick move
        m.observe(102.0 + i, 3.0, 103.0 + i, 1.0)
    g3 = m.g(3.0, 1.0, 1.0)
    assert g3 == pytest.approx((2.0 + 199.0) / (2.0 + 199.0 + 2.0))
    with pytest.raises(ValueError, match="prior_obs"):
        MicroPrice(prior_obs=-1.0)
    with pytest.raises(ValueError, match="prior_obs"):
        MicroPrice(prior_obs=math.inf)


def test_micro_price_is_antisymmetric_and_bounded_by_a_tick() -> None:
    rng = random.Random(5)
    m = MicroPrice(buckets=10, memory=1e9, min_obs=1.0, prior_obs=0.0)
    bid = 100.0
    for _ in range(5000):
        # coarse snapshots: the mid often jumps many ticks between two states (dropped)
        bid += rng.choice((-7.0, -1.0, -0.5, 0.0, 0.0, 0.5, 1.0, 9.0))
        ask = bid + rng.choice((1.0, 2.0, 5.0))
        m.observe(bid, rng.uniform(0.1, 5), ask, rng.uniform(0.1, 5))
    for j in range(3):
        tab = m.table(j)
        assert all(x is not None for x in tab)
        for i in range(10):
            a, b = tab[i], tab[9 - i]
            assert a is not None
            assert b is not None
            assert a == pytest.approx(-b, abs=1e-9)
            # a credited move is at most 1.1 ticks: 1.1 spreads at one tick, ½·1.1 at two
            assert abs(a) <= MAX_MOVE_TICKS / (1, 2, 5)[j] + 1e-9


# -- VPIN -----------------------------------------------------------------------------------------


def test_vpin_on_known_buckets() -> None:
    v = Vpin(n=2)
    v.add([(1.0, 6.0, 1), (1.0, 6.0, -1)], bucket_size=10.0)
    # bucket 1: buy 6 + sell 4 -> |4 - 6| = 2; sell 2 carried into bucket 2
    assert v.completed == 1
    assert v.value(1) == pytest.approx(2 / 10)
    v.add([(1.0, 25.0, 1)], bucket_size=10.0)
    # bucket 2: sell 2 + buy 8 -> 6; one whole one-sided bucket (10); buy 7 left open
    assert v.completed == 3
    assert v.value(3) == pytest.approx((6 + 10) / 20)  # the last n = 2 buckets
    assert v.value(4) is None  # fewer buckets than asked for
    w = Vpin(n=3)
    w.add([(1.0, 6.0, 1), (1.0, 6.0, -1), (1.0, 25.0, 1)], bucket_size=10.0)
    assert w.value(3) == pytest.approx((2 + 6 + 10) / 30)


def test_vpin_bucket_size_is_set_when_a_bucket_opens() -> None:
    v = Vpin(n=5)
    v.add([(1.0, 3.0, 1)], bucket_size=4.0)  # open bucket of 4: buy 3
    # still the bucket of 4: sell 1 closes it (|1 - 3| = 2); sell 2 opens a bucket of 100
    v.add([(1.0, 3.0, -1)], bucket_size=100.0)
    assert v.completed == 1
    assert v.value(1) == pytest.approx(abs(1 - 3) / 4)
    v.add([(1.0, 50.0, -1)], bucket_size=100.0)  # sell 52 in the open bucket of 100
    assert v.completed == 1
    v.add([(1.0, 48.0, 1)], bucket_size=7.0)  # fills the 100 bucket: |52 - 48| = 4
    assert v.value(1) == pytest.approx((2 + 4) / (4 + 100))
    v.add([(1.0, 1.0, 1)], bucket_size=0.0)  # no size: ignored
    assert v.completed == 2


def test_vpin_large_print_fills_many_buckets_at_once() -> None:
    v = Vpin(n=3)
    v.add([(1.0, 1e6, -1)], bucket_size=1.0)
    assert v.completed == 1_000_000
    assert v.value(3) == 1.0


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.floats(1e-6, 1e3), st.sampled_from((1, -1))), min_size=1, max_size=60),
    st.floats(1e-3, 1e3),
    st.integers(1, 20),
)
def test_vpin_in_unit_interval(prints: list[tuple[float, int]], size: float, n: int) -> None:
    v = Vpin(n=n)
    v.add([(1.0, sz, side) for sz, side in prints], bucket_size=size)
    x = v.value(1)
    total = sum(sz for sz, _ in prints)
    assert abs(v.completed - total / size) <= 1.0
    if x is not None:
        assert 0.0 <= x <= 1.0


# -- book walk ------------------------------------------------------------------------------------


def test_walk_book() -> None:
    px, sz = (100.0, 101.0, 103.0), (1.0, 2.0, 5.0)
    # 100 USD at 100, then 150 USD at 101
    assert walk_book(px, sz, 250.0) == pytest.approx(250.0 / (1.0 + 150.0 / 101.0))
    assert walk_book(px, sz, 50.0) == pytest.approx(100.0)  # the touch holds it all
    assert walk_book(px, sz, 1e6) is None  # deeper than the visible book
    assert walk_book((), (), 10.0) is None
    assert walk_book((100.0, 99.0), (1.0, 1.0), 150.0) == pytest.approx(150.0 / (1 + 50 / 99))
