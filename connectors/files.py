"""Replay NDJSON captures as a Bytewax source.

`NdjsonSource` reads one or more capture files (plain, ``.gz`` or ``.lz4``; each line a bare frame,
an archive envelope or ``<receive ns> <frame>``, see `connectors.parse`), merges several files by
receive time (else exchange time), parses every frame into typed events with one shared
`FrameParser`, and emits them in batches.

- A malformed line is counted by reason, logged with ``file:line`` and skipped.
- A compressed file may hold several gzip members / LZ4 frames (what `connectors.live.Recorder`
  writes, one per flush period); they are read as one stream.
- A compressed file that ends inside its last member / frame with no error before it (the tail
  a crashed recording leaves) ends that file with a ``truncated_tail`` skip (a warning with
  ``file:line``), after every line before it was delivered: not an error.
- A corrupt compressed file (bad data, CRC or checksum, not that format at all) ends that file
  with a `ReplayFileError` recorded in the stats (and logged), after every good line before it
  was delivered; other files go on.
- A ``node_fills_by_block`` file (Hyperliquid's archive of fills; told by its first line) becomes
  one ``trades`` frame per coin and block (`connectors.archive.fills_lines`), validated as live
  trades are.
- The resume state is the decompressed byte offset per file.
- The counters go to a `connectors.replay_stats.ReplayStats` (re-exported here).
- ``speed`` paces the replay by event timestamps (``0`` = as fast as possible, ``1`` = real time).
- The source ends when every file is read, or as soon as ``stop`` is set (Bytewax has no stop API).

This is the one-partition replay (one worker reads every file). `connectors.partitions` builds the
partitioned one (a partition per coin) from the same readers, for runs of several workers.

One module past ~400 lines on purpose: reading, damage handling and the merge by receive time of
the one-partition replay are one source (bytewax's Source over a private Partition).
"""

from __future__ import annotations

import gzip
import heapq
import io
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import lz4.frame
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from typing_extensions import override

from connectors.archive import (
    FillsBlock,
    Format,
    PartialFrameError,
    capture_format,
    fills_lines,
    parse_fills_line,
    parse_lines,
)
from connectors.errors import FrameError, ReplayFileError
from connectors.events import Event
from connectors.parse import decode_line, peek_time_ms
from connectors.replay_stats import ReplayStats

log = logging.getLogger(__name__)

CHUNK_BYTES: Final = 1 << 18
# What a damaged capture raises while it is read: EOFError = the compressed stream ended inside
# its last unit (a crash tail); the others = corruption (bad data, CRC/checksum, not that format).
_READ_ERRORS: Final = (EOFError, OSError, zlib.error, RuntimeError, ValueError)


def open_capture(path: Path) -> io.BufferedIOBase:
    """Open a capture for binary reading, decompressing ``.gz`` and ``.lz4`` transparently.

    Multi-member gzip and multi-frame LZ4 files read as one stream. A stream that ends inside
    its last member / frame raises `EOFError` once everything before was read.
    """
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.GzipFile(path, "rb")
    if name.endswith(".lz4"):
        fh: io.BufferedIOBase = lz4.frame.LZ4FrameFile(path, "rb")
        return fh
    return open(path, "rb")


class _FileReader:
    """Reads one capture in chunks, yielding decoded records with their line numbers.

    ``kind`` is the file's format, told by its first line: ``"frames"`` (capture lines of
    frames) or ``"fills"`` (``node_fills_by_block``); None until a line was read.
    """

    def __init__(self, path: Path, offset: int, stats: ReplayStats) -> None:
        self.path = path
        self._stats = stats
        self.kind: Format | None = None
        fh = open_capture(path)
        self.lineno = 0
        self._fh: io.BufferedIOBase | None = fh
        self._chunk_offset = offset  # decompressed offset of self._lines[0]
        self._lines: list[bytes] = []
        self._idx = 0
        self._pos = 0  # bytes of self._lines[: self._pos_idx], newlines included
        self._pos_idx = 0
        self._rest = b""
        self.done = False
        if offset:
            try:
                self.lineno = _skip(fh, offset)
            except _READ_ERRORS as ex:  # resuming inside a torn or corrupt capture
                self._fail(ex)

    @property
    def offset(self) -> int:
        """Decompressed bytes consumed by the lines handed out so far."""
        idx = self._idx
        if idx != self._pos_idx:  # kept as it goes: a partition asks after every line
            self._pos += sum(len(line) + 1 for line in self._lines[self._pos_idx : idx])
            self._pos_idx = idx
        return self._chunk_offset + self._pos

    def _fill(self) -> bool:
        """Read the next chunk of lines; False at the end of the file (or on a fatal read error)."""
        fh = self._fh
        if fh is None:
            return False
        self._chunk_offset = self.offset
        self._lines, self._idx, self._pos, self._pos_idx = [], 0, 0, 0
        while True:  # until a complete line (a line may be longer than one read)
            try:
                # read1: at most one decompression step, so when a truncated stream raises,
                # nothing decompressed before the damage is lost (read() drops a whole chunk).
                data = fh.read1(CHUNK_BYTES)
            except _READ_ERRORS as ex:
                self._fail(ex)
                return False
            if not data:
                self._close()
                if self._rest:
                    # The last line has no newline: still a complete record.
                    self._lines = [self._rest]
                    self._rest = b""
                    if self.kind is None:
                        self._sniff(self._lines)
                    return True
                return False
            lines = (self._rest + data).split(b"\n") if self._rest else data.split(b"\n")
            self._rest = lines.pop()
            if lines:
                self._lines = lines
                if self.kind is None:
                    self._sniff(lines)
                return True

    def _sniff(self, lines: list[bytes]) -> None:
        if any(line.strip() for line in lines):
            self.kind = capture_format(lines)

    def next_line(self) -> bytes | None:
        """The next raw line (blank ones too), or None at the end of the file; counts nothing."""
        if self._idx >= len(self._lines) and not self._fill():
            self.done = True
            return None
        line = self._lines[self._idx]
        self._idx += 1
        self.lineno += 1
        return line

    def next_lines(self) -> list[bytes] | None:
        """The lines `next_line` would give until it next reads (the rest of a chunk), or None
        at the end of the file; counted in ``lineno`` at once. For a pass that takes every
        line of a capture in order (the split pass), without a call per line."""
        if self._idx >= len(self._lines) and not self._fill():
            self.done = True
            return None
        lines = self._lines[self._idx :] if self._idx else self._lines
        self._idx = len(self._lines)
        self.lineno += len(lines)
        return lines

    def _fail(self, ex: BaseException) -> None:
        if isinstance(ex, EOFError):
            self._torn_tail(ex)
            return
        where = f"{self.path}:{self.lineno + 1}"
        partial = f" (a partial line of {len(self._rest)} bytes was dropped)" if self._rest else ""
        msg = (
            f"capture {self.path} is truncated or corrupt after line {self.lineno}{partial}: "
            f"{type(ex).__name__}: {ex}"
        )
        if self._rest:
            self._stats.skips.skip("truncated_line", where, "partial last line")
        self._rest = b""
        self._stats.errors.append(msg)
        log.error("%s", ReplayFileError(msg))
        self._close()

    def _torn_tail(self, ex: EOFError) -> None:
        """The stream ended inside its last compressed unit with no error before: a crash tail
        (a recording killed between flushes). A warning, not an error: every line before it
        was read."""
        partial = f"; a partial line of {len(self._rest)} bytes was dropped" if self._rest else ""
        self._stats.skips.skip(
            "truncated_tail",
            f"{self.path}:{self.lineno + 1}",
            f"the capture ends inside its last compressed block (a crash tail) after line "
            f"{self.lineno}{partial}: {ex}",
        )
        self._rest = b""
        self._close()

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def next_record(self) -> tuple[int | None, Any] | None:
        """The next decodable record ``(recv_ns, frame)``, or None at the end of the file."""
        stats = self._stats
        while True:
            line = self.next_line()
            if line is None:
                return None
            stats.lines += 1
            if not line.strip():
                stats.blank_lines += 1
                continue
            try:
                if self.kind == "fills":
                    recv_ns, subs = fills_lines(line, stats.parser.config.max_json_depth)
                    return recv_ns, FillsBlock([sub for _, sub in subs])
                return decode_line(line)
            except FrameError as ex:
                stats.skips.skip(ex.reason, f"{self.path}:{self.lineno}", ex.detail)

    def read_batch(
        self,
        limit: int,
        parse_line: Callable[[bytes], list[Event]],
        parse_fills: Callable[[bytes], list[Event]] | None = None,
    ) -> list[Event]:
        """Decode and parse up to ``limit`` lines straight into events (the unpaced fast path).

        ``parse_fills`` parses the lines of a fills file instead of ``parse_line``; either may
        raise `PartialFrameError`: its events are kept, each error counted.
        """
        stats = self._stats
        skip = stats.skips.skip
        out: list[Event] = []
        extend = out.extend
        lines, idx = self._lines, self._idx
        n = 0
        base = self.lineno
        parse = parse_fills if self.kind == "fills" and parse_fills is not None else parse_line
        while n < limit:
            if idx >= len(lines):
                self._idx = idx
                self.lineno = base + n  # so a read error names the last good line
                if not self._fill():
                    self.done = True
                    break
                lines, idx = self._lines, 0
                if self.kind == "fills" and parse_fills is not None:
                    parse = parse_fills
            line = lines[idx]
            idx += 1
            n += 1
            try:
                extend(parse(line))
            except PartialFrameError as ex:
                extend(ex.events)
                for err in ex.errors:
                    skip(err.reason, f"{self.path}:{base + n}", err.detail)
            except FrameError as ex:
                if not line.strip():
                    stats.blank_lines += 1
                else:
                    skip(ex.reason, f"{self.path}:{base + n}", ex.detail)
        self._idx = idx
        self.lineno = base + n
        stats.lines += n
        return out

    def close(self) -> None:
        """Release the file handle."""
        self._close()


def _skip(fh: io.BufferedIOBase, offset: int) -> int:
    """Read past ``offset`` decompressed bytes; returns the number of lines skipped."""
    left, lines = offset, 0
    while left > 0:
        data = fh.read(min(left, CHUNK_BYTES))
        if not data:
            break
        lines += data.count(b"\n")
        left -= len(data)
    return lines


class Pace:
    """The wall clock of a paced replay (``speed`` > 0): the first record sets the origin, and a
    record is due ``(key - first key) / speed`` later. Shared by partitions (thread-safe)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._origin: tuple[float, int] | None = None  # (monotonic s, event ns)
        self._lock = threading.Lock()

    def due(self, key: int) -> float:
        """The monotonic second at which a record with event key ``key`` is due."""
        with self._lock:
            if self._origin is None:
                self._origin = (time.monotonic(), key)
            wall0, key0 = self._origin
        return wall0 + (key - key0) / 1e9 / self.speed

    def wait(self, key: int) -> datetime | None:
        """None if the record is due now, else when to poll again (at most 0.25 s ahead)."""
        due, now = self.due(key), time.monotonic()
        if due <= now:
            return None
        return datetime.now(UTC) + timedelta(seconds=min(due - now, 0.25))


def resume_offsets(readers: Sequence[_FileReader], held: Sequence[int | None]) -> dict[str, int]:
    """A partition's resume state: each file's offset, before the record the partition holds
    back (at most one per file, not yet emitted) when it holds one."""
    return {str(r.path): r.offset if h is None else h for r, h in zip(readers, held, strict=True)}


def check_replay_options(speed: float, batch_size: int) -> None:
    """`ValueError` for a pace below 0 or a batch below 1 record."""
    if speed < 0:
        msg = f"speed must be >= 0, got {speed!r}"
        raise ValueError(msg)
    if batch_size < 1:
        msg = f"batch_size must be >= 1, got {batch_size!r}"
        raise ValueError(msg)


def sort_key(recv_ns: int | None, frame: Any, last: int) -> int:
    """The merge key of a capture record: its receive ns, else its exchange time in ns, else
    ``last`` (the key of the file's record before it)."""
    if recv_ns is not None:
        return recv_ns
    t = peek_time_ms(frame)
    return last if t is None else t * 1_000_000


class _ReplayPartition(StatefulSourcePartition[Event, dict[str, int]]):
    def __init__(
        self,
        paths: Sequence[Path],
        resume: dict[str, int] | None,
        stats: ReplayStats,
        batch_size: int,
        speed: float,
        stop: threading.Event | None,
    ) -> None:
        self._stats = stats
        self._parser = stats.parser
        self._batch_size = batch_size
        self._speed = speed
        self._stop = stop
        resume = resume or {}
        self._readers = [_FileReader(p, resume.get(str(p), 0), stats) for p in paths]
        self._heap: list[tuple[int, int, int | None, Any]] = []
        self._last_key = [0] * len(self._readers)
        # Offset of each file before the record it has waiting in the heap (None: nothing waits).
        self._held: list[int | None] = [None] * len(self._readers)
        for i in range(len(self._readers)):
            self._push(i)
        self._awake: datetime | None = None
        self._pace = Pace(speed) if speed > 0 else None

    def _push(self, i: int) -> None:
        reader = self._readers[i]
        before = reader.offset
        rec = reader.next_record()
        if rec is None:
            self._held[i] = None
            return
        self._held[i] = before
        recv_ns, frame = rec
        key = sort_key(recv_ns, frame, self._last_key[i])
        self._last_key[i] = key
        heapq.heappush(self._heap, (key, i, recv_ns, frame))

    @override
    def next_batch(self) -> Iterable[Event]:
        if self._stop is not None and self._stop.is_set():
            raise StopIteration
        heap = self._heap
        pace = self._pace
        if pace is None and len(self._readers) == 1:
            return self._fast_batch()
        if not heap:
            self._stats.finished = True
            raise StopIteration
        out: list[Event] = []
        parse = self._parser.parse
        fills = self._fills
        skip = self._stats.skips.skip
        self._awake = None
        n = 0
        while heap and n < self._batch_size:
            key, i, recv_ns, frame = heap[0]
            if pace is not None:
                self._awake = pace.wait(key)
                if self._awake is not None:
                    break
            heapq.heappop(heap)
            n += 1
            try:
                if type(frame) is FillsBlock:
                    out.extend(fills(frame))
                else:
                    out.extend(parse(frame, recv_ns))
            except PartialFrameError as ex:
                out.extend(ex.events)
                r = self._readers[i]
                for err in ex.errors:
                    skip(err.reason, f"{r.path}:{r.lineno}", err.detail)
            except FrameError as ex:
                r = self._readers[i]
                skip(ex.reason, f"{r.path}:{r.lineno}", ex.detail)
            self._push(i)
        return out

    def _fills(self, block: FillsBlock) -> list[Event]:
        return parse_lines(self._parser, block.lines)

    def _parse_fills_line(self, line: bytes) -> list[Event]:
        return parse_fills_line(self._parser, line)

    def _fast_batch(self) -> list[Event]:
        """One file, no pacing: read straight from the file, skipping the merge heap."""
        reader = self._readers[0]
        out: list[Event] = []
        if self._heap:  # the record buffered at start-up
            _, _, recv_ns, frame = heapq.heappop(self._heap)
            self._held[0] = None
            skip = self._stats.skips.skip
            try:
                if type(frame) is FillsBlock:
                    out.extend(self._fills(frame))
                else:
                    out.extend(self._parser.parse(frame, recv_ns))
            except PartialFrameError as ex:
                out.extend(ex.events)
                for err in ex.errors:
                    skip(err.reason, f"{reader.path}:{reader.lineno}", err.detail)
            except FrameError as ex:
                skip(ex.reason, f"{reader.path}:{reader.lineno}", ex.detail)
        out.extend(
            reader.read_batch(self._batch_size, self._parser.parse_line, self._parse_fills_line)
        )
        if reader.done and not out:
            self._stats.finished = True
            raise StopIteration
        return out

    @override
    def next_awake(self) -> datetime | None:
        return self._awake

    @override
    def snapshot(self) -> dict[str, int]:
        return resume_offsets(self._readers, self._held)

    @override
    def close(self) -> None:
        for r in self._readers:
            r.close()


class NdjsonSource(FixedPartitionedSource[Event, dict[str, int]]):
    """Replays capture files as typed events (one partition: the merged replay).

    Args:
        paths: capture files, replayed together, merged by receive time (else exchange time).
        stats: counters to fill (frames by channel, skipped lines by reason, errors).
        speed: 0 = as fast as possible; 1 = real time by event timestamps; 10 = ten times faster.
        stop: when set, the source ends at its next poll (clean EOF: windows flush).
        batch_size: frames per batch (the main throughput knob for Bytewax).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        stats: ReplayStats | None = None,
        *,
        speed: float = 0.0,
        stop: threading.Event | None = None,
        batch_size: int = 1000,
    ) -> None:
        if not paths:
            msg = "no capture files given"
            raise ValueError(msg)
        self.paths = [Path(p) for p in paths]
        for p in self.paths:
            if not p.is_file():
                msg = f"capture file `{p}` does not exist"
                raise FileNotFoundError(msg)
        check_replay_options(speed, batch_size)
        self.stats = stats if stats is not None else ReplayStats()
        self.stats.files = [str(p) for p in self.paths]
        self.speed = speed
        self.stop = stop
        self.batch_size = batch_size

    @override
    def list_parts(self) -> list[str]:
        return ["replay"]

    @override
    def build_part(
        self, step_id: str, for_part: str, resume_state: dict[str, int] | None
    ) -> _ReplayPartition:
        return _ReplayPartition(
            self.paths, resume_state, self.stats, self.batch_size, self.speed, self.stop
        )


def read_events(paths: Sequence[str | Path], stats: ReplayStats | None = None) -> list[Event]:
    """Read every event of some captures without Bytewax (for tools, tests and evaluation)."""
    stats = stats if stats is not None else ReplayStats()
    return drain(NdjsonSource(paths, stats).build_part("read", "replay", None))


def drain(part: StatefulSourcePartition[Event, Any]) -> list[Event]:
    """Every event a replay partition gives, read to its end (and closed) without Bytewax."""
    out: list[Event] = []
    try:
        while True:
            out.extend(part.next_batch())
    except StopIteration:
        pass
    finally:
        part.close()
    return out


__all__ = [
    "NdjsonSource",
    "Pace",
    "ReplayStats",
    "check_replay_options",
    "drain",
    "open_capture",
    "read_events",
    "resume_offsets",
    "sort_key",
]
