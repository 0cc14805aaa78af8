"""A local fake Hyperliquid exchange: the public market-data WebSocket and ``POST /info``.

It serves a feed (a recorded capture or the seeded simulator, `tools.simulate`) over the same
protocol as ``wss://api.hyperliquid.xyz/ws`` and ``https://api.hyperliquid.xyz/info``, following
the measured behaviour of the real server (``../shared/reference/hyperliquid-api.md`` §0–§4), so the
project's live ingestion can be tested offline and a newcomer can try live mode without internet.

One process, one port (FastAPI/Starlette on uvicorn): WebSocket ``/ws`` and ``POST /info``.

WebSocket ``/ws``:

- optional legacy greeting ``Websocket connection established.`` (plain text) on connect;
- ``subscribe``/``unsubscribe`` → ``subscriptionResponse`` acks echoing the subscription with the
  server defaults filled in (``l2Book`` gets ``nSigFigs``/``mantissa``/``fast``); ``ping`` →
  ``{"channel":"pong"}``; bad requests (non-JSON, unknown method or type, coin arrays, missing
  fields) → ``{"channel":"error","data":"Error parsing JSON into valid websocket request: <req>"}``;
  ``Already subscribed: {...}`` / ``Already unsubscribed: {...}``; the socket stays open;
- a subscription for a coin outside the universe (unknown or mis-cased), ``nSigFigs`` outside
  2–5, or ``mantissa`` without ``nSigFigs: 5`` drops the whole socket with no error and no close
  frame (the client sees code 1006), as the real server does;
- channels ``trades`` (the first frame after each subscribe replays the coin's last 30 trades),
  ``l2Book`` (20 levels, 5 with ``fast``, optional ``nSigFigs``/``mantissa`` aggregation), ``bbo``,
  ``candle`` (any of the 14 intervals), ``activeAssetCtx`` and ``allMids``. ``l2Book``, ``bbo``,
  ``candle``, ``activeAssetCtx`` and ``allMids`` send the latest value right after the ack when one
  exists (the real ``l2Book`` does; assumed for the others);
- exchange times (``time`` of trades/l2Book/bbo, candle ``t``/``T``) are re-stamped to the current
  wall clock: ``new = wall_at_feed_start + (time - first_feed_time) / speed``, i.e. ``time +
  (now - first event time)`` at speed 1, so the original spacing is kept and data looks fresh;
- a connection the server has sent nothing to for ``idle_timeout_s`` (60 s) is dropped (1006).

Feeds: `CaptureFeed` (any capture `connectors.files.open_capture` reads: plain, ``.gz``, ``.lz4``;
every line format of `connectors.parse.decode_line`), `SimFeed` (`tools.simulate.generate`; each
loop pass regenerates with the next seed) and `ListFeed` (frames given in code, for tests). Frames
are paced by receive time (else exchange time) divided by ``speed``; with ``loop_feed`` the feed
restarts when it ends. The universe (the coins ``meta`` lists and subscriptions accept) is the
coins of the feed plus ``extra_coins`` and ``delisted`` coins.

Derived streams: candles of every interval are built from the feed's trades (feed candle frames
are relayed only for coins without trades); ``bbo`` is derived from books when the feed has no
``bbo`` for a coin; ``allMids`` is derived from books/bbo (every 5 s) when the feed has none.

``POST /info`` (``Content-Type: application/json``): ``meta``, ``metaAndAssetCtxs``, ``l2Book``,
``candleSnapshot`` (≤ 500 candles), ``allMids``, ``recentTrades``, ``exchangeStatus``; GET → 405,
other content type → 415, bad JSON → 400, unknown type or bad fields → 422 ``Failed to deserialize
the JSON body into the target type``, unknown ``l2Book`` coin → 200 ``null``. A per-client weight
budget (1200/min; ``l2Book``/``allMids``/``exchangeStatus`` 2, the rest 20, ``candleSnapshot`` +1
per 60 candles, ``recentTrades`` +1 per 20 trades) answers 429 when exceeded. ``post`` requests
over the WebSocket are answered from the same handlers and budget.

Faults (`Faults`; all off by default; periodic ones count from the moment they are set):

- ``drop_every_s``: every N s drop every client socket (no close frame → 1006; or a close frame
  with ``drop_code``);
- ``stall_every_s``/``stall_for_s``: every N s, for S s, send nothing at all to any client (data,
  acks, pongs, errors are discarded); sockets stay open and requests are still processed;
- ``silence`` (``"l2Book:BTC"``, ``"candle:BTC:1m"``, ``"allMids"``, or a bare channel) after
  ``silence_after_s``: those streams stop (snapshots included) while everything else continues;
- ``malformed_every``/``unknown_every``: after every N-th data frame sent to a client, also send a
  truncated (invalid JSON) copy of it / a frame on an unknown channel;
- ``error_every_s``: every N s send ``{"channel":"error","data":...}`` to every client.

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
the served stream's (the wall clock, see re-stamping above) when only another property is meant
to be wrong. A bad file is refused at start with the line number.

Known differences from the real server:

- every ``l2Book`` variant is pushed at the feed's cadence (real 2026: default ~5.4 s, ``fast``
  ~0.54 s); aggregation merges the feed's ≤ 20 levels (so fewer levels) and adds no ``spread``;
- snapshots right after the ack for ``bbo``/``candle``/``activeAssetCtx``/``allMids`` are assumed
  (confirmed only for ``trades`` and ``l2Book``);
- no WebSocket limits (10 connections, 1000 subscriptions, 2000 messages/min) and no in-flight
  ``post`` limit; only the REST weight budget (per client IP, sliding 60 s) is enforced; the 429
  body text is a guess;
- first dex only: subscription types other than the six channels (user streams,
  ``fastAssetCtxs``, ``allDexsAssetCtxs``, …) get the parse error, ``allMids`` with a non-empty
  ``dex`` drops the socket, and ``meta`` lists no HIP-3/spot names, ``marginTables`` is empty;
- ``szDecimals``/``maxLeverage`` come from a small table or the sizes seen in the feed;
- at ``speed`` ≠ 1 exchange times are scaled (``1/speed``) to stay near the wall clock, so a candle
  bucket holds ``speed`` × more market time; relayed feed candles collapse into the current bucket;
- trades older than the last one already sent for a coin are dropped (loop passes, replays inside
  a capture), as are duplicates by ``(coin, time, tid)``;
- a drop closes the TCP connection without a close frame at once (real: ~0.1 s after the bad
  subscription); the idle timeout counts only messages the server sends (not WS pong frames).

Usage::

    python -m tools.fake_exchange --simulate --coins BTC,ETH,SOL --port 8765
    python -m tools.fake_exchange --capture data/sample.ndjson.gz --loop --speed 2 \\
        --silence l2Book:BTC --silence-after 30 --drop-every 120
    python -m tools.fake_exchange --simulate --inject bad_frames.ndjson

    with FakeExchange(SimFeed(SimConfig(coins=("BTC",))), faults=Faults(unknown_every=50)) as ex:
        ...  # connect to ex.ws_url, POST to ex.info_url
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import bisect
import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import logging
import math
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final, TypeVar

import orjson
import uvicorn
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from connectors.errors import FrameError
from connectors.parse import decode_line
from tools.simulate import SimConfig, generate

__all__ = [
    "GREETING",
    "CaptureFeed",
    "ExchangeStats",
    "FakeExchange",
    "Faults",
    "Feed",
    "FeedInfo",
    "Injection",
    "ListFeed",
    "SimFeed",
    "build_parser",
    "exchange_from_args",
    "load_injections",
    "main",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

GREETING: Final = "Websocket connection established."
PARSE_ERROR: Final = "Error parsing JSON into valid websocket request: "
ALREADY_SUBSCRIBED: Final = "Already subscribed: "
ALREADY_UNSUBSCRIBED: Final = "Already unsubscribed: "
INJECTED_ERROR: Final = "Internal error (injected by the fake exchange)"
UNKNOWN_CHANNEL: Final = "fakeExchangeUnknown"
MALFORMED_CHANNEL: Final = "malformed"
INJECTED_CHANNEL: Final = "injected"

REPLAY_TRADES: Final = 30
RECENT_TRADES: Final = 10
BOOK_LEVELS: Final = 20
FAST_BOOK_LEVELS: Final = 5
MAX_CANDLES: Final = 5000
CANDLE_SNAPSHOT_LIMIT: Final = 500
CANDLE_PUSH_INTERVAL_S: Final = 1.0
ALL_MIDS_INTERVAL_S: Final = 5.0
PASS_GAP_S: Final = 0.1
IDLE_TIMEOUT_S: Final = 60.0
REST_WEIGHT_PER_MIN: Final = 1200
CLIENT_QUEUE_MAX: Final = 50_000
_DEDUPE_MAX: Final = 200_000
WARMUP_S: Final = 1.0
"""Feed seconds applied at once at start (stamped in the past) so a new server has state."""

DATA_CHANNELS: Final = frozenset({"trades", "l2Book", "bbo", "candle", "activeAssetCtx", "allMids"})

_MINUTE: Final = 60_000
CANDLE_INTERVALS_MS: Final[dict[str, int]] = {
    "1m": _MINUTE,
    "3m": 3 * _MINUTE,
    "5m": 5 * _MINUTE,
    "15m": 15 * _MINUTE,
    "30m": 30 * _MINUTE,
    "1h": 60 * _MINUTE,
    "2h": 120 * _MINUTE,
    "4h": 240 * _MINUTE,
    "8h": 480 * _MINUTE,
    "12h": 720 * _MINUTE,
    "1d": 1440 * _MINUTE,
    "3d": 3 * 1440 * _MINUTE,
    "1w": 7 * 1440 * _MINUTE,
    "1M": 0,  # calendar month
}
"""Candle intervals (WS ``candle`` and REST ``candleSnapshot``) and their length in ms."""

INFO_WEIGHTS: Final[dict[str, int]] = {"l2Book": 2, "allMids": 2, "exchangeStatus": 2}
DEFAULT_INFO_WEIGHT: Final = 20

# axum's JSON extractor rejections (the real /info is an axum server).
CONTENT_TYPE_ERROR: Final = "Expected request with `Content-Type: application/json`"
SYNTAX_ERROR: Final = "Failed to parse the request body as JSON"
DESERIALIZE_ERROR: Final = "Failed to deserialize the JSON body into the target type"
RATE_LIMITED: Final = "Too many requests"

KNOWN_SZ_DECIMALS: Final[dict[str, int]] = {
    "BTC": 5,
    "ETH": 4,
    "SOL": 2,
    "HYPE": 2,
    "kPEPE": 0,
    "MATIC": 1,
    "ATOM": 2,
    "DYDX": 1,
    "AVAX": 2,
    "BNB": 3,
    "APE": 1,
    "OP": 1,
    "LTC": 2,
    "ARB": 1,
    "DOGE": 0,
    "INJ": 1,
    "SUI": 1,
}
KNOWN_MAX_LEVERAGE: Final[dict[str, int]] = {"BTC": 50, "ETH": 50, "SOL": 20, "HYPE": 10}
DEFAULT_SZ_DECIMALS: Final = 2
DEFAULT_MAX_LEVERAGE: Final = 10

_PONG: Final = '{"channel":"pong"}'
_UNKNOWN_FRAME: Final = orjson.dumps(
    {"channel": UNKNOWN_CHANNEL, "data": {"injected": True}}
).decode()


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _error_frame(text: str) -> str:
    return _dumps({"channel": "error", "data": text})


def _fmt_dec(value: Decimal) -> str:
    """Exchange-style decimal string: no exponent, no trailing zeros, at least one decimal."""
    s = format(value, "f")
    if "." in s:
        s = s.rstrip("0")
        if s.endswith("."):
            s += "0"
    else:
        s += ".0"
    return s


def _decimals(value: str) -> int:
    """Significant decimals of a decimal string ("0.00036" → 5, "2058973.0" → 0)."""
    _, _, frac = value.partition(".")
    return len(frac.rstrip("0"))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _bucket(t_ms: int, interval: str) -> tuple[int, int]:
    """Open and close time (ms) of the ``interval`` candle holding ``t_ms``."""
    size = CANDLE_INTERVALS_MS[interval]
    if size:
        start = t_ms - t_ms % size
        return start, start + size - 1
    d = datetime.fromtimestamp(t_ms / 1000, tz=UTC)
    first = datetime(d.year, d.month, 1, tzinfo=UTC)
    nxt = datetime(d.year + (d.month == 12), d.month % 12 + 1, 1, tzinfo=UTC)
    return int(first.timestamp()) * 1000, int(nxt.timestamp()) * 1000 - 1


def _aggregate(side: list[Any], bids: bool, n_sig: int, mantissa: int | None) -> list[Any]:
    """Merge book levels into ``n_sig`` significant-figure buckets (× ``mantissa``).

    The bucket size follows the real server (BTC ≈ 84,143: nSigFigs 5 → 1, mantissa 2 → 2,
    nSigFigs 4 → 10, 3 → 100, 2 → 1,000); bids round down, asks up; ``sz`` and ``n`` add up.
    """
    if not side:
        return []
    top = Decimal(side[0]["px"])
    step = Decimal(1).scaleb(top.adjusted() - n_sig + 1) * (mantissa or 1)
    rounding = ROUND_FLOOR if bids else ROUND_CEILING
    merged: dict[Decimal, list[Any]] = {}
    for level in side:
        px = (Decimal(level["px"]) / step).to_integral_value(rounding=rounding) * step
        acc = merged.get(px)
        if acc is None:
            merged[px] = [Decimal(level["sz"]), int(level["n"])]
        else:
            acc[0] += Decimal(level["sz"])
            acc[1] += int(level["n"])
    return [{"px": _fmt_dec(px), "sz": _fmt_dec(sz), "n": n} for px, (sz, n) in merged.items()]


# ----- feeds -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedInfo:
    """What a feed contains (from a scan of its first pass).

    Attributes:
        coins: every coin with data, in order of first appearance.
        trade_coins: coins with ``trades`` frames (their candles are built from trades).
        book_coins: coins with ``l2Book`` frames.
        bbo_coins: coins with ``bbo`` frames (others get ``bbo`` derived from books).
        ctx_coins: coins with ``activeAssetCtx`` frames.
        candle_coins: coins with ``candle`` frames.
        has_all_mids: whether the feed has (first-dex) ``allMids`` frames.
        sz_decimals: size decimals seen per coin (max over trade and level sizes).
    """

    coins: tuple[str, ...]
    trade_coins: frozenset[str] = frozenset()
    book_coins: frozenset[str] = frozenset()
    bbo_coins: frozenset[str] = frozenset()
    ctx_coins: frozenset[str] = frozenset()
    candle_coins: frozenset[str] = frozenset()
    has_all_mids: bool = False
    sz_decimals: dict[str, int] = field(default_factory=dict)


def _frame_time_ms(frame: dict[str, Any]) -> int | None:
    """The latest exchange time in a frame (trades: the newest fill; candle: ``t``), else None."""
    data = frame.get("data")
    if type(data) is dict:
        t = data.get("t") if frame.get("channel") == "candle" else data.get("time")
        return t if type(t) is int else None
    if type(data) is list:
        times = [x["time"] for x in data if type(x) is dict and type(x.get("time")) is int]
        return max(times) if times else None
    return None


_Timed = tuple[int, dict[str, Any]]


def _is_data_frame(frame: Any) -> bool:
    return type(frame) is dict and frame.get("channel") in DATA_CHANNELS and "data" in frame


def _clocked(records: Iterable[tuple[int | None, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Data frames with a non-decreasing feed clock (ns).

    The clock is the receive time when the record has one, else the newest exchange time seen so
    far; untimed frames (``allMids``, ``activeAssetCtx``) take the current clock (frames before
    the first timed one take that one's).
    """
    clock: int | None = None
    pending: list[dict[str, Any]] = []
    for recv_ns, frame in records:
        if not _is_data_frame(frame):
            continue
        t: int | None = recv_ns
        if t is None:
            ex_ms = _frame_time_ms(frame)
            t = None if ex_ms is None else ex_ms * 1_000_000
        if t is not None:
            clock = t if clock is None else max(clock, t)
        if clock is None:
            pending.append(frame)
            continue
        for early in pending:
            yield clock, early
        pending.clear()
        yield clock, frame
    for early in pending:
        yield clock or 0, early


def _scan(frames: Iterable[tuple[int, dict[str, Any]]]) -> FeedInfo:
    coins: dict[str, None] = {}
    by_channel: dict[str, set[str]] = {ch: set() for ch in DATA_CHANNELS}
    sz_dec: dict[str, int] = {}
    has_mids = False

    def see(coin: Any, channel: str, sizes: Iterable[Any] = ()) -> None:
        if type(coin) is not str:
            return
        coins.setdefault(coin)
        by_channel[channel].add(coin)
        for sz in sizes:
            if type(sz) is str:
                sz_dec[coin] = max(sz_dec.get(coin, 0), _decimals(sz))

    for _, frame in frames:
        channel = frame["channel"]
        data = frame["data"]
        try:
            if channel == "trades":
                for tr in data:
                    see(tr["coin"], channel, (tr.get("sz"),))
            elif channel == "l2Book":
                see(data["coin"], channel, (lv["sz"] for side in data["levels"] for lv in side))
            elif channel == "bbo":
                see(data["coin"], channel, (lv["sz"] for lv in data["bbo"] if lv))
            elif channel == "activeAssetCtx":
                see(data["coin"], channel)
            elif channel == "candle":
                for item in data if type(data) is list else (data,):
                    see(item["s"], channel)
            elif channel == "allMids" and not data.get("dex"):
                has_mids = True
        except (KeyError, TypeError, AttributeError):
            continue
    return FeedInfo(
        coins=tuple(coins),
        trade_coins=frozenset(by_channel["trades"]),
        book_coins=frozenset(by_channel["l2Book"]),
        bbo_coins=frozenset(by_channel["bbo"]),
        ctx_coins=frozenset(by_channel["activeAssetCtx"]),
        candle_coins=frozenset(by_channel["candle"]),
        has_all_mids=has_mids,
        sz_decimals=sz_dec,
    )


class Feed(abc.ABC):
    """A source of Hyperliquid WebSocket frames for the fake exchange to serve."""

    @abc.abstractmethod
    def records(self, pass_no: int) -> Iterator[tuple[int | None, Any]]:
        """Raw ``(receive_ns or None, frame)`` records of one pass, in order.

        Args:
            pass_no: 0 for the first pass, then 1, 2, … when the feed loops.
        """

    def frames(self, pass_no: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        """Data frames of one pass as ``(feed_clock_ns, frame)`` (control frames dropped).

        Args:
            pass_no: 0 for the first pass, then 1, 2, … when the feed loops.
        """
        return _clocked(self.records(pass_no))

    @functools.cached_property
    def info(self) -> FeedInfo:
        """What the feed contains (scanned once, from the first pass)."""
        return _scan(self.frames(0))


class CaptureFeed(Feed):
    """A recorded capture: plain/``.gz``/``.lz4`` NDJSON, any line format of `decode_line`.

    Args:
        path: the capture file. Unreadable lines are skipped (logged at debug level).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            msg = f"capture not found: {self.path}"
            raise FileNotFoundError(msg)

    def records(self, pass_no: int) -> Iterator[tuple[int | None, Any]]:
        """Decoded lines of the capture (the same on every pass)."""
        from connectors.files import open_capture  # lazily: it imports bytewax

        with open_capture(self.path) as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    yield decode_line(line)
                except FrameError as ex:
                    log.debug("%s:%d skipped: %s", self.path, lineno, ex)


class SimFeed(Feed):
    """The seeded simulator (`tools.simulate`).

    Pass ``k`` simulates ``config`` with seed ``config.seed + k``, starting where pass ``k - 1``
    ended, so a looping feed keeps producing fresh (though not price-continuous) markets.

    Args:
        config: what to simulate; defaults to `SimConfig()` (BTC, ETH, SOL, 600 s, seed 7).
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()

    def records(self, pass_no: int) -> Iterator[tuple[int | None, Any]]:
        """The simulator's frames for one pass."""
        cfg = self.config
        if pass_no:
            span = round(cfg.seconds * 1000)
            cfg = dataclasses.replace(
                cfg, seed=cfg.seed + pass_no, start_ms=cfg.start_ms + pass_no * span
            )
        yield from generate(cfg)

    @functools.cached_property
    def info(self) -> FeedInfo:
        """Known without simulating: every coin has every channel, plus ``allMids``."""
        coins = frozenset(self.config.coins)
        return FeedInfo(
            coins=tuple(self.config.coins),
            trade_coins=coins,
            book_coins=coins,
            bbo_coins=coins,
            ctx_coins=coins,
            candle_coins=coins,
            has_all_mids=True,
            sz_decimals={c: KNOWN_SZ_DECIMALS.get(c, DEFAULT_SZ_DECIMALS) for c in coins},
        )


class ListFeed(Feed):
    """Frames given in code (handy in tests).

    Args:
        items: frames (``{"channel": ..., "data": ...}``) or ``(receive_ns or None, frame)``
            pairs, in feed order; replayed identically on every pass.
    """

    def __init__(self, items: Iterable[dict[str, Any] | tuple[int | None, dict[str, Any]]]) -> None:
        self.items: list[tuple[int | None, Any]] = [
            (None, item) if isinstance(item, dict) else (item[0], item[1]) for item in items
        ]

    def records(self, pass_no: int) -> Iterator[tuple[int | None, Any]]:
        """The given records."""
        return iter(self.items)


# ----- injected frames -------------------------------------------------------------------------


@dataclass(frozen=True)
class Injection:
    """One message sent verbatim to each subscribed client (see the module's "Injected frames").

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
        ValueError: naming the file and line of the first bad line.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"inject file not found: {path}"
        raise FileNotFoundError(msg)
    items: list[Injection] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                items.append(_parse_injection(line))
            except ValueError as ex:
                msg = f"{path}:{lineno}: {ex}"
                raise ValueError(msg) from None
    return tuple(sorted(items, key=lambda item: item.offset_s))


def _injections(inject: str | Path | Iterable[Injection] | None) -> tuple[Injection, ...]:
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


# ----- faults and stats ------------------------------------------------------------------------


@dataclass(frozen=True)
class Faults:
    """Fault injection settings (all off by default).

    Periodic faults count from the moment the faults are set (server start for the constructor's
    faults, the call for `FakeExchange.set_faults`).

    Attributes:
        drop_every_s: drop every client socket every N seconds.
        drop_code: ``None`` drops the TCP connection without a close frame (the client sees 1006,
            as with the real server); a code sends a close frame with that code instead.
        stall_every_s: every N seconds start a stall of ``stall_for_s`` seconds during which
            nothing at all (data, acks, pongs, errors) is sent to any client; requests are still
            processed and sockets stay open. Discarded frames are lost, not delayed.
        stall_for_s: stall length (must be < ``stall_every_s``).
        silence: streams to stop: ``"channel"`` (all coins), ``"channel:COIN"`` or
            ``"candle:COIN:interval"``; other streams, acks and pongs continue.
        silence_after_s: delay before ``silence`` takes effect.
        malformed_every: after every N-th data frame sent to a client, also send a truncated
            (invalid JSON) copy of it.
        unknown_every: after every N-th data frame sent to a client, also send
            ``{"channel":"fakeExchangeUnknown","data":{"injected":true}}``.
        error_every_s: send ``{"channel":"error","data":...}`` to every client every N seconds.
    """

    drop_every_s: float | None = None
    drop_code: int | None = None
    stall_every_s: float | None = None
    stall_for_s: float = 5.0
    silence: tuple[str, ...] = ()
    silence_after_s: float = 0.0
    malformed_every: int | None = None
    unknown_every: int | None = None
    error_every_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("drop_every_s", "stall_every_s", "error_every_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                msg = f"{name} must be > 0 or None, got {value!r}"
                raise ValueError(msg)
        for name in ("malformed_every", "unknown_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                msg = f"{name} must be >= 1 or None, got {value!r}"
                raise ValueError(msg)
        if not self.stall_for_s > 0:
            msg = f"stall_for_s must be > 0, got {self.stall_for_s!r}"
            raise ValueError(msg)
        if self.stall_every_s is not None and self.stall_for_s >= self.stall_every_s:
            msg = f"stall_for_s ({self.stall_for_s}) must be < stall_every_s"
            raise ValueError(msg)
        if self.silence_after_s < 0:
            msg = f"silence_after_s must be >= 0, got {self.silence_after_s!r}"
            raise ValueError(msg)
        if self.drop_code is not None and not 1000 <= self.drop_code <= 4999:
            msg = f"drop_code must be a WebSocket close code (1000-4999), got {self.drop_code!r}"
            raise ValueError(msg)


@dataclass
class ExchangeStats:
    """Counters of a fake exchange (`FakeExchange.stats` returns a copy).

    Attributes:
        connections_opened: WebSocket connections accepted.
        connections_closed: connections ended (by either side).
        connections_active: connections open now.
        subscriptions: subscriptions acknowledged.
        unsubscriptions: unsubscriptions acknowledged.
        messages_received: client WebSocket messages.
        request_errors: ``error`` frames answering bad requests (parse, already (un)subscribed).
        frames_sent: messages written to sockets, by channel (control ones included:
            ``subscriptionResponse``, ``pong``, ``error``, ``post``, ``greeting``, ``malformed``,
            ``fakeExchangeUnknown``, ``injected``).
        frames_silenced: data frames withheld by the ``silence`` fault (per client).
        frames_stalled: messages discarded during stalls (per client).
        drops_injected: sockets dropped by ``drop_every_s`` or `FakeExchange.drop_all`.
        idle_closes: sockets dropped by the idle timeout.
        invalid_subscription_closes: sockets dropped for an unknown coin or bad l2Book params.
        slow_consumer_closes: sockets dropped because their send queue overflowed.
        malformed_injected: malformed frames sent.
        unknown_injected: unknown-channel frames sent.
        errors_injected: ``error_every_s`` frames sent.
        stalls_injected: stalls started.
        frames_injected: messages of the inject schedule queued to clients (written ones are
            ``frames_sent["injected"]``).
        info_requests: info requests answered, by type (REST and WS ``post``).
        rate_limited: info requests refused with 429.
        feed_frames: feed frames processed.
        feed_passes: feed passes completed.
        feed_errors: feed frames that could not be used.
    """

    connections_opened: int = 0
    connections_closed: int = 0
    connections_active: int = 0
    subscriptions: int = 0
    unsubscriptions: int = 0
    messages_received: int = 0
    request_errors: int = 0
    frames_sent: dict[str, int] = field(default_factory=dict)
    frames_silenced: int = 0
    frames_stalled: int = 0
    drops_injected: int = 0
    idle_closes: int = 0
    invalid_subscription_closes: int = 0
    slow_consumer_closes: int = 0
    malformed_injected: int = 0
    unknown_injected: int = 0
    errors_injected: int = 0
    stalls_injected: int = 0
    frames_injected: int = 0
    info_requests: dict[str, int] = field(default_factory=dict)
    rate_limited: int = 0
    feed_frames: int = 0
    feed_passes: int = 0
    feed_errors: int = 0

    def copy(self) -> ExchangeStats:
        """A snapshot copy (its dicts are copies too)."""
        return dataclasses.replace(
            self, frames_sent=dict(self.frames_sent), info_requests=dict(self.info_requests)
        )

    def sent(self, channel: str) -> int:
        """Messages written on ``channel``."""
        return self.frames_sent.get(channel, 0)


# ----- subscriptions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sub:
    type: str
    coin: str = ""
    interval: str = ""
    n_sig_figs: int | None = None
    mantissa: int | None = None
    fast: bool = False
    dex: str | None = None

    def wire(self) -> dict[str, Any]:
        """The subscription as the server echoes it (defaults filled in, server key order)."""
        if self.type == "allMids":
            return {"type": "allMids"} if self.dex is None else {"type": "allMids", "dex": self.dex}
        if self.type == "l2Book":
            return {
                "type": "l2Book",
                "coin": self.coin,
                "nSigFigs": self.n_sig_figs,
                "mantissa": self.mantissa,
                "fast": self.fast,
            }
        if self.type == "candle":
            return {"type": "candle", "coin": self.coin, "interval": self.interval}
        return {"type": self.type, "coin": self.coin}

    @functools.cached_property
    def key(self) -> str:
        return _dumps(self.wire())

    @property
    def route(self) -> tuple[str, str, str]:
        return (self.type, self.coin, self.interval)


def _opt_int(value: Any) -> tuple[bool, int | None]:
    if value is None or type(value) is int:
        return True, value
    return False, None


def _parse_sub(sub: Any) -> _Sub | None:
    """A subscription object → `_Sub`, or None when it would not deserialize on the server."""
    if type(sub) is not dict:
        return None
    kind = sub.get("type")
    if kind == "allMids":
        dex = sub.get("dex")
        return _Sub("allMids", dex=dex) if dex is None or type(dex) is str else None
    coin = sub.get("coin")
    if type(coin) is not str:
        return None
    if kind in ("trades", "bbo", "activeAssetCtx"):
        return _Sub(kind, coin)
    if kind == "candle":
        interval = sub.get("interval")
        if type(interval) is not str or interval not in CANDLE_INTERVALS_MS:
            return None
        return _Sub("candle", coin, interval)
    if kind == "l2Book":
        ok_sig, n_sig = _opt_int(sub.get("nSigFigs"))
        ok_man, mantissa = _opt_int(sub.get("mantissa"))
        fast = sub.get("fast")
        if not (ok_sig and ok_man) or (fast is not None and type(fast) is not bool):
            return None
        return _Sub("l2Book", coin, n_sig_figs=n_sig, mantissa=mantissa, fast=bool(fast))
    return None


@dataclass(frozen=True)
class _Request:
    method: str
    sub: _Sub | None = None
    post_id: int = 0
    payload: dict[str, Any] = field(default_factory=dict)


def _parse_request(text: str) -> _Request | None:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    method = obj.get("method")
    if method == "ping":
        return _Request("ping")
    if method in ("subscribe", "unsubscribe"):
        sub = _parse_sub(obj.get("subscription"))
        return None if sub is None else _Request(method, sub)
    if method == "post":
        post_id = obj.get("id")
        request = obj.get("request")
        if type(post_id) is not int or type(request) is not dict or request.get("type") != "info":
            return None
        payload = request.get("payload")
        if type(payload) is not dict:
            return None
        return _Request("post", post_id=post_id, payload=payload)
    return None


# ----- market state helpers --------------------------------------------------------------------


@dataclass(frozen=True)
class _Restamp:
    """Feed exchange time (ms) → wall-clock ms: ``wall_ms + (t - f0_ms) / speed``."""

    wall_ms: float
    f0_ms: float
    speed: float

    def __call__(self, t_ms: int) -> int:
        return round(self.wall_ms + (t_ms - self.f0_ms) / self.speed)


class _Candle:
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
        self.px = px
        if pxd > self.hd:
            self.h, self.hd = px, pxd
        if pxd < self.ld:
            self.l, self.ld = px, pxd
        self.v += sz
        self.n += 1
        self.dirty = True

    def wire(self, coin: str, interval: str) -> dict[str, Any]:
        return {
            "t": self.t,
            "T": self.close_t,
            "s": coin,
            "i": interval,
            "o": self.o,
            "c": self.px,
            "h": self.h,
            "l": self.l,
            "v": _fmt_dec(self.v),
            "n": self.n,
        }


class _Series:
    """The candles of one (coin, interval), ascending, at most `MAX_CANDLES`."""

    def __init__(self) -> None:
        self.ts: list[int] = []
        self.candles: list[_Candle] = []

    def last(self) -> _Candle | None:
        return self.candles[-1] if self.candles else None

    def upsert(self, candle: _Candle) -> None:
        i = bisect.bisect_left(self.ts, candle.t)
        if i < len(self.ts) and self.ts[i] == candle.t:
            self.candles[i] = candle
            return
        self.ts.insert(i, candle.t)
        self.candles.insert(i, candle)
        if len(self.ts) > MAX_CANDLES:
            del self.ts[0]
            del self.candles[0]

    def between(self, start: int, end: int) -> list[_Candle]:
        """Candles overlapping ``[start, end]`` (the first may open before ``start``)."""
        i = bisect.bisect_left(self.ts, start)
        if i > 0 and self.candles[i - 1].close_t >= start:
            i -= 1
        out: list[_Candle] = []
        for candle in self.candles[i:]:
            if candle.t > end or len(out) >= CANDLE_SNAPSHOT_LIMIT:
                break
            out.append(candle)
        return out


class _WeightBudget:
    """Per-client REST weight over a sliding 60 s window."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.events: dict[str, deque[tuple[float, int]]] = {}
        self.used: dict[str, int] = {}

    def _purge(self, client: str, now: float) -> deque[tuple[float, int]]:
        events = self.events.setdefault(client, deque())
        while events and events[0][0] <= now - 60.0:
            self.used[client] -= events.popleft()[1]
        return events

    def allows(self, client: str, weight: int, now: float) -> bool:
        self._purge(client, now)
        return self.used.get(client, 0) + weight <= self.limit

    def charge(self, client: str, weight: int, now: float) -> None:
        self._purge(client, now).append((now, weight))
        self.used[client] = self.used.get(client, 0) + weight


class _InfoError(Exception):
    def __init__(self, status: int, text: str, body: Any = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.body = body


def _bad_request() -> _InfoError:
    return _InfoError(422, DESERIALIZE_ERROR)


@dataclass(frozen=True)
class _InfoResult:
    status: int
    value: Any = None
    text: str = ""


# ----- connections -----------------------------------------------------------------------------


class _Conn:
    """One client socket: its subscriptions, send queue and close request."""

    def __init__(self, hub: _Hub, ws: WebSocket, cid: int) -> None:
        self.hub = hub
        self.ws = ws
        self.cid = cid
        self.client = ws.client.host if ws.client is not None else ""
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(CLIENT_QUEUE_MAX)
        self.subs: dict[str, _Sub] = {}
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.client_gone = False
        self.last_sent = asyncio.get_running_loop().time()
        self.data_sent = 0
        self.inject_task: asyncio.Task[None] | None = None

    def close(self, code: int | None = None, *, client_gone: bool = False) -> None:
        """Ask the handler to end the connection (``code`` None: no close frame, 1006)."""
        if not self.closed.is_set():
            self.close_code = code
            self.client_gone = client_gone
            self.closed.set()

    def offer(self, text: str, channel: str, *, data: bool = False) -> bool:
        """Queue a message unless the connection is closing or the server is stalled.

        Args:
            text: the message.
            channel: its channel (for stats and fault counting).
            data: whether it is a data frame (counted for ``malformed_every``/``unknown_every``).

        Returns:
            Whether the message was queued.
        """
        hub = self.hub
        if self.closed.is_set():
            return False
        if hub.stalled():
            hub.stats.frames_stalled += 1
            return False
        self._put(text, channel)
        if not data:
            return True
        self.data_sent += 1
        faults = hub.faults
        if faults.malformed_every and self.data_sent % faults.malformed_every == 0:
            hub.stats.malformed_injected += 1
            self._put(text[: max(1, len(text) // 2)], MALFORMED_CHANNEL)
        if faults.unknown_every and self.data_sent % faults.unknown_every == 0:
            hub.stats.unknown_injected += 1
            self._put(_UNKNOWN_FRAME, UNKNOWN_CHANNEL)
        return True

    def _put(self, text: str, channel: str) -> None:
        try:
            self.queue.put_nowait((text, channel))
        except asyncio.QueueFull:
            if not self.closed.is_set():
                log.warning("client %d is not reading; dropping it", self.cid)
                self.hub.stats.slow_consumer_closes += 1
                self.close(None)


# ----- the server core (runs on the server's event loop) ---------------------------------------


class _Hub:
    """Feed pump, market state, subscriptions, fan-out, faults and the info handlers."""

    def __init__(
        self,
        feed: Feed,
        *,
        greeting: bool,
        idle_timeout_s: float | None,
        speed: float,
        loop_feed: bool,
        extra_coins: Sequence[str],
        delisted: Sequence[str],
        rest_weight_per_min: int,
        faults: Faults,
        injections: tuple[Injection, ...] = (),
    ) -> None:
        self.feed = feed
        self.injections = injections
        self.info = info = feed.info
        self.greeting = greeting
        self.idle_timeout_s = idle_timeout_s
        self.speed = speed
        self.loop_feed = loop_feed
        self.delisted = frozenset(delisted)
        universe = dict.fromkeys(info.coins)
        universe.update(dict.fromkeys(extra_coins))
        universe.update(dict.fromkeys(delisted))
        self.universe: tuple[str, ...] = tuple(universe)
        self.valid_coins = frozenset(self.universe)
        # Coins without any feed data (extra, delisted) stream empty books, like a delisted coin.
        self.bookless = self.valid_coins - frozenset(info.coins)
        self.faults = faults
        self.stats = ExchangeStats()
        self.budget = _WeightBudget(rest_weight_per_min)

        self.loop: asyncio.AbstractEventLoop | None = None
        self.conns: set[_Conn] = set()
        self.routes: dict[tuple[str, str, str], dict[_Conn, dict[str, _Sub]]] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.fault_tasks: list[asyncio.Task[None]] = []
        self.stall_until = 0.0
        self.silence_from = 0.0
        self.next_cid = 0
        self.closing = False

        self.clock = _Restamp(float(_now_ms()), 0.0, speed)
        self.trade_keys: dict[tuple[Any, ...], None] = {}
        self.last_time: dict[tuple[str, str], int] = {}
        self.history: dict[str, deque[dict[str, Any]]] = {}
        self.books: dict[str, dict[str, Any]] = {}
        self.bbos: dict[str, dict[str, Any]] = {}
        self.ctxs: dict[str, dict[str, Any]] = {}
        self.feed_mids: dict[str, str] | None = None  # the feed's latest allMids
        self.derived_mids: dict[str, str] = {}  # from books/bbo (else the last trade)
        self.series: dict[tuple[str, str], _Series] = {}
        self.dirty: set[tuple[str, str]] = set()
        self.book_round = -1

    # ----- lifecycle -----

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        pump = self._pump(*self._warm_up())
        self.tasks.append(asyncio.create_task(pump, name="fake-exchange-pump"))
        self.tasks.append(asyncio.create_task(self._candle_ticker(), name="fake-exchange-candles"))
        if not self.info.has_all_mids:
            self.tasks.append(asyncio.create_task(self._mids_ticker(), name="fake-exchange-mids"))
        self.apply_faults(self.faults)

    async def shutdown(self) -> None:
        self.closing = True
        tasks = self.tasks + self.fault_tasks
        self.tasks, self.fault_tasks = [], []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in list(self.conns):
            conn.close(None)

    def now(self) -> float:
        return self.loop.time() if self.loop is not None else time.monotonic()

    # ----- faults -----

    def apply_faults(self, faults: Faults) -> None:
        self.faults = faults
        if self.loop is None:
            return
        for task in self.fault_tasks:
            task.cancel()
        self.fault_tasks = []
        self.stall_until = 0.0
        self.silence_from = self.now() + faults.silence_after_s
        if faults.drop_every_s:
            self._every(faults.drop_every_s, lambda: self.drop_all(faults.drop_code))
        if faults.stall_every_s:
            self._every(faults.stall_every_s, lambda: self.stall(faults.stall_for_s))
        if faults.error_every_s:
            self._every(faults.error_every_s, self._inject_error)

    def _every(self, period: float, action: Callable[[], Any]) -> None:
        async def run() -> None:
            while True:
                await asyncio.sleep(period)
                action()

        self.fault_tasks.append(asyncio.create_task(run(), name="fake-exchange-fault"))

    def drop_all(self, code: int | None = None) -> int:
        conns = [c for c in self.conns if not c.closed.is_set()]
        for conn in conns:
            conn.close(code)
        self.stats.drops_injected += len(conns)
        if conns:
            log.info("dropped %d connection(s) (close code %s)", len(conns), code or "none")
        return len(conns)

    def stall(self, seconds: float) -> None:
        self.stall_until = max(self.stall_until, self.now() + seconds)
        self.stats.stalls_injected += 1
        log.info("stalling every socket for %.3g s", seconds)

    def stalled(self) -> bool:
        return self.stall_until > 0.0 and self.now() < self.stall_until

    def _inject_error(self) -> None:
        text = _error_frame(INJECTED_ERROR)
        for conn in list(self.conns):
            self.stats.errors_injected += 1
            conn.offer(text, "error")

    def silenced(self, route: tuple[str, str, str]) -> bool:
        silence = self.faults.silence
        if not silence or self.now() < self.silence_from:
            return False
        kind, coin, interval = route
        return (
            kind in silence or f"{kind}:{coin}" in silence or f"{kind}:{coin}:{interval}" in silence
        )

    # ----- WebSocket connections -----

    async def serve_ws(self, ws: WebSocket) -> None:
        await ws.accept()
        if self.closing:
            return
        self.next_cid += 1
        conn = _Conn(self, ws, self.next_cid)
        self.conns.add(conn)
        self.stats.connections_opened += 1
        self.stats.connections_active += 1
        log.debug("client %d connected from %s", conn.cid, conn.client)
        if self.greeting:
            conn.offer(GREETING, "greeting")
        tasks = [asyncio.create_task(self._read_loop(conn)), asyncio.create_task(self._write(conn))]
        if self.idle_timeout_s is not None and self.idle_timeout_s > 0:
            tasks.append(asyncio.create_task(self._watchdog(conn, self.idle_timeout_s)))
        try:
            await conn.closed.wait()
        finally:
            if conn.inject_task is not None:
                tasks.append(conn.inject_task)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._unregister(conn)
        if conn.close_code is not None and not conn.client_gone:
            with contextlib.suppress(Exception):
                await ws.close(conn.close_code)
        # Returning without a close frame makes uvicorn drop the TCP connection: code 1006.
        log.debug("client %d closed (code %s)", conn.cid, conn.close_code)

    def _unregister(self, conn: _Conn) -> None:
        for sub in conn.subs.values():
            self._route_remove(conn, sub)
        conn.subs.clear()
        if conn in self.conns:
            self.conns.discard(conn)
            self.stats.connections_closed += 1
            self.stats.connections_active -= 1

    async def _read_loop(self, conn: _Conn) -> None:
        try:
            while not conn.closed.is_set():
                message = await conn.ws.receive()
                if message["type"] == "websocket.disconnect":
                    conn.close(None, client_gone=True)
                    return
                text = message.get("text")
                if text is None:
                    text = (message.get("bytes") or b"").decode("utf-8", "replace")
                self.stats.messages_received += 1
                self._handle(conn, text)
        except Exception as ex:  # the socket went away under us
            log.debug("client %d read failed: %r", conn.cid, ex)
            conn.close(None, client_gone=True)

    async def _write(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        sent = self.stats.frames_sent
        try:
            while True:
                text, channel = await conn.queue.get()
                if self.stalled():  # queued before the stall began: lost too
                    self.stats.frames_stalled += 1
                    continue
                await conn.ws.send_text(text)
                conn.last_sent = loop.time()
                sent[channel] = sent.get(channel, 0) + 1
        except Exception as ex:
            log.debug("client %d write failed: %r", conn.cid, ex)
            conn.close(None, client_gone=True)

    async def _watchdog(self, conn: _Conn, idle_s: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            remaining = conn.last_sent + idle_s - loop.time()
            if remaining <= 0:
                log.info("client %d: nothing sent for %.3g s; dropping it", conn.cid, idle_s)
                self.stats.idle_closes += 1
                conn.close(None)
                return
            await asyncio.sleep(remaining)

    def _handle(self, conn: _Conn, text: str) -> None:
        request = _parse_request(text)
        if request is None:
            self.stats.request_errors += 1
            conn.offer(_error_frame(PARSE_ERROR + text), "error")
        elif request.method == "ping":
            conn.offer(_PONG, "pong")
        elif request.method == "post":
            self._post(conn, request)
        elif request.sub is not None:
            if request.method == "subscribe":
                self._subscribe(conn, request.sub)
            else:
                self._unsubscribe(conn, request.sub)

    def _valid(self, sub: _Sub) -> bool:
        if sub.type == "allMids":
            return sub.dex in (None, "")
        if sub.coin not in self.valid_coins:
            return False
        if sub.type == "l2Book":
            if sub.n_sig_figs is not None and sub.n_sig_figs not in (2, 3, 4, 5):
                return False
            if sub.mantissa is not None and (sub.n_sig_figs != 5 or sub.mantissa not in (1, 2, 5)):
                return False
        return True

    def _subscribe(self, conn: _Conn, sub: _Sub) -> None:
        if not self._valid(sub):
            log.info(
                "client %d subscribed to %s: unknown coin or bad params; dropping",
                conn.cid,
                sub.key,
            )
            self.stats.invalid_subscription_closes += 1
            conn.close(None)
            return
        key = sub.key
        if key in conn.subs:
            self.stats.request_errors += 1
            conn.offer(_error_frame(ALREADY_SUBSCRIBED + key), "error")
            return
        conn.subs[key] = sub
        self.routes.setdefault(sub.route, {}).setdefault(conn, {})[key] = sub
        self.stats.subscriptions += 1
        ack = {"method": "subscribe", "subscription": sub.wire()}
        conn.offer(_dumps({"channel": "subscriptionResponse", "data": ack}), "subscriptionResponse")
        self._snapshot(conn, sub)
        if self.injections and conn.inject_task is None:
            conn.inject_task = asyncio.create_task(
                self._inject(conn), name=f"fake-exchange-inject-{conn.cid}"
            )

    async def _inject(self, conn: _Conn) -> None:
        """Send the inject schedule to ``conn``, timed from its first subscription."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for item in self.injections:
            delay = start + item.offset_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if conn.closed.is_set():
                return
            if conn.offer(item.text, INJECTED_CHANNEL):
                self.stats.frames_injected += 1
        log.debug("client %d: %d injected frame(s) queued", conn.cid, len(self.injections))

    def _unsubscribe(self, conn: _Conn, sub: _Sub) -> None:
        key = sub.key
        if key not in conn.subs:
            self.stats.request_errors += 1
            conn.offer(_error_frame(ALREADY_UNSUBSCRIBED + key), "error")
            return
        del conn.subs[key]
        self._route_remove(conn, sub)
        self.stats.unsubscriptions += 1
        ack = {"method": "unsubscribe", "subscription": sub.wire()}
        conn.offer(_dumps({"channel": "subscriptionResponse", "data": ack}), "subscriptionResponse")

    def _route_remove(self, conn: _Conn, sub: _Sub) -> None:
        route = self.routes.get(sub.route)
        if route is None:
            return
        subs = route.get(conn)
        if subs is not None:
            subs.pop(sub.key, None)
            if not subs:
                del route[conn]
        if not route:
            del self.routes[sub.route]

    def _snapshot(self, conn: _Conn, sub: _Sub) -> None:
        """The first data after an ack: trades replay, current book/bbo/candle/ctx/mids."""
        if self.silenced(sub.route):
            self.stats.frames_silenced += 1
            return
        frame: dict[str, Any] | None = None
        coin = sub.coin
        if sub.type == "trades":
            frame = {"channel": "trades", "data": list(self.history.get(coin, ()))}
        elif sub.type == "l2Book":
            book = self.books.get(coin)
            if book is None and coin in self.bookless:
                book = {"coin": coin, "time": self._book_clock(), "levels": [[], []]}
            if book is not None:
                conn.offer(self._render_book(book, sub), "l2Book", data=True)
        elif sub.type == "bbo":
            bbo = self.bbos.get(coin)
            if bbo is None and coin in self.bookless:
                bbo = {"coin": coin, "time": self._book_clock(), "bbo": [None, None]}
            if bbo is not None:
                frame = {"channel": "bbo", "data": bbo}
        elif sub.type == "candle":
            series = self.series.get((coin, sub.interval))
            last = series.last() if series is not None else None
            if last is not None:
                frame = {"channel": "candle", "data": last.wire(coin, sub.interval)}
        elif sub.type == "activeAssetCtx":
            ctx = self.ctxs.get(coin)
            if ctx is not None:
                frame = {"channel": "activeAssetCtx", "data": ctx}
        elif sub.type == "allMids" and self.mids():
            frame = {"channel": "allMids", "data": {"mids": self.mids()}}
        if frame is not None:
            conn.offer(_dumps(frame), sub.type, data=True)

    def _book_clock(self) -> int:
        """The time of the latest book push round (all books share it), else now."""
        return self.book_round if self.book_round >= 0 else _now_ms()

    # ----- fan-out -----

    def _publish(
        self, route: tuple[str, str, str], channel: str, render: Callable[[_Sub], str]
    ) -> None:
        subscribers = self.routes.get(route)
        if not subscribers:
            return
        if self.silenced(route):
            self.stats.frames_silenced += sum(len(s) for s in subscribers.values())
            return
        cache: dict[_Sub, str] = {}
        for conn, subs in list(subscribers.items()):
            for sub in list(subs.values()):
                text = cache.get(sub)
                if text is None:
                    text = cache[sub] = render(sub)
                conn.offer(text, channel, data=True)

    def _publish_frame(self, route: tuple[str, str, str], frame: dict[str, Any]) -> None:
        if not self.routes.get(route):
            return
        text = _dumps(frame)
        self._publish(route, route[0], lambda _sub: text)

    @staticmethod
    def _render_book(book: dict[str, Any], sub: _Sub) -> str:
        bids, asks = book["levels"]
        if sub.n_sig_figs is not None:
            bids = _aggregate(bids, True, sub.n_sig_figs, sub.mantissa)
            asks = _aggregate(asks, False, sub.n_sig_figs, sub.mantissa)
        depth = FAST_BOOK_LEVELS if sub.fast else BOOK_LEVELS
        data: dict[str, Any] = {
            "coin": book["coin"],
            "time": book["time"],
            "levels": [bids[:depth], asks[:depth]],
        }
        if sub.fast:
            data["fast"] = True
        return _dumps({"channel": "l2Book", "data": data})

    # ----- the feed -----

    def _begin_pass(self, f0_ns: int, start: float) -> None:
        """Map feed time ``f0_ns`` to loop time ``start`` (wall clock for the re-stamping)."""
        assert self.loop is not None
        wall_ms = time.time() * 1000.0 + (start - self.loop.time()) * 1000.0
        self.clock = _Restamp(wall_ms, f0_ns / 1e6, self.speed)
        self.trade_keys.clear()

    def _warm_up(self) -> tuple[Iterator[_Timed], _Timed | None, float, int | None]:
        """Apply the first `WARMUP_S` of feed time at once, stamped in the past.

        A client connecting right after `FakeExchange.start` then finds books, a trade history
        for the 30-trade replay, and candles, as on the real exchange.

        Returns:
            The first pass's frame iterator, its next unprocessed frame, the loop time that
            corresponds to the first frame's feed time, and that feed time (None: empty feed).
        """
        assert self.loop is not None
        frames = self.feed.frames(0)
        start = self.loop.time() - WARMUP_S / self.speed
        item = next(frames, None)
        if item is None:
            return frames, None, start, None
        f0 = item[0]
        self._begin_pass(f0, start)
        while item is not None and item[0] - f0 <= WARMUP_S * 1e9:
            self.process(item[1])
            item = next(frames, None)
        return frames, item, start, f0

    async def _pump(
        self, frames: Iterator[_Timed], item: _Timed | None, start: float, f0: int | None
    ) -> None:
        """Replay the feed paced by its clock, pass after pass when looping."""
        loop = asyncio.get_running_loop()
        if f0 is None:
            log.warning("the feed has no data frames")
            return
        pass_no = 0
        while True:
            due = start
            burst = 0
            while item is not None:
                feed_ns, frame = item
                if f0 is None:
                    f0 = feed_ns
                    self._begin_pass(f0, start)
                due = start + (feed_ns - f0) / 1e9 / self.speed
                delay = due - loop.time()
                if delay > 0.0005:
                    await asyncio.sleep(delay)
                    burst = 0
                else:
                    burst += 1
                    if burst >= 256:
                        await asyncio.sleep(0)
                        burst = 0
                self.process(frame)
                item = next(frames, None)
            self.stats.feed_passes += 1
            if not self.loop_feed:
                log.info("feed ended (%d frames); serving the last state", self.stats.feed_frames)
                return
            pass_no += 1
            start = max(loop.time(), due) + PASS_GAP_S / self.speed
            frames = self.feed.frames(pass_no)
            item = next(frames, None)
            f0 = None
            if item is None:
                log.warning("feed pass %d is empty; stopping", pass_no)
                return

    def process(self, frame: dict[str, Any]) -> None:
        """Apply one feed frame to the market state and fan it out."""
        self.stats.feed_frames += 1
        channel = frame["channel"]
        data = frame["data"]
        try:
            if channel == "trades":
                self._on_trades(data)
            elif channel == "l2Book":
                self._on_book(data)
            elif channel == "bbo":
                self._on_bbo(data)
            elif channel == "activeAssetCtx":
                self._on_ctx(data)
            elif channel == "allMids":
                self._on_mids(data)
            elif channel == "candle":
                for item in data if type(data) is list else (data,):
                    self._on_candle(item)
        except (
            KeyError,
            TypeError,
            ValueError,
            IndexError,
            AttributeError,
            InvalidOperation,
        ) as ex:
            self.stats.feed_errors += 1
            log.debug("unusable %s frame: %r", channel, ex)

    def _stamp(self, channel: str, coin: str, t: Any) -> int:
        if type(t) is not int:
            msg = f"{channel} time is not an integer"
            raise TypeError(msg)
        new = self.clock(t)
        key = (channel, coin)
        last = self.last_time.get(key)
        if last is not None and new < last:
            new = last
        self.last_time[key] = new
        return new

    def _on_trades(self, data: Any) -> None:
        if type(data) is not list:
            msg = "trades data is not an array"
            raise TypeError(msg)
        keys = self.trade_keys
        by_coin: dict[str, list[dict[str, Any]]] = {}
        for trade in data:
            coin = trade["coin"]
            t = trade["time"]
            if type(coin) is not str or type(t) is not int:
                continue
            key = (coin, t, trade.get("tid"))
            if key in keys:
                continue
            keys[key] = None
            new_t = self.clock(t)
            last = self.last_time.get(("trades", coin))
            if last is not None and new_t < last:
                continue  # older than what was already sent (a later pass's replay)
            self.last_time[("trades", coin)] = new_t
            by_coin.setdefault(coin, []).append({**trade, "time": new_t})
        if len(keys) > _DEDUPE_MAX:
            for old in list(keys)[: _DEDUPE_MAX // 2]:
                del keys[old]
        for coin, trades in by_coin.items():
            history = self.history.get(coin)
            if history is None:
                history = self.history[coin] = deque(maxlen=REPLAY_TRADES)
            history.extend(trades)
            for trade in trades:
                self._candle_trade(coin, trade["time"], trade["px"], Decimal(trade["sz"]))
            info = self.info
            if coin not in info.book_coins | info.bbo_coins:
                self.derived_mids[coin] = trades[-1]["px"]  # no book: the last trade stands in
            self._publish_frame(("trades", coin, ""), {"channel": "trades", "data": trades})

    def _candle_trade(self, coin: str, t: int, px: str, sz: Decimal) -> None:
        pxd = Decimal(px)
        for interval in CANDLE_INTERVALS_MS:
            key = (coin, interval)
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = _Series()
            last = series.last()
            start, close_t = _bucket(t, interval)
            if last is not None and start == last.t:
                last.add(px, pxd, sz)
            elif last is None or start > last.t:
                if last is not None and last.dirty:
                    self._push_candle(coin, interval, last)  # the final state of the bar
                series.upsert(_Candle(start, close_t, px, px, px, px, sz, 1))
            else:
                continue
            self.dirty.add(key)

    def _push_candle(self, coin: str, interval: str, candle: _Candle) -> None:
        candle.dirty = False
        route = ("candle", coin, interval)
        if self.routes.get(route):
            self._publish_frame(route, {"channel": "candle", "data": candle.wire(coin, interval)})

    def _on_candle(self, data: dict[str, Any]) -> None:
        coin = data["s"]
        interval = data["i"]
        if coin in self.info.trade_coins or interval not in CANDLE_INTERVALS_MS:
            return  # candles of coins with trades are built from the trades
        start, close_t = _bucket(self._stamp("candle", f"{coin}/{interval}", data["t"]), interval)
        candle = _Candle(
            start, close_t, data["o"], data["h"], data["l"], data["c"], Decimal(data["v"]), 0
        )
        candle.n = int(data.get("n") or 0)
        key = (coin, interval)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = _Series()
        series.upsert(candle)
        self._push_candle(coin, interval, candle)

    def _on_book(self, data: dict[str, Any]) -> None:
        coin = data["coin"]
        levels = data["levels"]
        if type(coin) is not str or type(levels) is not list or len(levels) != 2:
            msg = "l2Book without coin or [bids, asks]"
            raise ValueError(msg)
        t = self._stamp("l2Book", coin, data["time"])
        bids, asks = list(levels[0]), list(levels[1])
        book = {"coin": coin, "time": t, "levels": [bids, asks]}
        self.books[coin] = book
        route = ("l2Book", coin, "")
        if self.routes.get(route):
            self._publish(route, "l2Book", functools.partial(self._render_book, book))
        if t > self.book_round:  # a new push round: every book shares its time
            self.book_round = t
            for other in self.bookless:
                other_route = ("l2Book", other, "")
                if self.routes.get(other_route):
                    empty = {"coin": other, "time": t, "levels": [[], []]}
                    render = functools.partial(self._render_book, empty)
                    self._publish(other_route, "l2Book", render)
        bid = bids[0] if bids else None
        ask = asks[0] if asks else None
        if coin not in self.info.bbo_coins:
            last = self.bbos.get(coin)
            if last is None or last["bbo"] != [bid, ask]:
                self._set_bbo({"coin": coin, "time": t, "bbo": [bid, ask]})
        self._derive_mid(coin, bid, ask)

    def _on_bbo(self, data: dict[str, Any]) -> None:
        coin = data["coin"]
        bid, ask = data["bbo"]
        if type(coin) is not str:
            msg = "bbo without coin"
            raise TypeError(msg)
        self._set_bbo(
            {"coin": coin, "time": self._stamp("bbo", coin, data["time"]), "bbo": [bid, ask]}
        )
        self._derive_mid(coin, bid, ask)

    def _set_bbo(self, bbo: dict[str, Any]) -> None:
        coin = bbo["coin"]
        self.bbos[coin] = bbo
        self._publish_frame(("bbo", coin, ""), {"channel": "bbo", "data": bbo})

    def _derive_mid(self, coin: str, bid: Any, ask: Any) -> None:
        if not bid or not ask:
            return
        self.derived_mids[coin] = _fmt_dec((Decimal(bid["px"]) + Decimal(ask["px"])) / 2)

    def mids(self) -> dict[str, str]:
        """Current mids: the feed's last ``allMids``, else (or until then) derived ones."""
        return dict(self.feed_mids if self.feed_mids is not None else self.derived_mids)

    def _on_ctx(self, data: dict[str, Any]) -> None:
        coin = data["coin"]
        ctx = data["ctx"]
        if type(coin) is not str or type(ctx) is not dict:
            msg = "activeAssetCtx without coin or ctx"
            raise TypeError(msg)
        payload = {"coin": coin, "ctx": ctx}
        self.ctxs[coin] = payload
        self._publish_frame(
            ("activeAssetCtx", coin, ""), {"channel": "activeAssetCtx", "data": payload}
        )

    def _on_mids(self, data: dict[str, Any]) -> None:
        if data.get("dex"):
            return  # only the first dex is served
        mids = data["mids"]
        if type(mids) is not dict:
            msg = "allMids without mids"
            raise TypeError(msg)
        self.feed_mids = dict(mids)
        self._publish_frame(("allMids", "", ""), {"channel": "allMids", "data": {"mids": mids}})

    async def _candle_ticker(self) -> None:
        while True:
            await asyncio.sleep(CANDLE_PUSH_INTERVAL_S)
            dirty, self.dirty = self.dirty, set()
            for coin, interval in dirty:
                last = self.series[(coin, interval)].last()
                if last is not None and last.dirty:
                    self._push_candle(coin, interval, last)

    async def _mids_ticker(self) -> None:
        while True:
            await asyncio.sleep(ALL_MIDS_INTERVAL_S)
            if self.derived_mids:
                frame = {"channel": "allMids", "data": {"mids": dict(self.derived_mids)}}
                self._publish_frame(("allMids", "", ""), frame)

    # ----- info -----

    def info_request(self, payload: Any, client: str) -> _InfoResult:
        """Answer one ``/info`` payload (REST or WS ``post``), charging the client's budget."""
        kind = payload.get("type") if type(payload) is dict else None
        handler = self._info_handlers.get(kind) if type(kind) is str else None
        if handler is None or type(kind) is not str:
            return _InfoResult(422, text=DESERIALIZE_ERROR)
        weight = INFO_WEIGHTS.get(kind, DEFAULT_INFO_WEIGHT)
        now = self.now()
        if not self.budget.allows(client, weight, now):
            self.stats.rate_limited += 1
            return _InfoResult(429, text=RATE_LIMITED)
        try:
            value, extra = handler(self, payload)
        except _InfoError as ex:
            return _InfoResult(ex.status, value=ex.body, text=ex.text)
        self.budget.charge(client, weight + extra, now)
        requests = self.stats.info_requests
        requests[kind] = requests.get(kind, 0) + 1
        return _InfoResult(200, value=value)

    def _meta(self) -> dict[str, Any]:
        universe: list[dict[str, Any]] = []
        for coin in self.universe:
            if ":" in coin or "/" in coin or coin.startswith(("@", "#")):
                continue  # HIP-3 and spot names are not first-dex perps
            entry: dict[str, Any] = {
                "name": coin,
                "szDecimals": KNOWN_SZ_DECIMALS.get(
                    coin, self.info.sz_decimals.get(coin, DEFAULT_SZ_DECIMALS)
                ),
                "maxLeverage": KNOWN_MAX_LEVERAGE.get(coin, DEFAULT_MAX_LEVERAGE),
            }
            if coin in self.delisted:
                entry["isDelisted"] = True
            universe.append(entry)
        return {"universe": universe, "marginTables": [], "collateralToken": 0}

    @staticmethod
    def _check_dex(payload: dict[str, Any]) -> None:
        dex = payload.get("dex")
        if dex is not None and type(dex) is not str:
            raise _bad_request()
        if dex:
            raise _InfoError(500, "null", None)

    def _info_meta(self, payload: dict[str, Any]) -> tuple[Any, int]:
        self._check_dex(payload)
        return self._meta(), 0

    def _info_meta_ctxs(self, payload: dict[str, Any]) -> tuple[Any, int]:
        self._check_dex(payload)
        meta = self._meta()
        ctxs: list[dict[str, Any]] = []
        for entry in meta["universe"]:
            coin = entry["name"]
            known = self.ctxs.get(coin)
            if known is not None:
                ctxs.append(known["ctx"])
                continue
            mid = self.mids().get(coin)
            ctxs.append(
                {
                    "funding": "0.0",
                    "openInterest": "0.0",
                    "prevDayPx": mid or "0.0",
                    "dayNtlVlm": "0.0",
                    "premium": None,
                    "oraclePx": mid or "0.0",
                    "markPx": mid or "0.0",
                    "midPx": mid,
                    "impactPxs": None,
                    "dayBaseVlm": "0.0",
                }
            )
        return [meta, ctxs], 0

    def _info_l2book(self, payload: dict[str, Any]) -> tuple[Any, int]:
        coin = payload.get("coin")
        ok_sig, n_sig = _opt_int(payload.get("nSigFigs"))
        ok_man, mantissa = _opt_int(payload.get("mantissa"))
        if type(coin) is not str or not (ok_sig and ok_man):
            raise _bad_request()
        if coin not in self.valid_coins:
            return None, 0
        sub = _Sub("l2Book", coin, n_sig_figs=n_sig, mantissa=mantissa)
        if not self._valid(sub):
            raise _bad_request()
        book = self.books.get(coin) or {
            "coin": coin,
            "time": self._book_clock(),
            "levels": [[], []],
        }
        return orjson.loads(self._render_book(book, sub))["data"], 0

    def _info_candles(self, payload: dict[str, Any]) -> tuple[Any, int]:
        req = payload.get("req")
        if type(req) is not dict:
            raise _bad_request()
        coin = req.get("coin")
        interval = req.get("interval")
        start = req.get("startTime")
        end = req.get("endTime")
        if (
            type(coin) is not str
            or type(interval) is not str
            or interval not in CANDLE_INTERVALS_MS
            or type(start) is not int
            or (end is not None and type(end) is not int)
        ):
            raise _bad_request()
        series = self.series.get((coin, interval))
        if series is None:
            return [], 0
        stop = end if end is not None else _now_ms()
        candles = [c.wire(coin, interval) for c in series.between(start, stop)]
        return candles, len(candles) // 60

    def _info_mids(self, payload: dict[str, Any]) -> tuple[Any, int]:
        self._check_dex(payload)
        return self.mids(), 0

    def _info_recent_trades(self, payload: dict[str, Any]) -> tuple[Any, int]:
        coin = payload.get("coin")
        if type(coin) is not str:
            raise _bad_request()
        trades = list(self.history.get(coin, ()))[-RECENT_TRADES:]
        return trades, len(trades) // 20

    def _info_status(self, payload: dict[str, Any]) -> tuple[Any, int]:
        return {"specialStatuses": None, "time": _now_ms()}, 0

    _info_handlers: Final[dict[str, Callable[[_Hub, dict[str, Any]], tuple[Any, int]]]] = {
        "meta": _info_meta,
        "metaAndAssetCtxs": _info_meta_ctxs,
        "l2Book": _info_l2book,
        "candleSnapshot": _info_candles,
        "allMids": _info_mids,
        "recentTrades": _info_recent_trades,
        "exchangeStatus": _info_status,
    }

    async def serve_info(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            return Response(CONTENT_TYPE_ERROR, 415, media_type="text/plain; charset=utf-8")
        body = await request.body()
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as ex:
            text = f"{SYNTAX_ERROR}: {ex}"
            return Response(text, 400, media_type="text/plain; charset=utf-8")
        client = request.client.host if request.client is not None else ""
        result = self.info_request(payload, client)
        if result.status in (200, 500):
            return Response(
                orjson.dumps(result.value), result.status, media_type="application/json"
            )
        return Response(result.text, result.status, media_type="text/plain; charset=utf-8")

    def _post(self, conn: _Conn, request: _Request) -> None:
        result = self.info_request(request.payload, conn.client)
        if result.status == 200:
            response: dict[str, Any] = {
                "type": "info",
                "payload": {"type": request.payload.get("type"), "data": result.value},
            }
        else:
            response = {"type": "error", "payload": result.text}
        frame = {"channel": "post", "data": {"id": request.post_id, "response": response}}
        conn.offer(_dumps(frame), "post")


def _build_app(hub: _Hub) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.websocket("/ws")
    async def ws_endpoint(websocket: WebSocket) -> None:
        await hub.serve_ws(websocket)

    @app.post("/info", response_model=None)
    async def info_endpoint(request: Request) -> Response:
        return await hub.serve_info(request)

    return app


# ----- the public server -----------------------------------------------------------------------


class FakeExchange:
    """A fake Hyperliquid market-data server on a background thread.

    Args:
        feed: what to serve (`CaptureFeed`, `SimFeed`, `ListFeed`).
        host: interface to bind.
        port: port to bind; 0 picks a free one (see `port` after `start`).
        faults: fault injection (`Faults`); default none.
        greeting: send the legacy ``Websocket connection established.`` text on connect.
        idle_timeout_s: drop a socket the server has sent nothing to for this long (None: never).
        speed: replay speed (1 = real time; 2 = twice as fast; exchange times are re-stamped to
            stay near the wall clock at any speed).
        loop_feed: restart the feed when it ends (else serve the last state, with no new data).
        extra_coins: coins added to the universe without data (subscriptions are accepted and
            books are empty).
        delisted: coins marked ``isDelisted`` in ``meta`` (added to the universe if absent).
        rest_weight_per_min: the per-client ``/info`` weight budget per minute.
        inject: messages to send verbatim to each client after its first subscription: an
            inject file (`load_injections`) or `Injection` items (see the module's "Injected
            frames"); None sends none.

    Raises:
        ValueError: for a non-positive ``speed``, an invalid port, a feed without data, or a bad
            inject file.
        FileNotFoundError: for a missing inject file.
    """

    def __init__(
        self,
        feed: Feed,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        greeting: bool = False,
        idle_timeout_s: float | None = IDLE_TIMEOUT_S,
        speed: float = 1.0,
        loop_feed: bool = False,
        extra_coins: Sequence[str] = (),
        delisted: Sequence[str] = (),
        rest_weight_per_min: int = REST_WEIGHT_PER_MIN,
        inject: str | Path | Iterable[Injection] | None = None,
    ) -> None:
        if not speed > 0:
            msg = f"speed must be > 0, got {speed!r}"
            raise ValueError(msg)
        if not 0 <= port <= 65535:
            msg = f"invalid port {port!r}"
            raise ValueError(msg)
        if not feed.info.coins:
            msg = "the feed has no usable data frames (trades, l2Book, bbo, candle, ...)"
            raise ValueError(msg)
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._hub = _Hub(
            feed,
            greeting=greeting,
            idle_timeout_s=idle_timeout_s,
            speed=speed,
            loop_feed=loop_feed,
            extra_coins=extra_coins,
            delisted=delisted,
            rest_weight_per_min=rest_weight_per_min,
            faults=faults or Faults(),
            injections=_injections(inject),
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._stopped = False

    # ----- lifecycle -----

    def start(self) -> None:
        """Start serving on a background thread; returns once the port is listening.

        Raises:
            RuntimeError: if already started, or the server failed to start (e.g. port in use).
        """
        if self._thread is not None or self._stopped:
            msg = "a FakeExchange can be started only once"
            raise RuntimeError(msg)
        config = uvicorn.Config(
            _build_app(self._hub),
            host=self.host,
            port=self._requested_port,
            http="h11",
            ws="websockets-sansio",
            ws_ping_interval=None,  # the real server sends no WebSocket pings
            ws_ping_timeout=None,
            ws_per_message_deflate=False,  # nor negotiates compression
            lifespan="off",
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=1,
        )
        self._server = server = uvicorn.Server(config)
        ready = threading.Event()
        self._thread = thread = threading.Thread(
            target=self._run, args=(ready,), name="fake-exchange", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 10.0
        while not server.started:
            if not thread.is_alive():
                msg = f"the fake exchange failed to start: {self._error!r}"
                raise RuntimeError(msg)
            if time.monotonic() > deadline:
                self.stop()
                msg = "the fake exchange did not start within 10 s"
                raise RuntimeError(msg)
            ready.wait(0.005)
        self._port = int(server.servers[0].sockets[0].getsockname()[1])
        log.info("fake exchange serving %s and %s", self.ws_url, self.info_url)

    def _run(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._main(ready))
        except BaseException as ex:  # uvicorn exits with SystemExit when it cannot bind
            self._error = ex
            log.error("fake exchange stopped with %r", ex)

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        await self._hub.start()
        server = self._server
        assert server is not None
        try:
            await server.serve()
        finally:
            await self._hub.shutdown()
            ready.set()

    def stop(self) -> None:
        """Drop every client, stop the server and join its thread (idempotent, < 2 s)."""
        thread = self._thread
        self._stopped = True
        if thread is None:
            return
        if threading.current_thread() is thread:  # from a callback on the server's own loop
            if self._server is not None:
                self._server.should_exit = True
            return
        loop = self._loop
        if loop is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError, concurrent.futures.TimeoutError):
                asyncio.run_coroutine_threadsafe(self._hub.shutdown(), loop).result(timeout=1.0)
        if self._server is not None:
            self._server.should_exit = True
        thread.join(timeout=5.0)
        if thread.is_alive():
            log.warning("the fake exchange thread did not stop within 5 s")
        self._thread = None

    def __enter__(self) -> FakeExchange:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----- addresses -----

    @property
    def port(self) -> int:
        """The bound port (after `start`)."""
        if self._port is None:
            msg = "the fake exchange is not started"
            raise RuntimeError(msg)
        return self._port

    @property
    def ws_url(self) -> str:
        """``ws://host:port/ws``."""
        return f"ws://{self._url_host}:{self.port}/ws"

    @property
    def info_url(self) -> str:
        """``http://host:port/info``."""
        return f"http://{self._url_host}:{self.port}/info"

    @property
    def _url_host(self) -> str:
        host = self.host
        if host in ("0.0.0.0", ""):
            return "127.0.0.1"
        return f"[{host}]" if ":" in host else host

    @property
    def universe(self) -> tuple[str, ...]:
        """Coins subscriptions accept (the feed's, extra and delisted coins)."""
        return self._hub.universe

    @property
    def feed_info(self) -> FeedInfo:
        """What the feed contains."""
        return self._hub.info

    # ----- control (thread-safe) -----

    def _call(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the server's loop (or directly when it is not running) and return."""
        loop = self._loop
        thread = self._thread
        if (
            loop is None
            or thread is None
            or not thread.is_alive()
            or threading.current_thread() is thread
        ):
            return fn()
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as ex:
                future.set_exception(ex)

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:  # the loop closed meanwhile
            return fn()
        return future.result(timeout=5.0)

    @property
    def stats(self) -> ExchangeStats:
        """A consistent copy of the counters."""
        return self._call(self._hub.stats.copy)

    @property
    def injections(self) -> tuple[Injection, ...]:
        """The inject schedule each client gets after its first subscription (in send order)."""
        return self._hub.injections

    @property
    def faults(self) -> Faults:
        """The faults in effect."""
        return self._hub.faults

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> Faults:
        """Replace the faults now (periodic schedules restart from this moment).

        Args:
            faults: the new faults; None keeps the current ones as the base for ``changes``.
            **changes: `Faults` fields to change, e.g. ``silence=("l2Book:BTC",)``.

        Returns:
            The faults now in effect.
        """
        new = faults if faults is not None else self._hub.faults
        if changes:
            new = dataclasses.replace(new, **changes)
        self._call(lambda: self._hub.apply_faults(new))
        return new

    def drop_all(self, code: int | None = None) -> int:
        """Drop every client socket now.

        Args:
            code: None drops the TCP connection without a close frame (client sees 1006);
                a code sends a close frame with it.

        Returns:
            How many sockets were dropped.
        """
        return self._call(lambda: self._hub.drop_all(code))

    def stall(self, seconds: float) -> None:
        """Send nothing at all to any client for ``seconds`` from now (sockets stay open)."""
        self._call(lambda: self._hub.stall(seconds))


# ----- CLI -------------------------------------------------------------------------------------


def _csv(value: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in value.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``python -m tools.fake_exchange``."""
    p = argparse.ArgumentParser(
        prog="python -m tools.fake_exchange",
        description="Serve a capture or the simulator over Hyperliquid's public WS + /info API.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--capture", type=Path, help="capture to replay (.ndjson[.gz|.lz4], .txt)")
    src.add_argument("--simulate", action="store_true", help="serve the seeded simulator")
    p.add_argument("--coins", type=_csv, default=("BTC", "ETH", "SOL"), help="simulated coins")
    p.add_argument("--seed", type=int, default=7, help="simulator seed")
    p.add_argument("--seconds", type=float, default=600.0, help="simulated seconds per pass")
    p.add_argument("--book-interval-ms", type=int, default=1000, help="simulated l2Book cadence")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed (1 = real time)")
    p.add_argument(
        "--loop",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="restart the feed at its end (default: on for --simulate, off for --capture)",
    )
    p.add_argument("--greeting", action="store_true", help="send the legacy greeting on connect")
    p.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT_S, help="0 disables")
    p.add_argument("--extra-coins", type=_csv, default=(), help="coins without data in meta")
    p.add_argument("--delisted", type=_csv, default=(), help="coins marked isDelisted in meta")
    p.add_argument("--rest-weight-per-min", type=int, default=REST_WEIGHT_PER_MIN)
    f = p.add_argument_group("faults")
    f.add_argument("--drop-every", type=float, metavar="S", help="drop every socket every S s")
    f.add_argument("--drop-code", type=int, help="close code for drops (default: none, 1006)")
    f.add_argument("--stall-every", type=float, metavar="S", help="stall all sockets every S s")
    f.add_argument("--stall-for", type=float, default=5.0, metavar="S", help="stall length")
    f.add_argument(
        "--silence",
        action="append",
        default=[],
        metavar="STREAM",
        help="stop a stream, e.g. l2Book:BTC (repeatable or comma-separated)",
    )
    f.add_argument("--silence-after", type=float, default=0.0, metavar="T", help="seconds")
    f.add_argument("--malformed-every", type=int, metavar="N", help="malformed frame per N")
    f.add_argument("--unknown-every", type=int, metavar="N", help="unknown-channel frame per N")
    f.add_argument("--error-every", type=float, metavar="S", help="error frame every S s")
    f.add_argument(
        "--inject",
        type=Path,
        metavar="FILE",
        help=(
            'NDJSON of {"offset_s": N, "frame": <JSON>} or {"offset_s": N, "raw": "<text>"}: '
            "each sent as written (frame: its exact text; raw: the string), unpaced, to every "
            "connection N s after its first subscription; once per connection, in offset order"
        ),
    )
    p.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    return p


def exchange_from_args(args: argparse.Namespace) -> FakeExchange:
    """Build (not start) the exchange the parsed command line describes.

    Raises:
        ValueError: for invalid settings.
        FileNotFoundError: for a missing capture.
    """
    feed: Feed
    if args.capture is not None:
        feed = CaptureFeed(args.capture)
        loop_feed = bool(args.loop)
    else:
        config = SimConfig(
            coins=tuple(args.coins),
            seconds=args.seconds,
            seed=args.seed,
            start_ms=_now_ms(),
            book_interval_ms=args.book_interval_ms,
        )
        feed = SimFeed(config)
        loop_feed = args.loop is None or bool(args.loop)
    silence = tuple(s for item in args.silence for s in _csv(item))
    faults = Faults(
        drop_every_s=args.drop_every,
        drop_code=args.drop_code,
        stall_every_s=args.stall_every,
        stall_for_s=args.stall_for,
        silence=silence,
        silence_after_s=args.silence_after,
        malformed_every=args.malformed_every,
        unknown_every=args.unknown_every,
        error_every_s=args.error_every,
    )
    return FakeExchange(
        feed,
        host=args.host,
        port=args.port,
        faults=faults,
        greeting=args.greeting,
        idle_timeout_s=args.idle_timeout or None,
        speed=args.speed,
        loop_feed=loop_feed,
        extra_coins=args.extra_coins,
        delisted=args.delisted,
        rest_weight_per_min=args.rest_weight_per_min,
        inject=args.inject,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake exchange until SIGINT/SIGTERM.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 after a clean stop, 1 if the server failed, 2 for bad arguments.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=str(args.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    try:
        exchange = exchange_from_args(args)
        if args.port:  # a used port: one line and exit 2, before uvicorn tries (and logs)
            from flows.startup import bind_listener

            bind_listener(args.host, args.port).close()
    except (ValueError, OSError) as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        exchange.start()
    except RuntimeError as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 1
    try:
        print(f"ws:   {exchange.ws_url}", flush=True)
        print(f"info: {exchange.info_url}", flush=True)
        print(f"coins: {','.join(exchange.universe)}", flush=True)
        stop.wait()
    finally:
        exchange.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
