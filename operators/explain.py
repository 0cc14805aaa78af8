"""Why a coin's regime is what it is: the explanation of an envelope's regime block.

`explain_envelope` reads a published envelope (as a dict) and says, in numbers and plain words,
which rule made this bar's call, how far past its threshold it held, the features the rules read,
the thresholds (`operators.regime.RegimeConfig`), every rule condition checked again as
`operators.regime.raw_call` applies it (with the enter/stay band that applied), and caveats
saying when not to trust the call. The pydantic models here are the response schema of the MCP
tool ``explain_regime`` and of ``GET /v1/signal/{coin}/explain``.

It sits next to the regime rules it explains, so a rule and its words change together. It may
import connectors and operators only (and pydantic); the API serves it.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from connectors.freshness import FreshnessStatus
from operators.flag_evidence import FlagEvidence
from operators.regime import VOL_MODEL, RegimeConfig, RegimeLabel, Rule

Envelope = dict[str, Any]

# -- the explanation model -----------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=True)


class RegimeFeatures(_Model):
    """The features the regime rules read (null: not computable, see ``features_missing``)."""

    efficiency_ratio: float | None = Field(
        description="Kaufman efficiency ratio |net move| / path length over the trend window, 0..1"
    )
    vol_expansion_ratio: float | None = Field(
        description="short-window vol per unit time over its usual (rolling median) level"
    )
    momentum_bps: float | None = Field(description="log return over the trend window, bps")
    trade_flow_imbalance: float | None = Field(
        description="(buy - sell)/(buy + sell) aggressor volume over the window, -1..1"
    )
    spread_ratio: float | None = Field(description="spread over its rolling median (1 = usual)")
    depth_ratio: float | None = Field(description="band depth over its rolling median (1 = usual)")
    oi_change_pct: float | None = Field(description="open-interest change over the window, percent")
    momentum_z: float | None = Field(
        default=None,
        description="momentum over its noise: move / (sigma per return x sqrt(returns)) (trend)",
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
    flag_evidence: FlagEvidence | None = Field(
        description="the envelope's regime.flag_evidence: whether the risk flag has been shown "
        "to beat a one-line volatility rule at this bar length (null: an envelope before 1.3)",
    )
    freshness_status: FreshnessStatus = Field(description="judged at call time")
    warming_up: bool
    actionable: bool
    caveats: list[str] = Field(description="reasons not to trust this call (empty: none)")
    summary: str = Field(description="the explanation in plain words")


_CFG: Final = RegimeConfig()
"""The thresholds the flow runs with (the rule texts below quote them)."""

_RULE_MEANING = {
    Rule.WARMING_UP: "not enough price observations yet: no regime call is made",
    Rule.NO_PRICE: "no price input (no quote, candle close or trade): no regime call is possible",
    Rule.CASCADE: (
        f"a one-way move that is large for this coin, in a risk state: the risk flag raised (or, "
        f"without a risk ratio, vol_expansion_ratio >= {_CFG.liq_ver:g}), efficiency_ratio >= "
        f"{_CFG.liq_er:g}, a move over the trend window of at least {_CFG.liq_move_z:g} of the "
        f"coin's norm standard deviations, and stress in min({_CFG.liq_min_groups}, available) "
        "groups (one-sided aggressive flow; a spread blow-out or depth collapse; an open-interest "
        f"drop), one group from {2 * _CFG.liq_move_z:g} norm units, none when no stress input "
        "exists (candles)"
    ),
    Rule.CHAOS: (
        "the risk flag from the volatility expansion, not a cascade: vol_expansion_ratio >= "
        f"{_CFG.flag_ver:g} at any efficiency; without a risk ratio also >= "
        f"{_CFG.chaos_enter_ver:g} (kept while >= {_CFG.chaos_exit_ver:g}) on an inefficient path "
        f"(efficiency_ratio < {_CFG.chaos_max_er:g})"
    ),
    Rule.TREND: "the price path is efficient: the net move is large relative to the path walked",
    Rule.MEAN_REVERSION: "the price path is inefficient: it moves back and forth around a mean",
    Rule.HOLD: (
        "a rule fired for a different label this bar, not yet confirmed by hysteresis: the "
        "current label is held"
    ),
}

_MARGIN_MEANING = {
    Rule.WARMING_UP: "0: no call",
    Rule.NO_PRICE: "0: no call",
    Rule.CASCADE: (
        f"stresses met / stresses available; without stress inputs (move_z - {_CFG.liq_move_z:g})"
        f" / {_CFG.liq_move_z:g}, clamped to 0..1 (move_z: the move over the trend window in the "
        "coin's norm standard deviations)"
    ),
    Rule.CHAOS: "(vol_expansion_ratio - threshold) / threshold, clamped to 0..1",
    Rule.TREND: (
        "min((efficiency_ratio - threshold) / (1 - threshold), (|momentum_z| - z threshold) / "
        "z threshold), the second term when momentum_z is known, clamped to 0..1"
    ),
    Rule.MEAN_REVERSION: (
        "min((threshold - efficiency_ratio) / threshold, (variance threshold - variance_ratio) / "
        "variance threshold), the second term when variance_ratio is known, clamped to 0..1"
    ),
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
        "the risk flag from the volatility forecast, not a cascade: risk_ratio (the next hour's "
        "forecast volatility over the coin's norm) at or above its enter level, or its exit "
        "level while flagged",
        "(risk_ratio - level) / level, clamped to 0..1",
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


def utc_text(ms: int) -> str:
    """An exchange time (ms since the Unix epoch) as ``YYYY-MM-DD HH:MM:SS UTC``."""
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
    out = []
    if rho is None:  # without a risk ratio a one-way shock may be a cascade without the flag
        out.append(
            _check(
                Rule.CASCADE,
                "vol_expansion_ratio (a shock without a risk ratio; else the risk flag below)",
                ">=",
                ver,
                cfg.liq_ver,
            )
        )
    out += [
        _check(Rule.CASCADE, "efficiency_ratio", ">=", er, cfg.liq_er),
        # |move| / sqrt(norm variance x returns): the norm is the flow's state, not published
        _check(
            Rule.CASCADE,
            "move_z: |momentum| in the coin's norm standard deviations (not published)",
            ">=",
            None,
            cfg.liq_move_z,
        ),
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


def _pending(label: RegimeLabel, reg: dict[str, Any], cfg: RegimeConfig) -> str:
    """How far a pending change is, by the rule that leaves ``label`` (`RegimeClassifier`)."""
    n = reg["candidate_count"]
    if label is RegimeLabel.LIQUIDATION_RISK:
        return f"{n} of {cfg.liq_exit_confirm} bars without a cascade before it is left"
    if label is RegimeLabel.CHAOTIC:  # with a risk ratio it is left on the first unflagged bar
        need = 1 if reg.get("risk_ratio") is not None else cfg.risk_exit_confirm
        return f"{n} of {need} unflagged bars before it is left"
    return f"{n} of {cfg.confirm} bars to confirm, once the label has held {cfg.min_dwell} bars"


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
            f"{utc_text(env['timestamp_ms'])}, not now"
        )
    elif fresh["status"] == "missing":
        caveats.append("no input stream has been received")
    if candidate is not None:
        caveats.append(f"a change to {candidate} is pending ({_pending(label, reg, cfg)})")
    if rule is Rule.HOLD and label is not RegimeLabel.UNKNOWN:
        caveats.append("the label is held by hysteresis this bar, not freshly called (margin 0)")
    if reg["inputs_missing"]:
        caveats.append(
            f"inputs never received: {', '.join(reg['inputs_missing'])} (lower confidence)"
        )
    if label is not RegimeLabel.UNKNOWN and dwell < cfg.min_dwell:
        caveats.append(f"the label is new ({dwell} bars, stable from {cfg.min_dwell})")
    evidence = reg.get("flag_evidence")
    risky = label in (RegimeLabel.LIQUIDATION_RISK, RegimeLabel.CHAOTIC)
    if risky and evidence is not None and evidence != FlagEvidence.DEMONSTRATED:
        caveats.append(
            f"the risk flag is {evidence} at this bar length: it has not been shown, out of "
            "sample, to separate forward volatility better than a one-line volatility rule "
            "(use forecast.vol_bps for the size of the risk)"
        )
    if not env["edge"]["actionable"]:
        caveats.append("edge.actionable is false")

    words = [
        f"{env['coin']} is {label} (confidence {reg['confidence']:.2f}, not a probability) "
        f"since {utc_text(reg['since_ms'])}, held {dwell} bars"
        + (f" after {previous}" if previous is not None else "")
        + f"; as of the bar closing {utc_text(env['timestamp_ms'])}."
    ]
    words.append(
        f"This bar's call: rule {rule} — {_rule_meaning(rule)}; margin {reg['margin']:.2f} "
        f"({_margin_meaning(rule)})."
    )
    er, ver = features.efficiency_ratio, features.vol_expansion_ratio
    flag_at = "" if VOL_MODEL is None else f"risk_ratio {VOL_MODEL.flag_enter:g}+ or "
    words.append(
        f"Efficiency ratio {_num(er)} (TRENDING from {cfg.trend_enter_er:g}, stays above "
        f"{cfg.trend_exit_er:g}; MEAN_REVERTING from {cfg.mr_enter_er:g}, stays below "
        f"{cfg.mr_exit_er:g}, in a calm market only); risk ratio {_num(reg.get('risk_ratio'))}; "
        f"volatility expansion {_num(ver)} (the risk flag at {flag_at}expansion "
        f"{cfg.flag_ver:g}+; without a risk ratio also from {cfg.chaos_enter_ver:g} with "
        f"efficiency below {cfg.chaos_max_er:g}; a cascade needs the flag, efficiency "
        f"{cfg.liq_er:g}+ and a move of {cfg.liq_move_z:g}+ norm standard deviations)."
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
        flag_evidence=None if evidence is None else FlagEvidence(evidence),
        freshness_status=FreshnessStatus(fresh["status"]),
        warming_up=warm["warming_up"],
        actionable=env["edge"]["actionable"],
        caveats=caveats,
        summary=" ".join(words),
    )
