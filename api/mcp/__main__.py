"""``python -m api.mcp`` and the ``hlsl-mcp`` console script: MCP over stdio.

Without ``--api-url`` the flow runs in this process with the server's settings (``HLSL_*``
variables or ``python -m api.server``'s flags); with it, a running server's REST API is read.
The flow is assembled by the composition root (`api.runtime`), as for ``python -m api.server``;
this module is an entry point that nothing imports.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from types import FrameType

from api.mcp.http import replay_wait_s
from api.mcp.server import build_server
from api.mcp.sources import API_TIMEOUT_S, ApiSource, SignalSource, StoreSource, client_token
from api.mcp.stdio import protect_stdout, run_stdio
from api.runtime import FlowThread, MirrorThread, shared_store
from api.server import parse_args as server_args
from connectors.errors import FeedError
from connectors.redis_store import wait_for_redis
from flows.pipeline import build_pipeline, tune_gc
from flows.settings import Settings

log = logging.getLogger("api.mcp")  # one logger for the package (not "__main__" under -m)


def _parse_args(argv: list[str] | None) -> tuple[str | None, float, Settings]:
    ap = argparse.ArgumentParser(
        prog="python -m api.mcp",
        description="Serve Hyperliquid signals over MCP (stdio). Without --api-url the flow "
        "runs in this process, configured like python -m api.server.",
        epilog="Other flags are the server's (python -m api.server --help): --replay CAPTURE..., "
        "--coins, --speed, --bar-ms, ...; HLSL_* variables apply too.",
    )
    ap.add_argument("--api-url", help="read a running server's REST API instead (http://...)")
    ap.add_argument(
        "--timeout-s", type=float, default=API_TIMEOUT_S, help="REST request timeout (--api-url)"
    )
    ns, rest = ap.parse_known_args(argv)
    if ns.api_url and rest:
        ap.error(f"--api-url reads a running server; flow flags do not apply: {' '.join(rest)}")
    return ns.api_url, ns.timeout_s, server_args(rest)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m api.mcp`` (stdio).

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        0 on a clean end (stdin closed, SIGINT or SIGTERM), 1 if the flow failed, 2 if it could
        not start.
    """
    out = protect_stdout()
    api_url, timeout_s, settings = _parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    runner: FlowThread | None = None
    mirror: MirrorThread | None = None
    source: SignalSource
    try:
        if api_url:
            source = ApiSource(api_url, timeout_s, client_token())
        else:
            if not settings.serve_only:
                pipeline = build_pipeline(settings)
                tune_gc()
                runner = FlowThread(pipeline)
                source = StoreSource(pipeline.store, replay_wait_s(settings))
            if settings.shared_store:  # --store redis://: serve what every flow wrote
                wait_for_redis(settings.store, settings.store_timeout_ms, settings.start_timeout_s)
                mirror = MirrorThread(shared_store(settings))
                source = StoreSource(mirror.mirror.store, replay_wait_s(settings))
    except (ValueError, FileNotFoundError, FeedError) as ex:
        log.error("cannot start: %s", ex)
        return 2
    server = build_server(source)
    signal.signal(signal.SIGTERM, _interrupt)
    if mirror is not None:
        mirror.start()
    if runner is not None:
        runner.start()
    log.info(
        "MCP server on stdio (%s)", f"reading {api_url}" if api_url else "flow in this process"
    )
    try:
        run_stdio(server, out)
    except KeyboardInterrupt:
        log.info("interrupted: stopping")
    finally:
        if runner is not None:
            runner.stop()
        if mirror is not None:
            mirror.stop()
    if runner is not None and runner.pipeline.store.error is not None:
        return 1
    return 0


def cli() -> None:
    """The ``hlsl-mcp`` console script (``python -m api.mcp``): `main`, then exit at once."""
    code = main()
    logging.shutdown()
    sys.stderr.flush()
    # A worker thread may still block on stdin (after SIGTERM): do not wait for it.
    os._exit(code)


if __name__ == "__main__":
    cli()
