"""Injected frames: a schedule of messages sent to each client verbatim.

Injected frames (``--inject FILE``, ``FakeExchange(inject=...)``; off by default): a schedule of
messages sent to each client as they are, to test how a client handles frames no real server would
send. FILE is UTF-8 NDJSON (blank lines ignored), one object per line with exactly two keys:

- ``{"offset_s": 2.5, "frame": <any JSON value>}``: the value's text exactly as written in the
  file (from its first to its last character; nothing is re-encoded, so ``1.50``, huge integers
  and ``NaN`` go out unchanged);
- ``{"offset_s": 2.5, "raw": "<string>"}``: the decoded string, for anything that is not one JSON
  value (truncated or invalid JSON, plain text) or that this reader cannot hold (values nested
  deeper than Python's JSON reader allows).

``offset_s`` (a finite number ≥ 0) counts from the moment a connection's first subscription is
acknowledged (an accepted subscribe of any type; a connection that never subscribes gets nothing).
Each connection gets the whole schedule once, in order of ``offset_s`` (equal offsets in file
order, back to back), unpaced by the feed and independent of what it is subscribed to when a
message is due; a reconnecting client is a new connection and gets the schedule again from its own
first subscription. An offset of 0 goes out right after that first ack and its snapshot. Injected
messages are WebSocket text messages sent on the connection's own queue (so after anything queued
before them), count as ``frames_sent["injected"]`` (and ``frames_injected``), not as data frames
for ``malformed_every``/``unknown_every``, are not subject to ``silence``, and are discarded like
everything else during a stall. Exchange times inside them are not re-stamped: write times near
the served stream's (the wall clock, see the package's re-stamping note) when only another
property is meant to be wrong. A bad file is refused at start with the line number.

Imports `tools.fake_exchange.connections` and `tools.fake_exchange.stats`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tools.fake_exchange.connections import Conn
from tools.fake_exchange.stats import ExchangeStats

log = logging.getLogger(__name__)

INJECTED_CHANNEL: Final = "injected"


@dataclass(frozen=True)
class Injection:
    """One message sent verbatim to each subscribed client (see `tools.fake_exchange.inject`).

    Attributes:
        offset_s: seconds after the connection's first acknowledged subscription (finite, >= 0).
        text: the WebSocket text message, exactly as it is sent.

    Raises:
        ValueError: for a negative, non-finite or non-numeric offset, or a non-string text.
    """

    offset_s: float
    text: str

    def __post_init__(self) -> None:
        offset = self.offset_s
        if type(offset) not in (int, float) or not math.isfinite(offset) or offset < 0:
            msg = f"offset_s must be a finite number >= 0, got {offset!r}"
            raise ValueError(msg)
        if type(self.text) is not str:
            msg = f"text must be a str, got {type(self.text).__name__}"
            raise ValueError(msg)

    @classmethod
    def of_frame(cls, offset_s: float, frame: Any) -> Injection:
        """``frame`` (a JSON-able value; ints of any size) as compact JSON text."""
        return cls(offset_s, json.dumps(frame, separators=(",", ":"), ensure_ascii=False))


def _skip_ws(text: str, i: int) -> int:
    """The index of the first non-whitespace character (JSON whitespace) at or after ``i``."""
    n = len(text)
    while i < n and text[i] in " \t\n\r":
        i += 1
    return i


_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
"""The stdlib's JSON value scanner: ``(text, index) -> (value, end index)``."""


def _top_level_fields(line: str) -> dict[str, tuple[Any, str]]:
    """The members of a one-line JSON object as ``key -> (value, the value's exact text)``.

    Raises:
        ValueError: the line is not one JSON object, or repeats a key.
        RecursionError: a value nests deeper than the JSON reader allows.
    """
    ws = _skip_ws
    i = ws(line, 0)
    if line[i : i + 1] != "{":
        msg = "not a JSON object"
        raise ValueError(msg)
    i = ws(line, i + 1)
    out: dict[str, tuple[Any, str]] = {}
    if line[i : i + 1] == "}":
        i += 1
    else:
        while True:
            if line[i : i + 1] != '"':
                msg = f"expected a key at column {i + 1}"
                raise ValueError(msg)
            key, i = _SCAN(line, i)
            i = ws(line, i)
            if line[i : i + 1] != ":":
                msg = f"expected ':' at column {i + 1}"
                raise ValueError(msg)
            start = i = ws(line, i + 1)
            try:
                value, i = _SCAN(line, i)
            except StopIteration:
                msg = f"expected a JSON value at column {start + 1}"
                raise ValueError(msg) from None
            if key in out:
                msg = f"key {key!r} given twice"
                raise ValueError(msg)
            out[key] = (value, line[start:i])
            i = ws(line, i)
            sep = line[i : i + 1]
            i += 1
            if sep == "}":
                break
            if sep != ",":
                msg = f"expected ',' or '}}' at column {i}"
                raise ValueError(msg)
            i = ws(line, i)
    if line[i:].strip(" \t\n\r"):
        msg = f"unexpected text after the object at column {i + 1}"
        raise ValueError(msg)
    return out


def _parse_injection(line: str) -> Injection:
    try:
        fields = _top_level_fields(line)
    except json.JSONDecodeError as ex:
        msg = f"not valid JSON: {ex}"
        raise ValueError(msg) from None
    except RecursionError:
        msg = 'nested too deep to read: give the message as a "raw" string'
        raise ValueError(msg) from None
    keys = set(fields)
    if "offset_s" not in keys or len(keys & {"frame", "raw"}) != 1 or len(keys) != 2:
        msg = 'expected {"offset_s": N, "frame": ...} or {"offset_s": N, "raw": "..."}'
        msg += f", got keys {sorted(keys)}"
        raise ValueError(msg)
    offset = fields["offset_s"][0]
    if "raw" in fields:
        raw = fields["raw"][0]
        if type(raw) is not str:
            msg = f'"raw" must be a string, got {type(raw).__name__} (use "frame" for JSON values)'
            raise ValueError(msg)
        return Injection(offset, raw)
    return Injection(offset, fields["frame"][1])


def load_injections(path: str | Path) -> tuple[Injection, ...]:
    """Read an inject file (``--inject``): the messages in the order they are due.

    Args:
        path: UTF-8 NDJSON, one ``{"offset_s": N, "frame": <JSON>}`` or
            ``{"offset_s": N, "raw": "<text>"}`` per line; blank lines are ignored.

    Returns:
        The injections sorted by ``offset_s`` (equal offsets keep their file order).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        IsADirectoryError: if ``path`` is a directory.
        ValueError: naming the file and line of the first bad line (or: not UTF-8).
    """
    path = Path(path)
    if path.is_dir():
        msg = f"inject file is a directory: {path}"
        raise IsADirectoryError(msg)
    if not path.is_file():
        msg = f"inject file not found: {path}"
        raise FileNotFoundError(msg)
    items: list[Injection] = []
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    items.append(_parse_injection(line))
                except ValueError as ex:
                    msg = f"{path}:{lineno}: {ex}"
                    raise ValueError(msg) from None
    except UnicodeDecodeError:
        msg = f"{path}: not UTF-8 text"
        raise ValueError(msg) from None
    return tuple(sorted(items, key=lambda item: item.offset_s))


def injections(inject: str | Path | Iterable[Injection] | None) -> tuple[Injection, ...]:
    """The schedule ``FakeExchange(inject=...)`` describes: a file, items, or None (empty).

    Raises:
        TypeError: for an item that is not an `Injection`.
        FileNotFoundError, ValueError: as `load_injections`.
    """
    if inject is None:
        return ()
    if isinstance(inject, str | Path):
        return load_injections(inject)
    items: list[Any] = list(inject)
    for item in items:
        if not isinstance(item, Injection):
            msg = f"inject items must be Injection, got {type(item).__name__}"
            raise TypeError(msg)
    return tuple(sorted(items, key=lambda item: item.offset_s))


async def send_schedule(conn: Conn, schedule: tuple[Injection, ...], stats: ExchangeStats) -> None:
    """Send the inject schedule to ``conn``, timed from now (its first subscription)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for item in schedule:
        delay = start + item.offset_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if conn.closed.is_set():
            return
        if conn.offer(item.text, INJECTED_CHANNEL):
            stats.frames_injected += 1
    log.debug("client %d: %d injected frame(s) queued", conn.cid, len(schedule))
