"""`FeatureState`: the rolling per-coin state that turns each closed bar into a `FeatureVector`.

Windows count *observations* (bars that carried a price), not wall time, so the same rules work on
1-second bars of a live book and on 5-minute candles; the time the window spans is reported as
``window_span_ms``, and per-time quantities (annualised volatility, trade rate) divide by it.
Everything is O(1) (or O(log n) for medians) per bar: running sums re-summed exactly once per
window of removals, bisect-sorted FIFOs, no numpy and no copies of windows.

To add a feature: compute it in `FeatureState.update`, add its name to `vector.FEATURE_NAMES` (and
to the API's `Features` model and DESIGN.md); a missing value goes into ``missing`` with a reason
code.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from connectors.events import BookSnapshot, Stream
from operators.bars import Bar
from operators.failures import Degraded
from operators.features.config import FeatureConfig
from operators.features.vector import FEATURE_NAMES, STEP_ERROR_REASON, FeatureVector
from operators.freshness import StreamClock
from operators.microstructure import MicroPrice, Vpin, ofi_step
from operators.rolling import RollingMedian, RollingMoments, RollingPair, RollingSum

# Enum attribute access is slow on 3.11; the hot path uses these module constants.
_TRADES: Final = Stream.TRADES
_BOOK: Final = Stream.L2BOOK
_BBO: Final = Stream.BBO
_MIDS: Final = Stream.ALL_MIDS
_CTX: Final = Stream.ACTIVE_ASSET_CTX
_CANDLE: Final = Stream.CANDLE

MS_PER_YEAR: Final = 365.25 * 24 * 3600 * 1000
LN2_4: Final = 4.0 * math.log(2.0)
GK_C: Final = 2.0 * math.log(2.0) - 1.0


_QUOTE_NAMES: Final = (
    "spread_bps",
    "weighted_mid_px",
    "microprice_px",
    "microprice_offset_bps",
    "tob_imbalance",
    "spread_ratio",
    "ofi",
    "ofi_norm",
    "ofi_zscore",
)
_TOB_NAMES: Final = (
    "spread_bps",
    "weighted_mid_px",
    "microprice_px",
    "microprice_offset_bps",
    "tob_imbalance",
    "spread_ratio",
)
_BOOK_NAMES: Final = (
    "depth_band_bps",
    "depth_bid_usd",
    "depth_ask_usd",
    "depth_imbalance",
    "book_levels",
    "depth_ratio",
)
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
_PERP_NAMES: Final = (
    "funding_rate_1h",
    "premium_bps",
    "mark_oracle_bps",
    "open_interest",
    "oi_change_pct",
    "mark_px",
    "oracle_px",
)
_WINDOW_FLOW_NAMES: Final = (
    "trade_flow_imbalance",
    "signed_notional_usd",
    "trade_rate_per_s",
    "trade_rate_burst",
    "vpin",
)


def price_decimals(x: float) -> int:
    """Decimals of a wire price as its shortest repr shows them (``109741.0`` → 0, ``0.004411``
    → 6, ``1e-07`` → 7), at most `MAX_PX_DECIMALS`."""
    r = repr(x)
    mant, e, exp = r.partition("e")
    i = mant.find(".")
    frac = 0 if i < 0 or mant[i + 1 :] == "0" else len(mant) - i - 1
    if e:
        frac -= int(exp)
    return min(max(frac, 0), MAX_PX_DECIMALS)


MAX_PX_DECIMALS: Final = 12


@dataclass(slots=True)
class _Obs:
    """One price observation (a bar that carried a price)."""

    t_ms: int
    px: float
    r: float  # log return from the previous observation (0 for the first and across gaps)
    cum: float  # Σ r up to and including this observation (for q-period returns)


@dataclass(slots=True)
class FeatureState:
    """Rolling per-coin state; `update` once per closed bar, in bar order."""

    config: FeatureConfig = field(default_factory=FeatureConfig)
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
    flow: deque[tuple[int, float, float, float, int]] = field(default_factory=deque)
    flow_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    flow_drops: int = 0
    flow_last_ms: int | None = None
    short_prints: RollingSum = field(init=False)
    long_flow: RollingPair = field(init=False)  # (prints, volume) per bar over L bars
    vpin: Vpin = field(init=False)
    ofi_win: deque[tuple[int, float, float, int]] = field(default_factory=deque)
    ofi_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    ofi_drops: int = 0
    ofi_hist: RollingMoments = field(init=False)
    ofi_prev: tuple[float, float, float, float] | None = None
    micro: MicroPrice = field(init=False)
    spreads: RollingMedian = field(init=False)
    depths: RollingMedian = field(init=False)
    volumes: RollingMedian = field(init=False)
    candles: deque[tuple[int, float, float]] = field(default_factory=deque)  # dur, pk, gk terms
    candle_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    candle_drops: int = 0
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
    after_gap: bool = False
    px_decimals: int = 0
    """The most decimals seen in this coin's wire prices (publish-time rounding)."""
    _q: int = field(init=False, default=2)
    _r: int = field(init=False, default=2)
    _clocks: dict[Stream, StreamClock] = field(init=False, default_factory=dict)
    _depth_of: tuple[BookSnapshot | None, float, float] = field(
        init=False, default=(None, 0.0, 0.0)
    )

    def __post_init__(self) -> None:
        cfg = self.config
        self._q = cfg.q
        self._r = cfg.r
        n = cfg.long_obs
        self.short_r2 = RollingSum(cfg.short_obs)
        self.long_r2 = RollingSum(n)
        self.var_rates = RollingMedian(n)
        self.short_prints = RollingSum(cfg.short_obs)
        self.long_flow = RollingPair(n)
        self.vpin = Vpin(cfg.vpin_buckets)
        self.ofi_hist = RollingMoments(n)
        self.micro = MicroPrice(cfg.micro_buckets, cfg.micro_memory, cfg.micro_min_obs)
        self.spreads = RollingMedian(n)
        self.depths = RollingMedian(n)
        self.volumes = RollingMedian(n)

    def _gap(self, bar: Bar) -> None:
        """The input had a hole: restart the flow windows; no return or transition across it."""
        self.after_gap = True
        self.flow.clear()
        self.flow_sums = [0.0, 0.0, 0.0, 0.0]
        self.flow_drops = 0
        self.flow_last_ms = bar.open_ms
        self.ofi_win.clear()
        self.ofi_sums = [0.0, 0.0, 0.0]
        self.ofi_drops = 0
        self.ofi_prev = None
        self.micro.reset_pending()

    # -- price observations --------------------------------------------------------------------

    def _obs_push(self, o: _Obs) -> None:
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
        r_obs = self._r
        if len(obs) > r_obs:
            self.path_r -= abs(obs[-1 - r_obs].r)  # leaves the trend window
        q = self._q
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
                self._obs_resum()

    def _obs_resum(self) -> None:
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
        r_obs = self._r
        self.path_r = sum(abs(obs[i].r) for i in range(len(obs) - r_obs, len(obs)))
        self.obs_drops = 0

    def update(self, bar: Bar) -> FeatureVector:
        """Fold one closed bar into the state and return the features as of its close."""
        cfg = self.config
        if bar.gaps:
            self._gap(bar)
        self._track_streams(bar)
        self._see_decimals(bar)
        values: dict[str, float | None] = dict.fromkeys(FEATURE_NAMES)
        missing: dict[str, str] = {}
        ofi_bar, touch_sum, states = self._absorb_quotes(bar)

        # -- price observation -------------------------------------------------------------
        px, source = self._price(bar)
        bar_return: float | None = None
        if px is not None and 0.0 < px < math.inf:
            obs = self.obs
            if obs:
                last = obs[-1]
                # Across a gap in the input the move is unobserved: no return is counted for it.
                r = 0.0 if self.after_gap else math.log(px / last.px)
                if not self.after_gap:
                    bar_return = r
                self._obs_push(_Obs(bar.close_ms, px, r, last.cum + r))
                dt = bar.close_ms - last.t_ms
                r2 = r * r
                self.long_r2.update(dt, r2)
                short = self.short_r2
                short.update(dt, r2)
                if len(short) >= cfg.short_obs and short.total_ms > 0:
                    self.var_rates.update(short.total / short.total_ms)
            else:
                self._obs_push(_Obs(bar.close_ms, px, 0.0, 0.0))
            self.after_gap = False
            self.total_obs += 1
            self.price_source = source
        mid = self._mid()
        values["mid_px"] = mid
        if mid is None:
            missing["mid_px"] = "no_quote"

        # The trend window starts at the price R observations back (or the first one).
        obs = self.obs
        r_obs = self._r
        start = (
            (obs[-1 - r_obs] if len(obs) > r_obs else obs[0]).t_ms if len(obs) >= 2 else bar.open_ms
        )
        self._top_of_book(values, missing)
        self._ofi(bar, start, ofi_bar, touch_sum, states, values, missing)
        self._depth(values, missing)
        self._flow(bar, start, values, missing)
        self._volatility(bar, values, missing)
        self._perp(start, values, missing)

        book = self.book
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
            streams=self._snapshot(),
            candle_interval_ms=self.candle_interval_ms,
            event_count=len(bar.trades)
            + len(bar.books)
            + len(bar.bbos)
            + len(bar.mids)
            + len(bar.ctxs)
            + len(bar.candles),
            warmup_obs=cfg.warmup_obs,
            gaps=len(bar.gaps),
            book=book if book is not None and self.bad_book is None and book.has_top else None,
            window_obs=len(self.obs),
            bar_return=bar_return,
            trend_returns=min(r_obs, len(self.obs) - 1) if self.obs else 0,
            px_decimals=self.px_decimals,
        )

    def _see_decimals(self, bar: Bar) -> None:
        """Fold the decimals of this bar's wire prices (last quote, book top, trades, candle,
        mid, mark) into `px_decimals`."""
        d = self.px_decimals
        pxs: list[float | None] = [bar.first_trade_px, bar.last_trade_px]
        if bar.bbos:
            q = bar.bbos[-1]
            pxs += (q.bid_px, q.ask_px)
        if bar.books:
            b = bar.books[-1]
            pxs += (b.bid_px[:1] or (None,))[0], (b.ask_px[:1] or (None,))[0]
        if bar.candles:
            pxs.append(bar.candles[-1].c)
        if bar.mids:
            pxs.append(bar.mids[-1].mid_px)
        if bar.ctxs:
            c = bar.ctxs[-1]
            pxs += (c.mark_px, c.oracle_px)
        for x in pxs:
            if x is not None:
                k = price_decimals(x)
                if k > d:
                    d = k
        self.px_decimals = d

    def degraded_vector(self, bar: Bar, degraded: Degraded) -> FeatureVector:
        """The vector of a bar whose update failed: every value None (``step_error``), the
        rest as of the state (rolled back to before the bar)."""
        obs = self.obs
        return FeatureVector(
            coin=bar.coin,
            open_ms=bar.open_ms,
            close_ms=bar.close_ms,
            values=dict.fromkeys(FEATURE_NAMES),
            missing=dict.fromkeys(FEATURE_NAMES, STEP_ERROR_REASON),
            observations=self.total_obs,
            window_span_ms=obs[-1].t_ms - obs[0].t_ms if len(obs) >= 2 else None,
            price_source=self.price_source,
            streams=self._snapshot(),
            candle_interval_ms=self.candle_interval_ms,
            event_count=len(bar.trades)
            + len(bar.books)
            + len(bar.bbos)
            + len(bar.mids)
            + len(bar.ctxs)
            + len(bar.candles),
            warmup_obs=self.config.warmup_obs,
            gaps=len(bar.gaps),
            window_obs=len(obs),
            degraded=degraded,
        )

    # -- rollback ------------------------------------------------------------------------------

    def mark(self) -> tuple[Any, ...]:
        """Everything `update` may change, cheaply: `restore` puts the state back as it was.

        Small windows are copied; the long (``long_obs``) rolling windows keep O(1) marks (each
        is updated at most once per bar). A test checks that every field is covered.
        """
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
            tuple(self.flow),
            tuple(self.flow_sums),
            self.flow_drops,
            self.flow_last_ms,
            self.short_prints.mark(),
            self.long_flow.mark(),
            self.vpin.mark(),
            tuple(self.ofi_win),
            tuple(self.ofi_sums),
            self.ofi_drops,
            self.ofi_hist.mark(),
            self.ofi_prev,
            self.micro.mark(),
            self.spreads.mark(),
            self.depths.mark(),
            self.volumes.mark(),
            tuple(self.candles),
            tuple(self.candle_sums),
            self.candle_drops,
            tuple(self.oi),
            self.tob,
            self.book,
            self.bad_book,
            self.ctx_mid_px,
            self.ctx,
            self.allmid_px,
            self.last_trade_px,
            self.candle_interval_ms,
            self.price_source,
            self.total_obs,
            self.after_gap,
            dict(self._clocks),
            self._depth_of,
            self.px_decimals,
        )

    def restore(self, m: tuple[Any, ...]) -> None:
        """Back to the state `mark` saw (raises `operators.rolling.UndoError` if it cannot)."""
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
            flow,
            flow_sums,
            self.flow_drops,
            self.flow_last_ms,
            short_prints,
            long_flow,
            vpin,
            ofi_win,
            ofi_sums,
            self.ofi_drops,
            ofi_hist,
            self.ofi_prev,
            micro,
            spreads,
            depths,
            volumes,
            candles,
            candle_sums,
            self.candle_drops,
            oi,
            self.tob,
            self.book,
            self.bad_book,
            self.ctx_mid_px,
            self.ctx,
            self.allmid_px,
            self.last_trade_px,
            self.candle_interval_ms,
            self.price_source,
            self.total_obs,
            self.after_gap,
            self._clocks,
            self._depth_of,
            self.px_decimals,
        ) = m
        self.short_r2.undo(short_r2)
        self.long_r2.undo(long_r2)
        self.var_rates.undo(var_rates)
        self.short_prints.undo(short_prints)
        self.long_flow.undo(long_flow)
        self.ofi_hist.undo(ofi_hist)
        self.spreads.undo(spreads)
        self.depths.undo(depths)
        self.volumes.undo(volumes)
        self.vpin.restore(vpin)
        self.micro.restore(micro)
        self.obs = deque(obs)
        self.obs_sums = list(obs_sums)
        self.qr2 = deque(qr2)
        self.flow = deque(flow)
        self.flow_sums = list(flow_sums)
        self.ofi_win = deque(ofi_win)
        self.ofi_sums = list(ofi_sums)
        self.candles = deque(candles)
        self.candle_sums = list(candle_sums)
        self.oi = deque(oi)
        # After every update `_clocks` holds equal copies of the stream clocks (`_snapshot`): the
        # clocks are rebuilt from them instead of being copied by every mark.
        self.streams = {
            k: StreamClock(c.last_ms, c.last_recv_ms, c.count, c.interval_ms)
            for k, c in self._clocks.items()
        }

    def _snapshot(self) -> dict[Stream, StreamClock]:
        """Copies of the stream clocks; a clock that did not move this bar shares its last copy.

        The copies are never mutated (only the state's own clocks are), so sharing is safe.
        """
        snap = self._clocks
        out: dict[Stream, StreamClock] = {}
        for k, v in self.streams.items():
            c = snap.get(k)
            if c is None or c.count != v.count or c.interval_ms != v.interval_ms:
                c = snap[k] = StreamClock(v.last_ms, v.last_recv_ms, v.count, v.interval_ms)
            out[k] = c
        return out

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

    def _absorb_quotes(self, bar: Bar) -> tuple[float, float, int]:
        """Keep the newest top of book, book, mids, context and last trade; run the quote path.

        Every two-sided top-of-book state of the bar, in exchange-time order, feeds the OFI sum
        and the micro-price estimator: the ``bbo`` events, or the bar's latest book for a coin
        without a ``bbo`` stream. Returns ``(OFI of the bar, Σ touch depth, states)``.
        """
        tob = self.tob
        quotes: list[tuple[float, float, float, float]] = []
        for b in bar.bbos:
            bid = b.bid_px
            ask = b.ask_px
            if bid is None or ask is None:
                continue
            bq = b.bid_sz or 0.0
            aq = b.ask_sz or 0.0
            if tob is None or b.time_ms >= tob[0]:
                tob = (b.time_ms, bid, bq, ask, aq)
            quotes.append((bid, bq, ask, aq))
        book = bar.book
        if book is not None:
            if book.has_top:
                self.book = book
                self.bad_book = None
                bid, bq, ask, aq = book.bid_px[0], book.bid_sz[0], book.ask_px[0], book.ask_sz[0]
                if tob is None or book.time_ms >= tob[0]:
                    tob = (book.time_ms, bid, bq, ask, aq)
                if _BBO not in self.streams:  # the book is this coin's only top-of-book feed
                    quotes.append((bid, bq, ask, aq))
            elif book.error is not None:
                self.bad_book = book.error
            else:
                self.book = book  # an empty book: a delisted or halted coin
        prev = self.ofi_prev
        micro = self.micro
        ofi = 0.0
        touch = 0.0
        for q in quotes:
            if prev is not None:
                ofi += ofi_step(*prev, *q)
            prev = q
            touch += (q[1] + q[3]) * 0.5
            micro.observe(*q)
        states = len(quotes)
        self.tob = tob
        self.ofi_prev = prev
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
        return ofi, touch, states

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
        if tob is None:
            for n in _QUOTE_NAMES:
                missing[n] = "no_quote"
            return
        _, bid, bid_sz, ask, ask_sz = tob
        mid = (bid + ask) / 2.0
        if not 0.0 < mid < math.inf:  # only from a bad wire value (mid_px fails its range)
            for n in _TOB_NAMES:
                missing[n] = "invalid_quote"
            return
        spread = 1e4 * (ask - bid) / mid
        values["spread_bps"] = spread
        total = bid_sz + ask_sz
        if total > 0:
            weighted = (bid * ask_sz + ask * bid_sz) / total
            values["weighted_mid_px"] = weighted
            values["tob_imbalance"] = (bid_sz - ask_sz) / total
            g = self.micro.g(bid_sz, ask_sz, ask - bid) if ask > bid else None
            if g is not None:
                micro = mid + (ask - bid) * g
                values["microprice_px"] = micro
                values["microprice_offset_bps"] = 1e4 * (micro - mid) / mid
            else:
                reason = "warming_up" if ask > bid else "crossed_or_locked"
                missing["microprice_px"] = missing["microprice_offset_bps"] = reason
        else:
            for n in ("weighted_mid_px", "microprice_px", "microprice_offset_bps", "tob_imbalance"):
                missing[n] = "empty_top_of_book"
        self._vs_median(self.spreads, spread, "spread_ratio", values, missing)

    def _ofi(
        self,
        bar: Bar,
        start: int,
        ofi_bar: float,
        touch: float,
        states: int,
        values: dict[str, float | None],
        missing: dict[str, str],
    ) -> None:
        if self.tob is None:
            return  # reasons set by _top_of_book
        cfg = self.config
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

    def _depth(self, values: dict[str, float | None], missing: dict[str, str]) -> None:
        book = self.book
        if book is None:
            reason = "bad_book" if self.bad_book else "no_book"
            for n in _BOOK_NAMES:
                missing[n] = reason
            return
        band = self.config.depth_band_bps
        values["depth_band_bps"] = band
        values["book_levels"] = float(len(book.bid_px) + len(book.ask_px))
        if not book.has_top:
            for n in ("depth_bid_usd", "depth_ask_usd", "depth_imbalance", "depth_ratio"):
                missing[n] = "empty_book"
            return
        cached, db, da = self._depth_of
        if cached is not book:  # a new book: sum its levels within the band once
            bid_px = book.bid_px
            ask_px = book.ask_px
            mid = (bid_px[0] + ask_px[0]) / 2.0
            lo = mid * (1 - band / 1e4)
            hi = mid * (1 + band / 1e4)
            db = 0.0
            for p, s in zip(bid_px, book.bid_sz, strict=False):
                if p < lo:
                    break
                db += p * s
            da = 0.0
            for p, s in zip(ask_px, book.ask_sz, strict=False):
                if p > hi:
                    break
                da += p * s
            self._depth_of = (book, db, da)
        values["depth_bid_usd"] = db
        values["depth_ask_usd"] = da
        total = db + da
        if total > 0:
            values["depth_imbalance"] = (db - da) / total
        else:
            missing["depth_imbalance"] = "no_depth_in_band"
        self._vs_median(self.depths, total, "depth_ratio", values, missing)

    def _flow(
        self, bar: Bar, start: int, values: dict[str, float | None], missing: dict[str, str]
    ) -> None:
        cfg = self.config
        has_trades = _TRADES in self.streams
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
            self._push_volume(cvol, values, missing)
        elif has_trades:
            self._push_volume(vol, values, missing)
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

    def _vs_median(
        self,
        history: RollingMedian,
        x: float,
        name: str,
        values: dict[str, float | None],
        missing: dict[str, str],
    ) -> None:
        """``name`` = x over the rolling median of its own history (then x joins the history)."""
        history.update(x)
        if len(history) < self.config.short_obs:
            missing[name] = "warming_up"
            return
        base = history.get() or 0.0
        if base > 0:
            values[name] = x / base
        else:
            missing[name] = "zero_baseline"

    def _push_volume(
        self, vol: float, values: dict[str, float | None], missing: dict[str, str]
    ) -> None:
        self._vs_median(self.volumes, vol, "volume_ratio", values, missing)

    def _volatility(
        self, bar: Bar, values: dict[str, float | None], missing: dict[str, str]
    ) -> None:
        cfg = self.config
        obs = self.obs
        self._candles(bar, values, missing)
        if len(obs) < 3:
            reason = "warming_up" if values["mid_px"] is not None or obs else "no_price"
            for n in _PATH_NAMES:
                missing[n] = reason
            return
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
        r_obs = self._r
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
        q = self._q
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

    def _candles(self, bar: Bar, values: dict[str, float | None], missing: dict[str, str]) -> None:
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

    def _perp(self, start: int, values: dict[str, float | None], missing: dict[str, str]) -> None:
        if self.ctx is None:
            for n in _PERP_NAMES:
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
        if oracle > 0 and mark > 0:
            values["mark_oracle_bps"] = 1e4 * (mark - oracle) / oracle
        else:
            missing["mark_oracle_bps"] = "no_mark_or_oracle"
        # The reference is the context at (or just before) the start of the trend window.
        while len(self.oi) > 2 and self.oi[1][0] <= start:
            self.oi.popleft()
        first_oi = self.oi[0][1] if self.oi else None
        if first_oi and len(self.oi) >= 2:
            values["oi_change_pct"] = 100.0 * (oi - first_oi) / first_oi
        elif first_oi == 0.0:
            missing["oi_change_pct"] = "zero_baseline"
        else:
            missing["oi_change_pct"] = "warming_up"
