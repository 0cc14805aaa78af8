"""Run the signal flow and serve the API from one process.

    python -m api.server --replay data/sample.ndjson.gz [--speed 0] [--host 127.0.0.1] [--port 8000]

This module is the command line: its flags mirror the ``HLSL_*`` variables
(`flows.settings.Settings`); `api.runtime.serve` assembles and runs everything. When a replay
ends, the API keeps serving its final state until stopped (SIGINT/SIGTERM end it cleanly).

Start-up fails as a whole, before anything is announced, with one line ``cannot start: …`` and
exit status 2: a setting not allowed, an unknown ``HLSL_*`` variable, an output path that cannot be
written, a capture (or a directory of captures) that is not there, the port in use, an unknown
coin, or the exchange unreachable for ``--start-timeout-s``. The port is bound first.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from api.runtime import serve
from flows.settings import Settings, SettingsError, add_history_flags, add_validation_flags
from flows.startup import fail

log = logging.getLogger(__name__)


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
        help="capture files, directories of captures, or quoted globs such as 'data/*.gz' or "
        "'archive/**/*.lz4' (HLSL_REPLAY)",
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
    add_history_flags(ap)
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
    ap.add_argument(
        "--store",
        help="memory (default) or redis://[user:password@]host[:port][/db] / rediss://...: a "
        "store shared by flow and API processes (HLSL_STORE; prefer the variable for a password)",
    )
    ap.add_argument(
        "--store-prefix", help="key prefix in the shared store (hlsl:live / hlsl:replay)"
    )
    ap.add_argument(
        "--store-timeout-ms", help="every shared-store call times out after this (1000)"
    )
    ap.add_argument(
        "--serve-only",
        action="store_true",
        default=None,
        help="run no flow; serve what the flows write to the shared store (needs --store redis://)",
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m api.server``."""
    return serve(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
