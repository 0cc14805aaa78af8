"""Thin Bytewax steps over the pure operator classes (one named step per stage).

Each function adds one keyed step to a flow; the science lives in `operators.features`,
`operators.regime` and `operators.edge`, which never import Bytewax. State is per coin (the key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import bytewax.operators as op
from bytewax.operators import KeyedStream

from operators.bars import Bar
from operators.calibration import Calibration
from operators.edge import CALIBRATION, Edge, EdgeConfig, EdgeScorer, Signals, compute_signals
from operators.envelope import Producer, build_envelope, freshness_block
from operators.features import FeatureConfig, FeatureState, FeatureVector
from operators.freshness import FreshnessStatus
from operators.regime import RegimeClassifier, RegimeConfig, RegimeState


@dataclass(frozen=True, slots=True)
class SignalConfig:
    """Configuration of the three stages."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    regime: RegimeConfig = field(default_factory=RegimeConfig)
    edge: EdgeConfig = field(default_factory=EdgeConfig)
    calibration: Calibration | None = field(default_factory=lambda: CALIBRATION)
    """The edge's calibration table (default: ``$HLSL_CALIBRATION`` or the committed one)."""


@dataclass(frozen=True, slots=True)
class Scored:
    """One bar's features, regime, signals, edge and freshness (as of the bar's close)."""

    features: FeatureVector
    regime: RegimeState
    signals: Signals
    edge: Edge
    freshness: dict[str, Any]


def features(
    step_id: str, bars: KeyedStream[Bar], config: FeatureConfig
) -> KeyedStream[FeatureVector]:
    """Rolling features per coin: `FeatureState.update` on each closed bar."""

    def mapper(state: FeatureState | None, bar: Bar) -> tuple[FeatureState, FeatureVector]:
        if state is None:
            state = FeatureState(config)
        return state, state.update(bar)

    return op.stateful_map(step_id, bars, mapper)


def regime(
    step_id: str, fvs: KeyedStream[FeatureVector], config: RegimeConfig
) -> KeyedStream[tuple[FeatureVector, RegimeState]]:
    """Regime per coin, with hysteresis: `RegimeClassifier.update` on each feature vector."""

    def mapper(
        state: RegimeClassifier | None, fv: FeatureVector
    ) -> tuple[RegimeClassifier, tuple[FeatureVector, RegimeState]]:
        if state is None:
            state = RegimeClassifier(config)
        return state, (fv, state.update(fv))

    return op.stateful_map(step_id, fvs, mapper)


def score(
    step_id: str,
    up: KeyedStream[tuple[FeatureVector, RegimeState]],
    config: EdgeConfig,
    calibration: Calibration | None = CALIBRATION,
) -> KeyedStream[Scored]:
    """Signals, freshness as of the bar close, and the edge (stateless)."""
    scorer = EdgeScorer(config, calibration)

    def mapper(item: tuple[FeatureVector, RegimeState]) -> Scored:
        fv, rs = item
        fresh = freshness_block(fv, fv.close_ms)
        stale = fresh["status"] == FreshnessStatus.STALE.value
        sig = compute_signals(fv, rs)
        return Scored(fv, rs, sig, scorer.score(fv, rs, sig, stale), fresh)

    return op.map_value(step_id, up, mapper)


def envelope(
    step_id: str, up: KeyedStream[Scored], producer: Producer
) -> KeyedStream[dict[str, Any]]:
    """The agent-readable envelope (a dict in the API's schema)."""

    def mapper(s: Scored) -> dict[str, Any]:
        return build_envelope(s.features, s.regime, s.signals, s.edge, s.freshness, producer)

    return op.map_value(step_id, up, mapper)
