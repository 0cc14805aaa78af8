"""The in-memory signal store the flow writes and the API reads (thread-safe).

Keeps the latest envelope per coin and a bounded history per coin, plus the run's health: how the
flow is doing (starting, running, finished, failed, stopped), what the source has read and
skipped, late events, and the source's clock (for freshness).

**What is stored** per envelope is a `connectors.stored.StoredEnvelope`: its JSON bytes (exactly
``orjson.dumps``) with the spans and clocks needed to re-judge freshness by splicing, LZ4-compressed
once a newer envelope of the coin arrives (see that module). Its names are re-exported here.

For the push channel (``GET /v1/stream``) every stored envelope also gets a global, monotonic
sequence number (1, 2, 3, ...) and a place in a bounded global ring of recent entries, so a client
that reconnects with ``Last-Event-ID`` resumes without gaps. The event id a client sees is opaque,
``<run>:<seq>``: the run id (`new_run_id`, new for every run of the flow) keeps a client of an
earlier run from being taken for one of this run. A store fed from a shared store (the Redis
mirror, `put_external`) takes the run and sequence numbers the shared store assigned.
`put_many` hands each batch of new entries to the registered listeners while it holds the lock
(so they see batches in sequence order); a listener must not block and must not call back
into the store.

`put_many` also measures the end-to-end lag of live data (wall clock at store time minus the
envelope's ``timestamp_ms``, the bar close in exchange time) into a small fixed-bucket histogram
that ``/metrics`` exports; replayed exchange times are not comparable with the wall clock, so a
replay records none.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import islice, pairwise
from typing import Any, Final, NamedTuple

from connectors.stored import COMPRESS_LEVEL, Envelope, StoredEnvelope

DEFAULT_RING_SIZE: Final = 4096
"""Entries kept for ``Last-Event-ID`` resume (every coin together)."""

LAG_BUCKETS_S: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds of the end-to-end lag histogram, seconds (``+Inf`` is implied)."""


_B36: Final = "0123456789abcdefghijklmnopqrstuvwxyz"
MAX_EVENT_ID_CHARS: Final = 128
"""Longest ``Last-Event-ID`` looked at (a longer one is a 422)."""


def _base36(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 36)
        out.append(_B36[r])
    return "".join(reversed(out))


def new_run_id(now_s: float | None = None) -> str:
    """A short, time-sortable run id with no ``:`` (8 base-36 digits of the wall clock in ms,
    then 3 random ones): ``mhk2x0q1a7z``."""
    ms = int((time.time() if now_s is None else now_s) * 1000)
    rnd = int.from_bytes(os.urandom(4), "big")
    return _base36(ms, 8) + _base36(rnd, 3)


def event_id(run: str, seq: int) -> str:
    """The SSE id of an entry: ``<run>:<seq>``."""
    return f"{run}:{seq}"


def parse_event_id(text: str) -> tuple[str, int] | None:
    """``(run, seq)`` of an SSE id this service issues, or None when it is not one (another
    server's, an integer id of an older release, garbage): a resume from it cannot be gap-free."""
    run, sep, seq = text.strip().rpartition(":")
    if not sep or not run or not seq.isascii() or not seq.isdigit() or len(seq) > 18:
        return None
    if ":" in run or not run.isascii() or not run.isalnum():
        return None
    return run, int(seq)


class RunState(StrEnum):
    """Lifecycle of the flow feeding the store."""

    STARTING = "starting"
    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"


class StreamEntry:
    """One stored envelope as the push channel sees it.

    Attributes:
        seq: global sequence number of the run (1, 2, ...).
        run: the run the entry belongs to (the SSE ``id`` is ``<run>:<seq>``, `id`).
        coin: the coin.
        rec: the stored envelope.
        now_ms: the source clock when it was stored (freshness is judged as of then).
        prev: the coin's previous stored envelope, if any (for change detection).
        prev_now_ms: the source clock when ``prev`` was stored.
        changed: whether the change key differs from ``prev``'s (computed once by the push
            channel; None until then).
    """

    __slots__ = ("changed", "coin", "now_ms", "prev", "prev_now_ms", "rec", "run", "seq")

    def __init__(
        self,
        seq: int,
        coin: str,
        rec: StoredEnvelope,
        now_ms: int | None,
        prev: StoredEnvelope | None,
        prev_now_ms: int | None,
        run: str = "",
    ) -> None:
        self.seq = seq
        self.run = run
        self.coin = coin
        self.rec = rec
        self.now_ms = now_ms
        self.prev = prev
        self.prev_now_ms = prev_now_ms
        self.changed: bool | None = None

    @property
    def id(self) -> str:
        """The SSE id, ``<run>:<seq>``."""
        return f"{self.run}:{self.seq}"

    def __repr__(self) -> str:
        return f"StreamEntry(seq={self.seq}, run={self.run!r}, coin={self.coin!r})"


Listener = Callable[[tuple[StreamEntry, ...]], bool]
"""Called with each batch of new entries (under the store's lock); returns False to unregister."""

GapListener = Callable[[int, str], None]
"""Called with ``(missed, reason)`` when envelopes were lost before they got a sequence number
(a flow process's writer dropped them); must not block."""

Backfill = Callable[[str, int, int], Awaitable[list[StreamEntry] | None]]
"""``(run, after_seq, before_seq)``: the entries between two sequence numbers from a shared store
(the ones this store's ring no longer holds), or None when they are gone there too."""


class Resume(NamedTuple):
    """What a ``Last-Event-ID`` resume gets from the ring (one consistent snapshot).

    Attributes:
        entries: entries after the id still in the ring (the whole ring for another run's id).
        first: the first sequence number the ring holds (``head + 1`` when empty).
        head: the newest sequence number (0 before the first).
        run: this store's run id.
        after: the sequence number resumed after, or None when the id is not one of this run
            (another run's, or not an id this service issues).
    """

    entries: list[StreamEntry]
    first: int
    head: int
    run: str
    after: int | None


class External(NamedTuple):
    """One entry assigned by a shared store: its sequence number, coin, envelope, and the source
    clock when it was stored."""

    seq: int
    coin: str
    rec: StoredEnvelope
    now_ms: int | None


@dataclass
class LagHistogram:
    """Cumulative-on-export histogram of end-to-end lag (seconds), fixed buckets."""

    bounds: tuple[float, ...] = LAG_BUCKETS_S
    counts: list[int] = field(default_factory=lambda: [0] * (len(LAG_BUCKETS_S) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value_s: float) -> None:
        """Add one observation."""
        self.counts[bisect_left(self.bounds, value_s)] += 1
        self.total += value_s
        self.count += 1

    def snapshot(self) -> tuple[list[tuple[str, int]], float]:
        """Cumulative ``(le, count)`` buckets (``+Inf`` last) and the sum."""
        out: list[tuple[str, int]] = []
        acc = 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            acc += n
            out.append((bound, acc))
        return out, self.total


class SignalStore:
    """Latest envelope and bounded history per coin, behind one lock.

    Args:
        history_limit: envelopes kept per coin (oldest dropped first).
        coins: coins the service tracks (configured); coins seen in data are added.
        mode: ``replay`` or ``live`` (how freshness is clocked).
        ring_size: entries kept for the push channel's resume (every coin together).
    """

    def __init__(
        self,
        history_limit: int = 1000,
        coins: Sequence[str] = (),
        mode: str = "replay",
        *,
        ring_size: int = DEFAULT_RING_SIZE,
    ) -> None:
        if ring_size < 1:
            msg = f"ring_size must be at least 1, got {ring_size}"
            raise ValueError(msg)
        self._lock = threading.Lock()
        self._latest: dict[str, StoredEnvelope] = {}
        self._latest_now: dict[str, int | None] = {}
        self._history: dict[str, deque[StoredEnvelope]] = {}
        self._limit = history_limit
        self._configured = list(coins)
        self._configured_set = frozenset(self._configured)
        self._seen: set[str] = set()
        self._evicted_ms: dict[str, int] = {}  # coin -> newest bar close dropped from history
        self._seq = 0
        self.run = new_run_id()
        self._ring: deque[StreamEntry] = deque(maxlen=ring_size)
        self._listeners: list[Listener] = []
        self._gap_listeners: list[GapListener] = []
        self.mode = mode
        self.signals_emitted = 0
        self.emitted_by_coin: Counter[str] = Counter()
        self.late_events: Counter[str] = Counter()
        self.lag = LagHistogram()
        self.state = RunState.STARTING
        self.error: str | None = None
        self.started_wall_s = time.time()
        self.source_clock: Callable[[], int | None] = lambda: None
        self.source_info: Callable[[], dict[str, Any]] = dict
        self.unavailable: str | None = None
        """Set while this store cannot vouch for its data (a mirror cut off from the shared
        store): data routes answer 503 with it."""
        self.backfill: Backfill | None = None
        """Where a resume older than the ring looks next (a mirror's shared store)."""

    def put_many(self, items: Iterable[tuple[str, Envelope | StoredEnvelope]]) -> None:
        """Store envelopes ``(coin, envelope)`` (called by the flow's sink; never blocks on
        readers beyond the lock, never waits for a push client).

        A dict is encoded here (`StoredEnvelope`), outside the lock; the sink passes envelopes
        already encoded (it writes the same bytes to ``--signals-out``).
        """
        recs = [(c, e if isinstance(e, StoredEnvelope) else StoredEnvelope(e)) for c, e in items]
        now = self.now_ms()
        wall_s = time.time()
        live = self.mode == "live"
        superseded: list[StoredEnvelope] = []
        with self._lock:
            new: list[StreamEntry] = []
            run = self.run
            for coin, rec in recs:
                self._seq += 1
                self._append(StreamEntry(self._seq, coin, rec, now, None, None, run), superseded)
                new.append(self._ring[-1])
                self.signals_emitted += 1
                self.emitted_by_coin[coin] += 1
                if live:
                    ts = rec.timestamp_ms
                    if ts is not None:
                        self.lag.observe(max(0.0, wall_s - ts / 1000))
            self._notify(new)
        for rec in superseded:  # outside the lock; readers decompress when they need the bytes
            rec.compact()

    def _append(self, entry: StreamEntry, superseded: list[StoredEnvelope]) -> None:
        """Make ``entry`` the coin's latest, in its history and the ring (under the lock)."""
        coin = entry.coin
        rec = entry.rec
        prev = entry.prev = self._latest.get(coin)
        entry.prev_now_ms = self._latest_now.get(coin)
        self._ring.append(entry)
        self._latest[coin] = rec
        self._latest_now[coin] = entry.now_ms
        if prev is not None:
            superseded.append(prev)
        hist = self._history.get(coin)
        if hist is None:
            hist = self._history[coin] = deque(maxlen=self._limit)
        elif len(hist) == self._limit:
            self._evict(coin, hist[0])
        hist.append(rec)
        self._seen.add(coin)

    def _notify(self, new: list[StreamEntry]) -> None:
        if new and self._listeners:
            batch = tuple(new)
            self._listeners[:] = [keep for keep in self._listeners if keep(batch)]

    def _evict(self, coin: str, rec: StoredEnvelope) -> None:
        ts = rec.timestamp_ms
        if ts is not None and ts > self._evicted_ms.get(coin, -1):
            self._evicted_ms[coin] = ts

    def put_external(self, run: str, items: Sequence[External]) -> None:
        """Store entries numbered by a shared store (the Redis mirror), in sequence order.

        A new ``run`` starts over (the shared store was cleared for it); entries at or before
        the newest sequence number held are skipped (a reload overlapping what was read). The
        counters (`signals_emitted`, ...) are not touched: a mirror takes them from the flows.
        """
        superseded: list[StoredEnvelope] = []
        with self._lock:
            if run != self.run:
                self._reset(run)
            new: list[StreamEntry] = []
            for seq, coin, rec, now in items:
                if seq <= self._seq:
                    continue
                self._seq = seq
                self._append(StreamEntry(seq, coin, rec, now, None, None, run), superseded)
                new.append(self._ring[-1])
            self._notify(new)
        for rec in superseded:
            rec.compact()

    def replace_all(
        self,
        run: str,
        history: Mapping[str, Sequence[External]],
        ring: Sequence[External],
        head: int,
        evicted_ms: Mapping[str, int] | None = None,
    ) -> None:
        """Take a whole snapshot from a shared store (a mirror's first load, or a reload after
        it lost the store): each coin's history (oldest first), the ring's entries and the
        newest sequence number. Listeners are not called (the snapshot is the past); entries
        after ``head`` come through `put_external`. ``evicted_ms``: per coin, a bar close at
        or after which the shared store no longer holds the coin's envelopes."""
        with self._lock:
            self._reset(run)
            for coin, items in history.items():
                hist: deque[StoredEnvelope] = deque(maxlen=self._limit)
                for item in items[-self._limit :]:
                    hist.append(item.rec)
                if not hist:
                    continue
                self._history[coin] = hist
                self._latest[coin] = items[-1].rec
                self._latest_now[coin] = items[-1].now_ms
                self._seen.add(coin)
            by_seq = {it.seq: it for items in history.values() for it in items}
            prev_of: dict[str, tuple[StoredEnvelope, int | None]] = {}
            for coin, items in history.items():
                for a, b in pairwise(items):
                    prev_of[f"{coin}:{b.seq}"] = (a.rec, a.now_ms)
            for it in ring:
                held = by_seq.get(it.seq)
                rec = held.rec if held is not None else it.rec
                prev, prev_now = prev_of.get(f"{it.coin}:{it.seq}", (None, None))
                self._ring.append(StreamEntry(it.seq, it.coin, rec, it.now_ms, prev, prev_now, run))
                self._seen.add(it.coin)
            for coin, ms in (evicted_ms or {}).items():
                self._evicted_ms[coin] = ms
            self._seq = max(head, self._ring[-1].seq if self._ring else 0)
        for hist in list(self._history.values()):
            for rec in list(hist)[:-1]:
                rec.compact()

    def _reset(self, run: str) -> None:
        """Forget every envelope (under the lock): a new run of the shared store."""
        self.run = run
        self._seq = 0
        self._ring.clear()
        self._latest.clear()
        self._latest_now.clear()
        self._history.clear()
        self._evicted_ms.clear()
        self._seen.clear()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every later batch of new entries (until it returns False)."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener`` (no error if it is not registered)."""
        with self._lock:
            self._listeners[:] = [x for x in self._listeners if x is not listener]

    def add_gap_listener(self, listener: GapListener) -> None:
        """Call ``listener`` with every later `report_gap`."""
        with self._lock:
            self._gap_listeners.append(listener)

    def remove_gap_listener(self, listener: GapListener) -> None:
        """Stop calling ``listener`` (no error if it is not registered)."""
        with self._lock:
            self._gap_listeners[:] = [x for x in self._gap_listeners if x is not listener]

    def report_gap(self, missed: int, reason: str) -> None:
        """Tell the gap listeners (the push channel) that ``missed`` envelopes were lost before
        they got a sequence number (a shared store's writer dropped them)."""
        with self._lock:
            listeners = list(self._gap_listeners)
        for listener in listeners:
            listener(missed, reason)

    def since(self, last_id: str | None) -> Resume:
        """Entries after the SSE id ``last_id`` still in the ring (one consistent snapshot).

        ``last_id=None`` means "only what comes next" (no entries). An id of another run (or
        not an id of this service, or ahead of the newest entry) gets the whole ring, with
        ``after`` None. Entries are missing when ``first > after + 1``.
        """
        parsed = None if last_id is None else parse_event_id(last_id)
        with self._lock:
            head = self._seq
            run = self.run
            first = self._ring[0].seq if self._ring else head + 1
            if last_id is None:
                return Resume([], first, head, run, head)
            if parsed is None or parsed[0] != run or parsed[1] > head:
                return Resume(list(self._ring), first, head, run, None)
            after = parsed[1]
            if after == head:
                return Resume([], first, head, run, after)
            skip = max(0, after + 1 - first)
            return Resume(list(islice(self._ring, skip, None)), first, head, run, after)

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest entry (0 before the first)."""
        return self._seq

    def count_late(self, coin: str, n: int = 1) -> None:
        """Count events that arrived after their bar had closed."""
        with self._lock:
            self.late_events[coin] += n

    def note_coin(self, coin: str) -> None:
        """Track a coin seen in the input even before it has a signal."""
        with self._lock:
            self._seen.add(coin)

    def coins(self) -> list[str]:
        """Every tracked coin: configured ones first, then the others seen, sorted."""
        with self._lock:
            extra = sorted(self._seen.difference(self._configured))
            return [*self._configured, *extra]

    # -- stored form (what the API serves from) ----------------------------------------------

    def record(self, coin: str) -> StoredEnvelope | None:
        """The newest stored envelope of a coin (exact name), or None."""
        with self._lock:
            return self._latest.get(coin)

    def records(self) -> dict[str, StoredEnvelope]:
        """The newest stored envelope of every coin that has one."""
        with self._lock:
            return dict(self._latest)

    def record_history(
        self,
        coin: str,
        limit: int | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> list[StoredEnvelope]:
        """Stored envelopes of a coin, oldest first, optionally after ``since_ms`` and capped to
        the newest ``limit``; with ``until_ms`` (inclusive), the envelopes in
        ``(since_ms, until_ms]``, capped to the *oldest* ``limit`` (a page: continue after the
        last one's ``timestamp_ms``)."""
        with self._lock:
            items = list(self._history.get(coin, ()))
        if since_ms is not None:
            items = [e for e in items if e.timestamp_ms is not None and e.timestamp_ms > since_ms]
        if until_ms is not None:
            items = [e for e in items if e.timestamp_ms is not None and e.timestamp_ms <= until_ms]
            if limit is not None:
                return items[:limit] if limit > 0 else []
        if limit is not None:
            items = items[-limit:] if limit > 0 else []
        return items

    def retention(self, coin: str) -> tuple[int | None, int | None]:
        """A coin's history bounds: the bar close of the oldest envelope held, and the newest
        bar close no longer held (None when nothing was dropped: the history is complete)."""
        with self._lock:
            hist = self._history.get(coin)
            earliest = hist[0].timestamp_ms if hist else None
            return earliest, self._evicted_ms.get(coin)

    def memory(self) -> dict[str, int]:
        """Bytes held by the stored envelopes (history, which includes every latest one), their
        count, and the ring's entries (objects only; their envelopes are in the history)."""
        with self._lock:
            hist = [rec for h in self._history.values() for rec in h]
            ring = len(self._ring)
        size = sum(rec.nbytes() for rec in hist)
        return {
            "envelopes": len(hist),
            "envelope_bytes": size,
            "ring_entries": ring,
            "ring_bytes": ring * sys.getsizeof(StreamEntry(0, "", hist[0], 0, None, None))
            if hist
            else 0,
        }

    # -- decoded form (tools, tests; the API never decodes) ---------------------------------

    def latest(self, coin: str) -> Envelope | None:
        """The newest envelope of a coin (exact name) as a dict, as emitted, or None."""
        rec = self.record(coin)
        return None if rec is None else rec.envelope()

    def latest_all(self) -> dict[str, Envelope]:
        """The newest envelope of every coin that has one, as dicts (as emitted)."""
        return {c: rec.envelope() for c, rec in self.records().items()}

    def history(
        self, coin: str, limit: int | None = None, since_ms: int | None = None
    ) -> list[Envelope]:
        """Stored envelopes of a coin as dicts, oldest first, optionally after ``since_ms`` and
        capped to the newest ``limit``."""
        return [rec.envelope() for rec in self.record_history(coin, limit, since_ms)]

    def now_ms(self) -> int | None:
        """The source's clock: the latest event time in a replay, the wall clock live."""
        if self.mode == "live":
            return int(time.time() * 1000)
        return self.source_clock()

    def resolve(self, name: str) -> str | None:
        """A coin name: exact match first, else a unique case-insensitive match, else None."""
        if name in self._seen or name in self._configured_set:  # the common case, no copy
            return name
        coins = self.coins()
        if name in coins:
            return name
        folded = [c for c in coins if c.lower() == name.lower()]
        return folded[0] if len(folded) == 1 else None


__all__ = [
    "COMPRESS_LEVEL",
    "DEFAULT_RING_SIZE",
    "LAG_BUCKETS_S",
    "MAX_EVENT_ID_CHARS",
    "Backfill",
    "Envelope",
    "External",
    "GapListener",
    "LagHistogram",
    "Listener",
    "Resume",
    "RunState",
    "SignalStore",
    "StoredEnvelope",
    "StreamEntry",
    "event_id",
    "new_run_id",
    "parse_event_id",
]
