"""Capture lines → ``(receive ns, frame)``: the line formats, receive times and control markers.

The first stage of `connectors.parse` (the public module; see it for the whole path): a capture line
is split into its receive time and the frame it carries, before any channel is looked at.

Capture line formats (`decode_line`):

(a) a bare frame: ``{"channel": ...}``
(b) Hyperliquid's archive envelope: ``{"time": "2025-09-04T19:46:56.673877954", "ver_num": 1,
    "raw": {frame}}`` (receive time, ISO UTC, ns)
(c) ``<receive ns> <frame>`` as written by hftbacktest's collector.

The server's plain-text greeting is a frame of its own (`GREETING`), and the project's own markers
(``hlsl.gap``, ``hlsl.activate``) travel beside ``raw`` in a line's ``"hlsl"`` key as a
`ControlMarker`, never inside an exchange frame.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from connectors.errors import FrameError
from connectors.validate import json_depth_exceeds

GREETING: Final = "Websocket connection established."

_DAY_CACHE: dict[str, int] = {}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def iso_to_ns(stamp: str) -> int:
    """Parse an archive receive time (``2025-09-04T19:46:56.673877954``, UTC) to ns since epoch.

    Nanosecond precision is kept (``datetime`` stops at µs). A trailing ``Z`` or ``+00:00`` is
    accepted; anything else falls back to `datetime.fromisoformat`. Whole seconds are cached, as
    consecutive lines share them.

    >>> iso_to_ns("1970-01-01T00:00:01.5")
    1500000000
    """
    head = stamp[:19]
    base = _SECOND_CACHE.get(head)
    if base is not None and len(stamp) == 29 and stamp[19] == ".":  # the archive's own form
        frac = stamp[20:]
        if frac.isascii() and frac.isdigit():
            return base + int(frac)
    if base is None:
        if len(head) != 19 or head[10] != "T" or head[13] != ":" or head[16] != ":":
            return _iso_fallback(stamp)
        day = head[:10]
        day_ns = _DAY_CACHE.get(day)
        if day_ns is None:
            try:
                d = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
            except ValueError:
                return _iso_fallback(stamp)
            day_ns = int(d.timestamp()) * 1_000_000_000
            _DAY_CACHE[day] = day_ns
        digits = head[11:13] + head[14:16] + head[17:19]
        if not (digits.isascii() and digits.isdigit()):
            return _iso_fallback(stamp)
        hh, mm, ss = int(head[11:13]), int(head[14:16]), int(head[17:19])
        if hh > 23 or mm > 59 or ss > 59:
            msg = f"time of day out of range in {stamp!r}"
            raise FrameError("bad_receive_time", msg)
        secs = hh * 3600 + mm * 60 + ss
        base = day_ns + secs * 1_000_000_000
        if len(_SECOND_CACHE) > 4096:
            _SECOND_CACHE.clear()
        _SECOND_CACHE[head] = base
    rest = stamp[19:]
    if not rest:
        return base
    if rest[-1] == "Z":
        rest = rest[:-1]
    elif rest.endswith("+00:00"):
        rest = rest[:-6]
    if rest[:1] != "." or not (rest[1:].isascii() and rest[1:].isdigit()):
        return base if not rest else _iso_fallback(stamp)
    digits = rest[1:10]
    ns: int = base + int(digits) * _SCALE[len(digits)]
    return ns


_SCALE: Final = tuple(10 ** (9 - k) for k in range(10))
_SECOND_CACHE: dict[str, int] = {}


def _iso_fallback(stamp: str) -> int:
    try:
        d = datetime.fromisoformat(stamp)
    except ValueError as ex:
        msg = f"unreadable receive time {stamp!r}"
        raise FrameError("bad_receive_time", msg) from ex
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return (d - _EPOCH) // timedelta(microseconds=1) * 1000  # exact: no float rounding


def decode_line(line: bytes, max_depth: int = 64) -> tuple[int | None, Any]:
    """Split one capture line into ``(receive_ns or None, frame)``.

    The frame is the decoded JSON value (normally a dict), a `ControlMarker` for the project's own
    markers (the line's ``"hlsl"`` key), or, for the server's plain-text greeting, the string
    itself. Raises `FrameError` (``invalid_json``, ``too_deep``) for anything unreadable.
    """
    first = line[:1]
    if first == b"{":
        obj = loads_frame(line, max_depth)
        if type(obj) is dict and "ver_num" in obj:
            raw = obj.get("raw", _MISSING)
            marker = obj.get("hlsl", _MISSING)
            if raw is not _MISSING or marker is not _MISSING:
                stamp = obj.get("time")
                recv_ns: int | None = None
                if type(stamp) is str:
                    recv_ns = iso_to_ns(stamp)
                elif type(stamp) is int:
                    recv_ns = stamp
                if raw is _MISSING:
                    return recv_ns, ControlMarker(marker)
                return recv_ns, raw
        return None, obj
    if first.isdigit():
        head, sep, rest = line.partition(b" ")
        if not sep or not head.isdigit():
            raise FrameError("invalid_json", "expected '<receive ns> <frame>'")
        return int(head), loads_frame(rest, max_depth)
    text = line.decode("utf-8", "replace").strip()
    if text.strip('"') == GREETING:
        return None, GREETING
    raise FrameError("invalid_json", f"not a JSON frame: {text[:80]!r}")


def loads_frame(data: bytes, max_depth: int) -> Any:
    """orjson.loads after a nesting check (``too_deep``); ``invalid_json`` for bad JSON."""
    if json_depth_exceeds(data, max_depth):
        raise FrameError("too_deep", f"JSON nested deeper than {max_depth} levels")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as ex:
        raise FrameError("invalid_json", str(ex)) from ex


class ControlMarker:
    """The project's own control marker from a capture line's ``"hlsl"`` key (never from ``raw``).

    ``{"time": …, "ver_num": 1, "hlsl": {"channel": "hlsl.gap", "data": {…}}}``: recordings carry
    connection gaps and coin activations outside the exchange's frame, so no exchange frame (or
    anyone who can send one) can forge them.
    """

    __slots__ = ("body",)

    def __init__(self, body: Any) -> None:
        self.body = body


_MISSING: Final = object()


def peek_time_ms(frame: Any) -> int | None:
    """The exchange time of a frame without parsing it fully (for merging captures), else None."""
    if type(frame) is not dict:
        return None
    data = frame.get("data")
    if type(data) is dict:
        t = data.get("time", data.get("T"))
        return t if type(t) is int else None
    if type(data) is list and data and type(data[0]) is dict:
        t = data[0].get("time")
        return t if type(t) is int else None
    return None
