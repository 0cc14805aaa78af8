"""`FeatureState`: the per-coin state that turns each closed bar into a `FeatureVector`.

It composes the four feature groups, each a small class with its own state and one `update` per
bar, called in this order (each needs what the one before it set):

1. `book.BookFeatures` takes in the bar's quotes: ``mid_px``, top of book, depth, and the bar's
   quote path (OFI, micro-price states);
2. `volatility.VolatilityFeatures` takes in the bar's price (its mid, else candle close, else last
   trade): volatility and trend, and the start of the trend window;
3. `flow.FlowFeatures` windows the quote path and the trades by that start;
4. `context.ContextFeatures` takes in the asset context: funding, premium, open interest.

The state itself keeps what is not one group's: the stream clocks (freshness), the candle interval
and the wire-price decimals, and it puts the vector together.

Windows count *observations* (bars that carried a price), not wall time, so the same rules work on
1-second bars of a live book and on 5-minute candles; the time the window spans is reported as
``window_span_ms``, and per-time quantities (annualised volatility, trade rate) divide by it.
Everything is O(1) (or O(log n) for medians) per bar: running sums re-summed exactly once per
window of removals, bisect-sorted FIFOs, no numpy and no copies of windows.

To add a feature: compute it in its group's `update`, add its name to
`connectors.fields.FEATURE_NAMES` (and to the API's `Features` model and DESIGN.md); a missing
value goes into ``missing`` with a reason code.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any, Final

from connectors.events import Stream
from connectors.fields import FEATURE_NAMES
from connectors.freshness import StreamClock
from operators.bars import Bar
from operators.failures import Degraded
from operators.features.book import BookFeatures
from operators.features.config import FeatureConfig
from operators.features.context import ContextFeatures
from operators.features.flow import FlowFeatures
from operators.features.vector import STEP_ERROR_REASON, FeatureVector
from operators.features.volatility import VolatilityFeatures

# Enum attribute access is slow on 3.11; the hot path uses these module constants.
_TRADES: Final = Stream.TRADES
_BOOK: Final = Stream.L2BOOK
_BBO: Final = Stream.BBO
_MIDS: Final = Stream.ALL_MIDS
_CTX: Final = Stream.ACTIVE_ASSET_CTX
_CANDLE: Final = Stream.CANDLE


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
_NO_VALUES: Final[dict[str, float | None]] = dict.fromkeys(FEATURE_NAMES)
_DECIMALS: dict[float, int] = {}
"""`price_decimals` of the prices seen lately (prices repeat bar after bar: a lookup instead of a
``repr``); cleared when it holds `_DECIMALS_MAX`."""
_DECIMALS_MAX: Final = 1 << 13


def _event_count(bar: Bar) -> int:
    """Market events in the bar, all streams (gaps are not events)."""
    return (
        len(bar.trades)
        + len(bar.books)
        + len(bar.bbos)
        + len(bar.mids)
        + len(bar.ctxs)
        + len(bar.candles)
    )


@dataclass(slots=True)
class FeatureState:
    """Rolling per-coin state; `update` once per closed bar, in bar order."""

    config: FeatureConfig = field(default_factory=FeatureConfig)
    book: BookFeatures = field(init=False)
    volatility: VolatilityFeatures = field(init=False)
    flow: FlowFeatures = field(init=False)
    context: ContextFeatures = field(init=False)
    streams: dict[Stream, StreamClock] = field(default_factory=dict)
    candle_interval_ms: int | None = None
    px_decimals: int = 0
    """The most decimals seen in this coin's wire prices (publish-time rounding)."""
    _clocks: dict[Stream, StreamClock] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        cfg = self.config
        self.book = BookFeatures(cfg)
        self.volatility = VolatilityFeatures(cfg)
        self.flow = FlowFeatures(cfg)
        self.context = ContextFeatures()

    def update(self, bar: Bar) -> FeatureVector:
        """Fold one closed bar into the state and return the features as of its close."""
        if bar.gaps:  # a hole in the input: no return or transition across it; flow restarts
            self.book.gap()
            self.volatility.gap()
            self.flow.gap(bar)
        self._track_streams(bar)
        self._see_decimals(bar)
        values = _NO_VALUES.copy()  # every name, None (a copy of a built dict: no rehashing)
        missing: dict[str, str] = {}
        streams = self.streams
        book = self.book
        quote_path = book.update(bar, _BBO in streams, values, missing)
        vol = self.volatility
        start, bar_return = vol.update(bar, values["mid_px"], values, missing)
        self.flow.update(bar, start, quote_path, _TRADES in streams, values, missing)
        self.context.update(bar, start, values, missing)

        snap = book.snapshot
        obs = vol.obs
        return FeatureVector(
            coin=bar.coin,
            open_ms=bar.open_ms,
            close_ms=bar.close_ms,
            values=values,
            missing=missing,
            observations=vol.total_obs,
            window_span_ms=obs[-1].t_ms - obs[0].t_ms if len(obs) >= 2 else None,
            price_source=vol.price_source,
            streams=self._snapshot(),
            candle_interval_ms=self.candle_interval_ms,
            event_count=_event_count(bar),
            warmup_obs=self.config.warmup_obs,
            gaps=len(bar.gaps),
            book=snap if snap is not None and book.bad_book is None and snap.has_top else None,
            window_obs=len(obs),
            bar_return=bar_return,
            trend_returns=min(vol.r, len(obs) - 1) if obs else 0,
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
        known = _DECIMALS
        for x in pxs:
            if x is not None:
                k = known.get(x)
                if k is None:
                    k = price_decimals(x)
                    if len(known) >= _DECIMALS_MAX:
                        known.clear()
                    known[x] = k
                if k > d:
                    d = k
        self.px_decimals = d

    def degraded_vector(self, bar: Bar, degraded: Degraded) -> FeatureVector:
        """The vector of a bar whose update failed: every value None (``step_error``), the
        rest as of the state (rolled back to before the bar)."""
        vol = self.volatility
        obs = vol.obs
        return FeatureVector(
            coin=bar.coin,
            open_ms=bar.open_ms,
            close_ms=bar.close_ms,
            values=dict.fromkeys(FEATURE_NAMES),
            missing=dict.fromkeys(FEATURE_NAMES, STEP_ERROR_REASON),
            observations=vol.total_obs,
            window_span_ms=obs[-1].t_ms - obs[0].t_ms if len(obs) >= 2 else None,
            price_source=vol.price_source,
            streams=self._snapshot(),
            candle_interval_ms=self.candle_interval_ms,
            event_count=_event_count(bar),
            warmup_obs=self.config.warmup_obs,
            gaps=len(bar.gaps),
            window_obs=len(obs),
            degraded=degraded,
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> FeatureState:
        """A deep copy by a pickle round trip: what Bytewax's ``stateful_map`` snapshots at every
        epoch, for every coin (``copy.deepcopy`` walks the windows in Python, ~5x slower)."""
        copied: FeatureState = pickle.loads(pickle.dumps(self, pickle.HIGHEST_PROTOCOL))
        return copied

    # -- rollback ------------------------------------------------------------------------------

    def mark(self) -> tuple[Any, ...]:
        """Everything `update` may change, cheaply: `restore` puts the state back as it was.

        Small windows are copied; the long (``long_obs``) rolling windows keep O(1) marks (each
        is updated at most once per bar). A test checks that every field is covered.
        """
        return (
            self.book.mark(),
            self.volatility.mark(),
            self.flow.mark(),
            self.context.mark(),
            self.candle_interval_ms,
            dict(self._clocks),
            self.px_decimals,
        )

    def restore(self, m: tuple[Any, ...]) -> None:
        """Back to the state `mark` saw (raises `operators.rolling.UndoError` if it cannot)."""
        book, volatility, flow, context, self.candle_interval_ms, self._clocks, self.px_decimals = m
        self.book.restore(book)
        self.volatility.restore(volatility)
        self.flow.restore(flow)
        self.context.restore(context)
        # After every update `_clocks` holds equal copies of the stream clocks (`_snapshot`): the
        # clocks are rebuilt from them instead of being copied by every mark.
        self.streams = {
            k: StreamClock(c.last_ms, c.last_recv_ms, c.count, c.interval_ms)
            for k, c in self._clocks.items()
        }

    # -- stream clocks -------------------------------------------------------------------------

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
