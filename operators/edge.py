"""Signals (momentum, liquidity, risk in [0, 1]) and the edge: direction, score, costs, why.

Everything here is a pure function of one bar's features, its regime, its freshness and the
calibration table loaded once at import (`operators.calibration`), so it is deterministic on
replay. Formulas are in DESIGN.md §6; keep the two in step.

The edge in one paragraph: the regime and the features give a direction and a heuristic
``raw_score`` in [0, 1]. Where the calibration table (fitted on replays by ``tools.evaluate``)
shows *demonstrated* out-of-sample skill at the edge's horizon, it maps ``raw_score`` to
``p_right``, the probability that the direction is right, and ``score = p_right``; the expected
gross move is ``(2·p_right − 1) × E|R|`` with ``E|R| = √(2/π)·σ̂`` from the volatility forecast
at that horizon (else the table's mean |move|). Where skill is not demonstrated the edge says so:
``NO_DEMONSTRATED_SKILL``, ``p_right = None``, ``score = 0.5``, not actionable. The cost of acting
is the taker fee plus half the spread plus the slippage of walking the latest book for
``size_usd``; ``actionable`` needs a positive net expectation in a regime that allows trading,
fresh inputs, a finished warm-up and enough liquidity.

One module on purpose: signals, costs and score are one pass from a bar's features and regime to
the published call, in that order (DESIGN.md §6): the score reads the momentum and liquidity
signals, the costs decide ``actionable``, and one `Explain` vocabulary speaks for all three.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import msgspec

from connectors.codes import Explain
from operators.calibration import UNCALIBRATED, Calibration, load_committed
from operators.features import FeatureVector
from operators.forecast import Forecast, VolModel, forecast
from operators.interval import IntervalTracker
from operators.microstructure import walk_book
from operators.regime import VOL_MODEL, RegimeLabel, RegimeState, Rule
from operators.rounding import fround

CALIBRATION: Final[Calibration | None] = load_committed()
"""The committed calibration table (a run's ``HLSL_CALIBRATION`` comes through its settings)."""


class Direction(StrEnum):
    """Which way the edge points."""

    LONG = "LONG"
    SHORT = "SHORT"
    FLAT = "FLAT"


_STRESS_CODE = {
    "one_sided_flow": Explain.ONE_SIDED_FLOW,
    "spread_blowout": Explain.SPREAD_BLOWOUT,
    "depth_collapse": Explain.DEPTH_COLLAPSE,
    "oi_drop": Explain.OI_DROP,
}
_REGIME_CODE = {label: Explain(f"REGIME_{label.value}") for label in RegimeLabel}
_TRADABLE: Final = frozenset({RegimeLabel.TRENDING, RegimeLabel.MEAN_REVERTING})


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        msg = f"{name} must be a number, got {raw!r}"
        raise ValueError(msg) from None
    if not math.isfinite(value) or value < 0:
        msg = f"{name} must be a finite number >= 0, got {raw!r}"
        raise ValueError(msg)
    return value


def default_taker_fee_bps() -> float:
    """``HLSL_TAKER_FEE_BPS``, else Hyperliquid's base taker fee 0.045 % = 4.5 bps."""
    return _env_float("HLSL_TAKER_FEE_BPS", 4.5)


def default_size_usd() -> float:
    """``HLSL_EDGE_SIZE_USD``, else 10,000 USD: the notional the slippage is measured for."""
    return _env_float("HLSL_EDGE_SIZE_USD", 10_000.0)


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """Edge thresholds, costs and horizon.

    Attributes:
        min_liquidity: minimum liquidity signal for ``actionable`` (when known).
        mr_min_z: |price z-score| a mean-reversion call needs.
        flow_veto: trade-flow imbalance against the trend direction that vetoes a trend call.
        good_liquidity: liquidity signal at or above which ``LIQUIDITY_GOOD`` is reported.
        stable_dwell: bars a regime must have held to be reported ``REGIME_STABLE``.
        taker_fee_bps: taker fee per fill, bps (``HLSL_TAKER_FEE_BPS``, default 4.5).
        size_usd: notional the book is walked for (``HLSL_EDGE_SIZE_USD``, default 10,000).
        horizon_ms: the edge's horizon; None: the calibration table's default (60 s without).
        horizon_min_obs: the horizon is at least this many observation intervals (coarse bars).
    """

    min_liquidity: float = 0.3
    mr_min_z: float = 1.0
    flow_veto: float = -0.2
    good_liquidity: float = 0.7
    stable_dwell: int = 5
    taker_fee_bps: float = field(default_factory=default_taker_fee_bps)
    size_usd: float = field(default_factory=default_size_usd)
    horizon_ms: int | None = None
    horizon_min_obs: int = 5

    def __post_init__(self) -> None:
        if self.taker_fee_bps < 0 or self.size_usd <= 0:
            msg = "taker_fee_bps must be >= 0 and size_usd > 0"
            raise ValueError(msg)
        if self.horizon_ms is not None and self.horizon_ms <= 0:
            msg = "horizon_ms must be positive"
            raise ValueError(msg)


class Signals(msgspec.Struct, frozen=True):
    """The contract's three signals, each in [0, 1] or None when no input supports it."""

    momentum: float | None
    liquidity: float | None
    risk: float | None


class Edge(msgspec.Struct, frozen=True):
    """Direction, calibrated score, costs, actionable flag, explanation codes and horizon."""

    direction: Direction
    score: float
    actionable: bool
    explain: tuple[Explain, ...]
    horizon_ms: int | None
    raw_score: float = 0.0
    p_right: float | None = None
    calibration: str = UNCALIBRATED
    expected_move_bps: float | None = None
    cost_bps: float | None = None
    net_edge_bps: float | None = None
    size_usd: float = 10_000.0
    fee_bps: float = 4.5
    half_spread_bps: float | None = None
    slippage_bps: float | None = None
    forecast: Forecast | None = None
    """The volatility forecast over ``horizon_ms`` (None: no model or too few returns)."""


NO_SKILL_SCORE: Final = 0.5
"""``score`` of a call without demonstrated skill: no better than a coin flip, said plainly."""


def risk_from_ratio(rho: float) -> float:
    """``signals.risk`` from the forecast risk ratio ρ: ``1 − 2^(−ρ)`` (0.5 at the coin's norm,
    0.75 at twice it; monotone, in [0, 1))."""
    return 1.0 - math.pow(2.0, -max(0.0, rho))


def _clamp(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def compute_signals(fv: FeatureVector, regime: RegimeState) -> Signals:
    """Momentum strength, liquidity and risk from one bar's features (DESIGN.md §6 Signals)."""
    values = fv.values
    mz = values.get("momentum_z")
    momentum = None if mz is None else math.tanh(abs(mz) / 2.0)

    liquidity: float | None = None
    spread_ratio = values.get("spread_ratio")
    if spread_ratio is not None and spread_ratio > 0:
        liquidity = min(1.0, 1.0 / spread_ratio)
    depth_ratio = values.get("depth_ratio")
    if depth_ratio is not None:
        d = min(1.0, depth_ratio)
        liquidity = d if liquidity is None or d < liquidity else liquidity
    if liquidity is None:
        volume_ratio = values.get("volume_ratio")
        if volume_ratio is not None:
            liquidity = min(1.0, volume_ratio)

    risk: float | None = None
    ver = values.get("vol_expansion_ratio")
    if regime.risk_ratio is not None:
        risk = risk_from_ratio(regime.risk_ratio)
        if regime.label is RegimeLabel.LIQUIDATION_RISK:
            risk = max(0.8, risk)
        return Signals(
            momentum=None if momentum is None else fround(_clamp(momentum), 4),
            liquidity=None if liquidity is None else fround(_clamp(liquidity), 4),
            risk=fround(_clamp(risk), 4),
        )
    if ver is not None:
        risk = 1.0 - math.exp(-max(0.0, ver - 1.0))
    if spread_ratio is not None:
        risk = max(risk or 0.0, 1.0 - math.exp(-max(0.0, spread_ratio - 1.0) / 2.0))
    if depth_ratio is not None:
        risk = max(risk or 0.0, _clamp(1.0 - depth_ratio))
    tfi = values.get("trade_flow_imbalance")
    if tfi is not None:
        risk = max(risk or 0.0, _clamp(2.0 * (abs(tfi) - 0.5)))
    burst = values.get("trade_rate_burst")
    if burst is not None:
        risk = max(risk or 0.0, 1.0 - math.exp(-max(0.0, burst - 1.0) / 3.0))
    oi_chg = values.get("oi_change_pct")
    if oi_chg is not None:
        risk = max(risk or 0.0, _clamp(-oi_chg / 2.0))
    if regime.label is RegimeLabel.LIQUIDATION_RISK:
        risk = max(0.8, risk or 0.0)
    return Signals(
        momentum=None if momentum is None else fround(_clamp(momentum), 4),
        liquidity=None if liquidity is None else fround(_clamp(liquidity), 4),
        risk=None if risk is None else fround(_clamp(risk), 4),
    )


def slippage_bps(fv: FeatureVector, direction: Direction, size_usd: float) -> float | None:
    """Slippage beyond the touch of a taker order for ``size_usd``, bps of mid (None: too thin).

    Buying walks the asks: ``1e4·(VWAP_fill − best ask)/M``; selling walks the bids:
    ``1e4·(best bid − VWAP_fill)/M``, with ``M`` the book's mid. 0 when the touch holds it all.
    """
    book = fv.book
    if book is None or direction is Direction.FLAT:
        return None
    bid_px = book.bid_px
    ask_px = book.ask_px
    mid = (bid_px[0] + ask_px[0]) / 2.0
    if not 0.0 < mid < math.inf:  # only from a bad wire value
        return None
    if direction is Direction.LONG:
        fill = walk_book(ask_px, book.ask_sz, size_usd)
        return None if fill is None else max(0.0, 1e4 * (fill - ask_px[0]) / mid)
    fill = walk_book(bid_px, book.bid_sz, size_usd)
    return None if fill is None else max(0.0, 1e4 * (bid_px[0] - fill) / mid)


def failed_edge(
    label: RegimeLabel,
    horizon_ms: int | None,
    calibration: str,
    size_usd: float,
    fee_bps: float,
    forecast: Forecast | None = None,
) -> Edge:
    """A bar whose computation failed: FLAT, score 0, not actionable, ``STEP_ERROR`` first."""
    return Edge(
        Direction.FLAT,
        0.0,
        False,
        (Explain.STEP_ERROR, _REGIME_CODE[label]),
        horizon_ms,
        calibration=calibration,
        size_usd=size_usd,
        fee_bps=fee_bps,
        forecast=forecast,
    )


def sane_quote(mid_px: float | None, spread_bps: float | None) -> bool:
    """Whether a mid and spread come from a sane quote: 0 < bid < ask, both finite.

    With ``M`` the mid and ``s`` the spread in bps, ``bid = M·(1 − s/2e4)`` and
    ``ask = M·(1 + s/2e4)``: sane iff ``0 < M < inf`` and ``0 < s < 2e4``.
    """
    return (
        mid_px is not None
        and spread_bps is not None
        and 0.0 < mid_px < math.inf
        and 0.0 < spread_bps < 2e4
    )


@dataclass(slots=True)
class EdgeScorer:
    """Stateless scorer (a class for its config and calibration table)."""

    config: EdgeConfig = field(default_factory=EdgeConfig)
    calibration: Calibration | None = field(default_factory=lambda: CALIBRATION)
    vol_model: VolModel | None = field(default_factory=lambda: VOL_MODEL)

    def forecast_at(
        self, regime: RegimeState, horizon_ms: int, tracker: IntervalTracker | None = None
    ) -> Forecast | None:
        """The volatility forecast over ``horizon_ms`` from the regime's volatility state, its
        interval at the coin's adapted levels (`operators.interval`; none: the fitted ones)."""
        snap = regime.vol
        model = self.vol_model
        if snap is None or model is None:
            return None
        levels = None if tracker is None else tracker.level(horizon_ms)
        return forecast(model, snap, horizon_ms, levels)

    def horizon(self, fv: FeatureVector) -> tuple[int, str, float | None]:
        """``(horizon_ms, calibration version or "uncalibrated", mean |move| bps or None)``.

        The horizon is the configured one (else the table's default, else 60 s), raised to
        ``horizon_min_obs`` observation intervals for coarse bars, then snapped up to the
        shortest calibrated horizon at least that long (uncalibrated when there is none).
        """
        cfg = self.config
        cal = self.calibration
        base = cfg.horizon_ms or (cal.default_horizon_ms if cal is not None else 60_000)
        span = fv.window_span_ms
        n = fv.window_obs
        if span is not None and n >= 2:
            base = max(base, math.ceil(cfg.horizon_min_obs * span / (n - 1)))
        if cal is None:
            return base, UNCALIBRATED, None
        hc = cal.horizon_for(base)
        if hc is None:
            return base, UNCALIBRATED, None
        return hc.horizon_ms, cal.version, hc.mean_abs_move(fv.coin)

    def failed(self, fv: FeatureVector, regime: RegimeState) -> Edge:
        """The edge of a bar whose computation failed: FLAT, not actionable, ``STEP_ERROR``."""
        try:
            horizon_ms: int | None
            horizon_ms, version, _ = self.horizon(fv)
        except Exception:  # the fallback must not fail in turn
            horizon_ms, version = None, UNCALIBRATED
        return failed_edge(
            regime.label, horizon_ms, version, self.config.size_usd, self.config.taker_fee_bps
        )

    def _no_call(
        self, why: list[Explain], horizon_ms: int, version: str, raw: float, fc: Forecast | None
    ) -> Edge:
        cfg = self.config
        return Edge(
            Direction.FLAT,
            0.0,
            False,
            tuple(dict.fromkeys(why)),
            horizon_ms,
            raw_score=raw,
            calibration=version,
            size_usd=cfg.size_usd,
            fee_bps=cfg.taker_fee_bps,
            forecast=fc,
        )

    def score(
        self,
        fv: FeatureVector,
        regime: RegimeState,
        signals: Signals,
        stale: bool,
        tracker: IntervalTracker | None = None,
    ) -> Edge:
        """Score one bar (DESIGN.md §6 Edge); ``tracker``: the coin's interval levels."""
        cfg = self.config
        values = fv.values
        label = regime.label
        why: list[Explain] = [_REGIME_CODE[label]]
        warming = fv.warming_up
        if warming:
            why.append(Explain.WARMING_UP)
        if regime.rule.value == "no_price_input":
            why.append(Explain.NO_PRICE_INPUT)
        if label is not RegimeLabel.UNKNOWN:
            why.append(
                Explain.REGIME_STABLE if regime.dwell >= cfg.stable_dwell else Explain.REGIME_NEW
            )
        if regime.candidate is not None:
            why.append(Explain.REGIME_CHANGE_PENDING)
        if regime.rule is Rule.NO_RULE_FIRED:
            why.append(Explain.NO_RULE_FIRED)
        if regime.rule is Rule.VOL_STATE:
            why.append(Explain.VOL_FORECAST_HIGH)
        why.extend(_STRESS_CODE[s] for s in regime.stresses)
        ver = values.get("vol_expansion_ratio")
        if ver is not None and ver >= 1.8:
            why.append(Explain.VOL_EXPANSION)
        if "quotes" in regime.inputs_missing:
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

        if regime.stale:
            why.append(Explain.NO_NEW_DATA)
            horizon_ms, version, _ = self.horizon(fv)
            return self._no_call(
                why, horizon_ms, version, 0.0, self.forecast_at(regime, horizon_ms, tracker)
            )

        direction = Direction.FLAT
        raw = 0.0
        liq_term = 0.5 if liq is None else liq
        conf = regime.confidence
        mom = values.get("momentum_bps")
        tfi = values.get("trade_flow_imbalance")
        if label is RegimeLabel.TRENDING and mom:
            sign = 1.0 if mom > 0 else -1.0
            why.append(Explain.MOMENTUM_UP if sign > 0 else Explain.MOMENTUM_DOWN)
            agree = 0.5 if tfi is None else (1.0 + tfi * sign) / 2.0
            if tfi is not None and tfi * sign < cfg.flow_veto:
                why.append(Explain.FLOW_CONTRADICTS)
            else:
                if tfi is not None and tfi * sign > 0:
                    why.append(Explain.FLOW_CONFIRMS)
                ofi = values.get("ofi_norm")
                if ofi is not None and ofi != 0.0:
                    why.append(
                        Explain.ORDER_FLOW_CONFIRMS
                        if ofi * sign > 0
                        else Explain.ORDER_FLOW_CONTRADICTS
                    )
                direction = Direction.LONG if sign > 0 else Direction.SHORT
                raw = conf * (0.5 * (signals.momentum or 0.0) + 0.3 * agree + 0.2 * liq_term)
        elif label is RegimeLabel.MEAN_REVERTING:
            z = values.get("price_zscore")
            if z is not None and abs(z) >= cfg.mr_min_z:
                why.append(Explain.PRICE_ABOVE_MEAN if z > 0 else Explain.PRICE_BELOW_MEAN)
                direction = Direction.SHORT if z > 0 else Direction.LONG
                fade = 1.0 - (signals.momentum or 0.0)
                raw = conf * (0.6 * min(1.0, abs(z) / 3.0) + 0.2 * fade + 0.2 * liq_term)
            else:
                why.append(Explain.PRICE_AT_MEAN)
        raw = fround(_clamp(raw), 4)

        horizon_ms, version, move = self.horizon(fv)
        fee = cfg.taker_fee_bps
        fc = self.forecast_at(regime, horizon_ms, tracker)
        if direction is Direction.FLAT:
            return self._no_call(why, horizon_ms, version, raw, fc)

        p_right: float | None = None
        expected: float | None = None
        skilled = False
        if move is not None and self.calibration is not None:
            hc = self.calibration.horizons[horizon_ms]
            if hc.skill:
                skilled = True
                p_right = fround(hc.p_right(raw), 4)
                # E|R| of the forecast: √(2/π)·σ̂ for a normal move (else the table's mean |R|)
                size = move if fc is None else math.sqrt(2.0 / math.pi) * fc.vol_bps
                expected = fround((2.0 * p_right - 1.0) * size, 4)
                score = p_right
            else:
                why.append(Explain.NO_DEMONSTRATED_SKILL)
                score = NO_SKILL_SCORE
        else:
            why.append(Explain.UNCALIBRATED)
            score = raw
        spread = values.get("spread_bps")
        # A half-spread cost needs a sane quote: 0 < bid < ask, finite (else the cost is unknown).
        sane = spread is not None and sane_quote(values.get("mid_px"), spread)
        half = fround(spread / 2.0, 4) if sane and spread is not None else None
        slip = slippage_bps(fv, direction, cfg.size_usd)
        if slip is not None:
            slip = fround(slip, 4)
        elif fv.book is not None:
            why.append(Explain.BOOK_TOO_THIN)
        cost = None if half is None or slip is None else fround(fee + half + slip, 4)
        net = None if cost is None or expected is None else fround(expected - cost, 4)
        costed = cost is not None and cost > 0.0  # a cost of 0 is no measurement
        if not costed:
            why.append(Explain.COST_UNKNOWN)
        elif net is not None:
            why.append(Explain.NET_EDGE_POSITIVE if net > 0 else Explain.COSTS_EXCEED_EDGE)
        tradable = label in _TRADABLE
        if not tradable:  # pragma: no cover - only tradable regimes give a direction today
            why.append(Explain.REGIME_NOT_TRADABLE)
        actionable = (
            skilled
            and costed
            and net is not None
            and net > 0
            and tradable
            and not stale
            and not warming
            and (liq is None or liq >= cfg.min_liquidity)
        )
        return Edge(
            direction,
            score,
            actionable,
            tuple(dict.fromkeys(why)),
            horizon_ms,
            raw_score=raw,
            p_right=p_right,
            calibration=version,
            expected_move_bps=expected,
            cost_bps=cost,
            net_edge_bps=net,
            size_usd=cfg.size_usd,
            fee_bps=fee,
            half_spread_bps=half,
            slippage_bps=slip,
            forecast=fc,
        )
