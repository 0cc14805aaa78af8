"""Rolling market-structure features per coin, updated once per closed bar.

`FeatureState.update(bar)` turns each closed `Bar` into a `FeatureVector`: named values with units
in their names, plus the reason for every value that could not be computed (never a silent 0).
Formulas, units and windows are in DESIGN.md §Features; keep the two in step.

Windows count *observations* (bars that carried a price), not wall time, so the same rules work on
1-second bars of a live book and on 5-minute candles; the time the window spans is reported as
``window_span_ms``, and per-time quantities (annualised volatility, trade rate) divide by it.

To add a feature: compute it in `FeatureState.update`, add its name to `FEATURE_NAMES` (and to the
API's `Features` model and DESIGN.md); a missing value goes into ``missing`` with a reason code.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from connectors.events import BookSnapshot, Stream
from operators.bars import Bar
from operators.freshness import StreamClock
from operators.rolling import RollingMedian, RollingSum

# Enum attribute access is slow on 3.11; the hot path uses these module constants.
_TRADES: Final = Stream.TRADES
_BOOK: Final = Stream.L2BOOK
_BBO: Final = Stream.BBO
_MIDS: Final = Stream.ALL_MIDS
_CTX: Final = Stream.ACTIVE_ASSET_CTX
_CANDLE: Final = Stream.CANDLE

MS_PER_YEAR: Final = 365.25 * 24 * 3600 * 1000
LN2_4: Final = 4.0 * math.log(2.0)

FEATURE_NAMES: Final[tuple[str, ...]] = (
    "mid_px",
    "spread_bps",
    "microprice_px",
    "microprice_offset_bps",
    "tob_imbalance",
    "depth_band_bps",
    "depth_bid_usd",
    "depth_ask_usd",
    "depth_imbalance",
    "book_levels",
    "trade_count",
    "buy_volume",
    "sell_volume",
    "vwap_px",
    "trade_flow_imbalance",
    "trade_flow_imbalance_bar",
    "signed_notional_usd",
    "trade_rate_per_s",
    "realized_vol_bps",
    "realized_vol_ann",
    "vol_expansion_ratio",
    "parkinson_vol_ann",
    "momentum_bps",
    "efficiency_ratio",
    "price_zscore",
    "spread_ratio",
    "depth_ratio",
    "volume_ratio",
    "funding_rate_1h",
    "premium_bps",
    "open_interest",
    "oi_change_pct",
    "mark_px",
    "oracle_px",
)


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Feature windows and bands.

    Attributes:
        window_obs: rolling window, in price observations (bars with a price).
        short_obs: short window for the volatility expansion ratio.
        long_obs: long (baseline) window for volatility, spread, depth and volume baselines.
        warmup_obs: observations needed before signals count as warmed up.
        depth_band_bps: half-width of the band around mid for depth features, in bps.
    """

    window_obs: int = 60
    short_obs: int = 10
    long_obs: int = 600
    warmup_obs: int = 30
    depth_band_bps: float = 10.0

    def __post_init__(self) -> None:
        if not 2 <= self.short_obs < self.window_obs <= self.long_obs:
            msg = (
                "need 2 <= short_obs < window_obs <= long_obs, got "
                f"{self.short_obs}, {self.window_obs}, {self.long_obs}"
            )
            raise ValueError(msg)
        if self.warmup_obs < 2 or self.depth_band_bps <= 0:
            msg = "warmup_obs must be >= 2 and depth_band_bps > 0"
            raise ValueError(msg)


@dataclass(slots=True)
class FeatureVector:
    """Features of one coin as of one bar close (exchange time)."""

    coin: str
    open_ms: int
    close_ms: int
    values: dict[str, float | None]
    missing: dict[str, str]
    observations: int
    window_span_ms: int | None
    price_source: str | None
    streams: dict[Stream, StreamClock]
    """A copy of the coin's stream clocks as of this bar (safe to keep)."""
    candle_interval_ms: int | None
    event_count: int
    warmup_obs: int
    gaps: int = 0
    """Input gaps (live reconnects) inside this bar."""

    @property
    def warming_up(self) -> bool:
        """Fewer price observations than the warm-up needs."""
        return self.observations < self.warmup_obs

    def get(self, name: str) -> float | None:
        """A feature value (None when missing)."""
        return self.values.get(name)


@dataclass(slots=True)
class _Obs:
    """One price observation (a bar that carried a price)."""

    t_ms: int
    px: float
    r: float  # log return from the previous observation (0 for the first)


@dataclass(slots=True)
class FeatureState:
    """Rolling per-coin state; `update` once per closed bar, in bar order."""

    config: FeatureConfig = field(default_factory=FeatureConfig)
    obs: deque[_Obs] = field(default_factory=deque)
    long_r2: RollingSum = field(init=False)
    flow: deque[tuple[int, float, float, float, int]] = field(default_factory=deque)
    flow_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    flow_drops: int = 0
    spreads: RollingMedian = field(init=False)
    depths: RollingMedian = field(init=False)
    volumes: RollingMedian = field(init=False)
    candles: deque[tuple[int, float]] = field(default_factory=deque)  # (duration ms, var term)
    oi: deque[tuple[int, float]] = field(default_factory=deque)
    streams: dict[Stream, StreamClock] = field(default_factory=dict)
    tob: tuple[int, float, float, float, float] | None = None  # time, bid, bid_sz, ask, ask_sz
    book: BookSnapshot | None = None
    bad_book: str | None = None
    ctx_mid_px: float | None = None
    ctx: tuple[float, float, float, float, float | None] | None = None  # fund, oi, mark, orc, prem
    allmid_px: float | None = None
    last_trade_px: float | None = None
    candle_interval_ms: int | None = None
    price_source: str | None = None
    total_obs: int = 0
    obs_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    px_ref: float = 0.0
    obs_drops: int = 0
    after_gap: bool = False

    def __post_init__(self) -> None:
        n = self.config.long_obs
        self.long_r2 = RollingSum(n)
        self.spreads = RollingMedian(n)
        self.depths = RollingMedian(n)
        self.volumes = RollingMedian(n)

    def _gap(self) -> None:
        """The input had a hole: restart the flow window; skip the return across the hole."""
        self.after_gap = True
        self.flow.clear()
        self.flow_sums = [0.0, 0.0, 0.0, 0.0]
        self.flow_drops = 0

    def _obs_push(self, o: _Obs) -> None:
        """Append an observation, keeping running sums of the window (exact every window)."""
        obs = self.obs
        sums = self.obs_sums
        if not obs:
            self.px_ref = o.px
        obs.append(o)
        d = o.px - self.px_ref
        sums[2] += d
        sums[3] += d * d
        if len(obs) > 1:
            sums[0] += o.r * o.r
            sums[1] += abs(o.r)
        if len(obs) > self.config.window_obs + 1:
            old = obs.popleft()
            d = old.px - self.px_ref
            sums[2] -= d
            sums[3] -= d * d
            first = obs[0]  # its return now leaves the window
            sums[0] -= first.r * first.r
            sums[1] -= abs(first.r)
            self.obs_drops += 1
            if self.obs_drops >= self.config.window_obs:
                self._obs_resum()

    def _obs_resum(self) -> None:
        obs = list(self.obs)
        self.px_ref = sum(o.px for o in obs) / len(obs)
        rets = [o.r for o in obs[1:]]
        self.obs_sums = [
            sum(r * r for r in rets),
            sum(abs(r) for r in rets),
            sum(o.px - self.px_ref for o in obs),
            sum((o.px - self.px_ref) ** 2 for o in obs),
        ]
        self.obs_drops = 0

    def update(self, bar: Bar) -> FeatureVector:
        """Fold one closed bar into the state and return the features as of its close."""
        cfg = self.config
        if bar.gaps:
            self._gap()
        self._track_streams(bar)
        self._absorb_quotes(bar)
        values: dict[str, float | None] = dict.fromkeys(FEATURE_NAMES)
        missing: dict[str, str] = {}

        # -- price observation -------------------------------------------------------------
        px, source = self._price(bar)
        if px is not None and px > 0:
            prev_t = self.obs[-1].t_ms if self.obs else bar.close_ms
            prev = self.obs[-1].px if self.obs else None
            # Across a gap in the input the move is unobserved: no return is counted for it.
            r = math.log(px / prev) if prev and not self.after_gap else 0.0
            self.after_gap = False
            self._obs_push(_Obs(bar.close_ms, px, r))
            if prev is not None:
                self.long_r2.update(bar.close_ms - prev_t, r * r)
            self.total_obs += 1
            self.price_source = source
        values["mid_px"] = self._mid()
        if values["mid_px"] is None:
            missing["mid_px"] = "no_quote"

        self._top_of_book(values, missing)
        self._depth(values, missing)
        self._flow(bar, values, missing)
        self._volatility(bar, values, missing)
        self._perp(bar, values, missing)

        span = self.obs[-1].t_ms - self.obs[0].t_ms if len(self.obs) >= 2 else None
        return FeatureVector(
            coin=bar.coin,
            open_ms=bar.open_ms,
            close_ms=bar.close_ms,
            values=values,
            missing=missing,
            observations=self.total_obs,
            window_span_ms=span,
            price_source=self.price_source,
            streams={
                k: StreamClock(v.last_ms, v.last_recv_ms, v.count, v.interval_ms)
                for k, v in self.streams.items()
            },
            candle_interval_ms=self.candle_interval_ms,
            event_count=len(bar.trades)
            + len(bar.books)
            + len(bar.bbos)
            + len(bar.mids)
            + len(bar.ctxs)
            + len(bar.candles),
            warmup_obs=cfg.warmup_obs,
            gaps=len(bar.gaps),
        )

    # -- state intake ------------------------------------------------------------------------

    def _track_streams(self, bar: Bar) -> None:
        for stream, items in (
            (_TRADES, bar.trades),
            (_BOOK, bar.books),
            (_BBO, bar.bbos),
            (_MIDS, bar.mids),
            (_CTX, bar.ctxs),
            (_CANDLE, bar.candles),
        ):
            if not items:
                continue
            last = items[-1]
            clock = self.streams.get(stream)
            if clock is None:
                self.streams[stream] = StreamClock(last.time_ms, last.recv_ms, len(items))
            else:
                clock.observe(len(items), last.time_ms, last.recv_ms)
        if bar.candles:
            c = bar.candles[-1]
            interval = c.time_ms - c.open_ms + 1
            self.candle_interval_ms = interval
            clock = self.streams[_CANDLE]
            if clock.interval_ms is None:
                clock.interval_ms = float(interval)

    def _absorb_quotes(self, bar: Bar) -> None:
        """Keep the newest top of book (bbo or book), book, mids, context and last trade."""
        tob = self.tob
        for b in bar.bbos:
            if (
                b.bid_px is not None
                and b.ask_px is not None
                and (tob is None or b.time_ms >= tob[0])
            ):
                tob = (b.time_ms, b.bid_px, b.bid_sz or 0.0, b.ask_px, b.ask_sz or 0.0)
        book = bar.book
        if book is not None:
            if book.has_top:
                self.book = book
                self.bad_book = None
                if tob is None or book.time_ms >= tob[0]:
                    tob = (
                        book.time_ms,
                        book.bid_px[0],
                        book.bid_sz[0],
                        book.ask_px[0],
                        book.ask_sz[0],
                    )
            elif book.error is not None:
                self.bad_book = book.error
            else:
                self.book = book  # an empty book: a delisted or halted coin
        self.tob = tob
        if bar.mids:
            self.allmid_px = bar.mids[-1].mid_px
        ctx = bar.ctx
        if ctx is not None:
            self.ctx = (ctx.funding_1h, ctx.open_interest, ctx.mark_px, ctx.oracle_px, ctx.premium)
            self.ctx_mid_px = ctx.mid_px
            for c in bar.ctxs:
                self.oi.append((c.time_ms, c.open_interest))
        if bar.last_trade_px is not None:
            self.last_trade_px = bar.last_trade_px

    def _mid(self) -> float | None:
        if self.tob is not None:
            return (self.tob[1] + self.tob[3]) / 2.0
        if self.allmid_px is not None:
            return self.allmid_px
        if self.ctx_mid_px is not None:
            return self.ctx_mid_px
        return None

    def _price(self, bar: Bar) -> tuple[float | None, str | None]:
        """The bar's price for returns: quote mid > candle close > last trade (in that order)."""
        fresh_quote = bar.bbos or bar.books or bar.mids or bar.ctxs
        if fresh_quote:
            mid = self._mid()
            if mid is not None:
                return mid, "mid"
        if bar.candles:
            return bar.candles[-1].c, "candle_close"
        if bar.last_trade_px is not None:
            if self.tob is None and self.allmid_px is None and self.ctx_mid_px is None:
                return bar.last_trade_px, "last_trade"
            mid = self._mid()
            return mid, "mid"
        return None, None

    # -- features ------------------------------------------------------------------------------

    def _top_of_book(self, values: dict[str, float | None], missing: dict[str, str]) -> None:
        tob = self.tob
        names = ("spread_bps", "microprice_px", "microprice_offset_bps", "tob_imbalance")
        if tob is None:
            for n in (*names, "spread_ratio"):
                missing[n] = "no_quote"
            return
        _, bid, bid_sz, ask, ask_sz = tob
        mid = (bid + ask) / 2.0
        values["spread_bps"] = 1e4 * (ask - bid) / mid
        total = bid_sz + ask_sz
        if total > 0:
            micro = (bid * ask_sz + ask * bid_sz) / total
            values["microprice_px"] = micro
            values["microprice_offset_bps"] = 1e4 * (micro - mid) / mid
            values["tob_imbalance"] = (bid_sz - ask_sz) / total
        else:
            for n in names[1:]:
                missing[n] = "empty_top_of_book"
        spread = values["spread_bps"]
        assert spread is not None
        self.spreads.update(spread)
        if len(self.spreads) >= self.config.short_obs:
            base = self.spreads.get() or 0.0
            values["spread_ratio"] = spread / base if base > 0 else None
            if base <= 0:
                missing["spread_ratio"] = "zero_baseline"
        else:
            missing["spread_ratio"] = "warming_up"

    def _depth(self, values: dict[str, float | None], missing: dict[str, str]) -> None:
        names = (
            "depth_band_bps",
            "depth_bid_usd",
            "depth_ask_usd",
            "depth_imbalance",
            "book_levels",
            "depth_ratio",
        )
        book = self.book
        if book is None:
            reason = "bad_book" if self.bad_book else "no_book"
            for n in names:
                missing[n] = reason
            return
        band = self.config.depth_band_bps
        values["depth_band_bps"] = band
        values["book_levels"] = float(len(book.bid_px) + len(book.ask_px))
        if not book.has_top:
            for n in (*names[1:4], "depth_ratio"):
                missing[n] = "empty_book"
            return
        mid = (book.bid_px[0] + book.ask_px[0]) / 2.0
        lo = mid * (1 - band / 1e4)
        hi = mid * (1 + band / 1e4)
        db = 0.0
        for p, s in zip(book.bid_px, book.bid_sz, strict=False):
            if p < lo:
                break
            db += p * s
        da = 0.0
        for p, s in zip(book.ask_px, book.ask_sz, strict=False):
            if p > hi:
                break
            da += p * s
        values["depth_bid_usd"] = db
        values["depth_ask_usd"] = da
        total = db + da
        if total > 0:
            values["depth_imbalance"] = (db - da) / total
        else:
            missing["depth_imbalance"] = "no_depth_in_band"
        self.depths.update(total)
        if len(self.depths) >= self.config.short_obs:
            base = self.depths.get() or 0.0
            values["depth_ratio"] = total / base if base > 0 else None
            if base <= 0:
                missing["depth_ratio"] = "zero_baseline"
        else:
            missing["depth_ratio"] = "warming_up"

    def _flow(self, bar: Bar, values: dict[str, float | None], missing: dict[str, str]) -> None:
        cfg = self.config
        has_trades = bool(bar.trades) or _TRADES in self.streams
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
            cvol = sum(c.v for c in bar.candles)
            self._push_volume(cvol, values, missing)
        elif bar.trades or _TRADES in self.streams:
            self._push_volume(vol, values, missing)
        else:
            missing["volume_ratio"] = "no_volume_input"
        if _TRADES not in self.streams:
            for n in ("trade_flow_imbalance", "signed_notional_usd", "trade_rate_per_s"):
                missing[n] = "no_trades_stream"
            return
        sums = self.flow_sums
        entry = (bar.close_ms, bar.buy_sz, bar.sell_sz, bar.buy_ntl - bar.sell_ntl, bar.trade_count)
        self.flow.append(entry)
        sums[0] += entry[1]
        sums[1] += entry[2]
        sums[2] += entry[3]
        sums[3] += entry[4]
        start = self.obs[0].t_ms if len(self.obs) >= 2 else bar.open_ms
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
            values["trade_rate_per_s"] = 1000.0 * sums[3] / span_ms

    def _push_volume(
        self, vol: float, values: dict[str, float | None], missing: dict[str, str]
    ) -> None:
        self.volumes.update(vol)
        if len(self.volumes) >= self.config.short_obs:
            base = self.volumes.get() or 0.0
            values["volume_ratio"] = vol / base if base > 0 else None
            if base <= 0:
                missing["volume_ratio"] = "zero_baseline"
        else:
            missing["volume_ratio"] = "warming_up"

    def _volatility(
        self, bar: Bar, values: dict[str, float | None], missing: dict[str, str]
    ) -> None:
        cfg = self.config
        obs = self.obs
        for c in bar.candles:
            if c.h > 0 and c.low > 0:
                self.candles.append((c.time_ms - c.open_ms + 1, math.log(c.h / c.low) ** 2 / LN2_4))
        while len(self.candles) > cfg.window_obs:
            self.candles.popleft()
        if self.candles:
            dur = sum(d for d, _ in self.candles)
            var = sum(v for _, v in self.candles)
            values["parkinson_vol_ann"] = math.sqrt(var * MS_PER_YEAR / dur) if dur > 0 else None
        else:
            missing["parkinson_vol_ann"] = "no_candles"
        names = (
            "realized_vol_bps",
            "realized_vol_ann",
            "momentum_bps",
            "efficiency_ratio",
            "price_zscore",
            "vol_expansion_ratio",
        )
        if len(obs) < 3:
            for n in names:
                missing[n] = "warming_up" if values["mid_px"] is not None or obs else "no_price"
            return
        ss, path, sum_d, sum_d2 = self.obs_sums
        ss = max(0.0, ss)
        span = obs[-1].t_ms - obs[0].t_ms
        values["realized_vol_bps"] = 1e4 * math.sqrt(ss)
        values["realized_vol_ann"] = math.sqrt(ss * MS_PER_YEAR / span) if span > 0 else None
        move = math.log(obs[-1].px / obs[0].px)
        values["momentum_bps"] = 1e4 * move
        values["efficiency_ratio"] = min(1.0, abs(move) / path) if path > 1e-15 else 0.0
        count = len(obs)
        mean_d = sum_d / count
        var = max(0.0, (sum_d2 - count * mean_d * mean_d) / (count - 1))
        dev = obs[-1].px - self.px_ref - mean_d
        values["price_zscore"] = dev / math.sqrt(var) if var > 1e-18 else 0.0
        # Volatility expansion: recent variance per ms against the long baseline per ms.
        long = self.long_r2
        if len(long) >= cfg.window_obs:
            short_var, short_span = long.tail(cfg.short_obs)
            long_span = long.span_ms()
            long_var = long.total
            if short_span > 0 and long_span > 0 and long_var > 0:
                values["vol_expansion_ratio"] = math.sqrt(
                    max(0.0, short_var / short_span) / (long_var / long_span)
                )
            else:
                missing["vol_expansion_ratio"] = "flat_prices"
        else:
            missing["vol_expansion_ratio"] = "warming_up"

    def _perp(self, bar: Bar, values: dict[str, float | None], missing: dict[str, str]) -> None:
        names = (
            "funding_rate_1h",
            "premium_bps",
            "open_interest",
            "oi_change_pct",
            "mark_px",
            "oracle_px",
        )
        if self.ctx is None:
            for n in names:
                missing[n] = "no_asset_ctx"
            return
        funding, oi, mark, oracle, premium = self.ctx
        values["funding_rate_1h"] = funding
        values["open_interest"] = oi
        values["mark_px"] = mark
        values["oracle_px"] = oracle
        if premium is not None:
            values["premium_bps"] = 1e4 * premium
        else:
            missing["premium_bps"] = "no_premium"
        # The reference is the context at (or just before) the start of the price window.
        while len(self.oi) > 2 and self.obs and self.oi[1][0] <= self.obs[0].t_ms:
            self.oi.popleft()
        first_oi = self.oi[0][1] if self.oi else None
        if first_oi and len(self.oi) >= 2:
            values["oi_change_pct"] = 100.0 * (oi - first_oi) / first_oi
        else:
            missing["oi_change_pct"] = "warming_up"
