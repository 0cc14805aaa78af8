"""Flow features: order-flow imbalance at the touch (OFI) and the trades: counts, aggressor
volumes, VWAP, flow imbalances, signed notional, trade rate and its burst, VPIN, and volume against
its own history (DESIGN.md §4, Flow).

The window features (``ofi_norm``, ``trade_flow_imbalance``, ``signed_notional_usd``,
``trade_rate_per_s``) cover the bars after the price that opens the trend window (``start``,
from the volatility group); the bar's OFI itself comes from the book group's quote path.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from operators.bars import Bar
from operators.features.book import QuotePath
from operators.features.config import FeatureConfig
from operators.features.vector import Missing, Values, ratio_to_median
from operators.microstructure import Vpin
from operators.rolling import RollingMedian, RollingMoments, RollingPair, RollingSum

_OFI_NAMES: Final = ("ofi", "ofi_norm", "ofi_zscore")
_WINDOW_FLOW_NAMES: Final = (
    "trade_flow_imbalance",
    "signed_notional_usd",
    "trade_rate_per_s",
    "trade_rate_burst",
    "vpin",
)


@dataclass(slots=True)
class FlowFeatures:
    """The trend-window sums of OFI and trades, the OFI, print-rate, volume and VPIN histories;
    `update` once per bar."""

    config: FeatureConfig
    ofi_win: deque[tuple[int, float, float, int]] = field(default_factory=deque)
    ofi_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    ofi_drops: int = 0
    ofi_hist: RollingMoments = field(init=False)
    flow: deque[tuple[int, float, float, float, int]] = field(default_factory=deque)
    flow_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    flow_drops: int = 0
    flow_last_ms: int | None = None
    short_prints: RollingSum = field(init=False)
    long_flow: RollingPair = field(init=False)  # (prints, volume) per bar over L bars
    vpin: Vpin = field(init=False)
    volumes: RollingMedian = field(init=False)

    def __post_init__(self) -> None:
        cfg = self.config
        n = cfg.long_obs
        self.ofi_hist = RollingMoments(n)
        self.short_prints = RollingSum(cfg.short_obs)
        self.long_flow = RollingPair(n)
        self.vpin = Vpin(cfg.vpin_buckets)
        self.volumes = RollingMedian(n)

    def gap(self, bar: Bar) -> None:
        """The input had a hole: the trend windows restart."""
        self.flow.clear()
        self.flow_sums = [0.0, 0.0, 0.0, 0.0]
        self.flow_drops = 0
        self.flow_last_ms = bar.open_ms
        self.ofi_win.clear()
        self.ofi_sums = [0.0, 0.0, 0.0]
        self.ofi_drops = 0

    def update(
        self,
        bar: Bar,
        start: int,
        quote_path: QuotePath | None,
        has_trades: bool,
        values: Values,
        missing: Missing,
    ) -> None:
        """Fold the bar's quote path (None: the coin has no top of book yet) and trades in and
        set the flow features; ``has_trades``: the coin has a trades stream."""
        cfg = self.config
        if quote_path is None:
            for n in _OFI_NAMES:
                missing[n] = "no_quote"
        else:
            self._ofi(bar, start, quote_path, values, missing)
        if has_trades:
            values["trade_count"] = float(bar.trade_count)
            values["buy_volume"] = bar.buy_sz
            values["sell_volume"] = bar.sell_sz
        else:
            for n in ("trade_count", "buy_volume", "sell_volume"):
                missing[n] = "no_trades_stream"
        values["vwap_px"] = bar.vwap_px
        if bar.vwap_px is None:
            missing["vwap_px"] = "no_trades_in_bar" if has_trades else "no_trades_stream"
        vol = bar.volume
        if vol > 0:
            values["trade_flow_imbalance_bar"] = (bar.buy_sz - bar.sell_sz) / vol
        else:
            missing["trade_flow_imbalance_bar"] = "no_trades_in_bar"
        # Candle-only input: volume (no side) still measures activity.
        if bar.candles and not bar.trades:
            cvol = 0.0
            for c in bar.candles:
                cvol += c.v
            ratio_to_median(self.volumes, cvol, "volume_ratio", cfg.short_obs, values, missing)
        elif has_trades:
            ratio_to_median(self.volumes, vol, "volume_ratio", cfg.short_obs, values, missing)
        else:
            missing["volume_ratio"] = "no_volume_input"
        if not has_trades:
            for n in _WINDOW_FLOW_NAMES:
                missing[n] = "no_trades_stream"
            return
        sums = self.flow_sums
        entry = (bar.close_ms, bar.buy_sz, bar.sell_sz, bar.buy_ntl - bar.sell_ntl, bar.trade_count)
        self.flow.append(entry)
        sums[0] += entry[1]
        sums[1] += entry[2]
        sums[2] += entry[3]
        sums[3] += entry[4]
        while len(self.flow) > 1 and (self.flow[0][0] <= start or len(self.flow) > cfg.long_obs):
            old = self.flow.popleft()
            sums[0] -= old[1]
            sums[1] -= old[2]
            sums[2] -= old[3]
            sums[3] -= old[4]
            self.flow_drops += 1
        if self.flow_drops >= cfg.window_obs:  # exact totals again (bounded rounding drift)
            sums[0] = sum(f[1] for f in self.flow)
            sums[1] = sum(f[2] for f in self.flow)
            sums[2] = sum(f[3] for f in self.flow)
            sums[3] = float(sum(f[4] for f in self.flow))
            self.flow_drops = 0
        buy, sell = max(0.0, sums[0]), max(0.0, sums[1])
        values["signed_notional_usd"] = sums[2]
        if buy + sell > 1e-12:
            values["trade_flow_imbalance"] = (buy - sell) / (buy + sell)
        else:
            missing["trade_flow_imbalance"] = "no_trades_in_window"
        span_ms = bar.close_ms - start
        if span_ms > 0:
            values["trade_rate_per_s"] = 1000.0 * max(0.0, sums[3]) / span_ms
        else:  # pragma: no cover - start is always before the bar's close
            missing["trade_rate_per_s"] = "empty_window"

        # Trade-rate burst: prints per ms over the last S bars vs the last L bars.
        last = self.flow_last_ms
        dt = bar.close_ms - (last if last is not None else bar.open_ms)
        self.flow_last_ms = bar.close_ms
        prints = float(bar.trade_count)
        long = self.long_flow
        # VPIN: bucket size = vpin_bucket_obs × the mean volume of a bar (before this one).
        if bar.trades and len(long) >= cfg.short_obs and long.b > 0:
            size = cfg.vpin_bucket_obs * long.b / len(long)
            vpin = self.vpin
            for t in bar.trades:
                vpin.add(t.prints, size)
        short = self.short_prints
        short.update(dt, prints)
        long.update(dt, prints, vol)
        if len(long) >= 2 * cfg.short_obs:
            if long.a > 0 and long.total_ms > 0 and short.total_ms > 0:
                values["trade_rate_burst"] = (short.total / short.total_ms) / (
                    long.a / long.total_ms
                )
            else:
                missing["trade_rate_burst"] = "zero_baseline"
        else:
            missing["trade_rate_burst"] = "warming_up"
        v = self.vpin.value(cfg.vpin_min_buckets)
        if v is not None:
            values["vpin"] = v
        else:
            missing["vpin"] = "warming_up"

    def _ofi(
        self, bar: Bar, start: int, quote_path: QuotePath, values: Values, missing: Missing
    ) -> None:
        cfg = self.config
        ofi_bar, touch, states = quote_path
        values["ofi"] = ofi_bar
        win = self.ofi_win
        sums = self.ofi_sums
        win.append((bar.close_ms, ofi_bar, touch, states))
        sums[0] += ofi_bar
        sums[1] += touch
        sums[2] += states
        while len(win) > 1 and (win[0][0] <= start or len(win) > cfg.long_obs):
            _, o, d, n = win.popleft()
            sums[0] -= o
            sums[1] -= d
            sums[2] -= n
            self.ofi_drops += 1
        if self.ofi_drops >= cfg.window_obs:
            sums[0] = sum(w[1] for w in win)
            sums[1] = sum(w[2] for w in win)
            sums[2] = float(sum(w[3] for w in win))
            self.ofi_drops = 0
        if sums[2] > 0.5 and sums[1] > 0:
            values["ofi_norm"] = sums[0] / (sums[1] / sums[2])
        else:
            missing["ofi_norm"] = "no_quote_updates_in_window"
        hist = self.ofi_hist
        if len(hist) >= cfg.short_obs:
            z = hist.zscore(ofi_bar)
            if z is not None:
                values["ofi_zscore"] = z
            else:
                missing["ofi_zscore"] = "no_dispersion"
        else:
            missing["ofi_zscore"] = "warming_up"
        hist.update(ofi_bar)

    def mark(self) -> tuple[Any, ...]:
        """Everything `update` may change (`restore` puts it back)."""
        return (
            tuple(self.ofi_win),
            tuple(self.ofi_sums),
            self.ofi_drops,
            self.ofi_hist.mark(),
            tuple(self.flow),
            tuple(self.flow_sums),
            self.flow_drops,
            self.flow_last_ms,
            self.short_prints.mark(),
            self.long_flow.mark(),
            self.vpin.mark(),
            self.volumes.mark(),
        )

    def restore(self, m: tuple[Any, ...]) -> None:
        """Back to the state `mark` saw."""
        (
            ofi_win,
            ofi_sums,
            self.ofi_drops,
            ofi_hist,
            flow,
            flow_sums,
            self.flow_drops,
            self.flow_last_ms,
            short_prints,
            long_flow,
            vpin,
            volumes,
        ) = m
        self.ofi_hist.undo(ofi_hist)
        self.short_prints.undo(short_prints)
        self.long_flow.undo(long_flow)
        self.vpin.restore(vpin)
        self.volumes.undo(volumes)
        self.ofi_win = deque(ofi_win)
        self.ofi_sums = list(ofi_sums)
        self.flow = deque(flow)
        self.flow_sums = list(flow_sums)
