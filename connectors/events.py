"""Typed market events: what every raw Hyperliquid frame becomes at the edge.

Nothing downstream of `connectors/` sees raw JSON. Every event carries two clocks:

- ``time_ms``: the exchange's timestamp in ms since the epoch (event time). For channels without one
  on the wire (``activeAssetCtx``, ``allMids``) it is the line's receive time, else the latest
  exchange time seen before it (see `connectors.parse.FrameParser`).
- ``recv_ms``: when the frame was received (the capture's receive time), or ``None`` when the
  recording did not keep one.

Prices and sizes arrive as decimal strings and are converted to ``float`` here, once. Trade sides
follow the exchange: ``"B"`` is the buying aggressor (``side = +1``), ``"A"`` the selling aggressor
(``side = -1``).

Classes are plain slotted dataclasses: cheap to build on the hot path, picklable for Bytewax state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Final

import msgspec


class Stream(StrEnum):
    """A Hyperliquid market-data stream, named exactly as the exchange names the channel."""

    TRADES = "trades"
    L2BOOK = "l2Book"
    BBO = "bbo"
    CANDLE = "candle"
    ALL_MIDS = "allMids"
    ACTIVE_ASSET_CTX = "activeAssetCtx"


STREAMS: Final[tuple[Stream, ...]] = tuple(Stream)


class Kind(IntEnum):
    """Small-int event tags, for fast dispatch in the bar folder."""

    TRADES = 0
    BOOK = 1
    BBO = 2
    CANDLE = 3
    MID = 4
    CTX = 5
    GAP = 6


BUY: Final = 1
SELL: Final = -1


@dataclass(slots=True)
class Trades:
    """All trades of one coin printed at one exchange block time, oldest first.

    The exchange sends a frame of 1..~120 trades; trades sharing a block ``time`` become one event.
    Each print is ``(px, sz, side)`` with ``side`` +1 for a buying aggressor (wire ``"B"``) and -1
    for a selling aggressor (wire ``"A"``). Aggregates are precomputed for the bar folder.
    """

    coin: str
    time_ms: int
    recv_ms: int | None
    prints: tuple[tuple[float, float, int], ...]
    buy_sz: float
    sell_sz: float
    buy_ntl: float
    sell_ntl: float
    high_px: float
    low_px: float
    KIND = Kind.TRADES

    @property
    def last_px(self) -> float:
        """Price of the latest print in this block."""
        return self.prints[-1][0]

    @property
    def first_px(self) -> float:
        """Price of the earliest print in this block."""
        return self.prints[0][0]


_MAX_FLOAT: Final = 1.7976931348623157e308
WirePx = Annotated[float, msgspec.Meta(gt=0.0, le=_MAX_FLOAT)]
"""A price as the typed decoders accept it: finite and > 0 (NaN fails ``gt``, inf fails ``le``)."""
WireSz = Annotated[float, msgspec.Meta(ge=0.0, le=_MAX_FLOAT)]
"""A size or count as the typed decoders accept it: finite and >= 0."""
WireCoin = Annotated[str, msgspec.Meta(min_length=1)]
"""A coin name: a non-empty string."""


class WireLevel(msgspec.Struct):
    """One book level as the exchange sends it (decimal strings decoded to floats, checked)."""

    px: WirePx
    sz: WireSz
    n: WireSz = 0.0


_LEVELS = msgspec.json.Decoder(tuple[list[WireLevel], list[WireLevel]], strict=False)


class BookSnapshot:
    """A full ``l2Book`` snapshot (never a delta).

    ``bid_px`` descending and ``ask_px`` ascending, as the exchange sends them; sizes in base-coin
    units; ``bid_n``/``ask_n`` count resting orders per level (0 when a recording lost them).
    Either side may be empty (delisted coin: ``{"levels": [[], []]}``).

    Levels are converted to floats on first access, not at parse time: a bar only reads its last
    book, and converting every 20-level book up front was a third of the replay's parse cost. A
    level that does not convert (a non-numeric price) makes the book `error` (both sides read as
    empty), so features treat it as missing instead of crashing.
    """

    __slots__ = ("_levels", "_sides", "_wire", "coin", "error", "recv_ms", "time_ms")
    KIND = Kind.BOOK

    def __init__(
        self,
        coin: str,
        time_ms: int,
        recv_ms: int | None,
        levels: tuple[list[Any], list[Any]] | msgspec.Raw | None = None,
        *,
        sides: tuple[tuple[float, ...], ...] | None = None,
    ) -> None:
        self.coin = coin
        self.time_ms = time_ms
        self.recv_ms = recv_ms
        self._levels = levels
        self._sides = sides
        self._wire: tuple[list[WireLevel], list[WireLevel]] | None = None
        self.error: str | None = None

    @classmethod
    def from_levels(
        cls,
        coin: str,
        time_ms: int,
        recv_ms: int | None,
        bids: list[tuple[float, float]],
        asks: list[tuple[float, float]],
    ) -> BookSnapshot:
        """Build a book from numeric ``(px, sz)`` levels (tests, simulations, REST priming)."""
        sides = (
            tuple(px for px, _ in bids),
            tuple(sz for _, sz in bids),
            tuple(0.0 for _ in bids),
            tuple(px for px, _ in asks),
            tuple(sz for _, sz in asks),
            tuple(0.0 for _ in asks),
        )
        return cls(coin, time_ms, recv_ms, sides=sides)

    def load(self) -> tuple[list[float], list[float]] | None:
        """Decode raw JSON levels with the wire constraints (prices finite and > 0, sizes and
        counts finite and >= 0) and return the bid and ask prices, best first; None when the
        levels did not arrive as raw JSON (see `sides`). Raises ``msgspec.ValidationError`` or
        ``msgspec.DecodeError``. The float tuples are still built only on first use."""
        levels = self._levels
        if not isinstance(levels, msgspec.Raw):
            return None
        bids, asks = _LEVELS.decode(levels)
        self._wire = (bids, asks)
        self._levels = None
        return [lv.px for lv in bids], [lv.px for lv in asks]

    def _decode(self) -> tuple[tuple[float, ...], ...]:
        sides = self._sides
        if sides is not None:
            return sides
        wire = self._wire
        if wire is not None:
            wb, wa = wire
            sides = (
                tuple([lv.px for lv in wb]),
                tuple([lv.sz for lv in wb]),
                tuple([lv.n for lv in wb]),
                tuple([lv.px for lv in wa]),
                tuple([lv.sz for lv in wa]),
                tuple([lv.n for lv in wa]),
            )
            self._sides = sides
            self._wire = None
            return sides
        levels = self._levels
        try:
            if isinstance(levels, msgspec.Raw):  # raw JSON kept by the typed fast path
                sides = tuple(
                    tuple([getattr(lv, f) for lv in side])
                    for side in _LEVELS.decode(levels)
                    for f in ("px", "sz", "n")
                )
                if any(x - x != 0.0 for side in sides for x in side):
                    msg = "non-finite number in a level"
                    raise ValueError(msg)
                self._sides = sides
                self._levels = None
                return sides
            bids, asks = levels or ([], [])
            sides = (
                tuple([float(lv["px"]) for lv in bids]),
                tuple([float(lv["sz"]) for lv in bids]),
                tuple([float(lv.get("n") or 0) for lv in bids]),
                tuple([float(lv["px"]) for lv in asks]),
                tuple([float(lv["sz"]) for lv in asks]),
                tuple([float(lv.get("n") or 0) for lv in asks]),
            )
            if any(x - x != 0.0 for side in sides for x in side):
                msg = "non-finite number in a level"
                raise ValueError(msg)
        except (KeyError, TypeError, ValueError, AttributeError, msgspec.MsgspecError) as ex:
            self.error = f"unreadable level: {type(ex).__name__}: {ex}"
            sides = ((), (), (), (), (), ())
        self._sides = sides
        self._levels = None
        return sides

    def span(self) -> tuple[float, float, float] | None:
        """``(lowest, highest, mid or best)`` price of the book, or None when it is empty."""
        wire = self._wire
        if wire is not None:
            bids, asks = wire
            if bids and asks:
                return bids[-1].px, asks[-1].px, (bids[0].px + asks[0].px) * 0.5
            side = bids or asks
            if not side:
                return None
            a, b = side[0].px, side[-1].px
            return min(a, b), max(a, b), a
        s = self._decode()
        bpx, apx = s[0], s[3]
        if bpx and apx:
            return bpx[-1], apx[-1], (bpx[0] + apx[0]) * 0.5
        one = bpx or apx
        return (min(one[0], one[-1]), max(one[0], one[-1]), one[0]) if one else None

    def sides(self) -> tuple[tuple[float, ...], ...]:
        """``(bid_px, bid_sz, bid_n, ask_px, ask_sz, ask_n)``, decoded once (see `error`)."""
        return self._decode()

    @property
    def bid_px(self) -> tuple[float, ...]:
        """Bid prices, best (highest) first."""
        return self._decode()[0]

    @property
    def bid_sz(self) -> tuple[float, ...]:
        """Bid sizes in base-coin units, aligned with `bid_px`."""
        return self._decode()[1]

    @property
    def bid_n(self) -> tuple[float, ...]:
        """Resting order count per bid level."""
        return self._decode()[2]

    @property
    def ask_px(self) -> tuple[float, ...]:
        """Ask prices, best (lowest) first."""
        return self._decode()[3]

    @property
    def ask_sz(self) -> tuple[float, ...]:
        """Ask sizes in base-coin units, aligned with `ask_px`."""
        return self._decode()[4]

    @property
    def ask_n(self) -> tuple[float, ...]:
        """Resting order count per ask level."""
        return self._decode()[5]

    @property
    def has_top(self) -> bool:
        """Both sides have at least one level."""
        sides = self._decode()
        return bool(sides[0]) and bool(sides[3])

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.coin, self.time_ms, self.recv_ms, self._decode(), self.error)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.coin, self.time_ms, self.recv_ms, self._sides, self.error = state
        self._levels = None
        self._wire = None

    def __repr__(self) -> str:
        return f"BookSnapshot(coin={self.coin!r}, time_ms={self.time_ms}, recv_ms={self.recv_ms})"


@dataclass(slots=True)
class Bbo:
    """Best bid and offer (``bbo``); a side is ``None`` when the book side is empty."""

    coin: str
    time_ms: int
    recv_ms: int | None
    bid_px: float | None
    bid_sz: float | None
    ask_px: float | None
    ask_sz: float | None
    KIND = Kind.BBO

    @property
    def has_top(self) -> bool:
        """Both sides are present."""
        return self.bid_px is not None and self.ask_px is not None


@dataclass(slots=True)
class Candle:
    """A *closed* candle, stamped at its close ``T`` (``time_ms``); ``v`` is base-coin volume."""

    coin: str
    time_ms: int
    recv_ms: int | None
    interval: str
    open_ms: int
    o: float
    h: float
    low: float
    c: float
    v: float
    n: int
    KIND = Kind.CANDLE


@dataclass(slots=True)
class Mid:
    """One coin's mid price from an ``allMids`` frame (stamped with receive time)."""

    coin: str
    time_ms: int
    recv_ms: int | None
    mid_px: float
    KIND = Kind.MID


@dataclass(slots=True)
class AssetCtx:
    """Perpetual context from ``activeAssetCtx`` (stamped with receive time).

    ``funding_1h`` is the exchange's hourly funding-rate estimate (a fraction, not %),
    ``open_interest`` is in coins; ``premium`` is the exchange's (mark vs oracle) premium fraction.
    Book-derived fields are ``None`` for a book-less coin.
    """

    coin: str
    time_ms: int
    recv_ms: int | None
    funding_1h: float
    open_interest: float
    mark_px: float
    oracle_px: float
    mid_px: float | None
    premium: float | None
    impact_bid_px: float | None
    impact_ask_px: float | None
    day_ntl_vlm: float
    prev_day_px: float
    KIND = Kind.CTX


@dataclass(slots=True)
class Gap:
    """A hole in a coin's input: the live connection carrying it dropped and came back.

    Stamped with the receive time of the reconnect; ``down_ms`` is how long the connection was
    down. Recorded captures carry it as a ``hlsl.gap`` control frame, so a replay sees the hole.
    """

    coin: str
    time_ms: int
    recv_ms: int | None
    reason: str
    down_ms: int
    KIND = Kind.GAP


Event = Trades | BookSnapshot | Bbo | Candle | Mid | AssetCtx | Gap
"""Any typed market event."""
