"""The in-memory signal store the flow writes and the API reads (thread-safe).

Keeps the latest envelope per coin and a bounded history per coin, plus the run's health: how the
flow is doing (starting, running, finished, failed, stopped), what the source has read and
skipped, late events, and the source's clock (for freshness).

**What is stored** per envelope is a `connectors.stored.StoredEnvelope`: its JSON bytes (exactly
``orjson.dumps``) with the spans and clocks needed to re-judge freshness by splicing, LZ4-compressed
once a newer envelope of the coin arrives (see that module). Its names are re-exported here.

For the push channel (``GET /v1/stream``) every stored envelope also gets a global, monotonic
sequence number (1, 2, 3, ...) and a place in a bounded global ring of recent entries, so a client
that reconnects with ``Last-Event-ID`` resumes without gaps. `put_many` hands each batch of new
entries to the registered listeners while it holds the lock (so they see batches in sequence
order); a listener must not block and must not call back into the store.

`put_many` also measures the end-to-end lag of live data (wall clock at store time minus the
envelope's ``timestamp_ms``, the bar close in exchange time) into a small fixed-bucket histogram
that ``/metrics`` exports; replayed exchange times are not comparable with the wall clock, so a
replay records none.
"""

from __future__ import annotations

import sys
import threading
import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import islice
from typing import Any, Final

from connectors.stored import COMPRESS_LEVEL, Envelope, StoredEnvelope

DEFAULT_RING_SIZE: Final = 4096
"""Entries kept for ``Last-Event-ID`` resume (every coin together)."""

LAG_BUCKETS_S: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds of the end-to-end lag histogram, seconds (``+Inf`` is implied)."""


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
        seq: global sequence number (1, 2, ...; the SSE ``id``).
        coin: the coin.
        rec: the stored envelope.
        now_ms: the source clock when it was stored (freshness is judged as of then).
        prev: the coin's previous stored envelope, if any (for change detection).
        prev_now_ms: the source clock when ``prev`` was stored.
        changed: whether the change key differs from ``prev``'s (computed once by the push
            channel; None until then).
    """

    __slots__ = ("changed", "coin", "now_ms", "prev", "prev_now_ms", "rec", "seq")

    def __init__(
        self,
        seq: int,
        coin: str,
        rec: StoredEnvelope,
        now_ms: int | None,
        prev: StoredEnvelope | None,
        prev_now_ms: int | None,
    ) -> None:
        self.seq = seq
        self.coin = coin
        self.rec = rec
        self.now_ms = now_ms
        self.prev = prev
        self.prev_now_ms = prev_now_ms
        self.changed: bool | None = None

    def __repr__(self) -> str:
        return f"StreamEntry(seq={self.seq}, coin={self.coin!r})"


Listener = Callable[[tuple[StreamEntry, ...]], bool]
"""Called with each batch of new entries (under the store's lock); returns False to unregister."""


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
        self._seq = 0
        self._ring: deque[StreamEntry] = deque(maxlen=ring_size)
        self._listeners: list[Listener] = []
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
            for coin, rec in recs:
                self._seq += 1
                prev = self._latest.get(coin)
                entry = StreamEntry(self._seq, coin, rec, now, prev, self._latest_now.get(coin))
                self._ring.append(entry)
                new.append(entry)
                self._latest[coin] = rec
                self._latest_now[coin] = now
                if prev is not None:
                    superseded.append(prev)
                hist = self._history.get(coin)
                if hist is None:
                    hist = self._history[coin] = deque(maxlen=self._limit)
                hist.append(rec)
                self._seen.add(coin)
                self.signals_emitted += 1
                self.emitted_by_coin[coin] += 1
                if live:
                    ts = rec.timestamp_ms
                    if ts is not None:
                        self.lag.observe(max(0.0, wall_s - ts / 1000))
            if new and self._listeners:
                batch = tuple(new)
                self._listeners[:] = [keep for keep in self._listeners if keep(batch)]
        for rec in superseded:  # outside the lock; readers decompress when they need the bytes
            rec.compact()

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every later batch of new entries (until it returns False)."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener`` (no error if it is not registered)."""
        with self._lock:
            self._listeners[:] = [x for x in self._listeners if x is not listener]

    def since(self, last_seq: int | None) -> tuple[list[StreamEntry], int, int]:
        """Entries after ``last_seq`` still in the ring, with the first sequence number the ring
        holds and the newest one (one consistent snapshot).

        ``last_seq=None`` means "only what comes next" (no entries). A ``last_seq`` ahead of the
        newest entry (a client of an earlier run: numbers restart at 1) gets the whole ring.
        Entries are missing when ``first > last_seq + 1``.
        """
        with self._lock:
            head = self._seq
            first = self._ring[0].seq if self._ring else head + 1
            if last_seq is None or last_seq == head:
                return [], first, head
            after = 0 if last_seq > head else last_seq
            skip = max(0, after + 1 - first)
            return list(islice(self._ring, skip, None)), first, head

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
        self, coin: str, limit: int | None = None, since_ms: int | None = None
    ) -> list[StoredEnvelope]:
        """Stored envelopes of a coin, oldest first, optionally after ``since_ms`` and capped to
        the newest ``limit``."""
        with self._lock:
            items = list(self._history.get(coin, ()))
        if since_ms is not None:
            items = [e for e in items if e.timestamp_ms is not None and e.timestamp_ms > since_ms]
        if limit is not None:
            items = items[-limit:] if limit > 0 else []
        return items

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
    "Envelope",
    "LagHistogram",
    "Listener",
    "RunState",
    "SignalStore",
    "StoredEnvelope",
    "StreamEntry",
]
