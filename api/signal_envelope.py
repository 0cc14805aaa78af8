"""The signal envelope contract as Pydantic v2 models: `SignalEnvelope` and its blocks.

The envelope keeps the public ``jsrigiri/hyperliquid-signal-layer`` contract field for field
(``timestamp_ms``, ``coin``, ``regime {label, confidence}``,
``signals {momentum, liquidity, risk}``, ``edge {score, actionable, explain}``) and adds what
agents need: ``schema_version``, ``direction``, ``regime.since_ms`` and the rest of the regime
block, named ``features`` with units in their names (and why any is null), per-stream
``freshness``, ``warmup`` status, the ``bar`` it describes and the ``producer`` (code version and
settings).

Enums are stable: values are never renamed, only added. The committed JSON Schema
(``api/signal_envelope.schema.json``) is generated from `SignalEnvelope`; a test fails when they
drift apart (regenerate with ``python -m api.schemas > api/signal_envelope.schema.json``). The
service's other documents (lists, history, health, state, errors) are `api.documents`;
`api.schemas` re-exports both.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from connectors.codes import Explain
from connectors.events import Stream
from connectors.freshness import FreshnessStatus
from operators.edge import Direction
from operators.flag_evidence import EVIDENCE, EvidenceTable, FlagEvidence
from operators.forecast import RISK_MIN_RETURNS, VolModel
from operators.regime import VOL_MODEL, RegimeConfig, RegimeLabel, Rule

_CFG: Final = RegimeConfig()


def _risk_ratio_meaning(model: VolModel | None) -> str:
    """What ``regime.risk_ratio`` is, with the flag's thresholds read from the shipped volatility
    model (its ``flag`` block) so that the text cannot drift from the table."""
    old = (
        f"the flag is vol_expansion_ratio >= {_CFG.chaos_enter_ver:g} (kept while >= "
        f"{_CFG.chaos_exit_ver:g}) with efficiency_ratio < {_CFG.chaos_max_er:g}, or >= "
        f"{_CFG.flag_ver:g} at any efficiency"
    )
    if model is None:
        return (
            "rho: the next hour's forecast volatility over the coin's norm; always null (no "
            f"volatility model): {old}"
        )
    band = "" if model.flag_exit == model.flag_enter else f", kept while rho >= {model.flag_exit:g}"
    return (
        "rho: the next hour's forecast volatility over the coin's norm; the risk flag is "
        f"raised at rho >= {model.flag_enter:g}{band} (model {model.version}), or by "
        f"features.vol_expansion_ratio >= {_CFG.flag_ver:g}; null until the coin has "
        f"{RISK_MIN_RETURNS} returns and a day of bars, and while null {old}"
    )


RISK_RATIO_MEANING: Final = _risk_ratio_meaning(VOL_MODEL)


def _flag_evidence_meaning(table: EvidenceTable) -> str:
    """What ``regime.flag_evidence`` says, with the bar lengths the shipped table demonstrates."""
    shown = ", ".join(f"{b:,} ms" for b in table.demonstrated_bar_ms()) or "none"
    return (
        "whether the risk flag (LIQUIDATION_RISK or CHAOTIC) has been shown, out of sample on "
        "real data at this envelope's bar length, to separate the next hour's realised "
        "volatility better than the one-line rule 'trailing 1 h realised vol / its 24 h median' "
        "flagging as many bars: demonstrated, not_demonstrated (evaluated; the margin's 95 % "
        "interval reaches 0 on some coin) or untested (no real data of this bar length was "
        f"evaluated). Demonstrated bar lengths in the shipped table ({table.version}): {shown}"
    )


FLAG_EVIDENCE_MEANING: Final = _flag_evidence_meaning(EVIDENCE)

Unit = Annotated[float, Field(ge=0.0, le=1.0)]
SignedUnit = Annotated[float, Field(ge=-1.0, le=1.0)]
Positive = Annotated[float, Field(gt=0.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Percent = Annotated[float, Field(ge=-100.0)]
Count = Annotated[int, Field(ge=0)]
Ms = Annotated[int, Field(description="milliseconds since the Unix epoch (UTC)")]
# Ranges are defined once, in the operators (`operators.features.FEATURE_BOUNDS`,
# `operators.envelope.ENVELOPE_BOUNDS`); tests/api/test_schema.py checks these fields carry them.


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=True)


class _Published(_Model):
    """A part of the envelope: every number finite (NaN and ±inf are invalid)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", use_enum_values=True, allow_inf_nan=False
    )


class Regime(_Published):
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
    n_inputs: int = Field(
        ge=0, description="decision features (normalised) that had a value for this call"
    )
    n_inputs_max: int = Field(ge=1, description="decision features the rules can read")
    risk_ratio: NonNegative | None = Field(description=RISK_RATIO_MEANING)
    stale: bool = Field(
        description="the label is held because the bar brought no new data (rule no_new_data)"
    )
    flag_evidence: FlagEvidence = Field(description=FLAG_EVIDENCE_MEANING)


class Signals(_Published):
    """The three contract signals in [0, 1]; null when no input supports them."""

    momentum: Unit | None = Field(
        description="strength of the move vs its noise (0 none, 1 strong)"
    )
    liquidity: Unit | None = Field(description="1 = normal or better for this coin, 0 = none")
    risk: Unit | None = Field(
        description=(
            "1 - 2^-rho from the volatility forecast's risk ratio (0.5 = forecast at the coin's "
            "norm), at least 0.8 under LIQUIDATION_RISK; while regime.risk_ratio is null: "
            "market stress "
            "(vol expansion, spread, depth, flow, OI)"
        )
    )


class VolForecast(_Published):
    """Forecast realised volatility of the bar returns over the edge's horizon."""

    horizon_ms: int = Field(gt=0, description="forecast horizon (the edge's horizon_ms)")
    vol_bps: NonNegative = Field(description="expected realised volatility over horizon_ms, bps")
    vol_p10_bps: NonNegative = Field(description="10th percentile of realised volatility, bps")
    vol_p90_bps: NonNegative = Field(description="90th percentile of realised volatility, bps")
    model: str = Field(description="version of the volatility model table")


class EdgeCosts(_Published):
    """What acting on the edge costs, bps of mid (null: not measurable from the inputs)."""

    fee_bps: float = Field(ge=0, description="taker fee (HLSL_TAKER_FEE_BPS, default 4.5)")
    half_spread_bps: NonNegative | None = Field(
        description="half the quoted spread (null unless 0 < bid < ask, both finite)"
    )
    slippage_bps: NonNegative | None = Field(
        description="walking the latest book for size_usd, beyond the touch price"
    )


class Edge(_Published):
    """The edge: direction, calibrated score, expected move net of costs, and why."""

    score: Unit = Field(
        description=(
            "directional call (LONG/SHORT): p_right where the horizon has demonstrated "
            "out-of-sample skill; 0.5 with NO_DEMONSTRATED_SKILL where it has not; raw_score "
            "when uncalibrated; FLAT: 0. See DESIGN.md §6"
        )
    )
    actionable: bool = Field(
        description=(
            "net_edge_bps > 0 with a positive cost from a sane quote (0 < bid < ask), tradable "
            "regime, fresh inputs, warmed up, liquid enough, and no step error (degraded null)"
        )
    )
    explain: list[Explain] = Field(description="stable machine codes, most important first")
    direction: Direction
    horizon_ms: Annotated[int, Field(gt=0)] | None = Field(
        description="horizon of the call and of expected_move_bps"
    )
    raw_score: Unit = Field(description="heuristic strength of the call before calibration")
    p_right: Unit | None = Field(
        description=(
            "calibrated probability that direction is right at horizon_ms; null without "
            "demonstrated skill (NO_DEMONSTRATED_SKILL) or calibration"
        )
    )
    calibration: str = Field(description="version of the calibration table used, or 'uncalibrated'")
    expected_move_bps: float | None = Field(
        description=(
            "gross expected move in the call's direction: (2 p_right - 1) x E|R|, "
            "E|R| = sqrt(2/pi) x forecast vol_bps (else the table's mean |move|)"
        )
    )
    cost_bps: NonNegative | None = Field(description="fee + half spread + slippage for size_usd")
    net_edge_bps: float | None = Field(description="expected_move_bps - cost_bps")
    size_usd: float = Field(gt=0, description="notional the costs are measured for (quote)")
    costs: EdgeCosts


class Features(_Published):
    """Named features with units in their names (DESIGN.md §4), in `FEATURE_NAMES` order.

    A null value is never a silent 0: ``features_missing`` says why it is null.
    """

    mid_px: Positive | None = Field(
        description="mid price (bbo/book, else allMids or ctx mid), quote currency"
    )
    spread_bps: NonNegative | None = Field(description="best ask minus best bid over mid, bps")
    weighted_mid_px: Positive | None = Field(
        description="size-weighted mid (bid*ask_sz + ask*bid_sz)/(bid_sz + ask_sz), quote ccy"
    )
    microprice_px: Positive | None = Field(
        description=(
            "Stoikov micro-price mid + spread*g(I, S): g is the mean next mid change (in "
            "spreads) per imbalance bucket I and spread state S (1, 2 or more ticks), learnt "
            "online per coin, symmetrised and shrunk towards 0 (the mid)"
        )
    )
    microprice_offset_bps: float | None = Field(description="microprice minus mid over mid, bps")
    tob_imbalance: SignedUnit | None = Field(
        description="(bid_sz - ask_sz)/(bid_sz + ask_sz) at the touch, -1..1"
    )
    depth_band_bps: Positive | None = Field(
        description="half-width of the depth band around mid, bps"
    )
    depth_bid_usd: NonNegative | None = Field(
        description="bid notional within the band, quote currency"
    )
    depth_ask_usd: NonNegative | None = Field(
        description="ask notional within the band, quote currency"
    )
    depth_imbalance: SignedUnit | None = Field(
        description="(bid depth - ask depth)/(sum) within the band, -1..1"
    )
    book_levels: NonNegative | None = Field(description="levels in the latest book, both sides")
    ofi: float | None = Field(
        description="Cont-Kukanov-Stoikov order-flow imbalance over this bar's quotes, base coin"
    )
    ofi_norm: float | None = Field(
        description="OFI over the window / mean touch depth (bid+ask size)/2, dimensionless"
    )
    ofi_zscore: float | None = Field(description="this bar's OFI vs its rolling history, sigma")
    trade_count: NonNegative | None = Field(description="trades in this bar")
    buy_volume: NonNegative | None = Field(
        description="buying-aggressor volume in this bar, base coin"
    )
    sell_volume: NonNegative | None = Field(
        description="selling-aggressor volume in this bar, base coin"
    )
    vwap_px: Positive | None = Field(description="volume-weighted trade price in this bar")
    trade_flow_imbalance: SignedUnit | None = Field(
        description="(buy - sell)/(buy + sell) aggressor volume over the window, -1..1"
    )
    trade_flow_imbalance_bar: SignedUnit | None = Field(description="same, this bar only")
    signed_notional_usd: float | None = Field(
        description="buy minus sell aggressor notional over the window, quote currency"
    )
    trade_rate_per_s: NonNegative | None = Field(description="trades per second over the window")
    trade_rate_burst: NonNegative | None = Field(
        description="trade rate over the short window / over the long window (1 = usual)"
    )
    vpin: Unit | None = Field(
        description="VPIN over the last volume buckets, exact aggressor sides, 0..1"
    )
    realized_vol_bps: NonNegative | None = Field(
        description="sqrt(sum of squared log returns) over the window, bps"
    )
    realized_vol_ann: NonNegative | None = Field(
        description="realized volatility annualised (365.25 d), fraction"
    )
    vol_expansion_ratio: NonNegative | None = Field(
        description="short-window vol per unit time over its usual (rolling median) level"
    )
    parkinson_vol_ann: NonNegative | None = Field(
        description="Parkinson high-low volatility from closed candles, annualised fraction"
    )
    garman_klass_vol_ann: NonNegative | None = Field(
        description="Garman-Klass OHLC volatility from closed candles, annualised fraction"
    )
    momentum_bps: float | None = Field(description="log return over the trend window, bps")
    momentum_z: float | None = Field(
        description="momentum over its noise: move / (sigma per return x sqrt(returns)), sigma"
    )
    efficiency_ratio: Unit | None = Field(
        description="Kaufman efficiency ratio |net move| / path length over the trend window, 0..1"
    )
    variance_ratio: NonNegative | None = Field(
        description="variance ratio VR(q) of q-period vs 1-period returns (>1 trend, <1 reverting)"
    )
    price_zscore: float | None = Field(description="(price - window mean) / window std")
    spread_ratio: NonNegative | None = Field(
        description="spread over its rolling median (1 = usual)"
    )
    depth_ratio: NonNegative | None = Field(
        description="band depth over its rolling median (1 = usual)"
    )
    volume_ratio: NonNegative | None = Field(
        description="bar volume over its rolling median (1 = usual)"
    )
    funding_rate_1h: float | None = Field(
        description="hourly funding rate estimate (fraction, not %)"
    )
    premium_bps: float | None = Field(
        description="the exchange's funding premium (impact prices vs oracle), bps"
    )
    mark_oracle_bps: float | None = Field(description="(mark - oracle)/oracle, bps")
    open_interest: NonNegative | None = Field(description="open interest, base coin")
    oi_change_pct: Percent | None = Field(
        description="open-interest change over the window, percent"
    )
    mark_px: Positive | None = Field(description="mark price")
    oracle_px: Positive | None = Field(description="oracle price")


class StreamFreshness(_Published):
    """One stream's freshness on the source's clock."""

    status: FreshnessStatus
    last_exchange_ms: int | None
    last_recv_ms: int | None
    age_ms: Count | None = Field(description="source clock minus last exchange time")
    expected_interval_ms: Count | None = Field(description="the stream's learnt typical interval")
    reason: str | None = Field(description="why stale or missing")


class Freshness(_Published):
    """Per-stream freshness; ``as_of_ms`` is the source clock it was judged at."""

    as_of_ms: int
    status: FreshnessStatus = Field(description="stale if any present stream is stale")
    streams: dict[Stream, StreamFreshness]


class Warmup(_Published):
    """Warm-up: signals are not trusted until enough price observations exist."""

    warming_up: bool
    observations: int = Field(ge=0)
    required: int = Field(ge=1)
    coverage: Unit


class BarInfo(_Published):
    """The bar (exchange-time window) this envelope describes."""

    open_ms: int
    close_ms: int
    events: int = Field(ge=0)
    gaps: int = Field(ge=0, description="input gaps (live reconnects) inside this bar")
    price_source: str | None = Field(description="mid, candle_close or last_trade")
    window_span_ms: Count | None = Field(description="time spanned by the feature window")


class Degraded(_Published):
    """A bar whose computation failed in a step (isolated: other coins and bars go on)."""

    step: str = Field(description="the flow step that failed, e.g. compute_features")
    reason: str = Field(
        description="out_of_range: <field> = <value> is not <range>, or <exception>: <message>"
    )


class Producer(_Published):
    """What produced the envelope."""

    code_version: str
    bar_ms: int = Field(gt=0)
    lateness_ms: int = Field(ge=0)


class SignalEnvelope(_Published):
    """One coin's signal as of one bar close (exchange time)."""

    schema_version: Literal["1.3"] = Field(
        description=(
            "1.1 added the degraded block, the STEP_ERROR explain code and the ranges; 1.2 (#9) "
            "the forecast block, regime.risk_ratio and regime.stale, new rules and explain codes; "
            "1.3 (#9) regime.flag_evidence"
        )
    )
    timestamp_ms: Ms = Field(description="bar close, exchange time")
    coin: str
    direction: Direction
    regime: Regime
    signals: Signals
    forecast: VolForecast | None = Field(
        description=(
            "volatility forecast over the edge's horizon (null: no model, fewer than 3 bar "
            "returns yet, or a failed step on this bar)"
        )
    )
    edge: Edge
    features: Features
    features_missing: dict[str, str] = Field(description="feature name -> reason it is null")
    freshness: Freshness
    warmup: Warmup
    bar: BarInfo
    producer: Producer
    degraded: Degraded | None = Field(
        description=(
            "null, or why this bar could not be computed: the step that failed and the reason. "
            "Then the regime is held, features are null (step_error) or kept, the edge is FLAT "
            "and not actionable with STEP_ERROR; the next good bar is normal again"
        )
    )


def envelope_json_schema() -> dict[str, object]:
    """The JSON Schema of the envelope (what is committed under ``api/``)."""
    return SignalEnvelope.model_json_schema()


__all__ = [
    "BarInfo",
    "Count",
    "Degraded",
    "Edge",
    "EdgeCosts",
    "Features",
    "Freshness",
    "Ms",
    "NonNegative",
    "Percent",
    "Positive",
    "Producer",
    "Regime",
    "SignalEnvelope",
    "Signals",
    "SignedUnit",
    "StreamFreshness",
    "Unit",
    "VolForecast",
    "Warmup",
    "envelope_json_schema",
]
