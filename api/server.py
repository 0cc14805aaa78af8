"""Run the signal flow and serve the API from one process.

    python -m api.server --replay data/sample.ndjson.gz [--speed 0] [--host 127.0.0.1] [--port 8000]

The flow runs on a background (non-daemon) thread; uvicorn owns the main thread and its signal
handling, so SIGINT/SIGTERM run the app's shutdown, which ends the flow's source (a clean end of
input, bytewax-0.21.md §5.4) and joins the thread. When a replay ends, the API keeps serving its
final state until stopped. Every flag mirrors an ``HLSL_*`` variable (`flows.settings.Settings`).

Start-up fails as a whole, before anything is announced, with one line ``cannot start: …`` and
exit status 2: a setting not allowed, an unknown ``HLSL_*`` variable, an output path that cannot be
written, a capture (or a directory of captures) that is not there, the port in use, an unknown
coin, or the exchange unreachable for ``--start-timeout-s``. The port is bound first.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.dashboard import dashboard_router
from api.mcp import mcp_http_app
from api.stream import close_streams_on_exit
from flows.settings import Settings, SettingsError, add_validation_flags
from flows.signal import (
    Pipeline,
    build_pipeline,
    run_pipeline,
    skip_counts,
    start_message,
    tune_gc,
)
from flows.startup import LOG_FORMAT, bind_listener, fail

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0


class FlowThread:
    """Runs a pipeline on a named, non-daemon thread; `stop` ends it cleanly."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._thread = threading.Thread(target=self._run, name="signal-flow")

    def _run(self) -> None:
        try:
            run_pipeline(self.pipeline)
        except BaseException:
            return
        p = self.pipeline
        log.info("signal flow ended (%s): %d signals", p.store.state, p.store.signals_emitted)
        if p.stats is not None and not p.stop.is_set():
            log.info(
                "replay: %d data frames from %d lines (skipped: %s)",
                p.stats.frames,
                p.stats.lines,
                skip_counts(p.stats),
            )
        for problem in p.problems:
            log.error("%s (the API keeps serving; /health says so)", problem)

    def start(self) -> None:
        """Start the flow."""
        self._thread.start()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Ask the source to end, wait for the flow to flush; True if it ended in time."""
        self.pipeline.stop.set()
        self._thread.join(timeout=timeout_s)
        alive = self._thread.is_alive()
        if alive:
            log.error("the signal flow did not stop within %.1f s", timeout_s)
        return not alive


def build_app(pipeline: Pipeline, *, run_flow: bool = True) -> FastAPI:
    """The served app: REST, SSE, metrics, the dashboard at ``/`` and MCP at ``/mcp/``.

    Its lifespan starts and stops the pipeline's flow (``run_flow``; off when the flow runs
    elsewhere, as under ``bytewax.run``) and the MCP session manager. Access settings (token,
    CORS, rate limit) come from the pipeline's `Settings`.
    """
    settings = pipeline.settings
    runner = FlowThread(pipeline) if run_flow else None
    mcp = mcp_http_app(pipeline.store, settings=settings) if settings.mcp else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if mcp is not None:
                await stack.enter_async_context(mcp.lifespan())
            if runner is not None:
                runner.start()
                stack.callback(runner.stop)
            yield

    return create_app(
        pipeline.store,
        lifespan,
        token=settings.api_token or None,
        cors_origins=settings.cors_origins,
        rate_limit_per_s=settings.rate_limit_per_s,
        sse_keepalive_s=settings.sse_keepalive_s,
        sse_queue_size=settings.sse_queue_size,
        max_body_bytes=settings.max_body_bytes,
        max_json_depth=settings.max_json_depth,
        extra_routers=[dashboard_router()],
        mounts=[("/mcp", mcp)] if mcp is not None else [],
    )


def make_server(app: FastAPI, host: str, port: int, log_level: str = "info") -> GracefulServer:
    """A uvicorn server for ``app`` whose stop signal also ends every open SSE stream."""
    server = GracefulServer(uvicorn.Config(app, host=host, port=port, log_level=log_level))
    close_streams_on_exit(server, app.state.streams)
    return server


class GracefulServer(uvicorn.Server):
    """uvicorn without re-raising the stop signal after a graceful shutdown.

    uvicorn re-raises a captured SIGINT/SIGTERM once it has shut down, which ends the process
    with a KeyboardInterrupt traceback (SIGINT) or status 143 (SIGTERM). Here the first signal
    starts a graceful shutdown (the app's lifespan stops the flow), a second one forces it, and
    the process exits 0. Off the main thread, setting ``stop_event`` does what a signal does.
    """

    stop_event: threading.Event | None = None

    async def on_tick(self, counter: int) -> bool:
        stop = self.stop_event
        if stop is not None and stop.is_set() and not self.should_exit:
            self.handle_exit(signal.SIGTERM, None)  # on the server's loop: streams end too
        return await super().on_tick(counter)

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def serve_in_thread(
    pipeline: Pipeline, sock: socket.socket, stop: threading.Event
) -> threading.Thread:
    """Serve the API for a flow run elsewhere (``python -m bytewax.run flows.signal``).

    ``sock`` is already bound (`flows.startup.bind_listener`). The thread is not a daemon: the
    process keeps serving after the flow ends, until ``stop`` is set (SIGINT/SIGTERM).
    """
    app = build_app(pipeline, run_flow=False)
    host, port = sock.getsockname()[:2]
    server = make_server(app, host, port, log_level="warning")
    server.stop_event = stop
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="api-server")
    thread.start()
    log.info("serving the API on http://%s:%d (docs at /docs)", host, port)
    return thread


def parse_args(argv: list[str] | None = None) -> Settings:
    """CLI flags → `Settings` (flags override ``HLSL_*`` variables)."""
    ap = argparse.ArgumentParser(
        prog="python -m api.server",
        description="Run the signal flow (live from Hyperliquid, or replaying captures) and "
        "serve the API.",
    )
    # Values are checked by `Settings.load` (one line naming flag, value and what is allowed),
    # so the flags take strings.
    ap.add_argument(
        "--replay",
        nargs="+",
        metavar="PATH",
        help="capture files, or directories of captures (HLSL_REPLAY)",
    )
    ap.add_argument(
        "--coins", help="comma-separated coins (HLSL_COINS); live: required, ALL = every perp"
    )
    ap.add_argument("--speed", help="0 = as fast as possible, 1 = real time")
    ap.add_argument("--host", help="bind address (default 127.0.0.1)")
    ap.add_argument("--port", help="port (default 8000)")
    ap.add_argument("--bar-ms", help="bar length in ms (default 1000)")
    ap.add_argument("--lateness-ms", help="allowed lateness in ms (default 1000)")
    ap.add_argument("--history-limit", help="envelopes kept per coin")
    ap.add_argument("--log-level", help="DEBUG, INFO, WARNING ...")
    ap.add_argument("--ws-url", help="exchange WebSocket URL (HLSL_WS_URL; default mainnet)")
    ap.add_argument("--info-url", help="exchange /info URL (HLSL_INFO_URL; default mainnet)")
    ap.add_argument(
        "--book-fast",
        action="store_true",
        default=None,
        help="l2Book fast mode (5 levels every ~0.5 s)",
    )
    ap.add_argument(
        "--no-warm-start",
        dest="warm_start",
        action="store_false",
        default=None,
        help="do not prime coins from REST",
    )
    ap.add_argument("--record", help="write every consumed input to this capture (HLSL_RECORD)")
    ap.add_argument("--signals-out", help="append every envelope to this NDJSON file")
    ap.add_argument("--cors-origins", help="allowed CORS origins, comma-separated")
    ap.add_argument("--rate-limit-per-s", help="requests/s per client (0: off)")
    ap.add_argument("--taker-fee-bps", help="taker fee in the edge's costs (4.5)")
    ap.add_argument("--edge-size-usd", help="size slippage is measured for (10000)")
    ap.add_argument("--calibration", help="edge calibration table (HLSL_CALIBRATION; none: off)")
    add_validation_flags(ap)
    ap.add_argument("--record-flush-s", help="recording flush period (1)")
    ap.add_argument("--max-body-bytes", help="largest request body (1048576)")
    ap.add_argument(
        "--no-mcp",
        dest="mcp",
        action="store_false",
        default=None,
        help="do not serve MCP over HTTP at /mcp/",
    )
    ap.add_argument(
        "--mcp-allowed-hosts",
        help="more Host values MCP over HTTP accepts, comma-separated host[:port] (default: "
        "127.0.0.1, localhost, [::1] and --host unless a wildcard)",
    )
    ap.add_argument(
        "--mcp-allowed-origins",
        help="more browser Origins MCP over HTTP accepts, comma-separated scheme://host[:port]",
    )
    ap.add_argument(
        "--mcp-wait-for-replay-s",
        help="MCP tools wait this long for a full-speed replay to finish (30; 0: answer at once)",
    )
    ap.add_argument(
        "--start-timeout-s",
        help="live start: retry an unreachable exchange this long, then fail (120)",
    )
    ns = ap.parse_args(argv)
    overrides: dict[str, Any] = {k: v for k, v in vars(ns).items() if v is not None}
    if "replay" in overrides:
        overrides["replay"] = ",".join(overrides["replay"])
    try:
        return Settings.load(overrides, SERVER_FLAGS)
    except SettingsError as ex:
        fail(str(ex), log)


SERVER_FLAGS = {"warm_start": "--no-warm-start", "mcp": "--no-mcp"}
"""Flags not named ``--field-name`` (for error messages)."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m api.server``."""
    settings = parse_args(argv)
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    sock: socket.socket | None = None
    try:
        sock = bind_listener(settings.host, settings.port)  # first: a used port fails at once
        pipeline = build_pipeline(settings)
    except KeyboardInterrupt:
        if sock is not None:
            sock.close()
        fail("interrupted", log)
    except Exception as ex:  # no traceback at start: one line, details at DEBUG
        if sock is not None:
            sock.close()
        log.debug("start-up failed", exc_info=True)
        fail(start_message(ex), log)
    tune_gc()
    app = build_app(pipeline)
    host, port = sock.getsockname()[:2]
    log.info("serving on http://%s:%d (OpenAPI docs at /docs)", host, port)
    server = make_server(app, host, port)
    server.run(sockets=[sock])
    return 0 if pipeline.store.error is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
