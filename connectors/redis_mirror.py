"""The shared store on Redis, API side: a local mirror every route serves from (redis.asyncio).

One `RedisMirror` per API process is one background asyncio task and the only reader of Redis
(the routes never wait on Redis): it loads the latest history of every coin (at most
``HLSL_HISTORY_LIMIT``) and the tail of the event stream into a local `SignalStore`
(`SignalStore.replace_all`), then follows the event stream with ``XREAD BLOCK`` (`BLOCK_MS`)
and feeds each new entry with the sequence number Redis gave it (`SignalStore.put_external`), so
SSE ids (``<run>:<seq>``) are the same on every replica and a ``Last-Event-ID`` resumes across
an API restart and across replicas. A resume older than the local ring reads the event stream
(`backfill`, ``XRANGE``). About once a second it reads the flow processes' counters
(``P:proc:*``) into the store: state, errors, source counters, signals, late events, source
clock, lag, and each writer's buffer and drops, for ``/health``, ``/metrics`` and ``/v1/state``.

While Redis cannot be read the store's ``unavailable`` says why (data routes answer 503 with it,
``/health`` too) and the mirror retries with backoff; when Redis answers again it goes on from
the last sequence number it had, so open SSE streams get everything written meanwhile, in
order. A new run, or entries trimmed before they were read (a mirror away longer than the event
stream holds), are loaded whole instead: open streams then continue with the new entries only.
Keys: `connectors.redis_store`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any, Final

import orjson
import redis
import redis.asyncio as aredis

from connectors.redis_store import (
    HEARTBEAT_TTL_MS,
    Keys,
    client_options,
    describe_error,
)
from connectors.store import (
    LAG_BUCKETS_S,
    External,
    LagHistogram,
    RunState,
    SignalStore,
    StoredEnvelope,
    StreamEntry,
)
from connectors.store_url import redact_url

REASON_STORE_GAP: Final = (
    "store_gap: flow process {who} dropped envelopes it could not write to the shared store "
    "(unreachable past its buffer); they never got an id, so no resume can fetch them; the "
    "stream continues"
)

log = logging.getLogger(__name__)

BLOCK_MS: Final = 100
"""``XREAD BLOCK`` timeout: how long the tail waits for new entries before it checks the run."""

READ_COUNT: Final = 1000
"""Event-stream entries read per ``XREAD`` at most."""

COUNTERS_EVERY_S: Final = 1.0
"""How often the flow processes' counters are read."""

SILENT_AFTER_MS: Final = 5_000
"""A running flow process that has not reported for this long is reported by ``/health``."""

LAG_SAMPLES: Final = 2048
"""Recent mirror lags kept for the percentiles."""

_STATE_ORDER: Final = (RunState.FAILED, RunState.RUNNING, RunState.STARTING, RunState.STOPPED)


def _seq(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[2])


def _int(value: bytes | None) -> int | None:
    return int(value) if value else None


def _sum_dicts(docs: Sequence[dict[str, Any]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in docs:
        total.update({k: int(v) for k, v in d.items()})
    return dict(sorted(total.items()))


def merge_source_info(infos: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The source counters of several flow processes as one (sums, unions, the newest time)."""
    if not infos:
        return {}
    latest = [int(i["latest_event_ms"]) for i in infos if i.get("latest_event_ms") is not None]
    return {
        "kind": infos[0].get("kind", "none"),
        "files": sorted({f for i in infos for f in i.get("files", [])}),
        "lines_read": sum(int(i.get("lines_read", 0)) for i in infos),
        "frames_by_channel": _sum_dicts([i.get("frames_by_channel", {}) for i in infos]),
        "control_frames": _sum_dicts([i.get("control_frames", {}) for i in infos]),
        "lines_skipped": _sum_dicts([i.get("lines_skipped", {}) for i in infos]),
        "duplicate_trades": sum(int(i.get("duplicate_trades", 0)) for i in infos),
        "ignored_coin_events": sum(int(i.get("ignored_coin_events", 0)) for i in infos),
        "errors": [e for i in infos for e in i.get("errors", [])],
        "finished": all(bool(i.get("finished")) for i in infos),
        "latest_event_ms": max(latest) if latest else None,
        "connections": [c for i in infos for c in i.get("connections", [])],
    }


def _lag_from(snapshot: Any) -> LagHistogram:
    """A `LagHistogram` back from its cumulative ``snapshot()`` (as a process wrote it)."""
    hist = LagHistogram()
    try:
        buckets, total = snapshot
        prev = 0
        for i, (_le, cum) in enumerate(buckets[: len(LAG_BUCKETS_S) + 1]):
            hist.counts[i] = int(cum) - prev
            prev = int(cum)
        hist.total = float(total)
        hist.count = prev
    except (TypeError, ValueError):
        return LagHistogram()
    return hist


class RedisMirror:
    """Keeps ``store`` equal to the shared store under ``prefix`` (see the module).

    Args:
        url: the store URL.
        prefix: the key prefix.
        store: the local store every route serves from.
        timeout_ms: every call times out after this (the blocking read after ``BLOCK_MS`` more).
        history_limit: envelopes per coin loaded at most.
        ring_size: event-stream entries loaded at most.
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        store: SignalStore,
        *,
        timeout_ms: int,
        history_limit: int,
        ring_size: int,
    ) -> None:
        self.url = url
        self.shown = redact_url(url)
        self.keys = Keys(prefix)
        self.store = store
        self.timeout_ms = timeout_ms
        self.history_limit = history_limit
        self.ring_size = ring_size
        self.run: str | None = None
        self.head = 0
        self.connected = False
        self.loaded = asyncio.Event()
        self.last_error: str | None = None
        self.down_since: float | None = time.monotonic()
        self.outages = 0
        self.reloads = 0
        self.procs: dict[str, dict[str, Any]] = {}
        self.lags_ms: deque[float] = deque(maxlen=LAG_SAMPLES)
        self.last_lag_ms: float | None = None
        self._max_now: int | None = None
        self._procs_clock: int | None = None
        self._client: aredis.Redis | None = None
        self._tail: aredis.Redis | None = None
        store.unavailable = f"loading from the store {self.shown}"
        store.source_clock = self._source_clock
        store.source_info = self._source_info
        store.backfill = self.backfill
        self._info: dict[str, Any] = {}
        self._stopping = False
        self._gap_id = "0-0"
        self.gaps_seen = 0

    # -- what the store reads -----------------------------------------------------------------

    def _source_clock(self) -> int | None:
        # The slowest flow process's clock (each replays its own partition at its own pace: a
        # faster one's clock would judge the slower one's coins stale); before any process
        # reported, the newest clock an entry carried.
        if self._procs_clock is not None:
            return self._procs_clock
        return self._max_now

    def _source_info(self) -> dict[str, Any]:
        return self._info

    def status(self) -> dict[str, Any]:
        """The mirror and the writers, for ``/health``, ``/v1/state`` and ``/metrics``."""
        writers = {name: p.get("writer") or {} for name, p in self.procs.items()}
        now_ms = time.time() * 1000
        silent = sorted(
            name
            for name, p in self.procs.items()
            if p.get("state") in ("running", "starting")
            and now_ms - float(p.get("updated_ms") or 0) > SILENT_AFTER_MS
        )
        lags = sorted(self.lags_ms)
        return {
            "kind": "redis",
            "url": self.shown,
            "prefix": self.keys.prefix,
            "run": self.run,
            "connected": self.connected,
            "last_error": self.last_error,
            "down_for_s": None
            if self.down_since is None
            else round(time.monotonic() - self.down_since, 3),
            "outages": self.outages,
            "reloads": self.reloads,
            "head_seq": self.head,
            "mirror_lag_ms": {
                "last": self.last_lag_ms,
                "p50": lags[len(lags) // 2] if lags else None,
                "p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else None,
            },
            "processes": sorted(self.procs),
            "silent_processes": silent,
            "buffered": sum(int(w.get("buffered") or 0) for w in writers.values()),
            "dropped": sum(int(w.get("dropped") or 0) for w in writers.values()),
            "gaps_reported": self.gaps_seen,
            "writers_disconnected": sorted(n for n, w in writers.items() if not w.get("connected")),
        }

    # -- the task -----------------------------------------------------------------------------

    def _clients(self) -> tuple[aredis.Redis, aredis.Redis]:
        if self._client is None or self._tail is None:
            opts = client_options(self.timeout_ms)
            self._client = aredis.Redis.from_url(self.url, **opts)
            tail_opts = dict(opts)
            tail_opts["socket_timeout"] = (self.timeout_ms + BLOCK_MS) / 1000
            self._tail = aredis.Redis.from_url(self.url, **tail_opts)
        return self._client, self._tail

    async def close(self) -> None:
        """Close the connections (bounded: a connection cancelled mid-read may not close
        cleanly, and stopping must never hang)."""
        clients, self._client, self._tail = (self._client, self._tail), None, None
        for c in clients:
            if c is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(c.aclose(), self.timeout_ms / 1000)

    async def run_forever(self) -> None:
        """Load, then follow the store until cancelled; reconnect with backoff on errors."""
        delay = 0.1
        must_load = True
        try:
            while not self._stopping:
                try:
                    client, tail = self._clients()
                    if must_load:
                        await self.load(client)
                        must_load = False
                    # after an outage the same run goes on from `head`: open streams get
                    # everything written meanwhile, in order (a reload would skip them)
                    next_counters = 0.0
                    while not self._stopping:
                        if time.monotonic() >= next_counters:
                            await self.read_counters(client)
                            next_counters = time.monotonic() + COUNTERS_EVERY_S
                        if not await self.follow(tail):
                            self.reloads += 1
                            must_load = True
                            break  # a new run, or entries trimmed before they were read
                        if not self.connected:  # only once Redis has answered again
                            self._up()
                            delay = 0.1
                except (TimeoutError, redis.RedisError, OSError) as ex:
                    self._down(ex)
                    await self.close()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        finally:
            await self.close()

    def _up(self) -> None:
        if not self.connected and self.down_since is not None and self.outages:
            log.warning(
                "store %s readable again after %.1f s",
                self.shown,
                time.monotonic() - self.down_since,
            )
        self.connected = True
        self.down_since = None
        self.store.unavailable = None
        self.loaded.set()

    def _down(self, ex: BaseException) -> None:
        self.last_error = describe_error(ex)
        if self.connected:
            self.outages += 1
            self.down_since = time.monotonic()
            log.warning("store %s unreachable (%s); retrying", self.shown, self.last_error)
        self.connected = False
        self.store.unavailable = (
            f"the shared store {self.shown} is unreachable ({self.last_error}): this server "
            "cannot vouch for its data"
        )

    async def load(self, client: aredis.Redis) -> None:
        """Take the whole current state of the store into the local one."""
        k = self.keys
        raw_run: Any = await client.get(k.run)
        run = raw_run.decode() if raw_run else ""
        tail: Any = await client.xrevrange(k.events, count=self.ring_size)
        ring = [self._external(eid, f) for eid, f in reversed(tail)]
        raw_seq: Any = await client.get(k.seq)
        head = ring[-1].seq if ring else _int(raw_seq) or 0
        members: Any = await client.smembers(k.coins)
        coins = sorted(c.decode() for c in members)
        history: dict[str, list[External]] = {}
        evicted: dict[str, int] = {}
        for i in range(0, len(coins), 32):
            group = coins[i : i + 32]
            pipe = client.pipeline(transaction=False)
            for coin in group:
                pipe.xrevrange(k.hist(coin), count=self.history_limit)
                pipe.xlen(k.hist(coin))
            out = await pipe.execute()
            for j, coin in enumerate(group):
                entries, length = out[2 * j], int(out[2 * j + 1])
                items = []
                for eid, f in reversed(entries):
                    seq = _int(f.get(b"s")) or 0
                    if seq <= head:
                        items.append(self._hist_item(coin, eid, f, seq))
                history[coin] = items
                if items and length > len(entries):
                    ts = items[0].rec.timestamp_ms
                    if ts is not None:
                        evicted[coin] = ts - 1
        gaps: Any = await client.xrevrange(k.gaps, count=1)
        self._gap_id = gaps[0][0].decode() if gaps else "0-0"  # earlier gaps are history
        self.store.replace_all(run, history, ring, head, evicted)
        self.run = run
        self.head = head
        for entry in ring:
            self._saw(entry)
        await self.read_counters(client)

    def _external(self, eid: bytes, f: dict[bytes, bytes]) -> External:
        return External(
            _seq(eid), f[b"c"].decode(), StoredEnvelope.from_json(f[b"d"]), _int(f.get(b"n"))
        )

    def _hist_item(self, coin: str, eid: bytes, f: dict[bytes, bytes], seq: int) -> External:
        return External(seq, coin, StoredEnvelope.from_json(f[b"d"]), _int(f.get(b"n")))

    def _saw(self, entry: External) -> None:
        if entry.now_ms is not None and (self._max_now is None or entry.now_ms > self._max_now):
            self._max_now = entry.now_ms

    async def follow(self, tail: aredis.Redis) -> bool:
        """Read what came after ``head`` (waiting up to `BLOCK_MS`); False when the run changed
        or entries were trimmed before they were read (then `load` again)."""
        k = self.keys
        pipe = tail.pipeline(transaction=False)
        pipe.get(k.run)
        pipe.xread({k.events: f"0-{self.head}"}, count=READ_COUNT, block=BLOCK_MS)
        raw_run, got = await pipe.execute()
        run = raw_run.decode() if raw_run else ""
        if run != self.run:
            return False
        if not got:
            return True
        entries = got[0][1]
        items = [self._external(eid, f) for eid, f in entries]
        if items and items[0].seq != self.head + 1:
            return False
        wall_ms = time.time() * 1000
        for (_eid, f), item in zip(entries, items, strict=True):
            t = _int(f.get(b"t"))
            if t is not None:
                self.last_lag_ms = max(0.0, wall_ms - t)
                self.lags_ms.append(self.last_lag_ms)
            self._saw(item)
        self.store.put_external(run, items)
        self.head = items[-1].seq
        return True

    async def read_counters(self, client: aredis.Redis) -> None:
        """Read every flow process's counters into the store."""
        members: Any = await client.smembers(self.keys.procs)
        names = sorted(p.decode() for p in members)
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.keys.proc(name))
        docs = await pipe.execute()
        procs: dict[str, dict[str, Any]] = {}
        for name, doc in zip(names, docs, strict=True):
            if doc:
                procs[name] = {k.decode(): orjson.loads(v) for k, v in doc.items()}
        self.procs = procs
        self._apply(list(procs.values()))
        gaps: Any = await client.xrange(self.keys.gaps, min=f"({self._gap_id}")
        for gid, f in gaps:
            self._gap_id = gid.decode()
            n = int(f.get(b"n") or 0)
            if n > 0:
                self.gaps_seen += n
                who = (f.get(b"p") or b"?").decode()
                self.store.report_gap(n, REASON_STORE_GAP.format(who=who))

    def _apply(self, docs: list[dict[str, Any]]) -> None:
        s = self.store
        states = {str(d.get("state")) for d in docs}
        if not docs:
            s.state = RunState.STARTING
        else:
            s.state = next(
                (st for st in _STATE_ORDER if st.value in states),
                RunState.FINISHED,
            )
        errors = [f"{d.get('process')}: {d['error']}" for d in docs if d.get("error")]
        s.error = "; ".join(errors) or None
        if docs:
            s.mode = str(docs[0].get("mode") or s.mode)
        s.signals_emitted = sum(int(d.get("signals_emitted") or 0) for d in docs)
        s.emitted_by_coin = Counter(_sum_dicts([d.get("emitted_by_coin") or {} for d in docs]))
        s.late_events = Counter(_sum_dicts([d.get("late_events") or {} for d in docs]))
        if docs and s.mode == "live":
            lag = LagHistogram()
            for d in docs:
                one = _lag_from(d.get("lag"))
                lag.counts = [a + b for a, b in zip(lag.counts, one.counts, strict=True)]
                lag.total += one.total
                lag.count += one.count
            s.lag = lag
        clocks = [int(d["source_clock_ms"]) for d in docs if d.get("source_clock_ms") is not None]
        self._procs_clock = min(clocks) if clocks else None
        self._info = merge_source_info([d.get("source_info") or {} for d in docs])
        for d in docs:
            for coin in d.get("coins") or []:
                s.note_coin(coin)
        started = [int(d["started_ms"]) for d in docs if d.get("started_ms")]
        if started:
            s.started_wall_s = min(started) / 1000

    async def backfill(self, run: str, after: int, before: int) -> list[StreamEntry] | None:
        """Entries ``after < seq < before`` of ``run`` from the event stream, or None when the
        run is not the current one or the stream no longer holds all of them."""
        if run != self.run or self._client is None or before <= after + 1:
            return None
        try:
            got: Any = await self._client.xrange(
                self.keys.events, min=f"(0-{after}", max=f"(0-{before}"
            )
        except (TimeoutError, redis.RedisError, OSError):
            return None
        items = [self._external(eid, f) for eid, f in got]
        if not items or items[0].seq != after + 1 or items[-1].seq != before - 1:
            return None
        return [StreamEntry(i.seq, i.coin, i.rec, i.now_ms, None, None, run) for i in items]


async def start_mirror(mirror: RedisMirror, wait_s: float) -> asyncio.Task[None]:
    """Start the mirror's task and wait up to ``wait_s`` for its first load."""
    mirror._stopping = False
    task = asyncio.create_task(mirror.run_forever(), name="redis-mirror")
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(mirror.loaded.wait(), wait_s)
    return task


async def stop_mirror(mirror: RedisMirror, task: asyncio.Task[None]) -> None:
    """Stop the mirror's task. A cancellation that lands inside a redis-py read can be taken
    for a connection error and swallowed, so the task also stops at its next turn (within
    `BLOCK_MS` plus the timeout) on a flag; the wait is bounded either way."""
    mirror._stopping = True
    task.cancel()
    limit = (BLOCK_MS + 2 * mirror.timeout_ms) / 1000 + 1
    with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
        await asyncio.wait_for(task, limit)


__all__ = [
    "BLOCK_MS",
    "HEARTBEAT_TTL_MS",
    "RedisMirror",
    "merge_source_info",
    "start_mirror",
    "stop_mirror",
]
