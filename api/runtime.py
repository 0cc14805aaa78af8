"""The composition root: assembles source, flow, store and API for every way the layer runs.

- ``python -m api.server``: `serve` binds the port, builds the pipeline, runs the flow on a
  background thread (`FlowThread`) and serves the app (`build_app`) with uvicorn on the main thread.
- ``python -m api.mcp``: `api.mcp.__main__` builds the same pipeline and serves MCP over stdio.
- ``python -m bytewax.run flows.signal``: the entry module's ``flow`` is `flow_from_env()`;
  Bytewax runs the flow, and the API (``HLSL_API=1``) is served from a thread (`serve_in_thread`).
- ``python -m api.server --serve-only --store redis://…``: no flow; `serve` serves the shared
  store through its mirror (`shared_store`).

With ``--store redis://…`` the flow's sink writes to Redis (`connectors.redis_store`) and every
API, in a flow process or not, serves from a local mirror of it (`connectors.redis_mirror`).

Only this module (and the thin entry modules) knows every layer; the layers below it import
nothing from here. The flow runs on a background (non-daemon) thread under ``api.server``;
uvicorn owns the main thread and its signal handling, so SIGINT/SIGTERM run the app's shutdown,
which ends the flow's source (a clean end of input, bytewax-0.21.md §5.4) and joins the thread.

One module past ~400 lines on purpose: it is the one composition root, and every way the layer
runs is assembled here side by side so that they stay alike.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType

import uvicorn
from bytewax.dataflow import Dataflow
from fastapi import FastAPI

from api.app import create_app
from api.dashboard import dashboard_router
from api.mcp import mcp_http_app
from api.stream import close_streams_on_exit
from connectors.redis_mirror import RedisMirror, start_mirror, stop_mirror
from connectors.redis_store import wait_for_redis
from connectors.store import DEFAULT_RING_SIZE, RunState, SignalStore
from connectors.store_url import redact_url
from flows.cluster import bytewax_cluster, check_cluster
from flows.outcome import skip_counts
from flows.pipeline import Pipeline, build_pipeline, finish_run, run_pipeline, tune_gc
from flows.settings import Settings
from flows.startup import (
    LOG_FORMAT,
    StartupError,
    bind_listener,
    fail,
    install_stop_handlers,
    one_line,
    start_message,
)

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0
MIRROR_FIRST_LOAD_S = 10.0
"""How long an API start waits for its mirror's first load of the shared store."""


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


def shared_store(settings: Settings) -> RedisMirror:
    """The local store an API serves from when the settings name a shared store: a
    `SignalStore` kept equal to Redis by a `RedisMirror` (started by the app's lifespan)."""
    wanted = [] if [c.upper() for c in settings.coins] == ["ALL"] else settings.coins
    store = SignalStore(
        settings.history_limit,
        wanted,
        mode="replay" if settings.replay else "live",
        ring_size=DEFAULT_RING_SIZE,
    )
    return RedisMirror(
        settings.store,
        settings.store_key_prefix(),
        store,
        timeout_ms=settings.store_timeout_ms,
        history_limit=settings.history_limit,
        ring_size=DEFAULT_RING_SIZE,
    )


class MirrorThread:
    """A shared store's mirror on its own thread and event loop, for a process whose own loop
    cannot host it (MCP over stdio): `start` waits for the first load, `stop` ends it."""

    def __init__(self, mirror: RedisMirror) -> None:
        self.mirror = mirror
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="redis-mirror", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            task = await start_mirror(self.mirror, MIRROR_FIRST_LOAD_S)
            self._ready.set()
            await self._stop.wait()
            await stop_mirror(self.mirror, task)

        try:
            asyncio.run(main())
        finally:
            self._ready.set()

    def start(self) -> None:
        """Start the mirror and wait (up to `MIRROR_FIRST_LOAD_S`) for its first load."""
        self._thread.start()
        self._ready.wait(MIRROR_FIRST_LOAD_S + 1)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """End the mirror's task and thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout=timeout_s)


def build_app(
    pipeline: Pipeline | None, *, run_flow: bool = True, settings: Settings | None = None
) -> FastAPI:
    """The served app: REST, SSE, metrics, the dashboard at ``/`` and MCP at ``/mcp/``.

    Its lifespan starts and stops the pipeline's flow (``run_flow``; off when the flow runs
    elsewhere, as under ``bytewax.run``), the shared store's mirror (``--store redis://…``: the
    app serves from it, not from the flow's own store) and the MCP session manager. Access
    settings (token, CORS, rate limit) come from the pipeline's `Settings` (``settings`` when
    there is no pipeline: ``--serve-only``).
    """
    if pipeline is not None:
        settings = pipeline.settings
    assert settings is not None, "build_app needs a pipeline or settings"
    runner = FlowThread(pipeline) if run_flow and pipeline is not None else None
    mirror = shared_store(settings) if settings.shared_store else None
    if mirror is not None:
        store = mirror.store
    else:
        assert pipeline is not None, "--serve-only needs a shared store"
        store = pipeline.store
    mcp = mcp_http_app(store, settings=settings) if settings.mcp else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if mirror is not None:
                task = await start_mirror(mirror, MIRROR_FIRST_LOAD_S)
                stack.push_async_callback(stop_mirror, mirror, task)
            if mcp is not None:
                await stack.enter_async_context(mcp.lifespan())
            if runner is not None:
                runner.start()
                stack.callback(runner.stop)
            yield

    return create_app(
        store,
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
        store_status=mirror.status if mirror is not None else None,
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


def serve(settings: Settings) -> int:
    """Run ``python -m api.server``: bind, build the pipeline, run the flow and serve the API.

    Start-up fails as a whole, before anything is announced, with one line ``cannot start: …``
    and exit status 2. Returns the exit status: 0, or 1 when the flow failed.
    """
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    if settings.serve_only:
        return serve_only(settings)
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


def serve_only(settings: Settings) -> int:
    """``python -m api.server --serve-only --store redis://…``: no flow; serve the shared store.

    The port is bound first, then the store must answer (retried until ``--start-timeout-s``;
    refused credentials fail at once): ``cannot start: …``, exit 2.
    """
    sock: socket.socket | None = None
    try:
        sock = bind_listener(settings.host, settings.port)
        wait_for_redis(settings.store, settings.store_timeout_ms, settings.start_timeout_s)
    except KeyboardInterrupt:
        if sock is not None:
            sock.close()
        fail("interrupted", log)
    except Exception as ex:
        if sock is not None:
            sock.close()
        log.debug("start-up failed", exc_info=True)
        fail(start_message(ex), log)
    app = build_app(None, settings=settings)
    host, port = sock.getsockname()[:2]
    log.info(
        "serving the shared store %s (prefix %s) on http://%s:%d, no flow",
        redact_url(settings.store),
        settings.store_key_prefix(),
        host,
        port,
    )
    server = make_server(app, host, port)
    server.run(sockets=[sock])
    return 0


# -- python -m bytewax.run flows.signal --------------------------------------------------------


class _EntryState:
    """What the ``bytewax.run`` entry needs after the flow ends: the exit status to force."""

    exit_status = 0


def _flow_ended(p: Pipeline) -> None:
    """The flow wrote its last envelope (under ``bytewax.run``): record it and summarise."""
    finish_run(p)
    stats = p.stats
    if stats is not None:
        log.info(
            "replay %s: %d signals from %d data frames (%d lines read; skipped: %s)",
            p.store.state,
            p.store.signals_emitted,
            stats.frames,
            stats.lines,
            skip_counts(stats),
        )
    else:
        log.info("signal flow %s: %d signals", p.store.state, p.store.signals_emitted)
    for problem in p.problems:
        log.error("%s", problem)
    if p.settings.api:
        if p.store.state != RunState.STOPPED:  # a stop request shuts the API down too
            log.info("the API keeps serving the final state until SIGINT/SIGTERM")
    elif p.problems or (stats is not None and stats.errors):
        _EntryState.exit_status = 2 if p.problems else 1


def _force_exit_status() -> None:
    # atexit: the flow is done and every thread has ended; bytewax.run itself would exit 0.
    status = _EntryState.exit_status
    if status:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _entry_pipeline() -> Pipeline:
    settings = Settings.load()
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    # One of N processes (bytewax.run -i/-a, bytewax.testing -p): refuse what the store can't do.
    cluster = bytewax_cluster()
    check_cluster(settings, cluster, store="redis" if settings.shared_store else "memory")
    outputs = (settings.signals_out, settings.parquet, settings.record, settings.shared_store)
    if not (settings.api or any(outputs)):
        msg = (
            "nothing would receive the signals: HLSL_API=0 and no HLSL_SIGNALS_OUT (or "
            "HLSL_PARQUET, HLSL_RECORD, or a shared HLSL_STORE); serve the API or write the "
            "signals somewhere"
        )
        raise StartupError(msg)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_stop_handlers(stop)
    sock: socket.socket | None = None
    if settings.api:
        sock = bind_listener(settings.host, settings.port)
    holder: list[Pipeline] = []
    try:
        pipeline = build_pipeline(
            settings, stop=stop, on_end=lambda: _flow_ended(holder[0]), cluster=cluster
        )
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    holder.append(pipeline)
    pipeline.store.state = RunState.RUNNING
    if sock is not None:
        serve_in_thread(pipeline, sock, stop)

    def flow_failed(
        kind: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        # A flow that fails under bytewax.run surfaces here: one line, the rest at DEBUG.
        pipeline.store.state = RunState.FAILED
        pipeline.store.error = one_line(value)
        pipeline.release()
        pipeline.finish_writer()
        log.error("the signal flow failed: %s", one_line(value))
        log.debug("the signal flow failed", exc_info=(kind, value, tb))
        if settings.api:
            log.info("the API keeps serving (status failed) until SIGINT/SIGTERM")

    sys.excepthook = flow_failed
    atexit.register(_force_exit_status)
    return pipeline


def flow_from_env() -> Dataflow:
    """The ``flow`` of ``python -m bytewax.run flows.signal``, configured by ``HLSL_*`` variables.

    Every start-up failure is one line, ``cannot start: …``, and exit status 2 (bytewax.run
    imports the flow in Python, so a `SystemExit` here ends the process cleanly).
    """
    try:
        pipeline = _entry_pipeline()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        fail("interrupted", log)
    except Exception as ex:  # no traceback at start: one line, details at DEBUG
        log.debug("start-up failed", exc_info=True)
        fail(start_message(ex), log)
    tune_gc()
    return pipeline.flow
