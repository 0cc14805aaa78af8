"""Volatility and trend features from the coin's price observations: realised volatility and its
expansion, the Parkinson and Garman–Klass candle estimators, momentum and its z-score, efficiency
ratio, variance ratio and price z-score (DESIGN.md §4, Volatility and trend).

A price observation is a bar that carried a price (`bar_price`: its quote mid, else the candle
close, else the last trade). The windows count observations: W for volatility, the variance
ratio and the price z-score; R (the trend window) for direction. The trend window's start is what
the flow and context groups window by.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from operators.bars import Bar
from operators.features.config import FeatureConfig
from operators.features.vector import Missing, Values
from operators.rolling import RollingMedian, RollingSum

MS_PER_YEAR: Final = 365.25 * 24 * 3600 * 1000
LN2_4: Final = 4.0 * math.log(2.0)
GK_C: Final = 2.0 * math.log(2.0) - 1.0

_PATH_NAMES: Final = (
    "realized_vol_bps",
    "realized_vol_ann",
    "momentum_bps",
    "momentum_z",
    "efficiency_ratio",
    "price_zscore",
    "vol_expansion_ratio",
    "variance_ratio",
)


def bar_price(bar: Bar, mid: float | None) -> tuple[float | None, str | None]:
    """The bar's price for returns and its source, given the coin's mid after the bar's quotes:
    quote mid > candle close > last trade (in that order)."""
    if (bar.bbos or bar.books or bar.mids or bar.ctxs) and mid is not None:
        return mid, "mid"
    if bar.candles:
        return bar.candles[-1].c, "candle_close"
    if bar.last_trade_px is not None:
        if mid is None:  # the coin never had a quote
            return bar.last_trade_px, "last_trade"
        return mid, "mid"
    return None, None


class _Obs(msgspec.Struct):
    """One price observation (a bar that carried a price)."""

    t_ms: int
    px: float
    r: float  # log return from the previous observation (0 for the first and across gaps)
    cum: float  # Σ r up to and including this observation (for q-period returns)


@dataclass(slots=True)
class VolatilityFeatures:
    """The window of price observations with its running sums, the variance-rate history and the
    candle window; `update` once per bar."""

    config: FeatureConfig
    obs: deque[_Obs] = field(default_factory=deque)
    obs_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # Σr², Σd, Σd²
    px_ref: float = 0.0
    obs_drops: int = 0
    qr2: deque[float] = field(default_factory=deque)  # squared q-period returns in the window
    qr2_sum: float = 0.0
    path_r: float = 0.0  # Σ|r| over the trend window
    short_r2: RollingSum = field(init=False)
    long_r2: RollingSum = field(init=False)
    var_rates: RollingMedian = field(init=False)
    candles: deque[tuple[int, float, float]] = field(default_factory=deque)  # dur, pk, gk terms
    candle_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    candle_drops: int = 0
    total_obs: int = 0
    price_source: str | None = None
    after_gap: bool = False
    r: int = field(init=False, default=2)
    """The trend window R actually used (`FeatureConfig.r`)."""
    q: int = field(init=False, default=2)
    """The variance-ratio horizon actually used (`FeatureConfig.q`)."""

    def __post_init__(self) -> None:
        cfg = self.config
        self.r = cfg.r
        self.q = cfg.q
        self.short_r2 = RollingSum(cfg.short_obs)
        self.long_r2 = RollingSum(cfg.long_obs)
        self.var_rates = RollingMedian(cfg.long_obs)

    def gap(self) -> None:
        """The input had a hole: the move across it is unobserved (no return for the next
        price)."""
        self.after_gap = True

    def update(
        self, bar: Bar, mid: float | None, values: Values, missing: Missing
    ) -> tuple[int, float | None]:
        """Fold the bar's price (if any) in and set the volatility and trend features.

        ``mid``: the coin's mid after the bar's quotes (`mid_px`). Returns the start of the trend
        window (the time of the price R observations back, or of the first one; the bar's open
        before there are two) and the bar's return (None: no new price, or the first one after
        an input gap).
        """
        cfg = self.config
        px, source = bar_price(bar, mid)
        bar_return: float | None = None
        if px is not None and 0.0 < px < math.inf:
            obs = self.obs
            if obs:
                last = obs[-1]
                # Across a gap in the input the move is unobserved: no return is counted for it.
                r = 0.0 if self.after_gap else math.log(px / last.px)
                if not self.after_gap:
                    bar_return = r
                self._push(_Obs(bar.close_ms, px, r, last.cum + r))
                dt = bar.close_ms - last.t_ms
                r2 = r * r
                self.long_r2.update(dt, r2)
                short = self.short_r2
                short.update(dt, r2)
                if len(short) >= cfg.short_obs and short.total_ms > 0:
                    self.var_rates.update(short.total / short.total_ms)
            else:
                self._push(_Obs(bar.close_ms, px, 0.0, 0.0))
            self.after_gap = False
            self.total_obs += 1
            self.price_source = source
        obs = self.obs
        r_obs = self.r
        start = (
            (obs[-1 - r_obs] if len(obs) > r_obs else obs[0]).t_ms if len(obs) >= 2 else bar.open_ms
        )
        self._candles(bar, values, missing)
        if len(obs) < 3:
            reason = "warming_up" if mid is not None or obs else "no_price"
            for n in _PATH_NAMES:
                missing[n] = reason
            return start, bar_return
        ss, sum_d, sum_d2 = self.obs_sums
        ss = max(0.0, ss)
        span = obs[-1].t_ms - obs[0].t_ms
        values["realized_vol_bps"] = 1e4 * math.sqrt(ss)
        if span > 0:
            values["realized_vol_ann"] = math.sqrt(ss * MS_PER_YEAR / span)
        else:  # pragma: no cover - observations are at distinct bar closes
            missing["realized_vol_ann"] = "empty_window"
        # Direction over the trend window R: Σ r = ln(P_last/P_first) except across input gaps.
        count = len(obs)
        first = obs[-1 - r_obs] if count > r_obs else obs[0]
        move = obs[-1].cum - first.cum
        path_r = self.path_r
        values["momentum_bps"] = 1e4 * move
        values["efficiency_ratio"] = min(1.0, abs(move) / path_r) if path_r > 1e-15 else 0.0
        n_r = min(r_obs, count - 1)
        if ss > 1e-18:  # the move in units of its noise: σ per return from the W window
            values["momentum_z"] = move / math.sqrt(ss * n_r / (count - 1))
        else:
            values["momentum_z"] = 0.0
        mean_d = sum_d / count
        var = max(0.0, (sum_d2 - count * mean_d * mean_d) / (count - 1))
        dev = obs[-1].px - self.px_ref - mean_d
        values["price_zscore"] = dev / math.sqrt(var) if var > 1e-18 else 0.0

        # Variance ratio VR(q) about zero mean: a drift counts as persistence.
        n1 = count - 1
        nq = len(self.qr2)
        q = self.q
        if n1 >= 2 * q and nq > 0:
            if ss > 1e-18:
                values["variance_ratio"] = max(0.0, self.qr2_sum / nq) / (q * ss / n1)
            else:
                missing["variance_ratio"] = "flat_prices"
        else:
            missing["variance_ratio"] = "warming_up"

        # Volatility expansion: recent variance per ms against the coin's usual level.
        long = self.long_r2
        if len(long) >= cfg.window_obs:
            short = self.short_r2
            base = self.var_rates.get() or 0.0
            if base <= 0 and long.total_ms > 0:
                base = long.total / long.total_ms  # mostly flat history: the mean rate
            if base > 0 and short.total_ms > 0:
                values["vol_expansion_ratio"] = math.sqrt(
                    max(0.0, short.total / short.total_ms) / base
                )
            else:
                missing["vol_expansion_ratio"] = "flat_prices"
        else:
            missing["vol_expansion_ratio"] = "warming_up"
        return start, bar_return

    def _push(self, o: _Obs) -> None:
        """Append an observation, keeping running sums of the window (exact every window)."""
        obs = self.obs
        sums = self.obs_sums
        cfg = self.config
        if not obs:
            self.px_ref = o.px
        obs.append(o)
        d = o.px - self.px_ref
        sums[1] += d
        sums[2] += d * d
        if len(obs) > 1:
            sums[0] += o.r * o.r
        self.path_r += abs(o.r)
        r_obs = self.r
        if len(obs) > r_obs:
            self.path_r -= abs(obs[-1 - r_obs].r)  # leaves the trend window
        q = self.q
        if len(obs) > q:
            qr = o.cum - obs[-1 - q].cum
            self.qr2.append(qr * qr)
            self.qr2_sum += qr * qr
        if len(obs) > cfg.window_obs + 1:
            old = obs.popleft()
            d = old.px - self.px_ref
            sums[1] -= d
            sums[2] -= d * d
            first = obs[0]  # its return now leaves the window
            sums[0] -= first.r * first.r
            while len(self.qr2) > len(obs) - q:
                self.qr2_sum -= self.qr2.popleft()
            self.obs_drops += 1
            if self.obs_drops >= cfg.window_obs:
                self._resum()

    def _resum(self) -> None:
        obs = self.obs
        ref = sum(o.px for o in obs) / len(obs)
        self.px_ref = ref
        s0 = s1 = s2 = 0.0
        for i, o in enumerate(obs):
            d = o.px - ref
            s1 += d
            s2 += d * d
            if i:
                s0 += o.r * o.r
        self.obs_sums = [s0, s1, s2]
        self.qr2_sum = sum(self.qr2)
        r_obs = self.r
        self.path_r = sum(abs(obs[i].r) for i in range(len(obs) - r_obs, len(obs)))
        self.obs_drops = 0

    def _candles(self, bar: Bar, values: Values, missing: Missing) -> None:
        """Parkinson and Garman–Klass volatility over the last W closed candles."""
        cfg = self.config
        dq = self.candles
        sums = self.candle_sums
        for c in bar.candles:
            if c.h > 0 and c.low > 0 and c.o > 0 and c.c > 0 and c.h >= c.low:
                hlr = c.h / c.low
                cor = c.c / c.o
                if not (hlr < math.inf and 0.0 < cor < math.inf):  # only from bad wire values
                    continue
                hl = math.log(hlr) ** 2
                co = math.log(cor) ** 2
                item = (c.time_ms - c.open_ms + 1, hl / LN2_4, 0.5 * hl - GK_C * co)
                dq.append(item)
                sums[0] += item[0]
                sums[1] += item[1]
                sums[2] += item[2]
                if len(dq) > cfg.window_obs:
                    old = dq.popleft()
                    sums[0] -= old[0]
                    sums[1] -= old[1]
                    sums[2] -= old[2]
                    self.candle_drops += 1
                    if self.candle_drops >= cfg.window_obs:
                        self.candle_sums = sums = [
                            float(sum(x[0] for x in dq)),
                            sum(x[1] for x in dq),
                            sum(x[2] for x in dq),
                        ]
                        self.candle_drops = 0
        if not dq:
            missing["parkinson_vol_ann"] = missing["garman_klass_vol_ann"] = "no_candles"
            return
        dur = sums[0]
        if dur <= 0:  # pragma: no cover - candles last at least 1 ms
            missing["parkinson_vol_ann"] = missing["garman_klass_vol_ann"] = "empty_window"
            return
        values["parkinson_vol_ann"] = math.sqrt(max(0.0, sums[1]) * MS_PER_YEAR / dur)
        values["garman_klass_vol_ann"] = math.sqrt(max(0.0, sums[2]) * MS_PER_YEAR / dur)

    def mark(self) -> tuple[Any, ...]:
        """Everything `update` may change (`restore` puts it back)."""
        return (
            tuple(self.obs),
            tuple(self.obs_sums),
            self.px_ref,
            self.obs_drops,
            tuple(self.qr2),
            self.qr2_sum,
            self.path_r,
            self.short_r2.mark(),
            self.long_r2.mark(),
            self.var_rates.mark(),
            tuple(self.candles),
            tuple(self.candle_sums),
            self.candle_drops,
            self.total_obs,
            self.price_source,
            self.after_gap,
        )

    def restore(self, m: tuple[Any, ...]) -> None:
        """Back to the state `mark` saw."""
        (
            obs,
            obs_sums,
            self.px_ref,
            self.obs_drops,
            qr2,
            self.qr2_sum,
            self.path_r,
            short_r2,
            long_r2,
            var_rates,
            candles,
            candle_sums,
            self.candle_drops,
            self.total_obs,
            self.price_source,
            self.after_gap,
        ) = m
        self.short_r2.undo(short_r2)
        self.long_r2.undo(long_r2)
        self.var_rates.undo(var_rates)
        self.obs = deque(obs)
        self.obs_sums = list(obs_sums)
        self.qr2 = deque(qr2)
        self.candles = deque(candles)
        self.candle_sums = list(candle_sums)
