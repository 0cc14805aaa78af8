"""The signal envelope: what agents read, as a plain dict in the API's exact shape.

The envelope is built as a dict (cheap on the hot path, serialised by orjson as is) whose shape is
the `api.schemas.SignalEnvelope` Pydantic model; tests validate every envelope a replay produces
against that model with ``extra="forbid"``, so the two cannot drift apart silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import isfinite
from typing import Any, Final

from connectors.events import STREAMS
from operators.edge import Edge, Signals
from operators.features import FeatureVector
from operators.freshness import FreshnessStatus, StreamFreshness, judge_all, overall
from operators.regime import RegimeState

SCHEMA_VERSION: Final = "1.0"
_NAMES: Final = tuple(s.value for s in STREAMS)
_STATUS: Final = {s: s.value for s in FreshnessStatus}


@dataclass(frozen=True, slots=True)
class Producer:
    """Who made the envelope: code version and the settings that shape its numbers."""

    code_version: str
    bar_ms: int
    lateness_ms: int


def freshness_block(fv: FeatureVector, as_of_ms: int) -> dict[str, Any]:
    """Per-stream freshness as of ``as_of_ms`` (bar close here; the source clock in the API)."""
    judged = judge_all(fv.streams, as_of_ms)
    return {
        "as_of_ms": as_of_ms,
        "status": overall(judged).value,
        "streams": {name: stream_block(f) for name, f in zip(_NAMES, judged.values(), strict=True)},
    }


def stream_block(f: StreamFreshness) -> dict[str, Any]:
    """One stream's freshness as a dict."""
    return {
        "status": _STATUS[f.status],
        "last_exchange_ms": f.last_exchange_ms,
        "last_recv_ms": f.last_recv_ms,
        "age_ms": f.age_ms,
        "expected_interval_ms": f.expected_interval_ms,
        "reason": f.reason,
    }


def build_envelope(
    fv: FeatureVector,
    regime: RegimeState,
    signals: Signals,
    edge: Edge,
    freshness: dict[str, Any],
    producer: Producer,
) -> dict[str, Any]:
    """Assemble the envelope (field order is part of the byte-identical replay promise)."""
    features = dict(fv.values)
    missing = dict(fv.missing)
    bad = [k for k, v in features.items() if v is not None and not isfinite(v)]
    for name in bad:  # NaN/inf never reach an agent: null with a reason
        features[name] = None
        missing[name] = "non_finite"
    n = fv.observations
    return {
        "schema_version": SCHEMA_VERSION,
        "timestamp_ms": fv.close_ms,
        "coin": fv.coin,
        "direction": edge.direction.value,
        "regime": {
            "label": regime.label.value,
            "confidence": regime.confidence,
            "since_ms": regime.since_ms,
            "previous": None if regime.previous is None else regime.previous.value,
            "candidate": None if regime.candidate is None else regime.candidate.value,
            "candidate_count": regime.candidate_count,
            "dwell_bars": regime.dwell,
            "rule": regime.rule.value,
            "margin": round(regime.margin, 4),
            "stresses": list(regime.stresses),
            "inputs_used": list(regime.inputs_used),
            "inputs_missing": list(regime.inputs_missing),
        },
        "signals": {
            "momentum": signals.momentum,
            "liquidity": signals.liquidity,
            "risk": signals.risk,
        },
        "edge": {
            "score": edge.score,
            "actionable": edge.actionable,
            "explain": [c.value for c in edge.explain],
            "direction": edge.direction.value,
            "horizon_ms": edge.horizon_ms,
        },
        "features": features,
        "features_missing": {k: missing[k] for k in sorted(missing)},
        "freshness": freshness,
        "warmup": {
            "warming_up": fv.warming_up,
            "observations": n,
            "required": fv.warmup_obs,
            "coverage": round(min(1.0, n / fv.warmup_obs), 4),
        },
        "bar": {
            "open_ms": fv.open_ms,
            "close_ms": fv.close_ms,
            "events": fv.event_count,
            "gaps": fv.gaps,
            "price_source": fv.price_source,
            "window_span_ms": fv.window_span_ms,
        },
        "producer": {
            "code_version": producer.code_version,
            "bar_ms": producer.bar_ms,
            "lateness_ms": producer.lateness_ms,
        },
    }
