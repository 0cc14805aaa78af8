"""The API's Pydantic v2 models: the signal envelope contract and the service documents.

The envelope keeps the public ``jsrigiri/hyperliquid-signal-layer`` contract field for field
(``timestamp_ms``, ``coin``, ``regime {label, confidence}``,
``signals {momentum, liquidity, risk}``, ``edge {score, actionable, explain}``) and adds what
agents need: ``schema_version``, ``direction``, ``regime.since_ms`` and the rest of the regime
block, named ``features`` with units in their names (and why any is null), per-stream
``freshness``, ``warmup`` status, the ``bar`` it describes and the ``producer`` (code version and
settings).

Enums are stable: values are never renamed, only added. The committed JSON Schema
(``api/signal_envelope.schema.json``) is generated from `SignalEnvelope`; a test fails when they
drift apart (regenerate with ``python -m api.schemas > api/signal_envelope.schema.json``).
"""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from connectors.events import Stream
from operators.edge import Direction, Explain
from operators.freshness import FreshnessStatus
from operators.regime import RegimeLabel, Rule

Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Ms = Annotated[int, Field(description="milliseconds since the Unix epoch (UTC)")]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=True)


class Regime(_Model):
    """The market regime of a coin, with its history and the evidence behind it."""

    label: RegimeLabel = Field(description="current regime (hysteresis applied)")
    confidence: Unit = Field(description="margin of the rule x input quality x stability")
    since_ms: Ms = Field(description="exchange time the current label was entered")
    previous: RegimeLabel | None = Field(description="the label before the current one")
    candidate: RegimeLabel | None = Field(
        description="a different label the rules currently point to, not yet confirmed"
    )
    candidate_count: int = Field(ge=0, description="consecutive bars the candidate has held")
    dwell_bars: int = Field(ge=0, description="bars the current label has been held")
    rule: Rule = Field(description="the rule behind this bar's call")
    margin: Unit = Field(description="how far past its threshold the rule held (0..1)")
    stresses: list[str] = Field(description="cascade stress conditions that held")
    inputs_used: list[str] = Field(description="kinds of input the coin has had")
    inputs_missing: list[str] = Field(description="kinds of input the coin has never had")


class Signals(_Model):
    """The three contract signals in [0, 1]; null when no input supports them."""

    momentum: Unit | None = Field(
        description="strength of the move vs its noise (0 none, 1 strong)"
    )
    liquidity: Unit | None = Field(description="1 = normal or better for this coin, 0 = none")
    risk: Unit | None = Field(description="market stress (vol expansion, spread, depth, flow, OI)")


class Edge(_Model):
    """The edge: direction, score, whether to act, and why (stable machine codes)."""

    score: Unit = Field(description="0 = no edge; see DESIGN.md §Edge")
    actionable: bool
    explain: list[Explain] = Field(description="stable machine codes, most important first")
    direction: Direction
    horizon_ms: int | None = Field(description="time span of the window behind the call")


class Features(_Model):
    """Named features with units in their names (DESIGN.md §Features).

    A null value is never a silent 0: ``features_missing`` says why it is null.
    """

    mid_px: float | None = Field(
        description="mid price (bbo/book, else allMids or ctx mid), quote currency"
    )
    spread_bps: float | None = Field(description="best ask minus best bid over mid, bps")
    microprice_px: float | None = Field(
        description="size-weighted mid (bid*ask_sz + ask*bid_sz)/(bid_sz + ask_sz)"
    )
    microprice_offset_bps: float | None = Field(description="microprice minus mid over mid, bps")
    tob_imbalance: float | None = Field(
        description="(bid_sz - ask_sz)/(bid_sz + ask_sz) at the touch, -1..1"
    )
    depth_band_bps: float | None = Field(description="half-width of the depth band around mid, bps")
    depth_bid_usd: float | None = Field(description="bid notional within the band, quote currency")
    depth_ask_usd: float | None = Field(description="ask notional within the band, quote currency")
    depth_imbalance: float | None = Field(
        description="(bid depth - ask depth)/(sum) within the band, -1..1"
    )
    book_levels: float | None = Field(description="levels in the latest book, both sides")
    trade_count: float | None = Field(description="trades in this bar")
    buy_volume: float | None = Field(description="buying-aggressor volume in this bar, base coin")
    sell_volume: float | None = Field(description="selling-aggressor volume in this bar, base coin")
    vwap_px: float | None = Field(description="volume-weighted trade price in this bar")
    trade_flow_imbalance: float | None = Field(
        description="(buy - sell)/(buy + sell) aggressor volume over the window, -1..1"
    )
    trade_flow_imbalance_bar: float | None = Field(description="same, this bar only")
    signed_notional_usd: float | None = Field(
        description="buy minus sell aggressor notional over the window, quote currency"
    )
    trade_rate_per_s: float | None = Field(description="trades per second over the window")
    realized_vol_bps: float | None = Field(
        description="sqrt(sum of squared log returns) over the window, bps"
    )
    realized_vol_ann: float | None = Field(
        description="realized volatility annualised (365.25 d), fraction"
    )
    vol_expansion_ratio: float | None = Field(
        description="short-window vol per unit time over long-window vol per unit time"
    )
    parkinson_vol_ann: float | None = Field(
        description="Parkinson high-low volatility from closed candles, annualised fraction"
    )
    momentum_bps: float | None = Field(description="log return over the window, bps")
    efficiency_ratio: float | None = Field(
        description="Kaufman efficiency ratio |net move| / path length over the window, 0..1"
    )
    price_zscore: float | None = Field(description="(price - window mean) / window std")
    spread_ratio: float | None = Field(description="spread over its rolling median (1 = usual)")
    depth_ratio: float | None = Field(description="band depth over its rolling median (1 = usual)")
    volume_ratio: float | None = Field(description="bar volume over its rolling median (1 = usual)")
    funding_rate_1h: float | None = Field(
        description="hourly funding rate estimate (fraction, not %)"
    )
    premium_bps: float | None = Field(description="exchange premium (mark vs oracle), bps")
    open_interest: float | None = Field(description="open interest, base coin")
    oi_change_pct: float | None = Field(description="open-interest change over the window, percent")
    mark_px: float | None = Field(description="mark price")
    oracle_px: float | None = Field(description="oracle price")


class StreamFreshness(_Model):
    """One stream's freshness on the source's clock."""

    status: FreshnessStatus
    last_exchange_ms: int | None
    last_recv_ms: int | None
    age_ms: int | None = Field(description="source clock minus last exchange time")
    expected_interval_ms: int | None = Field(description="the stream's learnt typical interval")
    reason: str | None = Field(description="why stale or missing")


class Freshness(_Model):
    """Per-stream freshness; ``as_of_ms`` is the source clock it was judged at."""

    as_of_ms: int
    status: FreshnessStatus = Field(description="stale if any present stream is stale")
    streams: dict[Stream, StreamFreshness]


class Warmup(_Model):
    """Warm-up: signals are not trusted until enough price observations exist."""

    warming_up: bool
    observations: int = Field(ge=0)
    required: int = Field(ge=1)
    coverage: Unit


class BarInfo(_Model):
    """The bar (exchange-time window) this envelope describes."""

    open_ms: int
    close_ms: int
    events: int = Field(ge=0)
    gaps: int = Field(ge=0, description="input gaps (live reconnects) inside this bar")
    price_source: str | None = Field(description="mid, candle_close or last_trade")
    window_span_ms: int | None = Field(description="time spanned by the feature window")


class Producer(_Model):
    """What produced the envelope."""

    code_version: str
    bar_ms: int
    lateness_ms: int


class SignalEnvelope(_Model):
    """One coin's signal as of one bar close (exchange time)."""

    schema_version: Literal["1.0"]
    timestamp_ms: Ms = Field(description="bar close, exchange time")
    coin: str
    direction: Direction
    regime: Regime
    signals: Signals
    edge: Edge
    features: Features
    features_missing: dict[str, str] = Field(description="feature name -> reason it is null")
    freshness: Freshness
    warmup: Warmup
    bar: BarInfo
    producer: Producer


class SignalList(_Model):
    """Every coin's latest signal."""

    data: list[SignalEnvelope]
    count: int


class SignalHistory(_Model):
    """A coin's stored signals, oldest first."""

    coin: str
    data: list[SignalEnvelope]
    count: int


class ConnectionState(_Model):
    """One live WebSocket connection."""

    name: str
    coins: list[str]
    connected: bool
    subscriptions: int = Field(description="subscriptions sent per (re)connect")
    acknowledged: int = Field(description="subscriptions acknowledged on the current socket")
    primed_coins: int = Field(description="coins primed from REST (warm start)")
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


class ErrorBody(_Model):
    """An error response."""

    detail: str
    coins: list[str] | None = None


def envelope_json_schema() -> dict[str, object]:
    """The JSON Schema of the envelope (what is committed under ``api/``)."""
    return SignalEnvelope.model_json_schema()


if __name__ == "__main__":
    import sys

    sys.stdout.write(
        orjson.dumps(
            envelope_json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        ).decode()
        + "\n"
    )
