"""Subscriptions: acks, the route table and the fan-out of data frames.

``subscribe``/``unsubscribe`` are answered with ``subscriptionResponse`` acks echoing the
subscription with the server defaults filled in (``l2Book`` gets ``nSigFigs``/``mantissa``/
``fast``), or ``Already subscribed: {...}`` / ``Already unsubscribed: {...}`` errors (the socket
stays open). A subscription for a coin outside the universe (unknown or mis-cased), ``nSigFigs``
outside 2–5, or ``mantissa`` without ``nSigFigs: 5`` drops the whole socket with no error and no
close frame (the client sees code 1006), as the real server does; so does ``allMids`` with a
non-empty ``dex`` (first dex only).

A route is a stream ``(type, coin, interval)``; publishing renders a frame once per distinct
subscription variant (e.g. each ``l2Book`` aggregation) and offers it to every subscriber, unless
the ``silence`` fault holds the stream.

Imports `tools.fake_exchange.connections`, `.faults`, `.protocol` and `.stats`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from tools.fake_exchange.connections import Conn
from tools.fake_exchange.faults import FaultInjector
from tools.fake_exchange.protocol import (
    ALREADY_SUBSCRIBED,
    ALREADY_UNSUBSCRIBED,
    Sub,
    accepted,
    dumps,
    error_frame,
)
from tools.fake_exchange.stats import ExchangeStats

log = logging.getLogger(__name__)

Route = tuple[str, str, str]
"""A stream: ``(type, coin, interval)`` (`Sub.route`)."""


class Subscriptions:
    """Who is subscribed to which stream, and the fan-out to them.

    Args:
        coins: the universe (`Universe.valid`).
        faults: the fault injector (``silence``).
        stats: the counters to update.
    """

    def __init__(self, coins: frozenset[str], faults: FaultInjector, stats: ExchangeStats) -> None:
        self.coins = coins
        self.faults = faults
        self.stats = stats
        self.routes: dict[Route, dict[Conn, dict[str, Sub]]] = {}

    def subscribe(self, conn: Conn, sub: Sub) -> bool:
        """Register ``sub`` for ``conn`` and queue the ack (or the error, or drop the socket).

        Returns:
            Whether the subscription is new and acknowledged (its snapshot is due).
        """
        if not accepted(sub, self.coins):
            log.info(
                "client %d subscribed to %s: unknown coin or bad params; dropping",
                conn.cid,
                sub.key,
            )
            self.stats.invalid_subscription_closes += 1
            conn.close(None)
            return False
        key = sub.key
        if key in conn.subs:
            self.stats.request_errors += 1
            conn.offer(error_frame(ALREADY_SUBSCRIBED + key), "error")
            return False
        conn.subs[key] = sub
        self.routes.setdefault(sub.route, {}).setdefault(conn, {})[key] = sub
        self.stats.subscriptions += 1
        ack = {"method": "subscribe", "subscription": sub.wire()}
        conn.offer(dumps({"channel": "subscriptionResponse", "data": ack}), "subscriptionResponse")
        return True

    def unsubscribe(self, conn: Conn, sub: Sub) -> None:
        """Remove ``sub`` of ``conn`` and queue the ack (or the error)."""
        key = sub.key
        if key not in conn.subs:
            self.stats.request_errors += 1
            conn.offer(error_frame(ALREADY_UNSUBSCRIBED + key), "error")
            return
        del conn.subs[key]
        self._route_remove(conn, sub)
        self.stats.unsubscriptions += 1
        ack = {"method": "unsubscribe", "subscription": sub.wire()}
        conn.offer(dumps({"channel": "subscriptionResponse", "data": ack}), "subscriptionResponse")

    def remove_all(self, conn: Conn) -> None:
        """Forget every subscription of a connection that has ended."""
        for sub in conn.subs.values():
            self._route_remove(conn, sub)
        conn.subs.clear()

    def _route_remove(self, conn: Conn, sub: Sub) -> None:
        route = self.routes.get(sub.route)
        if route is None:
            return
        subs = route.get(conn)
        if subs is not None:
            subs.pop(sub.key, None)
            if not subs:
                del route[conn]
        if not route:
            del self.routes[sub.route]

    def has_subscribers(self, route: Route) -> bool:
        """Whether anyone is subscribed to ``route``."""
        return bool(self.routes.get(route))

    def publish(self, route: Route, channel: str, render: Callable[[Sub], str]) -> None:
        """Offer ``render(sub)`` to each subscriber of ``route`` (rendered once per variant)."""
        subscribers = self.routes.get(route)
        if not subscribers:
            return
        if self.faults.silenced(route):
            self.stats.frames_silenced += sum(len(s) for s in subscribers.values())
            return
        cache: dict[Sub, str] = {}
        for conn, subs in list(subscribers.items()):
            for sub in list(subs.values()):
                text = cache.get(sub)
                if text is None:
                    text = cache[sub] = render(sub)
                conn.offer(text, channel, data=True)

    def publish_frame(self, route: Route, frame: dict[str, Any]) -> None:
        """Offer ``frame`` (the same for every variant) to each subscriber of ``route``."""
        if not self.routes.get(route):
            return
        text = dumps(frame)
        self.publish(route, route[0], lambda _sub: text)
