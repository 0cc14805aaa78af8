"""The command line: ``python -m tools.fake_exchange`` (``hlsl-fake-exchange``).

Usage::

    python -m tools.fake_exchange --simulate --coins BTC,ETH,SOL --port 8765
    python -m tools.fake_exchange --capture data/sample.ndjson.gz --loop --speed 2 \\
        --silence l2Book:BTC --silence-after 30 --drop-every 120
    python -m tools.fake_exchange --simulate --inject bad_frames.ndjson

Imports `tools.fake_exchange.server` (and the settings it takes), `flows.startup` and
`tools.simulate`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from tools.fake_exchange.faults import Faults
from tools.fake_exchange.feeds import CaptureFeed, Feed, SimFeed
from tools.fake_exchange.limits import IDLE_TIMEOUT_S, REST_WEIGHT_PER_MIN
from tools.fake_exchange.protocol import now_ms
from tools.fake_exchange.server import FakeExchange
from tools.simulate import SimConfig


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
            start_ms=now_ms(),
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
