"""The counters of a replay: lines, skips, errors, and every parser's frames and clocks.

`ReplayStats` is what a replay source fills and what ``/health``, ``/v1/state``, ``/metrics`` and
the summaries read (`flows.outcome.replay_info`). A partitioned replay (`connectors.partitions`)
gives each partition its own stats and parser (`ReplayStats.child`), so the worker threads never
share a counter, and adds a partition's counts to its process's after every batch
(`ReplayStats.merge_into`); the parser counters (`frames`, `latest_ms` ...) combine every parser
of the process.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from connectors.errors import FrameError, SkipLog
from connectors.parse import FrameParser

log = logging.getLogger("connectors.files")
"""Skips are logged under the replay source's logger, as they always were."""

HELD_WHERE: Final = "a coin's first prices (held until confirmed)"
"""Where a rejection decided after its frame was accepted is reported (`FrameParser.on_reject`)."""


@dataclass
class _Merged:
    """What a partition's own counters had when they were last added to the process's."""

    lines: int = 0
    blank_lines: int = 0
    skips: Counter[str] = field(default_factory=Counter)
    errors: int = 0


@dataclass
class ReplayStats:
    """Counters of one replay source, shared with the store and the summary.

    Updated by the worker threads only; readers take plain copies of ints and dicts. A
    partitioned replay (`connectors.partitions`) gives each partition its own stats and parser
    (`child`), whose counts it adds to these after every batch (`merge_into`); the parser
    counters below (`frames`, `latest_ms` ...) sum or combine every parser of the process.
    """

    files: list[str] = field(default_factory=list)
    lines: int = 0
    blank_lines: int = 0
    errors: list[str] = field(default_factory=list)
    finished: bool = False
    parser: FrameParser = field(default_factory=FrameParser)
    skips: SkipLog = field(default_factory=lambda: SkipLog(log))
    parsers: list[FrameParser] = field(default_factory=list)
    """Every parser of this process's replay (one, or one per partition read here)."""
    partitioned: bool = False
    """A partitioned replay (`connectors.partitions`): this process reads some partitions."""
    partitions: list[str] = field(default_factory=list)
    """The partitions this process read (a partitioned replay)."""
    plan_coins: frozenset[str] | None = None
    """The coins a partitioned replay has a partition for, on any process."""
    finished_partitions: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _merged: _Merged = field(default_factory=_Merged, init=False, repr=False)
    _logged: Counter[str] = field(default_factory=Counter, init=False, repr=False)
    """Skips of this process's partitions so far, by reason (to thin their logging)."""

    def __post_init__(self) -> None:
        if not self.parsers:
            self.parsers = [self.parser]

    def report_held_rejections(self) -> None:
        """Count (and log) the rejections the parser decides after the fact, as skips."""
        skips = self.skips

        def held_rejection(ex: FrameError) -> None:
            skips.skip(ex.reason, HELD_WHERE, ex.detail)

        self.parser.on_reject = held_rejection

    def child(self, partition: str, parser_type: type[FrameParser] = FrameParser) -> ReplayStats:
        """The stats of one partition: its own parser (same coins, limits and rejection
        reporting as `parser`) and counters, added to these by `merge_into`."""
        proto = self.parser
        parser = parser_type(proto.coins, proto.config)
        kid = ReplayStats(files=list(self.files), parser=parser, skips=_PartitionSkipLog(self))
        if proto.on_reject is not None:
            kid.report_held_rejections()
        with self._lock:
            self.parsers.append(parser)
            self.partitions.append(partition)
        return kid

    def merge_into(self, parent: ReplayStats) -> None:
        """Add what these (a partition's) counters counted since the last call to ``parent``."""
        done = self._merged
        with parent._lock:
            parent.lines += self.lines - done.lines
            parent.blank_lines += self.blank_lines - done.blank_lines
            for reason, n in self.skips.counts.items():
                if n != done.skips[reason]:
                    parent.skips.counts[reason] += n - done.skips[reason]
                    done.skips[reason] = n
            parent.errors.extend(self.errors[done.errors :])
        done.lines, done.blank_lines, done.errors = self.lines, self.blank_lines, len(self.errors)

    def partition_finished(self) -> None:
        """One partition read here reached its end (`finished` once every one has)."""
        with self._lock:
            self.finished_partitions += 1
            self.finished = self.finished_partitions >= len(self.partitions)

    @property
    def frames(self) -> int:
        """Data frames accepted."""
        return sum(sum(p.frames.values()) for p in self.parsers)

    @property
    def skipped(self) -> dict[str, int]:
        """Lines skipped, by reason."""
        return dict(self.skips.counts)

    def frames_by_channel(self) -> Counter[str]:
        """Data frames accepted, by channel (every parser)."""
        out: Counter[str] = Counter()
        for p in self.parsers:
            out.update(p.frames)
        return out

    def control_frames(self) -> Counter[str]:
        """Control frames seen, by kind (every parser)."""
        out: Counter[str] = Counter()
        for p in self.parsers:
            out.update(p.control)
        return out

    @property
    def duplicates(self) -> int:
        """Trades dropped by de-duplication."""
        return sum(p.duplicates for p in self.parsers)

    @property
    def ignored_coin(self) -> int:
        """Events of coins outside the coin filter."""
        return sum(p.ignored_coin for p in self.parsers)

    @property
    def latest_ms(self) -> int | None:
        """The latest exchange time any parser accepted (the replay's source clock)."""
        times = [p.latest_ms for p in self.parsers if p.latest_ms is not None]
        return max(times) if times else None

    @property
    def seen_coins(self) -> set[str]:
        """Coins with an accepted event."""
        out: set[str] = set()
        for p in self.parsers:
            out |= p.seen_coins
        return out


class _PartitionSkipLog(SkipLog):
    """A partition's skips: counted on their own (added to the process's by `merge_into`),
    logged as thinly as the process's own log (the first 20 per reason in the process, then
    every 1,000th), not 20 per partition."""

    def __init__(self, process: ReplayStats) -> None:
        super().__init__(log)
        self._process = process

    def skip(self, reason: str, where: str, detail: str) -> None:
        self.counts[reason] += 1
        process = self._process
        with process._lock:
            process._logged[reason] += 1
            n = process._logged[reason]
        if n <= self._first or n % self._every == 0:
            self._log.warning("skipped %s at %s (%s so far): %s", reason, where, n, detail)


__all__ = ["HELD_WHERE", "ReplayStats"]
