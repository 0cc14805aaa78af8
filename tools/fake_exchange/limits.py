"""The server's limits: the per-client ``/info`` weight budget, the idle timeout, the send queue.

The real exchange charges every ``/info`` request (REST or WS ``post``) a weight against a
per-IP budget of 1200 per minute: ``l2Book``, ``allMids`` and ``exchangeStatus`` cost 2, the rest
20, plus 1 per 60 candles of a ``candleSnapshot`` and 1 per 20 trades of ``recentTrades``; past
the budget it answers 429. The fake enforces this budget over a sliding 60 s window
(`WeightBudget`). Its WebSocket limits (10 connections, 1000 subscriptions, 2000 messages per
minute per IP) and the in-flight ``post`` limit are not enforced. A socket the server has sent
nothing to for `IDLE_TIMEOUT_S` is dropped; a client whose send queue (`CLIENT_QUEUE_MAX`) fills
up is dropped as a slow consumer.

Imports nothing else of the fake exchange.
"""

from __future__ import annotations

from collections import deque
from typing import Final

IDLE_TIMEOUT_S: Final = 60.0
CLIENT_QUEUE_MAX: Final = 50_000
REST_WEIGHT_PER_MIN: Final = 1200
INFO_WEIGHTS: Final[dict[str, int]] = {"l2Book": 2, "allMids": 2, "exchangeStatus": 2}
DEFAULT_INFO_WEIGHT: Final = 20
RATE_LIMITED: Final = "Too many requests"
"""The 429 body (a guess: the real text is not known)."""


def info_weight(kind: str) -> int:
    """The base weight of an ``/info`` request of type ``kind``."""
    return INFO_WEIGHTS.get(kind, DEFAULT_INFO_WEIGHT)


class WeightBudget:
    """Per-client REST weight over a sliding 60 s window."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.events: dict[str, deque[tuple[float, int]]] = {}
        self.used: dict[str, int] = {}

    def _purge(self, client: str, now: float) -> deque[tuple[float, int]]:
        events = self.events.setdefault(client, deque())
        while events and events[0][0] <= now - 60.0:
            self.used[client] -= events.popleft()[1]
        return events

    def allows(self, client: str, weight: int, now: float) -> bool:
        """Whether ``client`` may spend ``weight`` more at loop time ``now``."""
        self._purge(client, now)
        return self.used.get(client, 0) + weight <= self.limit

    def charge(self, client: str, weight: int, now: float) -> None:
        """Spend ``weight`` of ``client``'s budget at loop time ``now``."""
        self._purge(client, now).append((now, weight))
        self.used[client] = self.used.get(client, 0) + weight
