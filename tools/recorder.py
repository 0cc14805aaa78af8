"""Record raw Hyperliquid frames to a replayable capture.

    python -m tools.recorder --coins BTC --out data/btc.ndjson --seconds 60

Every frame received (data, acks, pongs, errors) is written verbatim in Hyperliquid's archive
envelope ``{"time": <receive time ISO ns>, "ver_num": 1, "raw": <frame>}``, gzip when the name ends
in ``.gz``. Coins are validated against the exchange's ``meta`` first. Progress goes to stderr; on
Ctrl-C (or SIGTERM, or after ``--seconds``) the file is flushed and closed, complete. The
recording replays through ``tools.replay`` / ``api.server --replay`` unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
from types import FrameType

from connectors.errors import FeedError
from connectors.live import MAINNET_INFO, MAINNET_WS, HyperliquidSource, LiveConfig, Recorder
from connectors.rest import InfoClient, resolve_coins

log = logging.getLogger("tools.recorder")


def record(
    coins: list[str],
    out: str,
    seconds: float | None,
    config: LiveConfig,
    stop: threading.Event,
    progress: bool = True,
) -> int:
    """Record until ``seconds`` pass or ``stop`` is set; returns the frames written."""
    recorder = Recorder(out, append=False)
    source = HyperliquidSource(coins, config, stop=stop, recorder=recorder)
    parts = [source.build_part("record", name, None) for name in source.list_parts()]
    started = time.monotonic()
    last_report = 0.0
    try:
        while not stop.is_set():
            for part in parts:
                part.next_batch()  # drains the socket queues into the recorder
            recorder.flush()
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tools.recorder``."""
    ap = argparse.ArgumentParser(
        prog="python -m tools.recorder", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--coins", required=True, help="comma-separated coins (exact names) or ALL")
    ap.add_argument("--out", required=True, help="capture file (.ndjson or .ndjson.gz)")
    ap.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    ap.add_argument("--ws-url", default=MAINNET_WS)
    ap.add_argument("--info-url", default=MAINNET_INFO)
    ap.add_argument("--book-fast", action="store_true", help="l2Book fast mode (5 levels)")
    ap.add_argument("--quiet", action="store_true", help="no progress line")
    ns = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        listed, delisted = InfoClient(ns.info_url).perps()
        coins = resolve_coins(
            [c.strip() for c in ns.coins.split(",") if c.strip()], listed, delisted
        )
    except FeedError as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    config = LiveConfig(
        ws_url=ns.ws_url, info_url=ns.info_url, book_fast=ns.book_fast, warm_start=False
    )
    n = record(coins, ns.out, ns.seconds, config, stop, progress=not ns.quiet)
    print(f"recorded {n:,} frames of {', '.join(coins)} to {ns.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
