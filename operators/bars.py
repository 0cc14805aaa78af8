"""Event-time bars: each coin's events folded into tumbling windows of ``bar_ms``.

The Bytewax step is a ``fold_window`` whose folder only appends the event to a list (the cheapest
possible per-event work on the hot path); everything a bar reports is computed once, when the
window closes, by `Bar.from_events`. Windows are aligned to the Unix epoch, so bar ``k`` covers
``[k·bar_ms, (k+1)·bar_ms)`` in exchange time, and a bar is stamped at its (exclusive) close.

Clocks (``../shared/reference/bytewax-0.21.md`` §2.4–2.6):

- replay: an `EventClock` with a frozen ``now_getter`` and ``to_system_utc = None``: the watermark
  is ``max event time − lateness`` and only later events (or the end of input) close bars, so the
  result never depends on the wall clock;
- live: the wall clock advances the watermark, so a quiet coin's bars still close, and
  ``to_system_utc`` wakes the worker when a bar is due instead of spinning a core (bytewax #578).

Events more than the allowed lateness behind a coin's watermark come out on ``late``; the flow
counts them (they are never silently lost).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, Final

import bytewax.operators as op
import bytewax.operators.windowing as win
from bytewax.dataflow import Stream as BxStream
from bytewax.operators import KeyedStream
from bytewax.operators.windowing import (  # the private logic classes are pinned with 0.21.1
    EventClock,
    TumblingWindower,
    WindowMetadata,
    _SlidingWindowerLogic,
    _SlidingWindowerState,
)
from typing_extensions import override

from connectors.events import (
    AssetCtx,
    Bbo,
    BookSnapshot,
    Candle,
    Event,
    Gap,
    Kind,
    Mid,
    Stream,
    Trades,
)
from operators.failures import STEP_ERRORS, Bound, RangeError

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_STREAM_OF_KIND: Final = {
    Kind.TRADES: Stream.TRADES,
    Kind.BOOK: Stream.L2BOOK,
    Kind.BBO: Stream.BBO,
    Kind.CANDLE: Stream.CANDLE,
    Kind.MID: Stream.ALL_MIDS,
    Kind.CTX: Stream.ACTIVE_ASSET_CTX,
}


MIN_TIME_MS: Final = (datetime(1, 1, 2, tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)
MAX_TIME_MS: Final = (datetime(9999, 12, 30, tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)
"""Exchange times a bar can hold (a datetime can; a day of margin for windows and lateness).

An event outside them (10^15 ms, 2^63 − 1) cannot be placed in time: the group step drops it
as a step error (`operators.failures.STEP_ERRORS`) instead of letting it stop the flow."""


def _at(ms: int) -> datetime:
    try:
        return EPOCH + timedelta(milliseconds=ms)
    except OverflowError:  # guarded by `grouper`; the nearest representable time otherwise
        return EPOCH + timedelta(milliseconds=MAX_TIME_MS if ms > 0 else MIN_TIME_MS)


def event_time(e: Event) -> datetime:
    """An event's exchange time as an aware UTC datetime (what the `EventClock` orders by)."""
    return _at(e.time_ms)


_TIME_MS: Final = attrgetter("time_ms")
"""An event's exchange time (the sort key of a bar's events)."""


@dataclass(slots=True)
class Bar:
    """One coin's closed bar: the events of ``[open_ms, close_ms)``, sorted by exchange time.

    Trade aggregates use the exchange's aggressor side exactly (``B`` buys, ``A`` sells).
    """

    coin: str
    open_ms: int
    close_ms: int
    trades: list[Trades] = field(default_factory=list)
    books: list[BookSnapshot] = field(default_factory=list)
    bbos: list[Bbo] = field(default_factory=list)
    mids: list[Mid] = field(default_factory=list)
    ctxs: list[AssetCtx] = field(default_factory=list)
    candles: list[Candle] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    trade_count: int = 0
    buy_sz: float = 0.0
    sell_sz: float = 0.0
    buy_ntl: float = 0.0
    sell_ntl: float = 0.0
    high_px: float | None = None
    low_px: float | None = None
    first_trade_px: float | None = None
    last_trade_px: float | None = None

    @classmethod
    def from_events(cls, coin: str, open_ms: int, bar_ms: int, events: list[Event]) -> Bar:
        """Summarise a window's events (in any order) into a bar.

        The events are put in exchange-time order by a stable sort (keyed in C; a window's
        events mostly arrive in order, which the sort checks in one pass).
        """
        bar = cls(coin, open_ms, open_ms + bar_ms)
        by_kind: tuple[list[Any], ...] = (  # indexed by Kind (a test checks the order)
            bar.trades,
            bar.books,
            bar.bbos,
            bar.candles,
            bar.mids,
            bar.ctxs,
            bar.gaps,
        )
        for e in sorted(events, key=_TIME_MS):
            by_kind[e.KIND].append(e)
        trades = bar.trades
        if trades:
            first = trades[0]
            hi = first.high_px
            lo = first.low_px
            count = 0
            buy_sz = sell_sz = buy_ntl = sell_ntl = 0.0
            for t in trades:
                count += len(t.prints)
                buy_sz += t.buy_sz
                sell_sz += t.sell_sz
                buy_ntl += t.buy_ntl
                sell_ntl += t.sell_ntl
                if t.high_px > hi:  # max(hi, t.high_px)
                    hi = t.high_px
                if t.low_px < lo:  # min(lo, t.low_px)
                    lo = t.low_px
            bar.trade_count = count
            bar.buy_sz, bar.sell_sz, bar.buy_ntl, bar.sell_ntl = buy_sz, sell_sz, buy_ntl, sell_ntl
            bar.high_px, bar.low_px = hi, lo
            bar.first_trade_px = first.first_px
            bar.last_trade_px = trades[-1].last_px
        return bar

    @property
    def volume(self) -> float:
        """Traded base-coin volume."""
        return self.buy_sz + self.sell_sz

    @property
    def notional(self) -> float:
        """Traded notional in USD (quote)."""
        return self.buy_ntl + self.sell_ntl

    @property
    def vwap_px(self) -> float | None:
        """Volume-weighted average trade price, None without trades."""
        vol = self.volume
        return self.notional / vol if vol > 0 else None

    @property
    def book(self) -> BookSnapshot | None:
        """The latest book snapshot in the bar."""
        return self.books[-1] if self.books else None

    @property
    def bbo(self) -> Bbo | None:
        """The latest best bid/offer in the bar."""
        return self.bbos[-1] if self.bbos else None

    @property
    def mid(self) -> Mid | None:
        """The latest ``allMids`` mid in the bar."""
        return self.mids[-1] if self.mids else None

    @property
    def ctx(self) -> AssetCtx | None:
        """The latest asset context in the bar."""
        return self.ctxs[-1] if self.ctxs else None

    def stream_stats(self) -> dict[Stream, tuple[int, int]]:
        """Per stream present in the bar: ``(count, last exchange time ms)``."""
        out: dict[Stream, tuple[int, int]] = {}
        for stream, items in (
            (Stream.TRADES, self.trades),
            (Stream.L2BOOK, self.books),
            (Stream.BBO, self.bbos),
            (Stream.ALL_MIDS, self.mids),
            (Stream.ACTIVE_ASSET_CTX, self.ctxs),
            (Stream.CANDLE, self.candles),
        ):
            if items:
                out[stream] = (len(items), items[-1].time_ms)
        return out


class EventGroup:
    """Consecutive events of one coin that fall in the same bar, from one runtime batch.

    Grouping before the window cuts Bytewax's per-item windowing cost several-fold. The group is
    stamped with its newest event time, so it is accepted exactly when its bar is still open.
    """

    __slots__ = ("events", "time_ms")

    def __init__(self, events: list[Event], time_ms: int) -> None:
        self.events = events
        self.time_ms = time_ms


def _group_time(g: EventGroup) -> datetime:
    return _at(g.time_ms)


def grouper(
    bar_ms: int,
    lateness_ms: int,
    step_id: str = "fold_bars_group",
    routes: Mapping[str, str] | None = None,
) -> Callable[[list[Event]], list[tuple[str, EventGroup]]]:
    """A batch mapper: events → ``(coin, EventGroup)`` per coin and bar, in first-seen order.

    ``routes`` keys a coin's groups by its route key instead of its name (a balanced cluster
    replay, `connectors.routing.balanced_routes`); a coin not in it is keyed by its name.

    Lateness keeps its per-event meaning: an event is late iff it is more than ``lateness_ms``
    behind the newest event of its coin seen before it (the `EventClock` watermark with a frozen
    wall clock). Such an event is not grouped but emitted on its own after every group of the
    batch, stamped with its own time, so the window judges it late; groups go out oldest stamp
    first, so none raises the watermark past a group still to come. The result does not depend on
    how the input was batched. An event whose time is outside ``MIN_TIME_MS..MAX_TIME_MS`` is
    dropped and counted as an error of ``step_id`` (it would stop the flow in the window).
    """
    newest: dict[str, int] = {}

    def group(batch: list[Event]) -> list[tuple[str, EventGroup]]:
        groups: dict[tuple[str, int], EventGroup] = {}
        stragglers: list[tuple[str, EventGroup]] = []
        for e in batch:
            t = e.time_ms
            coin = e.coin
            if not MIN_TIME_MS <= t <= MAX_TIME_MS:
                bound = Bound(MIN_TIME_MS, MAX_TIME_MS)
                STEP_ERRORS.record(step_id, coin, RangeError("event.time_ms", t, bound))
                continue
            top = newest.get(coin)
            if top is None or t > top:
                newest[coin] = t
            elif t < top - lateness_ms:
                stragglers.append((coin, EventGroup([e], t)))
                continue
            key = (coin, t // bar_ms)
            g = groups.get(key)
            if g is None:
                groups[key] = EventGroup([e], t)
            else:
                g.events.append(e)
                if t > g.time_ms:
                    g.time_ms = t
        # Newest-last, so no group raises a coin's watermark past a group still to come.
        out = sorted(((coin, g) for (coin, _), g in groups.items()), key=_stamp)
        out.extend(stragglers)
        if routes:
            out = [(routes.get(coin, coin), g) for coin, g in out]
        return out

    return group


def _stamp(item: tuple[str, EventGroup]) -> int:
    return item[1].time_ms


class _InOrderLogic(_SlidingWindowerLogic):
    """Tumbling-window logic that reports closed windows oldest first.

    Bytewax 0.21.1 closes windows in the order they were *opened*: an on-time event of bar k
    that arrives after bar k+1 opened makes k+1 close first when one watermark step closes both,
    and a coin's features would see its bars out of order. Sorting by window id fixes that.
    """

    @override
    def close_for(self, watermark: datetime) -> list[tuple[int, WindowMetadata]]:
        return sorted(super().close_for(watermark), key=_window_id)


def _window_id(item: tuple[int, WindowMetadata]) -> int:
    return item[0]


@dataclass
class InOrderTumblingWindower(TumblingWindower):
    """`TumblingWindower` whose windows close in time order (see `_InOrderLogic`)."""

    @override
    def build(self, resume_state: _SlidingWindowerState | None) -> _SlidingWindowerLogic:
        state = resume_state if resume_state is not None else _SlidingWindowerState()
        return _InOrderLogic(self.length, self.length, self.align_to, state)


def _extend(acc: list[Event], g: EventGroup) -> list[Event]:
    acc.extend(g.events)
    return acc


def _concat(a: list[Event], b: list[Event]) -> list[Event]:
    return a + b


def _frozen_now() -> datetime:
    return EPOCH


def _never(_t: datetime) -> None:
    return None


def make_clock(
    lateness_ms: int, *, live: bool, lag_margin_ms: int = 1000
) -> EventClock[EventGroup]:
    """The event-time clock for bars (see the module docstring for replay vs live)."""
    wait = timedelta(milliseconds=lateness_ms)
    if live:
        ahead = wait + timedelta(milliseconds=lag_margin_ms)

        def to_system(t: datetime) -> datetime:
            return t + ahead

        return EventClock(_group_time, wait_for_system_duration=wait, to_system_utc=to_system)
    return EventClock(
        _group_time, wait_for_system_duration=wait, now_getter=_frozen_now, to_system_utc=_never
    )


def fold_bars(
    step_id: str,
    up: BxStream[Event],
    *,
    bar_ms: int,
    lateness_ms: int,
    live: bool = False,
    clock: EventClock[EventGroup] | None = None,
    routes: Mapping[str, str] | None = None,
) -> tuple[KeyedStream[Bar], KeyedStream[Event]]:
    """Fold events into closed per-coin bars; returns ``(bars, late_events)``, both keyed by coin.

    Steps: ``{step_id}_group`` (batch → per coin-and-bar groups, keyed by coin), ``{step_id}``
    (the tumbling event-time window), ``{step_id}_close`` (summarise each closed window as a
    `Bar`) and ``{step_id}_late`` (late groups back to events).

    Args:
        step_id: Bytewax step id of the windowing step.
        up: typed events (any coin).
        bar_ms: bar length in ms.
        lateness_ms: allowed lateness: how far behind a coin's newest event time an event may
            arrive and still count.
        live: use the live clock (wall time advances the watermark).
        clock: override the clock (tests).
        routes: the route key of each coin that is not keyed by its name (`grouper`); the
            bars and late events are keyed by it, and carry their coin.
    """
    if bar_ms <= 0:
        msg = f"bar_ms must be positive, got {bar_ms!r}"
        raise ValueError(msg)
    if lateness_ms < 0:
        msg = f"lateness_ms must be >= 0, got {lateness_ms!r}"
        raise ValueError(msg)
    clk = clock if clock is not None else make_clock(lateness_ms, live=live)
    keyed: KeyedStream[EventGroup] = op.flat_map_batch(
        f"{step_id}_group", up, grouper(bar_ms, lateness_ms, f"{step_id}_group", routes)
    )
    windower = InOrderTumblingWindower(length=timedelta(milliseconds=bar_ms), align_to=EPOCH)
    wo = win.fold_window(
        step_id, keyed, clk, windower, builder=list, folder=_extend, merger=_concat, ordered=False
    )

    def close(item: tuple[str, tuple[int, list[Event]]]) -> tuple[str, Bar]:
        key, (window_id, events) = item
        coin = events[0].coin if routes else key  # a window holds at least one event
        return key, Bar.from_events(coin, window_id * bar_ms, bar_ms, events)

    bars: KeyedStream[Bar] = op.map(f"{step_id}_close", wo.down, close)
    late: KeyedStream[Event] = op.flat_map(f"{step_id}_late", wo.late, _late_events)
    return bars, late


def _late_events(item: tuple[str, tuple[int, EventGroup]]) -> list[tuple[str, Event]]:
    coin, (_, group) = item
    return [(coin, e) for e in group.events]


__all__ = ["Bar", "EventGroup", "event_time", "fold_bars", "grouper", "make_clock"]
