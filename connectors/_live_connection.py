"""One live WebSocket connection: warm start, subscriptions, watchdog, reconnects.

`Connection` runs on its own reader thread with its own event loop and only does I/O: it hands
``(receive ns, raw bytes)`` (or a `connectors.parse.ControlMarker` of its own) to a bounded queue
that the source's partition (`connectors.live`) drains and parses. `ConnectionStatus` is what it
reports. Per connection (``../shared/reference/hyperliquid-api.md``):

- warm start: each coin is primed from ``POST /info`` (``candleSnapshot``, ``l2Book``) within the
  REST weight budget, then activated and subscribed, so a coin is "warming up" until primed;
- one subscription per frame: ``trades``, ``l2Book`` (20 levels, or 5 with ``fast``), ``bbo``,
  ``activeAssetCtx``, ``candle`` per coin, and ``allMids`` once (on the first connection); acks
  are checked and ``error`` frames counted;
- ``{"method": "ping"}`` every ``ping_interval_s``; a connection that delivers nothing for
  ``stall_timeout_s`` is treated as dead; reconnects use exponential backoff with jitter, reset
  after a healthy period, and re-subscribe everything; each reconnect is a ``hlsl.gap`` marker
  (a `Gap` event per coin downstream);
- a single subscription that goes silent against its own cadence while the connection flows is
  re-subscribed;
- outbound messages, new connections and REST weight stay inside the per-IP limits.
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from connectors._live_config import Limits, LiveConfig, subscriptions_for
from connectors.parse import ACTIVATE_CHANNEL, GAP_CHANNEL, ControlMarker
from connectors.rest import InfoClient, InfoError

# Logged under the public module's name, as before the split (log configs and lines name it).
log = logging.getLogger("connectors.live")


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


class Connection:
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
        # without a warm start no coin is primed: primed_coins stays 0 (it counts REST priming)
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


with contextlib.suppress(Exception):  # websockets' own logger is chatty at INFO on reconnects
    logging.getLogger("websockets.client").setLevel(logging.WARNING)
