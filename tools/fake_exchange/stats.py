"""The fake exchange's counters (`ExchangeStats`), shared by all its parts.

Imports nothing else of the fake exchange.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class ExchangeStats:
    """Counters of a fake exchange (`FakeExchange.stats` returns a copy).

    Attributes:
        connections_opened: WebSocket connections accepted.
        connections_closed: connections ended (by either side).
        connections_active: connections open now.
        subscriptions: subscriptions acknowledged.
        unsubscriptions: unsubscriptions acknowledged.
        messages_received: client WebSocket messages.
        request_errors: ``error`` frames answering bad requests (parse, already (un)subscribed).
        frames_sent: messages written to sockets, by channel (control ones included:
            ``subscriptionResponse``, ``pong``, ``error``, ``post``, ``greeting``, ``malformed``,
            ``fakeExchangeUnknown``, ``injected``).
        frames_silenced: data frames withheld by the ``silence`` fault (per client).
        frames_stalled: messages discarded during stalls (per client).
        drops_injected: sockets dropped by ``drop_every_s`` or `FakeExchange.drop_all`.
        idle_closes: sockets dropped by the idle timeout.
        invalid_subscription_closes: sockets dropped for an unknown coin or bad l2Book params.
        slow_consumer_closes: sockets dropped because their send queue overflowed.
        malformed_injected: malformed frames sent.
        unknown_injected: unknown-channel frames sent.
        errors_injected: ``error_every_s`` frames sent.
        stalls_injected: stalls started.
        frames_injected: messages of the inject schedule queued to clients (written ones are
            ``frames_sent["injected"]``).
        info_requests: info requests answered, by type (REST and WS ``post``).
        rate_limited: info requests refused with 429.
        feed_frames: feed frames processed.
        feed_passes: feed passes completed.
        feed_errors: feed frames that could not be used.
    """

    connections_opened: int = 0
    connections_closed: int = 0
    connections_active: int = 0
    subscriptions: int = 0
    unsubscriptions: int = 0
    messages_received: int = 0
    request_errors: int = 0
    frames_sent: dict[str, int] = field(default_factory=dict)
    frames_silenced: int = 0
    frames_stalled: int = 0
    drops_injected: int = 0
    idle_closes: int = 0
    invalid_subscription_closes: int = 0
    slow_consumer_closes: int = 0
    malformed_injected: int = 0
    unknown_injected: int = 0
    errors_injected: int = 0
    stalls_injected: int = 0
    frames_injected: int = 0
    info_requests: dict[str, int] = field(default_factory=dict)
    rate_limited: int = 0
    feed_frames: int = 0
    feed_passes: int = 0
    feed_errors: int = 0

    def copy(self) -> ExchangeStats:
        """A snapshot copy (its dicts are copies too)."""
        return dataclasses.replace(
            self, frames_sent=dict(self.frames_sent), info_requests=dict(self.info_requests)
        )

    def sent(self, channel: str) -> int:
        """Messages written on ``channel``."""
        return self.frames_sent.get(channel, 0)
