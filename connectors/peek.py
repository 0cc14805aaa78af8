"""Cheap reads of capture lines: what a line's merge key is, and which coin and clocks a frame
carries, without building the frame (msgspec decodes only the fields named here).

The split pass of a partitioned replay (`connectors.split`) routes every line of a multi-coin
capture with these, and a coin partition (`connectors.partitions`) orders an archive file's lines
by `line_key`, which gives the key the one-partition replay computes (`connectors.files.sort_key`).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import orjson

from connectors.errors import FrameError
from connectors.files import sort_key
from connectors.parse import decode_line, iso_to_ns

DATA_CHANNELS: Final = frozenset({"trades", "l2Book", "bbo", "candle", "allMids", "activeAssetCtx"})
"""Channels whose frames the parser takes as data (they move its clocks)."""
COIN_CHANNELS: Final = frozenset({"l2Book", "bbo", "activeAssetCtx"})
"""Channels whose ``data`` is one coin's object with a ``coin`` field."""


class _PeekRaw(msgspec.Struct):
    channel: str
    data: msgspec.Raw = msgspec.Raw(b"null")


class PeekEnvelope(msgspec.Struct):
    """An archive-envelope line of a frame, its frame's data left undecoded."""

    time: str
    ver_num: int
    raw: _PeekRaw


class _PeekCoin(msgspec.Struct):
    coin: Any = None
    time: Any = None


class _PeekCandle(msgspec.Struct):
    s: Any = None
    i: Any = None
    t: Any = None
    T: Any = None


ENVELOPE = msgspec.json.Decoder(PeekEnvelope)
_COIN = msgspec.json.Decoder(_PeekCoin)
_COINS = msgspec.json.Decoder(list[_PeekCoin])
_CANDLE = msgspec.json.Decoder(_PeekCandle)
PEEK_ERRORS: Final = (msgspec.ValidationError, msgspec.DecodeError, RecursionError, FrameError)


Candle = tuple[str, int, int]
"""A candle frame's ``(interval, open time t, close time T)``: what the parser holds open."""


def peek(channel: str, data: msgspec.Raw) -> tuple[str | None, list[Any], Candle | None]:
    """The one coin of a frame's data (None: several coins, none, or not readable here), the
    exchange times the parser would take as the source clock, and a candle's interval and T."""
    times: list[Any] = []
    candle: Candle | None = None
    if channel in COIN_CHANNELS:
        row = _COIN.decode(data)
        coin = row.coin
        if channel != "activeAssetCtx":
            times.append(row.time)
    elif channel == "candle":
        c = _CANDLE.decode(data)
        coin = c.s
        if type(c.i) is str and type(c.t) is int and type(c.T) is int:
            candle = (c.i, c.t, c.T)
    elif channel == "trades":
        rows = _COINS.decode(data)
        if not rows:
            return None, times, None
        coin = rows[0].coin
        if any(r.coin != coin for r in rows):
            return None, times, None
        times.extend(r.time for r in rows)
    else:
        return None, times, None
    return (coin if type(coin) is str and coin else None), times, candle


# -- one decode of a whole frame line -----------------------------------------------------------
# `PeekEnvelope` then `peek` decode a line twice (the envelope, then the frame's data). For the
# channels `peek` reads, `FRAME_LINE` does both in one pass: a tagged union on ``channel`` gives
# each channel's data the very type `peek` decodes it with, and each variant's `peek` is `peek`'s
# branch for it. Any line this refuses (another channel, data of another shape, a bad stamp type)
# is read the two-step way, so it only ever answers where those would answer the same.


class _FrameBase(msgspec.Struct, tag_field="channel"):
    def peek(self) -> tuple[str | None, list[Any], Candle | None]:
        """What `peek` gives for this frame's data."""
        raise NotImplementedError


class _BookFrame(_FrameBase, tag="l2Book"):
    data: _PeekCoin

    def peek(self) -> tuple[str | None, list[Any], Candle | None]:
        coin = self.data.coin
        return (coin if type(coin) is str and coin else None), [self.data.time], None


class _BboFrame(_BookFrame, tag="bbo"):
    pass


class _CtxFrame(_FrameBase, tag="activeAssetCtx"):
    data: _PeekCoin

    def peek(self) -> tuple[str | None, list[Any], Candle | None]:
        coin = self.data.coin
        return (coin if type(coin) is str and coin else None), [], None


class _CandleFrame(_FrameBase, tag="candle"):
    data: _PeekCandle

    def peek(self) -> tuple[str | None, list[Any], Candle | None]:
        c = self.data
        coin = c.s
        candle = None
        if type(c.i) is str and type(c.t) is int and type(c.T) is int:
            candle = (c.i, c.t, c.T)
        return (coin if type(coin) is str and coin else None), [], candle


class _TradesFrame(_FrameBase, tag="trades"):
    data: list[_PeekCoin]

    def peek(self) -> tuple[str | None, list[Any], Candle | None]:
        rows = self.data
        if not rows:
            return None, [], None
        coin = rows[0].coin
        if any(r.coin != coin for r in rows):
            return None, [], None
        return (coin if type(coin) is str and coin else None), [r.time for r in rows], None


class FrameLine(msgspec.Struct):
    """An archive-envelope line of a frame of a channel `peek` reads, decoded as `peek` would."""

    time: str
    ver_num: int
    raw: _BookFrame | _BboFrame | _CtxFrame | _CandleFrame | _TradesFrame


FRAME_LINE = msgspec.json.Decoder(FrameLine)


def frame_candle(channel: Any, frame: Any) -> tuple[str, Candle] | None:
    """A decoded candle frame's ``(coin, (interval, T))``."""
    data = frame.get("data") if type(frame) is dict else None
    if channel != "candle" or type(data) is not dict:
        return None
    coin, interval, start, close = data.get("s"), data.get("i"), data.get("t"), data.get("T")
    if type(coin) is str and type(interval) is str and type(start) is int and type(close) is int:
        return coin, (interval, start, close)
    return None


def frame_times(channel: Any, frame: Any) -> list[Any]:
    """The exchange times of a decoded frame that the parser takes as the source clock."""
    data = frame.get("data") if type(frame) is dict else None
    if channel in ("l2Book", "bbo") and type(data) is dict:
        return [data.get("time")]
    if channel == "trades" and type(data) is list:
        return [tr.get("time") for tr in data if type(tr) is dict]
    return []


def envelope_key(line: bytes) -> int | None:
    """The receive ns of an archive-envelope line of a frame (what `decode_line` would give),
    read without decoding the frame; None for any other line."""
    if not line.startswith(b'{"time":'):
        return None
    try:
        return iso_to_ns(ENVELOPE.decode(line).time)
    except PEEK_ERRORS:
        return None


def line_key(line: bytes, last: int, max_depth: int = 64) -> int | None:
    """A capture line's merge key as the one-partition replay computes it (`sort_key`), or None
    for a line it would skip (blank or undecodable)."""
    if not line.strip():
        return None
    fast = envelope_key(line)
    if fast is not None:
        return fast
    try:
        recv_ns, frame = decode_line(line, max_depth)
    except FrameError:
        return None
    return sort_key(recv_ns, frame, last)


def rewrite(stamp: Any, recv_ns: int | None, frame: Any) -> bytes:
    """A capture line holding ``frame`` with the receive time of the line it came from:
    ``stamp`` is that line's archive-envelope ``time`` (None: it had no envelope)."""
    if stamp is not None:
        return orjson.dumps({"time": stamp, "ver_num": 1, "raw": frame})
    body = orjson.dumps(frame)
    return body if recv_ns is None else b"%d %s" % (recv_ns, body)


def marker_coins(data: Any) -> list[str]:
    """A control marker's coins, if they are a list of non-empty strings (else ``[]``: the
    parser refuses the marker, once, in the other stream)."""
    coins = data.get("coins") if type(data) is dict else None
    if type(coins) is not list or not all(type(c) is str and c for c in coins):
        return []
    return coins


def envelope_stamp(line: bytes) -> Any:
    """The ``time`` of an archive-envelope line (None for any other line)."""
    if not line.startswith(b"{"):
        return None
    obj = orjson.loads(line)
    return obj.get("time") if type(obj) is dict and "ver_num" in obj else None


__all__ = [
    "COIN_CHANNELS",
    "DATA_CHANNELS",
    "ENVELOPE",
    "FRAME_LINE",
    "PEEK_ERRORS",
    "Candle",
    "FrameLine",
    "PeekEnvelope",
    "envelope_key",
    "envelope_stamp",
    "frame_candle",
    "frame_times",
    "line_key",
    "marker_coins",
    "peek",
    "rewrite",
]
