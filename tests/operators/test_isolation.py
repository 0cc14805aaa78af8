"""Failure isolation in the flow: a step error for one coin and bar is caught, counted and rolled
back; that bar is published degraded (held regime, STEP_ERROR, not actionable); the other coins
and the next bars are as if the failed bar had never arrived (issue #8)."""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from api.schemas import SignalEnvelope
from connectors.codes import Explain
from operators import steps
from operators.bars import Bar, EventGroup, event_time, grouper
from operators.edge import EdgeConfig, EdgeScorer, Signals, compute_signals
from operators.envelope import ENVELOPE_BOUNDS, Producer, check_envelope
from operators.failures import STEP_ERRORS, RangeError
from operators.features import (
    FEATURE_BOUNDS,
    FEATURE_NAMES,
    FeatureConfig,
    FeatureState,
)
from operators.features.book import BookFeatures
from operators.features.context import ContextFeatures
from operators.features.flow import FlowFeatures
from operators.features.volatility import VolatilityFeatures
from operators.microstructure import MicroPrice, Vpin, walk_book
from operators.regime import RegimeClassifier, RegimeConfig, RegimeLabel, Rule
from tests.operators.helpers import bar, bbo, book, coin_bars, ctx, mid, trades
from tests.operators.helpers import fv as hfv

CFG = steps.SignalConfig(
    features=FeatureConfig(window_obs=10, short_obs=3, long_obs=30, warmup_obs=5),
    regime=RegimeConfig(),
    edge=EdgeConfig(taker_fee_bps=4.5, size_usd=10_000.0),
)
PRODUCER = Producer("test-1", 1000, 1000)
BAD_K = 40
"""The bar (index) at which a failure is injected."""


@pytest.fixture(autouse=True)
def _fresh_counters() -> Iterator[None]:
    STEP_ERRORS.reset()
    yield
    STEP_ERRORS.reset()


def two_coins() -> list[tuple[str, Bar]]:
    btc, eth = coin_bars("BTC", seed=1), coin_bars("ETH", 70, 2000.0, seed=2)
    return [
        item for pair in zip(btc, eth, strict=True) for item in (("BTC", pair[0]), ("ETH", pair[1]))
    ]


def run_flow(inp: list[tuple[str, Bar]]) -> list[tuple[str, dict[str, Any]]]:
    """The four signal steps, named as in flows.wiring, over keyed bars."""
    flow = Dataflow("isolation")
    up = op.input("in", flow, TestingSource(inp, batch_size=5))
    fvs = steps.features("compute_features", up, CFG.features)
    regimes = steps.regime("classify_regime", fvs, CFG.regime)
    scored = steps.score("score_edge", regimes, CFG.edge, None)
    envs = steps.envelope("build_envelope", scored, PRODUCER)
    out: list[tuple[str, dict[str, Any]]] = []
    op.output("out", envs, TestingSink(out))
    run_main(flow)
    return out


def of(out: list[tuple[str, dict[str, Any]]], coin: str) -> list[dict[str, Any]]:
    return [env for c, env in out if c == coin]


def fail_after(
    monkeypatch: pytest.MonkeyPatch,
    cls: type,
    method: str,
    coin: str = "ETH",
    open_ms: int = BAD_K * 1000,
) -> None:
    """Make ``cls.<method>`` (a method of the state or of a feature group) raise for one coin's
    bar, *after* it has changed the state."""
    original: Callable[..., Any] = getattr(cls, method)
    current: dict[str, Bar] = {}
    update = FeatureState.update

    def tracking_update(self: FeatureState, b: Bar) -> Any:
        current["bar"] = b
        return update(self, b)

    def failing(self: FeatureState, *args: Any) -> Any:
        result = original(self, *args)
        b = current["bar"]
        if b.coin == coin and b.open_ms == open_ms:
            msg = "injected"
            raise RuntimeError(msg)
        return result

    monkeypatch.setattr(FeatureState, "update", tracking_update)
    monkeypatch.setattr(cls, method, failing)


# -- the state's rollback -------------------------------------------------------------------------


def state_of(x: Any, depth: int = 0) -> Any:
    """A comparable picture of a state: every field and slot, recursively (floats by repr)."""
    assert depth < 12
    if isinstance(x, float):
        return repr(x)
    if x is None or isinstance(x, bool | int | str):
        return x
    if type(x).__module__ == "connectors.events":
        return ("event", id(x))  # events and books are shared, never mutated by the state
    if isinstance(x, list | tuple | deque):
        return (type(x).__name__, tuple(state_of(v, depth + 1) for v in x))
    if isinstance(x, dict):
        return ("dict", tuple((state_of(k), state_of(v, depth + 1)) for k, v in x.items()))
    slots = [s for cls in type(x).__mro__ for s in getattr(cls, "__slots__", ())]
    assert slots, f"no slots on {type(x)}"
    return (type(x).__name__, tuple((s, state_of(getattr(x, s), depth + 1)) for s in slots))


def sequence() -> list[Bar]:
    """Bars of one coin, with a gap and bars without quotes, so every path of update runs."""
    bars = coin_bars("ETH", 60, 2000.0, seed=3)
    t = 61_000
    bars.append(bar("ETH", t, [trades("ETH", t + 10, [(2001.0, 1.0, "B")])]))  # no quote
    bars.append(bar("ETH", t + 1000, [ctx("ETH", t + 1100, oi=0.0, mid_px=2000.0)]))
    bars.append(bar("ETH", t + 2000, [mid("ETH", t + 2100, 2000.5)]))  # an allMids mid
    return bars


def test_mark_restore_covers_every_field_of_the_state() -> None:
    """After mark, a full update and restore, every field and slot is as before: a field that
    `mark` forgets makes this fail."""
    st = FeatureState(CFG.features)
    for b in sequence():
        before = state_of(st)
        m = st.mark()
        st.update(b)
        st.restore(m)
        assert state_of(st) == before, b.open_ms
        st.update(b)


@pytest.mark.parametrize(
    ("cls", "method"),
    [
        (BookFeatures, "update"),
        (VolatilityFeatures, "update"),
        (FlowFeatures, "update"),
        (ContextFeatures, "update"),
        (FeatureState, "_see_decimals"),
    ],
)
def test_a_failed_bar_leaves_the_state_as_if_it_never_arrived(
    monkeypatch: pytest.MonkeyPatch, cls: type, method: str
) -> None:
    """A failure after each feature group (and the state's own intake) changed its state."""
    bars = sequence()
    bad = bars[BAD_K]
    fail_after(monkeypatch, cls, method)
    state: FeatureState | None = None
    ref: FeatureState | None = None
    for b in bars:
        state, fv = steps.update_features("compute_features", CFG.features, state, b)
        if b is bad:
            assert fv.degraded is not None
            assert fv.degraded.step == "compute_features"
            assert fv.degraded.reason == "RuntimeError: injected"
            assert set(fv.missing.values()) == {"step_error"}
            assert all(v is None for v in fv.values.values())
            assert state_of(state) == state_of(ref)  # rolled back to before the bar
            continue
        assert fv.degraded is None
        ref, ref_fv = steps.update_features("ref", CFG.features, ref, b)
        assert fv.values == ref_fv.values
        assert fv.missing == ref_fv.missing
    assert state_of(state) == state_of(ref)
    assert STEP_ERRORS.snapshot() == {("compute_features", "ETH"): 1}


# -- the whole flow -------------------------------------------------------------------------------


def test_one_coins_failure_does_not_touch_the_others_or_later_bars(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inp = two_coins()
    reference = run_flow(inp)
    skipped = run_flow([(c, b) for c, b in inp if not (c == "ETH" and b.open_ms == BAD_K * 1000)])
    fail_after(monkeypatch, VolatilityFeatures, "update")
    out = run_flow(inp)

    assert of(out, "BTC") == of(reference, "BTC")
    eth, ref_eth, skip_eth = of(out, "ETH"), of(reference, "ETH"), of(skipped, "ETH")
    assert len(eth) == len(ref_eth) == 70
    assert eth[:BAD_K] == ref_eth[:BAD_K]
    bad = eth[BAD_K]
    SignalEnvelope.model_validate(bad)
    assert bad["degraded"] == {"step": "compute_features", "reason": "RuntimeError: injected"}
    assert bad["timestamp_ms"] == (BAD_K + 1) * 1000
    assert bad["regime"] == eth[BAD_K - 1]["regime"]  # held: the previous bar's, unchanged
    assert bad["regime"]["rule"] != "step_error"  # a real call, held
    assert bad["direction"] == bad["edge"]["direction"] == "FLAT"
    assert bad["edge"]["actionable"] is False
    assert bad["edge"]["explain"][:2] == ["STEP_ERROR", f"REGIME_{bad['regime']['label']}"]
    assert all(v is None for v in bad["features"].values())
    assert set(bad["features_missing"].values()) == {"step_error"}
    # the next good bar and all after it: as if the failed bar had never arrived
    assert eth[BAD_K + 1 :] == skip_eth[BAD_K:]
    assert all(env["degraded"] is None for env in eth[BAD_K + 1 :])
    assert eth[BAD_K + 1] != ref_eth[BAD_K + 1]  # (the bar's inputs really are missing)
    assert STEP_ERRORS.snapshot() == {("compute_features", "ETH"): 1}


def test_a_regime_failure_holds_the_regime_and_rolls_the_classifier_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inp = two_coins()
    reference = run_flow(inp)
    update = RegimeClassifier.update

    def failing(self: RegimeClassifier, fv: Any) -> Any:
        rs = update(self, fv)  # the classifier has moved on ...
        if fv.coin == "ETH" and fv.open_ms == BAD_K * 1000:
            raise ZeroDivisionError("float division by zero")  # ... then fails
        return rs

    monkeypatch.setattr(RegimeClassifier, "update", failing)
    out = run_flow(inp)
    assert of(out, "BTC") == of(reference, "BTC")
    eth, ref_eth = of(out, "ETH"), of(reference, "ETH")
    bad = eth[BAD_K]
    assert bad["degraded"] == {
        "step": "classify_regime",
        "reason": "ZeroDivisionError: float division by zero",
    }
    assert bad["regime"] == eth[BAD_K - 1]["regime"]
    assert bad["features"] == ref_eth[BAD_K]["features"]  # the features step succeeded
    assert bad["edge"]["actionable"] is False
    assert bad["edge"]["explain"][0] == "STEP_ERROR"
    assert eth[BAD_K + 1]["degraded"] is None
    assert STEP_ERRORS.count("classify_regime", "ETH") == 1


def test_an_impossible_value_is_a_step_error_not_a_published_lie(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inp = two_coins()
    reference = run_flow(inp)
    original = compute_signals

    def lying(fv: Any, rs: Any) -> Signals:
        sig = original(fv, rs)
        if fv.coin == "ETH" and fv.open_ms == BAD_K * 1000:
            return Signals(sig.momentum, sig.liquidity, math.nan)
        return sig

    monkeypatch.setattr(steps, "compute_signals", lying)
    out = run_flow(inp)
    eth, ref_eth = of(out, "ETH"), of(reference, "ETH")
    bad = eth[BAD_K]
    SignalEnvelope.model_validate(bad)
    assert bad["degraded"] == {
        "step": "build_envelope",
        "reason": "out_of_range: signals.risk = nan is not >= 0 and <= 1",
    }
    assert bad["signals"] == {"momentum": None, "liquidity": None, "risk": None}
    assert bad["edge"]["explain"][0] == "STEP_ERROR"
    assert bad["edge"]["actionable"] is False
    assert bad["regime"] == ref_eth[BAD_K]["regime"]
    assert eth[BAD_K + 1] == ref_eth[BAD_K + 1]  # stateless step: nothing to roll back
    assert of(out, "BTC") == of(reference, "BTC")


@pytest.mark.parametrize(
    ("bid", "ask", "reason"),
    [
        (0.0, 0.0, "out_of_range: features.mid_px = 0.0 is not > 0"),  # ZeroDivisionError before
        (-100.0, 100.0, "out_of_range: features.mid_px = 0.0 is not > 0"),
        (-2.0, -1.0, "out_of_range: features.mid_px = -1.5 is not > 0"),
        (1e307, math.inf, "out_of_range: features.mid_px = inf is not > 0"),
    ],
)
def test_bad_quotes_from_the_wire_degrade_one_bar(bid: float, ask: float, reason: str) -> None:
    bars = coin_bars("ETH", 50, 2000.0)
    t = BAD_K * 1000
    bars[BAD_K] = bar("ETH", t, [bbo("ETH", t + 999, bid, 1.0, ask, 1.0)])
    state: FeatureState | None = None
    ref: FeatureState | None = None
    for b in bars:
        state, fv = steps.update_features("compute_features", CFG.features, state, b)
        if b.open_ms == t:
            assert fv.degraded is not None
            assert fv.degraded.reason == reason
            assert state_of(state) == state_of(ref)
        else:
            assert fv.degraded is None, fv.degraded
            ref, _ = steps.update_features("ref", CFG.features, ref, b)


def test_an_all_zero_book_degrades_one_bar_instead_of_dividing_by_zero() -> None:
    bars = coin_bars("ETH", 45, 2000.0)
    t = BAD_K * 1000
    bars[BAD_K] = bar("ETH", t, [book("ETH", t + 999, [(0.0, 0.0)], [(0.0, 0.0)])])
    state: FeatureState | None = None
    for b in bars:
        state, fv = steps.update_features("compute_features", CFG.features, state, b)
        assert (fv.degraded is not None) == (b.open_ms == t)
    assert STEP_ERRORS.count("compute_features", "ETH") == 1


# -- range and finiteness checks ------------------------------------------------------------------


def good_envelope() -> dict[str, Any]:
    out = run_flow([("ETH", b) for b in coin_bars("ETH", 45, 2000.0)])
    env = out[-1][1]
    check_envelope(env)
    return env


def outside(lo: float, hi: float, strict: bool) -> list[float]:
    bad = [math.nan, math.inf, -math.inf]
    if lo > -1e300:
        bad.append(lo if strict else lo - 0.5)
    if hi < 1e300:
        bad.append(hi + 0.5)
    return bad


def envelope_paths() -> list[tuple[str, float]]:
    cases: list[tuple[str, float]] = []
    for name, b in FEATURE_BOUNDS.items():
        cases += [(f"features.{name}", v) for v in outside(b.lo, b.hi, b.strict)]
    for path, b in ENVELOPE_BOUNDS.items():
        cases += [(path, v) for v in outside(b.lo, b.hi, b.strict)]
    return cases


def put(env: dict[str, Any], path: str, value: float) -> None:
    parts = path.split(".")
    d = env
    for p in parts[:-1]:
        d = d["bbo"] if p == "*" else d[p]
    d[parts[-1]] = value


def test_check_envelope_refuses_every_out_of_range_or_non_finite_number() -> None:
    base = good_envelope()
    cases = envelope_paths()
    assert len(cases) > 150
    for path, value in cases:
        env = _copy(base)
        put(env, path, value)
        with pytest.raises(RangeError) as info:
            check_envelope(env)
        assert info.value.where == path, (path, value)


def test_each_bad_feature_is_published_degraded_never_as_is() -> None:
    """`publish` (the envelope step) turns each bad value into a valid degraded envelope."""
    scorer = EdgeScorer(CFG.edge, None)
    for name, b in FEATURE_BOUNDS.items():
        for value in outside(b.lo, b.hi, b.strict):
            f = hfv({name: value}, coin="ETH")
            rs = RegimeClassifier(CFG.regime).update(f)
            env = steps.publish("build_envelope", PRODUCER, steps.score_bar("s", scorer, (f, rs)))
            assert env is not None
            SignalEnvelope.model_validate(env)
            assert env["degraded"]["step"] == "build_envelope"
            assert env["degraded"]["reason"].startswith(f"out_of_range: features.{name} = ")
            assert env["features"][name] is None
            assert env["edge"]["actionable"] is False


def _copy(env: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(env)


# -- guards on values from the wire ---------------------------------------------------------------


def test_impossible_exchange_times_are_dropped_and_counted_not_fatal() -> None:
    group = grouper(1000, 1000, "fold_bars_group")
    ok = bbo("BTC", 5_000, 99.0, 1.0, 101.0, 1.0)
    bad = [bbo("BTC", t, 99.0, 1.0, 101.0, 1.0) for t in (10**15, 2**63 - 1, 2**70)]
    out = group([ok, *bad])
    assert [(c, g.events) for c, g in out] == [("BTC", [ok])]
    assert STEP_ERRORS.count("fold_bars_group", "BTC") == 3
    for e in bad:
        event_time(e)  # no OverflowError
    assert isinstance(EventGroup([ok], 5_000), EventGroup)


def test_microstructure_blocks_skip_non_finite_sizes() -> None:
    m = MicroPrice(4, 10.0, 1.0)
    m.observe(99.0, math.inf, 101.0, 1.0)
    m.observe(99.0, math.nan, 101.0, 1.0)
    m.observe(99.0, 1.0, 99.0 + 1e-320, 1.0)  # sub-normal spread: 1/spread overflows
    assert m.table() == [None] * 4
    assert m.g(math.inf, 1.0) is None
    with pytest.raises(ValueError, match="no imbalance state"):
        m.bucket(math.nan, 1.0)
    v = Vpin(2)
    v.add([(100.0, math.inf, 1), (100.0, math.nan, -1)], 1.0)
    v.add([(100.0, 1.0, 1)], math.inf)
    assert v.completed == 0
    assert walk_book([math.nan, 100.0], [1.0, 1.0], 50.0) == 100.0


def test_the_first_failed_bar_of_a_coin_is_unknown_with_rule_step_error() -> None:
    st = FeatureState(CFG.features)
    b = coin_bars("ETH", 1, 2000.0)[0]
    fv = st.degraded_vector(b, STEP_ERRORS.record("compute_features", "ETH", RuntimeError("x")))
    rc = RegimeClassifier(CFG.regime)
    _, (_, rs) = steps.classify("classify_regime", CFG.regime, rc, fv)
    assert (rs.label, rs.rule, rs.confidence) == (RegimeLabel.UNKNOWN, Rule.STEP_ERROR, 0.0)
    scored = steps.score_bar("score_edge", EdgeScorer(CFG.edge, None), (fv, rs))
    assert scored.edge.explain == (Explain.STEP_ERROR, Explain.REGIME_UNKNOWN)
    env = steps.publish("build_envelope", PRODUCER, scored)
    assert env is not None
    SignalEnvelope.model_validate(env)
    assert env["degraded"] == {"step": "compute_features", "reason": "RuntimeError: x"}
    assert env["regime"]["rule"] == "step_error"
    assert list(env["features"]) == list(FEATURE_NAMES)
