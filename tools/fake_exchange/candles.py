"""Candles: every interval of every coin, built from trades or relayed from the feed.

Candles of all 14 intervals are built from the feed's trades; feed ``candle`` frames are relayed
only for coins without trades. A candle is pushed when its bucket closes (its final state) and,
while it changes, about once a second (`CANDLE_PUSH_INTERVAL_S`). Each (coin, interval) keeps at
most `MAX_CANDLES` candles for ``candleSnapshot`` (at most `CANDLE_SNAPSHOT_LIMIT` per answer).

Imports `tools.fake_exchange.protocol` and `.subscriptions`.
"""

from __future__ import annotations

import asyncio
import bisect
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from tools.fake_exchange.protocol import CANDLE_INTERVALS_MS, fmt_dec
from tools.fake_exchange.subscriptions import Subscriptions

MAX_CANDLES: Final = 5000
CANDLE_SNAPSHOT_LIMIT: Final = 500
CANDLE_PUSH_INTERVAL_S: Final = 1.0


def bucket(t_ms: int, interval: str) -> tuple[int, int]:
    """Open and close time (ms) of the ``interval`` candle holding ``t_ms``."""
    size = CANDLE_INTERVALS_MS[interval]
    if size:
        start = t_ms - t_ms % size
        return start, start + size - 1
    d = datetime.fromtimestamp(t_ms / 1000, tz=UTC)
    first = datetime(d.year, d.month, 1, tzinfo=UTC)
    nxt = datetime(d.year + (d.month == 12), d.month % 12 + 1, 1, tzinfo=UTC)
    return int(first.timestamp()) * 1000, int(nxt.timestamp()) * 1000 - 1


class Candle:
    """One candle; ``dirty`` until its current state has been pushed."""

    __slots__ = ("close_t", "dirty", "h", "hd", "l", "ld", "n", "o", "px", "t", "v")

    def __init__(
        self, t: int, close_t: int, o: str, h: str, low: str, c: str, v: Decimal, n: int
    ) -> None:
        self.t = t
        self.close_t = close_t
        self.o = o
        self.h = h
        self.hd = Decimal(h)
        self.l = low
        self.ld = Decimal(low)
        self.px = c
        self.v = v
        self.n = n
        self.dirty = True

    def add(self, px: str, pxd: Decimal, sz: Decimal) -> None:
        """Account one trade at ``px`` (``pxd`` as a Decimal) of size ``sz``."""
        self.px = px
        if pxd > self.hd:
            self.h, self.hd = px, pxd
        if pxd < self.ld:
            self.l, self.ld = px, pxd
        self.v += sz
        self.n += 1
        self.dirty = True

    def wire(self, coin: str, interval: str) -> dict[str, Any]:
        """The candle as the exchange sends it."""
        return {
            "t": self.t,
            "T": self.close_t,
            "s": coin,
            "i": interval,
            "o": self.o,
            "c": self.px,
            "h": self.h,
            "l": self.l,
            "v": fmt_dec(self.v),
            "n": self.n,
        }


class Series:
    """The candles of one (coin, interval), ascending, at most `MAX_CANDLES`."""

    def __init__(self) -> None:
        self.ts: list[int] = []
        self.candles: list[Candle] = []

    def last(self) -> Candle | None:
        """The newest candle, if any."""
        return self.candles[-1] if self.candles else None

    def upsert(self, candle: Candle) -> None:
        """Insert ``candle`` in time order (replacing one with the same open time)."""
        i = bisect.bisect_left(self.ts, candle.t)
        if i < len(self.ts) and self.ts[i] == candle.t:
            self.candles[i] = candle
            return
        self.ts.insert(i, candle.t)
        self.candles.insert(i, candle)
        if len(self.ts) > MAX_CANDLES:
            del self.ts[0]
            del self.candles[0]

    def between(self, start: int, end: int) -> list[Candle]:
        """Candles overlapping ``[start, end]`` (the first may open before ``start``)."""
        i = bisect.bisect_left(self.ts, start)
        if i > 0 and self.candles[i - 1].close_t >= start:
            i -= 1
        out: list[Candle] = []
        for candle in self.candles[i:]:
            if candle.t > end or len(out) >= CANDLE_SNAPSHOT_LIMIT:
                break
            out.append(candle)
        return out


class Candles:
    """The candle series of every (coin, interval) and their pushes to subscribers."""

    def __init__(self, subs: Subscriptions) -> None:
        self.subs = subs
        self.series: dict[tuple[str, str], Series] = {}
        self.dirty: set[tuple[str, str]] = set()

    def _series(self, key: tuple[str, str]) -> Series:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series()
        return series

    def last(self, coin: str, interval: str) -> Candle | None:
        """The newest candle of ``coin`` at ``interval``, if any."""
        series = self.series.get((coin, interval))
        return series.last() if series is not None else None

    def trade(self, coin: str, t: int, px: str, sz: Decimal) -> None:
        """Account a (re-stamped) trade in every interval's candle of ``coin``."""
        pxd = Decimal(px)
        for interval in CANDLE_INTERVALS_MS:
            key = (coin, interval)
            series = self._series(key)
            last = series.last()
            start, close_t = bucket(t, interval)
            if last is not None and start == last.t:
                last.add(px, pxd, sz)
            elif last is None or start > last.t:
                if last is not None and last.dirty:
                    self.push(coin, interval, last)  # the final state of the bar
                series.upsert(Candle(start, close_t, px, px, px, px, sz, 1))
            else:
                continue
            self.dirty.add(key)

    def relay(self, coin: str, interval: str, t: int, data: dict[str, Any]) -> None:
        """Store and push a feed candle ``data`` whose (re-stamped) open time is ``t``."""
        start, close_t = bucket(t, interval)
        candle = Candle(
            start, close_t, data["o"], data["h"], data["l"], data["c"], Decimal(data["v"]), 0
        )
        candle.n = int(data.get("n") or 0)
        self._series((coin, interval)).upsert(candle)
        self.push(coin, interval, candle)

    def push(self, coin: str, interval: str, candle: Candle) -> None:
        """Send ``candle``'s current state to its subscribers (it is no longer dirty)."""
        candle.dirty = False
        route = ("candle", coin, interval)
        if self.subs.has_subscribers(route):
            frame = {"channel": "candle", "data": candle.wire(coin, interval)}
            self.subs.publish_frame(route, frame)

    async def run(self) -> None:
        """Push the candles that changed, every `CANDLE_PUSH_INTERVAL_S` (a server task)."""
        while True:
            await asyncio.sleep(CANDLE_PUSH_INTERVAL_S)
            dirty, self.dirty = self.dirty, set()
            for coin, interval in dirty:
                last = self.series[(coin, interval)].last()
                if last is not None and last.dirty:
                    self.push(coin, interval, last)
