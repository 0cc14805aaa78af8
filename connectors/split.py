"""The split pass of a partitioned replay: multi-coin captures cut once into one stream per coin.

A partitioned replay (`connectors.partitions`) gives each coin its own partition. A capture that
holds several coins (a recording, the shipped sample, ``node_fills_by_block``) is read once, here,
and its lines are written to per-coin *spool* streams (LZ4 files in a spool directory), which the
coin partitions then read beside that coin's own archive files. The pass reads the multi-coin
captures merged by receive time exactly as the one-partition replay does, and routes every line:

- a frame of one coin (``trades``, ``l2Book``, ``bbo``, ``activeAssetCtx``, ``candle``) to its
  coin's stream, unchanged (a ``trades`` frame of several coins is cut into one per coin);
- ``allMids`` to every coin that would take a mid from it (the coins a recording activated, else
  the coin filter, else the coins known so far), each copy holding that coin's mid only;
- a ``node_fills_by_block`` line as one ``trades`` frame per coin (`connectors.archive`);
- gap markers per coin; activation markers (which change every coin's ``allMids`` fan-out) to
  every stream, including streams that start later;
- everything else (control frames, lines that do not decode, coins outside the coin filter) to
  one *other* stream, read by a partition of its own that only counts and reports.

Every record carries its merge key (receive ns), the capture and line it came from (so skips are
reported at ``file:line``), and flags: whether it counts as a line read (each capture line counts
once, wherever its copies went) and whether it is a derived copy whose frame and control counts
are undone after parsing (so the counters add up to the one-partition replay's). Records of a coin
also carry the receive time of the latest data frame of any coin before them (the *clock hint*):
the one-partition parser closes a coin's open candle as soon as any frame received after the
candle's close time arrives, and the hint lets the coin's partition close it at the same point of
its stream. Each coin stream ends with a hint-only record for the frames after its last line.

The spool (`connectors.spool`) is made once per run: the first process to take its lock writes
it, every other process finds it there. Cheap reads of the lines: `connectors.peek`.

One module past ~400 lines: `Splitter` is one pass whose routing, counting and clocks share its
state line by line (the open candles, the source clock, the streams); split up, they would only
pass that state between modules.

One module past ~400 lines on purpose: the routing pass must reproduce, frame by frame, what one
parser over every coin would do, and its rules read best in one place.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from connectors.archive import fills_trades, trades_line
from connectors.errors import FrameError, SkipLog
from connectors.files import _FileReader, sort_key
from connectors.parse import ControlMarker, decode_line, iso_to_ns
from connectors.peek import (
    COIN_CHANNELS,
    DATA_CHANNELS,
    ENVELOPE,
    FRAME_LINE,
    PEEK_ERRORS,
    Candle,
    FrameLine,
    PeekEnvelope,
    envelope_stamp,
    frame_candle,
    frame_times,
    marker_coins,
    peek,
    rewrite,
)
from connectors.replay_stats import ReplayStats
from connectors.spool import (
    BLANK,
    COUNTED,
    DERIVED,
    ERROR,
    OTHER,
    SKIP,
    SPOOL_VERSION,
    Spool,
    Stream,
    append_frame,
    make_once,
    record,
)
from connectors.validate import TimeCheck, ValidationConfig

log = logging.getLogger(__name__)

SPLIT_VERSION: Final = 2
"""Bump when the routing changes (a split made by another version is remade)."""
_FLUSH_BYTES: Final = 128 << 10
_BUFFER_BYTES: Final = 32 << 20
_PENDING_FLUSHES: Final = 64
"""Flushes handed to the writer thread and not yet written, at most (bounds the memory)."""


class _RecordingSkipLog(SkipLog):
    """A skip log that also keeps each skip, to hand it on as a record."""

    def __init__(self) -> None:
        super().__init__(log)
        self.entries: list[tuple[str, str, str]] = []

    def skip(self, reason: str, where: str, detail: str) -> None:
        super().skip(reason, where, detail)
        self.entries.append((reason, where, detail))


@dataclass
class _Line:
    """A capture line as the split pass reads it (decoded once)."""

    key: int | None
    """Its merge key (None: blank or undecodable)."""
    idx: int
    lineno: int
    line: bytes
    env: FrameLine | PeekEnvelope | None = None
    """The archive envelope around a frame, when the line is one."""
    fills: list[tuple[str, list[dict[str, Any]]]] | None = None
    """A fills line: each coin's taker fills as WebSocket trades."""
    stamp: str | None = None
    recv_ns: int | None = None
    error: FrameError | None = None
    """Why a fills line is not a block (the other partition counts the skip)."""


_Item = tuple[int, int, int, bytes, FrameLine | PeekEnvelope | _Line]
"""A line read: ``(merge key, capture index, line number, line, envelope or _Line)``."""


@dataclass
class Splitter:
    """Routes the lines of multi-coin captures into per-coin streams (see the module doc).

    Args:
        files: every capture of the replay (indexes are positions in it).
        indexes: the multi-coin captures to split.
        dest: an empty directory for the streams.
        coins: the coin filter (None: every coin).
        known: coins that have a partition anyway (their own archive files).
        config: the validation limits (JSON depth; the time rules of the source clock).
    """

    files: Sequence[str]
    indexes: Sequence[int]
    dest: Path
    coins: frozenset[str] | None
    known: set[str]
    config: ValidationConfig = field(default_factory=ValidationConfig)
    streams: dict[str, Stream] = field(default_factory=dict)
    active: set[str] | None = None
    clock_ms: int = -1
    """What closes candles: the receive time (else the source clock) of the latest data frame."""
    latest_ms: int | None = None
    """The source clock: the newest exchange time the time rules accept, over every coin."""
    max_depth: int = 64
    _broadcast: list[bytes] = field(default_factory=list)
    _open: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    """Each coin's open candle ``(t, T)`` by (coin, interval), as the parser holds it."""
    _closed: dict[tuple[str, str], int] = field(default_factory=dict)
    """The open time of each coin's last closed candle, by (coin, interval)."""
    _due: list[tuple[int, str, str, int]] = field(default_factory=list)
    """A heap of ``(T, coin, interval, t)`` of the open candles."""
    _buffered: int = 0
    _last_key: int = 0
    _pending: deque[Future[None]] = field(default_factory=deque)

    def run(self) -> dict[str, str]:
        """Split every capture; returns the file name of each stream (by coin; `OTHER`).

        A writer thread compresses and appends the flushed blocks (LZ4 and file writes let go
        of the GIL), so they overlap the routing; one thread keeps every file's blocks in order.
        """
        self.known = set(self.known)
        self.max_depth = self.config.max_json_depth
        self._times = TimeCheck(self.config)
        with ThreadPoolExecutor(1, thread_name_prefix="hlsl-split-writer") as writer:
            self._writer = writer
            try:
                self._split()
            finally:
                while self._pending:  # every flush written (or its error raised) before return
                    self._pending.popleft().result()
        return {coin: s.path.name for coin, s in self.streams.items()}

    def _split(self) -> None:
        if len(self.indexes) == 1:
            items: Iterator[_Item] = self._lines(self.indexes[0])
        else:
            items = heapq.merge(*(self._lines(i) for i in self.indexes), key=_merge_order)
        route = self._route
        for item in items:
            route(item)
        end = record(self._last_key, len(self.files), 0, self.clock_ms, self._latest(), 0, b"")
        for coin, stream in self.streams.items():
            if coin != OTHER:
                stream.buf.append(end)  # the frames after a coin's last line close candles too
        for stream in self.streams.values():
            self._flush_stream(stream)

    # -- reading ----------------------------------------------------------------------------

    def _lines(self, idx: int) -> Iterator[_Item]:
        """A capture's lines in file order, as ``(merge key, index, line number, line, what)``:
        ``what`` is the peeked envelope of a frame line (the common case), else a `_Line`."""
        stats = ReplayStats(skips=_RecordingSkipLog())
        skips: list[tuple[str, str, str]] = stats.skips.entries  # type: ignore[attr-defined]
        errors = stats.errors
        reader = _FileReader(Path(self.files[idx]), 0, stats)
        last = 0
        lineno = 0
        try:
            while True:
                # A chunk at a time: reading only meets a torn tail or a corrupt file when it
                # reads on after the last line it gave, so the lines go by without a call each.
                chunk = reader.next_lines()
                if skips or errors:
                    # What reading met (a torn tail, a corrupt file): the other partition reports.
                    for entry in skips:
                        self._other_record(last, idx, reader.lineno, SKIP, orjson.dumps(entry))
                    skips.clear()
                    for msg in errors:
                        self._other_record(last, idx, reader.lineno, ERROR, msg.encode())
                    errors.clear()
                if chunk is None:
                    return
                fills = reader.kind == "fills"
                for raw in chunk:
                    lineno += 1
                    if raw[:8] == b'{"time":' and not fills:
                        # The common line decodes once (`FRAME_LINE`); a frame of another channel
                        # or shape as an envelope around its undecoded data (`ENVELOPE`).
                        env = _envelope(raw)
                        if env is not None:
                            try:
                                last = iso_to_ns(env.time)
                            except PEEK_ERRORS:
                                pass
                            else:
                                yield last, idx, lineno, raw, env
                                continue
                    rec = self._read(raw, idx, lineno, fills, last)
                    if rec.key is not None:
                        last = rec.key
                    yield last, idx, lineno, raw, rec
        finally:
            reader.close()

    def _read(self, line: bytes, idx: int, lineno: int, fills: bool, last: int) -> _Line:
        """Decode what routing needs; the key as the one-partition replay computes it."""
        rec = _Line(None, idx, lineno, line)
        if not line.strip():
            return rec
        try:
            if fills:
                try:
                    rec.stamp, rec.recv_ns, rec.fills = fills_trades(line, self.max_depth)
                except FrameError as ex:
                    rec.error = ex
                    return rec
                rec.key = rec.recv_ns if rec.recv_ns is not None else last
                return rec
            recv_ns, frame = decode_line(line, self.max_depth)
        except FrameError:
            return rec
        rec.recv_ns = recv_ns
        rec.key = sort_key(recv_ns, frame, last)
        return rec

    # -- writing ----------------------------------------------------------------------------

    def _stream(self, coin: str) -> Stream:
        stream = self.streams.get(coin)
        if stream is None:
            stream = self.streams[coin] = Stream(self.dest / f"s{len(self.streams):05d}.lz4")
            if coin != OTHER:
                stream.buf.extend(self._broadcast)
                self.known.add(coin)
        return stream

    def _write(self, coin: str, data: bytes) -> None:
        stream = self._stream(coin)
        stream.buf.append(data)
        stream.size += len(data)
        self._buffered += len(data)
        if stream.size >= _FLUSH_BYTES or self._buffered >= _BUFFER_BYTES:
            self._flush(stream)

    def _flush(self, stream: Stream) -> None:
        """Write a full stream out; every stream, when they hold too much together."""
        if self._buffered >= _BUFFER_BYTES:
            for s in self.streams.values():
                self._flush_stream(s)
            self._buffered = 0
        else:
            self._buffered -= stream.size
            self._flush_stream(stream)

    def _flush_stream(self, stream: Stream) -> None:
        """Hand a stream's buffered records to the writer thread (`run`)."""
        if not stream.buf:
            return
        pending = self._pending
        if len(pending) >= _PENDING_FLUSHES:
            pending.popleft().result()
        pending.append(self._writer.submit(append_frame, stream.path, stream.take()))

    def _other_record(self, key: int, idx: int, lineno: int, flags: int, payload: bytes) -> None:
        self._write(OTHER, record(key, idx, lineno, -1, -1, flags, payload))

    def _latest(self) -> int:
        return -1 if self.latest_ms is None else self.latest_ms

    def _to_coin(
        self, rec: _Line, key: int, coin: str, payload: bytes, flags: int, *, any_coin: bool = False
    ) -> None:
        """A record for ``coin``'s stream (the other stream's if the filter leaves the coin
        out, unless ``any_coin``)."""
        if not any_coin and self.coins is not None and coin not in self.coins:
            self._other_record(key, rec.idx, rec.lineno, flags, payload)
            return
        clock, latest = self.clock_ms, self._latest()
        self._write(coin, record(key, rec.idx, rec.lineno, clock, latest, flags, payload))

    def _route(self, item: _Item) -> None:
        key, idx, lineno, line, what = item
        if key > self._last_key:
            self._last_key = key
        if not isinstance(what, _Line):
            if isinstance(what, FrameLine):
                coin, times, candle = what.raw.peek()
            else:
                try:
                    coin, times, candle = peek(what.raw.channel, what.raw.data)
                except PEEK_ERRORS:
                    coin, times, candle = None, [], None
            if coin is not None:
                # The common line: one coin's frame in an archive envelope, passed on as it is.
                stream = self.streams.get(coin)
                coins = self.coins
                if stream is not None and (coins is None or coin in coins):
                    latest = self.latest_ms
                    data = b"%d %d %d %d %d %d %s\n" % (
                        key,
                        idx,
                        lineno,
                        self.clock_ms,
                        -1 if latest is None else latest,
                        COUNTED,
                        line,
                    )
                    stream.buf.append(data)
                    size = stream.size = stream.size + len(data)
                    buffered = self._buffered = self._buffered + len(data)
                    if size >= _FLUSH_BYTES or buffered >= _BUFFER_BYTES:
                        self._flush(stream)
                else:
                    self._to_coin(_Line(key, idx, lineno, line), key, coin, line, COUNTED)
                self._tick(key, times, key, idx, lineno, None if candle is None else (coin, candle))
                return
            rec = _Line(key, idx, lineno, line, env=what, recv_ns=key)
        else:
            rec = what
        if rec.key is None:
            # Blank or undecodable: counted (and reported) by the other partition.
            if rec.error is not None:
                where = f"{self.files[rec.idx]}:{rec.lineno}"
                entry = orjson.dumps([rec.error.reason, where, rec.error.detail])
                self._other_record(key, rec.idx, rec.lineno, COUNTED | SKIP, entry)
                return
            flags = COUNTED | (BLANK if not line.strip() else 0)
            self._other_record(key, rec.idx, rec.lineno, flags, b"" if flags & BLANK else line)
            return
        if rec.fills is not None:
            self._route_fills(rec, key, rec.fills)
            return
        env = rec.env
        try:
            recv_ns, frame = decode_line(line, self.max_depth)
        except FrameError:
            self._other_record(key, rec.idx, rec.lineno, COUNTED, line)
            return
        if type(frame) is ControlMarker:
            self._route_marker(rec, key, frame.body)
            return
        channel = frame.get("channel") if type(frame) is dict else None
        routes = self._frame_routes(channel, frame)
        if not routes:
            self._other_record(key, rec.idx, rec.lineno, COUNTED, line)
        else:
            stamp = env.time if env is not None else envelope_stamp(line)
            mids = channel == "allMids"
            for n, (coin, sub) in enumerate(routes):
                payload = line if sub is frame else rewrite(stamp, recv_ns, sub)
                flags = COUNTED if n == 0 else DERIVED
                # allMids fans out to activated coins even outside the coin filter (as the
                # one-partition parser does), so those copies go to the coins' own partitions.
                self._to_coin(rec, key, coin, payload, flags, any_coin=mids)
        if channel in DATA_CHANNELS:
            times = frame_times(channel, frame)
            self._tick(recv_ns, times, key, rec.idx, rec.lineno, frame_candle(channel, frame))

    def _tick(
        self,
        recv_ns: int | None,
        times: list[Any],
        key: int,
        idx: int,
        lineno: int,
        candle: tuple[str, Candle] | None = None,
    ) -> None:
        """After a data frame: move the source clock and the candle clock as the parser does (a
        frame whose times the time rules refuse moves neither), note a candle it holds open, and
        tell each coin whose open candle this frame closes, at this frame's place (``key``,
        ``idx``, ``lineno``). Once a line: kept to comparisons in the common case."""
        recv_ms = None if recv_ns is None else recv_ns // 1_000_000
        latest = self.latest_ms
        if times:
            lo, hi = self._times.window(recv_ms, latest)
            for t in times:
                if type(t) is not int or t < lo or t > hi:
                    return  # `TimeCheck.check` refuses it
                if latest is None or t > latest:
                    latest = t
        if candle is not None and (self.coins is None or candle[0] in self.coins):
            latest = self._candle(candle, recv_ms if recv_ms is not None else latest, latest)
        self.latest_ms = latest
        now = recv_ms if recv_ms is not None else latest
        if now is None:
            return
        if now > self.clock_ms:
            self.clock_ms = now
        due = self._due
        while due and due[0][0] < now:
            close, coin, interval, start = heapq.heappop(due)
            if self._open.get((coin, interval)) == (start, close):
                del self._open[(coin, interval)]
                self._closed[(coin, interval)] = start
                self._write(coin, record(key, idx, lineno, now, self._latest(), 0, b""))

    def _candle(
        self, candle: tuple[str, Candle], now: int | None, latest: int | None
    ) -> int | None:
        """A candle frame as `FrameParser` takes it: a bucket already closed is ignored, a new
        bucket closes the previous one, a bucket whose T has passed closes at once (and its T
        becomes the source clock), else it is held open. Returns the source clock."""
        coin, (interval, start, close) = candle
        key = (coin, interval)
        closed = self._closed.get(key)
        if closed is not None and start <= closed:
            return latest
        held = self._open.get(key)
        if held is not None and held[0] < start:
            del self._open[key]
            self._closed[key] = held[0]
        if now is not None and close < now:
            self._open.pop(key, None)
            self._closed[key] = start
            return close if latest is None or close > latest else latest
        self._open[key] = (start, close)
        heapq.heappush(self._due, (close, coin, interval, start))
        return latest

    def _frame_routes(self, channel: Any, frame: Any) -> list[tuple[str, Any]]:
        """``[(coin, frame for it)]`` of a decoded frame; ``[]``: the other stream's."""
        data = frame.get("data") if type(frame) is dict else None
        if channel in COIN_CHANNELS and type(data) is dict:
            coin = data.get("coin")
            return [(coin, frame)] if type(coin) is str and coin else []
        if channel == "candle":
            items = data if type(data) is list else [data]
            coins = {c.get("s") if type(c) is dict else None for c in items}
            coin = coins.pop() if len(coins) == 1 else None
            return [(coin, frame)] if type(coin) is str and coin else []
        if channel == "trades" and type(data) is list:
            by_coin: dict[str, list[Any]] = {}
            for tr in data:
                coin = tr.get("coin") if type(tr) is dict else None
                if type(coin) is not str or not coin:
                    return []  # the parser refuses the whole frame: once, in the other stream
                by_coin.setdefault(coin, []).append(tr)
            if len(by_coin) == 1:
                return [(next(iter(by_coin)), frame)]
            return [(c, {**frame, "data": rows}) for c, rows in by_coin.items()]
        if channel == "allMids" and type(data) is dict and type(data.get("mids")) is dict:
            mids: dict[str, Any] = data["mids"]
            if self.active is not None:
                wanted: Any = self.active
            elif self.coins is not None:
                wanted = self.coins
            else:
                wanted = self.known
            targets = sorted(c for c in wanted if c in mids)
            return [(c, {**frame, "data": {**data, "mids": {c: mids[c]}}}) for c in targets]
        return []

    def _route_marker(self, rec: _Line, key: int, body: Any) -> None:
        channel = body.get("channel") if type(body) is dict else None
        data = body.get("data") if type(body) is dict else None
        coins = marker_coins(data)
        line = rec.line
        if channel == "hlsl.activate" and coins:
            self.active = (self.active or set()) | set(coins)
            self._other_record(key, rec.idx, rec.lineno, COUNTED, line)
            copy = record(key, rec.idx, rec.lineno, -1, -1, DERIVED, line)
            self._broadcast.append(copy)
            for coin in list(self.streams):
                if coin != OTHER:
                    self._write(coin, copy)
            return
        if channel == "hlsl.gap" and coins and type(data) is dict:
            stamp = envelope_stamp(line)
            for n, coin in enumerate(coins):
                one = {**body, "data": {**data, "coins": [coin]}}
                sub = orjson.dumps({"time": stamp, "ver_num": 1, "hlsl": one})
                self._to_coin(rec, key, coin, sub, COUNTED if n == 0 else DERIVED)
            return
        self._other_record(key, rec.idx, rec.lineno, COUNTED, line)

    def _route_fills(
        self, rec: _Line, key: int, per_coin: list[tuple[str, list[dict[str, Any]]]]
    ) -> None:
        if not per_coin:  # a block without taker fills: a line read, nothing more
            self._other_record(key, rec.idx, rec.lineno, COUNTED, b"")
            return
        for n, (coin, trades) in enumerate(per_coin):
            # Each coin's trades frame is a frame of its own in the one-partition replay too.
            line = trades_line(rec.stamp, trades)
            self._to_coin(rec, key, coin, line, COUNTED if n == 0 else 0)
            times = [tr.get("time") for tr in trades]
            self._tick(rec.recv_ns, times, key, rec.idx, rec.lineno)


def _envelope(line: bytes) -> FrameLine | PeekEnvelope | None:
    """An archive-envelope line of a frame as `FRAME_LINE` reads it, else as `ENVELOPE` does."""
    try:
        return FRAME_LINE.decode(line)
    except PEEK_ERRORS:
        pass
    try:
        return ENVELOPE.decode(line)
    except PEEK_ERRORS:
        return None


def _merge_order(item: _Item) -> tuple[int, int]:
    return item[0], item[1]


# -- once per run -------------------------------------------------------------------------------


def spool_digest(
    files: Sequence[str],
    indexes: Sequence[int],
    coins: frozenset[str] | None,
    known: set[str],
    run_key: str,
    config: ValidationConfig,
) -> str:
    """What a spool depends on: the captures split (path, size, mtime), the coin filter, the coins
    known from archive files, the validation limits, the run (cluster) and the format version."""
    limits = [config.max_json_depth, config.max_clock_skew_ms, config.max_age_ms]
    ident: list[Any] = [SPLIT_VERSION, SPOOL_VERSION, run_key, limits, sorted(known)]
    ident.append(sorted(coins) if coins is not None else None)
    for i in indexes:
        st = Path(files[i]).stat()
        ident.append([i, str(Path(files[i]).resolve()), st.st_size, st.st_mtime_ns])
    return hashlib.sha256(orjson.dumps(ident)).hexdigest()[:20]


def split_once(
    files: Sequence[str],
    indexes: Sequence[int],
    *,
    coins: frozenset[str] | None,
    known: set[str],
    run_key: str,
    root: Path,
    config: ValidationConfig | None = None,
) -> Spool:
    """The split of these captures under ``root``: made by the first caller, found by the rest
    (`connectors.spool.make_once`; hosts that do not share ``root`` split once each)."""
    config = config if config is not None else ValidationConfig()
    digest = spool_digest(files, indexes, coins, known, run_key, config)

    def make(tmp: Path) -> dict[str, str]:
        return Splitter(files, indexes, tmp, coins, set(known), config).run()

    spool, seconds = make_once(root / f"hlsl-split-{digest}", digest, make)
    if seconds is None:
        log.info("replay: using the split of %d capture(s) in %s", len(indexes), spool.path)
    else:
        log.info(
            "replay: split %d capture(s) into %d coin stream(s) in %.1f s (%s)",
            len(indexes),
            len(spool.manifest.coins()),
            seconds,
            spool.path,
        )
    return spool


__all__ = ["SPLIT_VERSION", "Splitter", "split_once", "spool_digest"]
