"""A partitioned replay: one partition per coin, so N workers read in parallel and every coin's
events still arrive in order.

`plan_replay` decides which partition reads what:

- a capture in Hyperliquid's archive layout (``…/YYYYMMDD/H/l2Book/COIN.lz4``) holds one coin:
  it belongs to that coin's partition, read by nobody else;
- the other captures (recordings, the sample, ``node_fills_by_block``) hold several coins: they
  are split once (`connectors.split`) into one stream per coin (`connectors.spool`), which joins
  that coin's partition, plus one stream of everything no coin takes (control frames, bad lines),
  read by a partition of its own (`OTHER_PART`) that only counts and reports.

Each coin partition (`PartitionedReplaySource`) merges its inputs by receive time (ties by the
captures' order on the command line), exactly as the one-partition replay merges every file, and
parses them with a parser of its own: the price guard, trade de-duplication, candle closing and
the source clock (``latest_ms``) are per coin, as they must be when coins live on different
workers. A coin's events therefore reach the bar step in the order the one-partition replay gives
them (Bytewax keeps the order of one partition's items per key); the envelopes of a cluster replay,
sorted by (timestamp, coin), are the one-partition replay's. Where that rests on more than
routing: see DESIGN.md ("Replay partitions").

Each partition keeps its own counters and adds them to the process's `ReplayStats` after every
batch; the stats of a process describe the partitions it read.

One module past ~400 lines on purpose: the plan, the coin partition's merge and its parser's
share of the other coins' clocks are one mechanism, the per-coin order argument of DESIGN.md §8.1.
"""

from __future__ import annotations

import heapq
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from typing_extensions import override

from connectors.archive import PartialFrameError, archive_coin, fills_lines, parse_fills_line
from connectors.errors import FrameError
from connectors.events import Event
from connectors.files import Pace, _FileReader, check_replay_options, drain, resume_offsets
from connectors.parse import FrameParser
from connectors.peek import line_key
from connectors.replay_stats import ReplayStats
from connectors.routing import balanced_routes, owned
from connectors.split import split_once
from connectors.spool import (
    BLANK,
    COUNTED,
    DERIVED,
    ERROR,
    OTHER,
    SKIP,
    Record,
    Spool,
    parse_record,
)
from connectors.validate import ValidationConfig

COIN_PREFIX: Final = "coin:"
"""Partition keys of coins: ``coin:BTC``."""
OTHER_PART: Final = "other"
"""The partition of the lines no coin takes (control frames, bad lines, filtered-out coins)."""
FOREIGN_COIN: Final = "foreign_coin"
"""The skip reason of an event of another coin in a coin's partition (an archive file that holds
more than the coin its path names)."""


@dataclass(frozen=True)
class PartSpec:
    """One partition: its key, its coin (None: the other partition) and its inputs."""

    key: str
    coin: str | None
    inputs: tuple[tuple[str, bool], ...]
    """``(path, spooled)``: a spool stream of `connectors.split`, or a capture read as it is."""


@dataclass
class ReplayPlan:
    """Which partition reads what (`plan_replay`), the same on every process of a cluster."""

    files: list[str]
    parts: list[PartSpec]
    spool: Spool | None = None
    """The split of the multi-coin captures (None: there were none)."""
    routes: dict[str, str] = field(default_factory=dict)
    """The route key of each coin that the balance moves off its hash worker
    (`connectors.routing.balanced_routes`); the flow keys that coin's state by it."""

    @property
    def coins(self) -> frozenset[str]:
        """The coins with a partition."""
        return frozenset(p.coin for p in self.parts if p.coin is not None)

    def part(self, key: str) -> PartSpec:
        """The partition of that key."""
        for p in self.parts:
            if p.key == key:
                return p
        msg = f"no replay partition {key!r}"
        raise KeyError(msg)

    def release(self) -> None:
        """This process is done with the split (the run is over): the last one removes it."""
        if self.spool is not None:
            self.spool.release()


def plan_replay(
    files: Sequence[str],
    *,
    coins: frozenset[str] | None,
    run_key: str,
    spool_root: Path,
    config: ValidationConfig | None = None,
    workers: int = 1,
) -> ReplayPlan:
    """Plan a partitioned replay of ``files`` (split the multi-coin ones, once per ``run_key``).

    Args:
        files: the captures, in command-line order (ties of receive time follow it).
        coins: the coin filter (None: every coin). Archive files of other coins are not read.
        run_key: what the processes of one run share (so they share one split, and concurrent
            runs never do).
        spool_root: where the split goes (`connectors.split.split_once`).
        config: the validation limits (what the split pass needs of them).
        workers: the workers of the whole run; with more than one, the coins are balanced over
            them by the size of their inputs (`ReplayPlan.routes`).
    """
    single: dict[str, list[int]] = {}
    multi: list[int] = []
    for i, path in enumerate(files):
        coin = archive_coin(path)
        if coin is None:
            multi.append(i)
        elif coins is None or coin in coins:
            single.setdefault(coin, []).append(i)
    streams: dict[str, str] = {}
    spool: Spool | None = None
    if multi:
        spool = split_once(
            files,
            multi,
            coins=coins,
            known=set(single),
            run_key=run_key,
            root=spool_root,
            config=config,
        )
        streams = {coin: str(spool.path / name) for coin, name in spool.manifest.streams.items()}
    parts: list[PartSpec] = []
    for coin in sorted(set(single) | (set(streams) - {OTHER})):
        inputs = [(streams[coin], True)] if coin in streams else []
        inputs.extend((files[i], False) for i in single.get(coin, []))
        parts.append(PartSpec(COIN_PREFIX + coin, coin, tuple(inputs)))
    other = ((streams[OTHER], True),) if OTHER in streams else ()
    parts.append(PartSpec(OTHER_PART, None, other))  # always one: a cluster needs a partition
    routes = balanced_routes(_weights(parts), workers) if workers > 1 else {}
    return ReplayPlan(list(files), parts, spool, routes)


def _weights(parts: Sequence[PartSpec]) -> dict[str, float]:
    """Each coin's share of the work: the bytes of its inputs (spool streams and archive files
    are both LZ4 of the same lines, so bytes track lines, and lines track bars)."""
    return {
        p.coin: float(sum(Path(path).stat().st_size for path, _ in p.inputs))
        for p in parts
        if p.coin is not None
    }


class PartitionParser(FrameParser):
    """A coin partition's parser: `advance` closes candles on the clock of every coin."""

    def advance(self, now_ms: int) -> list[Event]:
        """The candles a frame of any coin received at ``now_ms`` would close (the one-partition
        parser closes a coin's open candle on the first frame received after its close time)."""
        if not self._open_candles:
            return []
        out: list[Event] = []
        self._close_due_candles(now_ms, out)
        return out


class _Input:
    """One input of a partition: a spool stream or a capture, as records."""

    def __init__(self, path: str, spooled: bool, idx: int, offset: int, stats: ReplayStats):
        self.path = path
        self.spooled = spooled
        self.idx = idx  # the capture's index (inputs read as they are)
        self.reader = _FileReader(Path(path), offset, stats)
        self.max_depth = stats.parser.config.max_json_depth
        self.last = 0

    def next(self) -> Record | None:
        line = self.reader.next_line()
        if line is None:
            return None
        if self.spooled:
            return parse_record(line)
        n = self.reader.lineno
        if not line.strip():
            return (self.last, self.idx, n, -1, -1, COUNTED | BLANK, b"")
        if self.reader.kind == "fills":
            key = _fills_key(line, self.last, self.max_depth)
        else:
            key = line_key(line, self.last, self.max_depth)
        if key is None:
            return (self.last, self.idx, n, -1, -1, COUNTED, line)  # parsed, so it is reported
        self.last = key
        return (key, self.idx, n, -1, -1, COUNTED, line)


def _fills_key(line: bytes, last: int, max_depth: int) -> int | None:
    """A fills line's merge key: its block's receive time (else ``last``); None: not a block."""
    try:
        recv_ns, _ = fills_lines(line, max_depth)
    except FrameError:
        return None
    return recv_ns if recv_ns is not None else last


class _CoinPartition(StatefulSourcePartition[Event, dict[str, int]]):
    """One partition of a partitioned replay: its inputs merged by receive time, parsed."""

    def __init__(
        self,
        spec: PartSpec,
        files: Sequence[str],
        resume: dict[str, int] | None,
        stats: ReplayStats,
        parent: ReplayStats,
        batch_size: int,
        pace: Pace | None,
        stop: threading.Event | None,
    ) -> None:
        self._coin = spec.coin
        self._files = files
        self._stats = stats
        self._parent = parent
        parser = stats.parser
        assert isinstance(parser, PartitionParser)
        self._parser = parser
        self._batch_size = batch_size
        self._pace = pace
        self._stop = stop
        self._awake: datetime | None = None
        self._ended = False
        resume = resume or {}
        index = {path: i for i, path in enumerate(files)}
        self._inputs = [
            _Input(path, spooled, index.get(path, -1), resume.get(path, 0), stats)
            for path, spooled in spec.inputs
        ]
        self._heap: list[tuple[int, int, int, Record]] = []
        self._held: list[int | None] = [None] * len(self._inputs)
        for i in range(len(self._inputs)):
            self._push(i)

    def _push(self, i: int) -> None:
        src = self._inputs[i]
        before = src.reader.offset
        rec = src.next()
        if rec is None:
            self._held[i] = None
            return
        self._held[i] = before
        heapq.heappush(self._heap, (rec[0], rec[1], i, rec))

    @override
    def next_batch(self) -> Iterable[Event]:
        if self._stop is not None and self._stop.is_set():
            self._end()
            raise StopIteration
        heap = self._heap
        if not heap:
            self._end()
            raise StopIteration
        out: list[Event] = []
        self._awake = None
        pace = self._pace
        n = 0
        while heap and n < self._batch_size:
            key, _, i, rec = heap[0]
            if pace is not None:
                self._awake = pace.wait(key)
                if self._awake is not None:
                    break
            heapq.heappop(heap)
            n += 1
            self._emit(rec, self._inputs[i], out)
            self._push(i)
        self._stats.merge_into(self._parent)
        return out

    def _emit(self, rec: Record, src: _Input, out: list[Event]) -> None:
        _, idx, lineno, clock, latest, flags, payload = rec
        parser = self._parser
        stats = self._stats
        if latest >= 0 and (parser.latest_ms is None or latest > parser.latest_ms):
            parser.latest_ms = latest  # the source clock of every coin, as one parser has it
        if clock >= 0:
            out.extend(parser.advance(clock))
        if flags & COUNTED:
            stats.lines += 1
        if flags & (SKIP | ERROR):
            self._report(flags, payload)
            return
        if not payload:
            if flags & BLANK:
                stats.blank_lines += 1
            return
        saved = (Counter(parser.frames), Counter(parser.control)) if flags & DERIVED else None
        events: list[Event] = []
        try:
            if src.reader.kind == "fills" and not src.spooled:
                events = parse_fills_line(parser, payload)
            else:
                events = parser.parse_line(payload)
        except PartialFrameError as ex:
            events = ex.events
            for err in ex.errors:
                stats.skips.skip(err.reason, self._where(idx, lineno, src), err.detail)
        except FrameError as ex:
            stats.skips.skip(ex.reason, self._where(idx, lineno, src), ex.detail)
        finally:
            if saved is not None:
                parser.frames, parser.control = saved
        if not events:
            return
        coin = self._coin
        if coin is None:
            return  # the other partition only counts (its allMids copies are the coins')
        mine = [e for e in events if e.coin == coin]
        if len(mine) != len(events):
            others = sorted({e.coin for e in events if e.coin != coin})
            detail = f"events of {', '.join(others)} in the partition of {coin}"
            stats.skips.skip(FOREIGN_COIN, self._where(idx, lineno, src), detail)
        out.extend(mine)

    def _where(self, idx: int, lineno: int, src: _Input) -> str:
        """``file:line`` of a record: the capture it came from (a spool record names it)."""
        path = self._files[idx] if 0 <= idx < len(self._files) else src.path
        return f"{path}:{lineno}"

    def _report(self, flags: int, payload: bytes) -> None:
        """A skip or an error the split pass met (logged there): counted here, once."""
        if flags & ERROR:
            self._stats.errors.append(payload.decode("utf-8", "replace"))
            return
        reason, _where, _detail = orjson.loads(payload)
        self._stats.skips.counts[str(reason)] += 1

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._stats.finished = True
            self._stats.merge_into(self._parent)
            self._parent.partition_finished()

    @override
    def next_awake(self) -> datetime | None:
        return self._awake

    @override
    def snapshot(self) -> dict[str, int]:
        return resume_offsets([src.reader for src in self._inputs], self._held)

    @override
    def close(self) -> None:
        for src in self._inputs:
            src.reader.close()


class PartitionedReplaySource(FixedPartitionedSource[Event, dict[str, int]]):
    """Replays a `ReplayPlan`: one partition per coin (and the other partition), spread by
    Bytewax over every worker of every process.

    Args:
        plan: the plan (`plan_replay`), the same on every process.
        stats: this process's counters; its parser is the prototype of every partition's.
        speed: 0 = as fast as possible; 1 = real time by event timestamps (one clock per process).
        stop: when set, the partitions end at their next poll (clean EOF: windows flush).
        batch_size: records per batch.
        place: ``(process_id, workers_per_process, processes)`` of this process in a cluster:
            it then lists only the partitions of the coins whose state its workers keep (by the
            plan's route keys, `connectors.routing`), so no event crosses to another process;
            the other partition goes to process 0. None: every partition (Bytewax spreads them).
    """

    def __init__(
        self,
        plan: ReplayPlan,
        stats: ReplayStats,
        *,
        speed: float = 0.0,
        stop: threading.Event | None = None,
        batch_size: int = 1000,
        place: tuple[int, int, int] | None = None,
    ) -> None:
        check_replay_options(speed, batch_size)
        self.plan = plan
        self.stats = stats
        stats.files = list(plan.files)
        stats.partitioned = True
        stats.plan_coins = plan.coins
        self.stop = stop
        self.batch_size = batch_size
        self._pace = Pace(speed) if speed > 0 else None
        self.place = place

    @override
    def list_parts(self) -> list[str]:
        if self.place is None:
            return [p.key for p in self.plan.parts]
        process_id, per_process, processes = self.place
        routes = self.plan.routes
        return [
            p.key
            for p in self.plan.parts
            if (p.coin is None and process_id == 0)
            or (
                p.coin is not None
                and owned(routes.get(p.coin, p.coin), process_id, per_process, processes)
            )
        ]

    @override
    def build_part(
        self, step_id: str, for_part: str, resume_state: dict[str, int] | None
    ) -> _CoinPartition:
        spec = self.plan.part(for_part)
        child = self.stats.child(for_part, PartitionParser)
        return _CoinPartition(
            spec,
            self.plan.files,
            resume_state,
            child,
            self.stats,
            self.batch_size,
            self._pace,
            self.stop,
        )


def read_partitions(plan: ReplayPlan, stats: ReplayStats) -> dict[str, list[Event]]:
    """Every partition's events, read one partition after another without Bytewax (tests,
    tools): what each worker would emit."""
    source = PartitionedReplaySource(plan, stats)
    out: dict[str, list[Event]] = {}
    for key in source.list_parts():
        out[key] = drain(source.build_part("read", key, None))
    return out


__all__ = [
    "COIN_PREFIX",
    "FOREIGN_COIN",
    "OTHER_PART",
    "PartSpec",
    "PartitionParser",
    "PartitionedReplaySource",
    "ReplayPlan",
    "plan_replay",
    "read_partitions",
]
