"""Regime classification with hysteresis, one classifier per coin.

The rules read only scale-free features (efficiency ratio, volatility expansion, flow imbalance,
spread and depth relative to the coin's own history, open-interest change), so one rule set works
for BTC and a thin alt, and on 1-second bars or 5-minute candles. Priority, thresholds, hysteresis
and confidence are documented in DESIGN.md §Regime; keep the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from connectors.events import Stream
from operators.features import FeatureVector


class RegimeLabel(StrEnum):
    """The five regime labels (stable: never renamed, only added to)."""

    TRENDING = "TRENDING"
    MEAN_REVERTING = "MEAN_REVERTING"
    LIQUIDATION_RISK = "LIQUIDATION_RISK"
    CHAOTIC = "CHAOTIC"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class RegimeConfig:
    """Thresholds (all on scale-free features) and hysteresis.

    Attributes:
        trend_enter_er / trend_exit_er: efficiency ratio to enter / stay TRENDING.
        mr_enter_er / mr_exit_er: efficiency ratio to enter / stay MEAN_REVERTING.
        chaos_enter_ver / chaos_exit_ver: volatility expansion ratio to enter / stay CHAOTIC
            (with a directionless path, efficiency ratio below ``chaos_max_er``).
        liq_ver: volatility expansion ratio that makes a cascade possible.
        liq_er: efficiency ratio of the move (a cascade is one-way).
        liq_flow: |trade-flow imbalance| in the direction of the move.
        liq_spread_ratio: spread relative to its median that counts as a blow-out.
        liq_depth_ratio: depth within the band relative to its median that counts as collapse.
        liq_oi_drop_pct: open-interest drop over the window (percent, positive number).
        liq_ver_alone: volatility expansion that suffices when no stress input exists at all.
        confirm: consecutive evaluations a new label must hold before it replaces the current.
        min_dwell: evaluations a label is kept at least (LIQUIDATION_RISK enters at once).
        liq_exit_confirm: consecutive non-cascade evaluations before LIQUIDATION_RISK is left.
    """

    trend_enter_er: float = 0.40
    trend_exit_er: float = 0.25
    mr_enter_er: float = 0.15
    mr_exit_er: float = 0.30
    chaos_enter_ver: float = 1.8
    chaos_exit_ver: float = 1.4
    chaos_max_er: float = 0.30
    liq_ver: float = 2.0
    liq_er: float = 0.35
    liq_flow: float = 0.6
    liq_spread_ratio: float = 3.0
    liq_depth_ratio: float = 0.4
    liq_oi_drop_pct: float = 1.0
    liq_ver_alone: float = 3.0
    confirm: int = 3
    min_dwell: int = 5
    liq_exit_confirm: int = 10


class Rule(StrEnum):
    """Which rule produced the raw (pre-hysteresis) label."""

    WARMING_UP = "warming_up"
    NO_PRICE = "no_price_input"
    CASCADE = "cascade"
    CHAOS = "vol_expansion_without_direction"
    TREND = "efficient_path"
    MEAN_REVERSION = "inefficient_path"
    HOLD = "between_thresholds"


@dataclass(frozen=True, slots=True)
class RawCall:
    """One evaluation before hysteresis: label, rule, margin in [0, 1], inputs used."""

    label: RegimeLabel
    rule: Rule
    margin: float
    stresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RegimeState:
    """The regime as published for one bar."""

    label: RegimeLabel
    confidence: float
    since_ms: int
    previous: RegimeLabel | None
    candidate: RegimeLabel | None
    candidate_count: int
    dwell: int
    rule: Rule
    margin: float
    stresses: tuple[str, ...]
    inputs_used: tuple[str, ...]
    inputs_missing: tuple[str, ...]


_INPUT_STREAMS: Final = (
    ("quotes", frozenset({Stream.BBO, Stream.L2BOOK, Stream.ALL_MIDS})),
    ("book", frozenset({Stream.L2BOOK})),
    ("trades", frozenset({Stream.TRADES})),
    ("candles", frozenset({Stream.CANDLE})),
    ("asset_ctx", frozenset({Stream.ACTIVE_ASSET_CTX})),
)


def _clamp(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo if x < lo else hi if x > hi else x


def inputs_of(fv: FeatureVector) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Which kinds of input the coin has had so far, and which it lacks."""
    have = fv.streams.keys()
    used: list[str] = []
    lacking: list[str] = []
    for name, streams in _INPUT_STREAMS:
        (used if have & streams else lacking).append(name)
    return tuple(used), tuple(lacking)


def raw_call(fv: FeatureVector, cfg: RegimeConfig, current: RegimeLabel) -> RawCall:
    """Apply the priority-ordered rules to one feature vector (``current`` sets the bands)."""
    if fv.observations == 0 or (fv.values.get("mid_px") is None and fv.price_source is None):
        return RawCall(RegimeLabel.UNKNOWN, Rule.NO_PRICE, 0.0)
    if fv.warming_up:
        return RawCall(RegimeLabel.UNKNOWN, Rule.WARMING_UP, 0.0)
    er = fv.get("efficiency_ratio")
    ver = fv.get("vol_expansion_ratio")
    mom = fv.get("momentum_bps")
    if er is None:
        return RawCall(RegimeLabel.UNKNOWN, Rule.WARMING_UP, 0.0)

    # 1. Liquidation risk: a one-way volatility shock with market stress.
    if ver is not None and ver >= cfg.liq_ver and er >= cfg.liq_er and mom:
        sign = 1.0 if mom > 0 else -1.0
        stresses: list[str] = []
        available = 0
        tfi = fv.get("trade_flow_imbalance")
        if tfi is not None:
            available += 1
            if tfi * sign >= cfg.liq_flow:
                stresses.append("one_sided_flow")
        spread_ratio = fv.get("spread_ratio")
        if spread_ratio is not None:
            available += 1
            if spread_ratio >= cfg.liq_spread_ratio:
                stresses.append("spread_blowout")
        depth_ratio = fv.get("depth_ratio")
        if depth_ratio is not None:
            available += 1
            if depth_ratio <= cfg.liq_depth_ratio:
                stresses.append("depth_collapse")
        oi_chg = fv.get("oi_change_pct")
        if oi_chg is not None:
            available += 1
            if oi_chg <= -cfg.liq_oi_drop_pct:
                stresses.append("oi_drop")
        if stresses or (available == 0 and ver >= cfg.liq_ver_alone):
            margin = (
                len(stresses) / available
                if available
                else _clamp((ver - cfg.liq_ver) / cfg.liq_ver)
            )
            return RawCall(RegimeLabel.LIQUIDATION_RISK, Rule.CASCADE, margin, tuple(stresses))

    # 2. Chaos: volatility expands but goes nowhere.
    chaos_ver = cfg.chaos_exit_ver if current is RegimeLabel.CHAOTIC else cfg.chaos_enter_ver
    if ver is not None and ver >= chaos_ver and er < cfg.chaos_max_er:
        margin = _clamp((ver - chaos_ver) / chaos_ver)
        return RawCall(RegimeLabel.CHAOTIC, Rule.CHAOS, margin)

    # 3. Trend vs mean reversion, with enter/exit bands.
    trend_er = cfg.trend_exit_er if current is RegimeLabel.TRENDING else cfg.trend_enter_er
    if er >= trend_er:
        return RawCall(RegimeLabel.TRENDING, Rule.TREND, _clamp((er - trend_er) / (1.0 - trend_er)))
    mr_er = cfg.mr_exit_er if current is RegimeLabel.MEAN_REVERTING else cfg.mr_enter_er
    if er <= mr_er:
        return RawCall(
            RegimeLabel.MEAN_REVERTING, Rule.MEAN_REVERSION, _clamp((mr_er - er) / mr_er)
        )
    # Past the current label's exit threshold without reaching the other's entry: the current
    # label has ended, so the call is the other side, with no margin.
    if current is RegimeLabel.TRENDING:
        return RawCall(RegimeLabel.MEAN_REVERTING, Rule.HOLD, 0.0)
    if current is RegimeLabel.MEAN_REVERTING:
        return RawCall(RegimeLabel.TRENDING, Rule.HOLD, 0.0)
    # Between the bands with no trend/mean-reversion label to leave: the nearer side, no margin.
    mid = (cfg.trend_enter_er + cfg.mr_enter_er) / 2
    label = RegimeLabel.TRENDING if er >= mid else RegimeLabel.MEAN_REVERTING
    return RawCall(label, Rule.HOLD, 0.0)


@dataclass(slots=True)
class RegimeClassifier:
    """Per-coin classifier state: the published label, its age, and a pending candidate."""

    config: RegimeConfig = field(default_factory=RegimeConfig)
    label: RegimeLabel = RegimeLabel.UNKNOWN
    since_ms: int | None = None
    previous: RegimeLabel | None = None
    dwell: int = 0
    candidate: RegimeLabel | None = None
    candidate_count: int = 0
    off_cascade: int = 0

    def update(self, fv: FeatureVector) -> RegimeState:
        """Classify one bar's features; applies confirmation, dwell and cascade stickiness."""
        cfg = self.config
        call = raw_call(fv, cfg, self.label)
        if self.since_ms is None:
            self.since_ms = fv.close_ms
        new = call.label
        switch = False
        if new is self.label:
            self.candidate, self.candidate_count = None, 0
            self.off_cascade = 0
        elif new is RegimeLabel.UNKNOWN:
            # No usable input: say so at once rather than keep a stale label.
            switch = call.rule is Rule.NO_PRICE or self.label is RegimeLabel.UNKNOWN
        elif new is RegimeLabel.LIQUIDATION_RISK:
            switch = True  # a cascade is announced immediately
        elif self.label is RegimeLabel.UNKNOWN:
            switch = True  # first label after warm-up
        else:
            if new is self.candidate:
                self.candidate_count += 1
            else:
                self.candidate, self.candidate_count = new, 1
            if self.label is RegimeLabel.LIQUIDATION_RISK:
                self.off_cascade += 1
                switch = self.off_cascade >= cfg.liq_exit_confirm
            else:
                switch = self.candidate_count >= cfg.confirm and self.dwell >= cfg.min_dwell
        if switch:
            self.previous = self.label
            self.label = new
            self.since_ms = fv.close_ms
            self.dwell = 0
            self.candidate, self.candidate_count = None, 0
            self.off_cascade = 0
        self.dwell += 1
        used, lacking = inputs_of(fv)
        return RegimeState(
            label=self.label,
            confidence=self._confidence(call, fv, used),
            since_ms=self.since_ms,
            previous=self.previous,
            candidate=self.candidate,
            candidate_count=self.candidate_count,
            dwell=self.dwell,
            rule=call.rule if call.label is self.label else Rule.HOLD,
            margin=call.margin if call.label is self.label else 0.0,
            stresses=call.stresses if call.label is self.label else (),
            inputs_used=used,
            inputs_missing=lacking,
        )

    def _confidence(self, call: RawCall, fv: FeatureVector, used: tuple[str, ...]) -> float:
        """margin × input quality × stability, in [0, 1] (DESIGN.md §Regime confidence)."""
        if self.label is RegimeLabel.UNKNOWN:
            return 0.0
        margin = call.margin if call.label is self.label else 0.0
        base = 0.5 + 0.5 * margin
        quality = 0.4 + 0.6 * len(used) / len(_INPUT_STREAMS)
        stability = min(1.0, self.dwell / max(1, self.config.min_dwell))
        pending = 0.8 if self.candidate is not None else 1.0
        return round(_clamp(base * quality * (0.7 + 0.3 * stability) * pending), 4)
