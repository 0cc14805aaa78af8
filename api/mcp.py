"""The signal layer as an MCP server (official ``mcp`` SDK, 1.x ``FastMCP``): stdio and HTTP.

Tools (all read-only and idempotent, each with an output schema equal to the REST API's model and
returning structured content):

- ``get_signal(coin)`` → `api.schemas.SignalEnvelope` (as ``GET /v1/signal/{coin}``);
- ``list_signals()`` → `api.schemas.SignalList` (as ``GET /v1/signals``);
- ``get_history(coin, since_ms, limit)`` → `api.schemas.SignalHistory` (as
  ``GET /v1/signal/{coin}/history``; ``limit`` is capped at 1000 here, an agent's context is small);
- ``explain_regime(coin)`` → `RegimeExplanation`: the rule behind the regime, its inputs, thresholds
  and margin, in plain words.

Resources: ``signal://hyperliquid/{coin}`` (template; the latest envelope as JSON), and one listed
resource per coin that has a signal.

Semantics are the REST API's (`api.app`): a coin name matches exactly, else a unique
case-insensitive match; an unknown coin is a tool error naming the coins served; freshness is
judged again at call time on the source's clock (as ``GET /v1/signal/{coin}`` does), so a
signal whose inputs went stale is served with ``actionable: false`` and ``STALE_INPUT``.

Run it:

- ``python -m api.mcp`` (stdio) runs the flow in-process with the server's settings (``HLSL_*``
  variables or the same flags as ``python -m api.server``: ``--replay CAPTURE``, else live
  ``--coins``), or ``python -m api.mcp --api-url http://127.0.0.1:8000`` reads a running server,
  or ``python -m api.mcp --serve-only --store redis://…`` serves the shared store (its mirror on
  a thread of its own, `api.runtime.MirrorThread`).
  A finished replay keeps being served; the server ends when the client closes stdin (or on
  SIGINT/SIGTERM), stopping the flow cleanly. Nothing but MCP messages is written to stdout
  (logs go to stderr; see `protect_stdout`).
- HTTP: `mcp_http_app` returns an ASGI app (the SDK's streamable HTTP transport) to mount in the
  FastAPI app; its session manager must run in the app's lifespan (see `McpHttpApp`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from io import TextIOWrapper
from types import FrameType
from typing import Annotated, Any, BinaryIO, Final, Protocol, TypeVar

import anyio
import anyio.to_thread
import orjson
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.fastmcp.tools import Tool
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import McpError
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    CallToolResult,
    ErrorData,
    Resource,
    TextContent,
    ToolAnnotations,
)
from pydantic import AnyUrl, BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse
from starlette.routing import Router
from starlette.types import Receive, Scope, Send

from api.app import ApiError, check_coin_name, history_json, list_json, no_signal_reason
from api.app import resolve as app_resolve
from api.metrics import mcp_tool_call
from api.schemas import SignalEnvelope, SignalHistory, SignalList
from api.views import (
    EDGE_SCORE_MEANING,
    CompactSignal,
    View,
    ViewError,
    apply_view,
    check_features,
    resolve_view,
)
from connectors.freshness import FreshnessStatus
from connectors.store import RunState, SignalStore
from flows.settings import COIN_PATTERN, Settings, code_version
from operators.regime import VOL_MODEL, RegimeConfig, RegimeLabel, Rule

log = logging.getLogger("api.mcp")  # not "__main__" under python -m

SERVER_NAME = "hyperliquid-signal-layer"
URI_PREFIX = "signal://hyperliquid/"
URI_TEMPLATE = URI_PREFIX + "{coin}"
HISTORY_LIMIT_MAX = 1000
HISTORY_LIMIT_DEFAULT = 20
API_TIMEOUT_S = 10.0
TOKEN_ENV = "HLSL_API_CLIENT_TOKEN"
TOKEN_FILE_ENV = "HLSL_API_CLIENT_TOKEN_FILE"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]", "*")
RESOURCE_NOT_FOUND = -32002
"""MCP's JSON-RPC error code for an unknown resource (the specification's, not in the SDK 1.x)."""
REPLAY_POLL_S = 0.05

Envelope = dict[str, Any]
T = TypeVar("T")
_COIN_RE = re.compile(COIN_PATTERN)

# -- what an agent reads -------------------------------------------------------------------------

_TRUST = (
    "Do not act on a signal when: freshness.status is 'stale' (its inputs stopped updating; the "
    "server then sets edge.actionable false and appends STALE_INPUT), warmup.warming_up is true, "
    "regime.label is UNKNOWN, edge.actionable is false, or regime.candidate is set (a regime "
    "change is pending confirmation). " + EDGE_SCORE_MEANING + " regime.confidence is rule "
    "margin x input quality x stability, not a probability. This server never trades."
)

_FIELDS = (
    "Fields: timestamp_ms = bar close, exchange time, ms since the Unix epoch (UTC). coin. "
    "direction = edge.direction (LONG, SHORT, FLAT). regime: label (TRENDING, MEAN_REVERTING, "
    "LIQUIDATION_RISK, CHAOTIC, UNKNOWN), confidence 0..1, since_ms (exchange time the label was "
    "entered), previous, candidate (pending label) with candidate_count, dwell_bars, rule and "
    "margin 0..1 of this bar's call, stresses, inputs_used/inputs_missing. signals: momentum "
    "(move vs its noise), liquidity (1 = usual for this coin or better), risk (market stress), "
    "each 0..1 or null without input. edge: score 0..1, p_right, actionable, direction, "
    "horizon_ms, expected_move_bps, cost_bps, net_edge_bps, explain = stable machine codes, most "
    "important first (e.g. REGIME_TRENDING, WARMING_UP, STALE_INPUT, LIQUIDITY_POOR, "
    "NO_DEMONSTRATED_SKILL, COSTS_EXCEED_EDGE). features: units are in the names (_bps basis "
    "points, _px and _usd quote currency, _ms milliseconds, _pct percent, _1h hourly fraction, "
    "_ann annualised fraction; *_ratio = 1 means usual for this coin; *_imbalance in -1..1; "
    "volumes in base coin); a null feature is never a silent 0, features_missing gives its "
    "reason. freshness: per stream (trades, l2Book, bbo, candle, allMids, activeAssetCtx) "
    "status ok/stale/missing with age_ms, judged at call time (as_of_ms) on the source clock; "
    "'missing' = never received. warmup: observations vs required. bar: the 1-bar window "
    "described. producer: code version and settings."
)

_COIN_RULE = (
    "coin: exact Hyperliquid name (case-sensitive, e.g. BTC, kPEPE) or a unique "
    "case-insensitive match (btc); an unknown coin is an error that lists the coins served."
)

_VIEW_RULE = (
    "view: 'compact' (coin, timestamp_ms, direction, regime label/confidence/since_ms/"
    "candidate/rule, signals, edge without its cost breakdown, freshness status with the "
    "stale and missing streams, warmup, degraded) or 'full' (the whole envelope). features: "
    'names of features to add to the compact view, e.g. ["mid_px", "spread_bps"] '
    "(features alone means compact; an unknown name is an error listing them all)."
)

INSTRUCTIONS = (
    "Read-only market-structure signals for Hyperliquid perpetuals: per coin a regime, three "
    "0..1 signals, an edge (direction, score, p_right, costs, actionable, explain codes), named "
    "features with units, and per-stream freshness. Start with list_signals (compact) or "
    "get_signal; use explain_regime to see why a regime was called. Full JSON Schemas: "
    "resources schema://hyperliquid/signal-envelope and schema://hyperliquid/compact-signal. "
    + _TRUST
)

GET_SIGNAL_DOC = (
    "Latest signal of one coin (one bar close), freshness judged at call time; default view "
    "full (the REST envelope). " + _COIN_RULE + " " + _VIEW_RULE + " " + _FIELDS + " " + _TRUST
)
LIST_SIGNALS_DOC = (
    "Latest signal of every coin that has one ({data: [...], count}), freshness judged at call "
    "time; default view compact (fields as in get_signal). Coins that are tracked but have no "
    "signal yet are not listed. " + _VIEW_RULE + " " + _TRUST
)
GET_HISTORY_DOC = (
    "A coin's stored signals, oldest first ({coin, data: [...], count}), as they were emitted: "
    "freshness and actionable are as of each bar close, NOT re-judged now (use get_signal for "
    "the current state). since_ms: only signals with timestamp_ms after this exchange time (ms "
    f"since the Unix epoch). limit: the newest N (1..{HISTORY_LIMIT_MAX}, default "
    f"{HISTORY_LIMIT_DEFAULT}); default view compact. "
    + _COIN_RULE
    + " "
    + _VIEW_RULE
    + " "
    + _TRUST
)
EXPLAIN_REGIME_DOC = (
    "Why a coin's regime is what it is, in plain words and numbers: the label, the rule behind "
    "this bar's call (warming_up, no_price_input, cascade, vol_expansion_without_direction, "
    "efficient_path, inefficient_path, between_thresholds) and its margin past the threshold, "
    "stresses, a pending candidate, dwell and since_ms, inputs used/missing, the features the "
    "rules read (efficiency_ratio 0..1, vol_expansion_ratio, momentum_bps, trade_flow_imbalance "
    "-1..1, spread_ratio, depth_ratio, oi_change_pct), the thresholds (operators.regime."
    "RegimeConfig), each rule condition checked against them, and caveats saying when not to "
    "trust the call (UNKNOWN, warming up, stale inputs, a pending change, missing inputs). "
    "confidence is margin x input quality x stability, not a calibrated probability. Checks are "
    "recomputed from the envelope; the flow's rule and margin are authoritative. " + _COIN_RULE
)

CoinArg = Annotated[
    str,
    Field(
        description="coin name: exact (BTC, kPEPE, xyz:SP500) or a unique case-insensitive "
        f"match (btc); pattern {COIN_PATTERN}"
    ),
]
SinceArg = Annotated[
    int | None,
    Field(ge=0, description="only envelopes with timestamp_ms after this (exchange time, ms)"),
]
LimitArg = Annotated[
    int,
    Field(ge=1, le=HISTORY_LIMIT_MAX, description="the newest N envelopes (1..1000)"),
]
ViewArg = Annotated[
    View | None,
    Field(description="compact or full (default: full for get_signal, else compact)"),
]
FeaturesArg = Annotated[
    list[str] | None,
    Field(max_length=64, description="feature names to add to the compact view"),
]

READ_ONLY = ToolAnnotations(
    readOnlyHint=True, idempotentHint=True, destructiveHint=False, openWorldHint=False
)


# -- the explanation model -----------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=True)


class RegimeFeatures(_Model):
    """The features the regime rules read (null: not computable, see ``features_missing``)."""

    efficiency_ratio: float | None = Field(
        description="Kaufman efficiency ratio |net move| / path length over the window, 0..1"
    )
    vol_expansion_ratio: float | None = Field(
        description="short-window over long-window volatility per unit time (1 = usual)"
    )
    momentum_bps: float | None = Field(description="log return over the window, bps")
    trade_flow_imbalance: float | None = Field(
        description="(buy - sell)/(buy + sell) aggressor volume over the window, -1..1"
    )
    spread_ratio: float | None = Field(description="spread over its rolling median (1 = usual)")
    depth_ratio: float | None = Field(description="band depth over its rolling median (1 = usual)")
    oi_change_pct: float | None = Field(description="open-interest change over the window, percent")
    momentum_z: float | None = Field(
        default=None, description="momentum over its rolling standard deviation (trend rule)"
    )
    variance_ratio: float | None = Field(
        default=None, description="Lo-MacKinlay variance ratio (mean-reversion rule; < 1 reverts)"
    )


class RegimeCheck(_Model):
    """One rule condition checked against its threshold."""

    rule: Rule = Field(description="the rule this condition belongs to")
    condition: str = Field(description="the condition, in the features' own units")
    value: float | None = Field(description="the feature's value (null: not available)")
    threshold: float
    met: bool | None = Field(description="null when the value is not available")


class RegimeExplanation(_Model):
    """Why a coin's regime is what it is (from its latest envelope, freshness judged now)."""

    coin: str
    timestamp_ms: int = Field(description="bar close the call describes, exchange time (ms)")
    label: RegimeLabel = Field(description="published regime (hysteresis applied)")
    confidence: float = Field(ge=0, le=1, description="margin x input quality x stability")
    since_ms: int = Field(description="exchange time the label was entered (ms)")
    dwell_bars: int = Field(description="bars the label has been held")
    previous: RegimeLabel | None
    candidate: RegimeLabel | None = Field(description="a different label pending confirmation")
    candidate_count: int = Field(description="consecutive bars the candidate has held")
    rule: Rule = Field(description="the rule behind this bar's call")
    rule_meaning: str = Field(description="the rule in plain words")
    margin: float = Field(ge=0, le=1, description="how far past its threshold the rule held")
    margin_meaning: str = Field(description="how the margin is computed for this rule")
    stresses: list[str] = Field(description="cascade stress conditions that held")
    inputs_used: list[str]
    inputs_missing: list[str]
    features: RegimeFeatures
    features_missing: dict[str, str] = Field(description="why a feature above is null")
    thresholds: dict[str, float | int] = Field(description="operators.regime.RegimeConfig")
    checks: list[RegimeCheck] = Field(
        description="each rule condition (priority order) against the bands that applied"
    )
    freshness_status: FreshnessStatus = Field(description="judged at call time")
    warming_up: bool
    actionable: bool
    caveats: list[str] = Field(description="reasons not to trust this call (empty: none)")
    summary: str = Field(description="the explanation in plain words")


_RULE_MEANING = {
    Rule.WARMING_UP: "not enough price observations yet: no regime call is made",
    Rule.NO_PRICE: "no price input (no quote, candle close or trade): no regime call is possible",
    Rule.CASCADE: (
        "a one-way volatility shock with market stress (volatility expanding, an efficient "
        "path, and one-sided flow, a spread blow-out, a depth collapse or an open-interest drop)"
    ),
    Rule.CHAOS: "volatility expands but the price goes nowhere (an inefficient path)",
    Rule.TREND: "the price path is efficient: the net move is large relative to the path walked",
    Rule.MEAN_REVERSION: "the price path is inefficient: it moves back and forth around a mean",
    Rule.HOLD: (
        "no rule fired for a different label decisively this bar (efficiency ratio between the "
        "bands, or a change not yet confirmed by hysteresis): the current label is held"
    ),
}

_MARGIN_MEANING = {
    Rule.WARMING_UP: "0: no call",
    Rule.NO_PRICE: "0: no call",
    Rule.CASCADE: "stresses met / stresses available (or (VER - 2)/2 without stress inputs)",
    Rule.CHAOS: "(vol_expansion_ratio - threshold) / threshold, clamped to 0..1",
    Rule.TREND: "(efficiency_ratio - threshold) / (1 - threshold), clamped to 0..1",
    Rule.MEAN_REVERSION: "(threshold - efficiency_ratio) / threshold, clamped to 0..1",
    Rule.HOLD: "0: the label is held, not freshly called",
    Rule.STEP_ERROR: "0: no call",
    Rule.NO_RULE_FIRED: "0: no call",
}
_RULE_MEANING[Rule.STEP_ERROR] = (
    "a step of the flow failed for this bar and there was no earlier call to hold (see degraded)"
)
_RULE_MEANING[Rule.NO_RULE_FIRED] = (
    "no rule held this bar: the raw call is UNKNOWN (a published label changes only through the "
    "usual confirmation)"
)
# Rules the regime classifier may add (operators.regime.Rule only gains values).
for _name, _rule_words, _margin_words in (
    (
        "VOL_STATE",
        "the risk flag without a cascade: forecast volatility at or above the coin's norm, or "
        "the volatility expansion past its flag threshold",
        "how far volatility is past its threshold, clamped to 0..1",
    ),
    (
        "NO_NEW_DATA",
        "the bar brought no new event (or every input is stale): the label is held as it was",
        "0: the label is held, not freshly called",
    ),
):
    if hasattr(Rule, _name):
        _RULE_MEANING[Rule[_name]] = _rule_words
        _MARGIN_MEANING[Rule[_name]] = _margin_words


def _rule_meaning(rule: Rule) -> str:
    return _RULE_MEANING.get(rule, f"rule {rule} (see DESIGN.md, regime rules)")


def _margin_meaning(rule: Rule) -> str:
    return _MARGIN_MEANING.get(rule, "how far past its threshold the rule held, 0..1")


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(x: float | None) -> str:
    return "null" if x is None else f"{x:.4g}"


_PUBLISHED_TOL: Final = 5e-5
"""Half a unit of the 4 decimals ratios are published with: a condition the flow evaluated on the
full-precision value is judged met when the published value is within this of the threshold."""


def _check(rule: Rule, feature: str, op: str, value: float | None, thr: float) -> RegimeCheck:
    met: bool | None = None
    if value is not None:
        tol = _PUBLISHED_TOL
        met = (
            value >= thr - tol
            if op == ">="
            else value <= thr + tol
            if op == "<="
            else value < thr + tol
        )
    return RegimeCheck(
        rule=rule, condition=f"{feature} {op} {thr:g}", value=value, threshold=thr, met=met
    )


def _checks(
    f: RegimeFeatures, before: RegimeLabel, cfg: RegimeConfig, rho: float | None = None
) -> list[RegimeCheck]:
    """Every rule condition, as `operators.regime.raw_call` applies it, with the enter/stay
    band that applied given the label before (``rho``: the envelope's ``regime.risk_ratio``)."""
    ver, er, mom = f.vol_expansion_ratio, f.efficiency_ratio, f.momentum_bps
    flow = None
    if f.trade_flow_imbalance is not None and mom:
        flow = f.trade_flow_imbalance * (1.0 if mom > 0 else -1.0)
    out = [
        _check(Rule.CASCADE, "vol_expansion_ratio", ">=", ver, cfg.liq_ver),
        _check(Rule.CASCADE, "efficiency_ratio", ">=", er, cfg.liq_er),
        _check(
            Rule.CASCADE,
            "stress one_sided_flow: trade_flow_imbalance x sign(momentum_bps)",
            ">=",
            flow,
            cfg.liq_flow,
        ),
        _check(
            Rule.CASCADE,
            "stress spread_blowout: spread_ratio",
            ">=",
            f.spread_ratio,
            cfg.liq_spread_ratio,
        ),
        _check(
            Rule.CASCADE,
            "stress depth_collapse: depth_ratio",
            "<=",
            f.depth_ratio,
            cfg.liq_depth_ratio,
        ),
        _check(
            Rule.CASCADE,
            "stress oi_drop: oi_change_pct",
            "<=",
            f.oi_change_pct,
            -cfg.liq_oi_drop_pct,
        ),
    ]
    stress_inputs = (f.trade_flow_imbalance, f.spread_ratio, f.depth_ratio, f.oi_change_pct)
    if all(x is None for x in stress_inputs):
        out.append(
            _check(
                Rule.CASCADE,
                "vol_expansion_ratio (no stress input at all)",
                ">=",
                ver,
                cfg.liq_ver_alone,
            )
        )
    # The risk flag, as operators.regime.raw_call raises it (enter band, or stay band when the
    # label before was already a risk label).
    flagged = before in (RegimeLabel.LIQUIDATION_RISK, RegimeLabel.CHAOTIC)
    if rho is not None and VOL_MODEL is not None:
        limit = VOL_MODEL.flag_exit if flagged else VOL_MODEL.flag_enter
        out.append(_check(Rule.VOL_STATE, "risk_ratio", ">=", rho, limit))
    ver_limit = cfg.flag_ver
    if rho is None and er is not None and er < cfg.chaos_max_er + _PUBLISHED_TOL:
        ver_limit = cfg.chaos_exit_ver if flagged else cfg.chaos_enter_ver
    out.append(_check(Rule.CHAOS, "vol_expansion_ratio", ">=", ver, ver_limit))
    is_trend = before is RegimeLabel.TRENDING
    trend = cfg.trend_exit_er if is_trend else cfg.trend_enter_er
    out.append(_check(Rule.TREND, "efficiency_ratio", ">=", er, trend))
    if f.momentum_z is not None:
        trend_z = cfg.trend_exit_z if is_trend else cfg.trend_enter_z
        out.append(_check(Rule.TREND, "|momentum_z|", ">=", abs(f.momentum_z), trend_z))
    # Mean reversion only in a calm market.
    if rho is not None:
        out.append(_check(Rule.MEAN_REVERSION, "risk_ratio", "<=", rho, cfg.calm_max_ratio))
    if ver is not None:
        out.append(_check(Rule.MEAN_REVERSION, "vol_expansion_ratio", "<=", ver, cfg.calm_max_ver))
    is_mr = before is RegimeLabel.MEAN_REVERTING
    mr = cfg.mr_exit_er if is_mr else cfg.mr_enter_er
    out.append(_check(Rule.MEAN_REVERSION, "efficiency_ratio", "<=", er, mr))
    if f.variance_ratio is not None:
        mr_vr = cfg.mr_exit_vr if is_mr else cfg.mr_enter_vr
        out.append(_check(Rule.MEAN_REVERSION, "variance_ratio", "<=", f.variance_ratio, mr_vr))
    return out


def explain_envelope(env: Envelope, config: RegimeConfig | None = None) -> RegimeExplanation:
    """Explain the regime block of an envelope (freshness as the envelope carries it).

    Args:
        env: a signal envelope (`api.schemas.SignalEnvelope` as a dict), ideally refreshed.
        config: the thresholds the flow ran with (default: `RegimeConfig()`, as the flow uses).

    Returns:
        The explanation: rule, margin, inputs, thresholds, checks, caveats and a summary.
    """
    cfg = config if config is not None else RegimeConfig()
    reg = env["regime"]
    feats = env["features"]
    missing_all: dict[str, str] = env["features_missing"]
    features = RegimeFeatures(**{k: feats.get(k) for k in RegimeFeatures.model_fields})
    label = RegimeLabel(reg["label"])
    rule = Rule(reg["rule"])
    previous = None if reg["previous"] is None else RegimeLabel(reg["previous"])
    candidate = None if reg["candidate"] is None else RegimeLabel(reg["candidate"])
    dwell = int(reg["dwell_bars"])
    # The label before this bar set the enter/stay bands: the previous one if it switched now.
    before = (previous or RegimeLabel.UNKNOWN) if dwell <= 1 else label
    fresh = env["freshness"]
    warm = env["warmup"]
    stale = [n for n, s in fresh["streams"].items() if s["status"] == "stale"]

    caveats: list[str] = []
    if label is RegimeLabel.UNKNOWN:
        caveats.append("the regime is UNKNOWN: there is no call to act on")
    if warm["warming_up"]:
        caveats.append(
            f"warming up: {warm['observations']} of {warm['required']} price observations"
        )
    if fresh["status"] == "stale":
        caveats.append(
            f"inputs are stale now ({', '.join(stale)}): the call describes the market as of "
            f"{_utc(env['timestamp_ms'])}, not now"
        )
    elif fresh["status"] == "missing":
        caveats.append("no input stream has been received")
    if candidate is not None:
        caveats.append(
            f"a change to {candidate} is pending ({reg['candidate_count']} of {cfg.confirm} "
            "bars to confirm)"
        )
    if rule is Rule.HOLD and label is not RegimeLabel.UNKNOWN:
        caveats.append("the label is held by hysteresis this bar, not freshly called (margin 0)")
    if reg["inputs_missing"]:
        caveats.append(
            f"inputs never received: {', '.join(reg['inputs_missing'])} (lower confidence)"
        )
    if label is not RegimeLabel.UNKNOWN and dwell < cfg.min_dwell:
        caveats.append(f"the label is new ({dwell} bars, stable from {cfg.min_dwell})")
    if not env["edge"]["actionable"]:
        caveats.append("edge.actionable is false")

    words = [
        f"{env['coin']} is {label} (confidence {reg['confidence']:.2f}, not a probability) "
        f"since {_utc(reg['since_ms'])}, held {dwell} bars"
        + (f" after {previous}" if previous is not None else "")
        + f"; as of the bar closing {_utc(env['timestamp_ms'])}."
    ]
    words.append(
        f"This bar's call: rule {rule} — {_rule_meaning(rule)}; margin {reg['margin']:.2f} "
        f"({_margin_meaning(rule)})."
    )
    er, ver = features.efficiency_ratio, features.vol_expansion_ratio
    words.append(
        f"Efficiency ratio {_num(er)} (TRENDING from {cfg.trend_enter_er:g}, stays above "
        f"{cfg.trend_exit_er:g}; MEAN_REVERTING from {cfg.mr_enter_er:g}, stays below "
        f"{cfg.mr_exit_er:g}); volatility expansion {_num(ver)} (CHAOTIC from "
        f"{cfg.chaos_enter_ver:g} with efficiency below {cfg.chaos_max_er:g}; cascade possible "
        f"from {cfg.liq_ver:g} with efficiency {cfg.liq_er:g}+)."
    )
    if reg["stresses"]:
        words.append(f"Stresses met: {', '.join(reg['stresses'])}.")
    if caveats:
        words.append("Caveats: " + "; ".join(caveats) + ".")
    return RegimeExplanation(
        coin=env["coin"],
        timestamp_ms=env["timestamp_ms"],
        label=label,
        confidence=reg["confidence"],
        since_ms=reg["since_ms"],
        dwell_bars=dwell,
        previous=previous,
        candidate=candidate,
        candidate_count=reg["candidate_count"],
        rule=rule,
        rule_meaning=_rule_meaning(rule),
        margin=reg["margin"],
        margin_meaning=_margin_meaning(rule),
        stresses=list(reg["stresses"]),
        inputs_used=list(reg["inputs_used"]),
        inputs_missing=list(reg["inputs_missing"]),
        features=features,
        features_missing={k: v for k, v in missing_all.items() if k in RegimeFeatures.model_fields},
        thresholds=dataclasses.asdict(cfg),
        checks=_checks(features, before, cfg, reg.get("risk_ratio")),
        freshness_status=FreshnessStatus(fresh["status"]),
        warming_up=warm["warming_up"],
        actionable=env["edge"]["actionable"],
        caveats=caveats,
        summary=" ".join(words),
    )


# -- where signals come from ---------------------------------------------------------------------


class SignalQueryError(Exception):
    """A query the REST API would answer with an error status (404, 422, 503; 502: unreachable).

    Args:
        status: the HTTP status the REST API gives (or would give).
        detail: the reason.
        coins: the coins served (unknown or ambiguous coin).
    """

    def __init__(self, status: int, detail: str, coins: list[str] | None = None) -> None:
        text = detail
        if coins is not None:
            text = f"{detail}; coins served: {', '.join(coins) if coins else 'none yet'}"
        super().__init__(text)
        self.status = status
        self.detail = detail
        self.coins = coins


class SignalSource(Protocol):
    """What the MCP tools read: the REST API's documents as dicts (blocking calls)."""

    def signal(self, coin: str) -> Envelope:
        """A coin's latest envelope, freshness judged now (``GET /v1/signal/{coin}``)."""
        ...

    def signals(self) -> dict[str, Any]:
        """Every coin's latest envelope (``GET /v1/signals``)."""
        ...

    def history(self, coin: str, since_ms: int | None, limit: int) -> dict[str, Any]:
        """A coin's stored envelopes, oldest first (``GET /v1/signal/{coin}/history``)."""
        ...

    def coins_with_signal(self) -> list[str]:
        """Coins that have a signal (for the resource listing)."""
        ...

    async def wait_ready(self) -> None:
        """Wait (bounded) until answers are worth giving, e.g. for an in-process replay."""
        ...


class StoreSource:
    """Signals from an in-process `SignalStore`, with the REST API's rules.

    While a replay runs (the store's mode is ``replay`` and the flow is starting or running), a
    tool first waits up to ``wait_for_replay_s`` for it to finish (`wait_ready`, on the event
    loop: no thread is held), then answers from where the replay has got to; an error then says
    so (``replay in progress (...)``), and an unknown coin is a 503 (it may still appear).

    Args:
        store: the store the flow writes.
        wait_for_replay_s: how long a call waits for a running replay (0: not at all).
    """

    def __init__(self, store: SignalStore, wait_for_replay_s: float = 0.0) -> None:
        self.store = store
        self.wait_for_replay_s = wait_for_replay_s

    def replaying(self) -> bool:
        """Whether a replay is still feeding the store."""
        s = self.store
        return s.mode == "replay" and s.state in (RunState.STARTING, RunState.RUNNING)

    async def wait_ready(self) -> None:
        """Wait up to ``wait_for_replay_s`` for a running replay to finish."""
        if self.wait_for_replay_s <= 0 or not self.replaying():
            return
        deadline = time.monotonic() + self.wait_for_replay_s
        # The flow's thread sets the store's state; there is no event to await across threads.
        while self.replaying() and time.monotonic() < deadline:  # noqa: ASYNC110
            await anyio.sleep(REPLAY_POLL_S)

    def progress(self) -> str:
        """How far a running replay has got, in words."""
        info = self.store.source_info() or {}
        parts = [f"{int(info.get('lines_read') or 0):,} lines read"]
        files = info.get("files") or []
        if len(files) > 1:
            parts.append(f"{len(files)} captures")
        latest = info.get("latest_event_ms")
        if isinstance(latest, int):
            parts.append(f"events up to {_utc(latest)}")
        parts.append(f"{self.store.signals_emitted:,} signals so far")
        return f"replay in progress ({', '.join(parts)})"

    def _during_replay(self, ex: SignalQueryError) -> SignalQueryError:
        if not self.replaying():
            return ex
        # An unknown coin or no signal yet may just be early: 503, "ask again shortly".
        status = 503 if ex.status in (404, 503) else ex.status
        detail = f"{self.progress()}: {ex.detail}; ask again shortly"
        return SignalQueryError(status, detail, ex.coins)

    def resolve(self, name: str) -> str:
        """The served coin ``name`` designates, as ``GET /v1/signal/{coin}`` resolves it.

        Raises:
            SignalQueryError: 422 not a coin name; 404 unknown or ambiguous (with the coins);
                during a replay, 503 with its progress for a coin not seen yet.
        """
        try:
            return app_resolve(self.store, name)
        except ApiError as ex:
            raise self._during_replay(SignalQueryError(ex.status, ex.detail, ex.coins)) from None

    def signal(self, coin: str) -> Envelope:
        """A coin's latest envelope, freshness judged now.

        Raises:
            SignalQueryError: as `resolve`, or 503 when the coin has no signal yet.
        """
        name = self.resolve(coin)
        rec = self.store.record(name)
        if rec is None:
            raise self._during_replay(SignalQueryError(503, no_signal_reason(self.store, name)))
        out: Envelope = orjson.loads(rec.json_at(self.store.now_ms()))
        return out

    def signals(self) -> dict[str, Any]:
        """Every coin's latest envelope, freshness judged now."""
        now = self.store.now_ms()
        latest = self.store.records()
        body = list_json((latest[c] for c in self.store.coins() if c in latest), now)
        out: dict[str, Any] = orjson.loads(body)
        return out

    def history(self, coin: str, since_ms: int | None, limit: int) -> dict[str, Any]:
        """A coin's stored envelopes, oldest first, as emitted.

        Raises:
            SignalQueryError: as `resolve`.
        """
        name = self.resolve(coin)
        recs = self.store.record_history(name, limit=limit, since_ms=since_ms)
        out: dict[str, Any] = orjson.loads(history_json(name, recs))
        return out

    def coins_with_signal(self) -> list[str]:
        """Coins that have a signal, in the store's order."""
        latest = self.store.records()
        return [c for c in self.store.coins() if c in latest]


class ApiSource:
    """Signals from a running REST API (``python -m api.server``), over stdlib ``urllib``.

    Args:
        base_url: the API's root, e.g. ``http://127.0.0.1:8000``.
        timeout_s: per-request timeout.
        token: bearer token the API requires (``HLSL_API_TOKEN`` there; here see
            `client_token`), sent as ``Authorization: Bearer ...``.

    Raises:
        ValueError: the URL is not http(s).
    """

    def __init__(
        self, base_url: str, timeout_s: float = API_TIMEOUT_S, token: str | None = None
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            msg = f"--api-url must be an http(s) URL, got {base_url!r}"
            raise ValueError(msg)
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    async def wait_ready(self) -> None:
        """Nothing to wait for: the server answers for itself."""

    def _get(self, path: str, query: dict[str, int] | None = None) -> Any:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        req = urllib.request.Request(url, headers=self._headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as ex:
            try:
                body = json.loads(ex.read() or b"{}")
            except ValueError:
                body = {}
            finally:
                ex.close()
            detail = body.get("detail") if isinstance(body, dict) else None
            coins = body.get("coins") if isinstance(body, dict) else None
            text = str(detail or f"HTTP {ex.code} from {url}")
            if ex.code == 401:
                text += f" (the API needs a token: set {TOKEN_ENV} or {TOKEN_FILE_ENV})"
            raise SignalQueryError(ex.code, text, coins) from None
        except (urllib.error.URLError, OSError, ValueError) as ex:
            reason = getattr(ex, "reason", ex)
            msg = f"cannot read the signal API at {self.base_url}: {reason}"
            raise SignalQueryError(502, msg) from None

    @staticmethod
    def _coin_path(coin: str) -> str:
        _check_coin_name(coin)  # as the API would (a "/" in it would not even reach the route)
        return "/v1/signal/" + urllib.parse.quote(coin, safe="")

    def signal(self, coin: str) -> Envelope:
        """``GET /v1/signal/{coin}``."""
        out: Envelope = self._get(self._coin_path(coin))
        return out

    def signals(self) -> dict[str, Any]:
        """``GET /v1/signals``."""
        out: dict[str, Any] = self._get("/v1/signals")
        return out

    def history(self, coin: str, since_ms: int | None, limit: int) -> dict[str, Any]:
        """``GET /v1/signal/{coin}/history``."""
        query = {"limit": limit} if since_ms is None else {"limit": limit, "since_ms": since_ms}
        out: dict[str, Any] = self._get(self._coin_path(coin) + "/history", query)
        return out

    def coins_with_signal(self) -> list[str]:
        """Coins with a signal, from ``GET /v1/state``."""
        state = self._get("/v1/state")
        return [c["coin"] for c in state.get("coins", []) if c.get("has_signal")]


def _check_coin_name(name: str) -> None:
    """Raise the REST API's 422 for a string that cannot be a coin name."""
    try:
        check_coin_name(name)
    except ApiError as ex:
        raise SignalQueryError(ex.status, ex.detail) from None


def client_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The bearer token for ``--api-url``: ``HLSL_API_CLIENT_TOKEN``, or the first line of the
    file ``HLSL_API_CLIENT_TOKEN_FILE`` names (never a command-line flag: a flag is visible to
    every user in the process list).

    Raises:
        ValueError: both are set, or the file cannot be read or is empty (one line).
    """
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV, "").strip()
    path = env.get(TOKEN_FILE_ENV, "").strip()
    if token and path:
        msg = f"{TOKEN_ENV} and {TOKEN_FILE_ENV} are both set: set one of them"
        raise ValueError(msg)
    if not path:
        return token or None
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.readline().strip()
    except (OSError, UnicodeDecodeError) as ex:
        reason = ex.strerror if isinstance(ex, OSError) else "not UTF-8 text"
        msg = f"{TOKEN_FILE_ENV} = {path}: cannot read it ({reason})"
        raise ValueError(msg) from None
    if not token:
        msg = f"{TOKEN_FILE_ENV} = {path}: the file is empty (expected the token on line 1)"
        raise ValueError(msg)
    return token


# -- the server ----------------------------------------------------------------------------------

_FULL_MODELS: dict[str, type[BaseModel]] = {
    "signal": SignalEnvelope,
    "list": SignalList,
    "history": SignalHistory,
}


def _view_result(
    kind: str,
    fetch: Callable[..., Any],
    args: tuple[Any, ...],
    view: View | None,
    features: list[str] | None,
    default: View,
) -> CallToolResult:
    """``fetch(*args)`` (an envelope, list or history document) in the view asked for, checked
    by its model, as structured content and as JSON text."""
    names = None if features is None else check_features(features)
    chosen = resolve_view(view, names, default)
    doc = fetch(*args)
    if chosen == "full":
        _FULL_MODELS[kind].model_validate(doc)
    else:
        doc = apply_view(doc, chosen, names)
        for env in doc["data"] if kind != "signal" else [doc]:
            CompactSignal.model_validate(env)
    return CallToolResult(
        content=[TextContent(type="text", text=orjson.dumps(doc).decode())],
        structuredContent=doc,
    )


def _result(model: type[BaseModel], fetch: Callable[..., Any], *args: Any) -> CallToolResult:
    """``fetch(*args)`` validated by ``model``, as structured content and as JSON text."""
    value = model.model_validate(fetch(*args))
    return CallToolResult(
        content=[TextContent(type="text", text=value.model_dump_json())],
        structuredContent=value.model_dump(mode="json"),
    )


async def _call(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call off the event loop; a query error becomes a tool error."""
    try:
        return await anyio.to_thread.run_sync(fn, *args)
    except (SignalQueryError, ViewError) as ex:
        raise ToolError(str(ex)) from ex


def _shallow(model: type[BaseModel], title: str, description: str) -> dict[str, Any]:
    """A small output schema for ``model``: its top-level properties with their types (a nested
    model becomes ``object`` with its description), no ``$defs``. The full schemas are served as
    resources; this keeps ``tools/list`` small."""
    full = model.model_json_schema()
    defs: dict[str, Any] = full.get("$defs", {})
    props: dict[str, Any] = {}
    for name, prop in full["properties"].items():
        options = prop.get("anyOf", [prop])
        kinds: list[Any] = []
        out: dict[str, Any] = {}
        for opt in options:
            ref = opt.get("$ref")
            target = defs[ref.rsplit("/", 1)[-1]] if ref else opt
            if "properties" in target or target.get("type") == "object":
                kinds.append("object")
                out.setdefault("description", target.get("description"))
            elif "enum" in target or "const" in target:
                out.update({k: target[k] for k in ("enum", "const") if k in target})
                kinds.append(target.get("type", "string"))
            elif "type" in target:
                kinds.append(target["type"])
        if prop.get("description"):
            out["description"] = prop["description"]
        if out.get("description") is None:
            out.pop("description", None)
        unique = list(dict.fromkeys(kinds))
        if unique:
            out["type"] = unique[0] if len(unique) == 1 else unique
        if "enum" in out and "null" in unique:
            out["enum"] = [*out["enum"], None]
        props[name] = out
    return {
        "type": "object",
        "title": title,
        "description": description,
        "properties": props,
        "required": list(full.get("required", [])),
    }


def _signal_schema() -> dict[str, Any]:
    """One signal in either view: the compact view's fields are the ones every view has."""
    compact = _shallow(CompactSignal, "Signal", "")
    full = _shallow(SignalEnvelope, "Signal", "")
    return {
        "type": "object",
        "title": "Signal",
        "description": "view full: SignalEnvelope (schema://hyperliquid/signal-envelope); view "
        "compact: CompactSignal (schema://hyperliquid/compact-signal)",
        "properties": _merge(full["properties"], compact["properties"]),
        "required": [k for k in compact["required"] if k in full["required"]],
    }


def _merge(full: dict[str, Any], compact: dict[str, Any]) -> dict[str, Any]:
    """Properties of either view: the full view's descriptions, the types of both."""
    out = {**compact, **full}
    for name in full.keys() & compact.keys():
        kinds: list[Any] = []
        for prop in (full[name], compact[name]):
            kind = prop.get("type")
            kinds += kind if isinstance(kind, list) else [kind] if kind else []
        unique = list(dict.fromkeys(kinds))
        if unique:
            out[name] = {**full[name], "type": unique[0] if len(unique) == 1 else unique}
    return out


def _list_schema(title: str, with_coin: bool) -> dict[str, Any]:
    item = _signal_schema()
    item.pop("title")
    props: dict[str, Any] = {
        "data": {"type": "array", "items": item},
        "count": {"type": "integer"},
    }
    required = list(props)
    if with_coin:
        props = {"coin": {"type": "string"}, **props}
        required = list(props)
        # SignalHistory's page marker (REST history with until_ms; absent from get_history)
        props["next_since_ms"] = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    return {
        "type": "object",
        "title": title,
        "properties": props,
        "required": required,
    }


class _AnyObject(BaseModel):
    """Output model of the signal tools: the tool checks its documents with the exact model of
    the view (`SignalEnvelope`, `CompactSignal`, ...); the SDK checks the (shallow) schema."""

    model_config = ConfigDict(extra="allow")


def _strict_tool(
    fn: Callable[..., Any],
    title: str,
    description: str,
    output_schema: dict[str, Any],
    output_model: type[BaseModel],
) -> Tool:
    """A `Tool` whose arguments are validated strictly (``"5"`` is not an integer, an unknown
    argument is an error) and whose output schema is ``output_schema``."""
    tool = Tool.from_function(
        fn, title=title, description=description, annotations=READ_ONLY, structured_output=True
    )
    meta = tool.fn_metadata
    strict: type[BaseModel] = type(
        f"{tool.name}Arguments",
        (meta.arg_model,),
        {
            "model_config": ConfigDict(strict=True, extra="forbid"),
            "__module__": __name__,
            "__doc__": f"Arguments of {tool.name}.",
        },
    )
    schema = strict.model_json_schema(by_alias=True)
    schema.pop("description", None)
    meta = meta.model_copy(
        update={"arg_model": strict, "output_schema": output_schema, "output_model": output_model}
    )
    return tool.model_copy(update={"fn_metadata": meta, "parameters": schema})


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, BaseModel) else value.model_dump_json()
    return text if len(text) <= 40 else text[:37] + "..."


_ARG_KINDS = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "string_type": "must be a string",
    "list_type": "must be a list of strings",
    "bool_type": "must be true or false",
}


def argument_error(tool: str, ex: ValidationError, fields: list[str]) -> str:
    """One line for invalid tool arguments: each argument, its value and what is allowed."""
    parts = []
    for err in ex.errors(include_url=False):
        loc = [str(x) for x in err.get("loc", ())]
        name = loc[0] if loc else "?"
        where = name + "".join(f"[{x}]" for x in loc[1:])
        kind = str(err.get("type"))
        ctx = err.get("ctx") or {}
        if kind == "extra_forbidden":
            parts.append(f"unknown argument {name!r} ({tool} takes {', '.join(fields)})")
            continue
        if kind == "missing":
            parts.append(f"missing argument {name!r}")
            continue
        if kind in _ARG_KINDS:
            allowed = _ARG_KINDS[kind]
            if isinstance(err.get("input"), str) and kind.startswith("int"):
                allowed += " (a JSON number, not a string)"
        elif kind == "literal_error":
            allowed = f"must be one of {ctx.get('expected', '')}"
        elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            op = {"greater_than_equal": ">=", "less_than_equal": "<=", "greater_than": ">"}
            key = {"greater_than_equal": "ge", "less_than_equal": "le", "greater_than": "gt"}
            allowed = f"must be {op.get(kind, '<')} {ctx.get(key.get(kind, 'lt'))}"
        elif kind == "too_long":
            allowed = f"at most {ctx.get('max_length')} items"
        else:
            msg = str(err.get("msg", "not allowed"))
            allowed = msg[:1].lower() + msg[1:]
        parts.append(f"{where} = {_shown(err.get('input'))}: {allowed}")
    return f"{tool}: invalid arguments: " + "; ".join(parts)


def _rpc_code(status: int) -> int:
    """The JSON-RPC error code for a REST status."""
    if status == 404:
        return RESOURCE_NOT_FOUND
    if status in (400, 422):
        return INVALID_PARAMS
    return INTERNAL_ERROR


class SignalServer(FastMCP[Any]):
    """`FastMCP` with this layer's rules on top.

    - ``serverInfo.version`` is this package's version (`flows.settings.code_version`);
    - tool arguments are validated strictly and an invalid one is one clean line naming it;
    - ``signal://hyperliquid/{coin}`` is read here: an error is a JSON-RPC error with a proper
      code (-32002 unknown coin, -32602 not a coin name, -32603 no signal yet) and the
      REST API's message once;
    - the resource listing names one ``signal://hyperliquid/{coin}`` per coin.

    Args:
        source: where signals come from.
        strict_tools: the tools (`_strict_tool`).
        **kwargs: passed to `FastMCP`.
    """

    def __init__(self, source: SignalSource, strict_tools: list[Tool], **kwargs: Any) -> None:
        super().__init__(tools=strict_tools, **kwargs)
        self.source = source
        self._strict = {t.name: t for t in strict_tools}
        # The SDK reports its own version unless told (no FastMCP parameter in 1.x).
        self._mcp_server.version = code_version()

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        """Check the arguments strictly, then call the tool; errors are one clean line.

        Every call is counted in ``hlsl_mcp_tool_calls_total{tool,outcome}``."""
        with mcp_tool_call(name if name in self._strict else "other"):
            return await self._call_tool(name, arguments)

    async def _call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        tool = self._strict.get(name)
        if tool is None:
            msg = f"unknown tool {name!r} (tools: {', '.join(self._strict)})"
            raise ToolError(msg)
        meta = tool.fn_metadata
        try:
            meta.arg_model.model_validate(meta.pre_parse_json(arguments))
        except ValidationError as ex:
            fields = list(meta.arg_model.model_fields)
            raise ToolError(argument_error(name, ex, fields)) from None
        if isinstance(arguments.get("features"), list):
            try:
                check_features(arguments["features"])
            except ViewError as ex:
                msg = f"{name}: invalid arguments: features: {ex}"
                raise ToolError(msg) from None
        try:
            return await super().call_tool(name, arguments)
        except ToolError as ex:
            if isinstance(ex.__cause__, ToolError):  # ours, wrapped "Error executing tool ..."
                raise ex.__cause__ from None
            raise

    async def read_resource(self, uri: AnyUrl | str) -> list[ReadResourceContents]:
        """Read a resource; an error is a JSON-RPC error (code and one clean message)."""
        text = str(uri)
        if text.startswith(URI_PREFIX):
            coin = urllib.parse.unquote(text[len(URI_PREFIX) :])
            await self.source.wait_ready()
            try:
                env = await anyio.to_thread.run_sync(self.source.signal, coin)
            except SignalQueryError as ex:
                data = {"status": ex.status, "coins": ex.coins}
                error = ErrorData(code=_rpc_code(ex.status), message=str(ex), data=data)
                raise McpError(error) from None
            body = SignalEnvelope.model_validate(env).model_dump_json()
            return [ReadResourceContents(content=body, mime_type="application/json")]
        try:
            return list(await super().read_resource(uri))
        except Exception as ex:
            known = ", ".join([URI_TEMPLATE, *SCHEMA_RESOURCES])
            msg = f"unknown resource {text[:200]!r} (resources: {known})"
            raise McpError(ErrorData(code=RESOURCE_NOT_FOUND, message=msg)) from ex

    async def list_resources(self) -> list[Resource]:
        """Static resources plus the latest signal of every coin that has one."""
        listed = await super().list_resources()
        try:
            await self.source.wait_ready()
            coins = await anyio.to_thread.run_sync(self.source.coins_with_signal)
        except SignalQueryError as ex:
            log.warning("cannot list coins: %s", ex)
            coins = []
        return [
            *listed,
            *(
                Resource(
                    uri=f"{URI_PREFIX}{c}",
                    name=f"signal-{c}",
                    title=f"Latest {c} signal",
                    description=f"The latest {c} signal envelope (freshness judged on read).",
                    mimeType="application/json",
                )
                for c in coins
            ),
        ]


SCHEMA_RESOURCES: dict[str, tuple[str, type[BaseModel]]] = {
    "schema://hyperliquid/signal-envelope": ("SignalEnvelope", SignalEnvelope),
    "schema://hyperliquid/compact-signal": ("CompactSignal", CompactSignal),
    "schema://hyperliquid/regime-explanation": ("RegimeExplanation", RegimeExplanation),
}
"""JSON Schemas served as resources (the tools' output schemas are shallow)."""


def build_server(
    source: SignalSource,
    *,
    regime_config: RegimeConfig | None = None,
    transport_security: TransportSecuritySettings | None = None,
) -> SignalServer:
    """The MCP server (tools and resources) over a source of signals.

    Args:
        source: `StoreSource` (in-process) or `ApiSource` (a running REST API).
        regime_config: thresholds shown by ``explain_regime`` (default: the flow's).
        transport_security: DNS-rebinding protection of the HTTP transport (default: the SDK's
            for a localhost server: Host must be 127.0.0.1, localhost or [::1], any port; see
            `transport_security_for`).

    Returns:
        The server; run it with `run_stdio` or serve it with `McpHttpApp`.
    """
    cfg = regime_config if regime_config is not None else RegimeConfig()

    # Each tool returns a CallToolResult built off the event loop: structured content checked by
    # the exact model of its view, plus the same JSON (compact) as text. The output schemas are
    # shallow (top-level fields and types); the full ones are resources.
    async def get_signal(
        coin: CoinArg, view: ViewArg = None, features: FeaturesArg = None
    ) -> CallToolResult:
        await source.wait_ready()
        return await _call(_view_result, "signal", source.signal, (coin,), view, features, "full")

    async def list_signals(view: ViewArg = None, features: FeaturesArg = None) -> CallToolResult:
        await source.wait_ready()
        return await _call(_view_result, "list", source.signals, (), view, features, "compact")

    async def get_history(
        coin: CoinArg,
        since_ms: SinceArg = None,
        limit: LimitArg = HISTORY_LIMIT_DEFAULT,
        view: ViewArg = None,
        features: FeaturesArg = None,
    ) -> CallToolResult:
        await source.wait_ready()
        args = (coin, since_ms, limit)
        return await _call(_view_result, "history", source.history, args, view, features, "compact")

    def explain(coin: str) -> RegimeExplanation:
        env = SignalEnvelope.model_validate(source.signal(coin)).model_dump(mode="json")
        return explain_envelope(env, cfg)

    async def explain_regime(coin: CoinArg) -> CallToolResult:
        await source.wait_ready()
        return await _call(_result, RegimeExplanation, explain, coin)

    signal_schema = _signal_schema()
    tools = [
        _strict_tool(
            get_signal, "Latest signal of a coin", GET_SIGNAL_DOC, signal_schema, _AnyObject
        ),
        _strict_tool(
            list_signals,
            "Latest signal of every coin",
            LIST_SIGNALS_DOC,
            _list_schema("SignalList", with_coin=False),
            _AnyObject,
        ),
        _strict_tool(
            get_history,
            "Stored signals of a coin",
            GET_HISTORY_DOC,
            _list_schema("SignalHistory", with_coin=True),
            _AnyObject,
        ),
        _strict_tool(
            explain_regime,
            "Why a coin's regime is what it is",
            EXPLAIN_REGIME_DOC,
            _shallow(
                RegimeExplanation,
                "RegimeExplanation",
                "full JSON Schema: resource schema://hyperliquid/regime-explanation",
            ),
            RegimeExplanation,
        ),
    ]

    root = logging.getLogger()
    root_level, root_handlers = root.level, list(root.handlers)
    server = SignalServer(
        source,
        tools,
        name=SERVER_NAME,
        instructions=INSTRUCTIONS,
        # HTTP: the app is mounted (its own path is "/"); read-only tools need no session, so
        # each POST is answered with plain JSON (no SSE stream, nothing kept per client).
        streamable_http_path="/",
        stateless_http=True,
        json_response=True,
        transport_security=transport_security,
    )
    # FastMCP() calls logging.basicConfig (SDK 1.x): building a server must not configure logging.
    root.setLevel(root_level)
    root.handlers[:] = root_handlers

    async def read_signal(coin: str) -> str:  # listed as the template; read by SignalServer
        env = await _call(source.signal, coin)
        return SignalEnvelope.model_validate(env).model_dump_json()

    server.resource(
        URI_TEMPLATE,
        name="signal",
        title="Latest signal of a coin",
        description="The latest signal envelope of a coin as JSON (schema: SignalEnvelope), "
        "freshness judged on read. " + _COIN_RULE,
        mime_type="application/json",
    )(read_signal)

    for uri, (name, model) in SCHEMA_RESOURCES.items():
        server.resource(
            uri,
            name=f"schema-{name}",
            title=f"JSON Schema of {name}",
            description=f"The JSON Schema of {name} (the tools' output schemas are shallow).",
            mime_type="application/schema+json",
        )(_schema_text(model))
    return server


def _schema_text(model: type[BaseModel]) -> Callable[[], str]:
    def schema_text() -> str:
        return json.dumps(model.model_json_schema(), separators=(",", ":"))

    return schema_text


def transport_security_for(settings: Settings) -> TransportSecuritySettings:
    """DNS-rebinding protection for MCP over HTTP from the settings.

    Allowed Host values: 127.0.0.1, localhost and [::1] (as the SDK allows by default), the
    bound ``--host`` unless it is a wildcard (0.0.0.0, ::), and ``--mcp-allowed-hosts``. An entry
    without a port allows any port. Origins (sent by browsers only): ``http://`` and
    ``https://`` of those hosts, and ``--mcp-allowed-origins``.
    """
    bound = settings.host.strip()
    hosts = list(LOCAL_HOSTS)
    if bound not in WILDCARD_HOSTS:
        hosts.append(f"[{bound}]" if ":" in bound and not bound.startswith("[") else bound)
    extra = list(settings.mcp_allowed_hosts)
    allowed_hosts: list[str] = []
    for host in [*hosts, *extra]:
        allowed_hosts += [host] if _has_port(host) else [host, f"{host}:*"]
    allowed_origins: list[str] = []
    for host in hosts:
        for scheme in ("http", "https"):
            allowed_origins += [f"{scheme}://{host}", f"{scheme}://{host}:*"]
    for origin in settings.mcp_allowed_origins:
        origin = origin.rstrip("/")
        netloc = origin.split("://", 1)[-1]
        allowed_origins += [origin] if _has_port(netloc) else [origin, f"{origin}:*"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(dict.fromkeys(allowed_hosts)),
        allowed_origins=list(dict.fromkeys(allowed_origins)),
    )


def _has_port(host: str) -> bool:
    if host.startswith("["):
        return "]:" in host
    return ":" in host


def replay_wait_s(settings: Settings) -> float:
    """How long MCP tools wait for an in-process replay: ``HLSL_MCP_WAIT_FOR_REPLAY_S`` for a
    full-speed replay; a paced one (``--speed`` > 0) plays like live data and is answered as it
    goes."""
    if not settings.replay or settings.speed > 0:
        return 0.0
    return settings.mcp_wait_for_replay_s


# -- HTTP ----------------------------------------------------------------------------------------


class McpHttpApp:
    """The streamable HTTP transport as an ASGI app (any path it is mounted at).

    Stateless JSON mode: each POST is answered with ``application/json`` and nothing is kept per
    client (the tools are read-only; no server-to-client notifications over HTTP). The SDK's
    session manager still needs a running task group: enter `lifespan` around the serving app's
    life. Starlette does not run a mounted app's lifespan, so when mounted::

        mcp = mcp_http_app(store)

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with mcp.lifespan():
                yield  # (start the flow around this as before)

        app = create_app(store, lifespan)
        app.mount("/mcp", mcp)  # endpoint http://host:port/mcp/ (POST /mcp redirects, 307)

    Served on its own (``uvicorn.run(mcp_http_app(store))``) it runs its lifespan itself. Each
    `lifespan` builds a fresh server (a session manager runs only once), so it can be entered
    again after it ended, but not twice at once. Requests outside it get 503.

    Args:
        source: where signals come from.
        transport_security: see `build_server`.
    """

    def __init__(
        self, source: SignalSource, transport_security: TransportSecuritySettings | None = None
    ) -> None:
        self.source = source
        self.transport_security = transport_security
        self._manager: StreamableHTTPSessionManager | None = None
        self._router = Router(lifespan=lambda _app: self.lifespan())

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Run the session manager (sessions end when this exits).

        Raises:
            RuntimeError: it is already running.
        """
        if self._manager is not None:
            msg = "the MCP HTTP transport is already running"
            raise RuntimeError(msg)
        server = build_server(self.source, transport_security=self.transport_security)
        server.streamable_http_app()  # creates the session manager
        manager = server.session_manager
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "lifespan":
            await self._router.lifespan(scope, receive, send)
            return
        manager = self._manager
        if manager is None:
            detail = "the MCP transport is not running (McpHttpApp.lifespan was not entered)"
            await JSONResponse({"detail": detail}, status_code=503)(scope, receive, send)
            return
        await manager.handle_request(scope, receive, send)


def mcp_http_app(
    store: SignalStore,
    *,
    transport_security: TransportSecuritySettings | None = None,
    settings: Settings | None = None,
) -> McpHttpApp:
    """The MCP streamable HTTP transport over ``store``, to mount in the FastAPI app.

    Mount it (``app.mount("/mcp", mcp)``) and enter ``mcp.lifespan()`` in the app's lifespan:
    see `McpHttpApp`.

    Args:
        store: the store the flow writes (the same one the REST API reads).
        transport_security: DNS-rebinding protection; by default `transport_security_for`
            ``settings``, and without settings the SDK's localhost default (Host 127.0.0.1,
            localhost and [::1], any port).
        settings: the server's settings: allowed hosts and origins (``--mcp-allowed-hosts``,
            ``--mcp-allowed-origins``, the bound ``--host``) and the replay wait
            (``--mcp-wait-for-replay-s``).

    Returns:
        The ASGI app.
    """
    wait_s = 0.0
    if settings is not None:
        wait_s = replay_wait_s(settings)
        if transport_security is None:
            transport_security = transport_security_for(settings)
            if settings.host.strip() in WILDCARD_HOSTS and not settings.mcp_allowed_hosts:
                log.warning(
                    "MCP over HTTP accepts only Host %s (and --host %s is a wildcard): set "
                    "--mcp-allowed-hosts / HLSL_MCP_ALLOWED_HOSTS to the names clients use",
                    ", ".join(LOCAL_HOSTS),
                    settings.host,
                )
    return McpHttpApp(StoreSource(store, wait_s), transport_security)


# -- stdio ---------------------------------------------------------------------------------------


def protect_stdout() -> BinaryIO:
    """Keep the process's stdout for MCP messages only; everything else goes to stderr.

    File descriptor 1 is duplicated for the protocol, then pointed at stderr, and ``sys.stdout``
    becomes ``sys.stderr``: ``print``, logging, Bytewax (Rust) and C libraries writing to
    stdout all land on stderr.

    Returns:
        The binary stream of the real stdout (for `run_stdio`).
    """
    sys.stdout.flush()
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(proto_fd, "wb")


def run_stdio(server: FastMCP[Any], out: BinaryIO) -> None:
    """Serve MCP over stdin and ``out`` until stdin closes.

    Args:
        server: the server (`build_server`).
        out: where protocol messages go (`protect_stdout`).
    """

    async def serve() -> None:
        stdout = anyio.wrap_file(TextIOWrapper(out, encoding="utf-8"))
        async with stdio_server(stdout=stdout) as (read, write):
            # FastMCP.run_stdio_async always writes to sys.stdout, which is stderr by now: run
            # its low-level server on our streams instead (a private attribute, no public
            # accessor in 1.x; what run_stdio_async itself does).
            low = server._mcp_server
            await low.run(read, write, low.create_initialization_options())

    anyio.run(serve)


def _parse_args(argv: list[str] | None) -> tuple[str | None, float, Settings]:
    # api.server is imported late here and in main: the server may import this module to mount.
    from api.server import parse_args as server_args

    ap = argparse.ArgumentParser(
        prog="python -m api.mcp",
        description="Serve Hyperliquid signals over MCP (stdio). Without --api-url the flow "
        "runs in this process, configured like python -m api.server.",
        epilog="Other flags are the server's (python -m api.server --help): --replay CAPTURE..., "
        "--coins, --speed, --bar-ms, ...; HLSL_* variables apply too.",
    )
    ap.add_argument("--api-url", help="read a running server's REST API instead (http://...)")
    ap.add_argument(
        "--timeout-s", type=float, default=API_TIMEOUT_S, help="REST request timeout (--api-url)"
    )
    ns, rest = ap.parse_known_args(argv)
    if ns.api_url and rest:
        ap.error(f"--api-url reads a running server; flow flags do not apply: {' '.join(rest)}")
    return ns.api_url, ns.timeout_s, server_args(rest)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m api.mcp`` (stdio).

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        0 on a clean end (stdin closed, SIGINT or SIGTERM), 1 if the flow failed, 2 if it could
        not start.
    """
    from api.runtime import FlowThread, MirrorThread, shared_store
    from connectors.errors import FeedError
    from connectors.redis_store import wait_for_redis
    from flows.pipeline import build_pipeline, tune_gc

    out = protect_stdout()
    api_url, timeout_s, settings = _parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    runner: FlowThread | None = None
    mirror: MirrorThread | None = None
    source: SignalSource
    try:
        if api_url:
            source = ApiSource(api_url, timeout_s, client_token())
        else:
            if not settings.serve_only:
                pipeline = build_pipeline(settings)
                tune_gc()
                runner = FlowThread(pipeline)
                source = StoreSource(pipeline.store, replay_wait_s(settings))
            if settings.shared_store:  # --store redis://: serve what every flow wrote
                wait_for_redis(settings.store, settings.store_timeout_ms, settings.start_timeout_s)
                mirror = MirrorThread(shared_store(settings))
                source = StoreSource(mirror.mirror.store, replay_wait_s(settings))
    except (ValueError, FileNotFoundError, FeedError) as ex:
        log.error("cannot start: %s", ex)
        return 2
    server = build_server(source)
    signal.signal(signal.SIGTERM, _interrupt)
    if mirror is not None:
        mirror.start()
    if runner is not None:
        runner.start()
    log.info(
        "MCP server on stdio (%s)", f"reading {api_url}" if api_url else "flow in this process"
    )
    try:
        run_stdio(server, out)
    except KeyboardInterrupt:
        log.info("interrupted: stopping")
    finally:
        if runner is not None:
            runner.stop()
        if mirror is not None:
            mirror.stop()
    if runner is not None and runner.pipeline.store.error is not None:
        return 1
    return 0


def cli() -> None:
    """The ``hlsl-mcp`` console script (``python -m api.mcp``): `main`, then exit at once."""
    code = main()
    logging.shutdown()
    sys.stderr.flush()
    # A worker thread may still block on stdin (after SIGTERM): do not wait for it.
    os._exit(code)


if __name__ == "__main__":
    cli()
