"""The signal envelope: what agents read, as a plain dict in the API's exact shape.

The envelope is built as a dict (cheap on the hot path, serialised by orjson as is) whose shape is
the `api.schemas.SignalEnvelope` Pydantic model; tests validate every envelope a replay produces
against that model with ``extra="forbid"``, so the two cannot drift apart silently.

One module past ~400 lines on purpose: building, rounding, checking and encoding the envelope
happen in one pass on the hot path (issue #12), and the field order is the published contract.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from connectors.events import STREAMS
from connectors.freshness import judge_stream, stale_after_ms, stream_block
from operators.edge import Edge, Signals, failed_edge
from operators.failures import (
    FINITE,
    NON_NEGATIVE,
    POSITIVE,
    UNIT,
    Bound,
    Degraded,
    compile_checker,
)
from operators.features import FEATURE_NAMES, STEP_ERROR_REASON, FeatureVector, check_features
from operators.flag_evidence import EVIDENCE
from operators.forecast import Forecast
from operators.regime import DECISION_INPUTS, RegimeState
from operators.rounding import fround

SCHEMA_VERSION: Final = "1.3"
"""1.1: the ``degraded`` block, the ``STEP_ERROR`` explain code and the documented ranges.
1.2 (#9): the ``forecast`` block, ``regime.risk_ratio`` and ``regime.stale``, the rules
``no_rule_fired``, ``forecast_vol_high``, ``no_new_data`` and the explain codes
``NO_DEMONSTRATED_SKILL``, ``NO_RULE_FIRED``, ``NO_NEW_DATA``, ``VOL_FORECAST_HIGH``.
1.3 (#9): ``regime.flag_evidence``, the risk flag's out-of-sample verdict at the bar length."""
_NAMES: Final = tuple(s.value for s in STREAMS)
_INF: Final = math.inf
_MISSING_REASON: Final = {
    s: judge_stream(s, None, None, None, 0).reason for s in STREAMS
}  # the reason judge_stream gives a stream that never appeared
N_INPUTS_MAX: Final = len(DECISION_INPUTS)

ENVELOPE_BOUNDS: Final[dict[str, Bound]] = {
    "regime.confidence": UNIT,
    "regime.margin": UNIT,
    "regime.candidate_count": NON_NEGATIVE,
    "regime.dwell_bars": NON_NEGATIVE,
    "regime.n_inputs": NON_NEGATIVE,
    "regime.risk_ratio": NON_NEGATIVE,
    "signals.momentum": UNIT,
    "signals.liquidity": UNIT,
    "signals.risk": UNIT,
    "edge.score": UNIT,
    "edge.horizon_ms": POSITIVE,
    "edge.raw_score": UNIT,
    "edge.p_right": UNIT,
    "edge.expected_move_bps": FINITE,
    "edge.cost_bps": NON_NEGATIVE,
    "edge.net_edge_bps": FINITE,
    "edge.size_usd": POSITIVE,
    "edge.costs.fee_bps": NON_NEGATIVE,
    "edge.costs.half_spread_bps": NON_NEGATIVE,
    "edge.costs.slippage_bps": NON_NEGATIVE,
    "warmup.observations": NON_NEGATIVE,
    "warmup.required": Bound(1.0),
    "warmup.coverage": UNIT,
    "bar.events": NON_NEGATIVE,
    "bar.gaps": NON_NEGATIVE,
    "bar.window_span_ms": NON_NEGATIVE,
    "freshness.streams.*.age_ms": NON_NEGATIVE,
    "freshness.streams.*.expected_interval_ms": NON_NEGATIVE,
}
"""The documented range of every ranged number outside ``features`` (`FEATURE_BOUNDS`), by path;
the API schema carries them, and `check_envelope` enforces them (and finiteness) before encoding."""


def _access(path: str) -> str:
    return "x" + "".join(f"[{p!r}]" for p in path.split("."))


_check_rest: Final = compile_checker(
    "check_envelope_rest",
    [(p, _access(p), b) for p, b in ENVELOPE_BOUNDS.items() if "*" not in p],
    {
        'x["freshness"]["streams"].values()': [
            (p, "it" + _access(p.split("*.")[1])[1:], b)
            for p, b in ENVELOPE_BOUNDS.items()
            if "*" in p
        ]
    },
)


FORECAST_BOUNDS: Final[dict[str, Bound]] = {
    "forecast.horizon_ms": POSITIVE,
    "forecast.vol_bps": NON_NEGATIVE,
    "forecast.vol_p10_bps": NON_NEGATIVE,
    "forecast.vol_p90_bps": NON_NEGATIVE,
}
"""Ranges of the ``forecast`` block (checked when it is not null)."""

_check_forecast: Final = compile_checker(
    "check_forecast",
    [],
    {
        '(x["forecast"],) if x["forecast"] is not None else ()': [
            (p, f"it[{p.split('.')[1]!r}]", b) for p, b in FORECAST_BOUNDS.items()
        ]
    },
)


def forecast_block(fc: Forecast | None) -> dict[str, Any] | None:
    """The envelope's ``forecast`` block (None: no model or too few returns yet)."""
    if fc is None:
        return None
    return {
        "horizon_ms": fc.horizon_ms,
        "vol_bps": fc.vol_bps,
        "vol_p10_bps": fc.vol_p10_bps,
        "vol_p90_bps": fc.vol_p90_bps,
        "model": fc.model,
    }


def check_envelope(env: dict[str, Any], *, features_checked: bool = False) -> None:
    """Raise `RangeError` unless every number of the envelope is finite and in its range.

    Checked on the Python values, before encoding (orjson would write NaN as null): the features
    (`FEATURE_BOUNDS`; skipped when ``features_checked``: the features step checked that very
    dict) and every ranged field of `ENVELOPE_BOUNDS`. The other numbers are ints the layer counts
    itself (timestamps, counts), finite by construction.
    """
    if not features_checked:
        check_features(env["features"])
    _check_rest(env)
    _check_forecast(env)


@dataclass(frozen=True, slots=True)
class Producer:
    """Who made the envelope: code version and the settings that shape its numbers."""

    code_version: str
    bar_ms: int
    lateness_ms: int


def freshness_block(fv: FeatureVector, as_of_ms: int) -> dict[str, Any]:
    """Per-stream freshness as of ``as_of_ms`` (bar close here; the source clock in the API).

    The same judgement as `connectors.freshness.judge_all` and `overall` (a test checks they
    agree), without their intermediate objects for streams that never appeared.
    """
    clocks = fv.streams
    streams: dict[str, Any] = {}
    present = stale = False
    for stream, name in zip(STREAMS, _NAMES, strict=True):
        c = clocks.get(stream)
        if c is None:
            streams[name] = {
                "status": "missing",
                "last_exchange_ms": None,
                "last_recv_ms": None,
                "age_ms": None,
                "expected_interval_ms": None,
                "reason": _MISSING_REASON[stream],
            }
            continue
        present = True
        iv = c.interval_ms
        age = as_of_ms - c.last_ms
        if age < 0:
            age = 0
        if age > stale_after_ms(stream, iv):  # rare: let judge_stream word the reason
            stale = True
            streams[name] = stream_block(
                judge_stream(stream, c.last_ms, c.last_recv_ms, iv, as_of_ms)
            )
            continue
        streams[name] = {
            "status": "ok",
            "last_exchange_ms": c.last_ms,
            "last_recv_ms": c.last_recv_ms,
            "age_ms": age,
            "expected_interval_ms": round(iv) if iv is not None and iv < _INF else None,
            "reason": None,
        }
    status = "stale" if stale else "ok" if present else "missing"
    return {"as_of_ms": as_of_ms, "status": status, "streams": streams}


def build_envelope(
    fv: FeatureVector,
    regime: RegimeState,
    signals: Signals,
    edge: Edge,
    freshness: dict[str, Any],
    producer: Producer,
    degraded: Degraded | None = None,
) -> dict[str, Any]:
    """Assemble the envelope, rounded for publishing (field order is part of the byte-identical
    replay promise).

    Values are not checked here: the envelope step runs `check_envelope` on the result (a
    non-finite or out-of-range value makes the bar a step error, never a published null).

    Rounding is `publish_features` and `publish_round`'s, done while the dict is built. The values
    the signals, forecast, regime and edge already round to 4 decimals where they are made
    (`compute_signals`, `forecast`, `risk_ratio`, `RegimeClassifier`, `EdgeScorer`) are not
    rounded again, only cleared of -0.0 (`_z`): rounding a float that is the nearest double to a
    4-decimal number to 4 decimals gives it back unchanged, so the bytes are those of
    `publish_round` (the golden record checks it).
    """
    values = fv.values
    if len(values) == _N_FEATURES:  # every feature, in FEATURE_NAMES order (FeatureVector)
        features = _publish_all(values, fv.px_decimals)
    else:
        features = publish_features(values, fv.px_decimals)
    missing = fv.missing
    n = fv.observations
    previous = regime.previous
    candidate = regime.candidate
    fc = edge.forecast
    direction = edge.direction._value_
    size = edge.size_usd
    env = {
        "schema_version": SCHEMA_VERSION,
        "timestamp_ms": fv.close_ms,
        "coin": fv.coin,
        "direction": direction,
        "regime": {
            "label": regime.label._value_,
            "confidence": _z(regime.confidence),
            "since_ms": regime.since_ms,
            "previous": None if previous is None else previous._value_,
            "candidate": None if candidate is None else candidate._value_,
            "candidate_count": regime.candidate_count,
            "dwell_bars": regime.dwell,
            "rule": regime.rule._value_,
            "margin": _r4(regime.margin),
            "stresses": list(regime.stresses),
            "inputs_used": list(regime.inputs_used),
            "inputs_missing": list(regime.inputs_missing),
            "n_inputs": regime.n_inputs,
            "n_inputs_max": N_INPUTS_MAX,
            "risk_ratio": _z(regime.risk_ratio),
            "stale": regime.stale,
            "flag_evidence": EVIDENCE.verdict(producer.bar_ms)._value_,
        },
        "signals": {
            "momentum": _z(signals.momentum),
            "liquidity": _z(signals.liquidity),
            "risk": _z(signals.risk),
        },
        "forecast": None
        if fc is None
        else {
            "horizon_ms": fc.horizon_ms,
            "vol_bps": _z(fc.vol_bps),
            "vol_p10_bps": _z(fc.vol_p10_bps),
            "vol_p90_bps": _z(fc.vol_p90_bps),
            "model": fc.model,
        },
        "edge": {
            "score": _z(edge.score),
            "actionable": edge.actionable,
            "explain": [c._value_ for c in edge.explain],
            "direction": direction,
            "horizon_ms": edge.horizon_ms,
            "raw_score": _z(edge.raw_score),
            "p_right": _z(edge.p_right),
            "calibration": edge.calibration,
            "expected_move_bps": _z(edge.expected_move_bps),
            "cost_bps": _z(edge.cost_bps),
            "net_edge_bps": _z(edge.net_edge_bps),
            "size_usd": fround(size, _USD) + 0.0 if type(size) is float else size,
            "costs": {
                "fee_bps": _r4(edge.fee_bps),
                "half_spread_bps": _z(edge.half_spread_bps),
                "slippage_bps": _z(edge.slippage_bps),
            },
        },
        "features": features,
        "features_missing": {k: missing[k] for k in sorted(missing)},
        "freshness": freshness,
        "warmup": {
            "warming_up": n < fv.warmup_obs,
            "observations": n,
            "required": fv.warmup_obs,
            "coverage": fround(min(1.0, n / fv.warmup_obs), 4),
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
        "degraded": None
        if degraded is None
        else {"step": degraded.step, "reason": degraded.reason},
    }
    return env


def _r4(x: Any) -> Any:
    """`publish_round`'s rule for one value: a float to 4 decimals (never -0.0), else as is."""
    return fround(x, _FOUR) + 0.0 if type(x) is float else x


def _z(x: Any) -> Any:
    """A float already rounded to 4 decimals where it was made, published: -0.0 becomes 0.0."""
    return x + 0.0 if type(x) is float else x


_FOUR: Final = 4
"""Decimals of published bps, ratios, z-scores, probabilities and other unit-free numbers."""
_USD: Final = 2
_SIGNIFICANT: Final = 10
"""Significant digits of every other published float (sizes, rates as fractions, OFI in coins):
enough for any wire value, and no float noise (``3469.8500000000004``)."""
_FOUR_SUFFIXES: Final = ("_bps", "_ratio", "_z", "_zscore", "_ann", "_pct", "_per_s", "_burst")
_FOUR_NAMES: Final = frozenset({"vpin", "ofi_norm", "efficiency_ratio"})


def _clean(x: float) -> float:
    return x + 0.0  # -0.0 -> 0.0


_PX, _USD_KIND, _FOUR_KIND, _SIG = 1, 2, 3, 4
_KIND: dict[str, int] = {}
"""Feature name -> its rounding kind (names are few and fixed: computed once each)."""


def _kind(name: str) -> int:
    kind = _KIND.get(name)
    if kind is None:
        if name.endswith("_px"):
            kind = _PX
        elif name.endswith("_usd"):
            kind = _USD_KIND
        elif name.endswith(_FOUR_SUFFIXES) or "imbalance" in name or name in _FOUR_NAMES:
            kind = _FOUR_KIND
        else:
            kind = _SIG
        _KIND[name] = kind
    return kind


def _significant(x: float) -> float:
    return float(f"{x:.{_SIGNIFICANT}g}")


def round_feature(name: str, x: float, px_decimals: int) -> float:
    """One feature rounded for publishing: prices to one decimal more than the coin's wire
    prices show (a price finer than that keeps its significant digits instead of becoming 0),
    bps and ratios to 4 decimals, USD to 2, anything else to 10 significant digits; -0.0 is
    0.0. Internal state is never rounded."""
    kind = _kind(name)
    if kind == _PX:
        r = fround(x, px_decimals + 1)
        if r == 0.0 and x != 0.0:
            r = _significant(x)
    elif kind == _FOUR_KIND:
        r = fround(x, _FOUR)
    elif kind == _USD_KIND:
        r = fround(x, _USD)
    else:
        r = _significant(x)
    return r + 0.0


def publish_features(values: dict[str, float | None], px_decimals: int) -> dict[str, Any]:
    """A new dict of the features, rounded for publishing (`round_feature`, inlined: this runs
    for every feature of every bar)."""
    nd = px_decimals + 1
    kinds = _KIND
    out: dict[str, Any] = {}
    for k, v in values.items():
        if type(v) is not float:
            out[k] = v
            continue
        kind = kinds.get(k) or _kind(k)
        if kind == _FOUR_KIND:
            r = fround(v, _FOUR)
        elif kind == _PX:
            r = fround(v, nd)
            if r == 0.0 and v != 0.0:
                r = _significant(v)
        elif kind == _USD_KIND:
            r = fround(v, _USD)
        else:
            r = _significant(v)
        out[k] = r + 0.0
    return out


def _compile_publisher() -> Callable[[dict[str, float | None], int], dict[str, Any]]:
    """`publish_features` for a dict holding every feature in `FEATURE_NAMES` order, unrolled
    into straight code once, at import (each feature's rounding kind is known in advance; the
    same operations as `publish_features`, without its per-value lookups)."""
    lines = ["def publish_all(v, px_decimals):", "    nd = px_decimals + 1"]
    for i, name in enumerate(FEATURE_NAMES):
        kind = _kind(name)
        lines += [f"    x = v[{name!r}]", "    if type(x) is float:"]
        if kind == _FOUR_KIND:
            lines.append(f"        x = fround(x, {_FOUR}) + 0.0")
        elif kind == _PX:
            lines += [
                "        r = fround(x, nd)",
                "        if r == 0.0 and x != 0.0:",
                "            r = significant(x)",
                "        x = r + 0.0",
            ]
        elif kind == _USD_KIND:
            lines.append(f"        x = fround(x, {_USD}) + 0.0")
        else:
            lines.append("        x = significant(x) + 0.0")
        lines.append(f"    f{i} = x")
    body = ", ".join(f"{name!r}: f{i}" for i, name in enumerate(FEATURE_NAMES))
    lines.append(f"    return {{{body}}}")
    namespace: dict[str, Any] = {"significant": _significant, "fround": fround}
    exec("\n".join(lines), namespace)  # the source is built above from constants only
    fn: Callable[[dict[str, float | None], int], dict[str, Any]] = namespace["publish_all"]
    return fn


_N_FEATURES: Final = len(FEATURE_NAMES)
_publish_all: Final = _compile_publisher()


def _round4(block: dict[str, Any] | None, keys: tuple[str, ...]) -> None:
    if block is None:
        return
    for k in keys:
        v = block.get(k)
        if type(v) is float:
            block[k] = _clean(fround(v, _FOUR))


def publish_round(env: dict[str, Any]) -> None:
    """Round the envelope's scores, probabilities, bps and USD in place (features are rounded
    by `publish_features`), so published numbers carry no float noise; deterministic."""
    _round4(env["regime"], ("confidence", "margin", "risk_ratio"))
    _round4(env["signals"], ("momentum", "liquidity", "risk"))
    _round4(env.get("forecast"), ("vol_bps", "vol_p10_bps", "vol_p90_bps"))
    edge = env["edge"]
    _round4(
        edge,
        ("score", "raw_score", "p_right", "expected_move_bps", "cost_bps", "net_edge_bps"),
    )
    _round4(edge["costs"], ("fee_bps", "half_spread_bps", "slippage_bps"))
    size = edge.get("size_usd")
    if type(size) is float:
        edge["size_usd"] = _clean(fround(size, _USD))


def degraded_block(d: Degraded) -> dict[str, str]:
    """The envelope's ``degraded`` block."""
    return {"step": d.step, "reason": d.reason}


NO_SIGNALS: Final = Signals(None, None, None)


def degraded_envelope(
    fv: FeatureVector,
    regime: RegimeState,
    edge: Edge,
    freshness: dict[str, Any],
    producer: Producer,
    degraded: Degraded,
) -> dict[str, Any]:
    """The envelope of a bar whose envelope could not be built or checked: every feature and
    signal null (``step_error``), the edge FLAT with ``STEP_ERROR``, the regime as given.

    Raises like `check_envelope` if even that is not publishable (the step then drops the bar).
    """
    blank = msgspec.structs.replace(
        fv,
        values=dict.fromkeys(FEATURE_NAMES),
        missing=dict.fromkeys(FEATURE_NAMES, STEP_ERROR_REASON),
        degraded=degraded,
    )
    held = failed_edge(
        regime.label, edge.horizon_ms, edge.calibration, edge.size_usd, edge.fee_bps, edge.forecast
    )
    env = build_envelope(blank, regime, NO_SIGNALS, held, freshness, producer, degraded)
    check_envelope(env)
    return env
