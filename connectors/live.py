"""Live ingestion: a resilient Hyperliquid WebSocket source for Bytewax.

`HyperliquidSource` is a `FixedPartitionedSource` with one partition per WebSocket connection and
the coins sharded across connections, so ``-w N`` never opens a socket twice. Each partition runs
its connection on a reader thread (asyncio + ``websockets``); the worker drains a queue without
blocking and sleeps between polls when idle (no busy spin).

Per connection (``../shared/reference/hyperliquid-api.md``):

- warm start: each coin is primed from ``POST /info`` (``candleSnapshot``, ``l2Book``) within the
  REST weight budget, then activated and subscribed, so a coin is "warming up" until primed;
- one subscription per frame: ``trades``, ``l2Book`` (20 levels, or 5 with ``fast``), ``bbo``,
  ``activeAssetCtx``, ``candle`` per coin, and ``allMids`` once (on the first connection); acks
  are checked and ``error`` frames counted;
- ``{"method": "ping"}`` every ``ping_interval_s``; a connection that delivers nothing for
  ``stall_timeout_s`` is treated as dead; reconnects use exponential backoff with jitter, reset
  after a healthy period, and re-subscribe everything; each reconnect is a ``hlsl.gap`` frame
  (a `Gap` event per coin downstream);
- a single subscription that goes silent against its own cadence while the connection flows is
  re-subscribed;
- outbound messages, new connections and REST weight stay inside the per-IP limits.

Every consumed input (frames and the REST priming answers, as frames) can be written to a
recording in Hyperliquid's archive envelope, which replays through `connectors.files` unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import orjson
import websockets
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from typing_extensions import override
from websockets.asyncio.client import ClientConnection

from connectors.errors import FrameError, SkipLog
from connectors.events import Event
from connectors.parse import ACTIVATE_CHANNEL, GAP_CHANNEL, ControlMarker, FrameParser
from connectors.recording import capture_kind, open_for_append, open_sink
from connectors.rest import (
    NEW_CONNECTIONS_PER_MIN,
    REST_WEIGHT_PER_MIN,
    WS_MESSAGES_PER_MIN,
    InfoClient,
    InfoError,
    RateLimiter,
)
from connectors.validate import ValidationConfig

log = logging.getLogger(__name__)

MAINNET_WS: Final = "wss://api.hyperliquid.xyz/ws"
MAINNET_INFO: Final = "https://api.hyperliquid.xyz/info"
SUBS_PER_COIN: Final = 5
MAX_SUBSCRIPTIONS: Final = 1000
MAX_CONNECTIONS: Final = 10

# Silence (s) after which a subscription seen before counts as dead, at the least; trades and
# candles are event-driven (an idle coin may print nothing for minutes) and are not watched.
_SILENCE_FLOOR_S: Final = {"l2Book": 30.0, "bbo": 120.0, "activeAssetCtx": 20.0, "allMids": 40.0}


def iso_ns(ns: int) -> str:
    """Receive time as the archive writes it: ``2025-09-04T19:46:56.673877954``."""
    secs, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}"


class Recorder:
    """Appends consumed inputs to a capture in Hyperliquid's archive envelope (thread-safe).

    Each line is ``{"time": <receive time ISO ns>, "ver_num": 1, "raw": <frame bytes verbatim>}``;
    gzip when the name ends in ``.gz``, LZ4 frames when it ends in ``.lz4``, else plain text.
    A compressed capture is a series of complete gzip members / LZ4 frames, one ended every
    ``flush_s`` seconds (``HLSL_RECORD_FLUSH_S``) by a background thread, so a crash (``kill -9``)
    loses at most that much; a plain capture writes each line straight to the OS. `flush` ends the
    current unit at once and `close` ends it for good: both leave a complete file.

    ``append`` adds to an existing capture (a restarted live run) after checking its tail: a torn
    last unit (a crash) is repaired, a corrupt file is left alone and the recording goes to
    ``NAME.1.gz`` (see `connectors.recording`); `path` is the file actually written.
    """

    def __init__(self, path: str | Path, *, append: bool = True, flush_s: float = 1.0) -> None:
        if not flush_s > 0:
            msg = f"flush_s must be > 0, got {flush_s!r}"
            raise ValueError(msg)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if append:
            self.path, self._sink = open_for_append(self.path)
        else:
            self._sink = open_sink(self.path, append=False)
        self.flush_s = flush_s
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.lines = 0
        self.syncs = 0
        self._flusher: threading.Thread | None = None
        if capture_kind(self.path) != "plain":
            self._flusher = threading.Thread(
                target=self._flush_loop, name="hlsl-record-flush", daemon=True
            )
            self._flusher.start()

    def write(self, recv_ns: int, raw: bytes) -> None:
        """Record one frame (raw bytes must be one JSON value, or the greeting text)."""
        if raw[:1] not in (b"{", b"["):
            raw = orjson.dumps(raw.decode("utf-8", "replace"))
        line = b'{"time":"' + iso_ns(recv_ns).encode() + b'","ver_num":1,"raw":' + raw + b"}\n"
        with self._lock:
            if self._closed.is_set():
                return
            self._sink.write(line)
            self.lines += 1

    def write_marker(self, recv_ns: int, body: dict[str, Any]) -> None:
        """Record one of the project's own control markers outside ``raw`` (the ``"hlsl"`` key),
        where no exchange frame can forge it."""
        stamp = iso_ns(recv_ns).encode()
        line = b'{"time":"' + stamp + b'","ver_num":1,"hlsl":' + orjson.dumps(body) + b"}\n"
        with self._lock:
            if self._closed.is_set():
                return
            self._sink.write(line)
            self.lines += 1

    def _flush_loop(self) -> None:
        while not self._closed.wait(self.flush_s):
            try:
                with self._lock:
                    if not self._closed.is_set():
                        self._sink.sync(reopen=True)
                        self.syncs += 1
            except OSError:
                log.exception("recording %s: periodic flush failed", self.path)

    def flush(self) -> None:
        """End the current compressed unit now: the file is complete up to here."""
        with self._lock:
            if not self._closed.is_set():
                self._sink.sync(reopen=False)

    def close(self) -> None:
        """Flush and close (idempotent)."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            self._sink.close()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=5)


@dataclass(frozen=True)
class LiveConfig:
    """Connection settings (durations in seconds, as their names say)."""

    ws_url: str = MAINNET_WS
    info_url: str = MAINNET_INFO
    book_fast: bool = False
    candle_interval: str = "1m"
    ping_interval_s: float = 20.0
    stall_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    healthy_after_s: float = 60.0
    silence_factor: float = 10.0
    watchdog_every_s: float = 1.0
    ack_timeout_s: float = 5.0
    warm_start: bool = True
    warm_candles: int = 120
    coins_per_connection: int = 40
    batch_size: int = 1000
    silence_floor_s: dict[str, float] = field(default_factory=lambda: dict(_SILENCE_FLOOR_S))
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    """What a frame must be to be accepted (`connectors.validate`)."""


@dataclass
class ConnectionStatus:
    """What one connection is doing (written by its thread, read by the API)."""

    name: str
    coins: list[str]
    connected: bool = False
    subscriptions: int = 0
    acknowledged: int = 0
    primed: int = 0
    reconnects: int = 0
    resubscribes: int = 0
    frames: int = 0
    error_frames: int = 0
    skipped: int = 0
    last_frame_ms: int | None = None
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A plain copy for the API."""
        return {
            "name": self.name,
            "coins": list(self.coins),
            "connected": self.connected,
            "subscriptions": self.subscriptions,
            "acknowledged": self.acknowledged,
            "primed_coins": self.primed,
            "reconnects": self.reconnects,
            "resubscribes": self.resubscribes,
            "frames": self.frames,
            "error_frames": self.error_frames,
            "skipped": self.skipped,
            "last_frame_ms": self.last_frame_ms,
            "last_error": self.last_error,
        }


class Limits:
    """The per-IP budgets shared by every connection of the process."""

    def __init__(self) -> None:
        self.ws_messages = RateLimiter(WS_MESSAGES_PER_MIN, burst=1000)
        self.new_connections = RateLimiter(NEW_CONNECTIONS_PER_MIN, burst=10)
        self.rest_weight = RateLimiter(REST_WEIGHT_PER_MIN, burst=REST_WEIGHT_PER_MIN / 2)


def subscriptions_for(coin: str, config: LiveConfig) -> list[dict[str, Any]]:
    """The per-coin subscriptions (one frame each)."""
    book: dict[str, Any] = {"type": "l2Book", "coin": coin}
    if config.book_fast:
        book["fast"] = True
    return [
        {"type": "trades", "coin": coin},
        book,
        {"type": "bbo", "coin": coin},
        {"type": "activeAssetCtx", "coin": coin},
        {"type": "candle", "coin": coin, "interval": config.candle_interval},
    ]


def _sub_key(sub: dict[str, Any]) -> tuple[str, str]:
    return str(sub["type"]), str(sub.get("coin", ""))


_CHANNEL_RE: Final = re.compile(rb'"channel"\s*:\s*"([^"]*)"')
_COIN_RE: Final = re.compile(rb'"coin"\s*:\s*"([^"]*)"')
_CANDLE_COIN_RE: Final = re.compile(rb'"s"\s*:\s*"([^"]*)"')


def _route(raw: bytes) -> tuple[str, str] | None:
    """(channel, coin) of a frame for acks and the per-subscription watchdog, found without
    decoding the whole frame (the reader thread must stay light)."""
    m = _CHANNEL_RE.search(raw)
    if m is None:
        return None
    channel = m.group(1).decode()
    if channel in ("allMids", "pong", "error"):
        return channel, ""
    c = (_CANDLE_COIN_RE if channel == "candle" else _COIN_RE).search(raw)
    return channel, "" if c is None else c.group(1).decode()


class _Connection:
    """One WebSocket connection, run on its own thread with its own event loop."""

    def __init__(
        self,
        status: ConnectionStatus,
        config: LiveConfig,
        out: queue.Queue[tuple[int, bytes | ControlMarker]],
        limits: Limits,
        stop: threading.Event,
        with_mids: bool,
        all_coins: Sequence[str],
    ) -> None:
        self.status = status
        self.config = config
        self.out = out
        self.limits = limits
        self.stop = stop
        self.with_mids = with_mids
        self.all_coins = list(all_coins)
        self.subs: list[dict[str, Any]] = []
        self.acked: set[tuple[str, str]] = set()
        self.last_seen: dict[tuple[str, str], float] = {}
        self.cadence: dict[tuple[str, str], float] = {}
        self.acks_due = 0.0
        self.primed = False

    # -- plumbing ------------------------------------------------------------------------------

    def _emit(self, raw: bytes | ControlMarker) -> None:
        item = (time.time_ns(), raw)
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _emit_local(self, channel: str, data: dict[str, Any]) -> None:
        # Tagged by type in the queue: only this source makes a ControlMarker; the same channel
        # name arriving from the socket is a forged_control skip.
        self._emit(ControlMarker({"channel": channel, "data": data}))

    async def _send(self, ws: ClientConnection, msg: dict[str, Any]) -> None:
        ok = await asyncio.to_thread(self.limits.ws_messages.acquire, 1.0, self.stop)
        if ok:
            await ws.send(orjson.dumps(msg).decode())

    # -- warm start ----------------------------------------------------------------------------

    def _prime(self, coin: str) -> None:
        """Fetch recent candles and the book for ``coin`` and feed them in as frames."""
        cfg = self.config
        client = InfoClient(cfg.info_url, limiter=self.limits.rest_weight, stop=self.stop)
        minutes = {"1m": 1, "3m": 3, "5m": 5, "15m": 15, "30m": 30, "1h": 60}.get(
            cfg.candle_interval, 1
        )
        end = int(time.time() * 1000)
        start = end - cfg.warm_candles * minutes * 60_000
        try:
            candles, _ = client.post(
                {
                    "type": "candleSnapshot",
                    "req": {
                        "coin": coin,
                        "interval": cfg.candle_interval,
                        "startTime": start,
                        "endTime": end,
                    },
                }
            )
            for c in candles or []:
                self._emit(orjson.dumps({"channel": "candle", "data": c}))
            book, _ = client.post({"type": "l2Book", "coin": coin})
            if book:
                self._emit(orjson.dumps({"channel": "l2Book", "data": book}))
        except InfoError as ex:
            log.warning("warm start of %s failed (%s); it warms up from live data", coin, ex)
            self.status.last_error = str(ex)

    def _prime_all(self) -> None:
        if self.config.warm_start:
            for coin in self.status.coins:
                if self.stop.is_set():
                    return
                self._prime(coin)
                self.status.primed += 1
        else:
            self.status.primed = len(self.status.coins)
        # allMids (carried by the first connection) fans out only to activated coins, so a
        # coin's primed candles are never older than live data already seen for it.
        self._emit_local(ACTIVATE_CHANNEL, {"coins": list(self.status.coins)})
        self.primed = True

    # -- the connection loop -------------------------------------------------------------------

    def run(self) -> None:
        """Thread target: prime, then connect and reconnect until stopped."""
        try:
            self._prime_all()
            if not self.stop.is_set():
                asyncio.run(self._main())
        except Exception as ex:  # the source must never take the flow down
            self.status.last_error = f"{type(ex).__name__}: {ex}"
            log.exception("connection %s failed", self.status.name)

    async def _main(self) -> None:
        cfg = self.config
        self.subs = [s for coin in self.status.coins for s in subscriptions_for(coin, cfg)]
        if self.with_mids:
            self.subs.append({"type": "allMids"})
        self.status.subscriptions = len(self.subs)
        backoff = cfg.backoff_initial_s
        down_since: float | None = None
        while not self.stop.is_set():
            ok = await asyncio.to_thread(self.limits.new_connections.acquire, 1.0, self.stop)
            if not ok:
                return
            started = time.monotonic()
            try:
                async with websockets.connect(
                    cfg.ws_url,
                    open_timeout=cfg.connect_timeout_s,
                    ping_interval=None,
                    max_size=8 * 1024 * 1024,
                ) as ws:
                    self.status.connected = True
                    if down_since is not None:
                        down_ms = int((time.monotonic() - down_since) * 1000)
                        self._emit_local(
                            GAP_CHANNEL,
                            {"coins": self.status.coins, "reason": "reconnect", "down_ms": down_ms},
                        )
                        self.status.reconnects += 1
                        log.info("%s reconnected after %d ms", self.status.name, down_ms)
                    await self._session(ws)
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as ex:
                self.status.last_error = f"{type(ex).__name__}: {ex}"
                log.warning("%s: connection lost: %s", self.status.name, self.status.last_error)
            finally:
                self.status.connected = False
            if self.stop.is_set():
                return
            if down_since is None or time.monotonic() - started >= cfg.healthy_after_s:
                down_since = time.monotonic()
            if time.monotonic() - started >= cfg.healthy_after_s:
                backoff = cfg.backoff_initial_s
            delay = backoff * random.uniform(0.8, 1.2)
            backoff = min(cfg.backoff_max_s, backoff * 2)
            await asyncio.to_thread(self.stop.wait, delay)

    async def _session(self, ws: ClientConnection) -> None:
        cfg = self.config
        self.acked.clear()
        self.status.acknowledged = 0
        now = time.monotonic()
        self.last_seen = {_sub_key(s): now for s in self.subs}
        for sub in self.subs:
            await self._send(ws, {"method": "subscribe", "subscription": sub})
        self.acks_due = time.monotonic() + cfg.ack_timeout_s
        last_frame = time.monotonic()
        next_ping = last_frame + cfg.ping_interval_s
        next_watch = last_frame + cfg.watchdog_every_s
        while not self.stop.is_set():
            now = time.monotonic()
            if now - last_frame > cfg.stall_timeout_s:
                msg = f"no frame for {cfg.stall_timeout_s:.0f} s"
                raise TimeoutError(msg)
            if now >= next_ping:
                await self._send(ws, {"method": "ping"})
                next_ping = now + cfg.ping_interval_s
            if now >= next_watch:
                await self._watchdog(ws, now)
                next_watch = now + cfg.watchdog_every_s
            wait = max(0.05, min(next_ping, next_watch, last_frame + cfg.stall_timeout_s) - now)
            try:
                async with asyncio.timeout(min(wait, 0.5)):
                    raw = await ws.recv(decode=False)
            except TimeoutError:
                continue
            last_frame = time.monotonic()
            self._on_frame(raw, last_frame)

    def _on_frame(self, raw: bytes, now: float) -> None:
        st = self.status
        st.frames += 1
        st.last_frame_ms = int(time.time() * 1000)
        route = _route(raw)
        if route is not None:
            channel = route[0]
            if channel == "subscriptionResponse":
                self._ack(raw)
            elif channel == "error":
                st.error_frames += 1
                self._already(raw)
            elif channel != "pong":
                prev = self.last_seen.get(route)
                if prev is not None:
                    gap = now - prev
                    old = self.cadence.get(route)
                    self.cadence[route] = gap if old is None else old + 0.1 * (gap - old)
                self.last_seen[route] = now
        self._emit(raw)

    def _ack(self, raw: bytes) -> None:
        try:
            data = orjson.loads(raw)["data"]
            key = _sub_key(data["subscription"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        if data.get("method") == "subscribe":
            self.acked.add(key)
        self.status.acknowledged = len(self.acked)

    def _already(self, raw: bytes) -> None:
        """``Already subscribed: {...}`` confirms a subscription whose ack went missing."""
        try:
            text = orjson.loads(raw)["data"]
            if isinstance(text, str) and text.startswith("Already subscribed: "):
                self.acked.add(_sub_key(orjson.loads(text[len("Already subscribed: ") :])))
                self.status.acknowledged = len(self.acked)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return

    async def _watchdog(self, ws: ClientConnection, now: float) -> None:
        """Re-send unacknowledged subscriptions; re-subscribe any subscription silent for far
        longer than its own cadence."""
        cfg = self.config
        if now >= self.acks_due and len(self.acked) < len(self.subs):
            missing = [s for s in self.subs if _sub_key(s) not in self.acked]
            log.warning(
                "%s: %d subscriptions not acknowledged after %.0f s: sending them again",
                self.status.name,
                len(missing),
                cfg.ack_timeout_s,
            )
            for sub in missing:
                await self._send(ws, {"method": "subscribe", "subscription": sub})
            self.acks_due = now + cfg.ack_timeout_s
        for sub in self.subs:
            key = _sub_key(sub)
            floor = cfg.silence_floor_s.get(key[0])
            cadence = self.cadence.get(key)
            if floor is None or cadence is None:
                continue
            silent = now - self.last_seen.get(key, now)
            if silent > max(floor, cfg.silence_factor * cadence):
                log.warning(
                    "%s: %s %s silent for %.1f s (usually %.2f s): re-subscribing",
                    self.status.name,
                    key[0],
                    key[1],
                    silent,
                    cadence,
                )
                await self._send(ws, {"method": "unsubscribe", "subscription": sub})
                await self._send(ws, {"method": "subscribe", "subscription": sub})
                self.status.resubscribes += 1
                self.last_seen[key] = now


class _LivePartition(StatefulSourcePartition[Event, None]):
    def __init__(
        self,
        conn: _Connection,
        parser: FrameParser,
        recorder: Recorder | None,
        skips: SkipLog,
        batch_size: int,
    ) -> None:
        self._conn = conn
        self._parser = parser
        self._recorder = recorder
        self._skips = skips
        self._consumed = 0
        self._batch_size = batch_size
        self._queue = conn.out
        self._stop = conn.stop
        self._awake: datetime | None = None
        self._idle_since: float | None = None
        self._thread = threading.Thread(target=conn.run, name=f"hl-{conn.status.name}", daemon=True)
        self._thread.start()

    @override
    def next_batch(self) -> Iterable[Event]:
        # On stop, what is already queued is still consumed (and recorded) before the end.
        stopping = self._stop.is_set()
        out: list[Event] = []
        q = self._queue
        parse = self._parser.parse_raw
        rec = self._recorder
        n = 0
        while n < self._batch_size:
            try:
                recv_ns, raw = q.get_nowait()
            except queue.Empty:
                break
            n += 1
            self._consumed += 1
            try:
                if isinstance(raw, ControlMarker):
                    if rec is not None:
                        rec.write_marker(recv_ns, raw.body)
                    out.extend(self._parser.parse_marker(raw.body, recv_ns))
                    continue
                if rec is not None:
                    rec.write(recv_ns, raw)
                out.extend(parse(raw, recv_ns))
            except FrameError as ex:
                self._conn.status.skipped += 1
                where = f"{self._conn.status.name} frame {self._consumed}"
                self._skips.skip(ex.reason, where, ex.detail)
        if stopping and n == 0:
            raise StopIteration
        now = time.monotonic()
        if n:
            self._idle_since = None
            self._awake = None
        else:
            if self._idle_since is None:
                self._idle_since = now
            # Poll every 10 ms while frames flow, every 50 ms once idle for a second.
            pause = 0.01 if now - self._idle_since < 1.0 else 0.05
            self._awake = datetime.now(UTC) + timedelta(seconds=pause)
        return out

    @override
    def next_awake(self) -> datetime | None:
        return self._awake

    @override
    def snapshot(self) -> None:
        return None

    @override
    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)
        if self._recorder is not None:
            self._recorder.flush()


def shard(coins: Sequence[str], per_connection: int) -> list[list[str]]:
    """Split coins over connections (at most `MAX_CONNECTIONS`)."""
    if len(coins) * SUBS_PER_COIN + 1 > MAX_SUBSCRIPTIONS:
        msg = (
            f"{len(coins)} coins need {len(coins) * SUBS_PER_COIN + 1} subscriptions; the "
            f"exchange allows {MAX_SUBSCRIPTIONS} per IP"
        )
        raise ValueError(msg)
    per = max(per_connection, -(-len(coins) // MAX_CONNECTIONS))
    return [list(coins[i : i + per]) for i in range(0, len(coins), per)] or [[]]


class HyperliquidSource(FixedPartitionedSource[Event, None]):
    """Live Hyperliquid market data as typed events, one partition per connection.

    Args:
        coins: validated coin names (see `connectors.rest.resolve_coins`).
        config: connection settings.
        stop: set it to end the source cleanly (Bytewax has no stop API).
        recorder: write every consumed input here (replayable capture).
    """

    def __init__(
        self,
        coins: Sequence[str],
        config: LiveConfig | None = None,
        *,
        stop: threading.Event | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        if not coins:
            msg = "no coins to subscribe to"
            raise ValueError(msg)
        self.coins = list(coins)
        self.config = config or LiveConfig()
        self.stop = stop or threading.Event()
        self.recorder = recorder
        self.limits = Limits()
        self.shards = shard(self.coins, self.config.coins_per_connection)
        self.statuses = [ConnectionStatus(f"conn-{i}", s) for i, s in enumerate(self.shards)]
        # One activation set shared by every connection's parser: the first connection's allMids
        # fans out to coins as each connection activates them.
        active: set[str] = set()
        self.skips = SkipLog(log)
        self.parsers = []
        for i, s in enumerate(self.shards):
            coins_i = frozenset(self.coins) if i == 0 else frozenset(s)
            parser = FrameParser(coins_i, self.config.validation)
            parser.active = active
            parser.on_reject = self._held_rejection(i)
            self.parsers.append(parser)

    def _held_rejection(self, i: int) -> Callable[[FrameError], None]:
        status = self.statuses[i]

        def report(ex: FrameError) -> None:
            status.skipped += 1
            self.skips.skip(ex.reason, f"{status.name} (a coin's first prices, held)", ex.detail)

        return report

    @override
    def list_parts(self) -> list[str]:
        return [s.name for s in self.statuses]

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _LivePartition:
        i = int(for_part.split("-")[1])
        conn = _Connection(
            self.statuses[i],
            self.config,
            queue.Queue(maxsize=100_000),
            self.limits,
            self.stop,
            with_mids=i == 0,
            all_coins=self.coins,
        )
        return _LivePartition(
            conn, self.parsers[i], self.recorder, self.skips, self.config.batch_size
        )

    def info(self) -> dict[str, Any]:
        """Per-connection status and parse counters (for /health and /v1/state)."""
        frames: dict[str, int] = {}
        control: dict[str, int] = {}
        dup = ignored = 0
        latest: int | None = None
        for p in self.parsers:
            for k, v in p.frames.items():
                frames[k] = frames.get(k, 0) + v
            for k, v in p.control.items():
                control[k] = control.get(k, 0) + v
            dup += p.duplicates
            ignored += p.ignored_coin
            if p.latest_ms is not None and (latest is None or p.latest_ms > latest):
                latest = p.latest_ms
        return {
            "kind": "live",
            "files": [],
            "lines_read": sum(s.frames for s in self.statuses),
            "frames_by_channel": dict(sorted(frames.items())),
            "control_frames": dict(sorted(control.items())),
            "lines_skipped": dict(sorted(self.skips.counts.items())),
            "duplicate_trades": dup,
            "ignored_coin_events": ignored,
            "errors": [s.last_error for s in self.statuses if s.last_error],
            "finished": self.stop.is_set(),
            "latest_event_ms": latest,
            "connections": [s.as_dict() for s in self.statuses],
        }


with contextlib.suppress(Exception):  # websockets' own logger is chatty at INFO on reconnects
    logging.getLogger("websockets.client").setLevel(logging.WARNING)
