"""HTTP request metrics per route: ``hlsl_http_requests_total`` and
``hlsl_http_request_duration_seconds``, by route template, method and status.

`HttpMetrics` is the ASGI middleware that observes every request into the `HttpStats` of the
app's registry (`http_stats`; `api.metrics.make_registry` registers it). Labels are bounded: the
route is its template (`route_template`) or `UNMATCHED`, never the raw path, and the method one of
`METHODS` or ``OTHER``.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
)  # fmt: skip
"""Request duration buckets (s): the REST routes answer in well under a millisecond."""

METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED: Final = "unmatched"
"""The ``route`` label of a request no route serves (a 404, or refused before routing)."""


class HttpStats:
    """The request counter and duration histogram of one app's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("route", "method", "status")
        self.requests = Counter(
            "hlsl_http_requests",
            "HTTP requests answered, by route template, method and status",
            labels,
            registry=registry,
        )
        self.duration = Histogram(
            "hlsl_http_request_duration_seconds",
            "HTTP request duration to the last body byte, by route template, method and status",
            labels,
            registry=registry,
            buckets=HTTP_BUCKETS,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request and its duration."""
        key = (route, method, status)
        child = self._children.get(key)
        if child is None:
            labels = (route, method, str(status))
            child = self._children[key] = (
                self.requests.labels(*labels),
                self.duration.labels(*labels),
            )
        child[0].inc()
        child[1].observe(seconds)


_HTTP_STATS: weakref.WeakKeyDictionary[CollectorRegistry, HttpStats] = weakref.WeakKeyDictionary()
_HTTP_STATS_LOCK = threading.Lock()


def http_stats(registry: CollectorRegistry) -> HttpStats:
    """The `HttpStats` registered in ``registry`` (made on first use)."""
    with _HTTP_STATS_LOCK:
        stats = _HTTP_STATS.get(registry)
        if stats is None:
            stats = _HTTP_STATS[registry] = HttpStats(registry)
        return stats


def route_template(routes: list[BaseRoute], scope: Scope) -> str:
    """The template of the route that serves ``scope`` (a mount's prefix for a sub-app), else
    `UNMATCHED`. A route that only lacks the method (a 405) still names the route."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", UNMATCHED))
        if match is Match.PARTIAL and partial is None:
            partial = route
    return UNMATCHED if partial is None else str(getattr(partial, "path", UNMATCHED))


class HttpMetrics:
    """ASGI middleware: counts every HTTP request and times it, by route template, method and
    status (``hlsl_http_requests_total``, ``hlsl_http_request_duration_seconds``).

    Register it last in `api.app.create_app` (outermost: refusals are counted too)::

        app.add_middleware(HttpMetrics, registry=registry)

    The duration runs from the request to the last body byte (or the client going away). A
    request that ends without a response (an error the app did not answer) counts as 500.

    Args:
        app: the next ASGI app.
        registry: the app's registry (`api.metrics.make_registry`).
    """

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.stats = http_stats(registry)
        self._routes: tuple[int, frozenset[int]] = (-1, frozenset())

    def _template(self, outer: Any, entry: Scope, scope: Scope) -> str:
        routes = getattr(getattr(outer, "router", None), "routes", None)
        if not isinstance(routes, list):
            return UNMATCHED
        n, ids = self._routes
        if n != len(routes):
            ids = frozenset(id(r) for r in routes)
            self._routes = (len(routes), ids)
        route = scope.get("route")
        if route is not None and id(route) in ids:  # the app's own route, not a sub-app's
            return str(getattr(route, "path", UNMATCHED))
        return route_template(routes, entry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        entry = dict(scope)  # a mounted app rewrites the scope (path, app, route)
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = str(entry.get("method", "OTHER")).upper()
            self.stats.observe(
                self._template(entry.get("app"), entry, scope),
                method if method in METHODS else "OTHER",
                status,
                time.perf_counter() - start,
            )


__all__ = [
    "HTTP_BUCKETS",
    "METHODS",
    "UNMATCHED",
    "HttpMetrics",
    "HttpStats",
    "http_stats",
    "route_template",
]
