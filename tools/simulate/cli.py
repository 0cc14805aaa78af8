"""The command line: ``python -m tools.simulate`` (``hlsl-simulate``).

Usage::

    python -m tools.simulate --out data/sample.ndjson.gz --seconds 600 --seed 7 \\
        --coins BTC,ETH,SOL --book-interval-ms 1000 --truth data/sample.truth.json
    python -m tools.simulate --out market.ndjson.gz --seconds 3600 --market 180   # whole market

Every argument is checked before anything is simulated: a bad value, or an ``--out`` or
``--truth`` that cannot be written (a directory, a place that cannot be created), fails in one
line with exit status 2.

Imports `tools.simulate.capture`, `.config` and `.market`, and `flows.startup`'s output check.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import orjson

from flows.startup import StartupError, check_output_path
from tools.simulate.capture import write_counts, write_frames
from tools.simulate.config import SimConfig, truth
from tools.simulate.market import BASE, generate_market


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: write a capture (and optionally its truth), print a summary.

    Args:
        argv: arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The process exit status (0; a bad argument or output path exits 2 with one line,
        before anything is simulated).
    """
    ap = argparse.ArgumentParser(
        prog="python -m tools.simulate",
        description="Write a seeded, simulated Hyperliquid capture with scripted regimes.",
    )
    ap.add_argument("--out", type=Path, required=True, help="output .ndjson or .ndjson.gz")
    ap.add_argument("--seconds", type=float, default=600.0, help="simulated seconds")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--coins", default="BTC,ETH,SOL", help="comma-separated coins")
    ap.add_argument("--book-interval-ms", type=int, default=1000, help="l2Book push interval")
    ap.add_argument("--start-ms", type=int, default=SimConfig.start_ms, help="exchange start time")
    ap.add_argument("--truth", type=Path, default=None, help="also write the ground truth JSON")
    ap.add_argument(
        "--market",
        type=int,
        default=None,
        metavar="N",
        help="a whole market: N coins C000… (4-coin simulations with seeds seed, seed+1, …, "
        "merged by receive time; --coins and --truth do not apply); gzip level 1",
    )
    args = ap.parse_args(argv)

    def config_of(coins: tuple[str, ...]) -> SimConfig:
        try:
            return SimConfig(
                coins=coins,
                seconds=args.seconds,
                seed=args.seed,
                start_ms=args.start_ms,
                book_interval_ms=args.book_interval_ms,
            )
        except ValueError as ex:
            ap.error(str(ex))

    if args.market is not None:
        if args.market < 1 or args.truth is not None:
            ap.error("--market needs N >= 1 and takes no --truth")
        config_of(BASE)  # the frames are generated lazily: check the settings now
        if (problem := _unwritable(args.out, None)) is not None:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        try:
            frames = generate_market(
                args.market,
                args.seconds,
                args.seed,
                start_ms=args.start_ms,
                book_interval_ms=args.book_interval_ms,
            )
            counts = write_frames(frames, args.out, compresslevel=1)
        except ValueError as ex:
            ap.error(str(ex))
        return _report(counts, args.out)
    config = config_of(tuple(c.strip() for c in args.coins.split(",") if c.strip()))
    if (problem := _unwritable(args.out, args.truth)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    counts = write_counts(config, args.out)
    if args.truth is not None:
        args.truth.parent.mkdir(parents=True, exist_ok=True)
        args.truth.write_bytes(orjson.dumps(truth(config), option=orjson.OPT_INDENT_2) + b"\n")
    return _report(counts, args.out)


def _unwritable(out: Path, truth_path: Path | None) -> str | None:
    """Why ``--out`` or ``--truth`` cannot be written (one line), or None: checked up front."""
    try:
        check_output_path(out, "--out")
        if truth_path is not None:
            check_output_path(truth_path, "--truth")
    except StartupError as ex:
        return str(ex)
    return None


def _report(counts: Counter[str], out: Path) -> int:
    by_channel = " ".join(f"{ch}={n}" for ch, n in sorted(counts.items()))
    size = out.stat().st_size
    print(f"wrote {sum(counts.values())} frames ({size} bytes) to {out}: {by_channel}")
    return 0
