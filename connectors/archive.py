"""Hyperliquid's own archive as downloaded: the ``l2Book`` layout and ``node_fills_by_block``.

Layout (``../shared/reference/hyperliquid-api.md`` §6):

- ``market_data/YYYYMMDD/H/l2Book/COIN.lz4``: one coin's ``l2Book`` WebSocket frames for one
  hour, one archive envelope per line (``{"time": <receive ISO ns>, "ver_num": 1, "raw": frame}``),
  which `connectors.parse` already reads. A file at such a path holds one coin (`archive_coin`
  names it), so a partitioned replay gives it to that coin's partition unread.
- ``node_fills_by_block``: one line per block, ``{"local_time": <ISO ns>, "block_time": …,
  "block_number": n, "events": [[user, fill], …]}``, where every fill appears twice, once per side,
  the taker's side marked ``"crossed": true``. `fills_lines` turns a block into one WebSocket
  ``trades`` frame per coin (one trade per taker fill: its coin, side ``B``/``A``, ``px``/``sz``
  strings, ``time`` ms and ``tid``), wrapped in an archive envelope stamped with ``local_time``, so
  the parser validates, de-duplicates and groups them exactly as it does live trades. Maker fills
  (``crossed: false``) are the same trades seen from the other side and give nothing.

`capture_format` tells a fills file from a file of frames by its first line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from connectors.errors import FrameError
from connectors.events import Event
from connectors.parse import FrameParser, iso_to_ns
from connectors.validate import json_depth_exceeds

ARCHIVE_CHANNELS: Final = frozenset({"l2Book", "trades", "bbo", "activeAssetCtx", "candle"})
"""Channel directories of the archive layout whose files hold one coin each (``COIN.lz4``)."""
_DATE_DIR: Final = re.compile(r"^\d{8}$")
_HOUR_DIR: Final = re.compile(r"^(?:[01]?\d|2[0-3])$")
_TRADE_KEYS: Final = ("coin", "side", "px", "sz", "time", "tid")
"""What a WebSocket trade needs from a fill (the rest of a fill is account data)."""
BAD_FILLS: Final = "bad_fills"
"""The skip reason of a ``node_fills_by_block`` line that is not a block of fills."""
_TOO_DEEP: Final = "too_deep"
_INVALID_JSON: Final = "invalid_json"

Format = Literal["frames", "fills"]


def archive_coin(path: str | Path) -> str | None:
    """The coin of a file in the archive layout (``YYYYMMDD/H/l2Book/COIN.lz4``), else None.

    Only that exact shape counts (a date directory, an hour directory, a channel directory), so a
    file of several coins that merely sits in a folder called ``trades`` is never taken for one.
    """
    p = Path(path)
    parts = p.parts
    if len(parts) < 4 or not p.name.lower().endswith(".lz4"):
        return None
    channel, hour, day = parts[-2], parts[-3], parts[-4]
    if channel not in ARCHIVE_CHANNELS or not _HOUR_DIR.match(hour) or not _DATE_DIR.match(day):
        return None
    coin = p.name[: -len(".lz4")]
    return coin or None


def is_archive_dir(name: str) -> bool:
    """Whether a directory name belongs to the archive layout (so a directory walk enters it)."""
    return (
        name in ARCHIVE_CHANNELS
        or name in ("market_data", "node_fills_by_block", "hourly")
        or bool(_DATE_DIR.match(name) or _HOUR_DIR.match(name))
    )


def is_fills_line(line: bytes) -> bool:
    """Whether a capture line is a ``node_fills_by_block`` block (not a WebSocket frame)."""
    if not line.startswith(b"{") or b'"events"' not in line:
        return False
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return type(obj) is dict and "events" in obj and ("block_number" in obj or "block_time" in obj)


def capture_format(lines: Iterable[bytes]) -> Format:
    """``"fills"`` if the first non-blank line is a fills block, else ``"frames"``."""
    for line in lines:
        if line.strip():
            return "fills" if is_fills_line(line.strip()) else "frames"
    return "frames"


def fills_trades(
    line: bytes, max_depth: int = 64
) -> tuple[Any, int | None, list[tuple[str, list[dict[str, Any]]]]]:
    """One ``node_fills_by_block`` line as ``(local_time, receive ns or None, [(coin, trades)])``.

    ``trades`` are that coin's taker fills in block order as WebSocket trades (coins in order of
    first appearance); a block without taker fills gives ``[]``. Raises `FrameError`
    ``bad_fills`` for a line that is not a block (a value the WebSocket trade rules refuse, such
    as a zero price, is left for the parser to reject).
    """
    if json_depth_exceeds(line, max_depth):
        raise _error(_TOO_DEEP, f"JSON nested deeper than {max_depth} levels")
    try:
        block = orjson.loads(line)
    except orjson.JSONDecodeError as ex:
        raise _error(_INVALID_JSON, str(ex)) from ex
    if type(block) is not dict:
        raise _error(BAD_FILLS, f"a fills block is not an object: {str(block)[:80]!r}")
    events = block.get("events")
    if type(events) is not list:
        raise _error(BAD_FILLS, "a fills block without an events array")
    stamp = block.get("local_time")
    recv_ns = iso_to_ns(stamp) if type(stamp) is str else None
    by_coin: dict[str, list[dict[str, Any]]] = {}
    for ev in events:
        if type(ev) is not list or len(ev) != 2 or type(ev[1]) is not dict:
            raise _error(BAD_FILLS, f"a block event is not [user, fill]: {str(ev)[:80]!r}")
        fill: dict[str, Any] = ev[1]
        crossed = fill.get("crossed")
        if type(crossed) is not bool:
            raise _error(BAD_FILLS, f"a fill without a boolean crossed: {str(fill)[:80]!r}")
        if not crossed:
            continue  # the maker's side of a trade its taker's fill already carries
        coin = fill.get("coin")
        key = coin if type(coin) is str else ""  # a bad coin: its own frame, which is refused
        by_coin.setdefault(key, []).append({k: fill[k] for k in _TRADE_KEYS if k in fill})
    return (stamp if type(stamp) is str else None), recv_ns, list(by_coin.items())


def trades_line(stamp: str | None, trades: list[dict[str, Any]]) -> bytes:
    """A capture line of one ``trades`` frame: an archive envelope received at ``stamp``, or
    the bare frame without one."""
    frame = {"channel": "trades", "data": trades}
    if stamp is None:
        return orjson.dumps(frame)
    return orjson.dumps({"time": stamp, "ver_num": 1, "raw": frame})


def fills_lines(line: bytes, max_depth: int = 64) -> tuple[int | None, list[tuple[str, bytes]]]:
    """One ``node_fills_by_block`` line as ``(receive ns or None, [(coin, capture line)])``:
    each coin's taker fills as one ``trades`` frame (`fills_trades`, `trades_line`)."""
    stamp, recv_ns, per_coin = fills_trades(line, max_depth)
    return recv_ns, [(coin, trades_line(stamp, trades)) for coin, trades in per_coin]


# -- fills into events ---------------------------------------------------------------------------


class FillsBlock:
    """The capture lines (one ``trades`` frame per coin) a ``node_fills_by_block`` line gives."""

    __slots__ = ("lines",)

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines


class PartialFrameError(FrameError):
    """Some frames of a line failed (a fills block of several coins): the good ones' events are
    kept; each error is counted."""

    def __init__(self, events: list[Event], errors: list[FrameError]) -> None:
        super().__init__(errors[0].reason, errors[0].detail)
        self.events = events
        self.errors = errors


def parse_fills_line(parser: FrameParser, line: bytes) -> list[Event]:
    """Events of a ``node_fills_by_block`` line: each coin's trades frame parsed on its own, so
    one bad frame costs only that coin's trades of the block (`PartialFrameError`)."""
    _, subs = fills_lines(line, parser.config.max_json_depth)
    return parse_lines(parser, [sub for _, sub in subs])


def parse_lines(parser: FrameParser, lines: list[bytes]) -> list[Event]:
    """Parse capture lines one by one; `PartialFrameError` if any failed."""
    out: list[Event] = []
    errors: list[FrameError] = []
    for sub in lines:
        try:
            out.extend(parser.parse_line(sub))
        except FrameError as ex:
            errors.append(ex)
    if errors:
        raise PartialFrameError(out, errors)
    return out


def _error(reason: str, detail: str) -> FrameError:
    return FrameError(reason, detail)


__all__ = [
    "ARCHIVE_CHANNELS",
    "FillsBlock",
    "PartialFrameError",
    "archive_coin",
    "capture_format",
    "fills_lines",
    "fills_trades",
    "is_archive_dir",
    "is_fills_line",
    "parse_fills_line",
    "parse_lines",
    "trades_line",
]
