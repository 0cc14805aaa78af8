"""The market state the feed builds, and the data streams served from it.

Each feed frame updates the state and is fanned out: ``trades`` (deduplicated by ``(coin, time,
tid)``, never older than the last one sent for a coin; the last 30 are replayed after each
subscribe), ``l2Book`` (20 levels, 5 with ``fast``, optional ``nSigFigs``/``mantissa``
aggregation), ``bbo``, ``candle`` (`tools.fake_exchange.candles`), ``activeAssetCtx`` and
``allMids``. Derived streams: ``bbo`` comes from books when the feed has no ``bbo`` for a coin;
``allMids`` from books/bbo (every 5 s) when the feed has none. Coins without feed data stream
empty books on the feed's book clock.

Exchange times (``time`` of trades/l2Book/bbo, candle ``t``/``T``) are re-stamped to the current
wall clock (`Restamp`): ``new = wall_at_feed_start + (time - first_feed_time) / speed``, so the
original spacing is kept and data looks fresh.

Imports `tools.fake_exchange.candles`, `.feeds`, `.protocol`, `.stats` and `.subscriptions`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any, Final

from tools.fake_exchange.candles import Candles
from tools.fake_exchange.feeds import FeedInfo, Universe
from tools.fake_exchange.protocol import CANDLE_INTERVALS_MS, Sub, dumps, fmt_dec, now_ms
from tools.fake_exchange.stats import ExchangeStats
from tools.fake_exchange.subscriptions import Subscriptions

log = logging.getLogger(__name__)

REPLAY_TRADES: Final = 30
BOOK_LEVELS: Final = 20
FAST_BOOK_LEVELS: Final = 5
ALL_MIDS_INTERVAL_S: Final = 5.0
_DEDUPE_MAX: Final = 200_000


@dataclass(frozen=True)
class Restamp:
    """Feed exchange time (ms) → wall-clock ms: ``wall_ms + (t - f0_ms) / speed``."""

    wall_ms: float
    f0_ms: float
    speed: float

    def __call__(self, t_ms: int) -> int:
        return round(self.wall_ms + (t_ms - self.f0_ms) / self.speed)


def aggregate(side: list[Any], bids: bool, n_sig: int, mantissa: int | None) -> list[Any]:
    """Merge book levels into ``n_sig`` significant-figure buckets (× ``mantissa``).

    The bucket size follows the real server (BTC ≈ 84,143: nSigFigs 5 → 1, mantissa 2 → 2,
    nSigFigs 4 → 10, 3 → 100, 2 → 1,000); bids round down, asks up; ``sz`` and ``n`` add up.
    """
    if not side:
        return []
    top = Decimal(side[0]["px"])
    step = Decimal(1).scaleb(top.adjusted() - n_sig + 1) * (mantissa or 1)
    rounding = ROUND_FLOOR if bids else ROUND_CEILING
    merged: dict[Decimal, list[Any]] = {}
    for level in side:
        px = (Decimal(level["px"]) / step).to_integral_value(rounding=rounding) * step
        acc = merged.get(px)
        if acc is None:
            merged[px] = [Decimal(level["sz"]), int(level["n"])]
        else:
            acc[0] += Decimal(level["sz"])
            acc[1] += int(level["n"])
    return [{"px": fmt_dec(px), "sz": fmt_dec(sz), "n": n} for px, (sz, n) in merged.items()]


def render_book(book: dict[str, Any], sub: Sub) -> str:
    """The ``l2Book`` frame of ``book`` for one subscription variant (depth, aggregation)."""
    bids, asks = book["levels"]
    if sub.n_sig_figs is not None:
        bids = aggregate(bids, True, sub.n_sig_figs, sub.mantissa)
        asks = aggregate(asks, False, sub.n_sig_figs, sub.mantissa)
    depth = FAST_BOOK_LEVELS if sub.fast else BOOK_LEVELS
    data: dict[str, Any] = {
        "coin": book["coin"],
        "time": book["time"],
        "levels": [bids[:depth], asks[:depth]],
    }
    if sub.fast:
        data["fast"] = True
    return dumps({"channel": "l2Book", "data": data})


class Market:
    """Trades, books, bbo, asset contexts, mids and candles, as the feed has set them.

    Args:
        info: what the feed contains.
        universe: the coins served.
        subs: where new data is published.
        stats: the counters to update.
        speed: the replay speed (for re-stamping).
    """

    def __init__(
        self,
        info: FeedInfo,
        universe: Universe,
        subs: Subscriptions,
        stats: ExchangeStats,
        speed: float,
    ) -> None:
        self.info = info
        self.universe = universe
        self.subs = subs
        self.stats = stats
        self.speed = speed
        self.clock = Restamp(float(now_ms()), 0.0, speed)
        self.trade_keys: dict[tuple[Any, ...], None] = {}
        self.last_time: dict[tuple[str, str], int] = {}
        self.history: dict[str, deque[dict[str, Any]]] = {}
        self.books: dict[str, dict[str, Any]] = {}
        self.bbos: dict[str, dict[str, Any]] = {}
        self.ctxs: dict[str, dict[str, Any]] = {}
        self.feed_mids: dict[str, str] | None = None  # the feed's latest allMids
        self.derived_mids: dict[str, str] = {}  # from books/bbo (else the last trade)
        self.candles = Candles(subs)
        self.book_round = -1

    def begin_pass(self, wall_ms: float, f0_ns: int) -> None:
        """Map feed time ``f0_ns`` to wall-clock ``wall_ms`` (a new feed pass begins)."""
        self.clock = Restamp(wall_ms, f0_ns / 1e6, self.speed)
        self.trade_keys.clear()

    def process(self, frame: dict[str, Any]) -> None:
        """Apply one feed frame to the market state and fan it out."""
        self.stats.feed_frames += 1
        channel = frame["channel"]
        data = frame["data"]
        try:
            if channel == "trades":
                self._on_trades(data)
            elif channel == "l2Book":
                self._on_book(data)
            elif channel == "bbo":
                self._on_bbo(data)
            elif channel == "activeAssetCtx":
                self._on_ctx(data)
            elif channel == "allMids":
                self._on_mids(data)
            elif channel == "candle":
                for item in data if type(data) is list else (data,):
                    self._on_candle(item)
        except (
            KeyError,
            TypeError,
            ValueError,
            IndexError,
            AttributeError,
            InvalidOperation,
        ) as ex:
            self.stats.feed_errors += 1
            log.debug("unusable %s frame: %r", channel, ex)

    def _stamp(self, channel: str, coin: str, t: Any) -> int:
        if type(t) is not int:
            msg = f"{channel} time is not an integer"
            raise TypeError(msg)
        new = self.clock(t)
        key = (channel, coin)
        last = self.last_time.get(key)
        if last is not None and new < last:
            new = last
        self.last_time[key] = new
        return new

    def _on_trades(self, data: Any) -> None:
        if type(data) is not list:
            msg = "trades data is not an array"
            raise TypeError(msg)
        keys = self.trade_keys
        by_coin: dict[str, list[dict[str, Any]]] = {}
        for trade in data:
            coin = trade["coin"]
            t = trade["time"]
            if type(coin) is not str or type(t) is not int:
                continue
            key = (coin, t, trade.get("tid"))
            if key in keys:
                continue
            keys[key] = None
            new_t = self.clock(t)
            last = self.last_time.get(("trades", coin))
            if last is not None and new_t < last:
                continue  # older than what was already sent (a later pass's replay)
            self.last_time[("trades", coin)] = new_t
            by_coin.setdefault(coin, []).append({**trade, "time": new_t})
        if len(keys) > _DEDUPE_MAX:
            for old in list(keys)[: _DEDUPE_MAX // 2]:
                del keys[old]
        for coin, trades in by_coin.items():
            history = self.history.get(coin)
            if history is None:
                history = self.history[coin] = deque(maxlen=REPLAY_TRADES)
            history.extend(trades)
            for trade in trades:
                self.candles.trade(coin, trade["time"], trade["px"], Decimal(trade["sz"]))
            info = self.info
            if coin not in info.book_coins | info.bbo_coins:
                self.derived_mids[coin] = trades[-1]["px"]  # no book: the last trade stands in
            self.subs.publish_frame(("trades", coin, ""), {"channel": "trades", "data": trades})

    def _on_candle(self, data: dict[str, Any]) -> None:
        coin = data["s"]
        interval = data["i"]
        if coin in self.info.trade_coins or interval not in CANDLE_INTERVALS_MS:
            return  # candles of coins with trades are built from the trades
        t = self._stamp("candle", f"{coin}/{interval}", data["t"])
        self.candles.relay(coin, interval, t, data)

    def _on_book(self, data: dict[str, Any]) -> None:
        coin = data["coin"]
        levels = data["levels"]
        if type(coin) is not str or type(levels) is not list or len(levels) != 2:
            msg = "l2Book without coin or [bids, asks]"
            raise ValueError(msg)
        t = self._stamp("l2Book", coin, data["time"])
        bids, asks = list(levels[0]), list(levels[1])
        book = {"coin": coin, "time": t, "levels": [bids, asks]}
        self.books[coin] = book
        route = ("l2Book", coin, "")
        subs = self.subs
        if subs.has_subscribers(route):
            subs.publish(route, "l2Book", functools.partial(render_book, book))
        if t > self.book_round:  # a new push round: every book shares its time
            self.book_round = t
            for other in self.universe.bookless:
                other_route = ("l2Book", other, "")
                if subs.has_subscribers(other_route):
                    empty = {"coin": other, "time": t, "levels": [[], []]}
                    subs.publish(other_route, "l2Book", functools.partial(render_book, empty))
        bid = bids[0] if bids else None
        ask = asks[0] if asks else None
        if coin not in self.info.bbo_coins:
            last = self.bbos.get(coin)
            if last is None or last["bbo"] != [bid, ask]:
                self._set_bbo({"coin": coin, "time": t, "bbo": [bid, ask]})
        self._derive_mid(coin, bid, ask)

    def _on_bbo(self, data: dict[str, Any]) -> None:
        coin = data["coin"]
        bid, ask = data["bbo"]
        if type(coin) is not str:
            msg = "bbo without coin"
            raise TypeError(msg)
        self._set_bbo(
            {"coin": coin, "time": self._stamp("bbo", coin, data["time"]), "bbo": [bid, ask]}
        )
        self._derive_mid(coin, bid, ask)

    def _set_bbo(self, bbo: dict[str, Any]) -> None:
        coin = bbo["coin"]
        self.bbos[coin] = bbo
        self.subs.publish_frame(("bbo", coin, ""), {"channel": "bbo", "data": bbo})

    def _derive_mid(self, coin: str, bid: Any, ask: Any) -> None:
        if not bid or not ask:
            return
        self.derived_mids[coin] = fmt_dec((Decimal(bid["px"]) + Decimal(ask["px"])) / 2)

    def mids(self) -> dict[str, str]:
        """Current mids: the feed's last ``allMids``, else (or until then) derived ones."""
        return dict(self.feed_mids if self.feed_mids is not None else self.derived_mids)

    def _on_ctx(self, data: dict[str, Any]) -> None:
        coin = data["coin"]
        ctx = data["ctx"]
        if type(coin) is not str or type(ctx) is not dict:
            msg = "activeAssetCtx without coin or ctx"
            raise TypeError(msg)
        payload = {"coin": coin, "ctx": ctx}
        self.ctxs[coin] = payload
        self.subs.publish_frame(
            ("activeAssetCtx", coin, ""), {"channel": "activeAssetCtx", "data": payload}
        )

    def _on_mids(self, data: dict[str, Any]) -> None:
        if data.get("dex"):
            return  # only the first dex is served
        mids = data["mids"]
        if type(mids) is not dict:
            msg = "allMids without mids"
            raise TypeError(msg)
        self.feed_mids = dict(mids)
        self.subs.publish_frame(("allMids", "", ""), {"channel": "allMids", "data": {"mids": mids}})

    async def derive_mids(self) -> None:
        """Publish the derived mids every `ALL_MIDS_INTERVAL_S` (a task when the feed has none)."""
        while True:
            await asyncio.sleep(ALL_MIDS_INTERVAL_S)
            if self.derived_mids:
                frame = {"channel": "allMids", "data": {"mids": dict(self.derived_mids)}}
                self.subs.publish_frame(("allMids", "", ""), frame)

    def book_clock(self) -> int:
        """The time of the latest book push round (all books share it), else now."""
        return self.book_round if self.book_round >= 0 else now_ms()

    def empty_book(self, coin: str) -> dict[str, Any]:
        """An empty book of ``coin`` at the book clock."""
        return {"coin": coin, "time": self.book_clock(), "levels": [[], []]}

    def snapshot(self, sub: Sub) -> str | None:
        """The first data after an ack: trades replay, current book/bbo/candle/ctx/mids."""
        frame: dict[str, Any] | None = None
        coin = sub.coin
        if sub.type == "trades":
            frame = {"channel": "trades", "data": list(self.history.get(coin, ()))}
        elif sub.type == "l2Book":
            book = self.books.get(coin)
            if book is None and coin in self.universe.bookless:
                book = self.empty_book(coin)
            if book is not None:
                return render_book(book, sub)
        elif sub.type == "bbo":
            bbo = self.bbos.get(coin)
            if bbo is None and coin in self.universe.bookless:
                bbo = {"coin": coin, "time": self.book_clock(), "bbo": [None, None]}
            if bbo is not None:
                frame = {"channel": "bbo", "data": bbo}
        elif sub.type == "candle":
            last = self.candles.last(coin, sub.interval)
            if last is not None:
                frame = {"channel": "candle", "data": last.wire(coin, sub.interval)}
        elif sub.type == "activeAssetCtx":
            ctx = self.ctxs.get(coin)
            if ctx is not None:
                frame = {"channel": "activeAssetCtx", "data": ctx}
        elif sub.type == "allMids" and self.mids():
            frame = {"channel": "allMids", "data": {"mids": self.mids()}}
        return None if frame is None else dumps(frame)
