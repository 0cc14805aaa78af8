"""The service's documents as Pydantic v2 models: everything the API answers but an envelope.

Lists and history of envelopes (`SignalList`, `SignalHistory`), liveness and state (`Health`,
`State` with `SourceState`, `ConnectionState`, `CoinState`), errors (`ErrorBody`) and the data of
the push channel's ``event: dropped`` (`DroppedEvent`). The envelope itself is
`api.signal_envelope`; `api.schemas` re-exports both.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from api.signal_envelope import SignalEnvelope, _Model
from connectors.freshness import FreshnessStatus
from operators.failures import STEP_ERRORS
from operators.regime import RegimeLabel


class SignalList(_Model):
    """Every coin's latest signal."""

    data: list[SignalEnvelope]
    count: int


class SignalHistory(_Model):
    """A coin's stored signals, oldest first."""

    coin: str
    data: list[SignalEnvelope]
    count: int
    next_since_ms: int | None = Field(
        default=None,
        description="with until_ms: more envelopes are in the range; ask again with this as "
        "since_ms (the last one's timestamp_ms); null when the page is the last",
    )


class ConnectionState(_Model):
    """One live WebSocket connection."""

    name: str
    coins: list[str]
    connected: bool
    subscriptions: int = Field(description="subscriptions sent per (re)connect")
    acknowledged: int = Field(description="subscriptions acknowledged on the current socket")
    primed_coins: int = Field(
        description="coins primed from REST (warm start); 0 with --no-warm-start"
    )
    reconnects: int
    resubscribes: int = Field(description="silent subscriptions re-subscribed")
    frames: int
    error_frames: int
    skipped: int = Field(description="frames that could not be parsed")
    last_frame_ms: int | None = Field(description="wall-clock time of the last frame")
    last_error: str | None


class SourceState(_Model):
    """What the input source has done."""

    kind: str
    files: list[str]
    lines_read: int
    frames_by_channel: dict[str, int]
    control_frames: dict[str, int]
    lines_skipped: dict[str, int]
    duplicate_trades: int
    ignored_coin_events: int
    errors: list[str]
    finished: bool
    latest_event_ms: int | None
    connections: list[ConnectionState] = Field(default_factory=list)


class Health(_Model):
    """Liveness and honesty: is the flow running, and how old is the data."""

    ok: bool
    status: str = Field(description="starting, running, finished, stopped or failed")
    mode: str
    error: str | None
    coins: list[str]
    signals_emitted: int
    source_clock_ms: int | None
    uptime_s: float
    connections: list[ConnectionState] = Field(
        default_factory=list, description="live connections (empty for a replay)"
    )
    stale_coins: list[str] = Field(
        default_factory=list,
        description="coins whose latest signal is stale on the source clock now",
    )
    reason: str | None = Field(default=None, description="why ok is false, if it is")
    store: dict[str, Any] | None = Field(
        default=None,
        description="the shared store (--store redis://...): its redacted URL, prefix, run, "
        "whether this server reads it, the mirror's lag, the flow processes reporting, and "
        "what their writers buffered or dropped while it was unreachable; null for memory",
    )


class CoinState(_Model):
    """One coin in the state document."""

    coin: str
    has_signal: bool
    timestamp_ms: int | None
    regime: RegimeLabel | None
    freshness: FreshnessStatus | None
    late_events: int


class State(_Model):
    """The service's state: flow, source counters, per coin summary."""

    health: Health
    source: SourceState
    coins: list[CoinState]
    late_events: int
    step_errors: dict[str, dict[str, int]] = Field(
        default_factory=STEP_ERRORS.by_step,
        description=(
            "bars whose computation failed, by step then coin (published degraded; the flow "
            "went on); the same counts as hlsl_step_errors_total{step,coin}"
        ),
    )


class ErrorBody(_Model):
    """An error response."""

    detail: str
    coins: list[str] | None = None
    earliest_ms: int | None = Field(
        default=None,
        description="history: the oldest bar close still held, when the range asked for is "
        "no longer held (404)",
    )


class DroppedEvent(_Model):
    """The data of an ``event: dropped`` on ``GET /v1/stream``."""

    missed: int = Field(ge=0, description="events after last_id this client will not get")
    last_id: str = Field(
        description="the id of the last event the client has (opaque, <run>:<seq>), or the "
        "Last-Event-ID it sent"
    )
    reason: str = Field(description="machine code, a colon, then the explanation")


__all__ = [
    "CoinState",
    "ConnectionState",
    "DroppedEvent",
    "ErrorBody",
    "Health",
    "SignalHistory",
    "SignalList",
    "SourceState",
    "State",
]
