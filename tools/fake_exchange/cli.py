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
import math
import signal
import sys
import threading
import zlib
from collections.abc import Collection, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from flows.settings import LOG_LEVELS
from tools.fake_exchange.faults import Faults
from tools.fake_exchange.feeds import CaptureFeed, Feed, SimFeed
from tools.fake_exchange.inject import Injection, load_injections
from tools.fake_exchange.limits import IDLE_TIMEOUT_S, REST_WEIGHT_PER_MIN
from tools.fake_exchange.protocol import CANDLE_INTERVALS_MS, DATA_CHANNELS, now_ms
from tools.fake_exchange.server import FakeExchange
from tools.simulate import SimConfig
from tools.simulate.config import SPECS

MAX_SIM_SECONDS = 10_000_000
"""The longest ``--seconds`` (~115 days): longer passes take too long to start."""
MIN_SPEED = 0.001
"""The slowest ``--speed`` (1000x slower than real time)."""
_CHANNELS = ", ".join(sorted(DATA_CHANNELS, key=str.lower))
_SILENCE_FORMS = f"a channel ({_CHANNELS}), CHANNEL:COIN or candle:COIN:INTERVAL"
# What a damaged capture raises while it is read (as `connectors.files` lists them).
_READ_ERRORS = (EOFError, OSError, zlib.error, RuntimeError, ValueError)


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
    p.add_argument(
        "--coins", type=_csv, help=f"simulated coins, of {','.join(SPECS)} (default BTC,ETH,SOL)"
    )
    p.add_argument("--seed", type=int, help="simulator seed (default 7)")
    p.add_argument(
        "--seconds",
        type=float,
        help=f"simulated seconds per pass, at most {MAX_SIM_SECONDS:,} (default 600)",
    )
    p.add_argument("--book-interval-ms", type=int, help="simulated l2Book cadence (default 1000)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    p.add_argument(
        "--speed", type=float, default=1.0, help=f"replay speed (1 = real time; >= {MIN_SPEED})"
    )
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
    f.add_argument("--stall-for", type=float, metavar="S", help="stall length (default 5)")
    f.add_argument(
        "--silence",
        action="append",
        default=[],
        metavar="STREAM",
        help=(
            "stop a stream: a channel, CHANNEL:COIN (e.g. l2Book:BTC) or candle:COIN:INTERVAL "
            "(repeatable or comma-separated)"
        ),
    )
    f.add_argument(
        "--silence-after", type=float, metavar="T", help="seconds before --silence (default 0)"
    )
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
    p.add_argument("--log-level", default="INFO", help=f"logging level ({', '.join(LOG_LEVELS)})")
    return p


def _shown(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        value = ",".join(value)
    return str(value) if value != "" else "''"


def _message(flag: str, value: object, problem: str) -> str:
    return f"{flag} = {_shown(value)}: {problem}"


def _refuse(flag: str, value: object, problem: str) -> NoReturn:
    raise ValueError(_message(flag, value, problem))


def _check_number(
    flag: str, value: float | None, *, low: float, strict: bool, high: float | None = None
) -> None:
    """Refuse ``value`` (None: not given) outside ``low`` (exclusive if ``strict``)..``high``."""
    if value is None:
        return
    above = value > low if strict else value >= low
    if not (math.isfinite(value) and above and (high is None or value <= high)):
        bounds = f"{'>' if strict else '>='} {_shown(low)}"
        bounds += "" if high is None else f" and <= {high:,}"
        kind = "" if math.isfinite(value) else "a finite number "
        _refuse(flag, value, f"must be {kind}{bounds}")


def _check_file(flag: str, path: Path | None, what: str) -> None:
    if path is None:
        return
    if path.is_dir():
        _refuse(flag, path, f"is a directory; give {what}")
    if not path.is_file():
        _refuse(flag, path, "no such file")


def _silence_problem(stream: str, coins: Collection[str] | None = None) -> str | None:
    """Why ``--silence`` cannot use ``stream`` (None: it can); ``coins``: the listed coins."""
    kind, colon, rest = stream.partition(":")
    if kind not in DATA_CHANNELS:
        return f"unknown channel {kind!r}; allowed: {_SILENCE_FORMS}"
    if not colon:
        return None
    if kind == "allMids":
        return "allMids has no coin: give it bare (allMids)"
    coin, colon, interval = rest.partition(":")
    if colon and kind != "candle":
        return f"only candle streams take an interval; allowed: {_SILENCE_FORMS}"
    if colon and interval not in CANDLE_INTERVALS_MS:
        return f"unknown candle interval {interval!r}; allowed: {', '.join(CANDLE_INTERVALS_MS)}"
    if not coin:
        return f"no coin after {kind}:; allowed: {_SILENCE_FORMS}"
    if coins is not None and coin not in coins:
        return f"{coin} is not listed; listed coins: {', '.join(coins)}"
    return None


def check_args(args: argparse.Namespace) -> None:
    """Refuse flag values the exchange cannot use, before any work.

    Checks what needs no feed (the coins of ``--silence`` are checked by `exchange_from_args`).

    Raises:
        ValueError: ``--flag = value: what is allowed`` (the flag as the user types it).
    """
    if args.capture is not None:
        for flag in ("--coins", "--seed", "--seconds", "--book-interval-ms"):
            value = getattr(args, flag[2:].replace("-", "_"))
            if value is not None:
                msg = "applies to --simulate only (a capture serves its own coins and times)"
                _refuse(flag, value, msg)
        _check_file("--capture", args.capture, "a capture file (.ndjson[.gz|.lz4], .txt)")
    if args.coins is not None:
        known = ", ".join(SPECS)
        if not args.coins:
            _refuse("--coins", args.coins, f"names no coin; allowed: {known}")
        for i, coin in enumerate(args.coins):
            if coin not in SPECS:
                _refuse("--coins", args.coins, f"unknown coin {coin}; allowed: {known}")
            if coin in args.coins[:i]:
                _refuse("--coins", args.coins, f"names {coin} twice")
    _check_number("--seconds", args.seconds, low=0, strict=True, high=MAX_SIM_SECONDS)
    _check_number("--book-interval-ms", args.book_interval_ms, low=1, strict=False)
    if not 0 <= args.port <= 65535:
        _refuse("--port", args.port, "must be 0-65535 (0 picks a free port)")
    _check_number("--speed", args.speed, low=MIN_SPEED, strict=False)
    _check_number("--idle-timeout", args.idle_timeout, low=0, strict=False)
    _check_number("--rest-weight-per-min", args.rest_weight_per_min, low=0, strict=False)
    for flag in ("--drop-every", "--stall-every", "--error-every"):
        _check_number(flag, getattr(args, flag[2:].replace("-", "_")), low=0, strict=True)
    if args.drop_code is not None:
        if args.drop_every is None:
            _refuse("--drop-code", args.drop_code, "needs --drop-every")
        if not 1000 <= args.drop_code <= 4999:
            _refuse("--drop-code", args.drop_code, "must be a WebSocket close code, 1000-4999")
    if args.stall_for is not None:
        if args.stall_every is None:
            _refuse("--stall-for", args.stall_for, "needs --stall-every")
        _check_number("--stall-for", args.stall_for, low=0, strict=True)
        if args.stall_for >= args.stall_every:
            msg = f"must be < --stall-every ({_shown(args.stall_every)})"
            _refuse("--stall-for", args.stall_for, msg)
    for item in args.silence:
        if not _csv(item):
            _refuse("--silence", item, f"names no stream; allowed: {_SILENCE_FORMS}")
        for stream in _csv(item):
            problem = _silence_problem(stream)
            if problem:
                _refuse("--silence", stream, problem)
    if args.silence_after is not None:
        if not args.silence:
            _refuse("--silence-after", args.silence_after, "needs --silence")
        _check_number("--silence-after", args.silence_after, low=0, strict=False)
    _check_number("--malformed-every", args.malformed_every, low=1, strict=False)
    _check_number("--unknown-every", args.unknown_every, low=1, strict=False)
    _check_file("--inject", args.inject, "an NDJSON file")
    if str(args.log_level).upper() not in logging.getLevelNamesMapping():
        _refuse("--log-level", args.log_level, f"allowed: {', '.join(LOG_LEVELS)}")


def _capture_feed(path: Path) -> CaptureFeed:
    """The ``--capture`` feed, read once through (`Feed.info`) to find a damaged file now."""
    feed = CaptureFeed(path)
    try:
        coins = feed.info.coins
    except _READ_ERRORS as ex:
        msg = _message("--capture", path, f"cannot read it ({ex})")
        raise ValueError(msg) from None
    if not coins:
        msg = "holds no usable data frames (trades, l2Book, bbo, candle, ...)"
        _refuse("--capture", path, msg)
    return feed


def exchange_from_args(args: argparse.Namespace) -> FakeExchange:
    """Build (not start) the exchange the parsed command line describes.

    Raises:
        ValueError: for invalid settings, naming the flag (see `check_args`).
    """
    check_args(args)
    return _build(args)


def _build(args: argparse.Namespace) -> FakeExchange:
    """`exchange_from_args` once `check_args` has passed."""
    feed: Feed
    if args.capture is not None:
        feed = _capture_feed(args.capture)
        loop_feed = bool(args.loop)
    else:
        given = {k: getattr(args, k) for k in ("coins", "seconds", "seed", "book_interval_ms")}
        config = SimConfig(  # SimConfig's defaults for what was not given
            start_ms=now_ms(), **{k: v for k, v in given.items() if v is not None}
        )
        feed = SimFeed(config)
        loop_feed = args.loop is None or bool(args.loop)
    for coin in args.extra_coins:
        if coin in feed.info.coins:
            msg = f"{coin} has data in the feed (extra coins are coins without data)"
            _refuse("--extra-coins", args.extra_coins, msg)
    inject: tuple[Injection, ...] | None = None
    if args.inject is not None:
        try:
            inject = load_injections(args.inject)
        except (OSError, ValueError) as ex:
            msg = f"--inject: {ex}"
            raise ValueError(msg) from None
    silence = tuple(s for item in args.silence for s in _csv(item))
    faults = Faults(
        drop_every_s=args.drop_every,
        drop_code=args.drop_code,
        stall_every_s=args.stall_every,
        stall_for_s=Faults.stall_for_s if args.stall_for is None else args.stall_for,
        silence=silence,
        silence_after_s=Faults.silence_after_s
        if args.silence_after is None
        else args.silence_after,
        malformed_every=args.malformed_every,
        unknown_every=args.unknown_every,
        error_every_s=args.error_every,
    )
    exchange = FakeExchange(
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
        inject=inject,
    )
    for stream in silence:
        problem = _silence_problem(stream, exchange.universe)
        if problem:
            _refuse("--silence", stream, problem)
    return exchange


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake exchange until SIGINT/SIGTERM.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 after a clean stop, 1 if the server failed, 2 for bad arguments.
    """
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
    except ValueError as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=str(args.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    try:
        exchange = _build(args)  # checked above
        # the address (a used port, a host that does not resolve: one line and exit 2), before
        # uvicorn tries (and logs)
        from flows.startup import bind_listener

        bind_listener(args.host, args.port, ("--host", "--port")).close()
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
