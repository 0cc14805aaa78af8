"""What a frame must be to be accepted: the physical-possibility rules applied at the edge.

`connectors.parse.FrameParser` builds typed events and calls into this module, so nothing
downstream of `connectors/` sees a number that could not have come from a real market:

- coins are non-empty strings; prices finite and > 0; sizes finite and >= 0; no booleans;
- a two-sided quote is neither crossed nor locked (bid < ask); book levels are strictly ordered
  (bids descending, asks ascending) and the best bid is below the best ask;
- an exchange time is an int no later than the receive time + ``max_clock_skew_ms`` and no earlier
  than the receive time − ``max_age_ms`` (7 days); a line without a receive time is compared with
  the newest exchange time already accepted, within ``max_age_ms`` either way (the receive time
  may reject a frame, never stamp it);
- a price lies within ``max_price_jump``× of the median of the coin's last accepted prices
  (`PriceGuard`).

Every rejection is a `FrameError` with a stable reason code (DESIGN.md §2 lists them).
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate
from operator import gt, lt
from typing import Any, Final

from connectors.errors import FrameError
from connectors.events import AssetCtx, Bbo, BookSnapshot, Candle, Event, Mid, Trades

log = logging.getLogger(__name__)

DAY_MS: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class ValidationConfig:
    """The edge's limits (the ``HLSL_*`` settings of the same names)."""

    max_clock_skew_ms: int = 60_000
    """How far an exchange time may run ahead of its receive time."""
    max_age_ms: int = 7 * DAY_MS
    """How far an exchange time may lag its receive time."""
    max_price_jump: float = 10.0
    """A price may differ from the coin's recent median by at most this factor, either way."""
    trust_legacy_control: bool = False
    """Accept ``hlsl.*`` control channels inside ``raw`` (captures written before 0.2)."""
    max_json_depth: int = 64
    """Deepest JSON nesting a frame may have (real frames nest 5 deep)."""
    confirm_first_price: bool = True
    """Hold a coin's first priced events until two agree (off: the first price is the reference;
    for tools and tests that check source order event by event)."""


# -- scalar rules ------------------------------------------------------------------------------


def coin_name(value: Any, what: str) -> str:
    """A coin: a non-empty string (``FrameError`` ``bad_coin`` otherwise)."""
    if type(value) is not str or not value:
        raise FrameError("bad_coin", f"{what}: coin {str(value)[:40]!r} is not a non-empty string")
    return value


def number(value: Any) -> float:
    """A wire number (decimal string or JSON number, never a boolean) as a finite float."""
    if type(value) is bool:
        msg = f"boolean {value!r} where a number belongs"
        raise ValueError(msg)
    x = float(value)
    if x - x != 0.0:  # NaN or ±inf (cheaper than math.isfinite's call on the hot path)
        msg = f"non-finite number {value!r}"
        raise ValueError(msg)
    return x


def price(value: Any, what: str) -> float:
    """A finite price > 0 (``bad_price``); ValueError for a boolean or unreadable text."""
    if type(value) is bool:
        msg = f"boolean {value!r} where a price belongs"
        raise ValueError(msg)
    x = float(value)
    if not (x > 0.0 and x - x == 0.0):
        raise FrameError("bad_price", f"{what}: price {value!r} is not a finite number > 0")
    return x


def size(value: Any, what: str) -> float:
    """A finite size >= 0 (``bad_size``); ValueError for a boolean or unreadable text."""
    if type(value) is bool:
        msg = f"boolean {value!r} where a size belongs"
        raise ValueError(msg)
    x = float(value)
    if not (x >= 0.0 and x - x == 0.0):
        raise FrameError("bad_size", f"{what}: size {value!r} is not a finite number >= 0")
    return x


def check_quote(bid_px: float | None, ask_px: float | None, what: str) -> None:
    """A two-sided quote must have bid < ask (crossed or locked quotes are not a market)."""
    if bid_px is not None and ask_px is not None and not bid_px < ask_px:
        raise FrameError("crossed_quote", f"{what}: bid {bid_px} is not below ask {ask_px}")


def check_levels(sides: tuple[tuple[float, ...], ...], what: str) -> None:
    """Book sides ``(bid_px, bid_sz, bid_n, ask_px, ask_sz, ask_n)`` are physically possible."""
    bid_px, bid_sz, bid_n, ask_px, ask_sz, ask_n = sides
    for prices, descending in ((bid_px, True), (ask_px, False)):
        prev = 0.0
        for i, px in enumerate(prices):
            if not px > 0.0:
                raise FrameError("bad_price", f"{what}: level price {px} is not > 0")
            if i and (px >= prev if descending else px <= prev):
                raise FrameError("unordered_book", f"{what}: level {i} price {px} out of order")
            prev = px
    for sizes in (bid_sz, ask_sz, bid_n, ask_n):
        for x in sizes:
            if not x >= 0.0:
                raise FrameError("bad_size", f"{what}: level size or count {x} is negative")
    if bid_px and ask_px and not bid_px[0] < ask_px[0]:
        raise FrameError("crossed_quote", f"{what}: best bid {bid_px[0]} >= best ask {ask_px[0]}")


def check_order(bid_px: list[float], ask_px: list[float], what: str) -> None:
    """Book prices strictly ordered (bids descending, asks ascending), best bid < best ask."""
    if len(bid_px) > 1 and not all(map(gt, bid_px, bid_px[1:])):
        raise FrameError("unordered_book", f"{what}: bid prices are not strictly descending")
    if len(ask_px) > 1 and not all(map(lt, ask_px, ask_px[1:])):
        raise FrameError("unordered_book", f"{what}: ask prices are not strictly ascending")
    if bid_px and ask_px and not bid_px[0] < ask_px[0]:
        raise FrameError("crossed_quote", f"{what}: best bid {bid_px[0]} >= best ask {ask_px[0]}")


_JSON_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET: Final = re.compile(rb"[^\[\]{}]+")
_STEP: Final = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth_exceeds(body: bytes, max_depth: int) -> bool:
    """Whether JSON ``body`` nests deeper than ``max_depth`` (arrays and objects; brackets inside
    strings do not count). A byte scan at C speed (regular expressions), no parsing, run before
    a parser that would recurse: frames off the typed fast path, request bodies (`api.security`).
    Invalid JSON is judged by its brackets alone (the parser refuses it afterwards)."""
    if body.count(b"[") + body.count(b"{") <= max_depth:  # the common case: cannot be deeper
        return False
    brackets = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", body))
    step = _STEP
    return any(d > max_depth for d in accumulate(step[b] for b in brackets))


class TimeCheck:
    """Exchange times against the receive time (or the newest accepted time, without one)."""

    def __init__(self, config: ValidationConfig) -> None:
        self.skew_ms = config.max_clock_skew_ms
        self.age_ms = config.max_age_ms

    def window(self, recv_ms: int | None, latest_ms: int | None) -> tuple[int, int]:
        """The inclusive range of int exchange times `check` accepts with these clocks: a pass
        that only asks whether a frame's times pass (the split pass, once a line) compares
        against it instead of raising and catching per time."""
        if recv_ms is not None:
            return recv_ms - self.age_ms, recv_ms + self.skew_ms
        if latest_ms is not None:
            return latest_ms - self.age_ms, latest_ms + self.age_ms
        return 0, (1 << 53) - 1

    def check(self, t: Any, recv_ms: int | None, latest_ms: int | None, channel: str) -> int:
        """``t`` as an int, or `FrameError` (``future_time``, ``stale_time``, ``stale_replay``)."""
        if type(t) is not int:
            raise FrameError("bad_time", f"{channel}: exchange time {str(t)[:40]!r} is not an int")
        ref = recv_ms if recv_ms is not None else latest_ms
        if ref is None:
            if t < 0 or t >= 1 << 53:
                raise FrameError("bad_time", f"{channel}: exchange time {t} out of range")
            return t
        # Without a receive time, a capture's own gaps cannot be told from a bad clock within the
        # age window, so a line may lead the newest accepted time by up to `age_ms`.
        ahead = self.skew_ms if recv_ms is not None else self.age_ms
        if t > ref + ahead:
            what = "receive time" if recv_ms is not None else "newest accepted time"
            msg = f"{channel}: exchange time {t} is {t - ref} ms after its {what} {ref}"
            raise FrameError("future_time", msg)
        if t < ref - self.age_ms:
            reason = "stale_replay" if channel == "trades" else "stale_time"
            msg = f"{channel}: exchange time {t} is {ref - t} ms before {ref}"
            raise FrameError(reason, msg)
        return t


# -- price continuity --------------------------------------------------------------------------


def price_span(e: Event) -> tuple[float, float, float] | None:
    """``(lowest, highest, representative)`` price of an event, or None if it carries none."""
    if type(e) is Bbo:
        b, a = e.bid_px, e.ask_px
        if b is not None and a is not None:
            return b, a, (b + a) * 0.5
        x = b if b is not None else a
        return None if x is None else (x, x, x)
    if type(e) is Trades:
        return e.low_px, e.high_px, e.prints[-1][0]
    if type(e) is BookSnapshot:
        return e.span()
    if type(e) is Mid:
        return e.mid_px, e.mid_px, e.mid_px
    if type(e) is Candle:
        return e.low, e.h, e.c
    if type(e) is AssetCtx:
        pxs = [e.mark_px, e.oracle_px]
        pxs.extend(x for x in (e.mid_px, e.impact_bid_px, e.impact_ask_px) if x is not None)
        return min(pxs), max(pxs), e.mark_px
    return None


class PriceGuard:
    """Rejects a price more than ``max_jump``× away from the median of the coin's recent prices.

    - With a reference (the median of the last `RING` accepted representative prices), an event
      whose lowest or highest price is outside ``[median / max_jump, median × max_jump]`` is a
      ``price_outlier``.
    - A coin's first events have no reference: they are held until two of them agree (within
      ``max_jump`` of each other; an ``allMids`` or ``activeAssetCtx`` price counts), then the
      agreeing ones are released in order and the rest rejected. A 1e307 first quote therefore
      never reaches a model.
    - `REANCHOR_RUN` consecutive rejections that agree with each other mean the market really
      moved (or the reference was wrong): the reference is rebuilt from them (``price_reanchored``,
      logged and counted); the rejected events stay rejected.
    """

    RING: Final = 15
    REFRESH_EVERY: Final = 4
    REANCHOR_RUN: Final = 5
    HOLD_MAX: Final = 16

    def __init__(self, max_jump: float, *, confirm_first: bool = True) -> None:
        self.max_jump = max_jump
        self.confirm_first = confirm_first
        self._ring: dict[str, deque[float]] = {}
        self._median: dict[str, float] = {}
        self._held: dict[str, list[Event]] = {}
        self._run: dict[str, list[float]] = {}
        self._fresh: dict[str, int] = {}
        self.reanchored = 0
        self.rejected: list[FrameError] = []
        """Rejections decided after their frame was accepted (held events), for the caller."""

    def admit(self, events: list[Event]) -> list[Event]:
        """The events to pass on now (possibly held ones released); raises on an outlier.

        All events of a frame are judged before any is recorded, so a frame is accepted or
        rejected as a whole.
        """
        if len(events) == 1:  # the common case, inlined
            e = events[0]
            coin = e.coin
            med = self._median.get(coin)
            if med is None:
                return self._hold(coin, e)
            span = price_span(e)
            if span is not None:
                jump = self.max_jump
                if span[0] * jump >= med and span[1] <= med * jump:
                    if self._run:
                        self._run.pop(coin, None)
                else:
                    self._judge(coin, span)
                self._record(coin, span[2])
            return events
        out: list[Event] = []
        spans = [price_span(e) for e in events]
        for e, span in zip(events, spans, strict=True):
            if span is not None and e.coin in self._median:
                self._judge(e.coin, span)
        for e, span in zip(events, spans, strict=True):
            if e.coin in self._median:
                if span is not None:
                    self._record(e.coin, span[2])
                out.append(e)
            else:
                out.extend(self._hold(e.coin, e))
        return out

    def _judge(self, coin: str, span: tuple[float, float, float]) -> None:
        med = self._median[coin]
        lo, hi, rep = span
        jump = self.max_jump
        if lo * jump >= med and hi <= med * jump:
            self._run.pop(coin, None)
            return
        run = self._run.setdefault(coin, [])
        if run and not _agree(run[0], rep, jump):
            run.clear()
        run.append(rep)
        if len(run) >= self.REANCHOR_RUN:
            self.reanchored += 1
            log.warning(
                "price_reanchored: %s moved from a median of %s to %s (%d agreeing prices)",
                coin,
                med,
                rep,
                len(run),
            )
            ring = self._ring[coin]
            ring.clear()
            ring.extend(run)
            self._median[coin] = _median(ring)
            run.clear()
        msg = f"{coin} price range [{lo}, {hi}] is more than {jump}x away from its median {med}"
        raise FrameError("price_outlier", msg)

    def _record(self, coin: str, px: float) -> None:
        ring = self._ring[coin]
        ring.append(px)
        # The reference is refreshed every few prices (a median of 15 barely moves in one).
        n = self._fresh.get(coin, 0) + 1
        if n >= self.REFRESH_EVERY or len(ring) < self.RING:
            self._median[coin] = _median(ring)
            n = 0
        self._fresh[coin] = n

    def _hold(self, coin: str, e: Event) -> list[Event]:
        if not self.confirm_first:
            span = price_span(e)
            if span is None:
                return [e]
            return self._release(coin, [e], span[2])
        held = self._held.setdefault(coin, [])
        held.append(e)
        priced = [(ev, s) for ev in held if (s := price_span(ev)) is not None]
        for _, (_, _, rep) in priced:
            agreeing = [s for _, s in priced if _agree(s[0], rep, self.max_jump)]
            agreeing = [s for s in agreeing if _agree(s[1], rep, self.max_jump)]
            if len(agreeing) >= 2:
                return self._release(coin, held, rep)
        if len(held) > self.HOLD_MAX:
            dropped = held.pop(0)
            self.rejected.append(
                FrameError("price_unconfirmed", f"{coin}: no later price agreed with {dropped!r}")
            )
        return []

    def _release(self, coin: str, held: list[Event], anchor: float) -> list[Event]:
        jump = self.max_jump
        self._ring[coin] = deque(maxlen=self.RING)
        out: list[Event] = []
        for ev in held:
            span = price_span(ev)
            if span is None:
                out.append(ev)
            elif _agree(span[0], anchor, jump) and _agree(span[1], anchor, jump):
                self._ring[coin].append(span[2])
                out.append(ev)
            else:
                msg = f"{coin}: price {span[2]} disagrees with the coin's first prices ({anchor})"
                self.rejected.append(FrameError("price_outlier", msg))
        self._median[coin] = _median(self._ring[coin])
        self._held.pop(coin, None)
        return out

    def pending(self) -> Iterable[tuple[str, int]]:
        """Coins whose first events are still held, with how many."""
        return ((c, len(h)) for c, h in self._held.items())


def _agree(a: float, b: float, jump: float) -> bool:
    return a * jump >= b and b * jump >= a


def _median(values: Iterable[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) * 0.5


def gap_marker(data: Any) -> tuple[list[str], str, int]:
    """A gap marker's ``(coins, reason, down_ms)``, strictly validated (``bad_control``)."""
    coins = control_coins(data)
    reason = data.get("reason", "reconnect")
    down = data.get("down_ms", 0)
    if type(reason) is not str or not reason:
        raise FrameError("bad_control", f"gap reason {str(reason)[:40]!r} is not a string")
    if type(down) is not int or down < 0:
        raise FrameError("bad_control", f"gap down_ms {str(down)[:40]!r} is not an int >= 0")
    return coins, reason, down


def control_coins(data: Any) -> list[str]:
    """A control marker's coin list: a JSON array of non-empty strings (``bad_control``)."""
    coins = data.get("coins") if type(data) is dict else None
    if type(coins) is not list or not all(type(c) is str and c for c in coins):
        raise FrameError("bad_control", f"control marker without a list of coins: {data!r:.80}")
    return coins
