"""Regime classification with hysteresis, one classifier per coin.

The rules read only features normalised against the coin's own history or scale-free by
construction (efficiency ratio, variance ratio, volatility expansion, trade-flow imbalance,
trade-rate burst, spread and depth relative to their rolling medians, open-interest change), so one
rule set works for BTC and a thin alt, and on 1-second bars or 5-minute candles. Priority,
thresholds, hysteresis and confidence are documented in DESIGN.md §5; keep the two in step.

One module on purpose: the rules and the hysteresis are one mechanism. The trend, mean-reversion
and risk-flag thresholds have enter and exit bands picked by the current label (`raw_call`'s
``current``), `calm` both gates MEAN_REVERTING and ends it in `RegimeClassifier.update`, and the
held and no-new-data paths publish the same `RegimeState`; either half split off would have to be
read with the other.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import msgspec

from connectors.events import Stream
from connectors.freshness import stale_after_ms
from operators.failures import NON_NEGATIVE, UNIT, RangeError
from operators.features import FeatureVector
from operators.forecast import VolModel, VolSnapshot, VolState, risk_ratio
from operators.forecast import load_default as load_vol_model
from operators.rounding import fround

VOL_MODEL: Final[VolModel | None] = load_vol_model()
"""The committed volatility model (`operators.forecast`; None when the file is absent)."""


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
        liq_ver: volatility expansion ratio that makes a cascade possible without a risk ratio
            (with one, the risk flag must be raised).
        liq_er: efficiency ratio of the move (a cascade is one-way).
        liq_z: unused since #9 (the move's size is ``liq_move_z``, in the coin's norm units);
            kept so that the published thresholds keep their keys.
        liq_flow: trade-flow imbalance in the direction of the move (one-sided flow).
        liq_burst: trade-rate burst that makes one-sided flow aggressive (when known).
        liq_spread_ratio: spread relative to its median that counts as a blow-out.
        liq_depth_ratio: depth within the band relative to its median that counts as collapse.
        liq_oi_drop_pct: open-interest drop over the window (percent, positive number).
        liq_min_groups: stress groups (aggressive flow; liquidity withdrawal; deleveraging) that
            must hold, or all the available ones when fewer are available; one group suffices
            once the move reaches ``2 × liq_move_z``, none is needed when no stress input
            exists at all (candles).
        liq_ver_alone: unused since #9 (see ``liq_min_groups``); kept so that the published
            thresholds keep their keys.
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
    liq_exit_confirm: int = 6
    liq_move_z: float = 4.0
    flag_ver: float = 3.0
    calm_max_ratio: float = 0.8
    calm_max_ver: float = 1.5
    risk_exit_confirm: int = 3
    """Attributes added by issue #9 (DESIGN.md §5):

        liq_move_z: |move over the trend window| in units of the coin's own norm volatility
            (``√(L·n)``, `operators.forecast`) that a cascade needs: large for *this* coin.
        flag_ver: volatility expansion that raises the risk flag on its own (a bar whose
            volatility has multiplied is never calm), besides the forecast risk ratio ρ.
        calm_max_ratio / calm_max_ver: MEAN_REVERTING needs a calm market: ρ at most this and
            volatility expansion at most this.
        risk_exit_confirm: consecutive unflagged evaluations before CHAOTIC is left when the
            flag comes from the expansion rule alone (no forecast risk ratio yet); with a risk
            ratio its enter/exit band is the hysteresis and CHAOTIC is left at once below it.
    """


class Rule(StrEnum):
    """Which rule produced the raw (pre-hysteresis) label."""

    WARMING_UP = "warming_up"
    NO_PRICE = "no_price_input"
    CASCADE = "cascade"
    CHAOS = "vol_expansion_without_direction"
    """The risk flag raised by the volatility expansion (without a forecast: from 1.8, kept from
    1.4; with one: from ``flag_ver``), not a cascade. (The name predates #9: the path may have a
    direction, it is only not a cascade.)"""
    TREND = "efficient_path"
    MEAN_REVERSION = "inefficient_path"
    HOLD = "between_thresholds"
    STEP_ERROR = "step_error"
    """No call could be made for the bar (a step failed) and there was no earlier one to hold."""
    NO_RULE_FIRED = "no_rule_fired"
    """No rule held this bar: the raw call is UNKNOWN (a published label is held only through
    the usual confirmation, and this rule says so)."""
    VOL_STATE = "forecast_vol_high"
    """The risk flag without a cascade: the next hour's forecast volatility is at or above the
    coin's norm (ρ ≥ enter; ≥ exit to stay), or the volatility expansion reached ``flag_ver``."""
    NO_NEW_DATA = "no_new_data"
    """The bar brought no event (or every input stream is stale): the label is held as it was,
    the classifier does not advance."""


class RawCall(msgspec.Struct, frozen=True):
    """One evaluation before hysteresis: label, rule, margin in [0, 1], stresses met."""

    label: RegimeLabel
    rule: Rule
    margin: float
    stresses: tuple[str, ...] = ()


class RegimeState(msgspec.Struct, frozen=True):
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
    vol: VolSnapshot | None = None
    """The coin's volatility state after this bar (the edge forecasts from it)."""
    risk_ratio: float | None = None
    """ρ: the next hour's forecast volatility over the coin's norm (None: no model or too few
    returns)."""
    stale: bool = False
    """The label is held because the bar brought no new data (rule ``no_new_data``)."""


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
    rho = rs.risk_ratio
    if rho is not None and not 0.0 <= rho < math.inf:
        where = "regime.risk_ratio"
        raise RangeError(where, rho, NON_NEGATIVE)


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


def _cascade(fv: FeatureVector, cfg: RegimeConfig, z: float, mom: float) -> RawCall | None:
    """The cascade rule's stress groups, given a one-way move of ``z`` norm units in a flagged
    volatility state (DESIGN.md §5)."""
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
    if groups == 0:  # no stress input at all (candles): the move alone decides
        margin = _clamp((z - cfg.liq_move_z) / cfg.liq_move_z)
        return RawCall(RegimeLabel.LIQUIDATION_RISK, Rule.CASCADE, margin)
    need = 1 if z >= 2 * cfg.liq_move_z else max(1, min(cfg.liq_min_groups, groups))
    if met >= need:
        margin = len(stresses) / available
        return RawCall(RegimeLabel.LIQUIDATION_RISK, Rule.CASCADE, margin, tuple(stresses))
    return None


def calm(fv: FeatureVector, cfg: RegimeConfig, rho: float | None) -> bool:
    """The market is calm: ρ ≤ ``calm_max_ratio`` (when known) and volatility expansion ≤
    ``calm_max_ver`` (when known); with neither known it is not called calm."""
    ver = fv.values.get("vol_expansion_ratio")
    if rho is None and ver is None:
        return False
    return (rho is None or rho <= cfg.calm_max_ratio) and (ver is None or ver <= cfg.calm_max_ver)


def move_z(fv: FeatureVector, snap: VolSnapshot | None) -> float | None:
    """|move over the trend window| in units of the coin's norm: ``|R| / √(L·n)``."""
    mom = fv.values.get("momentum_bps")
    n = fv.trend_returns
    if snap is None or mom is None or n < 1:
        return None
    return abs(mom) / 1e4 / math.sqrt(snap.norm * n)


def raw_call(
    fv: FeatureVector,
    cfg: RegimeConfig,
    current: RegimeLabel,
    rho: float | None = None,
    snap: VolSnapshot | None = None,
    vol_model: VolModel | None = None,
) -> RawCall:
    """Apply the priority-ordered rules to one feature vector (``current`` sets the bands).

    1. risk flag (ρ ≥ enter, or ≥ exit while flagged; or expansion ≥ ``flag_ver``):
       LIQUIDATION_RISK for a one-way move large for this coin with stress, else CHAOTIC;
    2. TRENDING: an efficient path with a significant move;
    3. MEAN_REVERTING: an inefficient path in a calm market;
    4. otherwise no rule fired (UNKNOWN).
    """
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

    # 1. The risk flag: the forecast volatility state, or a volatility that has multiplied.
    flagged = current in (RegimeLabel.LIQUIDATION_RISK, RegimeLabel.CHAOTIC)
    flag_margin = 0.0
    flag_rule: Rule | None = None
    if rho is not None and vol_model is not None:
        limit = vol_model.flag_exit if flagged else vol_model.flag_enter
        if rho >= limit:
            flag_rule = Rule.VOL_STATE
            flag_margin = _clamp((rho - limit) / limit)
    if ver is not None:
        # a volatility that has multiplied (flag_ver) raises the flag by itself; without a
        # forecast, so does the expansion rule of old on a directionless path (enter 1.8, stay 1.4)
        ver_limit = cfg.flag_ver
        if rho is None and er < cfg.chaos_max_er:
            ver_limit = cfg.chaos_exit_ver if flagged else cfg.chaos_enter_ver
        if ver >= ver_limit:
            m = _clamp((ver - ver_limit) / ver_limit)
            if flag_rule is None or m > flag_margin:
                flag_rule = Rule.CHAOS
                flag_margin = m
    # without a forecast, a one-way shock (expansion ≥ liq_ver) may be a cascade as of old
    shock = flag_rule is not None or (rho is None and ver is not None and ver >= cfg.liq_ver)
    if shock and mom and er >= cfg.liq_er:
        z = move_z(fv, snap)
        if z is not None and z >= cfg.liq_move_z:
            call = _cascade(fv, cfg, z, mom)
            if call is not None:
                return call
    if flag_rule is not None:
        return RawCall(RegimeLabel.CHAOTIC, flag_rule, flag_margin)

    # 2. Trend: an efficient path with a significant move, with enter/exit bands.
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

    # 3. Mean reversion: an inefficient path, only in a calm market.
    if calm(fv, cfg, rho):
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
    # 4. No rule held: say so (never a calm default).
    return RawCall(RegimeLabel.UNKNOWN, Rule.NO_RULE_FIRED, 0.0)


def no_new_data(fv: FeatureVector) -> bool:
    """The bar carried no event, or every input stream is stale as of its close."""
    if fv.event_count == 0:
        return True
    clocks = fv.streams
    if not clocks:
        return False
    close = fv.close_ms
    return all(close - c.last_ms > stale_after_ms(s, c.interval_ms) for s, c in clocks.items())


@dataclass(slots=True)
class RegimeClassifier:
    """Per-coin classifier state: the published label, its age, a pending candidate, and the
    coin's volatility state (`operators.forecast.VolState`)."""

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
    vol_model: VolModel | None = field(default_factory=lambda: VOL_MODEL)
    vol: VolState | None = None
    snap: VolSnapshot | None = None

    def __post_init__(self) -> None:
        if self.vol is None and self.vol_model is not None:
            self.vol = VolState(self.vol_model)

    def __deepcopy__(self, memo: dict[int, Any]) -> RegimeClassifier:
        """A deep copy by a pickle round trip (what Bytewax snapshots at every epoch, for every
        coin; ``copy.deepcopy`` is slower)."""
        copied: RegimeClassifier = pickle.loads(pickle.dumps(self, pickle.HIGHEST_PROTOCOL))
        return copied

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
            self.snap,
            None if self.vol is None else self.vol.mark(),
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
            self.snap,
            vol,
        ) = m  # type: ignore[assignment]
        if self.vol is not None and vol is not None:
            self.vol.restore(vol)  # type: ignore[arg-type]

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

    def _stalled(self, fv: FeatureVector) -> RegimeState:
        """A bar with no new data: the latest label held and marked ``no_new_data``."""
        used, lacking = inputs_of(fv)
        last = self.last
        if last is None:
            return RegimeState(
                label=self.label,
                confidence=0.0,
                since_ms=fv.close_ms if self.since_ms is None else self.since_ms,
                previous=self.previous,
                candidate=None,
                candidate_count=0,
                dwell=self.dwell,
                rule=Rule.NO_NEW_DATA,
                margin=0.0,
                stresses=(),
                inputs_used=used,
                inputs_missing=lacking,
                n_inputs=0,
                stale=True,
            )
        # the last published state, held: only what this bar says of its inputs changes
        return msgspec.structs.replace(
            last,
            rule=Rule.NO_NEW_DATA,
            margin=0.0,
            stresses=(),
            inputs_used=used,
            inputs_missing=lacking,
            n_inputs=n_inputs(fv),
            stale=True,
        )

    def update(self, fv: FeatureVector) -> RegimeState:
        """Classify one bar's features; applies confirmation, dwell and risk stickiness.

        A bar with no new data (`no_new_data`) holds the label and does not advance anything.
        The risk labels (LIQUIDATION_RISK, CHAOTIC) are announced at once and left only after
        ``liq_exit_confirm`` / ``risk_exit_confirm`` unflagged evaluations; MEAN_REVERTING is
        left at once when the market stops being calm; other changes need ``confirm``
        consecutive evaluations after ``min_dwell``.
        """
        cfg = self.config
        if no_new_data(fv) and fv.observations > 0:
            return self._stalled(fv)
        vol = self.vol
        if vol is not None and fv.bar_return is not None:
            self.snap = vol.update(fv.bar_return, fv.open_ms, fv.close_ms)
        snap = self.snap
        model = self.vol_model
        rho = risk_ratio(model, snap) if snap is not None and model is not None else None
        call = raw_call(fv, cfg, self.label, rho, snap, model)
        if self.since_ms is None:
            self.since_ms = fv.close_ms
        new = call.label
        risky = (RegimeLabel.LIQUIDATION_RISK, RegimeLabel.CHAOTIC)
        switch = False
        if new is self.label:
            self.candidate, self.candidate_count = None, 0
            self.off_cascade = 0
        elif call.rule in (Rule.NO_PRICE, Rule.WARMING_UP):
            # No usable input: say so at once when there is no price; warm-up keeps UNKNOWN.
            switch = call.rule is Rule.NO_PRICE or self.label is RegimeLabel.UNKNOWN
        elif new is RegimeLabel.LIQUIDATION_RISK:
            switch = True  # a cascade is announced immediately
        elif new is RegimeLabel.CHAOTIC and self.label is not RegimeLabel.LIQUIDATION_RISK:
            switch = True  # so is the risk flag
        elif self.label is RegimeLabel.UNKNOWN:
            switch = True  # first label after warm-up (or after no rule fired)
        elif self.label is RegimeLabel.MEAN_REVERTING and not calm(fv, cfg, rho):
            switch = True  # a calm label never outlives the calm
        else:
            if new is self.candidate:
                self.candidate_count += 1
            else:
                self.candidate, self.candidate_count = new, 1
            if self.label in risky:
                if new not in risky or (
                    self.label is RegimeLabel.LIQUIDATION_RISK and call.rule is not Rule.CASCADE
                ):
                    self.off_cascade += 1
                # CHAOTIC on the forecast has its own band (enter/exit): left at once below it;
                # on the expansion rule alone (no forecast yet) it needs risk_exit_confirm
                if self.label is RegimeLabel.LIQUIDATION_RISK:
                    exit_n = cfg.liq_exit_confirm
                else:
                    exit_n = 1 if rho is not None else cfg.risk_exit_confirm
                switch = self.off_cascade >= exit_n
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
        if held:
            rule = call.rule
        elif call.rule is Rule.NO_RULE_FIRED:
            rule = Rule.NO_RULE_FIRED  # the label is held, and no rule backs it this bar
        else:
            rule = Rule.HOLD
        k = n_inputs(fv)
        self.last = state = RegimeState(
            label=self.label,
            confidence=self._confidence(call.margin if held else 0.0, k),
            since_ms=self.since_ms,
            previous=self.previous,
            candidate=self.candidate,
            candidate_count=self.candidate_count,
            dwell=self.dwell,
            rule=rule,
            margin=call.margin if held else 0.0,
            stresses=call.stresses if held else (),
            inputs_used=used,
            inputs_missing=lacking,
            n_inputs=k,
            vol=snap,
            risk_ratio=rho,
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
        return fround(_clamp(base * quality * (0.7 + 0.3 * stability) * pending), 4)
