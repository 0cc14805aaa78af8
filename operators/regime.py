"""Regime classification with hysteresis, one classifier per coin.

The rules read only features normalised against the coin's own history or scale-free by
construction (efficiency ratio, variance ratio, volatility expansion, trade-flow imbalance,
trade-rate burst, spread and depth relative to their rolling medians, open-interest change), so one
rule set works for BTC and a thin alt, and on 1-second bars or 5-minute candles. Priority,
thresholds, hysteresis and confidence are documented in DESIGN.md §5; keep the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from connectors.events import Stream
from operators.failures import UNIT, RangeError
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
    """Thresholds (all on normalised features) and hysteresis.

    Attributes:
        trend_enter_er / trend_exit_er: efficiency ratio to enter / stay TRENDING.
        trend_enter_z / trend_exit_z: |momentum z| (the move in units of its noise) to enter /
            stay TRENDING (when known): an efficient path of a few ticks is no trend.
        mr_enter_er / mr_exit_er: efficiency ratio to enter / stay MEAN_REVERTING.
        mr_enter_vr / mr_exit_vr: variance ratio to enter / stay MEAN_REVERTING (when known).
        chaos_enter_ver / chaos_exit_ver: volatility expansion ratio to enter / stay CHAOTIC
            (with a directionless path, efficiency ratio below ``chaos_max_er``).
        liq_ver: volatility expansion ratio that makes a cascade possible.
        liq_er: efficiency ratio of the move (a cascade is one-way).
        liq_z: |momentum z| of the move (a shock is large against the noise; when known).
        liq_flow: trade-flow imbalance in the direction of the move (one-sided flow).
        liq_burst: trade-rate burst that makes one-sided flow aggressive (when known).
        liq_spread_ratio: spread relative to its median that counts as a blow-out.
        liq_depth_ratio: depth within the band relative to its median that counts as collapse.
        liq_oi_drop_pct: open-interest drop over the window (percent, positive number).
        liq_min_groups: stress groups (aggressive flow; liquidity withdrawal; deleveraging) that
            must hold, or all the available ones when fewer are available; one group suffices
            once the volatility expansion reaches ``liq_ver_alone``.
        liq_ver_alone: volatility expansion that suffices with one stress group, or with none
            when no stress input exists at all.
        confirm: consecutive evaluations a new label must hold before it replaces the current.
        min_dwell: evaluations a label is kept at least (LIQUIDATION_RISK enters at once).
        liq_exit_confirm: consecutive non-cascade evaluations before LIQUIDATION_RISK is left.
    """

    trend_enter_er: float = 0.40
    trend_exit_er: float = 0.25
    trend_enter_z: float = 2.0
    trend_exit_z: float = 1.0
    mr_enter_er: float = 0.15
    mr_exit_er: float = 0.30
    mr_enter_vr: float = 0.85
    mr_exit_vr: float = 1.0
    chaos_enter_ver: float = 1.8
    chaos_exit_ver: float = 1.4
    chaos_max_er: float = 0.30
    liq_ver: float = 2.0
    liq_er: float = 0.35
    liq_z: float = 3.0
    liq_flow: float = 0.6
    liq_burst: float = 1.5
    liq_spread_ratio: float = 3.0
    liq_depth_ratio: float = 0.4
    liq_oi_drop_pct: float = 1.0
    liq_min_groups: int = 2
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
    STEP_ERROR = "step_error"
    """No call could be made for the bar (a step failed) and there was no earlier one to hold."""


@dataclass(frozen=True, slots=True)
class RawCall:
    """One evaluation before hysteresis: label, rule, margin in [0, 1], stresses met."""

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
    n_inputs: int = 0
    """Decision features (`DECISION_INPUTS`) that had a value this bar."""


_INPUT_STREAMS: Final = (
    ("quotes", frozenset({Stream.BBO, Stream.L2BOOK, Stream.ALL_MIDS})),
    ("book", frozenset({Stream.L2BOOK})),
    ("trades", frozenset({Stream.TRADES})),
    ("candles", frozenset({Stream.CANDLE})),
    ("asset_ctx", frozenset({Stream.ACTIVE_ASSET_CTX})),
)

DECISION_INPUTS: Final[tuple[str, ...]] = (
    "efficiency_ratio",
    "momentum_z",
    "vol_expansion_ratio",
    "variance_ratio",
    "trade_flow_imbalance",
    "trade_rate_burst",
    "spread_ratio",
    "depth_ratio",
    "oi_change_pct",
)
"""The normalised features the rules read (their availability sets the input quality)."""


def check_regime(rs: RegimeState) -> None:
    """Raise `RangeError` if a published number of the regime is outside its range."""
    for where, v in (("regime.confidence", rs.confidence), ("regime.margin", rs.margin)):
        if not 0.0 <= v <= 1.0:
            raise RangeError(where, v, UNIT)


def _clamp(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo if x < lo else hi if x > hi else x


_INPUTS_CACHE: dict[frozenset[Stream], tuple[tuple[str, ...], tuple[str, ...]]] = {}


def inputs_of(fv: FeatureVector) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Which kinds of input the coin has had so far, and which it lacks."""
    have = frozenset(fv.streams)
    out = _INPUTS_CACHE.get(have)
    if out is None:  # at most 2^6 stream sets
        used: list[str] = []
        lacking: list[str] = []
        for name, streams in _INPUT_STREAMS:
            (used if have & streams else lacking).append(name)
        out = _INPUTS_CACHE[have] = (tuple(used), tuple(lacking))
    return out


def n_inputs(fv: FeatureVector) -> int:
    """How many of `DECISION_INPUTS` have a value in ``fv``."""
    values = fv.values
    return sum(1 for n in DECISION_INPUTS if values.get(n) is not None)


def _cascade(fv: FeatureVector, cfg: RegimeConfig, ver: float, mom: float) -> RawCall | None:
    """The cascade rule's stress groups, given a one-way volatility shock (DESIGN.md §5)."""
    sign = 1.0 if mom > 0 else -1.0
    stresses: list[str] = []
    available = 0  # individual stress conditions with an input
    groups = 0  # stress groups with an input
    met = 0  # stress groups that held
    tfi = fv.get("trade_flow_imbalance")
    if tfi is not None:
        available += 1
        groups += 1
        burst = fv.get("trade_rate_burst")
        if tfi * sign >= cfg.liq_flow and (burst is None or burst >= cfg.liq_burst):
            stresses.append("one_sided_flow")
            met += 1
    spread_ratio = fv.get("spread_ratio")
    depth_ratio = fv.get("depth_ratio")
    if spread_ratio is not None or depth_ratio is not None:
        groups += 1
        liquidity = False
        if spread_ratio is not None:
            available += 1
            if spread_ratio >= cfg.liq_spread_ratio:
                stresses.append("spread_blowout")
                liquidity = True
        if depth_ratio is not None:
            available += 1
            if depth_ratio <= cfg.liq_depth_ratio:
                stresses.append("depth_collapse")
                liquidity = True
        met += liquidity
    oi_chg = fv.get("oi_change_pct")
    if oi_chg is not None:
        available += 1
        groups += 1
        if oi_chg <= -cfg.liq_oi_drop_pct:
            stresses.append("oi_drop")
            met += 1
    if groups == 0:
        if ver >= cfg.liq_ver_alone:
            margin = _clamp((ver - cfg.liq_ver) / cfg.liq_ver)
            return RawCall(RegimeLabel.LIQUIDATION_RISK, Rule.CASCADE, margin)
        return None
    need = 1 if ver >= cfg.liq_ver_alone else max(1, min(cfg.liq_min_groups, groups))
    if met >= need:
        margin = len(stresses) / available
        return RawCall(RegimeLabel.LIQUIDATION_RISK, Rule.CASCADE, margin, tuple(stresses))
    return None


def raw_call(fv: FeatureVector, cfg: RegimeConfig, current: RegimeLabel) -> RawCall:
    """Apply the priority-ordered rules to one feature vector (``current`` sets the bands)."""
    if fv.observations == 0 or (fv.values.get("mid_px") is None and fv.price_source is None):
        return RawCall(RegimeLabel.UNKNOWN, Rule.NO_PRICE, 0.0)
    if fv.warming_up:
        return RawCall(RegimeLabel.UNKNOWN, Rule.WARMING_UP, 0.0)
    values = fv.values
    er = values.get("efficiency_ratio")
    ver = values.get("vol_expansion_ratio")
    mom = values.get("momentum_bps")
    if er is None:
        return RawCall(RegimeLabel.UNKNOWN, Rule.WARMING_UP, 0.0)

    # 1. Liquidation risk: a one-way volatility shock with market stress.
    if ver is not None and ver >= cfg.liq_ver and er >= cfg.liq_er and mom:
        z = values.get("momentum_z")
        if z is None or abs(z) >= cfg.liq_z:
            call = _cascade(fv, cfg, ver, mom)
            if call is not None:
                return call

    # 2. Chaos: volatility expands but goes nowhere.
    chaos_ver = cfg.chaos_exit_ver if current is RegimeLabel.CHAOTIC else cfg.chaos_enter_ver
    if ver is not None and ver >= chaos_ver and er < cfg.chaos_max_er:
        return RawCall(RegimeLabel.CHAOTIC, Rule.CHAOS, _clamp((ver - chaos_ver) / chaos_ver))

    # 3. Trend vs mean reversion, with enter/exit bands.
    is_trend = current is RegimeLabel.TRENDING
    trend_er = cfg.trend_exit_er if is_trend else cfg.trend_enter_er
    if er >= trend_er:
        margin = _clamp((er - trend_er) / (1.0 - trend_er))
        z = values.get("momentum_z")
        if z is None:
            return RawCall(RegimeLabel.TRENDING, Rule.TREND, margin)
        trend_z = cfg.trend_exit_z if is_trend else cfg.trend_enter_z
        if abs(z) >= trend_z:
            margin = min(margin, _clamp((abs(z) - trend_z) / trend_z))
            return RawCall(RegimeLabel.TRENDING, Rule.TREND, margin)
    is_mr = current is RegimeLabel.MEAN_REVERTING
    mr_er = cfg.mr_exit_er if is_mr else cfg.mr_enter_er
    if er <= mr_er:
        vr = values.get("variance_ratio")
        margin = _clamp((mr_er - er) / mr_er)
        if vr is None:
            return RawCall(RegimeLabel.MEAN_REVERTING, Rule.MEAN_REVERSION, margin)
        mr_vr = cfg.mr_exit_vr if is_mr else cfg.mr_enter_vr
        if vr <= mr_vr:
            margin = min(margin, _clamp((mr_vr - vr) / mr_vr))
            return RawCall(RegimeLabel.MEAN_REVERTING, Rule.MEAN_REVERSION, margin)
    # No rule held (no significant trend, no clear reversion, no shock: a random walk, or a
    # label past its exit band): the range-bound default, with no margin.
    return RawCall(RegimeLabel.MEAN_REVERTING, Rule.HOLD, 0.0)


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
    last: RegimeState | None = None
    """The state published for the latest bar (what a failed bar holds)."""

    def mark(self) -> tuple[object, ...]:
        """The whole (small) state, for `restore`."""
        return (
            self.label,
            self.since_ms,
            self.previous,
            self.dwell,
            self.candidate,
            self.candidate_count,
            self.off_cascade,
            self.last,
        )

    def restore(self, m: tuple[object, ...]) -> None:
        """Back to the state `mark` saw."""
        (
            self.label,
            self.since_ms,
            self.previous,
            self.dwell,
            self.candidate,
            self.candidate_count,
            self.off_cascade,
            self.last,
        ) = m  # type: ignore[assignment]

    def held(self, fv: FeatureVector) -> RegimeState:
        """What a bar whose computation failed publishes: the latest state, unchanged (the
        classifier does not advance); UNKNOWN with rule ``step_error`` before any."""
        if self.last is not None:
            return self.last
        used, lacking = inputs_of(fv)
        return RegimeState(
            label=RegimeLabel.UNKNOWN,
            confidence=0.0,
            since_ms=fv.close_ms,
            previous=None,
            candidate=None,
            candidate_count=0,
            dwell=0,
            rule=Rule.STEP_ERROR,
            margin=0.0,
            stresses=(),
            inputs_used=used,
            inputs_missing=lacking,
            n_inputs=0,
        )

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
        held = call.label is self.label
        k = n_inputs(fv)
        self.last = state = RegimeState(
            label=self.label,
            confidence=self._confidence(call.margin if held else 0.0, k),
            since_ms=self.since_ms,
            previous=self.previous,
            candidate=self.candidate,
            candidate_count=self.candidate_count,
            dwell=self.dwell,
            rule=call.rule if held else Rule.HOLD,
            margin=call.margin if held else 0.0,
            stresses=call.stresses if held else (),
            inputs_used=used,
            inputs_missing=lacking,
            n_inputs=k,
        )
        return state

    def _confidence(self, margin: float, k: int) -> float:
        """margin × input quality × stability, in [0, 1] (DESIGN.md §5 Confidence)."""
        if self.label is RegimeLabel.UNKNOWN:
            return 0.0
        base = 0.5 + 0.5 * margin
        quality = 0.4 + 0.6 * k / len(DECISION_INPUTS)
        stability = min(1.0, self.dwell / max(1, self.config.min_dwell))
        pending = 0.8 if self.candidate is not None else 1.0
        return round(_clamp(base * quality * (0.7 + 0.3 * stability) * pending), 4)
