"""Signals, the calibrated edge and its costs by hand, the calibration table, the score step
under run_main, and the envelope."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

import operators.edge
from api.schemas import SignalEnvelope
from connectors.events import STREAMS, Event, Stream
from connectors.freshness import StreamClock, judge_all, overall
from operators import calibration, steps
from operators.bars import Bar
from operators.calibration import UNCALIBRATED, Calibration, parse
from operators.edge import (
    Direction,
    Edge,
    EdgeConfig,
    EdgeScorer,
    Explain,
    Signals,
    compute_signals,
    slippage_bps,
)
from operators.envelope import Producer, freshness_block
from operators.features import FeatureConfig, FeatureVector
from operators.regime import RegimeConfig, RegimeLabel, RegimeState, Rule
from tests.operators.helpers import bar, bbo, book, candle, ctx, fv, trades

T = RegimeLabel.TRENDING
MR = RegimeLabel.MEAN_REVERTING
CH = RegimeLabel.CHAOTIC
LIQ = RegimeLabel.LIQUIDATION_RISK
UNK = RegimeLabel.UNKNOWN
RULE = {
    T: Rule.TREND,
    MR: Rule.MEAN_REVERSION,
    CH: Rule.CHAOS,
    LIQ: Rule.CASCADE,
    UNK: Rule.WARMING_UP,
}
TABLE: dict[str, Any] = {
    "format": calibration.TABLE_FORMAT,
    "version": "test-table-1",
    "fitted_on": {"files": ["x"], "span_utc": ["2025-01-01", "2025-01-02"], "n": 300},
    "horizons": {
        "60000": {
            "bins": [[0.0, 0.3, 0.45, 100], [0.3, 0.6, 0.55, 100], [0.6, 1.0, 0.7, 100]],
            "mean_abs_move_bps": 20.0,
            "coins": {"BTC": {"mean_abs_move_bps": 30.0}},
            "skill": {"demonstrated": True, "bss": 0.02, "bss_lo": 0.01},
        },
        "3600000": {
            "bins": [[0.0, 1.0, 0.6, 10]],
            "mean_abs_move_bps": 80.0,
            "skill": {"demonstrated": False},
        },
    },
    "default_horizon_ms": 60000,
}
CAL = parse(TABLE)
SCORER = EdgeScorer(EdgeConfig(taker_fee_bps=4.5, size_usd=10_000.0), calibration=CAL)
UNCAL = EdgeScorer(EdgeConfig(taker_fee_bps=4.5, size_usd=10_000.0), calibration=None)
DEEP = book("BTC", 900, [(99.99, 500.0), (99.98, 500.0)], [(100.01, 500.0), (100.02, 500.0)])


def rs(
    label: RegimeLabel,
    confidence: float = 0.9,
    *,
    dwell: int = 10,
    candidate: RegimeLabel | None = None,
    stresses: tuple[str, ...] = (),
    inputs_missing: tuple[str, ...] = (),
    rule: Rule | None = None,
) -> RegimeState:
    return RegimeState(
        label=label,
        confidence=0.0 if label is UNK else confidence,
        since_ms=0,
        previous=None,
        candidate=candidate,
        candidate_count=0 if candidate is None else 1,
        dwell=dwell,
        rule=rule or RULE[label],
        margin=0.5,
        stresses=stresses,
        inputs_used=(),
        inputs_missing=inputs_missing,
    )


def trend_fv(**kw: Any) -> FeatureVector:
    vals: dict[str, Any] = {
        "momentum_bps": 200.0,
        "momentum_z": 2.0,
        "realized_vol_bps": 100.0,
        "trade_flow_imbalance": 0.4,
        "spread_bps": 2.0,
        "spread_ratio": 1.25,
        "depth_ratio": 1.5,
        "vol_expansion_ratio": 1.0,
        "efficiency_ratio": 0.7,
        "price_zscore": 1.5,
    }
    book_ = kw.pop("book", DEEP)
    vals.update(kw)
    f = fv(vals)
    f.book = book_
    f.window_obs = 61
    return f


def score(
    f: FeatureVector, r: RegimeState, stale: bool = False, scorer: EdgeScorer = SCORER
) -> tuple[Signals, Edge]:
    sig = compute_signals(f, r)
    return sig, scorer.score(f, r, sig, stale)


MOMENTUM = round(math.tanh(2.0 / 2.0), 4)  # 0.7616
RAW_TREND_09 = round(0.9 * (0.5 * MOMENTUM + 0.3 * (1.0 + 0.4) / 2.0 + 0.2 * 0.8), 4)  # 0.6757


# -- trending -------------------------------------------------------------------------------------


def test_trending_up_with_confirming_flow_is_long_and_calibrated() -> None:
    f = trend_fv()
    sig, edge = score(f, rs(T, 0.9))
    assert sig.momentum == MOMENTUM == 0.7616
    assert sig.liquidity == 0.8  # spread ratio 1.25 -> 0.8; depth capped at 1
    assert edge.direction is Direction.LONG
    assert edge.raw_score == RAW_TREND_09 == 0.6757
    # raw 0.6757 falls in the [0.6, 1.0] bin: right 70 % of the time at 60 s
    assert edge.calibration == "test-table-1"
    assert edge.horizon_ms == 60_000
    assert edge.p_right == edge.score == 0.7
    # BTC's own mean |move| at 60 s is 30 bps: (2·0.7 − 1)·30 = 12 bps
    assert edge.expected_move_bps == pytest.approx(12.0)
    # costs: 4.5 fee + 1.0 half spread + 0 slippage (the touch holds 10,000 USD)
    assert (edge.fee_bps, edge.half_spread_bps, edge.slippage_bps) == (4.5, 1.0, 0.0)
    assert edge.cost_bps == pytest.approx(5.5)
    assert edge.net_edge_bps == pytest.approx(6.5)
    assert edge.size_usd == 10_000.0
    assert edge.actionable
    assert edge.explain == (
        Explain.REGIME_TRENDING,
        Explain.REGIME_STABLE,
        Explain.LIQUIDITY_GOOD,
        Explain.MOMENTUM_UP,
        Explain.FLOW_CONFIRMS,
        Explain.NET_EDGE_POSITIVE,
    )


def test_trending_down_with_selling_flow_is_short() -> None:
    f = trend_fv(momentum_bps=-200.0, momentum_z=-2.0, trade_flow_imbalance=-0.4, coin="ETH")
    _, edge = score(f, rs(T, 0.9))
    assert edge.direction is Direction.SHORT
    assert edge.raw_score == RAW_TREND_09  # symmetric with the long case
    assert Explain.MOMENTUM_DOWN in edge.explain
    assert Explain.FLOW_CONFIRMS in edge.explain
    # the coin (fv default BTC) has its own mean |move| in the table
    assert edge.expected_move_bps == pytest.approx(12.0)


def test_coin_without_its_own_move_uses_the_pooled_mean() -> None:
    f = trend_fv()
    f.coin = "SOL"
    _, edge = score(f, rs(T, 0.9))
    assert edge.expected_move_bps == pytest.approx((2 * 0.7 - 1) * 20.0)


def test_weak_calls_cost_more_than_they_expect() -> None:
    _, edge = score(trend_fv(), rs(T, 0.5))  # raw 0.3754 -> p 0.55 -> 0.1·30 = 3 bps
    assert edge.raw_score == round(0.5 * 0.7508, 4)
    assert edge.p_right == 0.55
    assert edge.expected_move_bps == pytest.approx(3.0)
    assert edge.net_edge_bps == pytest.approx(3.0 - 5.5)
    assert not edge.actionable
    assert edge.explain[-1] is Explain.COSTS_EXCEED_EDGE
    _, edge = score(trend_fv(), rs(T, 0.2))  # raw 0.15 -> p 0.45: expected to lose
    assert edge.p_right == edge.score == 0.45
    assert edge.expected_move_bps == pytest.approx(-3.0)
    assert not edge.actionable


def test_slippage_walks_the_book_for_the_stated_size() -> None:
    thin = book("BTC", 900, [(99.9, 200.0)], [(100.0, 50.0), (101.0, 100.0)])
    f = trend_fv(book=thin)
    # buying 10,000 USD: 5,000 at 100, 5,000 at 101 -> VWAP 10,000/(50 + 5,000/101)
    fill = 10_000.0 / (50.0 + 5_000.0 / 101.0)
    mid = (99.9 + 100.0) / 2
    want = 1e4 * (fill - 100.0) / mid
    assert slippage_bps(f, Direction.LONG, 10_000.0) == pytest.approx(want)
    assert slippage_bps(f, Direction.SHORT, 10_000.0) == 0.0  # 19,980 USD at the touch
    assert slippage_bps(f, Direction.SHORT, 20_000.0) is None  # deeper than the book
    assert slippage_bps(f, Direction.FLAT, 10_000.0) is None
    _, edge = score(f, rs(T, 0.9))
    assert edge.slippage_bps == pytest.approx(round(want, 4))
    assert edge.cost_bps == pytest.approx(round(4.5 + 1.0 + round(want, 4), 4))
    assert not edge.actionable
    assert Explain.COSTS_EXCEED_EDGE in edge.explain
    # a bigger size walks deeper
    big = EdgeScorer(EdgeConfig(taker_fee_bps=4.5, size_usd=50_000.0), calibration=CAL)
    _, edge = score(f, rs(T, 0.9), scorer=big)
    assert edge.slippage_bps is None
    assert edge.size_usd == 50_000.0
    assert Explain.BOOK_TOO_THIN in edge.explain
    assert Explain.COST_UNKNOWN in edge.explain
    assert not edge.actionable


def test_fee_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap = EdgeScorer(EdgeConfig(taker_fee_bps=1.0), calibration=CAL)
    _, edge = score(trend_fv(), rs(T, 0.5), scorer=cheap)
    assert edge.cost_bps == pytest.approx(2.0)
    assert edge.net_edge_bps == pytest.approx(1.0)
    assert edge.actionable
    monkeypatch.setenv("HLSL_TAKER_FEE_BPS", "2.5")
    monkeypatch.setenv("HLSL_EDGE_SIZE_USD", "25000")
    assert (EdgeConfig().taker_fee_bps, EdgeConfig().size_usd) == (2.5, 25_000.0)
    monkeypatch.setenv("HLSL_TAKER_FEE_BPS", "-1")
    with pytest.raises(ValueError, match="HLSL_TAKER_FEE_BPS"):
        EdgeConfig()
    monkeypatch.delenv("HLSL_TAKER_FEE_BPS")
    monkeypatch.delenv("HLSL_EDGE_SIZE_USD")
    assert (EdgeConfig().taker_fee_bps, EdgeConfig().size_usd) == (4.5, 10_000.0)


def test_without_a_book_or_spread_the_cost_is_unknown() -> None:
    f = trend_fv(book=None, spread_bps=None, spread_ratio=None, depth_ratio=None)
    _, edge = score(f, rs(T, 0.9))
    assert edge.direction is Direction.LONG
    assert edge.p_right is not None
    assert (edge.half_spread_bps, edge.slippage_bps, edge.cost_bps) == (None, None, None)
    assert edge.net_edge_bps is None
    assert not edge.actionable
    assert Explain.COST_UNKNOWN in edge.explain
    assert Explain.BOOK_TOO_THIN not in edge.explain


def test_uncalibrated_score_is_the_raw_strength_and_never_actionable() -> None:
    _, edge = score(trend_fv(), rs(T, 0.9), scorer=UNCAL)
    assert edge.calibration == UNCALIBRATED
    assert edge.score == edge.raw_score == RAW_TREND_09
    assert edge.p_right is None
    assert edge.expected_move_bps is None
    assert edge.cost_bps == pytest.approx(5.5)  # costs are still measured
    assert edge.net_edge_bps is None
    assert not edge.actionable
    assert Explain.UNCALIBRATED in edge.explain
    assert edge.horizon_ms == 60_000


def test_flow_against_the_trend_vetoes() -> None:
    _, edge = score(trend_fv(trade_flow_imbalance=-0.5), rs(T, 1.0))
    assert edge.direction is Direction.FLAT
    assert (edge.score, edge.raw_score, edge.p_right) == (0.0, 0.0, None)
    assert edge.cost_bps is None
    assert not edge.actionable
    assert Explain.FLOW_CONTRADICTS in edge.explain
    assert Explain.FLOW_CONFIRMS not in edge.explain
    # mildly against (above the -0.2 veto): still a call, with less agreement
    _, edge = score(trend_fv(trade_flow_imbalance=-0.1), rs(T, 1.0))
    assert edge.direction is Direction.LONG
    assert edge.raw_score == round(0.5 * MOMENTUM + 0.3 * 0.45 + 0.2 * 0.8, 4)
    assert Explain.FLOW_CONFIRMS not in edge.explain
    assert Explain.FLOW_CONTRADICTS not in edge.explain


def test_order_flow_imbalance_is_explained() -> None:
    _, edge = score(trend_fv(ofi_norm=3.0), rs(T, 0.9))
    assert Explain.ORDER_FLOW_CONFIRMS in edge.explain
    _, edge = score(trend_fv(ofi_norm=-3.0), rs(T, 0.9))
    assert Explain.ORDER_FLOW_CONTRADICTS in edge.explain
    assert edge.raw_score == RAW_TREND_09  # explained, not (yet) scored


def test_unknown_flow_and_liquidity_count_as_half() -> None:
    f = trend_fv(trade_flow_imbalance=None, spread_ratio=None, depth_ratio=None)
    sig, edge = score(f, rs(T, 1.0))
    assert sig.liquidity is None
    assert edge.raw_score == round(0.5 * MOMENTUM + 0.3 * 0.5 + 0.2 * 0.5, 4)
    assert Explain.LIQUIDITY_UNKNOWN in edge.explain
    assert edge.actionable  # unknown liquidity does not block


def test_poor_liquidity_is_never_actionable() -> None:
    f = trend_fv(momentum_bps=1000.0, momentum_z=10.0, trade_flow_imbalance=1.0, spread_ratio=5.0)
    sig, edge = score(f, rs(T, 1.0))
    assert sig.liquidity == 0.2
    assert edge.net_edge_bps is not None
    assert edge.net_edge_bps > 0
    assert not edge.actionable
    assert Explain.LIQUIDITY_POOR in edge.explain


# -- mean reversion -------------------------------------------------------------------------------


def test_mean_reverting_above_mean_is_short() -> None:
    f = trend_fv(price_zscore=2.0, momentum_bps=20.0, momentum_z=0.2)
    sig, edge = score(f, rs(MR, 0.9))
    assert sig.momentum == round(math.tanh(0.1), 4) == 0.0997
    raw = round(0.9 * (0.6 * min(1.0, 2.0 / 3.0) + 0.2 * (1 - 0.0997) + 0.2 * 0.8), 4)
    assert edge.direction is Direction.SHORT
    assert edge.raw_score == raw == 0.6661
    assert edge.p_right == 0.7
    assert edge.actionable
    assert edge.explain == (
        Explain.REGIME_MEAN_REVERTING,
        Explain.REGIME_STABLE,
        Explain.LIQUIDITY_GOOD,
        Explain.PRICE_ABOVE_MEAN,
        Explain.NET_EDGE_POSITIVE,
    )


def test_mean_reverting_below_mean_is_long_and_z_caps_at_3() -> None:
    _, edge = score(trend_fv(price_zscore=-4.5, momentum_bps=20.0, momentum_z=0.2), rs(MR, 1.0))
    assert edge.direction is Direction.LONG
    assert edge.raw_score == round(0.6 * 1.0 + 0.2 * (1 - 0.0997) + 0.2 * 0.8, 4)
    assert Explain.PRICE_BELOW_MEAN in edge.explain


@pytest.mark.parametrize("z", [0.0, 0.5, -0.99, None])
def test_mean_reverting_near_the_mean_is_flat(z: float | None) -> None:
    _, edge = score(trend_fv(price_zscore=z), rs(MR, 1.0))
    assert edge.direction is Direction.FLAT
    assert edge.score == 0.0
    assert not edge.actionable
    assert Explain.PRICE_AT_MEAN in edge.explain


# -- regimes without an edge, staleness, warm-up --------------------------------------------------


@pytest.mark.parametrize("label", [CH, LIQ, UNK])
def test_no_edge_regimes_are_flat(label: RegimeLabel) -> None:
    f = trend_fv(momentum_bps=1000.0, trade_flow_imbalance=1.0, price_zscore=3.0)
    stresses = ("one_sided_flow", "oi_drop") if label is LIQ else ()
    _, edge = score(f, rs(label, 1.0, stresses=stresses))
    assert edge.direction is Direction.FLAT
    assert edge.score == 0.0
    assert not edge.actionable
    assert edge.explain[0] is Explain(f"REGIME_{label.value}")
    if label is LIQ:
        assert Explain.ONE_SIDED_FLOW in edge.explain
        assert Explain.OI_DROP in edge.explain
    if label is UNK:
        assert Explain.REGIME_STABLE not in edge.explain
        assert Explain.REGIME_NEW not in edge.explain


def test_stale_input_is_never_actionable() -> None:
    f = trend_fv()
    _, fresh = score(f, rs(T, 1.0))
    _, stale = score(f, rs(T, 1.0), stale=True)
    assert fresh.actionable
    assert not stale.actionable
    assert stale.score == fresh.score
    assert stale.direction is Direction.LONG
    assert Explain.STALE_INPUT in stale.explain
    assert Explain.STALE_INPUT not in fresh.explain


def test_warming_up_is_never_actionable() -> None:
    f = fv(dict(trend_fv().values), observations=10, warmup_obs=30)
    f.book = DEEP
    _, edge = score(f, rs(T, 1.0))
    assert edge.net_edge_bps is not None
    assert edge.net_edge_bps > 0
    assert not edge.actionable
    assert edge.explain[1] is Explain.WARMING_UP


def test_explain_flags_for_regime_state() -> None:
    f = trend_fv(vol_expansion_ratio=1.8)
    r = rs(T, 1.0, dwell=4, candidate=MR, inputs_missing=("quotes", "book"))
    _, edge = score(f, r)
    assert edge.explain[:5] == (
        Explain.REGIME_TRENDING,
        Explain.REGIME_NEW,
        Explain.REGIME_CHANGE_PENDING,
        Explain.VOL_EXPANSION,
        Explain.DEGRADED_INPUTS,
    )
    _, edge = score(fv(mid_px=None, price_source=None), rs(UNK, rule=Rule.NO_PRICE))
    assert Explain.NO_PRICE_INPUT in edge.explain


def test_explain_codes_are_members_and_unique_and_actionable_means_net_positive() -> None:
    rng = random.Random(3)
    labels = list(RegimeLabel)
    stresses = ("one_sided_flow", "spread_blowout", "depth_collapse", "oi_drop")
    for _ in range(3000):
        vals = {
            n: rng.choice([None, rng.uniform(lo, hi)])
            for n, lo, hi in (
                ("momentum_bps", -500.0, 500.0),
                ("momentum_z", -5.0, 5.0),
                ("realized_vol_bps", 0.0, 300.0),
                ("trade_flow_imbalance", -1.0, 1.0),
                ("trade_rate_burst", 0.0, 10.0),
                ("spread_bps", 0.0, 20.0),
                ("spread_ratio", 0.0, 6.0),
                ("depth_ratio", 0.0, 3.0),
                ("volume_ratio", 0.0, 3.0),
                ("vol_expansion_ratio", 0.0, 4.0),
                ("price_zscore", -4.0, 4.0),
                ("oi_change_pct", -5.0, 5.0),
                ("ofi_norm", -5.0, 5.0),
            )
        }
        f = fv(vals, observations=rng.randint(0, 60))
        f.book = rng.choice([None, DEEP])
        f.window_obs = 61
        label = rng.choice(labels)
        r = rs(
            label,
            rng.random(),
            dwell=rng.randint(1, 9),
            candidate=rng.choice([None, *labels]),
            stresses=tuple(rng.sample(stresses, rng.randint(0, 4))) if label is LIQ else (),
            inputs_missing=tuple(rng.sample(["quotes", "book", "trades"], rng.randint(0, 3))),
        )
        sig, edge = score(f, r, stale=rng.random() < 0.2, scorer=rng.choice([SCORER, UNCAL]))
        assert all(isinstance(c, Explain) for c in edge.explain)
        assert len(set(edge.explain)) == len(edge.explain)
        assert 0.0 <= edge.score <= 1.0
        assert 0.0 <= edge.raw_score <= 1.0
        for x in (sig.momentum, sig.liquidity, sig.risk):
            assert x is None or 0.0 <= x <= 1.0
        if edge.direction is Direction.FLAT:
            assert edge.score == 0.0
            assert edge.p_right is None
            assert not edge.actionable
        elif edge.p_right is not None:
            assert edge.score == edge.p_right
        else:
            assert edge.score == edge.raw_score
        if edge.actionable:
            assert edge.net_edge_bps is not None
            assert edge.net_edge_bps > 0
            assert edge.calibration == "test-table-1"
            assert label in (T, MR)


# -- the calibration table ------------------------------------------------------------------------


def test_calibration_lookup_is_a_monotone_step_function() -> None:
    hc = CAL.horizons[60_000]
    assert [hc.p_right(x) for x in (-1.0, 0.0, 0.29, 0.3, 0.59, 0.6, 1.0, 2.0)] == [
        0.45,
        0.45,
        0.45,
        0.55,
        0.55,
        0.7,
        0.7,
        0.7,
    ]
    assert hc.mean_abs_move("BTC") == 30.0
    assert hc.mean_abs_move("ETH") == 20.0
    assert CAL.horizon_for(1) is hc
    assert CAL.horizon_for(60_000) is hc
    assert CAL.horizon_for(60_001) is CAL.horizons[3_600_000]
    assert CAL.horizon_for(3_600_001) is None


def test_calibration_pools_adjacent_violators() -> None:
    doc = json.loads(json.dumps(TABLE))
    # bins out of order and not monotone: 0.6 (n 100) then 0.5 (n 300) pool to 0.525
    doc["horizons"]["60000"]["bins"] = [
        [0.5, 1.0, 0.5, 300],
        [0.0, 0.2, 0.4, 50],
        [0.2, 0.5, 0.6, 100],
    ]
    hc = parse(doc).horizons[60_000]
    assert hc.lo == (0.0, 0.2, 0.5)
    assert hc.p == pytest.approx((0.4, 0.525, 0.525))


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"version": ""}, "version"),
        ({"version": "uncalibrated"}, "version"),
        ({"horizons": {}}, "horizons"),
        ({"horizons": {"1m": TABLE["horizons"]["60000"]}}, "not an integer"),
        ({"default_horizon_ms": 5}, "default_horizon_ms"),
        ({"horizons": {"60000": {"bins": [], "mean_abs_move_bps": 1.0}}}, "bins"),
        ({"horizons": {"60000": {"bins": [[0, 1, 1.5, 3]], "mean_abs_move_bps": 1.0}}}, "bad bin"),
        ({"horizons": {"60000": {"bins": [[0, 1, 0.5, 3]], "mean_abs_move_bps": "x"}}}, "number"),
    ],
)
def test_malformed_calibration_tables_are_refused(patch: dict[str, Any], message: str) -> None:
    doc = {**TABLE, **patch}
    with pytest.raises(ValueError, match=message):
        parse(doc)


def test_calibration_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(TABLE), encoding="utf-8")
    monkeypatch.setenv(calibration.ENV_VAR, str(path))
    cal = calibration.load_default()
    assert isinstance(cal, Calibration)
    assert (cal.version, cal.path) == ("test-table-1", str(path))
    monkeypatch.setenv(calibration.ENV_VAR, "none")
    assert calibration.load_default() is None
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    monkeypatch.setenv(calibration.ENV_VAR, str(bad))
    with pytest.raises(ValueError, match="not JSON"):
        calibration.load_default()


def test_the_committed_table_if_any_is_valid() -> None:
    if not calibration.DEFAULT_PATH.is_file():
        pytest.skip("no calibration table committed yet")
    cal = calibration.load(calibration.DEFAULT_PATH)
    assert cal.version != UNCALIBRATED
    assert cal.default_horizon_ms in cal.horizons
    for hc in cal.horizons.values():
        assert list(hc.p) == sorted(hc.p)  # monotone
        assert all(0.0 <= p <= 1.0 for p in hc.p)


def test_horizon_is_snapped_to_the_table_and_widened_for_coarse_bars() -> None:
    f = trend_fv()
    assert SCORER.horizon(f) == (60_000, "test-table-1", 30.0)
    # 5-minute candles: 60 observations span 59 intervals of 300 s -> at least 5 x 300 s
    coarse = trend_fv()
    coarse.window_span_ms = 59 * 300_000
    coarse.window_obs = 60
    assert SCORER.horizon(coarse) == (3_600_000, "test-table-1", 80.0)
    only_short = parse({**TABLE, "horizons": {"60000": TABLE["horizons"]["60000"]}})
    scorer = EdgeScorer(calibration=only_short)
    assert scorer.horizon(coarse) == (1_500_000, UNCALIBRATED, None)
    assert UNCAL.horizon(coarse) == (1_500_000, UNCALIBRATED, None)
    fixed = EdgeScorer(EdgeConfig(horizon_ms=5_000), calibration=CAL)
    assert fixed.horizon(f) == (60_000, "test-table-1", 30.0)  # the shortest horizon >= 5 s


# -- signals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("z", "want"),
    [
        (2.0, round(math.tanh(1.0), 4)),
        (-2.0, round(math.tanh(1.0), 4)),
        (1.5, round(math.tanh(0.75), 4)),
        (0.0, 0.0),
        (None, None),
    ],
)
def test_momentum_signal(z: float | None, want: float | None) -> None:
    sig = compute_signals(fv(momentum_z=z), rs(T))
    assert sig.momentum == want


@pytest.mark.parametrize(
    ("values", "want"),
    [
        ({"spread_ratio": 2.0, "depth_ratio": 0.6}, 0.5),
        ({"spread_ratio": 2.0, "depth_ratio": 0.3}, 0.3),
        ({"spread_ratio": 0.5, "depth_ratio": 2.0}, 1.0),
        ({"spread_ratio": 4.0}, 0.25),
        ({"depth_ratio": 0.45}, 0.45),
        ({"spread_ratio": 2.0, "volume_ratio": 0.1}, 0.5),  # volume only when neither exists
        ({"volume_ratio": 0.35}, 0.35),
        ({"volume_ratio": 3.0}, 1.0),
        ({"spread_ratio": 0.0, "volume_ratio": 0.2}, 0.2),  # a zero spread ratio is no input
        ({}, None),
    ],
)
def test_liquidity_signal(values: dict[str, float], want: float | None) -> None:
    assert compute_signals(fv(values), rs(T)).liquidity == want


def test_risk_signal_formula() -> None:
    terms = {
        "vol_expansion_ratio": (2.0, 1 - math.exp(-1.0)),
        "spread_ratio": (3.0, 1 - math.exp(-1.0)),
        "depth_ratio": (0.25, 0.75),
        "trade_flow_imbalance": (-0.9, 0.8),
        "trade_rate_burst": (4.0, 1 - math.exp(-1.0)),
        "oi_change_pct": (-1.0, 0.5),
    }
    for name, (x, want) in terms.items():
        assert compute_signals(fv({name: x}), rs(T)).risk == round(want, 4), name
    allv = {n: x for n, (x, _) in terms.items()}
    assert compute_signals(fv(allv), rs(T)).risk == 0.8
    calm = {
        "vol_expansion_ratio": 0.8,
        "spread_ratio": 0.9,
        "depth_ratio": 1.2,
        "trade_flow_imbalance": 0.3,
        "trade_rate_burst": 0.7,
        "oi_change_pct": 2.0,
    }
    assert compute_signals(fv(calm), rs(T)).risk == 0.0
    assert compute_signals(fv({"depth_ratio": 0.0, "oi_change_pct": -10.0}), rs(T)).risk == 1.0
    assert compute_signals(fv(), rs(T)).risk is None


def test_liquidation_risk_forces_risk_at_least_0_8() -> None:
    assert compute_signals(fv(), rs(LIQ)).risk == 0.8
    assert compute_signals(fv(vol_expansion_ratio=1.5), rs(LIQ)).risk == 0.8
    assert compute_signals(fv(depth_ratio=0.05), rs(LIQ)).risk == 0.95
    assert compute_signals(fv(vol_expansion_ratio=1.5), rs(CH)).risk == round(1 - math.exp(-0.5), 4)


# -- freshness as of the bar close ----------------------------------------------------------------


def test_freshness_block_matches_judge_all_and_overall() -> None:
    rng = random.Random(4)
    for _ in range(500):
        f = fv()
        clocks = {}
        for s in rng.sample(list(STREAMS), rng.randint(0, len(STREAMS))):
            last = rng.randint(0, 100_000)
            clocks[s] = StreamClock(
                last, rng.choice([None, last + 300]), 5, rng.choice([None, rng.uniform(10, 20_000)])
            )
        f.streams = clocks
        as_of = rng.randint(0, 200_000)
        block = freshness_block(f, as_of)
        judged = judge_all(clocks, as_of)
        assert block["status"] == overall(judged).value
        assert list(block["streams"]) == [s.value for s in STREAMS]
        for s, j in judged.items():
            b = block["streams"][s.value]
            assert b == {
                "status": j.status.value,
                "last_exchange_ms": j.last_exchange_ms,
                "last_recv_ms": j.last_recv_ms,
                "age_ms": j.age_ms,
                "expected_interval_ms": j.expected_interval_ms,
                "reason": j.reason,
            }


# -- the score step -------------------------------------------------------------------------------


def with_streams(f: FeatureVector, ages: dict[Stream, int]) -> FeatureVector:
    f.streams = {s: StreamClock(f.close_ms - age, None, 10, 1000.0) for s, age in ages.items()}
    return f


def test_score_step_judges_freshness_at_bar_close(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operators.edge, "CALIBRATION", CAL)  # the default table, too
    fresh = with_streams(trend_fv(), {Stream.BBO: 100, Stream.TRADES: 5_000})
    stale = with_streams(trend_fv(), {Stream.BBO: 20_000, Stream.TRADES: 5_000})
    inp = [("BTC", (fresh, rs(T, 1.0))), ("ETH", (stale, rs(T, 1.0)))]
    flow = Dataflow("score_test")
    up = op.input("in", flow, TestingSource(inp))
    out: list[tuple[str, steps.Scored]] = []
    op.output("out", steps.score("score", up, EdgeConfig(taker_fee_bps=4.5), CAL), TestingSink(out))
    run_main(flow)
    by = dict(out)
    b, e = by["BTC"], by["ETH"]
    assert b.freshness["status"] == "ok"
    assert b.freshness["as_of_ms"] == fresh.close_ms
    assert b.freshness["streams"]["bbo"]["age_ms"] == 100
    assert b.freshness["streams"]["l2Book"]["status"] == "missing"
    assert b.edge.actionable
    assert b.edge.calibration == "test-table-1"
    assert b.edge.raw_score == round(0.5 * MOMENTUM + 0.3 * 0.7 + 0.2 * 0.8, 4)
    assert b.signals == compute_signals(fresh, rs(T, 1.0))
    assert e.freshness["status"] == "stale"
    assert e.freshness["streams"]["bbo"]["status"] == "stale"  # 20 s > max(10 s, 5 x 1 s)
    assert not e.edge.actionable
    assert Explain.STALE_INPUT in e.edge.explain
    assert e.edge.score == b.edge.score


# -- the envelope ---------------------------------------------------------------------------------


def synthetic_bars() -> list[tuple[str, Bar]]:
    rng = random.Random(11)
    out: list[tuple[str, Bar]] = []
    px = 100.0
    for k in range(90):
        t = k * 1000
        px *= math.exp(0.0015 + rng.gauss(0.0, 0.0005)) if k < 60 else math.exp(rng.gauss(0, 0.004))
        events: list[Event] = [
            bbo("BTC", t + 100, px - 0.01, 2.0, px + 0.01, 1.0),
            book("BTC", t + 200, [(px - 0.01, 2.0), (px - 0.02, 5.0)], [(px + 0.01, 1.0)]),
            ctx("BTC", t + 300, oi=1000.0 - k, mid_px=px, premium=0.0001),
        ]
        if k % 2 == 0:
            events.append(trades("BTC", t + 400, [(px, 1.0, "B"), (px, 0.3, "A")]))
        out.append(("BTC", bar("BTC", t, events)))
        if k % 10 == 9:  # a 10 s "candle" for a candle-only coin
            c = 50.0 + k / 10
            ev = candle("ALT", t - 9000, t + 999, c - 0.1, c + 0.3, c - 0.2, c, v=5.0 + k % 3)
            out.append(("ALT", bar("ALT", t, [ev])))
    return out


def test_envelopes_from_the_steps_validate_against_the_api_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(operators.edge, "CALIBRATION", CAL)
    cfg = steps.SignalConfig(
        features=FeatureConfig(window_obs=10, short_obs=3, long_obs=30, warmup_obs=5),
        regime=RegimeConfig(),
        edge=EdgeConfig(),
    )
    flow = Dataflow("envelope_test")
    up = op.input("in", flow, TestingSource(synthetic_bars(), batch_size=16))
    fvs = steps.features("features", up, cfg.features)
    regimes = steps.regime("regime", fvs, cfg.regime)
    scored = steps.score("score", regimes, cfg.edge, CAL)
    envs = steps.envelope("envelope", scored, Producer("test-1", 1000, 1000))
    out: list[tuple[str, dict[str, Any]]] = []
    op.output("out", envs, TestingSink(out))
    run_main(flow)
    assert len(out) == 90 + 9
    labels = set()
    for coin, env in out:
        model = SignalEnvelope.model_validate(env)
        assert model.coin == coin
        assert env["producer"] == {"code_version": "test-1", "bar_ms": 1000, "lateness_ms": 1000}
        for name, value in env["features"].items():
            assert (value is None) == (name in env["features_missing"]), (coin, name)
        labels.add((coin, env["regime"]["label"]))
    btc = [e for c, e in out if c == "BTC"]
    assert btc[0]["regime"]["label"] == "UNKNOWN"
    assert btc[0]["warmup"] == {
        "warming_up": True,
        "observations": 1,
        "required": 5,
        "coverage": 0.2,
    }
    assert ("BTC", "TRENDING") in labels
    assert any(e["direction"] == "LONG" for e in btc)
    for env in btc:
        edge = env["edge"]
        assert edge["calibration"] == "test-table-1"
        assert edge["size_usd"] == EdgeConfig().size_usd
        assert env["regime"]["n_inputs_max"] == 9
        if edge["direction"] == "FLAT":
            assert (edge["score"], edge["p_right"], edge["cost_bps"]) == (0.0, None, None)
        else:
            assert edge["score"] == edge["p_right"]
            assert edge["costs"]["fee_bps"] == EdgeConfig().taker_fee_bps
            if edge["cost_bps"] is not None:
                assert edge["net_edge_bps"] == pytest.approx(
                    edge["expected_move_bps"] - edge["cost_bps"], abs=2e-4
                )
        assert edge["actionable"] == (
            edge["net_edge_bps"] is not None
            and edge["net_edge_bps"] > 0
            and env["regime"]["label"] in ("TRENDING", "MEAN_REVERTING")
            and not env["warmup"]["warming_up"]
            and env["freshness"]["status"] != "stale"
            and (env["signals"]["liquidity"] is None or env["signals"]["liquidity"] >= 0.3)
        )
    alt = [e for c, e in out if c == "ALT"]
    assert alt[-1]["bar"]["price_source"] == "candle_close"
    # 10 s "candles" with a 60 s table default: 5 intervals of ~10 s stay under it
    assert alt[-1]["edge"]["horizon_ms"] == 60_000
    assert "quotes" in alt[-1]["regime"]["inputs_missing"]
