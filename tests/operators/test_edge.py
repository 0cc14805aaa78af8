"""compute_signals and EdgeScorer by hand, the score step under run_main, and the envelope."""

from __future__ import annotations

import math
import random
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from api.schemas import SignalEnvelope
from connectors.events import Event, Stream
from operators import steps
from operators.bars import Bar
from operators.edge import Direction, EdgeConfig, EdgeScorer, Explain, Signals, compute_signals
from operators.envelope import Producer
from operators.features import FeatureConfig, FeatureVector
from operators.freshness import StreamClock
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
SCORER = EdgeScorer()


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
        "realized_vol_bps": 100.0,
        "trade_flow_imbalance": 0.4,
        "spread_ratio": 1.25,
        "depth_ratio": 1.5,
        "vol_expansion_ratio": 1.0,
        "efficiency_ratio": 0.7,
        "price_zscore": 1.5,
    }
    vals.update(kw)
    return fv(vals)


def score(f: FeatureVector, r: RegimeState, stale: bool = False) -> tuple[Signals, Any]:
    sig = compute_signals(f, r)
    return sig, SCORER.score(f, r, sig, stale)


# -- trending -------------------------------------------------------------------------------------


def test_trending_up_with_confirming_flow_is_long() -> None:
    f = trend_fv()
    sig, edge = score(f, rs(T, 0.9))
    momentum = round(math.tanh(200.0 / 100.0 / 2.0), 4)  # 0.7616
    liquidity = min(1.0 / 1.25, 1.0)  # spread 0.8, depth capped at 1
    assert sig.momentum == momentum == 0.7616
    assert sig.liquidity == 0.8
    want = round(0.9 * (0.5 * momentum + 0.3 * (1.0 + 0.4) / 2.0 + 0.2 * liquidity), 4)
    assert want == 0.6757
    assert edge.direction is Direction.LONG
    assert edge.score == want
    assert edge.actionable
    assert edge.horizon_ms == f.window_span_ms == 60_000
    assert edge.explain == (
        Explain.REGIME_TRENDING,
        Explain.REGIME_STABLE,
        Explain.LIQUIDITY_GOOD,
        Explain.MOMENTUM_UP,
        Explain.FLOW_CONFIRMS,
    )


def test_trending_down_with_selling_flow_is_short() -> None:
    _, edge = score(trend_fv(momentum_bps=-200.0, trade_flow_imbalance=-0.4), rs(T, 0.9))
    assert edge.direction is Direction.SHORT
    assert edge.score == 0.6757  # symmetric with the long case
    assert Explain.MOMENTUM_DOWN in edge.explain
    assert Explain.FLOW_CONFIRMS in edge.explain


def test_score_below_threshold_is_not_actionable() -> None:
    _, edge = score(trend_fv(), rs(T, 0.7))
    assert edge.direction is Direction.LONG
    assert edge.score == round(0.7 * 0.7508, 4) == 0.5256
    assert not edge.actionable
    assert edge.explain[-1] is Explain.SCORE_BELOW_THRESHOLD
    # exactly at the threshold counts: confidence chosen so the score is 0.55 after rounding
    _, edge = score(trend_fv(), rs(T, 0.55 / 0.7508))
    assert edge.score == 0.55
    assert edge.actionable


def test_flow_against_the_trend_vetoes() -> None:
    _, edge = score(trend_fv(trade_flow_imbalance=-0.5), rs(T, 1.0))
    assert edge.direction is Direction.FLAT
    assert edge.score == 0.0
    assert not edge.actionable
    assert Explain.FLOW_CONTRADICTS in edge.explain
    assert Explain.FLOW_CONFIRMS not in edge.explain
    # mildly against (above the -0.2 veto): still a call, with less agreement
    _, edge = score(trend_fv(trade_flow_imbalance=-0.1), rs(T, 1.0))
    assert edge.direction is Direction.LONG
    assert edge.score == round(0.5 * 0.7616 + 0.3 * 0.45 + 0.2 * 0.8, 4)
    assert Explain.FLOW_CONFIRMS not in edge.explain
    assert Explain.FLOW_CONTRADICTS not in edge.explain


def test_unknown_flow_and_liquidity_count_as_half() -> None:
    f = trend_fv(trade_flow_imbalance=None, spread_ratio=None, depth_ratio=None)
    sig, edge = score(f, rs(T, 1.0))
    assert sig.liquidity is None
    assert edge.score == round(0.5 * 0.7616 + 0.3 * 0.5 + 0.2 * 0.5, 4)
    assert Explain.LIQUIDITY_UNKNOWN in edge.explain
    assert edge.actionable  # unknown liquidity does not block


def test_poor_liquidity_is_never_actionable() -> None:
    f = trend_fv(momentum_bps=1000.0, trade_flow_imbalance=1.0, spread_ratio=5.0)
    sig, edge = score(f, rs(T, 1.0))
    assert sig.liquidity == 0.2
    assert edge.score == round(0.5 * round(math.tanh(5.0), 4) + 0.3 + 0.2 * 0.2, 4)
    assert edge.score >= 0.55
    assert not edge.actionable
    assert Explain.LIQUIDITY_POOR in edge.explain


# -- mean reversion -------------------------------------------------------------------------------


def test_mean_reverting_above_mean_is_short() -> None:
    f = trend_fv(price_zscore=2.0, momentum_bps=20.0)
    sig, edge = score(f, rs(MR, 0.9))
    assert sig.momentum == round(math.tanh(0.1), 4) == 0.0997
    want = round(0.9 * (0.6 * min(1.0, 2.0 / 3.0) + 0.2 * (1 - 0.0997) + 0.2 * 0.8), 4)
    assert edge.direction is Direction.SHORT
    assert edge.score == want == 0.6661
    assert edge.actionable
    assert edge.explain == (
        Explain.REGIME_MEAN_REVERTING,
        Explain.REGIME_STABLE,
        Explain.LIQUIDITY_GOOD,
        Explain.PRICE_ABOVE_MEAN,
    )


def test_mean_reverting_below_mean_is_long_and_z_caps_at_3() -> None:
    _, edge = score(trend_fv(price_zscore=-4.5, momentum_bps=20.0), rs(MR, 1.0))
    assert edge.direction is Direction.LONG
    assert edge.score == round(0.6 * 1.0 + 0.2 * (1 - 0.0997) + 0.2 * 0.8, 4)
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
    _, edge = score(f, rs(T, 1.0))
    assert edge.score > 0.55
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


def test_explain_codes_are_members_and_unique() -> None:
    rng = random.Random(3)
    labels = list(RegimeLabel)
    stresses = ("one_sided_flow", "spread_blowout", "depth_collapse", "oi_drop")
    for _ in range(3000):
        vals = {
            n: rng.choice([None, rng.uniform(lo, hi)])
            for n, lo, hi in (
                ("momentum_bps", -500.0, 500.0),
                ("realized_vol_bps", 0.0, 300.0),
                ("trade_flow_imbalance", -1.0, 1.0),
                ("spread_ratio", 0.0, 6.0),
                ("depth_ratio", 0.0, 3.0),
                ("volume_ratio", 0.0, 3.0),
                ("vol_expansion_ratio", 0.0, 4.0),
                ("price_zscore", -4.0, 4.0),
                ("oi_change_pct", -5.0, 5.0),
            )
        }
        f = fv(vals, observations=rng.randint(0, 60))
        label = rng.choice(labels)
        r = rs(
            label,
            rng.random(),
            dwell=rng.randint(1, 9),
            candidate=rng.choice([None, *labels]),
            stresses=tuple(rng.sample(stresses, rng.randint(0, 4))) if label is LIQ else (),
            inputs_missing=tuple(rng.sample(["quotes", "book", "trades"], rng.randint(0, 3))),
        )
        sig, edge = score(f, r, stale=rng.random() < 0.2)
        assert all(isinstance(c, Explain) for c in edge.explain)
        assert len(set(edge.explain)) == len(edge.explain)
        assert 0.0 <= edge.score <= 1.0
        for x in (sig.momentum, sig.liquidity, sig.risk):
            assert x is None or 0.0 <= x <= 1.0
        if edge.direction is Direction.FLAT:
            assert edge.score == 0.0
            assert not edge.actionable
        if edge.actionable:
            assert edge.score >= 0.55


# -- signals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mom", "rv", "want"),
    [
        (200.0, 100.0, round(math.tanh(1.0), 4)),
        (-200.0, 100.0, round(math.tanh(1.0), 4)),
        (30.0, 20.0, round(math.tanh(0.75), 4)),
        (0.0, 50.0, 0.0),
        (10.0, 0.0, 0.0),
        (None, 50.0, None),
        (10.0, None, None),
    ],
)
def test_momentum_signal(mom: float | None, rv: float | None, want: float | None) -> None:
    sig = compute_signals(fv(momentum_bps=mom, realized_vol_bps=rv), rs(T))
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


# -- the score step -------------------------------------------------------------------------------


def with_streams(f: FeatureVector, ages: dict[Stream, int]) -> FeatureVector:
    f.streams = {s: StreamClock(f.close_ms - age, None, 10, 1000.0) for s, age in ages.items()}
    return f


def test_score_step_judges_freshness_at_bar_close() -> None:
    fresh = with_streams(trend_fv(), {Stream.BBO: 100, Stream.TRADES: 5_000})
    stale = with_streams(trend_fv(), {Stream.BBO: 20_000, Stream.TRADES: 5_000})
    inp = [("BTC", (fresh, rs(T, 1.0))), ("ETH", (stale, rs(T, 1.0)))]
    flow = Dataflow("score_test")
    up = op.input("in", flow, TestingSource(inp))
    out: list[tuple[str, steps.Scored]] = []
    op.output("out", steps.score("score", up, EdgeConfig()), TestingSink(out))
    run_main(flow)
    by = dict(out)
    b, e = by["BTC"], by["ETH"]
    assert b.freshness["status"] == "ok"
    assert b.freshness["as_of_ms"] == fresh.close_ms
    assert b.freshness["streams"]["bbo"]["age_ms"] == 100
    assert b.freshness["streams"]["l2Book"]["status"] == "missing"
    assert b.edge.actionable
    assert b.edge.score == round(0.5 * 0.7616 + 0.3 * 0.7 + 0.2 * 0.8, 4)
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


def test_envelopes_from_the_steps_validate_against_the_api_model() -> None:
    cfg = steps.SignalConfig(
        features=FeatureConfig(window_obs=10, short_obs=3, long_obs=30, warmup_obs=5),
        regime=RegimeConfig(),
        edge=EdgeConfig(),
    )
    flow = Dataflow("envelope_test")
    up = op.input("in", flow, TestingSource(synthetic_bars(), batch_size=16))
    fvs = steps.features("features", up, cfg.features)
    regimes = steps.regime("regime", fvs, cfg.regime)
    scored = steps.score("score", regimes, cfg.edge)
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
    alt = [e for c, e in out if c == "ALT"]
    assert alt[-1]["bar"]["price_source"] == "candle_close"
    assert "quotes" in alt[-1]["regime"]["inputs_missing"]
