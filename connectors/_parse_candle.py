"""``candle`` frames → closed `Candle` events.

``candle`` carries ONE object, re-pushed while the candle is open; only closed candles count. A
candle closes when the next bucket starts, or when its close time has passed on the source's
clock (checked after every frame while a candle is open).
"""

from __future__ import annotations

from typing import Any, Final

from connectors._parse_core import ParserCore
from connectors.errors import FrameError
from connectors.events import Candle, Event
from connectors.validate import coin_name, price, size

_MAX_CANDLE_MS: Final = 31 * 86_400_000
"""The longest candle the exchange serves (1M)."""


class CandleParser(ParserCore):
    """The ``candle`` channel and the closing of open candles."""

    def _candle(self, data: Any, recv_ms: int | None) -> list[Event]:
        if type(data) is list:  # tolerate the documented-but-wrong array form
            out: list[Event] = []
            for item in data:
                out.extend(self._candle(item, recv_ms))
            return out
        coin = coin_name(data["s"], "candle")
        interval = data["i"]
        t = data["t"]
        if type(interval) is not str or not interval:
            raise FrameError("bad_candle", f"interval {str(interval)[:20]!r} is not a string")
        if type(t) is not int:
            raise FrameError("bad_candle", "t missing or not an integer")
        # An open candle's close time T lies ahead: the future is judged on its open time t.
        t = self._time(t, recv_ms, "candle")
        close_t = data["T"]
        if type(close_t) is not int:
            raise FrameError("bad_time", f"candle: close time {str(close_t)[:40]!r} is not an int")
        if close_t < t or close_t - t > _MAX_CANDLE_MS:
            raise FrameError("bad_candle", f"close time T {close_t} vs open time t {t}")
        n = data.get("n") or 0
        if type(n) is not int or n < 0:
            raise FrameError("bad_candle", f"trade count n {str(n)[:20]!r} is not an int >= 0")
        w = "candle"
        candle = Candle(
            coin,
            close_t,
            recv_ms,
            interval,
            t,
            price(data["o"], w),
            price(data["h"], w),
            price(data["l"], w),
            price(data["c"], w),
            size(data["v"], w),
            n,
        )
        if not (candle.low <= min(candle.o, candle.c) and candle.h >= max(candle.o, candle.c)):
            msg = f"candle o/h/l/c {candle.o}/{candle.h}/{candle.low}/{candle.c} inconsistent"
            raise FrameError("bad_candle", msg)
        if not self._keep(coin):
            return []
        key = (coin, candle.interval)
        closed_t = self._closed_t.get(key)
        if closed_t is not None and t <= closed_t:
            return []  # a re-push of a bucket already counted, or an older one
        out = []
        pending = self._open_candles.get(key)
        if pending is not None and pending.open_ms < t:
            # A new bucket started: the previous push was the final bar of its bucket.
            del self._open_candles[key]
            self._closed_t[key] = pending.open_ms
            out.append(pending)
        now = recv_ms if recv_ms is not None else self.latest_ms
        if now is not None and close_t < now:
            self._open_candles.pop(key, None)
            self._closed_t[key] = t
            self._see(close_t)
            out.append(candle)
        else:
            self._open_candles[key] = candle
            due = self._candles_due_ms
            if due is None or close_t < due:
                self._candles_due_ms = close_t
        return out

    def _close_due_candles(self, recv_ms: int | None, out: list[Event]) -> None:
        """Close open candles whose close time has passed on the source's clock.

        The open candles are looked at only once the clock has passed the earliest close time
        among them (`_candles_due_ms`, a lower bound kept as candles open and recomputed here).
        """
        now = recv_ms if recv_ms is not None else self.latest_ms
        if now is None:
            return
        due = self._candles_due_ms
        if due is not None and now <= due:
            return
        due = None
        for key, candle in list(self._open_candles.items()):
            if candle.time_ms < now:
                del self._open_candles[key]
                self._closed_t[key] = candle.open_ms
                out.append(candle)
            elif due is None or candle.time_ms < due:
                due = candle.time_ms
        self._candles_due_ms = due
