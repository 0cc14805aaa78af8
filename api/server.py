"""Run the signal flow and serve the API from one process.

    python -m api.server --replay data/sample.ndjson.gz [--speed 0] [--host 127.0.0.1] [--port 8000]

The flow runs on a background (non-daemon) thread; uvicorn owns the main thread and its signal
handling, so SIGINT/SIGTERM run the app's shutdown, which ends the flow's source (a clean end of
input, bytewax-0.21.md §5.4) and joins the thread. When a replay ends, the API keeps serving its
final state until stopped. Every flag mirrors an ``HLSL_*`` variable (`flows.settings.Settings`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
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
from connectors.errors import FeedError
from flows.settings import Settings
from flows.signal import Pipeline, build_pipeline, run_pipeline, tune_gc

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
        log.info(
            "signal flow ended (%s): %d signals",
            self.pipeline.store.state,
            self.pipeline.store.signals_emitted,
        )

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
    mcp = mcp_http_app(pipeline.store) if settings.mcp else None

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
    the process exits 0.
    """

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


def serve_in_thread(pipeline: Pipeline, host: str, port: int) -> threading.Thread:
    """Serve the API for a flow run elsewhere (``python -m bytewax.run flows.signal``)."""
    app = build_app(pipeline, run_flow=False)
    server = make_server(app, host, port, log_level="warning")
    thread = threading.Thread(target=server.run, name="api-server", daemon=True)
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
    ap.add_argument("--replay", nargs="+", metavar="PATH", help="capture files (HLSL_REPLAY)")
    ap.add_argument(
        "--coins", help="comma-separated coins (HLSL_COINS); live: required, ALL = every perp"
    )
    ap.add_argument("--speed", type=float, help="0 = as fast as possible, 1 = real time")
    ap.add_argument("--host", help="bind address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, help="port (default 8000)")
    ap.add_argument("--bar-ms", type=int, help="bar length in ms (default 1000)")
    ap.add_argument("--lateness-ms", type=int, help="allowed lateness in ms (default 1000)")
    ap.add_argument("--history-limit", type=int, help="envelopes kept per coin")
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
    ap.add_argument("--rate-limit-per-s", type=float, help="requests/s per client (0: off)")
    ap.add_argument("--taker-fee-bps", type=float, help="taker fee in the edge's costs (4.5)")
    ap.add_argument("--edge-size-usd", type=float, help="size slippage is measured for (10000)")
    ap.add_argument("--calibration", help="edge calibration table (HLSL_CALIBRATION; none: off)")
    ap.add_argument(
        "--max-clock-skew-ms", type=int, help="exchange time may lead receipt by this (60000)"
    )
    ap.add_argument(
        "--max-price-jump", type=float, help="max price / the coin's recent median (10)"
    )
    ap.add_argument(
        "--trust-legacy-control",
        action="store_true",
        default=None,
        help="accept hlsl.* control frames inside raw (older captures)",
    )
    ap.add_argument("--record-flush-s", type=float, help="recording flush period (1)")
    ap.add_argument("--max-json-depth", type=int, help="deepest JSON nesting accepted (64)")
    ap.add_argument("--max-body-bytes", type=int, help="largest request body (1048576)")
    ap.add_argument(
        "--no-mcp",
        dest="mcp",
        action="store_false",
        default=None,
        help="do not serve MCP over HTTP at /mcp/",
    )
    ns = ap.parse_args(argv)
    overrides: dict[str, Any] = {k: v for k, v in vars(ns).items() if v is not None}
    if "replay" in overrides:
        overrides["replay"] = ",".join(overrides["replay"])
    try:
        return Settings(**overrides)
    except ValueError as ex:
        ap.error(str(ex))
        raise  # unreachable: ap.error exits


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m api.server``."""
    settings = parse_args(argv)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        pipeline = build_pipeline(settings)
    except (ValueError, FileNotFoundError, FeedError) as ex:
        log.error("cannot start: %s", ex)
        return 2
    tune_gc()
    app = build_app(pipeline)
    log.info("serving on http://%s:%d (OpenAPI docs at /docs)", settings.host, settings.port)
    server = make_server(app, settings.host, settings.port)
    server.run()
    return 0 if pipeline.store.error is None else 1


if __name__ == "__main__":
    raise SystemExit(main())
