"""Client sockets on ``/ws``: accept, read, write, the idle watchdog, drops.

Each connection (`Conn`) has its own send queue: a message is queued unless the socket is closing
or a stall is on (then it is lost), and a writer task sends the queue in order. Closing a
connection without a close code makes the handler return without a close frame, which uvicorn
turns into a dropped TCP connection: the client sees 1006, as with the real server. `Connections`
holds the open sockets; what a client's messages mean is the hub's business (its ``handle``
callback), and what a closing socket was subscribed to is the subscriptions' (``on_close``).

Imports `tools.fake_exchange.faults`, `.limits`, `.protocol` and `.stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from starlette.websockets import WebSocket

from tools.fake_exchange.faults import FaultInjector
from tools.fake_exchange.limits import CLIENT_QUEUE_MAX
from tools.fake_exchange.protocol import GREETING, Sub
from tools.fake_exchange.stats import ExchangeStats

log = logging.getLogger(__name__)


class Conn:
    """One client socket: its subscriptions, send queue and close request."""

    def __init__(
        self, ws: WebSocket, cid: int, faults: FaultInjector, stats: ExchangeStats
    ) -> None:
        self.ws = ws
        self.cid = cid
        self.faults = faults
        self.stats = stats
        self.client = ws.client.host if ws.client is not None else ""
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(CLIENT_QUEUE_MAX)
        self.subs: dict[str, Sub] = {}
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
        if self.closed.is_set():
            return False
        if self.faults.stalled():
            self.stats.frames_stalled += 1
            return False
        self._put(text, channel)
        if not data:
            return True
        self.data_sent += 1
        for extra, extra_channel in self.faults.extras(text, self.data_sent):
            self._put(extra, extra_channel)
        return True

    def _put(self, text: str, channel: str) -> None:
        try:
            self.queue.put_nowait((text, channel))
        except asyncio.QueueFull:
            if not self.closed.is_set():
                log.warning("client %d is not reading; dropping it", self.cid)
                self.stats.slow_consumer_closes += 1
                self.close(None)


class Connections:
    """The open client sockets and their reader, writer and watchdog tasks.

    Args:
        faults: the fault injector (stalls; the extra frames after data frames).
        stats: the counters to update.
        greeting: send the legacy greeting on connect.
        idle_timeout_s: drop a socket sent nothing for this long (None or 0: never).
        handle: called with each client message's text.
        on_close: called once a connection has ended, before it is forgotten.
    """

    def __init__(
        self,
        faults: FaultInjector,
        stats: ExchangeStats,
        *,
        greeting: bool,
        idle_timeout_s: float | None,
        handle: Callable[[Conn, str], None],
        on_close: Callable[[Conn], None],
    ) -> None:
        self.faults = faults
        self.stats = stats
        self.greeting = greeting
        self.idle_timeout_s = idle_timeout_s
        self.handle = handle
        self.on_close = on_close
        self.conns: set[Conn] = set()
        self.next_cid = 0
        self.closing = False
        """Set at shutdown: new sockets are accepted and closed at once."""

    async def serve(self, ws: WebSocket) -> None:
        """Serve one client socket until it ends."""
        await ws.accept()
        if self.closing:
            return
        self.next_cid += 1
        conn = Conn(ws, self.next_cid, self.faults, self.stats)
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

    def _unregister(self, conn: Conn) -> None:
        self.on_close(conn)
        if conn in self.conns:
            self.conns.discard(conn)
            self.stats.connections_closed += 1
            self.stats.connections_active -= 1

    async def _read_loop(self, conn: Conn) -> None:
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
                self.handle(conn, text)
        except Exception as ex:  # the socket went away under us
            log.debug("client %d read failed: %r", conn.cid, ex)
            conn.close(None, client_gone=True)

    async def _write(self, conn: Conn) -> None:
        loop = asyncio.get_running_loop()
        sent = self.stats.frames_sent
        try:
            while True:
                text, channel = await conn.queue.get()
                if self.faults.stalled():  # queued before the stall began: lost too
                    self.stats.frames_stalled += 1
                    continue
                await conn.ws.send_text(text)
                conn.last_sent = loop.time()
                sent[channel] = sent.get(channel, 0) + 1
        except Exception as ex:
            log.debug("client %d write failed: %r", conn.cid, ex)
            conn.close(None, client_gone=True)

    async def _watchdog(self, conn: Conn, idle_s: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            remaining = conn.last_sent + idle_s - loop.time()
            if remaining <= 0:
                log.info("client %d: nothing sent for %.3g s; dropping it", conn.cid, idle_s)
                self.stats.idle_closes += 1
                conn.close(None)
                return
            await asyncio.sleep(remaining)

    def drop_all(self, code: int | None = None) -> int:
        """Drop every open socket now (``code`` None: no close frame); returns how many."""
        conns = [c for c in self.conns if not c.closed.is_set()]
        for conn in conns:
            conn.close(code)
        self.stats.drops_injected += len(conns)
        if conns:
            log.info("dropped %d connection(s) (close code %s)", len(conns), code or "none")
        return len(conns)

    def broadcast(self, text: str, channel: str) -> int:
        """Offer ``text`` to every connection; returns to how many."""
        conns = list(self.conns)
        for conn in conns:
            conn.offer(text, channel)
        return len(conns)

    def close_all(self) -> None:
        """End every open socket without a close frame (shutdown; see ``closing``)."""
        for conn in list(self.conns):
            conn.close(None)
