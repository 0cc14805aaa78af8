"""What every replay benchmark compares with (`tools.bench`, `tools.bench_stages`): the reference,
``orjson.loads`` of the capture's lines; the frame path (the flow cut after its windows); and the
default capture."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from connectors.captures import sample_capture
from connectors.files import open_capture

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared/data/real/frames/hl_live_20250904_btc-eth-sol.ndjson.gz"
FALLBACK = sample_capture()  # the shipped demo capture (packaged in the wheel)
CHUNK = 64 << 20
"""Decompressed bytes the reference holds at a time."""


def line_chunks(path: Path) -> Iterator[tuple[list[bytes], bool]]:
    """The capture's non-blank lines, decompressed and split a chunk (`CHUNK` bytes) at a time, so
    a capture of any size is read in bounded memory; each with whether it is the last."""
    carry = b""
    with open_capture(path) as fh:
        chunk = fh.read(CHUNK)
        while chunk:
            following = fh.read(CHUNK)
            parts = (carry + chunk).split(b"\n")
            carry = parts.pop() if following else b""
            yield [line for line in parts if line.strip()], not following
            chunk = following


def _loads_seconds(lines: list[bytes]) -> float:
    loads = orjson.loads
    t0 = time.perf_counter()
    for line in lines:
        loads(line)
    return time.perf_counter() - t0


def reference_rate_of(path: Path, passes: int = 5) -> float:
    """Lines per second of a plain ``orjson.loads`` loop (results dropped) over every non-blank
    line of a capture (`line_chunks`; only the ``loads`` loops timed). A capture that fits in one
    chunk is parsed ``passes`` times and the fastest pass counts (one pass is ~40 ms, short
    enough for a busy machine to interrupt; the fastest pass is the conservative reference)."""
    n = 0
    seconds = 0.0
    for lines, last in line_chunks(path):
        repeat = passes if not n and last else 1
        seconds += min(_loads_seconds(lines) for _ in range(max(1, repeat)))
        n += len(lines)
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


def frame_path(path: Path) -> tuple[float, int]:
    """Frames per second of the frame path alone: read, decompress, parse, group, 1 s windows
    (the bars go to a sink that drops them; no features, regime, edge or envelopes); and the
    number of bars the windows closed."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import run_main

    from connectors.files import NdjsonSource, ReplayStats
    from operators.bars import fold_bars

    stats = ReplayStats()
    flow = Dataflow("frame_path")
    events = op.input("read_frames", flow, NdjsonSource([path], stats))
    bars, late = fold_bars("fold_bars", events, bar_ms=1000, lateness_ms=1000)
    count = [0]

    def count_bar(_step: str, _item: object) -> None:
        count[0] += 1

    op.inspect("drop_bars", bars, count_bar)
    op.inspect("drop_late", late, _drop)
    gc.collect()
    t0 = time.perf_counter()
    run_main(flow)
    return stats.lines / (time.perf_counter() - t0), count[0]


def _drop(_step: str, _item: object) -> None:
    return None
