"""Thin Bytewax steps over the pure operator classes (one named step per stage).

Each function adds one keyed step to a flow; the science lives in `operators.features`,
`operators.regime` and `operators.edge`, which never import Bytewax. State is per coin (the key).

Failures are isolated per coin and bar (`operators.failures`): an exception in a step, or a value
outside its documented range, is counted (``hlsl_step_errors_total{step,coin}``), logged once
with its traceback, and the coin's state in that step is rolled back to before the bar (a cheap
`mark`/`restore`, not a copy of the state). The bar is then carried down as degraded: features
null, the regime held (the classifier does not advance), the edge FLAT and not actionable with
``STEP_ERROR``, and the envelope's ``degraded`` block names the step and the reason. The next good
bar is computed as if the failed one had never arrived. Other coins and the flow go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Final

import bytewax.operators as op
import msgspec
from bytewax.operators import KeyedStream

from connectors.freshness import FreshnessStatus
from connectors.stored import encode_envelope
from operators.bars import Bar
from operators.calibration import Calibration
from operators.edge import CALIBRATION, Edge, EdgeConfig, EdgeScorer, Signals, compute_signals
from operators.envelope import (
    NO_SIGNALS,
    Producer,
    build_envelope,
    check_envelope,
    degraded_envelope,
    freshness_block,
)
from operators.failures import STEP_ERRORS, Degraded
from operators.features import FeatureConfig, FeatureState, FeatureVector, check_features
from operators.interval import IntervalTracker
from operators.regime import RegimeClassifier, RegimeConfig, RegimeState, check_regime
from operators.rolling import UndoError

log = logging.getLogger(__name__)
_STALE: Final = FreshnessStatus.STALE.value


@dataclass(frozen=True, slots=True)
class SignalConfig:
    """Configuration of the three stages."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    regime: RegimeConfig = field(default_factory=RegimeConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    calibration: Calibration | None = field(default_factory=lambda: CALIBRATION)
    """The edge's calibration table (default: the committed one; a run's is in its settings)."""


class Scored(msgspec.Struct, frozen=True):
    """One bar's features, regime, signals, edge and freshness (as of the bar's close)."""

    features: FeatureVector
    regime: RegimeState
    signals: Signals
    edge: Edge
    freshness: dict[str, Any]
    degraded: Degraded | None = None
    """Set when a step failed for this bar (then the edge is FLAT with ``STEP_ERROR``)."""


def update_features(
    step_id: str, config: FeatureConfig, state: FeatureState | None, bar: Bar
) -> tuple[FeatureState, FeatureVector]:
    """One bar of the features step: update and check, or roll back and degrade."""
    if state is None:
        state = FeatureState(config)
    mark = state.mark()
    try:
        fv = state.update(bar)
        check_features(fv.values)
        fv.checked = True
    except Exception as ex:
        degraded = STEP_ERRORS.record(step_id, bar.coin, ex)
        try:
            state.restore(mark)
        except UndoError:  # pragma: no cover - a bug in mark/restore: start the coin afresh
            log.exception("cannot roll %s back for %s: its features restart", step_id, bar.coin)
            state = FeatureState(config)
        return state, state.degraded_vector(bar, degraded)
    return state, fv


def classify(
    step_id: str, config: RegimeConfig, state: RegimeClassifier | None, fv: FeatureVector
) -> tuple[RegimeClassifier, tuple[FeatureVector, RegimeState]]:
    """One bar of the regime step: classify and check, or roll back and hold the regime.

    A degraded vector (a failed bar) holds the latest regime without advancing the classifier.
    """
    if state is None:
        state = RegimeClassifier(config)
    if fv.degraded is not None:
        return state, (fv, state.held(fv))
    mark = state.mark()
    try:
        rs = state.update(fv)
        check_regime(rs)
    except Exception as ex:
        state.restore(mark)
        failed = msgspec.structs.replace(fv, degraded=STEP_ERRORS.record(step_id, fv.coin, ex))
        return state, (failed, state.held(fv))
    return state, (fv, rs)


def score_bar(
    step_id: str,
    scorer: EdgeScorer,
    item: tuple[FeatureVector, RegimeState],
    tracker: IntervalTracker | None = None,
) -> Scored:
    """One bar of the score step; a degraded or failing bar gets the FLAT ``STEP_ERROR`` edge
    (signals from what features it has, or none if they failed).

    ``tracker`` (the coin's adaptive interval levels, `operators.interval`) first folds the bar's
    return and scores the intervals now due, then queues this bar's interval; on a failure it is
    rolled back to before the bar."""
    fv, rs = item
    degraded = fv.degraded
    mark = None if tracker is None else tracker.mark()
    try:
        fresh = freshness_block(fv, fv.close_ms)
        stale = fresh["status"] == _STALE
        sig = compute_signals(fv, rs)
        if degraded is None:
            if tracker is not None:
                tracker.fold(fv.bar_return, fv.close_ms)
            edge = scorer.score(fv, rs, sig, stale, tracker)
            if tracker is not None:
                tracker.record(fv.close_ms, edge.forecast)
            return Scored(fv, rs, sig, edge, fresh)
    except Exception as ex:
        degraded = STEP_ERRORS.record(step_id, fv.coin, ex)
        if tracker is not None and mark is not None:
            tracker.restore(mark)
        try:
            fresh = freshness_block(fv, fv.close_ms)
        except Exception:  # the clocks themselves are bad: say nothing about them
            fresh = freshness_block(msgspec.structs.replace(fv, streams={}), fv.close_ms)
        sig = NO_SIGNALS
    return Scored(fv, rs, sig, scorer.failed(fv, rs), fresh, degraded)


def publish(step_id: str, producer: Producer, s: Scored) -> dict[str, Any] | None:
    """One bar of the envelope step: build and check the envelope; on failure the degraded
    envelope, or None (dropped, counted as ``{step_id}:dropped``) if even that fails.

    The envelope leaves encoded (`connectors.stored.encode_envelope`): the store keeps those
    bytes instead of encoding it again."""
    try:
        env = build_envelope(
            s.features, s.regime, s.signals, s.edge, s.freshness, producer, s.degraded
        )
        check_envelope(env, features_checked=s.features.checked)
    except Exception as ex:
        coin = s.features.coin
        degraded = STEP_ERRORS.record(step_id, coin, ex)
        try:
            env = degraded_envelope(s.features, s.regime, s.edge, s.freshness, producer, degraded)
        except Exception as again:
            STEP_ERRORS.record(f"{step_id}:dropped", coin, again)
            return None
    return encode_envelope(env)


def features(
    step_id: str, bars: KeyedStream[Bar], config: FeatureConfig
) -> KeyedStream[FeatureVector]:
    """Rolling features per coin: `FeatureState.update` on each closed bar (`update_features`)."""

    def mapper(state: FeatureState | None, bar: Bar) -> tuple[FeatureState, FeatureVector]:
        return update_features(step_id, config, state, bar)

    return op.stateful_map(step_id, bars, mapper)


def regime(
    step_id: str, fvs: KeyedStream[FeatureVector], config: RegimeConfig
) -> KeyedStream[tuple[FeatureVector, RegimeState]]:
    """Regime per coin, with hysteresis: `RegimeClassifier.update` on each vector (`classify`)."""

    def mapper(
        state: RegimeClassifier | None, fv: FeatureVector
    ) -> tuple[RegimeClassifier, tuple[FeatureVector, RegimeState]]:
        return classify(step_id, config, state, fv)

    return op.stateful_map(step_id, fvs, mapper)


def score(
    step_id: str,
    up: KeyedStream[tuple[FeatureVector, RegimeState]],
    config: EdgeConfig,
    calibration: Calibration | None = CALIBRATION,
) -> KeyedStream[Scored]:
    """Signals, freshness as of the bar close, and the edge (`score_bar`); the state per coin is
    only the forecast interval's adaptive levels (`IntervalTracker`)."""
    scorer = EdgeScorer(config, calibration)

    def mapper(
        state: IntervalTracker | None, item: tuple[FeatureVector, RegimeState]
    ) -> tuple[IntervalTracker, Scored]:
        if state is None:
            state = IntervalTracker.for_model(scorer.vol_model)
        return state, score_bar(step_id, scorer, item, state)

    return op.stateful_map(step_id, up, mapper)


def envelope(
    step_id: str, up: KeyedStream[Scored], producer: Producer
) -> KeyedStream[dict[str, Any]]:
    """The agent-readable envelope (a dict in the API's schema), checked before it leaves
    (`publish`): a value that is not finite or outside its range makes the bar a step error."""

    def mapper(s: Scored) -> dict[str, Any] | None:
        return publish(step_id, producer, s)

    return op.filter_map_value(step_id, up, mapper)
