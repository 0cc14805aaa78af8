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
  ``--coins``), or ``python -m api.mcp --api-url http://127.0.0.1:8000`` reads a running server.
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
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from io import TextIOWrapper
from types import FrameType
from typing import Annotated, Any, BinaryIO, Protocol, TypeVar

import anyio
import anyio.to_thread
import orjson
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, Resource, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse
from starlette.routing import Router
from starlette.types import Receive, Scope, Send

from api.app import ApiError, check_coin_name, history_json, list_json, no_signal_reason
from api.app import resolve as app_resolve
from api.schemas import SignalEnvelope, SignalHistory, SignalList
from api.store import SignalStore
from flows.settings import COIN_PATTERN, Settings
from operators.freshness import FreshnessStatus
from operators.regime import RegimeConfig, RegimeLabel, Rule

log = logging.getLogger("api.mcp")  # not "__main__" under python -m

SERVER_NAME = "hyperliquid-signal-layer"
URI_PREFIX = "signal://hyperliquid/"
URI_TEMPLATE = URI_PREFIX + "{coin}"
HISTORY_LIMIT_MAX = 1000
HISTORY_LIMIT_DEFAULT = 100
API_TIMEOUT_S = 10.0

Envelope = dict[str, Any]
T = TypeVar("T")
_COIN_RE = re.compile(COIN_PATTERN)

# -- what an agent reads -------------------------------------------------------------------------

_TRUST = (
    "Do not act on a signal when: freshness.status is 'stale' (its inputs stopped updating; the "
    "server then sets edge.actionable false and appends STALE_INPUT), warmup.warming_up is true, "
    "regime.label is UNKNOWN, edge.actionable is false, or regime.candidate is set (a regime "
    "change is pending confirmation). edge.score is a heuristic strength in [0, 1], NOT a "
    "calibrated probability (calibration against forward returns is pending); "
    "regime.confidence is rule margin x input quality x stability, not a probability either. "
    "This server never trades."
)

_FIELDS = (
    "Fields: timestamp_ms = bar close, exchange time, ms since the Unix epoch (UTC). coin. "
    "direction = edge.direction (LONG, SHORT, FLAT). regime: label (TRENDING, MEAN_REVERTING, "
    "LIQUIDATION_RISK, CHAOTIC, UNKNOWN), confidence 0..1, since_ms (exchange time the label was "
    "entered), previous, candidate (pending label) with candidate_count, dwell_bars, rule and "
    "margin 0..1 of this bar's call, stresses, inputs_used/inputs_missing. signals: momentum "
    "(move vs its noise), liquidity (1 = usual for this coin or better), risk (market stress), "
    "each 0..1 or null without input. edge: score 0..1, actionable, direction, horizon_ms (time "
    "the feature window spans), explain = stable machine codes, most important first (e.g. "
    "REGIME_TRENDING, WARMING_UP, STALE_INPUT, LIQUIDITY_POOR, FLOW_CONTRADICTS, "
    "SCORE_BELOW_THRESHOLD). features: units are in the names (_bps basis points, _px and _usd "
    "quote currency, _ms milliseconds, _pct percent, _1h hourly fraction, _ann annualised "
    "fraction; *_ratio = 1 means usual for this coin; *_imbalance in -1..1; volumes in base "
    "coin); a null feature is never a silent 0, features_missing gives its reason. freshness: "
    "per stream (trades, l2Book, bbo, candle, allMids, activeAssetCtx) status ok/stale/missing "
    "with age_ms, judged at call time (as_of_ms) on the source clock; 'missing' = never received. "
    "warmup: observations vs required. bar: the 1-bar window described. producer: code version "
    "and settings."
)

_COIN_RULE = (
    "coin: exact Hyperliquid name (case-sensitive, e.g. BTC, kPEPE) or a unique "
    "case-insensitive match (btc); an unknown coin is an error that lists the coins served."
)

INSTRUCTIONS = (
    "Read-only market-structure signals for Hyperliquid perpetuals: per coin a regime, three "
    "0..1 signals, an edge (direction, score, actionable, explain codes), named features with "
    "units, and per-stream freshness. Start with list_signals or get_signal; use explain_regime "
    "to see why a regime was called. " + _TRUST
)

GET_SIGNAL_DOC = (
    "Latest signal envelope of one coin (one bar close), freshness judged at call time. "
    + _COIN_RULE
    + " "
    + _FIELDS
    + " "
    + _TRUST
)
LIST_SIGNALS_DOC = (
    "Latest signal envelope of every coin that has one ({data: [...], count}), freshness judged "
    "at call time; each envelope has the same fields as get_signal. Coins that are tracked but "
    "have no signal yet are not listed. " + _TRUST
)
GET_HISTORY_DOC = (
    "A coin's stored signal envelopes, oldest first ({coin, data: [...], count}), as they were "
    "emitted: freshness and actionable are as of each bar close, NOT re-judged now (use "
    "get_signal for the current state). since_ms: only envelopes with timestamp_ms after this "
    "exchange time (ms since the Unix epoch). limit: the newest N (1..1000, default 100). "
    + _COIN_RULE
    + " Envelope fields as in get_signal. "
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
}


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(x: float | None) -> str:
    return "null" if x is None else f"{x:.4g}"


def _check(rule: Rule, feature: str, op: str, value: float | None, thr: float) -> RegimeCheck:
    met: bool | None = None
    if value is not None:
        met = value >= thr if op == ">=" else value <= thr if op == "<=" else value < thr
    return RegimeCheck(
        rule=rule, condition=f"{feature} {op} {thr:g}", value=value, threshold=thr, met=met
    )


def _checks(f: RegimeFeatures, before: RegimeLabel, cfg: RegimeConfig) -> list[RegimeCheck]:
    """Every rule condition, with the enter/stay band that applied given the label before."""
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
    chaos = cfg.chaos_exit_ver if before is RegimeLabel.CHAOTIC else cfg.chaos_enter_ver
    trend = cfg.trend_exit_er if before is RegimeLabel.TRENDING else cfg.trend_enter_er
    mr = cfg.mr_exit_er if before is RegimeLabel.MEAN_REVERTING else cfg.mr_enter_er
    out += [
        _check(Rule.CHAOS, "vol_expansion_ratio", ">=", ver, chaos),
        _check(Rule.CHAOS, "efficiency_ratio", "<", er, cfg.chaos_max_er),
        _check(Rule.TREND, "efficiency_ratio", ">=", er, trend),
        _check(Rule.MEAN_REVERSION, "efficiency_ratio", "<=", er, mr),
    ]
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
        f"This bar's call: rule {rule} — {_RULE_MEANING[rule]}; margin {reg['margin']:.2f} "
        f"({_MARGIN_MEANING[rule]})."
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
        rule_meaning=_RULE_MEANING[rule],
        margin=reg["margin"],
        margin_meaning=_MARGIN_MEANING[rule],
        stresses=list(reg["stresses"]),
        inputs_used=list(reg["inputs_used"]),
        inputs_missing=list(reg["inputs_missing"]),
        features=features,
        features_missing={k: v for k, v in missing_all.items() if k in RegimeFeatures.model_fields},
        thresholds=dataclasses.asdict(cfg),
        checks=_checks(features, before, cfg),
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


class StoreSource:
    """Signals from an in-process `SignalStore`, with the REST API's rules.

    Args:
        store: the store the flow writes.
    """

    def __init__(self, store: SignalStore) -> None:
        self.store = store

    def resolve(self, name: str) -> str:
        """The served coin ``name`` designates, as ``GET /v1/signal/{coin}`` resolves it.

        Raises:
            SignalQueryError: 422 not a coin name; 404 unknown or ambiguous (with the coins).
        """
        try:
            return app_resolve(self.store, name)
        except ApiError as ex:
            raise SignalQueryError(ex.status, ex.detail, ex.coins) from None

    def signal(self, coin: str) -> Envelope:
        """A coin's latest envelope, freshness judged now.

        Raises:
            SignalQueryError: as `resolve`, or 503 when the coin has no signal yet.
        """
        name = self.resolve(coin)
        rec = self.store.record(name)
        if rec is None:
            raise SignalQueryError(503, no_signal_reason(self.store, name))
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

    Raises:
        ValueError: the URL is not http(s).
    """

    def __init__(self, base_url: str, timeout_s: float = API_TIMEOUT_S) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            msg = f"--api-url must be an http(s) URL, got {base_url!r}"
            raise ValueError(msg)
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, query: dict[str, int] | None = None) -> Any:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        req = urllib.request.Request(url, headers={"Accept": "application/json"})
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
            raise SignalQueryError(
                ex.code, str(detail or f"HTTP {ex.code} from {url}"), coins
            ) from None
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


# -- the server ----------------------------------------------------------------------------------


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
    except SignalQueryError as ex:
        raise ToolError(str(ex)) from ex


class SignalServer(FastMCP[Any]):
    """`FastMCP` whose resource listing names one ``signal://hyperliquid/{coin}`` per coin.

    Args:
        source: where signals come from.
        **kwargs: passed to `FastMCP`.
    """

    def __init__(self, source: SignalSource, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source = source

    async def list_resources(self) -> list[Resource]:
        """Static resources plus the latest signal of every coin that has one."""
        listed = await super().list_resources()
        try:
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
            for a localhost server: Host must be 127.0.0.1, localhost or [::1], any port).

    Returns:
        The server; run it with `run_stdio` or serve it with `McpHttpApp`.
    """
    cfg = regime_config if regime_config is not None else RegimeConfig()
    root = logging.getLogger()
    root_level, root_handlers = root.level, list(root.handlers)
    server = SignalServer(
        source,
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

    # Each tool returns a CallToolResult built off the event loop: structured content checked by
    # the API's Pydantic model, plus the same JSON (compact) as text. The output schema comes
    # from the Annotated model; the SDK validates the structured content against that model.
    async def get_signal(coin: CoinArg) -> Annotated[CallToolResult, SignalEnvelope]:
        return await _call(_result, SignalEnvelope, source.signal, coin)

    async def list_signals() -> Annotated[CallToolResult, SignalList]:
        return await _call(_result, SignalList, source.signals)

    async def get_history(
        coin: CoinArg, since_ms: SinceArg = None, limit: LimitArg = HISTORY_LIMIT_DEFAULT
    ) -> Annotated[CallToolResult, SignalHistory]:
        return await _call(_result, SignalHistory, source.history, coin, since_ms, limit)

    def explain(coin: str) -> RegimeExplanation:
        env = SignalEnvelope.model_validate(source.signal(coin)).model_dump(mode="json")
        return explain_envelope(env, cfg)

    async def explain_regime(coin: CoinArg) -> Annotated[CallToolResult, RegimeExplanation]:
        return await _call(_result, RegimeExplanation, explain, coin)

    tools: list[tuple[Callable[..., Any], str, str]] = [
        (get_signal, "Latest signal of a coin", GET_SIGNAL_DOC),
        (list_signals, "Latest signal of every coin", LIST_SIGNALS_DOC),
        (get_history, "Stored signals of a coin", GET_HISTORY_DOC),
        (explain_regime, "Why a coin's regime is what it is", EXPLAIN_REGIME_DOC),
    ]
    for fn, title, doc in tools:
        server.add_tool(
            fn, title=title, description=doc, annotations=READ_ONLY, structured_output=True
        )

    async def read_signal(coin: str) -> str:
        env = await _call(source.signal, coin)
        return SignalEnvelope.model_validate(env).model_dump_json()

    server.resource(
        URI_TEMPLATE,
        name="signal",
        title="Latest signal of a coin",
        description="The latest signal envelope of a coin as JSON (schema: SignalEnvelope), "
        "freshness judged on read. " + _COIN_RULE + " " + _TRUST,
        mime_type="application/json",
    )(read_signal)
    return server


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
    store: SignalStore, *, transport_security: TransportSecuritySettings | None = None
) -> McpHttpApp:
    """The MCP streamable HTTP transport over ``store``, to mount in the FastAPI app.

    Mount it (``app.mount("/mcp", mcp)``) and enter ``mcp.lifespan()`` in the app's lifespan:
    see `McpHttpApp`.

    Args:
        store: the store the flow writes (the same one the REST API reads).
        transport_security: DNS-rebinding protection; the default accepts Host 127.0.0.1,
            localhost and [::1] (any port). Serving on another address needs e.g.
            ``TransportSecuritySettings(allowed_hosts=["myhost:*"],
            allowed_origins=["https://myhost"])``.

    Returns:
        The ASGI app.
    """
    return McpHttpApp(StoreSource(store), transport_security)


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
    from api.server import FlowThread
    from connectors.errors import FeedError
    from flows.signal import build_pipeline, tune_gc

    out = protect_stdout()
    api_url, timeout_s, settings = _parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    runner: FlowThread | None = None
    source: SignalSource
    try:
        if api_url:
            source = ApiSource(api_url, timeout_s)
        else:
            pipeline = build_pipeline(settings)
            tune_gc()
            runner = FlowThread(pipeline)
            source = StoreSource(pipeline.store)
    except (ValueError, FileNotFoundError, FeedError) as ex:
        log.error("cannot start: %s", ex)
        return 2
    server = build_server(source)
    signal.signal(signal.SIGTERM, _interrupt)
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
    if runner is not None and runner.pipeline.store.error is not None:
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stderr.flush()
    # A worker thread may still block on stdin (after SIGTERM): do not wait for it.
    os._exit(code)
