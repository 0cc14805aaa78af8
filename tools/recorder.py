"""Record raw Hyperliquid frames to a replayable capture.

    python -m tools.recorder --coins BTC --out data/btc.ndjson --seconds 60

Every frame received (data, acks, pongs, errors) is written verbatim in Hyperliquid's archive
envelope ``{"time": <receive time ISO ns>, "ver_num": 1, "raw": <frame>}``, gzip when the name ends
in ``.gz``, LZ4 frames when it ends in ``.lz4``, else plain text. Coins are validated against the
exchange's ``meta`` first. Progress goes to stderr; on Ctrl-C (or SIGTERM, or after ``--seconds``)
the file is flushed and closed, complete. The recording replays through ``tools.replay`` /
``api.server --replay`` unchanged.

A compressed recording ends a complete gzip member / LZ4 frame every ``--flush-s`` seconds
(default ``HLSL_RECORD_FLUSH_S``, else 1), so ``kill -9`` loses at most that much; its replay then
warns ``truncated_tail`` and exits 0. An existing ``--out`` is only overwritten with ``--force``.

Before recording, everything is checked and any problem is one line, exit status 2: the flags,
``HLSL_*`` variables, that ``--out`` can be written, and the coins; while the exchange is
unreachable the check is retried with backoff for ``--start-timeout-s`` (``HLSL_START_TIMEOUT_S``,
else 120 s).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Final

from connectors.errors import FeedError
from connectors.live import MAINNET_INFO, MAINNET_WS, HyperliquidSource, LiveConfig, Recorder
from connectors.rest import resolve_coins
from flows.settings import Settings, SettingsError
from flows.startup import StartupError, check_output_path, fetch_perps

log = logging.getLogger("tools.recorder")

MAX_FLUSH_S: Final = 3600.0  # as the setting `record_flush_s` allows


def record(
    coins: list[str],
    out: str,
    seconds: float | None,
    config: LiveConfig,
    stop: threading.Event,
    progress: bool = True,
    flush_s: float = 1.0,
) -> int:
    """Record until ``seconds`` pass or ``stop`` is set; returns the frames written.

    ``out`` is overwritten; the recorder ends a compressed block every ``flush_s`` seconds.
    """
    recorder = Recorder(out, append=False, flush_s=flush_s)
    source = HyperliquidSource(coins, config, stop=stop, recorder=recorder)
    parts = [source.build_part("record", name, None) for name in source.list_parts()]
    started = time.monotonic()
    last_report = 0.0
    try:
        while not stop.is_set():
            for part in parts:
                part.next_batch()  # drains the socket queues into the recorder (flushed
                # every flush_s by the recorder itself)
            now = time.monotonic()
            if seconds is not None and now - started >= seconds:
                break
            if progress and now - last_report >= 1.0:
                last_report = now
                conns = source.info()["connections"]
                up = sum(1 for c in conns if c["connected"])
                print(
                    f"\r{now - started:7.1f} s  {recorder.lines:>9,} frames  "
                    f"{up}/{len(conns)} connected",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
            stop.wait(0.05)
    finally:
        stop.set()
        for part in parts:
            with contextlib.suppress(StopIteration):
                while True:
                    part.next_batch()  # what was queued before the stop is still written
            part.close()
        recorder.close()
        if progress:
            print(file=sys.stderr)
    return recorder.lines


def _flush_period(flag: float | None) -> tuple[float, str | None]:
    """The flush period from ``--flush-s``, else ``HLSL_RECORD_FLUSH_S``, else 1 s; or why not."""
    if flag is not None:
        value, name = flag, "--flush-s"
    else:
        env = os.environ.get("HLSL_RECORD_FLUSH_S")
        if env is None:
            return 1.0, None
        name = "HLSL_RECORD_FLUSH_S"
        try:
            value = float(env)
        except ValueError:
            return 1.0, f"{name}={env!r} is not a number; allowed: seconds in (0, 3600]"
    if not 0 < value <= MAX_FLUSH_S:
        return 1.0, f"{name}={value!r} is out of range; allowed: seconds in (0, 3600]"
    return value, None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tools.recorder``."""
    ap = argparse.ArgumentParser(
        prog="python -m tools.recorder", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--coins", required=True, help="comma-separated coins (exact names) or ALL")
    ap.add_argument(
        "--out", required=True, help="capture file (.ndjson, .ndjson.gz or .ndjson.lz4)"
    )
    ap.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    ap.add_argument(
        "--flush-s",
        type=float,
        help="end a compressed block this often, in seconds: at most this much is lost "
        "if the recorder is killed (HLSL_RECORD_FLUSH_S, else 1)",
    )
    ap.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    ap.add_argument(
        "--start-timeout-s",
        help="retry an unreachable exchange this long before giving up "
        "(HLSL_START_TIMEOUT_S, else 120)",
    )
    ap.add_argument("--ws-url", default=MAINNET_WS)
    ap.add_argument("--info-url", default=MAINNET_INFO)
    ap.add_argument("--book-fast", action="store_true", help="l2Book fast mode (5 levels)")
    ap.add_argument("--quiet", action="store_true", help="no progress line")
    ns = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    flush_s, problem = _flush_period(ns.flush_s)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if ns.seconds is not None and not ns.seconds > 0:
        print(f"error: --seconds = {ns.seconds:g}: must be > 0", file=sys.stderr)
        return 2
    overrides = {} if ns.start_timeout_s is None else {"start_timeout_s": ns.start_timeout_s}
    try:
        settings = Settings.load(overrides)
        check_output_path(ns.out, "--out")
    except (SettingsError, StartupError) as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    if Path(ns.out).exists() and not ns.force:
        print(f"error: {ns.out} already exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        listed, delisted = fetch_perps(ns.info_url, settings.start_timeout_s, stop)
        coins = resolve_coins(
            [c.strip() for c in ns.coins.split(",") if c.strip()], listed, delisted
        )
    except (FeedError, StartupError) as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    config = LiveConfig(
        ws_url=ns.ws_url, info_url=ns.info_url, book_fast=ns.book_fast, warm_start=False
    )
    n = record(coins, ns.out, ns.seconds, config, stop, progress=not ns.quiet, flush_s=flush_s)
    print(f"recorded {n:,} frames of {', '.join(coins)} to {ns.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
