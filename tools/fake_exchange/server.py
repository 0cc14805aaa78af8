"""The public server: `FakeExchange` serves a `Hub` with uvicorn on a background thread.

One process, one port (FastAPI/Starlette on uvicorn, h11 and the sans-I/O websockets protocol,
no WebSocket pings or compression, like the real server): WebSocket ``/ws`` and ``POST /info``.
Control calls from other threads (`FakeExchange.set_faults`, `drop_all`, `stall`, `stats`) run on
the server's event loop.

Imports `tools.fake_exchange.hub` and the types of its arguments (`.faults`, `.feeds`, `.inject`,
`.limits`, `.stats`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from tools.fake_exchange.faults import Faults
from tools.fake_exchange.feeds import Feed, FeedInfo
from tools.fake_exchange.hub import Hub
from tools.fake_exchange.inject import Injection, injections
from tools.fake_exchange.limits import IDLE_TIMEOUT_S, REST_WEIGHT_PER_MIN
from tools.fake_exchange.stats import ExchangeStats

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def _build_app(hub: Hub) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.websocket("/ws")
    async def ws_endpoint(websocket: WebSocket) -> None:
        await hub.sockets.serve(websocket)

    @app.post("/info", response_model=None)
    async def info_endpoint(request: Request) -> Response:
        return await hub.info_api.serve(request)

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
            inject file (`load_injections`) or `Injection` items (see
            `tools.fake_exchange.inject`); None sends none.

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
        self._hub = Hub(
            feed,
            greeting=greeting,
            idle_timeout_s=idle_timeout_s,
            speed=speed,
            loop_feed=loop_feed,
            extra_coins=extra_coins,
            delisted=delisted,
            rest_weight_per_min=rest_weight_per_min,
            faults=faults or Faults(),
            injections=injections(inject),
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
        return self._hub.universe.coins

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
        return self._hub.faults.settings

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> Faults:
        """Replace the faults now (periodic schedules restart from this moment).

        Args:
            faults: the new faults; None keeps the current ones as the base for ``changes``.
            **changes: `Faults` fields to change, e.g. ``silence=("l2Book:BTC",)``.

        Returns:
            The faults now in effect.
        """
        new = faults if faults is not None else self._hub.faults.settings
        if changes:
            new = dataclasses.replace(new, **changes)
        self._call(lambda: self._hub.faults.apply(new))
        return new

    def drop_all(self, code: int | None = None) -> int:
        """Drop every client socket now.

        Args:
            code: None drops the TCP connection without a close frame (client sees 1006);
                a code sends a close frame with it.

        Returns:
            How many sockets were dropped.
        """
        return self._call(lambda: self._hub.sockets.drop_all(code))

    def stall(self, seconds: float) -> None:
        """Send nothing at all to any client for ``seconds`` from now (sockets stay open)."""
        self._call(lambda: self._hub.faults.stall(seconds))
