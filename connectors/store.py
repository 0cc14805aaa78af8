"""The in-memory signal store the flow writes and the API reads (thread-safe).

Keeps the latest envelope per coin and a bounded history per coin, plus the run's health: how the
flow is doing (starting, running, finished, failed, stopped), what the source has read and
skipped, late events, and the source's clock (for freshness).

**What is stored** (`StoredEnvelope`): not the envelope's dict (~9.5 KB of Python objects) but its
JSON bytes as ``orjson.dumps`` writes them (~3.5-4 KB), plus the few typed fields the API needs to
judge freshness again at request time (the bar close, each stream's last exchange time, last
receive time and expected interval, packed as int64s) and the byte spans of the ``freshness``
block and of ``edge.actionable`` / ``edge.explain`` inside those bytes. The API never re-parses
the JSON: it re-judges freshness from the typed fields, encodes only the new freshness block and
splices it (and, when the inputs went stale, ``false`` and ``"STALE_INPUT"``) into the stored
bytes. Once a newer envelope of the same coin arrives, the older one keeps only its bytes
compressed (an LZ4 block, ~1.8x smaller): history is served as emitted, so it is only ever
decompressed, never re-judged. The store treats the envelope generically: whatever dict it is
given is stored (an envelope without a well-formed freshness block is served exactly as stored).

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

import struct
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

import lz4.block
import orjson

from connectors.codes import Explain
from connectors.events import Stream
from connectors.freshness import FreshnessStatus, judge_stream, stream_block

Envelope = dict[str, Any]

DEFAULT_RING_SIZE: Final = 4096
"""Entries kept for ``Last-Event-ID`` resume (every coin together)."""

LAG_BUCKETS_S: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds of the end-to-end lag histogram, seconds (``+Inf`` is implied)."""

COMPRESS_LEVEL: Final = 1
"""Kept for callers that named it; superseded envelopes are LZ4 blocks now (see `compact`)."""

_STREAM_OF: Final = {s.value: s for s in Stream}
_STALE_ITEM: Final = orjson.dumps(Explain.STALE_INPUT.value)
_NONE: Final = -(2**63)  # None in the packed clocks (never a real millisecond time)
_SPANS: Final = struct.Struct("<5iB")  # freshness start/end, actionable start/end, explain's "]"
_EXPLAIN_EMPTY: Final = 1
_STALE_LISTED: Final = 2
_NAMES_CACHE: dict[tuple[str, ...], tuple[str, ...]] = {}  # stream-name tuples, shared
_NAMES_CACHE_MAX: Final = 64
_OK: Final = str(FreshnessStatus.OK)
_STALE: Final = str(FreshnessStatus.STALE)
_MISSING: Final = str(FreshnessStatus.MISSING)
_dumps = orjson.dumps


def _encode_object(d: dict[Any, Any]) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """``orjson.dumps(d)``, built member by member so the byte span of each member's value is
    known. The bytes are identical (orjson writes ``{"k":v,...}``, no spaces); a non-str key
    raises orjson's own error, as ``orjson.dumps(d)`` would."""
    parts: list[bytes] = []
    spans: dict[str, tuple[int, int]] = {}
    pos = 1
    for k, v in d.items():
        if not isinstance(k, str):
            return _dumps(d), {}  # raises (orjson refuses non-str keys)
        head = _dumps(k) + b":"
        value = _dumps(v)
        if parts:
            pos += 1
        start = pos + len(head)
        spans[k] = (start, start + len(value))
        pos = start + len(value)
        parts.append(head + value)
    return b"{" + b",".join(parts) + b"}", spans


def _value_span(raw: bytes, key: bytes, value: bytes, start: int = 0) -> tuple[int, int] | None:
    """The span of ``"key":value`` in ``raw`` (the first occurrence whose value bytes match)."""
    needle = b'"' + key + b'":'
    i = raw.find(needle, start)
    while i >= 0:
        s = i + len(needle)
        if raw.startswith(value, s):
            return s, s + len(value)
        i = raw.find(needle, i + 1)
    return None


def _encode(
    env: dict[Any, Any],
) -> tuple[bytes, tuple[int, int] | None, dict[str, tuple[int, int]]]:
    """The envelope's bytes (``orjson.dumps(env)``) and the spans `_encode_members` finds, by
    one encoding and three C-speed searches (a JSON key cannot occur inside a string, whose
    quotes are escaped; each span is checked against its value's own bytes), falling back to
    the member-by-member build when a search is ambiguous."""
    # A copy: orjson's own result keeps the ~16 KB buffer it grew into, 4x the JSON.
    raw = memoryview(_dumps(env)).tobytes()
    fresh = env.get("freshness")
    edge = env.get("edge")
    if fresh is None or not isinstance(edge, dict) or not isinstance(edge.get("explain"), list):
        return _encode_members(env)
    f = _value_span(raw, b"freshness", _dumps(fresh))
    e = _value_span(raw, b"edge", _dumps(edge))
    if f is None or e is None:
        return _encode_members(env)
    edge_raw = raw[e[0] : e[1]]
    a = _value_span(edge_raw, b"actionable", _dumps(edge.get("actionable")))
    x = _value_span(edge_raw, b"explain", _dumps(edge["explain"]))
    if a is None or x is None or "actionable" not in edge:
        return _encode_members(env)
    base = e[0]
    spans = {"actionable": (base + a[0], base + a[1]), "explain": (base + x[0], base + x[1])}
    return raw, f, spans


def _encode_members(
    env: dict[Any, Any],
) -> tuple[bytes, tuple[int, int] | None, dict[str, tuple[int, int]]]:
    """The envelope's bytes (``orjson.dumps(env)``), the span of its ``freshness`` value and the
    spans of ``edge.actionable`` and ``edge.explain`` (empty when the edge is not a dict with
    both, ``explain`` a list)."""
    parts: list[bytes] = []
    fresh: tuple[int, int] | None = None
    edge_spans: dict[str, tuple[int, int]] = {}
    pos = 1
    for k, v in env.items():
        if not isinstance(k, str):
            return _dumps(env), None, {}  # raises
        head = _dumps(k) + b":"
        inner: dict[str, tuple[int, int]] | None = None
        if k == "edge" and isinstance(v, dict) and isinstance(v.get("explain"), list):
            value, inner = _encode_object(v)
        else:
            value = _dumps(v)
        if parts:
            pos += 1
        start = pos + len(head)
        end = start + len(value)
        if k == "freshness":
            fresh = (start, end)
        elif inner is not None and "actionable" in inner:
            edge_spans = {n: (start + a, start + b) for n, (a, b) in inner.items()}
        pos = end
        parts.append(head + value)
    return b"{" + b",".join(parts) + b"}", fresh, edge_spans


def _stream_clocks(fresh: Any) -> tuple[tuple[str, ...], list[Any]] | None:
    """Stream names and ``(last_exchange_ms, last_recv_ms, expected_interval_ms)`` of each, from
    a freshness block, or None when the block cannot be judged again."""
    if not isinstance(fresh, dict):
        return None
    streams = fresh.get("streams")
    if not isinstance(streams, dict):
        return None
    names: list[str] = []
    values: list[Any] = []
    for name, s in streams.items():
        if name not in _STREAM_OF or not isinstance(s, dict):
            return None
        try:
            values += (s["last_exchange_ms"], s["last_recv_ms"], s["expected_interval_ms"])
        except KeyError:
            return None
        names.append(name)
    key = tuple(names)
    shared = _NAMES_CACHE.get(key)
    if shared is None:
        shared = key
        if len(_NAMES_CACHE) < _NAMES_CACHE_MAX:
            _NAMES_CACHE[key] = key
    return shared, values


def _pack_clocks(values: list[Any]) -> bytes | None:
    """The clocks as int64s (None as a sentinel), or None if one is not a plain int64 or None."""
    out: list[int] = []
    for v in values:
        if v is None:
            out.append(_NONE)
        elif type(v) is int and _NONE < v < 2**63:
            out.append(v)
        else:
            return None
    return struct.pack(f"<{len(out)}q", *out)


class StoredEnvelope:
    """One stored envelope: its JSON bytes plus what re-judging freshness needs (no dict).

    Build it with ``StoredEnvelope(env)`` (any dict orjson can encode; ``raw`` is then exactly
    ``orjson.dumps(env)``). `json_at` is the envelope with freshness judged as of a source-clock
    time, spliced into the bytes; `raw` the envelope as emitted.

    Attributes:
        timestamp_ms: the envelope's ``timestamp_ms`` (the bar close) if an int, else None.
        label: ``regime.label`` (None if absent).
        direction: ``direction`` (None if absent).
        status: ``freshness.status`` as emitted (None if absent).
        actionable: ``edge.actionable`` as emitted (None if absent).
    """

    __slots__ = (
        "_clock",
        "_meta",
        "_names",
        "_raw",
        "_z",
        "actionable",
        "direction",
        "label",
        "status",
        "timestamp_ms",
    )

    def __init__(self, env: Envelope) -> None:
        raw, fresh_span, edge_spans = _encode(env)
        self._raw: bytes | None = raw
        self._z: bytes | None = None
        ts = env.get("timestamp_ms")
        self.timestamp_ms: int | None = ts if type(ts) is int else None
        regime = env.get("regime")
        self.label: Any = regime.get("label") if isinstance(regime, dict) else None
        self.direction: Any = env.get("direction")
        fresh = env.get("freshness")
        self.status: Any = fresh.get("status") if isinstance(fresh, dict) else None
        edge = env.get("edge")
        self.actionable: Any = edge.get("actionable") if isinstance(edge, dict) else None
        self._meta: bytes | None = None  # spans (+ packed clocks): None = serve as stored
        self._clock: tuple[Any, ...] | None = None  # clocks that do not pack as int64s
        self._names: tuple[str, ...] = ()
        clocks = _stream_clocks(fresh)
        if clocks is None or fresh_span is None or self.timestamp_ms is None:
            return
        self._names, values = clocks
        flags = 0
        act, expl = edge_spans.get("actionable"), edge_spans.get("explain")
        if act is None or expl is None or not isinstance(edge, dict):
            act, expl = (-1, -1), (0, 0)
        else:
            flags |= _EXPLAIN_EMPTY if not edge["explain"] else 0
            flags |= _STALE_LISTED if Explain.STALE_INPUT.value in edge["explain"] else 0
        spans = _SPANS.pack(fresh_span[0], fresh_span[1], act[0], act[1], expl[1] - 1, flags)
        packed = _pack_clocks(values)
        if packed is None:
            self._clock = tuple(values)
            packed = b""
        self._meta = spans + packed

    @property
    def raw(self) -> bytes:
        """The envelope's JSON as emitted (freshness as of its bar close)."""
        raw = self._raw
        if raw is None:
            assert self._z is not None
            out: bytes = lz4.block.decompress(self._z)
            return out
        return raw

    @property
    def compressed(self) -> bool:
        """Whether only the compressed bytes are held (a superseded envelope)."""
        return self._raw is None

    def compact(self) -> None:
        """Keep only the compressed bytes (called once a newer envelope of the coin arrived)."""
        raw = self._raw
        if raw is not None:
            # LZ4, not zlib: ~7 us instead of ~44 us an envelope on the per-bar path, for
            # ~1.8x instead of ~2.5x smaller
            self._z = lz4.block.compress(raw)
            self._raw = None  # after _z is set: a reader sees one or the other

    def envelope(self) -> Envelope:
        """The envelope as a dict, as emitted (decodes the bytes: for tools and tests)."""
        out: Envelope = orjson.loads(self.raw)
        return out

    def nbytes(self) -> int:
        """Bytes this record holds (object, bytes, packed fields), for the memory budget."""
        n = sys.getsizeof(self)
        for part in (self._raw, self._z, self._meta, self._clock):
            if part is not None:
                n += sys.getsizeof(part)
        if self.timestamp_ms is not None:
            n += sys.getsizeof(self.timestamp_ms)
        return n

    def _clocks(self) -> Sequence[Any]:
        if self._clock is not None:
            return self._clock
        assert self._meta is not None
        n = (len(self._meta) - _SPANS.size) // 8
        return struct.unpack_from(f"<{n}q", self._meta, _SPANS.size)

    def freshness_at(self, now_ms: int | None) -> tuple[dict[str, Any], bool] | None:
        """The freshness block judged as of ``now_ms`` (the source clock) and whether a stream
        is stale; None when ``now_ms`` is None or the envelope carries no freshness to judge
        (then it is served as stored). The same judgement as `api.app.refresh`."""
        if now_ms is None or self._meta is None:
            return None
        ts = self.timestamp_ms
        assert ts is not None
        as_of = now_ms if now_ms > ts else ts
        clocks = self._clocks()
        packed = self._clock is None
        streams: dict[str, Any] = {}
        present = stale = False
        for i, name in enumerate(self._names):
            last, recv, interval = clocks[3 * i : 3 * i + 3]
            if packed:
                last = None if last == _NONE else last
                recv = None if recv == _NONE else recv
                interval = None if interval == _NONE else interval
            judged = judge_stream(_STREAM_OF[name], last, recv, interval, as_of)
            streams[name] = stream_block(judged)
            present |= judged.status is not FreshnessStatus.MISSING
            stale |= judged.status is FreshnessStatus.STALE
        status = _STALE if stale else _OK if present else _MISSING
        return {"as_of_ms": as_of, "status": status, "streams": streams}, stale

    def status_at(self, now_ms: int | None) -> Any:
        """The overall freshness status as of ``now_ms`` (as stored when it cannot be judged)."""
        judged = self.freshness_at(now_ms)
        return self.status if judged is None else judged[0]["status"]

    def actionable_at(self, now_ms: int | None) -> Any:
        """``edge.actionable`` as served at ``now_ms`` (False once an input went stale)."""
        if self.actionable:
            judged = self.freshness_at(now_ms)
            meta = self._meta
            if judged is not None and judged[1] and meta and _SPANS.unpack_from(meta)[2] >= 0:
                return False
        return self.actionable

    def json_at(self, now_ms: int | None) -> bytes:
        """The envelope's JSON with freshness judged as of ``now_ms``: the new freshness block
        (and, when an input went stale, ``edge.actionable`` false and ``STALE_INPUT`` appended
        to ``edge.explain``) spliced into the stored bytes; never parsed again."""
        judged = self.freshness_at(now_ms)
        raw = self.raw
        if judged is None:
            return raw
        assert self._meta is not None
        fresh, stale = judged
        fs, fe, a0, a1, close, flags = _SPANS.unpack_from(self._meta)
        block = _dumps(fresh)
        if not (stale and a0 >= 0):
            return b"".join((raw[:fs], block, raw[fe:]))
        # Stale now: STALE_INPUT is listed whether or not the bar was actionable, and an
        # actionable bar is not any more.
        edits = [(fs, fe, block)]
        if self.actionable:
            edits.append((a0, a1, b"false"))
        if not flags & _STALE_LISTED:
            edits.append(
                (close, close, _STALE_ITEM if flags & _EXPLAIN_EMPTY else b"," + _STALE_ITEM)
            )
        edits.sort(key=lambda x: x[0])
        out: list[bytes] = []
        at = 0
        for start, end, data in edits:
            out.append(raw[at:start])
            out.append(data)
            at = end
        out.append(raw[at:])
        return b"".join(out)


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
