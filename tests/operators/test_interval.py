"""Adaptive conformal levels of the volatility interval (`operators.interval`): the update and its
bounds by hand, causality (a forecast is scored only once its horizon has passed), the bounded
queue, roll-back, copies, determinism, the table's ``aci`` block, and the score step's use."""

from __future__ import annotations

import copy
import json
import math
import pickle
from typing import Any

import msgspec
import pytest

from operators.edge import EdgeConfig, EdgeScorer
from operators.forecast import (
    ACI_CLIP,
    ACI_TARGET,
    DEFAULT_PATH,
    Forecast,
    VolSnapshot,
    forecast,
    parse,
    shifted,
)
from operators.interval import MAX_HORIZONS, MAX_PENDING, IntervalTracker, step
from operators.regime import RegimeState
from operators.steps import score_bar
from tests.operators.helpers import fv
from tests.operators.test_forecast import MONDAY_NOON, _trend_call, model

H = 60_000


def fc(p10: float, p90: float, horizon_ms: int = H) -> Forecast:
    return Forecast(horizon_ms, (p10 + p90) / 2, p10, p90, "m", 1.0)


def test_step_by_hand_and_clipped() -> None:
    assert step(0.1, 0.01, miss=True) == pytest.approx(0.1 + 0.01 * (0.1 - 1.0))
    assert step(0.1, 0.01, miss=False) == pytest.approx(0.101)
    assert step(0.0011, 0.5, miss=True) == ACI_CLIP[0]
    assert step(0.49, 0.5, miss=False) == ACI_CLIP[1]
    assert step(0.1, 0.0, miss=True) == 0.1


def test_shifted_is_exact_at_the_fitted_levels_and_monotone() -> None:
    assert shifted(-0.5, 0.6, None) == (-0.5, 0.6)
    assert shifted(-0.5, 0.6, (ACI_TARGET, ACI_TARGET)) == (-0.5, 0.6)
    lo, hi = shifted(-0.5, 0.6, (0.05, 0.2))
    assert lo < -0.5
    assert hi < 0.6
    z90 = 1.2815515655446004
    sigma = 1.1 / (2 * z90)
    assert lo == pytest.approx(-0.5 + sigma * (-1.6448536269514729 + z90))
    # at the clip's top both bounds reach the centre: never inverted
    lo, hi = shifted(-0.5, 0.6, (ACI_CLIP[1], ACI_CLIP[1]))
    assert lo == pytest.approx(0.05)
    assert hi == pytest.approx(0.05)
    lo, hi = shifted(-0.5, 0.6, (ACI_CLIP[0], ACI_CLIP[0]))
    assert math.isfinite(lo)
    assert math.isfinite(hi)
    assert lo < -0.5 < 0.6 < hi


def test_a_forecast_is_scored_only_once_its_horizon_has_passed() -> None:
    t = IntervalTracker(0.05)
    assert t.level(H) is None  # no history: the fitted quantiles
    t.record(0, fc(10.0, 20.0))  # bounds 1e-6 .. 4e-6 of variance
    for k in range(1, 60):
        t.fold(0.0015, k * 1000)  # Σ r² grows by 2.25e-6 per bar
        assert t.level(H) is None
    t.fold(0.0015, 60_000)
    # RV = 60 · 2.25e-6 = 1.35e-4 > upper: the upper tail missed, the lower did not
    assert t.level(H) == pytest.approx((0.1 + 0.05 * 0.1, 0.1 + 0.05 * (0.1 - 1.0)))
    assert not t.pending


def test_misses_widen_and_coverage_narrows() -> None:
    wide, tight = IntervalTracker(0.01), IntervalTracker(0.01)
    for k in range(200):
        wide.record(k * 1000, fc(1e-3, 1e4, 1000))  # always covers
        tight.record(k * 1000, fc(1e4, 2e4, 1000))  # always below the lower bound
        wide.fold(1e-3, (k + 1) * 1000)
        tight.fold(1e-3, (k + 1) * 1000)
    a_lo, a_hi = wide.level(1000) or (0.0, 0.0)
    assert a_lo > ACI_TARGET
    assert a_hi > ACI_TARGET
    b_lo, b_hi = tight.level(1000) or (1.0, 1.0)
    assert b_lo == ACI_CLIP[0]
    assert b_hi > ACI_TARGET


def test_queue_and_horizons_are_bounded() -> None:
    t = IntervalTracker(0.01)
    for k in range(MAX_PENDING + 50):
        t.record(k, fc(1.0, 2.0, 10**9))
    assert len(t.pending) == MAX_PENDING
    u = IntervalTracker(0.01)
    for k in range(MAX_HORIZONS + 5):
        u.record(0, fc(1.0, 2.0, 1000 + k))
    u.fold(0.01, 10**6)
    assert len(u.levels) == MAX_HORIZONS
    assert not u.pending


def test_a_shorter_horizon_keeps_the_queue_in_due_order() -> None:
    t = IntervalTracker(0.01)
    t.record(0, fc(1.0, 2.0, 10_000))
    t.record(1000, fc(1.0, 2.0, 2000))
    assert [e[0] for e in t.pending] == [3000, 10_000]
    t.fold(0.0, 3000)
    assert set(t.levels) == {2000}


def test_without_a_step_nothing_is_queued() -> None:
    t = IntervalTracker.for_model(None)
    t.record(0, fc(1.0, 2.0))
    assert not t.pending
    assert t.gamma == 0.0


def _run(t: IntervalTracker, n: int) -> None:
    for k in range(n):
        t.fold(0.001 * ((k * 7) % 5 - 2), k * 1000)
        t.record(k * 1000, fc(5.0 + k % 3, 30.0 + k % 7, 5000))


def test_mark_restore_copy_and_pickle_keep_the_state() -> None:
    a = IntervalTracker(0.02)
    _run(a, 40)
    m = a.mark()
    snapshot = (tuple(a.pending), dict(a.levels), a.cum)
    _run(a, 10)
    a.restore(m)
    assert (tuple(a.pending), dict(a.levels), a.cum) == snapshot
    for b in (copy.deepcopy(a), pickle.loads(pickle.dumps(a))):
        assert (b.gamma, tuple(b.pending), b.levels, b.cum) == (
            a.gamma,
            tuple(a.pending),
            a.levels,
            a.cum,
        )
        _run(b, 5)
        assert tuple(b.pending) != snapshot[0]
    assert (tuple(a.pending), dict(a.levels), a.cum) == snapshot  # copies are independent


def test_replays_give_the_same_levels() -> None:
    a, b = IntervalTracker(0.01), IntervalTracker(0.01)
    _run(a, 300)
    _run(b, 300)
    assert a.levels == b.levels
    assert tuple(a.pending) == tuple(b.pending)


def test_forecast_uses_the_adapted_levels_for_the_interval_only() -> None:
    m = model()
    snap = VolSnapshot((1e-8,) * 4, 1e-8, MONDAY_NOON, 60_000, 300)
    base = forecast(m, snap, 600_000)
    moved = forecast(m, snap, 600_000, (0.05, 0.2))
    assert moved.vol_bps == base.vol_bps
    assert moved.ratio == base.ratio
    assert moved.vol_p10_bps < base.vol_p10_bps
    assert moved.vol_p90_bps < base.vol_p90_bps
    assert forecast(m, snap, 600_000, (ACI_TARGET, ACI_TARGET)) == base


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    return doc


def test_the_table_carries_its_step_and_older_tables_still_load() -> None:
    doc = _doc()
    assert parse(doc).aci_gamma == doc["aci"]["gamma"] > 0
    del doc["aci"]
    assert parse(doc).aci_gamma == 0.0  # a table fitted before ACI: the fitted quantiles
    doc["aci"] = {"gamma": 1.5}
    with pytest.raises(ValueError, match=r"aci\.gamma"):
        parse(doc)
    doc["aci"] = {"gamma": "x"}
    with pytest.raises(ValueError, match=r"aci\.gamma"):
        parse(doc)


def _regime(close_ms: int) -> RegimeState:
    snap = VolSnapshot((1e-8,) * 4, 1e-8, close_ms, 1000, 300)
    return msgspec.structs.replace(_trend_call(1e-8)[1], vol=snap)


def test_the_score_step_queues_published_intervals_and_rolls_back_on_failure() -> None:
    scorer = EdgeScorer(EdgeConfig(horizon_ms=5000), None, model())
    t = IntervalTracker(0.01)
    for k in range(1, 12):
        f = msgspec.structs.replace(fv(close_ms=k * 1000), bar_return=0.002)
        s = score_bar("score", scorer, (f, _regime(k * 1000)), t)
        assert s.edge.forecast is not None
        assert s.degraded is None
    assert t.levels
    assert len(t.pending) == 5
    before = (tuple(t.pending), dict(t.levels), t.cum)

    class Broken(EdgeScorer):
        def score(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("boom")

    broken = Broken(EdgeConfig(horizon_ms=5000), None, model())
    f = msgspec.structs.replace(fv(close_ms=12_000), bar_return=0.5)
    s = score_bar("score", broken, (f, _regime(12_000)), t)
    assert s.degraded is not None
    assert (tuple(t.pending), dict(t.levels), t.cum) == before
