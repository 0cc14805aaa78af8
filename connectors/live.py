"""Live ingestion: a resilient Hyperliquid WebSocket source for Bytewax.

`HyperliquidSource` is a `FixedPartitionedSource` with one partition per WebSocket connection and
the coins sharded across connections, so ``-w N`` never opens a socket twice. Each partition runs
its connection on a reader thread (asyncio + ``websockets``); the worker drains a queue without
blocking and sleeps between polls when idle (no busy spin).

Every consumed input (frames and the REST priming answers, as frames) can be written to a
recording in Hyperliquid's archive envelope, which replays through `connectors.files` unchanged.

This module is the public one: the Bytewax source (`HyperliquidSource`) over its private partition
(`_LivePartition`, which drains a connection's queue, records and parses), and every name callers
import from ``connectors.live``. The rest lives in private modules, re-exported here:

- `connectors._live_config`: `LiveConfig`, the endpoints, `subscriptions_for`, `shard` and the
  per-IP `Limits`;
- `connectors._live_connection`: one WebSocket connection (warm start, subscriptions and their
  watchdog, pings, reconnects with backoff) and its `ConnectionStatus`;
- `connectors._live_recorder`: the `Recorder` of consumed inputs (and `iso_ns`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from typing_extensions import override

from connectors._live_config import (
    MAINNET_INFO,
    MAINNET_WS,
    MAX_CONNECTIONS,
    MAX_SUBSCRIPTIONS,
    SUBS_PER_COIN,
    Limits,
    LiveConfig,
    shard,
    subscriptions_for,
)
from connectors._live_connection import Connection, ConnectionStatus
from connectors._live_recorder import Recorder, iso_ns
from connectors.errors import FrameError, SkipLog
from connectors.events import Event
from connectors.parse import ControlMarker, FrameParser

__all__ = [
    "MAINNET_INFO",
    "MAINNET_WS",
    "MAX_CONNECTIONS",
    "MAX_SUBSCRIPTIONS",
    "SUBS_PER_COIN",
    "ConnectionStatus",
    "HyperliquidSource",
    "Limits",
    "LiveConfig",
    "Recorder",
    "iso_ns",
    "shard",
    "subscriptions_for",
]

log = logging.getLogger(__name__)


class _LivePartition(StatefulSourcePartition[Event, None]):
    """One connection's partition: starts its reader thread, then drains its queue on the worker,
    recording and parsing each input (skips counted, never raised)."""

    def __init__(
        self,
        conn: Connection,
        parser: FrameParser,
        recorder: Recorder | None,
        skips: SkipLog,
        batch_size: int,
    ) -> None:
        self._conn = conn
        self._parser = parser
        self._recorder = recorder
        self._skips = skips
        self._consumed = 0
        self._batch_size = batch_size
        self._queue = conn.out
        self._stop = conn.stop
        self._awake: datetime | None = None
        self._idle_since: float | None = None
        self._thread = threading.Thread(target=conn.run, name=f"hl-{conn.status.name}", daemon=True)
        self._thread.start()

    @override
    def next_batch(self) -> Iterable[Event]:
        # On stop, what is already queued is still consumed (and recorded) before the end.
        stopping = self._stop.is_set()
        out: list[Event] = []
        q = self._queue
        parse = self._parser.parse_raw
        rec = self._recorder
        n = 0
        while n < self._batch_size:
            try:
                recv_ns, raw = q.get_nowait()
            except queue.Empty:
                break
            n += 1
            self._consumed += 1
            try:
                if isinstance(raw, ControlMarker):
                    if rec is not None:
                        rec.write_marker(recv_ns, raw.body)
                    out.extend(self._parser.parse_marker(raw.body, recv_ns))
                    continue
                if rec is not None:
                    rec.write(recv_ns, raw)
                out.extend(parse(raw, recv_ns))
            except FrameError as ex:
                self._conn.status.skipped += 1
                where = f"{self._conn.status.name} frame {self._consumed}"
                self._skips.skip(ex.reason, where, ex.detail)
        if stopping and n == 0:
            raise StopIteration
        now = time.monotonic()
        if n:
            self._idle_since = None
            self._awake = None
        else:
            if self._idle_since is None:
                self._idle_since = now
            # Poll every 10 ms while frames flow, every 50 ms once idle for a second.
            pause = 0.01 if now - self._idle_since < 1.0 else 0.05
            self._awake = datetime.now(UTC) + timedelta(seconds=pause)
        return out

    @override
    def next_awake(self) -> datetime | None:
        return self._awake

    @override
    def snapshot(self) -> None:
        return None

    @override
    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)
        if self._recorder is not None:
            self._recorder.flush()


class HyperliquidSource(FixedPartitionedSource[Event, None]):
    """Live Hyperliquid market data as typed events, one partition per connection.

    Args:
        coins: validated coin names (see `connectors.rest.resolve_coins`).
        config: connection settings.
        stop: set it to end the source cleanly (Bytewax has no stop API).
        recorder: write every consumed input here (replayable capture).
    """

    def __init__(
        self,
        coins: Sequence[str],
        config: LiveConfig | None = None,
        *,
        stop: threading.Event | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        if not coins:
            msg = "no coins to subscribe to"
            raise ValueError(msg)
        self.coins = list(coins)
        self.config = config or LiveConfig()
        self.stop = stop or threading.Event()
        self.recorder = recorder
        self.limits = Limits(self.config.ip_share)
        self.shards = shard(self.coins, self.config.coins_per_connection)
        self.statuses = [ConnectionStatus(f"conn-{i}", s) for i, s in enumerate(self.shards)]
        # One activation set shared by every connection's parser: the first connection's allMids
        # fans out to coins as each connection activates them.
        active: set[str] = set()
        self.skips = SkipLog(log)
        self.parsers = []
        for i, s in enumerate(self.shards):
            coins_i = frozenset(self.coins) if i == 0 else frozenset(s)
            parser = FrameParser(coins_i, self.config.validation)
            parser.active = active
            parser.on_reject = self._held_rejection(i)
            self.parsers.append(parser)

    def _held_rejection(self, i: int) -> Callable[[FrameError], None]:
        status = self.statuses[i]

        def report(ex: FrameError) -> None:
            status.skipped += 1
            self.skips.skip(ex.reason, f"{status.name} (a coin's first prices, held)", ex.detail)

        return report

    @override
    def list_parts(self) -> list[str]:
        return [s.name for s in self.statuses]

    @override
    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _LivePartition:
        i = int(for_part.split("-")[1])
        conn = Connection(
            self.statuses[i],
            self.config,
            queue.Queue(maxsize=100_000),
            self.limits,
            self.stop,
            with_mids=i == 0,
            all_coins=self.coins,
        )
        return _LivePartition(
            conn, self.parsers[i], self.recorder, self.skips, self.config.batch_size
        )

    def info(self) -> dict[str, Any]:
        """Per-connection status and parse counters (for /health and /v1/state)."""
        frames: dict[str, int] = {}
        control: dict[str, int] = {}
        dup = ignored = 0
        latest: int | None = None
        for p in self.parsers:
            for k, v in p.frames.items():
                frames[k] = frames.get(k, 0) + v
            for k, v in p.control.items():
                control[k] = control.get(k, 0) + v
            dup += p.duplicates
            ignored += p.ignored_coin
            if p.latest_ms is not None and (latest is None or p.latest_ms > latest):
                latest = p.latest_ms
        return {
            "kind": "live",
            "files": [],
            "lines_read": sum(s.frames for s in self.statuses),
            "frames_by_channel": dict(sorted(frames.items())),
            "control_frames": dict(sorted(control.items())),
            "lines_skipped": dict(sorted(self.skips.counts.items())),
            "duplicate_trades": dup,
            "ignored_coin_events": ignored,
            "errors": [s.last_error for s in self.statuses if s.last_error],
            "finished": self.stop.is_set(),
            "latest_event_ms": latest,
            "connections": [s.as_dict() for s in self.statuses],
        }
