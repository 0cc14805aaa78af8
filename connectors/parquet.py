"""Envelopes as Parquet history: typed columns, hive-partitioned, written atomically.

Every envelope is flattened to the columns of `connectors.fields` (nested keys joined with ``_``;
lists of strings stay ``list<string>``; every column nullable) and buffered per partition::

    DIR/date=YYYY-MM-DD/coin=<percent-encoded coin>/part-<run>-<worker>-<n>.parquet

(the UTC date of ``timestamp_ms``; ``date`` and ``coin`` live in the path only). A partition is
written when it holds ``flush_rows`` rows or its oldest row is ``flush_s`` seconds old, to a
hidden temporary file in the same directory that is renamed over the final name (`os.replace`),
so a reader (pyarrow, pandas, DuckDB) never sees a partial file.

A failed write (disk full, permissions, a path in the way) is counted and logged; the rows stay in
memory and are written on a later flush. Past ``max_buffered_rows`` new rows are dropped and
counted, and rows still unwritten at `ParquetWriter.close` are counted as dropped: the flow never
fails for its history, and nothing is lost without a count and a log line.

One module past ~400 lines: the row mapping (`flatten`, `unflatten`, `dataset`), the writer and
its Bytewax sink share the file columns and the buffer's layout; apart they would only import
each other's internals.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from typing_extensions import override

from connectors.fields import (
    BOOL,
    COLUMNS,
    ENVELOPE_FIELDS,
    FLOAT,
    INT,
    NULLABLE_BLOCKS,
    SEP,
    SPARSE_MAPS,
    STRING,
    STRINGS,
    FieldTree,
)

log = logging.getLogger(__name__)

Envelope = dict[str, Any]

DEFAULT_FLUSH_ROWS: Final = 10_000
DEFAULT_FLUSH_S: Final = 60.0
DEFAULT_MAX_BUFFERED_ROWS: Final = 50_000
"""About 4 KB a buffered row: ~200 MB at most, ~4.6 min of 180 coins' 1 s bars."""
LOG_EVERY_S: Final = 60.0
"""Repeated failures and drops are logged at most this often (all are counted)."""
PARTITIONS: Final = ("date", "coin")
COMPRESSION: Final = "zstd"

_ARROW_TYPES: Final = {
    STRING: pa.string(),
    INT: pa.int64(),
    FLOAT: pa.float64(),
    BOOL: pa.bool_(),
    STRINGS: pa.list_(pa.string()),
}
FILE_COLUMNS: Final[tuple[str, ...]] = tuple(c for c in COLUMNS if c not in PARTITIONS)
FILE_SCHEMA: Final = pa.schema([pa.field(c, _ARROW_TYPES[COLUMNS[c]]) for c in FILE_COLUMNS])
"""The columns inside each file: every envelope column but the partition ones (all nullable)."""
DATASET_SCHEMA: Final = FILE_SCHEMA.append(pa.field("date", pa.string())).append(
    pa.field("coin", pa.string())
)
"""What a reader sees: the file columns plus ``date`` and ``coin`` from the path."""

_RUN_ID: Final = re.compile(r"[A-Za-z0-9_]{1,64}")
_DAY_MS: Final = 86_400_000


class FieldError(ValueError):
    """An envelope value whose type is not its column's (the row cannot be written)."""


def new_run_id() -> str:
    """A new run id: UTC start time to the millisecond plus 24 random bits, time-sortable
    (``20260101T000000123Z5f3a9c``)."""
    now = datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z{secrets.token_hex(3)}"


_PY_TYPES: Final[dict[str, tuple[type, ...]]] = {
    STRING: (str,),
    INT: (int,),
    FLOAT: (float, int),  # an int is exact in float64 (|v| < 2**53)
    BOOL: (bool,),
    STRINGS: (list,),  # and every item a str
}


class _Node:
    """A block of `ENVELOPE_FIELDS`, compiled: key → (column or block prefix, kind, sub-block)."""

    __slots__ = ("fields", "prefix")

    def __init__(self, tree: FieldTree, prefix: str) -> None:
        self.prefix = prefix
        self.fields: dict[str, tuple[str, str, _Node | None]] = {}
        for key, sub in tree.items():
            name = prefix + key
            if isinstance(sub, dict):
                self.fields[key] = (name, "", _Node(sub, name + SEP))
            else:
                self.fields[key] = (name, sub, None)


_ROOT: Final = _Node(ENVELOPE_FIELDS, "")


def flatten(env: Mapping[str, Any], unknown: list[str] | None = None) -> dict[str, Any]:
    """The envelope as column name → value (`connectors.fields`; null cells left out).

    Args:
        env: the envelope (as `operators.envelope.build_envelope` makes it, or parsed JSON).
        unknown: collects the columns of keys `connectors.fields` does not declare (they are
            left out); None: such a key raises.

    Raises:
        FieldError: a value of the wrong type, or an unknown key when ``unknown`` is None.
    """
    out: dict[str, Any] = {}
    _flatten(env, _ROOT, out, unknown)
    return out


def _flatten(
    obj: Mapping[str, Any], node: _Node, out: dict[str, Any], unknown: list[str] | None
) -> None:
    fields = node.fields
    for key, value in obj.items():
        found = fields.get(key)
        if found is None:
            name = node.prefix + key
            if unknown is None:
                msg = f"{name}: not a known envelope field (connectors/fields.py)"
                raise FieldError(msg)
            unknown.append(name)
            continue
        if value is None:
            continue  # a null value, or a block null as a whole: null cells
        name, kind, sub = found
        if sub is not None:
            if not isinstance(value, Mapping):
                msg = f"{name}: a {type(value).__name__}, not a block"
                raise FieldError(msg)
            _flatten(value, sub, out, unknown)
        elif type(value) in _PY_TYPES[kind] and (
            kind is not STRINGS or all(type(x) is str for x in value)
        ):
            out[name] = value
        else:
            msg = f"{name} = {value!r:.80}: a {type(value).__name__}, not {kind}"
            raise FieldError(msg)


def unflatten(row: Mapping[str, Any]) -> Envelope:
    """A flattened row (e.g. read back from Parquet, with ``coin`` from the path) as the envelope.

    Blocks that are null as a whole come back null when all their cells are; sparse maps keep
    only their non-null keys (sorted, as the envelope has them).
    """
    return _unflatten(row, ENVELOPE_FIELDS, "")


def _unflatten(row: Mapping[str, Any], tree: FieldTree, prefix: str) -> Envelope:
    out: Envelope = {}
    for key, sub in tree.items():
        name = prefix + key
        if not isinstance(sub, dict):
            out[key] = row.get(name)
            continue
        block: Envelope | None = _unflatten(row, sub, name + SEP)
        if name in SPARSE_MAPS:
            block = {k: v for k, v in sorted((block or {}).items()) if v is not None}
        elif name in NULLABLE_BLOCKS and _all_null(block):
            block = None
        out[key] = block
    return out


def _all_null(block: Any) -> bool:
    if isinstance(block, dict):
        return all(_all_null(v) for v in block.values())
    return block is None


def dataset(root: str | Path) -> ds.Dataset:
    """The Parquet history under ``root`` as a pyarrow dataset: every column typed as written,
    ``date`` and ``coin`` (strings, percent-decoded) from the hive partitioning."""
    part = ds.partitioning(pa.schema([DATASET_SCHEMA.field(p) for p in PARTITIONS]), flavor="hive")
    return ds.dataset(str(root), format="parquet", partitioning=part, schema=DATASET_SCHEMA)


def partition_dir(root: Path, timestamp_ms: int, coin: str) -> Path:
    """The directory of an envelope's partition (UTC date of ``timestamp_ms``, quoted coin)."""
    return root / f"date={_date(timestamp_ms // _DAY_MS)}" / f"coin={quote(coin, safe='')}"


_DATES: dict[int, str] = {}


def _date(day: int) -> str:
    date = _DATES.get(day)
    if date is None:
        date = _DATES[day] = datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")
    return date


class _Partition:
    """One open partition's buffered rows, column by column (in `FILE_COLUMNS` order)."""

    __slots__ = ("cols", "directory", "retry_at", "rows", "since")

    def __init__(self, directory: Path, since: float) -> None:
        self.directory = directory
        self.cols: list[list[Any]] = [[] for _ in FILE_COLUMNS]
        self.rows = 0
        self.since = since
        self.retry_at = -math.inf

    def take(self) -> tuple[list[list[Any]], int]:
        cols, n = self.cols, self.rows
        self.cols = [[] for _ in FILE_COLUMNS]
        self.rows = 0
        return cols, n

    def put_back(self, cols: list[list[Any]], n: int, since: float) -> None:
        """Rows that could not be written go back before any that arrived meanwhile."""
        self.cols = [old + new for old, new in zip(cols, self.cols, strict=True)]
        self.rows += n
        self.since = since


class ParquetWriter:
    """Writes envelopes as hive-partitioned Parquet under ``root`` (see the module doc).

    Thread-safe: `write` from the flow, `flush_due` from a timer, `flush`/`close` at the end.
    File writes run outside the buffer lock, one at a time.

    Args:
        root: the directory of the history (created when missing).
        run_id: names this run's files (``[A-Za-z0-9_]``, e.g. `new_run_id`).
        worker: names this writer's files (the Bytewax worker index).
        flush_rows: a partition is written once it holds this many rows (also the most rows in
            one file).
        flush_s: ... or once its oldest row is this many seconds old (``inf``: only by rows and
            at `flush`/`close`, as a replay does).
        max_buffered_rows: rows kept in memory in all (unwritten after a failure included);
            past it new rows are dropped and counted.
        retry_s: after a failed write a partition is tried again no sooner than this (an
            explicit `flush` or `close` tries at once).
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        root: str | Path,
        run_id: str,
        worker: int = 0,
        *,
        flush_rows: int = DEFAULT_FLUSH_ROWS,
        flush_s: float = DEFAULT_FLUSH_S,
        max_buffered_rows: int = DEFAULT_MAX_BUFFERED_ROWS,
        retry_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not _RUN_ID.fullmatch(run_id):
            msg = f"run id {run_id!r}: must be 1-64 of A-Z, a-z, 0-9 and _"
            raise ValueError(msg)
        if flush_rows < 1 or max_buffered_rows < 1 or not flush_s > 0:
            msg = "flush_rows, flush_s and max_buffered_rows must be > 0"
            raise ValueError(msg)
        self.root = Path(root)
        self.run_id = run_id
        self.worker = worker
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self.max_buffered_rows = max_buffered_rows
        self.retry_s = min(flush_s, 10.0) if retry_s is None else retry_s
        self._clock = clock
        self._lock = threading.Lock()  # the buffers and counters
        self._io = threading.Lock()  # one file write at a time, in order
        self._parts: dict[tuple[str, str], _Partition] = {}
        self._dirs: dict[tuple[int, str], tuple[tuple[str, str], Path]] = {}
        self._next_due = clock() + min(flush_s, 1.0)
        self._seq = 0
        self._closed = False
        self._failing = False
        self._logged: dict[str, float] = {}
        self._unknown_seen: set[str] = set()
        self.rows_written = 0
        self.files_written = 0
        self.write_failures = 0
        self.rows_dropped = 0
        self.rows_rejected = 0
        self.unknown_fields = 0
        self.rows_buffered = 0
        self.last_error: str | None = None

    def stats(self) -> dict[str, Any]:
        """The counters: rows and files written, failed writes, rows dropped (over the bound or
        unwritten at close), rows rejected (a value of the wrong type), unknown fields seen
        (left out), rows buffered now, and the last write error."""
        with self._lock:
            return {
                "rows_written": self.rows_written,
                "files_written": self.files_written,
                "write_failures": self.write_failures,
                "rows_dropped": self.rows_dropped,
                "rows_rejected": self.rows_rejected,
                "unknown_fields": self.unknown_fields,
                "rows_buffered": self.rows_buffered,
                "last_error": self.last_error,
            }

    def write(self, env: Mapping[str, Any]) -> bool:
        """Buffer one envelope (and write its partition when it is due); False: not kept
        (rejected or dropped, counted and logged)."""
        unknown: list[str] = []
        full: list[tuple[str, str]] = []
        try:
            flat = flatten(env, unknown)
            ts, coin = flat["timestamp_ms"], flat["coin"]
        except (FieldError, KeyError) as ex:
            with self._lock:
                self.rows_rejected += 1
            self._log_limited("rejected", "Parquet: an envelope was not written (%s)", ex)
            return False
        now = self._clock()
        with self._lock:
            if self._closed:
                msg = "write to a closed ParquetWriter"
                raise ValueError(msg)
            if unknown:
                self._unknown(unknown)
            if self.rows_buffered >= self.max_buffered_rows:
                self.rows_dropped += 1
                dropped = self.rows_dropped
            else:
                dropped = 0
                key, part = self._partition(ts // _DAY_MS, coin, now)
                if part.rows == 0:
                    part.since = now
                for name, col in zip(FILE_COLUMNS, part.cols, strict=True):
                    col.append(flat.get(name))
                part.rows += 1
                self.rows_buffered += 1
                if part.rows >= self.flush_rows and now >= part.retry_at:
                    full.append(key)
            due = now >= self._next_due
        if dropped:
            self._log_limited(
                "dropped",
                "Parquet: %d rows in memory (the bound); row dropped (%d dropped in all; last "
                "write error: %s)",
                self.max_buffered_rows,
                dropped,
                self.last_error,
            )
            return False
        if full:
            self._flush(full, now, wait=False)
        if due:
            self.flush_due()
        return True

    def _unknown(self, names: list[str]) -> None:
        self.unknown_fields += len(names)
        for name in sorted(set(names) - self._unknown_seen):
            self._unknown_seen.add(name)
            log.warning("Parquet: %s is not a known column; left out of the files", name)

    def _partition(self, day: int, coin: str, now: float) -> tuple[tuple[str, str], _Partition]:
        found = self._dirs.get((day, coin))
        if found is None:
            directory = partition_dir(self.root, day * _DAY_MS, coin)
            if len(self._dirs) > 4096:
                self._dirs.clear()
            found = self._dirs[(day, coin)] = ((_date(day), coin), directory)
        key, directory = found
        part = self._parts.get(key)
        if part is None:
            part = self._parts[key] = _Partition(directory, now)
        return key, part

    def flush_due(self) -> None:
        """Write every partition that is full or old enough (and not waiting to retry)."""
        now = self._clock()
        with self._lock:
            self._next_due = now + min(self.flush_s, 1.0)
            keys = [
                k
                for k, p in self._parts.items()
                if now >= p.retry_at
                and (p.rows >= self.flush_rows or now - p.since >= self.flush_s)
            ]
        if keys:
            self._flush(keys, now, wait=False)

    def flush(self) -> bool:
        """Write every buffered row now (failed partitions included); True: none is left."""
        with self._lock:
            keys = list(self._parts)
        self._flush(keys, self._clock(), wait=True)
        with self._lock:
            return self.rows_buffered == 0

    def close(self) -> None:
        """Flush; rows still unwritten are counted as dropped (and logged). Idempotent."""
        if self._closed:
            return
        self.flush()
        with self._lock:
            self._closed = True
            lost = self.rows_buffered
            self.rows_dropped += lost
            self.rows_buffered = 0
            self._parts.clear()
        if lost:
            log.error(
                "Parquet: %d rows could not be written to %s and are lost (%s)",
                lost,
                self.root,
                self.last_error,
            )

    def _flush(self, keys: list[tuple[str, str]], now: float, *, wait: bool) -> None:
        if not self._io.acquire(blocking=wait):
            return  # another thread is writing; it or the next check will get these
        try:
            for key in keys:
                self._flush_one(key, now)
        finally:
            self._io.release()

    def _flush_one(self, key: tuple[str, str], now: float) -> None:
        with self._lock:
            part = self._parts.get(key)
            if part is None or part.rows == 0:
                return
            since = part.since
            cols, n = part.take()
        written, error = self._write_chunks(part.directory, cols, n)
        with self._lock:
            self.rows_written += written
            self.rows_buffered -= written
            recovered = self._failing and error is None
            if error is None:
                if part.rows == 0:
                    del self._parts[key]
            else:
                self.write_failures += 1
                self.last_error = error
                part.put_back([c[written:] for c in cols] if written else cols, n - written, since)
                part.retry_at = now + self.retry_s
            self._failing = error is not None
            kept, failures = self.rows_buffered, self.write_failures
        if error is not None:
            self._log_limited(
                "failed",
                "Parquet: writing %s failed (%s); %d rows kept in memory and retried "
                "(%d failed writes so far)",
                part.directory,
                error,
                kept,
                failures,
            )
        elif recovered:
            log.info("Parquet: writing to %s works again", self.root)

    def _write_chunks(
        self, directory: Path, cols: list[list[Any]], n: int
    ) -> tuple[int, str | None]:
        """Write ``n`` rows as files of at most ``flush_rows``; (rows written, error or None)."""
        done = 0
        while done < n:
            end = min(n, done + self.flush_rows)
            chunk = [c[done:end] for c in cols] if (done, end) != (0, n) else cols
            name = f"part-{self.run_id}-{self.worker}-{self._seq:06d}.parquet"
            try:
                table = pa.Table.from_arrays(
                    [pa.array(c, type=f.type) for c, f in zip(chunk, FILE_SCHEMA, strict=True)],
                    schema=FILE_SCHEMA,
                )
                directory.mkdir(parents=True, exist_ok=True)
                write_atomically(table, directory / name)
            except Exception as ex:  # disk full, permissions, a path in the way: kept, retried
                return done, f"{type(ex).__name__}: {ex}"
            self._seq += 1
            with self._lock:
                self.files_written += 1
            done = end
        return done, None

    def _log_limited(self, what: str, fmt: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._logged.get(what)
        if last is None or now - last >= LOG_EVERY_S:
            self._logged[what] = now
            log.warning(fmt, *args)


def write_atomically(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` through a hidden temporary file in the same directory, synced
    and renamed over ``path``: a reader sees the whole file or none. The temporary file is
    removed on failure."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as fh:
            pq.write_table(table, fh, compression=COMPRESSION)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise


class _ParquetPartition(StatelessSinkPartition[tuple[str, Envelope]]):
    """One worker's writer, plus a timer thread so a quiet partition is still written on time."""

    def __init__(self, writer: ParquetWriter) -> None:
        self.writer = writer
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if math.isfinite(writer.flush_s):
            self._ticker = threading.Thread(
                target=self._tick,
                args=(max(0.05, min(writer.flush_s / 4, 5.0)),),
                name=f"parquet-flush-{writer.worker}",
                daemon=True,
            )
            self._ticker.start()

    def _tick(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self.writer.flush_due()
            except Exception:  # never let the timer die silently
                log.exception("Parquet: timed flush failed")

    @override
    def write_batch(self, items: list[tuple[str, Envelope]]) -> None:
        for _, env in items:
            self.writer.write(env)

    @override
    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self.writer.close()


class ParquetSink(DynamicSink[tuple[str, Envelope]]):
    """Writes ``(coin, envelope)`` items (as `connectors.sinks.StoreSink` takes them) to the
    Parquet history under ``root``; each worker has its own `ParquetWriter`, its index in the
    file names. Keyword arguments go to the writers."""

    def __init__(self, root: str | Path, run_id: str, **writer_args: Any) -> None:
        self.root = Path(root)
        self.run_id = run_id
        self.writer_args = writer_args
        self.writers: list[ParquetWriter] = []
        ParquetWriter(root, run_id, **writer_args)  # bad arguments fail here, not in the flow

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ParquetPartition:
        writer = ParquetWriter(self.root, self.run_id, worker_index, **self.writer_args)
        self.writers.append(writer)
        return _ParquetPartition(writer)

    def stats(self) -> dict[str, Any]:
        """The writers' counters, summed (``last_error``: any writer's latest)."""
        total: dict[str, Any] = {}
        for w in self.writers:
            for k, v in w.stats().items():
                if k == "last_error":
                    total[k] = v or total.get(k)
                else:
                    total[k] = total.get(k, 0) + v
        return total
