"""Frame writers: a simulated run as a capture file in the archive envelope.

Each frame becomes one NDJSON line ``{"time": "<receive time, ISO UTC, ns>", "ver_num": 1, "raw":
<frame>}``; a name ending in ``.gz`` is gzip-compressed with no file name and mtime 0 in the
header, so the same config gives the same bytes.

Imports `tools.simulate.config` and `.simulator`.
"""

from __future__ import annotations

import gzip
import io
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from tools.simulate.config import SimConfig
from tools.simulate.simulator import generate


def iso_ns(ns: int) -> str:
    """Archive receive-time string (``2025-09-04T19:46:56.673877954``, UTC, no suffix)."""
    sec, frac = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}"


def _write_lines(frames: Iterable[tuple[int, Any]], fh: io.BufferedIOBase) -> Counter[str]:
    counts: Counter[str] = Counter()
    buf: list[bytes] = []
    sec_cache: tuple[int, str] = (-1, "")
    for recv, frame in frames:
        sec, frac = divmod(recv, 1_000_000_000)
        if sec != sec_cache[0]:
            stamp = datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
            sec_cache = (sec, stamp)
        counts[str(frame["channel"])] += 1
        buf.append(orjson.dumps({"time": f"{sec_cache[1]}.{frac:09d}", "ver_num": 1, "raw": frame}))
        if len(buf) >= 2048:
            fh.write(b"\n".join(buf) + b"\n")
            buf.clear()
    if buf:
        fh.write(b"\n".join(buf) + b"\n")
    return counts


def write_counts(config: SimConfig, out_path: Path) -> Counter[str]:
    """Write a simulated capture like `write_capture`; returns the frames by channel."""
    return write_frames(generate(config), out_path)


def write_frames(
    frames: Iterable[tuple[int, Any]], out_path: Path, compresslevel: int = 9
) -> Counter[str]:
    """Write ``(receive_time_ns, frame)`` items as a capture (gzip-compressed, byte-reproducibly,
    if the name ends in ``.gz``); returns the frames by channel."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("wb") as raw:
        if out_path.name.endswith(".gz"):
            # No file name and mtime 0 in the header: same config → same bytes.
            with gzip.GzipFile(
                filename="", mode="wb", fileobj=raw, compresslevel=compresslevel, mtime=0
            ) as gz:
                return _write_lines(frames, gz)
        return _write_lines(frames, raw)


def write_capture(config: SimConfig, out_path: Path) -> int:
    """Write a simulated capture as archive-envelope NDJSON.

    Args:
        config: what to simulate.
        out_path: destination; gzip-compressed (byte-reproducible) if the name ends in ``.gz``.

    Returns:
        The number of frames (lines) written.
    """
    return sum(write_counts(config, out_path).values())
