"""The push channel behind ``GET /v1/stream``: fan-out of new envelopes to SSE clients.

The wire contract (what a client reads) is written down in `api.sse`, with the ``dropped`` frame,
the ``retry:`` prelude and the shutdown hook, whose names are re-exported here; this module is how
stored envelopes reach the subscribers. It stays whole past ~400 lines because it is one
mechanism: `Broadcaster`, its per-loop `_Fanout`, `Subscription` and `_Run` call into each other
on every batch and only make sense together.

How it stays cheap and never slows the flow:

- The store calls each event loop's `_Fanout.notify` from the writer (sink) thread with every
  batch of new entries; ``notify`` only schedules one callback on that loop
  (``loop.call_soon_threadsafe``, which never blocks) and does nothing at all when the loop has
  no subscribers. The callback appends to each subscriber's bounded queue and wakes it.
- A subscriber is one coroutine parked on a future: no thread, no polling, no timer of its
  own (one timer per event loop, every ``keepalive_s / 4``, wakes the clients that have been
  idle for ``keepalive_s`` to send their ping). Each event is rendered and encoded once, and a
  batch the writer stored goes to every client that takes all of it as the same bytes.
- A subscriber that is behind (still holding queued events) and whose queue a new batch would
  overflow is told (``dropped``) and removed; nothing is buffered without bound. A subscriber
  that has taken everything takes the next batch whole, however large: a batch is at most one
  envelope per coin per bar closed, and a whole market closing a few bars at once exceeds the
  default queue without any client being slow. (A client that reads nothing at all keeps only
  its socket, with at most the transport's high-water mark of bytes, until it reads or goes
  away: its subscription and queue are gone.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from fastapi.sse import KEEPALIVE_COMMENT

from api.sse import (
    REASON_EVICTED,
    REASON_RESTARTED,
    REASON_SLOW,
    RETRY_MS,
    close_streams_on_exit,
    dropped_event,
    with_retry,
)
from connectors.store import Envelope, SignalStore, StoredEnvelope, StreamEntry, event_id

log = logging.getLogger(__name__)

DEFAULT_KEEPALIVE_S: Final = 15.0
"""Seconds of silence after which a ``: ping`` comment is sent."""

DEFAULT_QUEUE_SIZE: Final = 1024
"""Events a client may be behind before it is dropped."""

MAX_CHUNK_EVENTS: Final = 64
"""Queued events written to the socket in one chunk at most."""

Refresh = Callable[[Envelope, int | None], Envelope]
"""Re-judges an envelope's freshness as of a source-clock time (`api.signals.refresh`)."""

Render = Callable[[StoredEnvelope, int | None], bytes]
"""A stored envelope's JSON with freshness judged as of a source-clock time."""


def render_stored(rec: StoredEnvelope, now_ms: int | None) -> bytes:
    """`connectors.store.StoredEnvelope.json_at`: the stored bytes, freshness spliced in."""
    return rec.json_at(now_ms)


def change_key(env: Envelope) -> tuple[Any, Any, Any]:
    """What ``on=change`` compares: regime label, direction, actionable flag."""
    return env["regime"]["label"], env["direction"], env["edge"]["actionable"]


def stored_change_key(rec: StoredEnvelope, now_ms: int | None) -> tuple[Any, Any, Any]:
    """`change_key` of a stored envelope served as of ``now_ms`` (from its typed fields)."""
    return rec.label, rec.direction, rec.actionable_at(now_ms)


class _Run:
    """Consecutive entries queued for a client, encoded once (shared by every client that
    takes the whole batch the writer stored, the common case). Entries keep no encoded frame
    (the ring would hold ~4 KB more per entry); a client whose filter takes part of a batch, or
    a resume from the ring, splices the stored bytes again (a few microseconds)."""

    __slots__ = ("_data", "entries", "last")

    def __init__(self, entries: tuple[StreamEntry, ...] | list[StreamEntry]) -> None:
        self.entries = entries
        self.last = entries[-1]
        self._data: bytes | None = None

    def data(self, owner: Broadcaster) -> bytes:
        """The ``signal`` frames of the run, concatenated."""
        if self._data is None:
            self._data = b"".join(f for e in self.entries if (f := owner.frame(e)) is not None)
        return self._data


class _Notice:
    """A ``dropped`` event queued mid-stream (`REASON_STORE_GAP`): it takes no place in the
    sequence and the stream goes on."""

    __slots__ = ("missed", "reason")

    def __init__(self, missed: int, reason: str) -> None:
        self.missed = missed
        self.reason = reason


class Subscription:
    """One SSE client: its filter, bounded queue and progress (touched on its loop only).

    Args:
        coins: the coins it wants (exact names), or None for every coin.
        changes_only: only envelopes whose change key differs from the coin's previous one.
        last_id: the ``Last-Event-ID`` it resumes after, or None for new events only.
        queue_size: events it may be behind before it is dropped.

    ``last_sent`` is the id of the last event the client was sent (or, before any, the id it
    resumed after, or the newest event when it subscribed): the ``dropped`` event's ``last_id``.
    """

    __slots__ = (
        "after",
        "changes_only",
        "closed",
        "coins",
        "dropped",
        "last_id",
        "last_sent",
        "last_write",
        "ping",
        "queue",
        "queue_size",
        "queued",
        "run",
        "waiter",
    )

    def __init__(
        self,
        coins: frozenset[str] | None,
        changes_only: bool,
        last_id: str | None,
        queue_size: int,
    ) -> None:
        self.coins = coins
        self.changes_only = changes_only
        self.last_id = last_id
        self.queue_size = queue_size
        self.queue: deque[_Run | _Notice] = deque()
        self.queued = 0
        self.after = 0
        self.run = ""
        self.last_sent: StreamEntry | str = last_id or ""
        self.last_write = 0.0
        self.ping = False
        self.dropped: int | None = None
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        """Resume the client's coroutine if it is waiting."""
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


class _Fanout:
    """The subscribers on one event loop, and its one keep-alive timer."""

    def __init__(self, owner: Broadcaster, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.loop = loop
        self.subs: set[Subscription] = set()
        self._sweep: asyncio.TimerHandle | None = None

    def add(self, sub: Subscription) -> None:
        """Register a subscriber (on the loop) and make sure the keep-alive timer runs."""
        sub.last_write = self.loop.time()
        self.subs.add(sub)
        if self._sweep is None:
            self._sweep = self.loop.call_later(self.owner.sweep_s, self.sweep)

    def sweep(self) -> None:
        """Wake the subscribers idle for ``keepalive_s`` so they send a ping (on the loop)."""
        if not self.subs:
            self._sweep = None
            return
        due = self.loop.time() - self.owner.keepalive_s
        for sub in self.subs:
            if sub.waiter is not None and sub.last_write <= due:
                sub.ping = True
                sub.wake()
        self._sweep = self.loop.call_later(self.owner.sweep_s, self.sweep)

    def notify(self, batch: tuple[StreamEntry, ...]) -> bool:
        """Store listener (writer thread, under the store's lock): schedule, never block."""
        if self.loop.is_closed():
            return False
        if self.subs:
            try:
                self.loop.call_soon_threadsafe(self.dispatch, batch)
            except RuntimeError:  # the loop closed in between
                return False
        return True

    def notify_gap(self, missed: int, reason: str) -> None:
        """Gap listener (any thread): schedule a ``dropped`` notice for every subscriber."""
        if self.loop.is_closed():
            return
        if self.subs:
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                self.loop.call_soon_threadsafe(self.dispatch_gap, missed, reason)

    def dispatch_gap(self, missed: int, reason: str) -> None:
        """Queue the notice for every subscriber (on the loop)."""
        for sub in tuple(self.subs):
            sub.queue.append(_Notice(missed, reason))
            sub.wake()

    def dispatch(self, batch: tuple[StreamEntry, ...]) -> None:
        """Queue a batch for every subscriber that wants it (on the loop)."""
        owner = self.owner
        whole: _Run | None = None
        first = batch[0].seq
        for sub in tuple(self.subs):
            if sub.run != batch[0].run:  # the store started a new run: numbers restart
                sub.run = batch[0].run
                sub.after = 0
            if sub.coins is None and not sub.changes_only and sub.after < first:
                accepted: tuple[StreamEntry, ...] | list[StreamEntry] = batch
            else:
                accepted = [e for e in batch if e.seq > sub.after and owner.wants(sub, e)]
                if not accepted:
                    continue
            if len(accepted) == len(batch):
                whole = whole or _Run(batch)
                run = whole
            else:
                run = _Run(accepted)
            # Slow means behind: a client that has taken everything so far takes the next batch
            # whole, however large (one flush of the whole market can exceed the queue); one
            # that is still holding events is dropped once the batch would take it past its queue.
            if sub.queued and sub.queued + len(accepted) > sub.queue_size:
                sub.dropped = sub.queued + len(accepted)
                sub.queue.clear()
                sub.queued = 0
                self.subs.discard(sub)
                owner.slow_clients += 1
                log.info(
                    "SSE client dropped: %d events behind (queue of %d)",
                    sub.dropped,
                    sub.queue_size,
                )
            else:
                sub.queue.append(run)
                sub.queued += len(accepted)
            sub.wake()

    def close_all(self) -> None:
        """End every stream on this loop (on the loop)."""
        for sub in tuple(self.subs):
            sub.closed = True
            sub.wake()
        self.subs.clear()


class Broadcaster:
    """Fans stored envelopes out to SSE subscribers (one per app).

    Args:
        store: the store whose new entries are pushed.
        render: an entry's JSON with freshness judged as of the store time (default: the
            stored bytes with the freshness block spliced in).
        keepalive_s: seconds of silence before a ``: ping`` comment.
        queue_size: events a client may be behind before it is dropped.
    """

    def __init__(
        self,
        store: SignalStore,
        render: Render = render_stored,
        *,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        if keepalive_s <= 0:
            msg = f"keepalive_s must be positive, got {keepalive_s}"
            raise ValueError(msg)
        if queue_size < 1:
            msg = f"queue_size must be at least 1, got {queue_size}"
            raise ValueError(msg)
        self.store = store
        self.render = render
        self.keepalive_s = keepalive_s
        self.sweep_s = max(0.01, keepalive_s / 4)
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._fanouts: dict[asyncio.AbstractEventLoop, _Fanout] = {}
        self.connections = 0
        self.slow_clients = 0
        self.resume_gaps = 0
        self.store_gaps = 0
        """``dropped`` notices sent mid-stream for envelopes a shared store's writer lost."""

    # -- rendering (once per entry, shared by every client) -----------------------------------

    def frame(self, e: StreamEntry) -> bytes | None:
        """The encoded ``event: signal`` frame of an entry (None if it cannot be rendered)."""
        try:
            data = self.render(e.rec, e.now_ms)
        except Exception:
            log.exception("cannot render stream entry %d (%s)", e.seq, e.coin)
            return None
        return b"event: signal\ndata: " + data + b"\nid: " + e.id.encode() + b"\n\n"

    def changed(self, e: StreamEntry) -> bool:
        """Whether the entry's change key differs from its coin's previous envelope."""
        cached = e.changed
        if cached is None:
            if e.prev is None:
                cached = True
            else:
                try:
                    now = stored_change_key(e.rec, e.now_ms)
                    before = stored_change_key(e.prev, e.prev_now_ms)
                    cached = now != before
                except Exception:
                    log.exception("cannot compare stream entry %d (%s)", e.seq, e.coin)
                    cached = True
            e.changed = cached
        return cached

    def wants(self, sub: Subscription, e: StreamEntry) -> bool:
        """Whether a subscriber's filter lets an entry through."""
        if sub.coins is not None and e.coin not in sub.coins:
            return False
        return not sub.changes_only or self.changed(e)

    # -- subscribers ---------------------------------------------------------------------------

    @property
    def subscribers(self) -> int:
        """Open streams (every loop)."""
        with self._lock:
            fanouts = list(self._fanouts.values())
        return sum(len(f.subs) for f in fanouts)

    def _fanout(self) -> _Fanout:
        loop = asyncio.get_running_loop()
        with self._lock:
            for old in [lp for lp in self._fanouts if lp.is_closed()]:
                gone = self._fanouts.pop(old)
                self.store.remove_listener(gone.notify)
                self.store.remove_gap_listener(gone.notify_gap)
            fan = self._fanouts.get(loop)
            if fan is None:
                fan = self._fanouts[loop] = _Fanout(self, loop)
                self.store.add_listener(fan.notify)
                self.store.add_gap_listener(fan.notify_gap)
            return fan

    def close_all(self) -> None:
        """End every open stream (thread-safe; e.g. before a graceful server shutdown, which
        otherwise waits for streaming responses to finish)."""
        with self._lock:
            fanouts = list(self._fanouts.values())
        for fan in fanouts:
            if not fan.loop.is_closed():
                try:
                    fan.loop.call_soon_threadsafe(fan.close_all)
                except RuntimeError:
                    continue

    async def events(
        self,
        coins: frozenset[str] | None = None,
        *,
        changes_only: bool = False,
        last_id: str | None = None,
    ) -> AsyncIterator[bytes]:
        """The encoded SSE stream of one client (runs until it disconnects or is dropped).

        Args:
            coins: exact coin names to pass, or None for all.
            changes_only: only envelopes whose regime label, direction or actionable flag
                differs from the coin's previous envelope.
            last_id: resume after this id (``Last-Event-ID``, ``<run>:<seq>``), or None for
                new events only. An id of another run (or none this service issues) gets
                ``dropped`` (``restarted``) and the events still held; one older than the ring
                gets the events a shared store still holds (`SignalStore.backfill`), else
                ``dropped`` (``history_evicted``) and the oldest held.
        """
        sub = Subscription(coins, changes_only, last_id, self.queue_size)
        fan = self._fanout()
        loop = fan.loop
        fan.add(sub)  # before the snapshot: nothing stored after it can be missed
        self.connections += 1
        try:
            r = self.store.since(last_id)
            backlog = r.entries
            sub.after = r.head  # anything up to head comes from the backlog (or not at all)
            sub.run = r.run
            if last_id is None:
                sub.last_sent = event_id(r.run, r.head)
            elif r.after is None:
                self.resume_gaps += 1
                yield dropped_event(r.first - 1, last_id, REASON_RESTARTED)
            elif r.first > r.after + 1:
                older = None
                if self.store.backfill is not None:
                    older = await self.store.backfill(r.run, r.after, r.first)
                if older is not None and (not older or older[0].seq == r.after + 1):
                    backlog = [*older, *backlog]
                else:
                    self.resume_gaps += 1
                    yield dropped_event(r.first - 1 - r.after, last_id, REASON_EVICTED)
            chunk: list[bytes] = []
            for e in backlog:
                if self.wants(sub, e) and (f := self.frame(e)) is not None:
                    chunk.append(f)
                    sub.last_sent = e
                if len(chunk) >= MAX_CHUNK_EVENTS:
                    yield b"".join(chunk)
                    chunk = []
                    # Let the loop see a disconnect: writing to a socket the peer closed does
                    # not block, so without a turn of the loop the whole backlog would be
                    # rendered and written into it (and asyncio logs every failed write).
                    await asyncio.sleep(0)
            if chunk:
                yield b"".join(chunk)
            while True:
                if sub.dropped is not None:
                    n = sub.queue_size
                    sent = sub.last_sent
                    last = sent if isinstance(sent, str) else sent.id
                    yield dropped_event(sub.dropped, last, REASON_SLOW.format(n=n))
                    return
                if sub.closed:
                    return
                if sub.queue:
                    head = sub.queue.popleft()
                    if isinstance(head, _Notice):
                        self.store_gaps += 1
                        sent = sub.last_sent
                        last = sent if isinstance(sent, str) else sent.id
                        sub.last_write = loop.time()
                        yield dropped_event(head.missed, last, head.reason)
                        continue
                    run = head
                    taken = len(run.entries)
                    data = run.data(self)
                    if sub.queue and taken < MAX_CHUNK_EVENTS:
                        parts = [data]
                        while sub.queue and taken < MAX_CHUNK_EVENTS:
                            nxt = sub.queue[0]
                            if isinstance(nxt, _Notice):
                                break  # sent on its own, after what came before it
                            sub.queue.popleft()
                            run = nxt
                            taken += len(run.entries)
                            parts.append(run.data(self))
                        data = b"".join(parts)
                    sub.queued -= taken
                    sub.last_sent = run.last
                    sub.last_write = loop.time()
                    sub.ping = False
                    if data:
                        yield data
                        if sub.queue:
                            await asyncio.sleep(0)  # as in the backlog: see a disconnect
                    continue
                if sub.ping:
                    sub.ping = False
                    sub.last_write = loop.time()
                    yield KEEPALIVE_COMMENT
                    continue
                waiter: asyncio.Future[None] = loop.create_future()
                sub.waiter = waiter
                try:
                    await waiter
                finally:
                    sub.waiter = None
        finally:
            fan.subs.discard(sub)


__all__ = [
    "DEFAULT_KEEPALIVE_S",
    "DEFAULT_QUEUE_SIZE",
    "MAX_CHUNK_EVENTS",
    "REASON_EVICTED",
    "REASON_RESTARTED",
    "REASON_SLOW",
    "RETRY_MS",
    "Broadcaster",
    "Refresh",
    "Render",
    "Subscription",
    "change_key",
    "close_streams_on_exit",
    "dropped_event",
    "render_stored",
    "stored_change_key",
    "with_retry",
]
