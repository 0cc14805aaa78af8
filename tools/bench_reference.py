"""The reference every replay benchmark is a ratio to: ``orjson.loads`` of the capture's lines,
and the default capture (`tools.bench`, `tools.bench_stages`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson

from connectors.captures import sample_capture
from connectors.files import open_capture

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared/data/real/frames/hl_live_20250904_btc-eth-sol.ndjson.gz"
FALLBACK = sample_capture()  # the shipped demo capture (packaged in the wheel)
CHUNK = 64 << 20
"""Decompressed bytes the reference holds at a time."""


def read_lines(path: Path) -> list[bytes]:
    """Every non-blank line of a capture, decompressed."""
    with open_capture(path) as fh:
        return [line for line in fh.read().split(b"\n") if line.strip()]


def reference_rate(lines: list[bytes]) -> float:
    """Lines per second of a plain ``orjson.loads`` loop (results dropped)."""
    return len(lines) / _loads_seconds(lines)


def _loads_seconds(lines: list[bytes]) -> float:
    loads = orjson.loads
    t0 = time.perf_counter()
    for line in lines:
        loads(line)
    return time.perf_counter() - t0


def reference_rate_of(path: Path, passes: int = 5) -> float:
    """`reference_rate` over every non-blank line of a capture of any size: decompressed a chunk
    at a time, only the ``loads`` loops timed. A capture that fits in one chunk is parsed
    ``passes`` times and the fastest pass counts (one pass is ~40 ms, short enough for a busy
    machine to interrupt; the fastest pass is the conservative reference)."""
    n = 0
    seconds = 0.0
    carry = b""
    with open_capture(path) as fh:
        chunk = fh.read(CHUNK)
        while chunk:
            following = fh.read(CHUNK)
            parts = (carry + chunk).split(b"\n")
            carry = parts.pop() if following else b""
            lines = [line for line in parts if line.strip()]
            del parts
            repeat = passes if not n and not following else 1
            seconds += min(_loads_seconds(lines) for _ in range(max(1, repeat)))
            n += len(lines)
            chunk = following
    return n / seconds


def capture_or_default(path: Path | None) -> Path | None:
    """``path``, or the real capture when none is given (the shipped sample when the shared data
    is absent, with a note); None, with an error on stderr, when the file does not exist."""
    if path is None:
        path = DEFAULT if DEFAULT.is_file() else FALLBACK
        if path == FALLBACK:
            print(f"note: {DEFAULT} not found; using {FALLBACK}", file=sys.stderr)
    if not path.is_file():
        print(f"error: capture {path} not found", file=sys.stderr)
        return None
    return path
