"""What an agent reads from the MCP server: instructions, tool descriptions, argument types and
the tools' JSON schemas.

The descriptions share their wording (`_TRUST`, `_FIELDS`, `COIN_RULE`, `_VIEW_RULE`; what
``edge.score`` means is `api.views.EDGE_SCORE_MEANING`). Output schemas are shallow
(`shallow_schema`: top-level fields and their types, no ``$defs``) to keep ``tools/list`` small;
the full JSON Schemas are resources (`api.mcp.server.SCHEMA_RESOURCES`). `strict_tool` makes a
tool whose arguments are validated strictly, and `argument_error` says in one line what is wrong
with them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

from mcp.server.fastmcp.tools import Tool
from mcp.types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.schemas import SignalEnvelope
from api.views import EDGE_SCORE_MEANING, CompactSignal, View
from flows.settings import COIN_PATTERN

HISTORY_LIMIT_MAX = 1000
HISTORY_LIMIT_DEFAULT = 20
MAX_ANSWER_BYTES = 256 * 1024
"""Largest JSON text one list_signals or get_history answer may carry (the SDK sends it twice,
as text and as structured content). Past it the call is refused with the limit that fits: an
agent's context is not the place for megabytes, and encoding them holds up the server's event
loop for every other client (1,000 full envelopes were 7.6 MB and took 1.4 s)."""


# -- what an agent reads -------------------------------------------------------------------------

_TRUST = (
    "Do not act on a signal when: freshness.status is 'stale' (its inputs stopped updating; the "
    "server then sets edge.actionable false and appends STALE_INPUT), warmup.warming_up is true, "
    "regime.label is UNKNOWN, edge.actionable is false, or regime.candidate is set (a regime "
    "change is pending confirmation). " + EDGE_SCORE_MEANING + " regime.confidence is rule "
    "margin x input quality x stability, not a probability. Freshness is judged on the source's "
    "clock: live, the wall clock; in a replay, the replay's newest exchange time, so a finished "
    "replay's last signals stay 'ok': compare timestamp_ms with your own clock before acting. "
    "This server never trades."
)

_FIELDS = (
    "Fields: timestamp_ms = bar close, exchange time, ms since the Unix epoch (UTC). coin. "
    "direction = edge.direction (LONG, SHORT, FLAT). regime: label (TRENDING, MEAN_REVERTING, "
    "LIQUIDATION_RISK, CHAOTIC, UNKNOWN), confidence 0..1, since_ms (exchange time the label was "
    "entered), previous, candidate (pending label) with candidate_count, dwell_bars, rule and "
    "margin 0..1 of this bar's call, stresses, inputs_used/inputs_missing, flag_evidence (whether "
    "the risk flag has been shown out of sample to beat a one-line volatility rule at this bar "
    "length: demonstrated, not_demonstrated, untested). signals: momentum "
    "(move vs its noise), liquidity (1 = usual for this coin or better), risk (1 - 2^-rho from "
    "the forecast volatility vs the coin's norm; market stress while regime.risk_ratio is null), "
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

COIN_RULE = (
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

_SIZE_RULE = (
    f"An answer over {MAX_ANSWER_BYTES // 1024} KB of JSON is refused with the limit that fits "
    "(about 70 full or 340 compact envelopes)."
)
GET_SIGNAL_DOC = (
    "Latest signal of one coin (one bar close), freshness judged at call time; default view "
    "full (the REST envelope). " + COIN_RULE + " " + _VIEW_RULE + " " + _FIELDS + " " + _TRUST
)
LIST_SIGNALS_DOC = (
    "Latest signal of every coin that has one ({data: [...], count}), freshness judged at call "
    "time; default view compact (fields as in get_signal). Coins that are tracked but have no "
    "signal yet are not listed. " + _SIZE_RULE + " " + _VIEW_RULE + " " + _TRUST
)
GET_HISTORY_DOC = (
    "A coin's stored signals, oldest first ({coin, data: [...], count}), as they were emitted: "
    "freshness and actionable are as of each bar close, NOT re-judged now (use get_signal for "
    "the current state). since_ms: only signals with timestamp_ms after this exchange time (ms "
    f"since the Unix epoch). until_ms: a time range (since_ms < timestamp_ms <= until_ms, the "
    f"oldest `limit` of it; page on with next_since_ms; outside what is held: an error naming "
    f"earliest_ms). limit: at most N (1..{HISTORY_LIMIT_MAX}, default "
    f"{HISTORY_LIMIT_DEFAULT}): the newest N, or with until_ms the oldest N of the range; "
    "default view compact. " + _SIZE_RULE + " " + COIN_RULE + " " + _VIEW_RULE + " " + _TRUST
)
EXPLAIN_REGIME_DOC = (
    "Why a coin's regime is what it is, in plain words and numbers: the label, the rule behind "
    "this bar's call (warming_up, no_price_input, cascade, forecast_vol_high, "
    "vol_expansion_without_direction, efficient_path, inefficient_path, between_thresholds, "
    "no_rule_fired, no_new_data, step_error) and its margin past the threshold, "
    "stresses, a pending candidate, dwell and since_ms, inputs used/missing, the features the "
    "rules read (efficiency_ratio 0..1, vol_expansion_ratio, momentum_bps, momentum_z, "
    "variance_ratio, trade_flow_imbalance -1..1, spread_ratio, depth_ratio, oi_change_pct), "
    "the thresholds (operators.regime."
    "RegimeConfig), each rule condition checked against them, and caveats saying when not to "
    "trust the call (UNKNOWN, warming up, stale inputs, a pending change, missing inputs). "
    "confidence is margin x input quality x stability, not a calibrated probability. Checks are "
    "recomputed from the envelope; the flow's rule and margin are authoritative. " + COIN_RULE
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
UntilArg = Annotated[
    int | None,
    Field(
        ge=0,
        description="with it, a time range: only envelopes with timestamp_ms at or before this; "
        "the answer says next_since_ms (the since_ms of the next page; null on the last)",
    ),
]
LimitArg = Annotated[
    int,
    Field(
        ge=1,
        le=HISTORY_LIMIT_MAX,
        description="at most N envelopes (1..1000): the newest N, or with until_ms the oldest N "
        "of the range (a page)",
    ),
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


# -- the tools' JSON schemas and argument errors ------------------------------------------------


def shallow_schema(model: type[BaseModel], title: str, description: str) -> dict[str, Any]:
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


def signal_schema() -> dict[str, Any]:
    """One signal in either view: the compact view's fields are the ones every view has."""
    compact = shallow_schema(CompactSignal, "Signal", "")
    full = shallow_schema(SignalEnvelope, "Signal", "")
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


def list_schema(title: str, with_coin: bool) -> dict[str, Any]:
    item = signal_schema()
    item.pop("title")
    props: dict[str, Any] = {
        "data": {"type": "array", "items": item},
        "count": {"type": "integer"},
    }
    required = list(props)
    if with_coin:
        props = {"coin": {"type": "string"}, **props}
        required = list(props)
        # SignalHistory's page marker (history with until_ms)
        props["next_since_ms"] = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    return {
        "type": "object",
        "title": title,
        "properties": props,
        "required": required,
    }


class AnyObject(BaseModel):
    """Output model of the signal tools: the tool checks its documents with the exact model of
    the view (`SignalEnvelope`, `CompactSignal`, ...); the SDK checks the (shallow) schema."""

    model_config = ConfigDict(extra="allow")


def strict_tool(
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
