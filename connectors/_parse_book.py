"""``l2Book`` and ``bbo`` frames → `BookSnapshot` and `Bbo` events, with their checks.

A book's levels stay raw JSON in the `BookSnapshot` (read lazily by the bars); they are checked
here once: finite prices > 0, sizes >= 0, each side strictly in order, best bid below best ask.
A bbo's two sides likewise (either may be absent): not crossed or locked.
"""

from __future__ import annotations

from typing import Any

import msgspec

from connectors._parse_core import ParserCore
from connectors._parse_wire import BboData
from connectors.errors import FrameError
from connectors.events import Bbo, BookSnapshot, Event
from connectors.validate import check_levels, check_order, check_quote, coin_name, price, size


class BookParser(ParserCore):
    """The ``l2Book`` and ``bbo`` channels (general and typed paths)."""

    def _book(self, data: Any, recv_ms: int | None) -> list[Event]:
        levels = data["levels"]
        if type(levels) is not list or len(levels) != 2:
            raise FrameError("bad_l2Book", "levels is not [bids, asks]")
        bids, asks = levels
        if type(bids) is not list or type(asks) is not list:
            raise FrameError("bad_l2Book", "a book side is not an array")
        for lv in (*bids, *asks):
            if type(lv) is not dict or any(type(lv.get(k)) is bool for k in ("px", "sz", "n")):
                raise FrameError("bad_l2Book", f"a level is not a number object: {lv!r:.80}")
        return self._book_event(data["coin"], data["time"], recv_ms, (bids, asks))

    def _book_event(
        self, coin: Any, t: Any, recv_ms: int | None, levels: tuple[list[Any], list[Any]] | Any
    ) -> list[Event]:
        coin = coin_name(coin, "l2Book")
        t = self._time(t, recv_ms, "l2Book")
        book = BookSnapshot(coin, t, recv_ms, levels)
        try:
            prices = book.load()
        except msgspec.ValidationError as ex:
            raise FrameError(_level_reason(str(ex)), f"l2Book level: {ex}") from None
        except msgspec.DecodeError as ex:
            raise FrameError("bad_l2Book", f"unreadable levels: {ex}") from None
        if prices is not None:
            check_order(prices[0], prices[1], "l2Book")
        else:
            sides = book.sides()
            if book.error is not None:
                raise FrameError("bad_l2Book", book.error)
            check_levels(sides, "l2Book")
        self._see(t)
        return [book] if self._keep(coin) else []

    def _bbo(self, data: Any, recv_ms: int | None) -> list[Event]:
        coin = coin_name(data["coin"], "bbo")
        t = self._time(data["time"], recv_ms, "bbo")
        bid, ask = data["bbo"]
        e = Bbo(
            coin,
            t,
            recv_ms,
            None if bid is None else price(bid["px"], "bbo"),
            None if bid is None else size(bid["sz"], "bbo"),
            None if ask is None else price(ask["px"], "bbo"),
            None if ask is None else size(ask["sz"], "bbo"),
        )
        _check_bbo(e)
        self._see(t)
        return [e] if self._keep(coin) else []

    def _bbo_typed(self, d: BboData, recv_ms: int | None) -> list[Event]:
        # Coin, prices and sizes were checked by the typed decoder's constraints.
        coin = d.coin
        t = self._times.check(d.time, recv_ms, self.latest_ms, "bbo")
        bid, ask = d.bbo
        e = Bbo(
            coin,
            t,
            recv_ms,
            None if bid is None else bid.px,
            None if bid is None else bid.sz,
            None if ask is None else ask.px,
            None if ask is None else ask.sz,
        )
        if bid is not None and ask is not None and not bid.px < ask.px:
            check_quote(bid.px, ask.px, "bbo")
        self._see(t)
        return [e] if self._keep(coin) else []


def _level_reason(msg: str) -> str:
    """The reason code for a book level the typed decoder's constraints refused."""
    if "Expected `float` >" in msg or "Expected `float` <=" in msg:
        return "bad_price" if msg.endswith(".px`") else "bad_size"
    return "bad_l2Book"


def _check_bbo(e: Bbo) -> None:
    """A bbo's sides: prices > 0, sizes >= 0, finite, not crossed or locked."""
    for px, sz in ((e.bid_px, e.bid_sz), (e.ask_px, e.ask_sz)):
        if px is not None:
            if not (px > 0.0 and px - px == 0.0):
                raise FrameError("bad_price", f"bbo: price {px} is not a finite number > 0")
            if not (sz is not None and sz >= 0.0 and sz - sz == 0.0):
                raise FrameError("bad_size", f"bbo: size {sz} is not a finite number >= 0")
    check_quote(e.bid_px, e.ask_px, "bbo")
