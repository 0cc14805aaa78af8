"""The volatility state and forecast (`operators.forecast`) against hand-computed values, its
table's validation, property tests, and the edge's skill gate and actionable construction."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.codes import Explain
from operators import calibration
from operators.calibration import parse as parse_calibration
from operators.edge import Direction, EdgeConfig, EdgeScorer, compute_signals
from operators.forecast import (
    DEFAULT_PATH,
    MODEL_FORMAT,
    IntervalFit,
    LadderFit,
    VolModel,
    VolSnapshot,
    VolState,
    flag_bars,
    forecast,
    load,
    parse,
    risk_ratio,
)
from operators.regime import RegimeLabel, RegimeState, Rule
from tests.operators.helpers import book, fv

DAY = 86_400_000
MONDAY_NOON = 4 * DAY + 12 * 3_600_000  # 1970-01-05 12:00 UTC, a Monday


def model(
    coef: tuple[float, ...] = (0.0, 0.5, 0.0, 0.0, 0.0, 0.0),
    *,
    season: float = 1.0,
    smear: float = 1.2,
    q10: float = -0.5,
    q90: float = 0.6,
) -> VolModel:
    return VolModel(
        version="test-vol",
        season=((season,) * 24, (season,) * 24),
        half_lives_bars=(1.0, 3.0, 10.0, 30.0),
        long_half_life_ms=30 * DAY,
        long_min_bars=300.0,
        floor=1e-3,
        flag_enter=1.0,
        flag_exit=0.9,
        ladder=(LadderFit(1, coef, smear, q10, q90, 100), LadderFit(8, coef, smear, q10, q90, 100)),
    )


def test_ewma_components_by_hand() -> None:
    """Two returns of 10 and 20 bps: c_1 (half-life 1 bar, λ = 0.5) is the weighted mean."""
    st_ = VolState(model())
    assert st_.update(0.001, 0, 1000) is None  # too few returns yet
    assert st_.update(0.002, 1000, 2000) is None
    snap = st_.update(0.0, 2000, 3000)
    assert snap is not None
    # λ = 0.5: sums 0.5·1e-6 → 0.5·(0.5e-6) + 0.5·4e-6 = 2.25e-6 → 1.125e-6; weights 0.875
    assert snap.comps[0] == pytest.approx(1.125e-6 / 0.875)
    lam3 = 0.5 ** (1 / 3)
    s3 = ((1 - lam3) * 1e-6 * lam3 + (1 - lam3) * 4e-6) * lam3
    w3 = 1 - lam3**3
    assert snap.comps[1] == pytest.approx(s3 / w3)
    # the norm of three returns, barely forgetting: their mean (to 1e-4 relative)
    assert snap.norm == pytest.approx(5e-6 / 3, rel=1e-4)
    assert (snap.n, snap.close_ms, snap.bar_ms) == (3, 3000, 1000)


def test_forecast_by_hand() -> None:
    """ln m = ln L + 0.5·ln(c_1/L); V = H·m; vol = 1e4·√(V·smear); interval from q10, q90."""
    m = model()
    snap = VolSnapshot((4e-8, 1e-8, 1e-8, 1e-8), 1e-8, MONDAY_NOON, 60_000, 500)
    fc = forecast(m, snap, 8 * 60_000)
    mean_var = 1e-8 * math.exp(0.5 * math.log(4.0))  # 2e-8 per bar
    assert fc.vol_bps == pytest.approx(round(1e4 * math.sqrt(8 * mean_var * 1.2), 4))
    assert fc.vol_p10_bps == pytest.approx(round(1e4 * math.sqrt(8 * mean_var * math.exp(-0.5)), 4))
    assert fc.vol_p90_bps == pytest.approx(round(1e4 * math.sqrt(8 * mean_var * math.exp(0.6)), 4))
    assert fc.ratio == pytest.approx(math.sqrt(2.0), abs=1e-4)
    assert (fc.horizon_ms, fc.model) == (480_000, "test-vol")
    # the ladder entry nearest the horizon in log is used (2 → 1, 3 → 8)
    assert m.fit_for(2).bars == 1
    assert m.fit_for(3).bars == 8


def test_season_and_flag_horizon() -> None:
    m = VolModel(
        version="s",
        season=(tuple(float(h + 1) for h in range(24)), (0.5,) * 24),
        half_lives_bars=(1.0,),
        long_half_life_ms=DAY,
        long_min_bars=10.0,
        floor=1e-3,
        flag_enter=1.0,
        flag_exit=0.9,
        ladder=(LadderFit(16, (0.0, 0.0, 0.0), 1.0, -1.0, 1.0, 1),),
    )
    assert m.season_at(MONDAY_NOON) == 13.0
    assert m.season_at(2 * DAY) == 0.5  # 1970-01-03, a Saturday
    # 4 bars of 30 min from 11:30: hours 11, 12, 12, 13 → (12 + 13 + 13 + 14) / 4
    t = MONDAY_NOON - 1_800_000
    assert m.season_ahead(t, 4, 1_800_000) == pytest.approx((12 + 13 + 13 + 14) / 4)
    assert flag_bars(300_000, m) == 12  # one hour of 5 m bars
    assert flag_bars(3_600_000, m) == 6  # at least 6
    assert flag_bars(1000, m) == 16  # at most the ladder's longest


def test_risk_ratio_needs_a_day_of_bars() -> None:
    m = model(coef=(math.log(4.0), 0.0, 0.0, 0.0, 0.0, 0.0))
    young = VolSnapshot((1e-8,) * 4, 1e-8, MONDAY_NOON, 300_000, 200)
    assert risk_ratio(m, young) is None  # 200 bars of 5 m < a day (288)
    old = VolSnapshot((1e-8,) * 4, 1e-8, MONDAY_NOON, 300_000, 300)
    assert risk_ratio(m, old) == pytest.approx(2.0)


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    return doc


def test_committed_model_loads_and_older_formats_are_refused() -> None:
    m = load(DEFAULT_PATH)
    assert m.version.startswith("volhexp-")
    assert m.fitted_on["rows_before_utc"] == "2025-06-01T00:00:00Z"
    doc = _doc()
    del doc["format"]
    with pytest.raises(ValueError, match="format None is not"):
        parse(doc)
    doc = _doc()
    doc["format"] = "hlsl-vol-model/0"
    with pytest.raises(ValueError, match="refit it"):
        parse(doc)
    doc = _doc()
    doc["ladder"]["1"]["q10"] = 5.0
    with pytest.raises(ValueError, match="q10 < q90"):
        parse(doc)
    assert _doc()["format"] == MODEL_FORMAT


def test_format_1_tables_are_read_with_their_pooled_interval() -> None:
    doc = _doc()
    doc["format"] = "hlsl-vol-model/1"
    del doc["intervals"]
    m = parse(doc)
    assert m.intervals == ()
    f = m.fit_for(12)
    assert m.interval_for(300_000, 12) == (f.q10, f.q90)
    doc = _doc()
    doc["intervals"] = {}
    with pytest.raises(ValueError, match="intervals must be"):
        parse(doc)
    doc = _doc()
    doc["intervals"]["300000"]["12"]["q90"] = -9.0
    with pytest.raises(ValueError, match="q10 < q90"):
        parse(doc)
    doc = _doc()
    doc["intervals"]["5m"] = {"1": {"q10": -1, "q90": 1, "n": 1}}
    with pytest.raises(ValueError, match="keys must be integers"):
        parse(doc)


def test_interval_per_family_and_horizon() -> None:
    """The family nearest the bar length in log, its horizon nearest in log within a factor 2;
    else the ladder's pooled quantiles (q10 = −0.5, q90 = 0.6 in `model`)."""
    base = model()
    m = VolModel(
        **{
            **{f: getattr(base, f) for f in base.__dataclass_fields__},
            "intervals": (
                IntervalFit(300_000, 12, -0.9, 0.8, 10),
                IntervalFit(300_000, 24, -0.7, 0.7, 10),
                IntervalFit(3_600_000, 24, -0.95, 0.9, 10),
                IntervalFit(1000, 60, -1.2, 1.1, 10),
            ),
        }
    )
    assert m.interval_for(300_000, 12) == (-0.9, 0.8)
    assert m.interval_for(300_000, 16) == (-0.9, 0.8)  # 16/12 < 24/16: nearer 12 in log
    assert m.interval_for(300_000, 18) == (-0.7, 0.7)
    assert m.interval_for(900_000, 24) == (-0.7, 0.7)  # 15 m: nearer 5 m than 1 h in log
    assert m.interval_for(3_600_000, 24) == (-0.95, 0.9)
    assert m.interval_for(1000, 30) == (-1.2, 1.1)  # a factor 2 below 60: still served
    assert m.interval_for(1000, 29) == (-0.5, 0.6)  # beyond: the pooled ladder quantiles
    assert m.interval_for(60_000, 40) == (-0.7, 0.7)  # 1 m: nearer 5 m than 1 s in log
    snap = VolSnapshot((1e-6,) * 4, 1e-6, MONDAY_NOON, 3_600_000, 500)
    fc = forecast(m, snap, 24 * 3_600_000)
    var = 24 * 1e-6 * math.exp(0.0)  # coef (0, .5, 0, 0, 0, 0): ln m = ln L + .5·ln 1
    assert fc.vol_p10_bps == pytest.approx(round(1e4 * math.sqrt(var * math.exp(-0.95)), 4))
    assert fc.vol_p90_bps == pytest.approx(round(1e4 * math.sqrt(var * math.exp(0.9)), 4))


COMMITTED = load(DEFAULT_PATH)


@settings(
    derandomize=True,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    returns=st.lists(
        st.floats(min_value=-0.3, max_value=0.3, allow_nan=False), min_size=3, max_size=60
    ),
    bar_ms=st.sampled_from([1000, 60_000, 300_000, 900_000, 3_600_000]),
    horizon_bars=st.integers(min_value=1, max_value=500),
    start=st.integers(min_value=0, max_value=2_000_000_000_000),
)
def test_forecast_is_finite_positive_and_ordered(
    returns: list[float], bar_ms: int, horizon_bars: int, start: int
) -> None:
    state = VolState(COMMITTED)
    t = start - start % bar_ms
    snap = None
    for i, r in enumerate(returns):
        snap = state.update(r + (1e-6 if i == 0 else 0.0), t, t + bar_ms) or snap
        t += bar_ms
    assert snap is not None
    fc = forecast(COMMITTED, snap, horizon_bars * bar_ms)
    for v in (fc.vol_bps, fc.vol_p10_bps, fc.vol_p90_bps, fc.ratio):
        assert math.isfinite(v)
    assert fc.vol_p90_bps > 0.0
    assert 0.0 <= fc.vol_p10_bps <= fc.vol_bps <= fc.vol_p90_bps


# -- the edge: skill gate and the actionable construction ------------------------------------------


def _table(demonstrated: bool) -> calibration.Calibration:
    return parse_calibration(
        {
            "format": calibration.TABLE_FORMAT,
            "version": "skill-test",
            "fitted_on": {},
            "horizons": {
                "60000": {
                    "bins": [[0.0, 0.5, 0.52, 500], [0.5, 1.0, 0.8, 500]],
                    "mean_abs_move_bps": 5.0,
                    "skill": {"demonstrated": demonstrated, "bss": 0.05, "bss_lo": 0.01},
                }
            },
            "default_horizon_ms": 60000,
        }
    )


def _trend_call(vol_norm: float) -> tuple[Any, RegimeState]:
    f = fv(
        {
            "momentum_bps": 200.0,
            "momentum_z": 4.0,
            "trade_flow_imbalance": 0.8,
            "spread_bps": 0.2,
            "spread_ratio": 1.0,
            "depth_ratio": 1.5,
            "vol_expansion_ratio": 1.0,
            "efficiency_ratio": 0.9,
        }
    )
    f.book = book("BTC", 900, [(99.999, 5000.0)], [(100.001, 5000.0)])
    f.window_obs = 61
    snap = VolSnapshot((vol_norm,) * 4, vol_norm, MONDAY_NOON, 1000, 100_000)
    regime = RegimeState(
        label=RegimeLabel.TRENDING,
        confidence=1.0,
        since_ms=0,
        previous=None,
        candidate=None,
        candidate_count=0,
        dwell=50,
        rule=Rule.TREND,
        margin=1.0,
        stresses=(),
        inputs_used=(),
        inputs_missing=(),
        vol=snap,
        risk_ratio=1.0,
    )
    return f, regime


def test_without_demonstrated_skill_the_edge_says_so() -> None:
    f, regime = _trend_call(1e-6)
    scorer = EdgeScorer(EdgeConfig(), calibration=_table(False), vol_model=model())
    sig = compute_signals(f, regime)
    e = scorer.score(f, regime, sig, stale=False)
    assert e.direction is Direction.LONG
    assert Explain.NO_DEMONSTRATED_SKILL in e.explain
    assert (e.p_right, e.score, e.actionable, e.expected_move_bps) == (None, 0.5, False, None)
    assert e.forecast is not None
    assert e.forecast.horizon_ms == 60_000


def test_actionable_is_reachable_when_the_calibrated_move_beats_the_costs() -> None:
    """Skill demonstrated, p_right 0.8, a forecast of 60 bps over the horizon: the expected move
    (2·0.8 − 1)·√(2/π)·σ̂ = 28.7 bps beats 4.5 fee + 0.1 half spread: actionable."""
    # σ̂ over 60 bars of 1 s: V = 60·m·smear with m = L (coefficients 0, c = L): pick L so that
    # vol_bps = 60 → L = (0.006)² / (60·1.2)
    norm = 0.006**2 / (60 * 1.2)
    f, regime = _trend_call(norm)
    vm = model(coef=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    scorer = EdgeScorer(EdgeConfig(taker_fee_bps=4.5), calibration=_table(True), vol_model=vm)
    sig = compute_signals(f, regime)
    e = scorer.score(f, regime, sig, stale=False)
    assert e.forecast is not None
    assert e.forecast.vol_bps == pytest.approx(60.0, rel=1e-3)
    assert e.p_right == 0.8
    assert e.score == 0.8
    expected = (2 * 0.8 - 1) * math.sqrt(2 / math.pi) * e.forecast.vol_bps
    assert e.expected_move_bps == pytest.approx(expected, abs=1e-3)
    assert e.cost_bps is not None
    assert e.cost_bps == pytest.approx(4.5 + 0.1, abs=1e-3)
    assert e.net_edge_bps is not None
    assert e.net_edge_bps > 0
    assert e.actionable is True
    assert Explain.NET_EDGE_POSITIVE in e.explain
    # the same call while stale is not actionable
    assert scorer.score(f, regime, sig, stale=True).actionable is False


def test_signals_risk_follows_the_forecast_ratio() -> None:
    f, regime = _trend_call(1e-6)
    assert compute_signals(f, regime).risk == 0.5  # ρ = 1: 1 − 2^−1
    from msgspec.structs import replace

    assert compute_signals(f, replace(regime, risk_ratio=2.0)).risk == 0.75
    liq = replace(regime, risk_ratio=0.1, label=RegimeLabel.LIQUIDATION_RISK)
    assert compute_signals(f, liq).risk == 0.8


def test_old_calibration_tables_are_refused() -> None:
    old = json.loads(calibration.DEFAULT_PATH.read_text(encoding="utf-8"))
    del old["format"]
    with pytest.raises(ValueError, match="predates the out-of-sample skill verdict"):
        parse_calibration(old)
