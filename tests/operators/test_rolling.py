"""RollingMedian and RollingSum against brute force."""

from __future__ import annotations

import random
import statistics

import pytest

from operators.rolling import RollingMedian, RollingMoments, RollingPair, RollingSum


@pytest.mark.parametrize("size", [1, 2, 5, 10, 33])
def test_rolling_median_matches_statistics_median(size: int) -> None:
    rng = random.Random(size)
    rm = RollingMedian(size)
    assert rm.get() is None
    assert len(rm) == 0
    seen: list[float] = []
    for i in range(400):
        # Many duplicates (a coarse grid) plus continuous values: both paths of bisect matter.
        x = float(rng.randint(-5, 5)) if i % 3 else rng.uniform(-100.0, 100.0)
        rm.update(x)
        seen.append(x)
        window = seen[-size:]
        assert len(rm) == len(window)
        assert rm.get() == statistics.median(window)


def test_rolling_median_even_count_is_mean_of_middle_values() -> None:
    rm = RollingMedian(4)
    for x in (7.0, 1.0, 3.0, 10.0):
        rm.update(x)
    assert rm.get() == 5.0  # (3 + 7) / 2
    rm.update(0.0)  # 7 leaves: window 1, 3, 10, 0
    assert rm.get() == 2.0  # (1 + 3) / 2


@pytest.mark.parametrize("cls", [RollingMedian, RollingSum])
def test_rolling_rejects_non_positive_size(cls: type) -> None:
    with pytest.raises(ValueError, match="size must be >= 1"):
        cls(0)


@pytest.mark.parametrize("size", [1, 3, 10, 50])
def test_rolling_sum_total_tail_and_span_match_brute_force(size: int) -> None:
    rng = random.Random(1000 + size)
    rs = RollingSum(size)
    assert rs.total == 0.0
    assert rs.span_ms() == 0
    assert rs.tail(3) == (0.0, 0)
    items: list[tuple[int, float]] = []
    # Running totals carry rounding of the values that left (at most ~size ulps of the largest,
    # 10.0); the re-sum every `size` removals keeps it there, so abs=1e-12 is a drift bound.
    for _ in range(12 * size + 7):  # many times the size: several exact re-sums
        dt = rng.randint(1, 2000)
        x = rng.uniform(0.0, 1e-4) if rng.random() < 0.9 else rng.uniform(0.0, 10.0)
        rs.update(dt, x)
        items.append((dt, x))
        win = items[-size:]
        assert len(rs) == len(win)
        assert rs.total == pytest.approx(sum(v for _, v in win), rel=1e-12, abs=1e-12)
        # N values cover N intervals (each value's own dt), not N - 1
        assert rs.span_ms() == sum(d for d, _ in win)
        for n in (1, 2, size - 1, size, size + 3):
            if n < 1:
                continue
            s, span = rs.tail(n)
            part = win[-n:]
            assert s == pytest.approx(sum(v for _, v in part), rel=1e-12, abs=1e-12)
            assert span == sum(d for d, _ in part)


def test_rolling_sum_hand_computed() -> None:
    rs = RollingSum(3)
    for dt, x in ((1000, 1.0), (1000, 2.0), (1500, 4.0), (500, 8.0)):
        rs.update(dt, x)
    assert rs.total == 14.0  # 1.0 left the window
    assert rs.span_ms() == 3000  # 1000 + 1500 + 500
    assert rs.tail(1) == (8.0, 500)
    assert rs.tail(2) == (12.0, 2000)
    assert rs.tail(3) == (14.0, 3000)


def test_rolling_sum_resum_removes_accumulated_rounding() -> None:
    """After a full window of removals the total is exact again (drift stays bounded)."""
    rs = RollingSum(10)
    rs.update(1, 1e16)
    for _ in range(1, 30):
        rs.update(1, 1.0)
    # The 1e16 left 19 updates ago, and the window has been fully re-summed since.
    assert rs.total == 10.0


@pytest.mark.parametrize("size", [2, 3, 17])
def test_rolling_moments_match_statistics(size: int) -> None:
    rng = random.Random(size)
    rm = RollingMoments(size)
    assert rm.mean() is None
    assert rm.std() is None
    assert rm.zscore(1.0) is None
    seen: list[float] = []
    for i in range(700):  # many exact re-sums; values far from 0 test the re-centring
        x = 1e6 + rng.gauss(0.0, 3.0) if i % 5 else 1e6 + float(rng.randint(-2, 2))
        rm.update(x)
        seen.append(x)
        window = seen[-size:]
        assert len(rm) == len(window)
        assert rm.mean() == pytest.approx(statistics.fmean(window), rel=1e-12)
        if len(window) < 2:
            assert rm.std() is None
            continue
        sd = statistics.stdev(window)
        assert rm.std() == pytest.approx(sd, rel=1e-6, abs=1e-9)
        if sd > 1e-3:
            z = rm.zscore(1e6 + 1.0)
            assert z == pytest.approx((1e6 + 1.0 - statistics.fmean(window)) / sd, rel=1e-6)


def test_rolling_moments_constant_has_no_zscore() -> None:
    rm = RollingMoments(4)
    for _ in range(6):
        rm.update(5.0)
    assert rm.std() == 0.0
    assert rm.zscore(6.0) is None
    with pytest.raises(ValueError, match="size"):
        RollingMoments(1)


def test_rolling_pair_matches_brute_force() -> None:
    rng = random.Random(9)
    rp = RollingPair(7)
    items: list[tuple[int, float, float]] = []
    for _ in range(100):
        item = (rng.randint(1, 2000), rng.uniform(0, 10), rng.uniform(-5, 5))
        rp.update(*item)
        items.append(item)
        window = items[-7:]
        assert len(rp) == len(window)
        assert rp.total_ms == sum(x[0] for x in window)
        assert rp.a == pytest.approx(sum(x[1] for x in window), abs=1e-9)
        assert rp.b == pytest.approx(sum(x[2] for x in window), abs=1e-9)
    with pytest.raises(ValueError, match="size"):
        RollingPair(0)
