"""The in-memory signal store the flow writes and the API reads (thread-safe).

Keeps the latest envelope per coin and a bounded history per coin, plus the run's health: how the
flow is doing (starting, running, finished, failed, stopped), what the source has read and
skipped, late events, and the source's clock (for freshness).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from typing import Any


class RunState(StrEnum):
    """Lifecycle of the flow feeding the store."""

    STARTING = "starting"
    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"


class SignalStore:
    """Latest envelope and bounded history per coin, behind one lock.

    Args:
        history_limit: envelopes kept per coin (oldest dropped first).
        coins: coins the service tracks (configured); coins seen in data are added.
        mode: ``replay`` or ``live`` (how freshness is clocked).
    """

    def __init__(
        self, history_limit: int = 1000, coins: Sequence[str] = (), mode: str = "replay"
    ) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, dict[str, Any]] = {}
        self._history: dict[str, deque[dict[str, Any]]] = {}
        self._limit = history_limit
        self._configured = list(coins)
        self._seen: set[str] = set()
        self.mode = mode
        self.signals_emitted = 0
        self.late_events: Counter[str] = Counter()
        self.state = RunState.STARTING
        self.error: str | None = None
        self.started_wall_s = time.time()
        self.source_clock: Callable[[], int | None] = lambda: None
        self.source_info: Callable[[], dict[str, Any]] = dict

    def put_many(self, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Store envelopes ``(coin, envelope)`` (called by the flow's sink)."""
        with self._lock:
            for coin, env in items:
                self._latest[coin] = env
                hist = self._history.get(coin)
                if hist is None:
                    hist = self._history[coin] = deque(maxlen=self._limit)
                hist.append(env)
                self._seen.add(coin)
                self.signals_emitted += 1

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

    def latest(self, coin: str) -> dict[str, Any] | None:
        """The newest envelope of a coin (exact name), or None."""
        with self._lock:
            return self._latest.get(coin)

    def latest_all(self) -> dict[str, dict[str, Any]]:
        """The newest envelope of every coin that has one."""
        with self._lock:
            return dict(self._latest)

    def history(
        self, coin: str, limit: int | None = None, since_ms: int | None = None
    ) -> list[dict[str, Any]]:
        """Stored envelopes of a coin, oldest first, optionally after ``since_ms`` and capped to
        the newest ``limit``."""
        with self._lock:
            items = list(self._history.get(coin, ()))
        if since_ms is not None:
            items = [e for e in items if e["timestamp_ms"] > since_ms]
        if limit is not None:
            items = items[-limit:] if limit > 0 else []
        return items

    def now_ms(self) -> int | None:
        """The source's clock: the latest event time in a replay, the wall clock live."""
        if self.mode == "live":
            return int(time.time() * 1000)
        return self.source_clock()

    def resolve(self, name: str) -> str | None:
        """A coin name: exact match first, else a unique case-insensitive match, else None."""
        coins = self.coins()
        if name in coins:
            return name
        folded = [c for c in coins if c.lower() == name.lower()]
        return folded[0] if len(folded) == 1 else None
