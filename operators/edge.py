"""Signals (momentum, liquidity, risk in [0, 1]) and the edge: direction, score, actionable, why.

Everything here is a pure function of one bar's features, its regime and its freshness, so it is
deterministic on replay. Formulas are in DESIGN.md §Signals and §Edge; keep the two in step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from operators.features import FeatureVector
from operators.regime import RegimeLabel, RegimeState


class Direction(StrEnum):
    """Which way the edge points."""

    LONG = "LONG"
    SHORT = "SHORT"
    FLAT = "FLAT"


class Explain(StrEnum):
    """Stable machine codes explaining an edge (never renamed, only added to)."""

    REGIME_TRENDING = "REGIME_TRENDING"
    REGIME_MEAN_REVERTING = "REGIME_MEAN_REVERTING"
    REGIME_LIQUIDATION_RISK = "REGIME_LIQUIDATION_RISK"
    REGIME_CHAOTIC = "REGIME_CHAOTIC"
    REGIME_UNKNOWN = "REGIME_UNKNOWN"
    WARMING_UP = "WARMING_UP"
    NO_PRICE_INPUT = "NO_PRICE_INPUT"
    REGIME_NEW = "REGIME_NEW"
    REGIME_STABLE = "REGIME_STABLE"
    REGIME_CHANGE_PENDING = "REGIME_CHANGE_PENDING"
    MOMENTUM_UP = "MOMENTUM_UP"
    MOMENTUM_DOWN = "MOMENTUM_DOWN"
    FLOW_CONFIRMS = "FLOW_CONFIRMS"
    FLOW_CONTRADICTS = "FLOW_CONTRADICTS"
    PRICE_ABOVE_MEAN = "PRICE_ABOVE_MEAN"
    PRICE_BELOW_MEAN = "PRICE_BELOW_MEAN"
    PRICE_AT_MEAN = "PRICE_AT_MEAN"
    LIQUIDITY_GOOD = "LIQUIDITY_GOOD"
    LIQUIDITY_POOR = "LIQUIDITY_POOR"
    LIQUIDITY_UNKNOWN = "LIQUIDITY_UNKNOWN"
    VOL_EXPANSION = "VOL_EXPANSION"
    ONE_SIDED_FLOW = "ONE_SIDED_FLOW"
    SPREAD_BLOWOUT = "SPREAD_BLOWOUT"
    DEPTH_COLLAPSE = "DEPTH_COLLAPSE"
    OI_DROP = "OI_DROP"
    DEGRADED_INPUTS = "DEGRADED_INPUTS"
    STALE_INPUT = "STALE_INPUT"
    SCORE_BELOW_THRESHOLD = "SCORE_BELOW_THRESHOLD"


_STRESS_CODE = {
    "one_sided_flow": Explain.ONE_SIDED_FLOW,
    "spread_blowout": Explain.SPREAD_BLOWOUT,
    "depth_collapse": Explain.DEPTH_COLLAPSE,
    "oi_drop": Explain.OI_DROP,
}


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """Edge thresholds.

    Attributes:
        actionable_score: minimum score for ``actionable``.
        min_liquidity: minimum liquidity signal for ``actionable`` (when known).
        mr_min_z: |price z-score| a mean-reversion call needs.
        flow_veto: trade-flow imbalance against the trend direction that vetoes a trend call.
        good_liquidity: liquidity signal at or above which ``LIQUIDITY_GOOD`` is reported.
        stable_dwell: bars a regime must have held to be reported ``REGIME_STABLE``.
    """

    actionable_score: float = 0.55
    min_liquidity: float = 0.3
    mr_min_z: float = 1.0
    flow_veto: float = -0.2
    good_liquidity: float = 0.7
    stable_dwell: int = 5


@dataclass(frozen=True, slots=True)
class Signals:
    """The contract's three signals, each in [0, 1] or None when no input supports it."""

    momentum: float | None
    liquidity: float | None
    risk: float | None


@dataclass(frozen=True, slots=True)
class Edge:
    """Direction, score in [0, 1], actionable flag, explanation codes and horizon."""

    direction: Direction
    score: float
    actionable: bool
    explain: tuple[Explain, ...]
    horizon_ms: int | None


def _clamp(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def compute_signals(fv: FeatureVector, regime: RegimeState) -> Signals:
    """Momentum strength, liquidity and risk from one bar's features (DESIGN.md §Signals)."""
    mom = fv.get("momentum_bps")
    rv = fv.get("realized_vol_bps")
    momentum = None
    if mom is not None and rv is not None:
        momentum = math.tanh(abs(mom) / rv / 2.0) if rv > 0 else 0.0

    parts: list[float] = []
    spread_ratio = fv.get("spread_ratio")
    if spread_ratio is not None and spread_ratio > 0:
        parts.append(min(1.0, 1.0 / spread_ratio))
    depth_ratio = fv.get("depth_ratio")
    if depth_ratio is not None:
        parts.append(min(1.0, depth_ratio))
    if not parts:
        volume_ratio = fv.get("volume_ratio")
        if volume_ratio is not None:
            parts.append(min(1.0, volume_ratio))
    liquidity = min(parts) if parts else None

    risks: list[float] = []
    ver = fv.get("vol_expansion_ratio")
    if ver is not None:
        risks.append(1.0 - math.exp(-max(0.0, ver - 1.0)))
    if spread_ratio is not None:
        risks.append(1.0 - math.exp(-max(0.0, spread_ratio - 1.0) / 2.0))
    if depth_ratio is not None:
        risks.append(_clamp(1.0 - depth_ratio))
    tfi = fv.get("trade_flow_imbalance")
    if tfi is not None:
        risks.append(_clamp(2.0 * (abs(tfi) - 0.5)))
    oi_chg = fv.get("oi_change_pct")
    if oi_chg is not None:
        risks.append(_clamp(-oi_chg / 2.0))
    risk = max(risks) if risks else None
    if regime.label is RegimeLabel.LIQUIDATION_RISK:
        risk = max(0.8, risk or 0.0)
    return Signals(
        momentum=None if momentum is None else round(_clamp(momentum), 4),
        liquidity=None if liquidity is None else round(_clamp(liquidity), 4),
        risk=None if risk is None else round(_clamp(risk), 4),
    )


@dataclass(slots=True)
class EdgeScorer:
    """Stateless scorer (a class for its config and to mirror the other operators)."""

    config: EdgeConfig = field(default_factory=EdgeConfig)

    def score(self, fv: FeatureVector, regime: RegimeState, signals: Signals, stale: bool) -> Edge:
        """Score one bar (DESIGN.md §Edge)."""
        cfg = self.config
        why: list[Explain] = [Explain(f"REGIME_{regime.label.value}")]
        if fv.warming_up:
            why.append(Explain.WARMING_UP)
        if regime.rule.value == "no_price_input":
            why.append(Explain.NO_PRICE_INPUT)
        if regime.label is not RegimeLabel.UNKNOWN:
            why.append(
                Explain.REGIME_STABLE if regime.dwell >= cfg.stable_dwell else Explain.REGIME_NEW
            )
        if regime.candidate is not None:
            why.append(Explain.REGIME_CHANGE_PENDING)
        why.extend(_STRESS_CODE[s] for s in regime.stresses)
        ver = fv.get("vol_expansion_ratio")
        if ver is not None and ver >= 1.8:
            why.append(Explain.VOL_EXPANSION)
        if regime.inputs_missing and "quotes" in regime.inputs_missing:
            why.append(Explain.DEGRADED_INPUTS)
        liq = signals.liquidity
        if liq is None:
            why.append(Explain.LIQUIDITY_UNKNOWN)
        elif liq >= cfg.good_liquidity:
            why.append(Explain.LIQUIDITY_GOOD)
        elif liq < cfg.min_liquidity:
            why.append(Explain.LIQUIDITY_POOR)
        if stale:
            why.append(Explain.STALE_INPUT)

        direction = Direction.FLAT
        score = 0.0
        liq_term = 0.5 if liq is None else liq
        conf = regime.confidence
        mom = fv.get("momentum_bps")
        tfi = fv.get("trade_flow_imbalance")
        if regime.label is RegimeLabel.TRENDING and mom:
            sign = 1.0 if mom > 0 else -1.0
            why.append(Explain.MOMENTUM_UP if sign > 0 else Explain.MOMENTUM_DOWN)
            agree = 0.5 if tfi is None else (1.0 + tfi * sign) / 2.0
            if tfi is not None and tfi * sign < cfg.flow_veto:
                why.append(Explain.FLOW_CONTRADICTS)
            else:
                if tfi is not None and tfi * sign > 0:
                    why.append(Explain.FLOW_CONFIRMS)
                direction = Direction.LONG if sign > 0 else Direction.SHORT
                score = conf * (0.5 * (signals.momentum or 0.0) + 0.3 * agree + 0.2 * liq_term)
        elif regime.label is RegimeLabel.MEAN_REVERTING:
            z = fv.get("price_zscore")
            if z is not None and abs(z) >= cfg.mr_min_z:
                why.append(Explain.PRICE_ABOVE_MEAN if z > 0 else Explain.PRICE_BELOW_MEAN)
                direction = Direction.SHORT if z > 0 else Direction.LONG
                fade = 1.0 - (signals.momentum or 0.0)
                score = conf * (0.6 * min(1.0, abs(z) / 3.0) + 0.2 * fade + 0.2 * liq_term)
            else:
                why.append(Explain.PRICE_AT_MEAN)
        score = round(_clamp(score), 4)
        liquid_enough = liq is None or liq >= cfg.min_liquidity
        actionable = (
            direction is not Direction.FLAT
            and score >= cfg.actionable_score
            and not stale
            and not fv.warming_up
            and liquid_enough
        )
        if direction is not Direction.FLAT and score < cfg.actionable_score:
            why.append(Explain.SCORE_BELOW_THRESHOLD)
        return Edge(direction, score, actionable, tuple(dict.fromkeys(why)), fv.window_span_ms)
