"""Crash-safe capture files: what `connectors.live.Recorder` writes to, and the tail check.

A recording may be killed at any moment (``kill -9``, OOM, power cut of the process), so a
compressed capture is written as a series of complete compressed units, a **gzip member** (``.gz``)
or an **LZ4 frame** (``.lz4``, with block and content checksums), one per flush period:

- every line goes to the compressor at once, and what the compressor emits goes straight to the
  file (no user-space buffer), so the OS holds it even if the process dies;
- `CaptureSink.sync` ends the current unit (deflate ``Z_FINISH`` plus CRC and size / LZ4 end mark
  and checksum): the file up to there is a complete, standard file (``gzip -t``, ``lz4 -t``) that
  decompresses cleanly. `connectors.live.Recorder` calls it every ``HLSL_RECORD_FLUSH_S``, so a
  crash loses at most that much;
- a periodic sync opens the next unit at once (its header is written), so a crash while the
  recording runs always leaves an unfinished last unit, which `connectors.files` reports as a
  ``truncated_tail`` (a warning), never as corruption;
- plain files are written line by line with one ``write`` call each (nothing is buffered).

`open_for_append` checks an existing capture before anything is appended to it:

- complete: append (a new gzip member / LZ4 frame; readers take multi-unit files as one stream);
- torn tail (the last unit was cut off, no error before): the complete lines of the torn unit are
  decompressed, the file is truncated to the end of its last complete unit and those lines are
  written again as a complete unit, so nothing readable is lost (a plain file loses only its
  partial last line);
- corrupt (a data or checksum error, or not that format at all), or a torn unit too large to
  rewrite: the file is left untouched and the recording goes to ``NAME.1.gz`` (``NAME.2.gz`` ...)
  instead.

Each of these decisions is logged.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import lz4.frame

log = logging.getLogger(__name__)

GZIP_LEVEL: Final = 6
# A torn last unit is rewritten only up to this many decompressed bytes (ours hold one flush
# period of frames; a larger one is a foreign single-unit file, left alone).
MAX_SALVAGE_BYTES: Final = 64 << 20
_SCAN_CHUNK: Final = 1 << 20
# gzip member header: magic, deflate, no flags, mtime 0, no extra flags, OS unknown (RFC 1952).
_GZIP_HEADER: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def capture_kind(path: Path) -> str:
    """``"gz"``, ``"lz4"`` or ``"plain"`` by the file name (case-insensitive)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return "gz"
    if name.endswith(".lz4"):
        return "lz4"
    return "plain"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class CaptureSink(Protocol):
    """Where a recording's bytes go (not thread-safe: the Recorder holds a lock)."""

    def write(self, data: bytes) -> None:
        """Add whole lines."""

    def sync(self, *, reopen: bool) -> None:
        """End the current compressed unit, if it holds anything; ``reopen``: start the next."""

    def close(self) -> None:
        """End the current unit and close the file."""


class _PlainSink:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes) -> None:
        _write_all(self._fd, data)

    def sync(self, *, reopen: bool) -> None:
        return None  # every write already reached the OS

    def close(self) -> None:
        os.close(self._fd)


class _UnitSink(ABC):
    """A series of complete compressed units (gzip members or LZ4 frames); a subclass says how
    a unit begins, compresses and ends."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._open = False  # a unit's header is in the file
        self._size = 0  # uncompressed bytes in the open unit

    @abstractmethod
    def _begin(self) -> bytes:
        """A new unit's header (and fresh compressor state)."""

    @abstractmethod
    def _compress(self, data: bytes) -> bytes:
        """Compressed bytes for ``data`` inside the open unit."""

    @abstractmethod
    def _end(self) -> bytes:
        """What closes the open unit (the rest of the stream and its trailer)."""

    def write(self, data: bytes) -> None:
        out = b""
        if not self._open:
            out = self._begin()
            self._open = True
        self._size += len(data)
        out += self._compress(data)
        if out:
            _write_all(self._fd, out)

    def sync(self, *, reopen: bool) -> None:
        if not self._open or (reopen and not self._size):
            return  # nothing since the last sync (an open empty unit stays open)
        out = self._end()
        self._open = False
        self._size = 0
        if reopen:
            out += self._begin()
            self._open = True
        _write_all(self._fd, out)

    def close(self) -> None:
        try:
            self.sync(reopen=False)
        finally:
            os.close(self._fd)


class _GzipSink(_UnitSink):
    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        self._z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._crc = 0

    def _begin(self) -> bytes:
        self._z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._crc = 0
        return _GZIP_HEADER

    def _compress(self, data: bytes) -> bytes:
        self._crc = zlib.crc32(data, self._crc)
        return self._z.compress(data)

    def _end(self) -> bytes:
        trailer = struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF)
        return self._z.flush(zlib.Z_FINISH) + trailer


class _Lz4Sink(_UnitSink):
    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        self._c = self._new()

    @staticmethod
    def _new() -> lz4.frame.LZ4FrameCompressor:
        return lz4.frame.LZ4FrameCompressor(block_checksum=True, content_checksum=True)

    def _begin(self) -> bytes:
        self._c = self._new()
        out: bytes = self._c.begin()
        return out

    def _compress(self, data: bytes) -> bytes:
        out: bytes = self._c.compress(data)
        return out

    def _end(self) -> bytes:
        out: bytes = self._c.flush()
        return out


def open_sink(path: Path, *, append: bool) -> CaptureSink:
    """Open ``path`` for writing (``append``: at its end, else truncated), by its name's kind."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o644)
    kind = capture_kind(path)
    if kind == "gz":
        return _GzipSink(fd)
    if kind == "lz4":
        return _Lz4Sink(fd)
    return _PlainSink(fd)


# ----- the tail check ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TailCheck:
    """What an existing capture's end looks like.

    Attributes:
        size: the file's size in bytes.
        good_end: bytes up to the end of the last complete unit (plain: the last newline).
        salvage: the complete lines decoded from a torn last unit (to write again), else empty.
        salvageable: False when the torn unit was too large to hold (then nothing is truncated).
        error: why the file is not a readable capture of its kind (corruption), else None.
    """

    size: int
    good_end: int
    salvage: bytes = b""
    salvageable: bool = True
    error: str | None = None

    @property
    def torn(self) -> bool:
        """The last unit (or line) is incomplete."""
        return self.error is None and self.good_end < self.size


def check_tail(path: Path) -> TailCheck:
    """Scan an existing capture for a torn last unit or corruption (see the module doc)."""
    kind = capture_kind(path)
    size = path.stat().st_size
    if kind == "plain":
        return _plain_tail(path, size)
    return _unit_tail(path, size, kind)


def _plain_tail(path: Path, size: int) -> TailCheck:
    with path.open("rb") as fh:
        end = size
        while end > 0:
            start = max(0, end - _SCAN_CHUNK)
            fh.seek(start)
            chunk = fh.read(end - start)
            k = chunk.rfind(b"\n")
            if k >= 0:
                return TailCheck(size, start + k + 1)
            end = start
    return TailCheck(size, 0)


def _unit_tail(path: Path, size: int, kind: str) -> TailCheck:
    def new() -> zlib._Decompress | lz4.frame.LZ4FrameDecompressor:
        if kind == "gz":
            return zlib.decompressobj(zlib.MAX_WBITS | 16)
        return lz4.frame.LZ4FrameDecompressor()

    dec = new()
    pos = 0  # file offset of the first byte of `data`
    unit_start = 0  # file offset where the current unit began
    fed = False  # the current unit has received bytes
    out = bytearray()  # decompressed bytes of the current unit (while small enough)
    held = True
    with path.open("rb") as fh:
        data = b""
        while True:
            if not data:
                data = fh.read(_SCAN_CHUNK)
                if not data:
                    break
            try:
                chunk = dec.decompress(data)
            except (zlib.error, RuntimeError, ValueError, OSError) as ex:
                what = "gzip" if kind == "gz" else "LZ4"
                msg = f"not a readable {what} stream at byte {unit_start}: {ex}"
                return TailCheck(size, unit_start, error=msg)
            fed = True
            if held:
                out += chunk
                if len(out) > MAX_SALVAGE_BYTES:
                    held = False
                    out.clear()
            if dec.eof:
                rest = dec.unused_data or b""
                pos += len(data) - len(rest)
                unit_start = pos
                data = rest
                dec, fed, held = new(), False, True
                out.clear()
            else:
                pos += len(data)
                data = b""
    if not fed:
        return TailCheck(size, size)
    lines = bytes(out[: out.rfind(b"\n") + 1])
    return TailCheck(size, unit_start, salvage=lines, salvageable=held)


def numbered(path: Path, n: int) -> Path:
    """``NAME.n.gz`` for ``NAME.gz`` (``x.ndjson.gz`` -> ``x.ndjson.1.gz``; ``x.ndjson`` ->
    ``x.1.ndjson``)."""
    suffix = path.suffix
    return path.with_name(f"{path.name[: len(path.name) - len(suffix)]}.{n}{suffix}")


def open_for_append(path: Path) -> tuple[Path, CaptureSink]:
    """Open a capture to append to, repairing a torn tail or moving on past a corrupt file.

    Returns the path actually written (``path``, or ``NAME.1.gz`` ... when ``path`` is corrupt).
    """
    candidate = path
    n = 0
    while True:
        if not candidate.exists() or candidate.stat().st_size == 0:
            return candidate, open_sink(candidate, append=True)
        tail = check_tail(candidate)
        if tail.error is None and not tail.torn:
            return candidate, open_sink(candidate, append=True)
        if tail.error is None and tail.salvageable:
            return candidate, _repair(candidate, tail)
        why = tail.error or (
            f"its last compressed unit was cut off and holds over {MAX_SALVAGE_BYTES} bytes"
        )
        n += 1
        nxt = numbered(path, n)
        log.warning(
            "capture %s cannot be appended to (%s); it is left as it is and the recording "
            "continues in %s",
            candidate,
            why,
            nxt,
        )
        candidate = nxt


def _repair(path: Path, tail: TailCheck) -> CaptureSink:
    dropped = tail.size - tail.good_end
    kept = tail.salvage.count(b"\n")
    if capture_kind(path) == "plain":
        log.warning(
            "capture %s ended inside a line (a crash?): its partial last line (%d bytes) is "
            "removed before appending",
            path,
            dropped,
        )
    else:
        log.warning(
            "capture %s ended inside a compressed unit (a crash?): truncated to its last "
            "complete unit at byte %d (%d bytes removed) and the %d complete lines of the cut "
            "unit written again before appending",
            path,
            tail.good_end,
            dropped,
            kept,
        )
    with path.open("r+b") as fh:
        fh.truncate(tail.good_end)
    sink = open_sink(path, append=True)
    if tail.salvage:
        sink.write(tail.salvage)
        sink.sync(reopen=False)
    return sink


__all__ = [
    "CaptureSink",
    "TailCheck",
    "capture_kind",
    "check_tail",
    "numbered",
    "open_for_append",
    "open_sink",
]
