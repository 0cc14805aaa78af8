"""raw_call and RegimeClassifier on hand-built feature vectors, and the Bytewax step."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from connectors.events import Stream
from connectors.freshness import StreamClock
from operators import steps
from operators.features import FeatureVector
from operators.forecast import LadderFit, VolModel, VolSnapshot
from operators.regime import (
    DECISION_INPUTS,
    RegimeClassifier,
    RegimeConfig,
    RegimeLabel,
    RegimeState,
    Rule,
    raw_call,
)
from tests.operators.helpers import fv

CFG = RegimeConfig()
T = RegimeLabel.TRENDING
MR = RegimeLabel.MEAN_REVERTING
CH = RegimeLabel.CHAOTIC
LIQ = RegimeLabel.LIQUIDATION_RISK
UNK = RegimeLabel.UNKNOWN


def _moved(x: FeatureVector) -> FeatureVector:
    # every bar moves 1 bps (the volatility state's norm), over a 30-return trend window
    x.bar_return = 1e-4
    x.trend_returns = 30
    return x


def trend(t: int = 1000, er: float = 0.6, **kw: Any) -> FeatureVector:
    kw = {"vol_expansion_ratio": 1.0, "momentum_bps": 50.0, **kw}
    return _moved(fv(close_ms=t, efficiency_ratio=er, **kw))


def mean_rev(t: int = 1000, er: float = 0.05, **kw: Any) -> FeatureVector:
    kw = {"vol_expansion_ratio": 1.0, "momentum_bps": 5.0, **kw}
    return _moved(fv(close_ms=t, efficiency_ratio=er, **kw))


def cascade(t: int = 1000, **kw: Any) -> FeatureVector:
    vals: dict[str, Any] = {
        "efficiency_ratio": 0.6,
        "vol_expansion_ratio": 2.5,
        "momentum_bps": -300.0,
        "trade_flow_imbalance": -0.8,
    }
    vals.update(kw)
    return _moved(fv(vals, close_ms=t))


# -- raw_call: each label -------------------------------------------------------------------------


def case(
    id_: str,
    values: dict[str, float],
    label: RegimeLabel,
    rule: Rule,
    margin: float,
    stresses: tuple[str, ...] = (),
) -> Any:
    return pytest.param(values, label, rule, margin, stresses, id=id_)


SHOCK = {"efficiency_ratio": 0.5, "vol_expansion_ratio": 2.5, "momentum_bps": 300.0}
TREND_MARGIN = (0.5 - 0.4) / 0.6
NORM = 1e-6
"""The test coin's norm per-bar variance (1 bps per bar): a 300 bps move over 30 returns is
z = 0.03 / √(1e-6·30) = 5.48 norm units, large for this coin."""
SNAP = VolSnapshot((NORM,) * 4, NORM, 1000, 1000, 500)
MODEL = VolModel(
    version="test-vol",
    season=((1.0,) * 24, (1.0,) * 24),
    half_lives_bars=(1.0, 3.0, 10.0, 30.0),
    long_half_life_ms=30 * 86_400_000,
    long_min_bars=300.0,
    floor=1e-3,
    flag_enter=1.0,
    flag_exit=0.9,
    ladder=(LadderFit(1, (0.0, 0.0, 0.0, 0.0, 0.0, 0.0), 1.0, -1.0, 1.0, 1),),
)
HOT = 1.5  # ρ: the next hour's forecast volatility 1.5× the coin's norm: flagged
FLAG_MARGIN = (1.5 - 1.0) / 1.0


def clf_(cfg: RegimeConfig = CFG) -> RegimeClassifier:
    """A classifier on the rules without a forecast (ρ unknown), its volatility state the test
    coin's (`SNAP`): the hysteresis tests do not depend on the committed model."""
    return RegimeClassifier(cfg, vol_model=None, snap=SNAP)


def z_of(move_bps: float, n: int = 30) -> float:
    return abs(move_bps) / 1e4 / math.sqrt(NORM * n)


@pytest.mark.parametrize(
    ("values", "label", "rule", "margin", "stresses"),
    [
        case("trending", {"efficiency_ratio": 0.6, "momentum_bps": 40.0}, T, Rule.TREND, 0.2 / 0.6),
        # with the move's significance known, the margin is the smaller of the two
        case(
            "trending_z",
            {"efficiency_ratio": 0.6, "momentum_z": 3.0},
            T,
            Rule.TREND,
            min(0.2 / 0.6, (3.0 - 2.0) / 2.0),
        ),
        # an efficient path that is not significant: no rule fires (never a calm default)
        case(
            "trend_not_significant",
            {"efficiency_ratio": 0.9, "momentum_z": 1.5},
            UNK,
            Rule.NO_RULE_FIRED,
            0,
        ),
        case("mean_reverting", {"efficiency_ratio": 0.05}, MR, Rule.MEAN_REVERSION, 0.1 / 0.15),
        case(
            "mean_reverting_vr",
            {"efficiency_ratio": 0.05, "variance_ratio": 0.5},
            MR,
            Rule.MEAN_REVERSION,
            min(0.1 / 0.15, 0.35 / 0.85),
        ),
        # an inefficient path without negative autocorrelation is a random walk: no rule fired
        case(
            "random_walk",
            {"efficiency_ratio": 0.05, "variance_ratio": 1.2},
            UNK,
            Rule.NO_RULE_FIRED,
            0.0,
        ),
        # an inefficient path in a market that is not calm (expansion 1.6 > 1.5): not MR
        case(
            "not_calm_no_mr",
            {"efficiency_ratio": 0.05, "vol_expansion_ratio": 1.6},
            UNK,
            Rule.NO_RULE_FIRED,
            0.0,
        ),
        # a volatility spike without direction (no forecast): the expansion flag, CHAOTIC
        case(
            "chaotic",
            {"efficiency_ratio": 0.1, "vol_expansion_ratio": 2.7},
            CH,
            Rule.CHAOS,
            (2.7 - 1.8) / 1.8,
        ),
        # flagged with a one-way move that is large for this coin and one-sided flow: cascade
        case(
            "liq_flow_up",
            {**SHOCK, "trade_flow_imbalance": 0.7, "rho": HOT},
            LIQ,
            Rule.CASCADE,
            1.0,
            ("one_sided_flow",),
        ),
        case(
            "liq_flow_down",
            {**SHOCK, "momentum_bps": -300.0, "trade_flow_imbalance": -0.7, "rho": HOT},
            LIQ,
            Rule.CASCADE,
            1.0,
            ("one_sided_flow",),
        ),
        # not flagged (ρ below the coin's norm, expansion 2.5 < 3): the same move is a trend
        case(
            "unflagged_move_is_trend",
            {**SHOCK, "trade_flow_imbalance": 0.7, "rho": 0.7},
            T,
            Rule.TREND,
            TREND_MARGIN,
        ),
        # one-sided flow must also be aggressive (a trade-rate burst) when the burst is known
        case(
            "flow_without_burst",
            {**SHOCK, "trade_flow_imbalance": 0.7, "trade_rate_burst": 1.2, "rho": HOT},
            CH,
            Rule.VOL_STATE,
            FLAG_MARGIN,
        ),
        case(
            "flow_with_burst",
            {**SHOCK, "trade_flow_imbalance": 0.7, "trade_rate_burst": 2.0, "rho": HOT},
            LIQ,
            Rule.CASCADE,
            1.0,
            ("one_sided_flow",),
        ),
        # two groups available (flow, liquidity): both must hold below z = 2·liq_move_z
        case(
            "liq_spread_only",
            {**SHOCK, "trade_flow_imbalance": 0.1, "spread_ratio": 3.5, "rho": HOT},
            CH,
            Rule.VOL_STATE,
            FLAG_MARGIN,
        ),
        case(
            "liq_flow_and_spread",
            {**SHOCK, "trade_flow_imbalance": 0.7, "spread_ratio": 3.5, "rho": HOT},
            LIQ,
            Rule.CASCADE,
            1.0,
            ("one_sided_flow", "spread_blowout"),
        ),
        case(
            "liq_depth_and_oi",
            {
                **SHOCK,
                "momentum_bps": -300.0,
                "depth_ratio": 0.3,
                "spread_ratio": 1.0,
                "oi_change_pct": -1.5,
                "rho": HOT,
            },
            LIQ,
            Rule.CASCADE,
            2 / 3,  # stresses met / stress conditions available
            ("depth_collapse", "oi_drop"),
        ),
        # a move of 2·liq_move_z norm units needs one stress group
        case(
            "big_shock_one_group",
            {
                **SHOCK,
                "momentum_bps": 500.0,
                "trade_flow_imbalance": 0.1,
                "spread_ratio": 3.5,
                "rho": HOT,
            },
            LIQ,
            Rule.CASCADE,
            0.5,
            ("spread_blowout",),
        ),
        # a move that is small for this coin (z = 1.8 < 4) is no cascade: a few bps is noise
        case(
            "small_move_no_cascade",
            {**SHOCK, "momentum_bps": 100.0, "trade_flow_imbalance": 0.9, "rho": HOT},
            CH,
            Rule.VOL_STATE,
            FLAG_MARGIN,
        ),
        case(
            "flow_against_move",
            {**SHOCK, "trade_flow_imbalance": -0.7, "rho": HOT},
            CH,
            Rule.VOL_STATE,
            FLAG_MARGIN,
        ),
        # no stress input at all (candles): the move alone decides
        case(
            "no_stress_input",
            {**SHOCK, "rho": HOT},
            LIQ,
            Rule.CASCADE,
            (z_of(300.0) - 4.0) / 4.0,
        ),
        # a volatility that has multiplied (expansion 3.6 ≥ 3) flags even with a calm forecast
        case(
            "multiplied_vol_flags",
            {"efficiency_ratio": 0.05, "vol_expansion_ratio": 3.6, "rho": 0.5},
            CH,
            Rule.CHAOS,
            0.2,
        ),
        # between the bands with no label to keep: no rule fired
        case("between_bands", {"efficiency_ratio": 0.3}, UNK, Rule.NO_RULE_FIRED, 0.0),
        case("no_efficiency_ratio", {"momentum_bps": 1.0}, UNK, Rule.WARMING_UP, 0.0),
    ],
)
def test_raw_call_labels(
    values: dict[str, float],
    label: RegimeLabel,
    rule: Rule,
    margin: float,
    stresses: tuple[str, ...],
) -> None:
    vals = {"vol_expansion_ratio": 1.0, "momentum_bps": 1.0, **values}
    rho = vals.pop("rho", None)
    f = fv(vals)
    f.trend_returns = 30
    call = raw_call(f, CFG, UNK, rho, SNAP, MODEL)
    assert call.label is label
    assert call.rule is rule
    assert call.margin == pytest.approx(margin)
    assert call.stresses == stresses


def test_a_volatility_spike_without_direction_is_never_mean_reverting() -> None:
    """Expansion 6× on an inefficient path, the classifier MEAN_REVERTING: CHAOTIC at once."""
    clf = clf_()
    feed(clf, [mean_rev(1000 * k) for k in range(1, 10)])
    assert clf.label is MR
    s = clf.update(mean_rev(10_000, vol_expansion_ratio=6.0, variance_ratio=0.5))
    assert s.label is CH
    # and a merely not-calm bar (expansion 1.6) leaves MEAN_REVERTING at once too
    clf2 = clf_()
    feed(clf2, [mean_rev(1000 * k) for k in range(1, 10)])
    s = clf2.update(mean_rev(10_000, vol_expansion_ratio=1.6))
    assert s.label is not MR
    assert s.rule is Rule.NO_RULE_FIRED


def test_a_stall_holds_the_label_and_says_so() -> None:
    """Bars with no event: the label holds (rule no_new_data, stale), nothing advances."""
    clf = clf_()
    feed(clf, [trend(1000 * k) for k in range(1, 10)])
    before = clf.last
    assert before is not None
    assert before.label is T
    stalled = []
    for k in range(10, 20):
        x = mean_rev(1000 * k, momentum_bps=-80.0)  # features drift while nothing arrives
        x.event_count = 0
        stalled.append(clf.update(x))
    assert all(s.label is T and s.stale and s.rule is Rule.NO_NEW_DATA for s in stalled)
    assert all(s.since_ms == before.since_ms and s.dwell == before.dwell for s in stalled)
    assert clf.candidate is None
    # every input stream stale as of the close is no new data either
    x = trend(100_000)
    x.streams = {s: StreamClock(1000, None, 5, 1000.0) for s in x.streams}
    assert clf.update(x).rule is Rule.NO_NEW_DATA


def test_raw_call_unknown_while_warming_up_or_without_price() -> None:
    good = {"efficiency_ratio": 0.9, "vol_expansion_ratio": 1.0, "momentum_bps": 100.0}
    warm = raw_call(fv(good, observations=29, warmup_obs=30), CFG, UNK)
    assert (warm.label, warm.rule, warm.margin) == (UNK, Rule.WARMING_UP, 0.0)
    assert raw_call(fv(good, observations=30, warmup_obs=30), CFG, UNK).label is T
    none = raw_call(fv(good, observations=0), CFG, T)
    assert (none.label, none.rule) == (UNK, Rule.NO_PRICE)
    no_px = raw_call(fv(good, mid_px=None, price_source=None), CFG, T)
    assert (no_px.label, no_px.rule) == (UNK, Rule.NO_PRICE)
    # a candle-only coin has no mid but has a price source: not "no price"
    candle = raw_call(fv(good, mid_px=None, price_source="candle_close"), CFG, UNK)
    assert candle.label is T


@pytest.mark.parametrize(
    ("current", "values", "label", "rule", "margin"),
    [
        (T, {"efficiency_ratio": 0.3}, T, Rule.TREND, (0.3 - 0.25) / 0.75),
        (MR, {"efficiency_ratio": 0.3}, MR, Rule.MEAN_REVERSION, 0.0),
        (MR, {"efficiency_ratio": 0.25}, MR, Rule.MEAN_REVERSION, (0.30 - 0.25) / 0.30),
        (T, {"efficiency_ratio": 0.39}, T, Rule.TREND, (0.39 - 0.25) / 0.75),
        (UNK, {"efficiency_ratio": 0.39}, UNK, Rule.NO_RULE_FIRED, 0.0),
        (CH, {"efficiency_ratio": 0.1, "vol_expansion_ratio": 1.5}, CH, Rule.CHAOS, 0.1 / 1.4),
        (T, {"efficiency_ratio": 0.1, "vol_expansion_ratio": 1.5}, MR, Rule.MEAN_REVERSION, 1 / 3),
        # |momentum z|: enter TRENDING from 2, stay while >= 1
        (T, {"efficiency_ratio": 0.5, "momentum_z": 1.2}, T, Rule.TREND, 0.2),
        (MR, {"efficiency_ratio": 0.5, "momentum_z": 1.2}, UNK, Rule.NO_RULE_FIRED, 0.0),
        (T, {"efficiency_ratio": 0.5, "momentum_z": -0.9}, UNK, Rule.NO_RULE_FIRED, 0.0),
        # variance ratio: enter MEAN_REVERTING at or below 0.85, stay while <= 1
        (MR, {"efficiency_ratio": 0.05, "variance_ratio": 0.95}, MR, Rule.MEAN_REVERSION, 0.05),
        (UNK, {"efficiency_ratio": 0.05, "variance_ratio": 0.95}, UNK, Rule.NO_RULE_FIRED, 0.0),
    ],
)
def test_raw_call_enter_exit_bands(
    current: RegimeLabel, values: dict[str, float], label: RegimeLabel, rule: Rule, margin: float
) -> None:
    vals = {"vol_expansion_ratio": 1.0, "momentum_bps": 10.0, **values}
    call = raw_call(fv(vals), CFG, current)
    assert (call.label, call.rule) == (label, rule)
    assert call.margin == pytest.approx(margin)


# -- hysteresis -----------------------------------------------------------------------------------


def feed(clf: RegimeClassifier, fvs: list[FeatureVector]) -> list[RegimeState]:
    return [clf.update(x) for x in fvs]


def test_unknown_then_first_label_at_once() -> None:
    clf = clf_()
    s1 = clf.update(trend(1000, observations=10))  # warming up
    assert (s1.label, s1.rule, s1.confidence, s1.since_ms, s1.dwell) == (
        UNK,
        Rule.WARMING_UP,
        0.0,
        1000,
        1,
    )
    assert s1.previous is None
    s2 = clf.update(trend(2000))
    assert (s2.label, s2.previous, s2.since_ms, s2.dwell, s2.candidate) == (T, UNK, 2000, 1, None)
    assert s2.rule is Rule.TREND


def test_switch_needs_confirm_consecutive_and_min_dwell() -> None:
    clf = clf_()
    assert clf.update(trend(1000)).label is T  # dwell 1
    states = feed(clf, [mean_rev(t) for t in range(2000, 7000, 1000)])
    # MR holds from the 2nd evaluation; dwell of TRENDING reaches min_dwell=5 only at the 6th
    assert [s.label for s in states] == [T, T, T, T, MR]
    assert [s.candidate_count for s in states[:4]] == [1, 2, 3, 4]
    assert all(s.candidate is MR for s in states[:4])
    assert all(s.rule is Rule.HOLD and s.margin == 0.0 for s in states[:4])
    assert [s.dwell for s in states] == [2, 3, 4, 5, 1]
    sw = states[-1]
    assert (sw.previous, sw.since_ms, sw.candidate, sw.candidate_count) == (T, 6000, None, 0)
    assert sw.rule is Rule.MEAN_REVERSION
    assert sw.margin == pytest.approx(2 / 3)
    # with the dwell long satisfied, exactly `confirm` evaluations are needed
    feed(clf, [mean_rev(t) for t in range(7000, 12000, 1000)])
    states = feed(clf, [trend(t) for t in (12000, 13000, 14000)])
    assert [s.label for s in states] == [MR, MR, T]
    assert states[-1].since_ms == 14000
    assert states[-1].previous is MR


def test_candidate_must_hold_consecutively() -> None:
    clf = clf_()
    feed(clf, [trend(t) for t in range(1000, 11000, 1000)])  # dwell 10
    seq = [mean_rev(11000), mean_rev(12000), trend(13000), mean_rev(14000), mean_rev(15000)]
    states = feed(clf, seq)
    assert [s.label for s in states] == [T] * 5
    assert [s.candidate for s in states] == [MR, MR, None, MR, MR]
    assert [s.candidate_count for s in states] == [1, 2, 0, 1, 2]
    assert clf.update(mean_rev(16000)).label is MR


def count_changes(labels: list[RegimeLabel]) -> int:
    return sum(1 for a, b in itertools.pairwise(labels) if a is not b)


@pytest.mark.parametrize("run", [1, 2])
def test_alternating_inputs_do_not_flicker(run: int) -> None:
    clf = clf_()
    fvs = []
    for i in range(400):
        high = (i // run) % 2 == 0
        # crossing both enter thresholds every `run` bars
        fvs.append(trend(1000 * (i + 1), er=0.41) if high else mean_rev(1000 * (i + 1), er=0.14))
    raw = [raw_call(x, CFG, UNK).label for x in fvs]
    assert count_changes(raw) >= 199  # the raw calls do flicker
    labels = [s.label for s in feed(clf, fvs)]
    assert labels[0] is T
    assert count_changes(labels) == 0


def test_inputs_between_exit_and_enter_keep_the_label() -> None:
    clf = clf_()
    clf.update(trend(1000))
    states = feed(clf, [trend(1000 * k, er=0.3) for k in range(2, 60)])
    assert all(s.label is T and s.candidate is None for s in states)
    assert all(s.rule is Rule.TREND for s in states)
    # to MEAN_REVERTING, then ER 0.25 (between mr enter 0.15 and exit 0.30) keeps it
    feed(clf, [mean_rev(1000 * k) for k in range(60, 63)])
    assert clf.label is MR
    states = feed(clf, [mean_rev(1000 * k, er=0.25) for k in range(63, 120)])
    assert all(s.label is MR and s.candidate is None for s in states)
    assert all(s.rule is Rule.MEAN_REVERSION for s in states)
    # CHAOTIC is kept while VER >= the exit threshold 1.4
    clf2 = clf_()
    clf2.update(fv(close_ms=1000, efficiency_ratio=0.1, vol_expansion_ratio=2.0, momentum_bps=1.0))
    assert clf2.label is CH
    states = feed(
        clf2,
        [
            fv(close_ms=1000 * k, efficiency_ratio=0.2, vol_expansion_ratio=1.5, momentum_bps=1.0)
            for k in range(2, 40)
        ],
    )
    assert all(s.label is CH and s.rule is Rule.CHAOS for s in states)


def test_liquidation_risk_enters_at_once_and_exits_after_liq_exit_confirm() -> None:
    clf = clf_(RegimeConfig(liq_exit_confirm=10))
    clf.update(trend(1000))
    s = clf.update(cascade(2000))  # the current label's dwell is only 1: no matter
    assert (s.label, s.previous, s.since_ms, s.dwell) == (LIQ, T, 2000, 1)
    assert s.rule is Rule.CASCADE
    assert s.stresses == ("one_sided_flow",)
    states = feed(clf, [trend(1000 * k) for k in range(3, 12)])  # 9 non-cascade evaluations
    assert all(x.label is LIQ for x in states)
    assert [x.candidate_count for x in states] == list(range(1, 10))
    assert all(x.stresses == () and x.rule is Rule.HOLD for x in states)
    s = clf.update(cascade(12000))  # a cascade evaluation resets the count
    assert (s.label, s.candidate, s.since_ms) == (LIQ, None, 2000)
    states = feed(clf, [trend(1000 * k) for k in range(13, 23)])  # 10 in a row
    assert [x.label for x in states] == [LIQ] * 9 + [T]
    assert (states[-1].previous, states[-1].since_ms, states[-1].dwell) == (LIQ, 22000, 1)


def test_liquidation_exit_needs_consecutive_non_cascade() -> None:
    clf = clf_(RegimeConfig(liq_exit_confirm=3))
    clf.update(cascade(1000))
    assert clf.label is LIQ
    seq = [trend(2000), trend(3000), cascade(4000), trend(5000), trend(6000), trend(7000)]
    assert [s.label for s in feed(clf, seq)] == [LIQ, LIQ, LIQ, LIQ, LIQ, T]


def test_no_price_switches_to_unknown_at_once() -> None:
    clf = clf_()
    feed(clf, [trend(1000 * k) for k in range(1, 4)])
    s = clf.update(trend(4000, mid_px=None, price_source=None))
    assert (s.label, s.previous, s.since_ms, s.rule, s.confidence) == (
        UNK,
        T,
        4000,
        Rule.NO_PRICE,
        0.0,
    )


# -- confidence -----------------------------------------------------------------------------------


def expected_confidence(margin: float, n_inputs: int, dwell: int, pending: bool) -> float:
    c = (0.5 + 0.5 * margin) * (0.4 + 0.6 * n_inputs / 9) * (0.7 + 0.3 * min(1.0, dwell / 5))
    return round(c * (0.8 if pending else 1.0), 4)


FULL_INPUTS = {
    "momentum_z": 3.0,
    "variance_ratio": 1.5,
    "trade_flow_imbalance": 0.2,
    "trade_rate_burst": 1.0,
    "spread_ratio": 1.0,
    "depth_ratio": 1.0,
    "oi_change_pct": 0.1,
}


def test_confidence_formula() -> None:
    assert len(DECISION_INPUTS) == 9
    clf = clf_()
    s = clf.update(trend(1000, **FULL_INPUTS))
    assert s.inputs_used == ("quotes", "book", "trades", "candles", "asset_ctx")
    assert s.inputs_missing == ()
    assert s.n_inputs == 9
    # margin min((0.6 - 0.4)/0.6, (3 - 2)/2) = 1/3
    assert s.confidence == expected_confidence(1 / 3, 9, 1, False) == 0.5067
    states = feed(clf, [trend(1000 * k, **FULL_INPUTS) for k in range(2, 6)])
    assert states[-1].dwell == 5
    # once TRENDING, the margins run from the exit bands: min((0.6-0.25)/0.75, (3-1)/1)
    assert states[-1].margin == pytest.approx(0.35 / 0.75)
    assert states[-1].confidence == expected_confidence(0.35 / 0.75, 9, 5, False) == 0.7333
    s = clf.update(mean_rev(6000))  # a pending candidate: margin 0 and the 0.8 factor
    assert s.n_inputs == 2  # efficiency ratio and volatility expansion only
    assert s.confidence == expected_confidence(0.0, 2, 6, True) == 0.2133


def test_confidence_is_lower_with_fewer_inputs() -> None:
    full = clf_().update(trend(1000, **{k: v for k, v in FULL_INPUTS.items() if k != "momentum_z"}))
    candle_only = clf_().update(
        trend(
            1000,
            streams=(Stream.CANDLE,),
            mid_px=None,
            price_source="candle_close",
            variance_ratio=1.5,
        )
    )
    assert full.label is candle_only.label is T
    assert full.margin == candle_only.margin == pytest.approx(1 / 3)
    assert candle_only.inputs_used == ("candles",)
    assert candle_only.inputs_missing == ("quotes", "book", "trades", "asset_ctx")
    assert (full.n_inputs, candle_only.n_inputs) == (8, 3)
    assert candle_only.confidence == expected_confidence(1 / 3, 3, 1, False)
    assert candle_only.confidence < full.confidence


def test_confidence_always_in_unit_interval_and_zero_for_unknown() -> None:
    rng = random.Random(7)
    clf = clf_()
    for k in range(2000):
        vals = {
            "efficiency_ratio": rng.random(),
            "vol_expansion_ratio": rng.uniform(0.0, 5.0),
            "momentum_bps": rng.uniform(-500.0, 500.0),
            "trade_flow_imbalance": rng.choice([None, rng.uniform(-1.0, 1.0)]),
            "spread_ratio": rng.choice([None, rng.uniform(0.0, 6.0)]),
            "depth_ratio": rng.choice([None, rng.uniform(0.0, 3.0)]),
            "oi_change_pct": rng.choice([None, rng.uniform(-5.0, 5.0)]),
        }
        streams = rng.sample(list(Stream), rng.randint(1, 6))
        s = clf.update(
            fv(vals, close_ms=1000 * k, streams=streams, observations=rng.randint(0, 60))
        )
        assert 0.0 <= s.confidence <= 1.0
        assert 0.0 <= s.margin <= 1.0
        if s.label is UNK:
            assert s.confidence == 0.0
        assert s.dwell >= 1
        assert (s.candidate is None) == (s.candidate_count == 0)


# -- the Bytewax step -----------------------------------------------------------------------------


def test_regime_step_classifies_per_coin() -> None:
    inp: list[tuple[str, FeatureVector]] = [("BTC", trend(1000, observations=5, coin="BTC"))]
    for k in range(2, 10):
        inp.append(("BTC", trend(1000 * k, coin="BTC")))
        inp.append(("ETH", mean_rev(1000 * k, coin="ETH")))
    inp.append(("ETH", cascade(10_000, coin="ETH")))
    flow = Dataflow("regime_test")
    up = op.input("in", flow, TestingSource(inp))
    out: list[tuple[str, tuple[FeatureVector, RegimeState]]] = []
    op.output("out", steps.regime("regime", up, RegimeConfig()), TestingSink(out))
    run_main(flow)
    btc = [(x.close_ms, s.label) for c, (x, s) in out if c == "BTC"]
    eth = [(x.close_ms, s.label, s.previous) for c, (x, s) in out if c == "ETH"]
    assert btc == [(1000, UNK)] + [(1000 * k, T) for k in range(2, 10)]
    assert eth[0] == (2000, MR, UNK)
    assert all(lbl is MR for _, lbl, _ in eth[:-1])
    assert eth[-1] == (10_000, LIQ, MR)
    # per-coin state: ETH's first label did not wait for BTC's dwell, and BTC's since_ms is its own
    assert out[-1][1][1].since_ms == 10_000
    assert [s.since_ms for c, (_, s) in out if c == "BTC"][-1] == 2000


@pytest.mark.parametrize(
    ("current", "er", "expected"),
    [
        # past the current label's exit, short of the other's entry: the label has ended, and
        # no rule fires (no calm default)
        (RegimeLabel.TRENDING, 0.20, RegimeLabel.UNKNOWN),
        (RegimeLabel.MEAN_REVERTING, 0.35, RegimeLabel.UNKNOWN),
        # inside the current label's exit band: it holds
        (RegimeLabel.TRENDING, 0.30, RegimeLabel.TRENDING),
        (RegimeLabel.MEAN_REVERTING, 0.25, RegimeLabel.MEAN_REVERTING),
    ],
)
def test_exit_thresholds_end_a_label(
    current: RegimeLabel, er: float, expected: RegimeLabel
) -> None:
    call = raw_call(
        fv({"efficiency_ratio": er, "vol_expansion_ratio": 1.0}), RegimeConfig(), current
    )
    assert call.label is expected
