"""The shared store on Redis, flow side: every flow process's sink writes here (redis-py, sync).

Keys, all under the prefix ``P`` (``HLSL_STORE_PREFIX``: ``hlsl:live`` or ``hlsl:replay`` by
default, so a replay never overwrites a live run):

==========================  ======  =========================================================
key                         type    what
==========================  ======  =========================================================
``P:run``                   string  the run id (`connectors.store.new_run_id`), the ``<run>`` of
                                    every SSE id
``P:alive``                 string  the run's heartbeat: a TTL of `HEARTBEAT_TTL_MS` that every
                                    writer refreshes about once a second
``P:writers``               hash    process -> ``running`` / ``done``
``P:seq``                   string  the last sequence number given (the ``<seq>`` of SSE ids)
``P:written``               hash    process -> its last envelope written (retries are idempotent)
``P:events``                stream  entry id ``0-<seq>``; fields ``c`` coin, ``d`` the envelope's
                                    bytes, ``n`` the source clock when stored, ``t`` Redis time
                                    (ms); ``MAXLEN ~`` the SSE ring size
``P:hist:<coin>``           stream  entry id ``<timestamp_ms>-*`` (so a time range is an
                                    ``XRANGE``); fields ``d``, ``s`` seq, ``n``; ``MAXLEN ~``
                                    ``HLSL_HISTORY_LIMIT``
``P:coins`` / ``P:procs``   set     coins with a history; processes with counters
``P:gaps``                  stream  a process dropped ``n`` envelopes (fields ``p``, ``n``,
                                    ``after`` the last seq before): SSE clients get ``dropped``
``P:proc:<process>``        hash    a flow process's counters (`ProcessCounters`), ~1/s
==========================  ======  =========================================================

A run: the first writer of a run finds no live heartbeat (or every writer of the last run
``done``), clears the prefix's keys and sets a new run id; the other processes of the same
cluster run find the heartbeat and a ``running`` writer and join it (`JOIN_SCRIPT`, atomic). The
envelopes of a batch are written by one Lua script (`WRITE_SCRIPT`, atomic): sequence numbers
from ``INCRBY``, one ``XADD`` to the event stream and one to the coin's history each. The stored
bytes are the envelope's bytes as the sink encoded them (`connectors.stored.StoredEnvelope.raw`),
never encoded again.

Faults: the sink never waits for Redis. `RedisWriter.submit` appends to a bounded buffer
(`BUFFER_LIMIT` envelopes) that a background thread writes in chunks; while Redis is unreachable
the flow keeps computing, the buffer fills, then the oldest buffered envelopes are dropped and
counted (``dropped`` in the process's counters, ``/health``, ``/metrics``); when Redis answers
again the buffer is written (a chunk retried after its answer was lost is not written twice:
each process numbers its envelopes and the script skips those already written). Every
call times out after ``HLSL_STORE_TIMEOUT_MS``. At start, an unreachable Redis is retried until
``--start-timeout-s``; a refused password or ACL fails at once (`StoreStartError`).

One module past ~400 lines on purpose: the run's keys, the write script and the writer's
buffering and retries are one protocol with Redis; the mirror that reads it is
`connectors.redis_mirror`.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from connectors.store import DEFAULT_RING_SIZE, new_run_id
from connectors.store_url import redact_url

if TYPE_CHECKING:
    from connectors.store import SignalStore

log = logging.getLogger(__name__)

HEARTBEAT_TTL_MS: Final = 10_000
"""A run whose writers have all been silent this long is over: the next writer starts a new one."""

BUFFER_LIMIT: Final = 10_000
"""Envelopes a flow process holds while Redis is unreachable (~37 MB at ~3.7 KB each; about 55 s
of a 180-coin market at 1 s bars, 55 min of 3 coins); past it the oldest are dropped, counted."""

WRITE_CHUNK: Final = 500
"""Envelopes written by one script call at most."""

COUNTERS_EVERY_S: Final = 1.0
"""How often a flow process writes its counters and refreshes the heartbeat."""

FINISH_TIMEOUT_S: Final = 10.0
"""How long the end of a run waits to write what is buffered."""

FIRST_RETRY_S: Final = 0.25
MAX_RETRY_S: Final = 2.0

JOIN_SCRIPT: Final = """
local p = ARGV[1]
local run = redis.call('GET', p .. ':run')
local alive = redis.call('EXISTS', p .. ':alive') == 1
if run and alive then
  for _, v in ipairs(redis.call('HVALS', p .. ':writers')) do
    if v == 'running' then
      redis.call('HSET', p .. ':writers', ARGV[3], 'running')
      redis.call('SADD', p .. ':procs', ARGV[3])
      redis.call('PEXPIRE', p .. ':alive', ARGV[4])
      return {run, 0}
    end
  end
end
for _, c in ipairs(redis.call('SMEMBERS', p .. ':coins')) do
  redis.call('DEL', p .. ':hist:' .. c)
end
for _, c in ipairs(redis.call('SMEMBERS', p .. ':procs')) do
  redis.call('DEL', p .. ':proc:' .. c)
end
redis.call('DEL', p .. ':coins', p .. ':procs', p .. ':events', p .. ':seq', p .. ':writers',
  p .. ':prev', p .. ':written', p .. ':gaps')
if ARGV[5] ~= '' then redis.call('SET', p .. ':prev', ARGV[5]) end
redis.call('SET', p .. ':run', ARGV[2])
redis.call('HSET', p .. ':writers', ARGV[3], 'running')
redis.call('SADD', p .. ':procs', ARGV[3])
redis.call('SET', p .. ':alive', ARGV[2], 'PX', ARGV[4])
return {ARGV[2], 1}
"""
"""ARGV: prefix, a new run id, this process, heartbeat TTL (ms), the run this one replaces after
Redis lost its data ('' if none: ``P:prev``). Returns ``{run, created}``."""

WRITE_SCRIPT: Final = """
local p = ARGV[1]
local run = redis.call('GET', p .. ':run')
if not run then return {-2, 0} end
if run ~= ARGV[2] then
  if redis.call('GET', p .. ':prev') == ARGV[2] then return {-3, run} end
  return {-1, 0}
end
local t = redis.call('TIME')
local tms = string.format('%.0f', t[1] * 1000 + math.floor(t[2] / 1000))
local done = tonumber(redis.call('HGET', p .. ':written', ARGV[5]) or '0')
local last = 0
local skipped = 0
for b = 6, #ARGV, 5 do
  local k = tonumber(ARGV[b])
  if k > done then
    local coin, ts, now, data = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
    last = redis.call('INCR', p .. ':seq')
    local seq = string.format('%.0f', last)
    redis.call('XADD', p .. ':events', 'MAXLEN', '~', ARGV[3], '0-' .. seq,
      'c', coin, 'd', data, 'n', now, 't', tms)
    local hid = '*'
    if ts ~= '' then hid = ts .. '-*' end
    local ok = redis.pcall('XADD', p .. ':hist:' .. coin, 'MAXLEN', '~', ARGV[4], hid,
      'd', data, 's', seq, 'n', now)
    if type(ok) == 'table' and ok.err then skipped = skipped + 1 end
    redis.call('SADD', p .. ':coins', coin)
    redis.call('HSET', p .. ':written', ARGV[5], ARGV[b])
    done = k
  end
end
if last == 0 then last = tonumber(redis.call('GET', p .. ':seq') or '0') end
return {last, skipped}
"""
"""ARGV: prefix, run id, events MAXLEN, history MAXLEN, this process, then (k, coin,
timestamp_ms or '', source clock or '', bytes) per envelope, ``k`` the process's own count of
envelopes submitted: an envelope whose ``k`` is at or below the process's last written
(``P:written``) is skipped, so a chunk retried after a lost answer is not written twice. Redis
does not roll a script back when a command fails in it (no memory, no permission): each
envelope's sequence number, event, history entry and ``P:written`` mark are made one after the
other, so a script stopped midway leaves whole envelopes written and the rest for the retry.
Returns ``{last seq, history entries refused}``; ``{-1, 0}`` when the run is not this writer's
any more (another run took the prefix); ``{-2, 0}`` when there is no run (Redis restarted
without its data: the writer starts a new run); ``{-3, run}`` when another writer of this run
already started that new run (join it)."""


class StoreStartError(ValueError):
    """The shared store cannot be used: one line naming the setting (never the password)."""


class Keys:
    """The key names under a prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.run = f"{prefix}:run"
        self.alive = f"{prefix}:alive"
        self.writers = f"{prefix}:writers"
        self.seq = f"{prefix}:seq"
        self.events = f"{prefix}:events"
        self.coins = f"{prefix}:coins"
        self.procs = f"{prefix}:procs"
        self.gaps = f"{prefix}:gaps"

    def hist(self, coin: str) -> str:
        """A coin's history stream."""
        return f"{self.prefix}:hist:{coin}"

    def proc(self, process: str) -> str:
        """A flow process's counters."""
        return f"{self.prefix}:proc:{process}"


def client_options(timeout_ms: int) -> dict[str, Any]:
    """redis-py options: every call times out after ``timeout_ms``, no hidden retries (the
    callers retry, with their own budgets)."""
    t = timeout_ms / 1000
    return {
        "socket_timeout": t,
        "socket_connect_timeout": t,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_timeout": False,
        "health_check_interval": 0,
    }


def describe_error(ex: BaseException) -> str:
    """A Redis error in one line, with no URL or password in it."""
    text = next((ln.strip() for ln in str(ex).splitlines() if ln.strip()), "")
    return f"{type(ex).__name__}: {text}" if text else type(ex).__name__


def is_refusal(ex: BaseException) -> bool:
    """Whether an error is a refused password or permission (retrying cannot fix it)."""
    if isinstance(ex, redis.AuthenticationError | redis.exceptions.NoPermissionError):
        return True
    text = str(ex)
    return isinstance(ex, redis.ResponseError) and text.startswith(
        ("NOAUTH", "WRONGPASS", "NOPERM")
    )


def wait_for_redis(
    url: str,
    timeout_ms: int,
    start_timeout_s: float,
    stop: threading.Event | None = None,
    what: str = "--store (HLSL_STORE)",
) -> None:
    """PING the store until it answers (one warning per failed attempt, backoff up to 10 s).

    Raises:
        StoreStartError: a refused password or ACL (at once), or no answer for
            ``start_timeout_s`` (``--start-timeout-s``).
    """
    shown = redact_url(url)
    started = time.monotonic()
    delay = 0.5
    attempt = 0
    while True:
        attempt += 1
        client = redis.Redis.from_url(url, **client_options(timeout_ms))
        try:
            client.ping()
            return
        except redis.RedisError as ex:
            if is_refusal(ex):
                msg = f"{what} = {shown}: Redis refused the credentials ({describe_error(ex)})"
                raise StoreStartError(msg) from None
            waited = time.monotonic() - started
            if waited >= start_timeout_s:
                msg = (
                    f"{what} = {shown}: Redis did not answer for {waited:.1f} s ({attempt} "
                    f"attempt{'s' if attempt > 1 else ''}; --start-timeout-s / "
                    f"HLSL_START_TIMEOUT_S = {start_timeout_s:g}): {describe_error(ex)}"
                )
                raise StoreStartError(msg) from None
            wait = min(delay, start_timeout_s - waited)
            log.warning(
                "store %s unreachable (attempt %d: %s); retrying in %.1f s, giving up after %g s",
                shown,
                attempt,
                describe_error(ex),
                wait,
                start_timeout_s,
            )
            if stop is not None:
                if stop.wait(wait):
                    msg = "stopped while waiting for the store"
                    raise StoreStartError(msg) from None
            else:
                time.sleep(wait)
            delay = min(delay * 2, 10.0)
        finally:
            client.close()


def process_name() -> str:
    """This flow process in the store: ``<host>-<pid>``."""
    return f"{socket.gethostname().replace(':', '_')}-{os.getpid()}"


Item = tuple[str, int | None, bytes, int | None]
"""One envelope to write: coin, ``timestamp_ms``, its bytes, the source clock when stored."""

_Queued = tuple[int, str, int | None, bytes, int | None]


class RedisWriter:
    """Writes a flow process's envelopes and counters to the shared store (see the module).

    Args:
        url: the store URL (``redis://`` or ``rediss://``).
        prefix: the key prefix.
        timeout_ms: every call times out after this.
        history_limit: ``MAXLEN ~`` of each coin's history stream.
        ring_size: ``MAXLEN ~`` of the event stream.
        buffer_limit: envelopes held while Redis is unreachable.
        process: this process's name (default `process_name`).
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        timeout_ms: int,
        history_limit: int,
        ring_size: int = DEFAULT_RING_SIZE,
        buffer_limit: int = BUFFER_LIMIT,
        process: str | None = None,
    ) -> None:
        self.url = url
        self.shown = redact_url(url)
        self.keys = Keys(prefix)
        self.timeout_ms = timeout_ms
        self.history_limit = history_limit
        self.ring_size = ring_size
        self.buffer_limit = buffer_limit
        self.process = process or process_name()
        self._client = redis.Redis.from_url(url, **client_options(timeout_ms))
        self._join = self._client.register_script(JOIN_SCRIPT)
        self._write = self._client.register_script(WRITE_SCRIPT)
        self._cond = threading.Condition()
        self._pending: deque[_Queued] = deque()
        self._k = 0
        self._inflight = 0
        self._finish_deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._closing = False
        self._done = False
        self.run: str | None = None
        self.store: SignalStore | None = None
        self.connected = True
        self.last_error: str | None = None
        self.written = 0
        self.dropped = 0
        self._unreported = 0  # dropped, not yet in P:gaps
        self.refused = 0
        self.outages = 0
        self.down_since: float | None = None
        self.superseded = False

    # -- start -----------------------------------------------------------------------------

    def join_run(self, previous: str = "") -> str:
        """Join the prefix's current run, or start a new one (clearing the prefix's keys);
        ``previous``: the run this one replaces because Redis lost its data."""
        args: list[str | int] = [self.keys.prefix, new_run_id(), self.process, HEARTBEAT_TTL_MS]
        args.append(previous)
        out = self._join(args=args)
        run = out[0].decode() if isinstance(out[0], bytes) else str(out[0])
        created = bool(int(out[1]))
        self.run = run
        log.info(
            "store %s, prefix %s: %s run %s as %s",
            self.shown,
            self.keys.prefix,
            "started" if created else "joined",
            run,
            self.process,
        )
        return run

    def start(self, store: SignalStore | None = None) -> None:
        """Start the background writer (after `join_run`); ``store`` has the counters."""
        self.store = store
        self._thread = threading.Thread(target=self._loop, name="redis-writer", daemon=True)
        self._thread.start()
        # a process that ends without the flow's end (an entry point that exits early) still
        # writes what it holds and marks itself done; `finish` runs once
        atexit.register(self.finish)

    # -- the sink's side -----------------------------------------------------------------------

    def submit(self, items: Iterable[Item]) -> None:
        """Queue envelopes for writing; never waits for Redis (drops the oldest past the buffer)."""
        with self._cond:
            for coin, ts, data, now in items:
                self._k += 1
                self._pending.append((self._k, coin, ts, data, now))
            self._trim()
            self._cond.notify()

    def _trim(self) -> None:
        """Drop the oldest buffered envelopes past the buffer (under the condition's lock)."""
        over = len(self._pending) - self.buffer_limit
        if over <= 0:
            return
        for _ in range(over):
            self._pending.popleft()
        if self.dropped == 0 or (self.dropped + over) // 1000 > self.dropped // 1000:
            log.warning(
                "store %s unreachable: buffer of %d envelopes full, %d dropped so far",
                self.shown,
                self.buffer_limit,
                self.dropped + over,
            )
        self.dropped += over
        self._unreported += over

    @property
    def buffered(self) -> int:
        """Envelopes waiting to be written."""
        return len(self._pending) + self._inflight

    def stats(self) -> dict[str, Any]:
        """The writer's counters (also in the process's hash)."""
        return {
            "connected": self.connected,
            "written": self.written,
            "buffered": self.buffered,
            "dropped": self.dropped,
            "history_refused": self.refused,
            "outages": self.outages,
            "down_for_s": None
            if self.down_since is None
            else round(time.monotonic() - self.down_since, 3),
            "last_error": self.last_error,
            "superseded": self.superseded,
        }

    # -- the background thread ---------------------------------------------------------------

    def _loop(self) -> None:
        next_counters = 0.0
        delay = FIRST_RETRY_S
        while True:
            with self._cond:
                if not self._pending and not self._closing:
                    self._cond.wait(timeout=max(0.0, next_counters - time.monotonic()))
                closing = self._closing
                chunk = [
                    self._pending.popleft() for _ in range(min(WRITE_CHUNK, len(self._pending)))
                ]
                self._inflight = len(chunk)
            if closing and not chunk and self._done:
                return
            try:
                if time.monotonic() >= next_counters or closing:
                    self._write_counters(done=closing and not chunk)
                    next_counters = time.monotonic() + COUNTERS_EVERY_S
                    if closing and not chunk:
                        self._done = True
                        return
                if chunk:
                    self._write_chunk(chunk)
                    chunk = []
                self._up()
                delay = FIRST_RETRY_S
            except redis.RedisError as ex:
                self._down(ex)
                with self._cond:
                    self._pending.extendleft(reversed(chunk))  # written next time, oldest first
                    self._inflight = 0
                    self._trim()
                    self._cond.wait(timeout=delay)
                delay = min(delay * 2, MAX_RETRY_S)
                if closing and time.monotonic() > self._finish_deadline:
                    return

    def _write_chunk(self, chunk: list[_Queued]) -> None:
        args: list[Any] = [self.keys.prefix, self.run, self.ring_size, self.history_limit]
        args.append(self.process)
        for k, coin, ts, data, now in chunk:
            args += (k, coin, "" if ts is None else ts, "" if now is None else now, data)
        last, refused = self._write(args=args)
        if int(last) == -2:
            log.warning(
                "store %s, prefix %s: run %s is gone (Redis restarted without its data?); "
                "starting a new run",
                self.shown,
                self.keys.prefix,
                self.run,
            )
            self.join_run(previous=self.run or "")
            args[1] = self.run
            last, refused = self._write(args=args)
        if int(last) == -3:
            new = refused.decode() if isinstance(refused, bytes) else str(refused)
            log.warning(
                "store %s, prefix %s: run %s continues as run %s (Redis restarted without its "
                "data)",
                self.shown,
                self.keys.prefix,
                self.run,
                new,
            )
            self.run = new
            self._client.hset(self.keys.writers, self.process, "running")
            self._client.sadd(self.keys.procs, self.process)
            args[1] = new
            last, refused = self._write(args=args)
        if int(last) < 0:
            if not self.superseded:
                log.error(
                    "store %s, prefix %s: run %s was replaced by another run; this process's "
                    "envelopes are no longer written",
                    self.shown,
                    self.keys.prefix,
                    self.run,
                )
            self.superseded = True
            self.dropped += len(chunk)
        else:
            self.written += len(chunk) - int(refused)
            self.refused += int(refused)
            self._report_gap(int(last) - len(chunk))
        self._inflight = 0

    def _report_gap(self, after: int) -> None:
        """Tell the readers how many envelopes were dropped since the last report (``P:gaps``:
        their SSE clients get ``dropped``), once Redis answers again."""
        with self._cond:
            n, self._unreported = self._unreported, 0
        if n <= 0:
            return
        try:
            fields: dict[Any, Any] = {"p": self.process, "n": n, "after": max(0, after)}
            self._client.xadd(self.keys.gaps, fields, maxlen=1000, approximate=True)
        except redis.RedisError:
            with self._cond:
                self._unreported += n
            raise

    def _write_counters(self, *, done: bool = False) -> None:
        doc: dict[Any, Any] = self.counters()
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(self.keys.proc(self.process), mapping=doc)
        pipe.sadd(self.keys.procs, self.process)
        if not self.superseded:
            pipe.set(self.keys.alive, self.run or "", px=HEARTBEAT_TTL_MS)
            pipe.hset(self.keys.writers, self.process, "done" if done else "running")
        pipe.execute()

    def counters(self) -> dict[str, str]:
        """This process's counters as the hash ``P:proc:<process>`` holds them."""
        s = self.store
        doc: dict[str, Any] = {
            "process": self.process,
            "run": self.run,
            "updated_ms": int(time.time() * 1000),
            "writer": self.stats(),
        }
        if s is not None:
            try:
                info = s.source_info() or {}
            except Exception as ex:  # a counter read racing the flow: report, never fail
                info = {"error": describe_error(ex)}
            doc |= {
                "state": str(s.state),
                "error": s.error,
                "mode": s.mode,
                "started_ms": int(s.started_wall_s * 1000),
                "source_clock_ms": s.now_ms(),
                "signals_emitted": s.signals_emitted,
                "emitted_by_coin": dict(s.emitted_by_coin),
                "late_events": dict(s.late_events),
                "coins": s.coins(),
                "source_info": info,
                "lag": s.lag.snapshot(),
            }
        return {k: orjson.dumps(v).decode() for k, v in doc.items()}

    def _up(self) -> None:
        if not self.connected:
            down = time.monotonic() - (self.down_since or time.monotonic())
            log.warning(
                "store %s reachable again after %.1f s; %d envelopes buffered, %d dropped in all",
                self.shown,
                down,
                self.buffered,
                self.dropped,
            )
        self.connected = True
        self.down_since = None

    def _down(self, ex: redis.RedisError) -> None:
        self.last_error = describe_error(ex)
        if self.connected:
            self.outages += 1
            self.down_since = time.monotonic()
            log.warning(
                "store %s unreachable (%s): the flow goes on, buffering up to %d envelopes",
                self.shown,
                self.last_error,
                self.buffer_limit,
            )
        self.connected = False

    # -- the end -----------------------------------------------------------------------------

    def finish(self, timeout_s: float = FINISH_TIMEOUT_S) -> bool:
        """Write what is buffered and the final counters, mark this writer done, stop the
        thread; True if everything was written within ``timeout_s``."""
        thread, self._thread = self._thread, None
        if thread is None:
            return not self._pending
        self._finish_deadline = time.monotonic() + timeout_s
        with self._cond:
            self._closing = True
            self._cond.notify()
        thread.join(timeout=timeout_s + 1)
        ok = self._done and not self._pending
        if not ok:
            log.error(
                "store %s: the run ended with %d envelopes not written (%s)",
                self.shown,
                self.buffered,
                self.last_error or "timed out",
            )
        self._client.close()
        return ok


__all__ = [
    "BUFFER_LIMIT",
    "HEARTBEAT_TTL_MS",
    "JOIN_SCRIPT",
    "WRITE_SCRIPT",
    "Item",
    "Keys",
    "RedisWriter",
    "StoreStartError",
    "client_options",
    "describe_error",
    "is_refusal",
    "process_name",
    "wait_for_redis",
]
