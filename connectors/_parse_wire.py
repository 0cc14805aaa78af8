"""The typed fast path's wire schemas: trades, bbo and l2Book frames decoded by msgspec.

The three channels that make up almost all traffic (trades, bbo, l2Book) are decoded straight
into typed structs by msgspec, decimal strings converted to floats in C (``strict=False``), and
a book's levels kept as raw JSON until a bar reads them. Anything else, or anything these
schemas reject (`FAST_ERRORS`), goes down the general path of `connectors.parse` (orjson +
checks), which names the exact problem.
"""

from __future__ import annotations

from typing import Final

import msgspec

from connectors.events import WireCoin, WireLevel, WirePx, WireSz


class TradeData(msgspec.Struct):
    coin: WireCoin
    side: str
    px: WirePx
    sz: WireSz
    time: int
    tid: int


class BboData(msgspec.Struct):
    coin: WireCoin
    time: int
    bbo: tuple[WireLevel | None, WireLevel | None]


class BookData(msgspec.Struct):
    coin: WireCoin
    time: int
    levels: msgspec.Raw


class TradesFrame(msgspec.Struct, tag_field="channel", tag="trades"):
    data: list[TradeData]


class BboFrame(msgspec.Struct, tag_field="channel", tag="bbo"):
    data: BboData


class BookFrame(msgspec.Struct, tag_field="channel", tag="l2Book"):
    data: BookData


HotFrame = TradesFrame | BboFrame | BookFrame


class Envelope(msgspec.Struct):
    time: str
    ver_num: int
    raw: HotFrame


ENVELOPE: Final = msgspec.json.Decoder(Envelope, strict=False)
"""Decodes an archive-envelope line whose ``raw`` is a hot frame."""
BARE: Final = msgspec.json.Decoder(HotFrame, strict=False)
"""Decodes a bare hot frame (a bare capture line, or a live frame's bytes)."""
FAST_ERRORS: Final = (msgspec.ValidationError, msgspec.DecodeError)
"""What the typed decoders raise for a frame the general path must take instead."""
