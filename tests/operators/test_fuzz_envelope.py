"""Fuzzed inputs never publish an impossible number: whatever the features or the bars hold, every
envelope the steps emit validates against the schema (model and committed JSON Schema), with every
number finite and in range (issue #8)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.schemas import SignalEnvelope
from connectors.events import Event
from operators import steps
from operators.bars import Bar
from operators.edge import EdgeConfig, EdgeScorer
from operators.envelope import Producer, check_envelope
from operators.failures import STEP_ERRORS
from operators.features import FEATURE_NAMES, FeatureConfig, FeatureState
from operators.regime import RegimeClassifier, RegimeConfig
from tests.conftest import REPO
from tests.operators.helpers import bar, bbo, book, ctx, trades
from tests.operators.helpers import fv as hfv

FUZZ = settings(
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEATURES = FeatureConfig(window_obs=6, short_obs=2, long_obs=12, warmup_obs=3, vpin_min_buckets=1)
SCORER = EdgeScorer(EdgeConfig(taker_fee_bps=4.5, size_usd=10_000.0), None)
PRODUCER = Producer("fuzz", 1000, 1000)

wild = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-320, 1e307, -1e307, 0.5, 2.0]),
)
price = st.one_of(
    st.floats(min_value=1.0, max_value=1e5),  # mostly sane, so the science runs
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -100.0, 100.0, -2.0, 1e307, 1.5e308]),
)
size = st.one_of(
    st.floats(min_value=0.0, max_value=1e3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -5.0, 1e307]),
)


@pytest.fixture(scope="module")
def validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed")
    schema = json.loads((REPO / "api" / "signal_envelope.schema.json").read_text("utf-8"))
    return jsonschema.validators.validator_for(schema)(schema)


def assert_publishable(env: dict[str, Any] | None, validator: Any) -> None:
    assert env is not None
    check_envelope(env)
    SignalEnvelope.model_validate(env)
    errors = [e.message for e in validator.iter_errors(env)]
    assert not errors, errors[:3]
    assert_finite(env)


def assert_finite(x: Any) -> None:
    if isinstance(x, float):
        assert math.isfinite(x), x
    elif isinstance(x, dict):
        for v in x.values():
            assert_finite(v)
    elif isinstance(x, list):
        for v in x:
            assert_finite(v)


@FUZZ
@given(
    values=st.fixed_dictionaries(dict.fromkeys(FEATURE_NAMES, wild)),
    observations=st.integers(0, 200),
    rounds=st.integers(1, 3),
)
def test_any_feature_values_give_publishable_envelopes(
    validator: Any, values: dict[str, float | None], observations: int, rounds: int
) -> None:
    classifier: RegimeClassifier | None = None
    for k in range(rounds):
        f = hfv(values, close_ms=1000 * (k + 1), observations=observations)
        classifier, item = steps.classify("classify_regime", RegimeConfig(), classifier, f)
        env = steps.publish("build_envelope", PRODUCER, steps.score_bar("score_edge", SCORER, item))
        assert_publishable(env, validator)
        assert env is not None
        if env["degraded"] is not None:
            assert env["edge"]["actionable"] is False
            assert env["edge"]["explain"][0] == "STEP_ERROR"


def quote_events(coin: str, t: int, bid: float, ask: float, bq: float, aq: float) -> list[Event]:
    return [
        bbo(coin, t + 100, bid, bq, ask, aq),
        book(coin, t + 200, [(bid, bq), (bid * 0.999, 10.0)], [(ask, aq), (ask * 1.001, 10.0)]),
    ]


@st.composite
def bar_sequences(draw: st.DrawFn) -> list[Bar]:
    """Mostly sane bars (so windows fill) with wild values mixed in."""
    n = draw(st.integers(3, 10))
    out: list[Bar] = []
    px = draw(st.floats(min_value=1.0, max_value=1e5))
    for k in range(n):
        t = k * 1000
        events: list[Event] = []
        if draw(st.booleans()):
            bid, ask = draw(price), draw(price)
        else:
            px *= 1.0 + draw(st.floats(min_value=-0.01, max_value=0.01))
            bid, ask = px * 0.9999, px * 1.0001
        events += quote_events("X", t, bid, ask, draw(size), draw(size))
        if draw(st.booleans()):
            events.append(trades("X", t + 300, [(draw(price), draw(size), "B")]))
        if draw(st.booleans()):
            events.append(
                ctx("X", t + 400, oi=draw(size), mark=draw(price), oracle=draw(price), mid_px=px)
            )
        out.append(bar("X", t, events))
    return out


@FUZZ
@given(bars=bar_sequences())
def test_any_bars_give_publishable_envelopes(validator: Any, bars: list[Bar]) -> None:
    state: FeatureState | None = None
    classifier: RegimeClassifier | None = None
    for b in bars:
        state, f = steps.update_features("compute_features", FEATURES, state, b)
        classifier, item = steps.classify("classify_regime", RegimeConfig(), classifier, f)
        env = steps.publish("build_envelope", PRODUCER, steps.score_bar("score_edge", SCORER, item))
        assert_publishable(env, validator)
        assert env is not None
        if env["edge"]["actionable"]:
            costs = env["edge"]["costs"]
            assert env["edge"]["cost_bps"] > 0
            assert costs["half_spread_bps"] > 0
            assert env["features"]["mid_px"] > 0
    STEP_ERRORS.reset()
