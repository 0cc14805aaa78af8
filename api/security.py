"""Access control for the API, as pure ASGI middleware (so it also covers mounted sub-apps and
streaming responses, which ``BaseHTTPMiddleware`` would buffer).

- `BearerAuth`: when a token is configured (``HLSL_API_TOKEN``, or ``create_app(token=...)``),
  every HTTP and WebSocket request but the open paths (``/health``) needs
  ``Authorization: Bearer <token>``. A missing or wrong token gets ``401 {"detail":
  "unauthorized"}`` and nothing more; tokens are compared in constant time.
- `RateLimit`: a token bucket per client IP (``rate`` requests a second, ``burst`` at once). A
  client past its budget gets ``429`` with ``Retry-After`` (whole seconds) before its request
  reaches the app, so it cannot slow anyone else down. A stream (SSE) costs one request, when it
  opens. Buckets of idle clients are forgotten, so memory stays bounded.

Both count what they turn away in an `AccessCounters` that ``/metrics`` exports.

- `BodyGuard`: no request body reaches a parser (FastAPI's, the MCP SDK's) unless it is at most
  ``max_body_bytes`` long (``HLSL_MAX_BODY_BYTES``, default 1 MiB; a ``Content-Length`` over it,
  or more bytes streamed than that: ``413``) and, when it is JSON (``Content-Type`` absent or
  ``*json*``), nested at most ``max_json_depth`` deep (``HLSL_MAX_JSON_DEPTH``, default 64;
  deeper: ``400``). The depth is found by a byte scan (``[`` and ``{`` outside strings), so a
  body of 100,000 nested arrays costs microseconds and never reaches a recursive parser
  (which answered 500 with a ``RecursionError``); a JSON body that is not UTF-8 gets ``400``
  too (the MCP SDK answered 500). A request without a body passes untouched.
"""

from __future__ import annotations

import hmac
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.validate import json_depth_exceeds

log = logging.getLogger(__name__)

TOKEN_ENV: Final = "HLSL_API_TOKEN"
"""Environment variable holding the API token (unset or empty: no authentication)."""

OPEN_PATHS: Final = frozenset({"/health", "/"})
"""Paths served without a token: liveness, and the dashboard page (it holds no data; its own
requests for data carry the token)."""

DEFAULT_RATE_PER_S: Final = 50.0
"""Requests a second each client may make, sustained."""

DEFAULT_MAX_JSON_DEPTH: Final = 64
"""Deepest JSON nesting a request body may have (``HLSL_MAX_JSON_DEPTH``)."""

DEFAULT_MAX_BODY_BYTES: Final = 1 << 20
"""Largest request body accepted, bytes (``HLSL_MAX_BODY_BYTES``)."""

MAX_CLIENTS: Final = 10_000
"""Buckets kept at most; idle (full) buckets are forgotten first."""


def token_from_env(environ: dict[str, str] | None = None) -> str | None:
    """The API token from ``HLSL_API_TOKEN`` (None when unset or blank)."""
    value = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    return value or None


@dataclass
class AccessCounters:
    """Requests turned away, by reason (exported by ``/metrics``)."""

    unauthorized: int = 0
    rate_limited: int = 0


async def _reply(
    send: Send, status: int, body: dict[str, str], headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            raw = bytes(value)
            scheme, _, cred = raw.partition(b" ")
            return cred.strip() if scheme.lower() == b"bearer" else None
    return None


class BearerAuth:
    """ASGI middleware: ``Authorization: Bearer <token>`` on every path but `OPEN_PATHS`.

    Args:
        app: the wrapped application.
        token: the shared secret.
        counters: where refusals are counted.
        open_paths: paths that need no token.
        open_prefixes: path prefixes that need no token (static documentation assets).
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        counters: AccessCounters,
        open_paths: frozenset[str] = OPEN_PATHS,
        open_prefixes: tuple[str, ...] = (),
    ) -> None:
        if not token:
            msg = "the API token must not be empty"
            raise ValueError(msg)
        self.app = app
        self._token = token.encode()
        self.counters = counters
        self.open_paths = open_paths
        self.open_prefixes = open_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] not in ("http", "websocket")
            or path in self.open_paths
            or (self.open_prefixes and path.startswith(self.open_prefixes))
        ):
            await self.app(scope, receive, send)
            return
        presented = _bearer(scope)
        if presented is not None and hmac.compare_digest(presented, self._token):
            await self.app(scope, receive, send)
            return
        self.counters.unauthorized += 1
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await _reply(send, 401, {"detail": "unauthorized"}, [(b"www-authenticate", b"Bearer")])


class TokenBuckets:
    """Token buckets by key: ``rate`` tokens a second up to ``burst``, one per request.

    Args:
        rate_per_s: refill rate.
        burst: bucket size (requests allowed at once).
        clock: monotonic seconds (tests pass a fake).
        max_keys: buckets kept at most.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_CLIENTS,
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            msg = f"need rate_per_s > 0 and burst >= 1, got {rate_per_s} and {burst}"
            raise ValueError(msg)
        self.rate = rate_per_s
        self.burst = burst
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """Spend one token for ``key``: 0.0 if allowed, else seconds until one is available."""
        now = self.clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)  # re-inserted: dict order is LRU order
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        if len(self._buckets) > self.max_keys:
            self._prune(now)
        return wait

    def _prune(self, now: float) -> None:
        full_after = self.burst / self.rate
        for key, (_tokens, at) in list(self._buckets.items()):
            if now - at >= full_after:  # refilled: same as a new bucket
                del self._buckets[key]
        while len(self._buckets) > self.max_keys:  # least recently used first
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)


class RateLimit:
    """ASGI middleware: per-client-IP token bucket; 429 with ``Retry-After`` past the budget.

    Args:
        app: the wrapped application.
        buckets: the buckets (rate and burst).
        counters: where refusals are counted.
    """

    def __init__(self, app: ASGIApp, buckets: TokenBuckets, counters: AccessCounters) -> None:
        self.app = app
        self.buckets = buckets
        self.counters = counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        key = client[0] if client else "unknown"
        wait = self.buckets.take(key)
        if wait <= 0.0:
            await self.app(scope, receive, send)
            return
        self.counters.rate_limited += 1
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013})
            return
        retry = str(max(1, math.ceil(wait))).encode()
        await _reply(send, 429, {"detail": "too many requests"}, [(b"retry-after", retry)])


class BodyGuard:
    """ASGI middleware: request bodies over ``max_body_bytes`` get 413, JSON bodies nested
    deeper than ``max_json_depth`` get 400, before any parser sees them.

    A request that declares a body (``Content-Length`` > 0 or ``Transfer-Encoding``) is read
    whole (at most ``max_body_bytes``, counted as it streams in), checked, and handed to the
    app as one message; other requests (every GET, the SSE stream) pass untouched.

    Args:
        app: the wrapped application.
        max_body_bytes: largest body accepted.
        max_json_depth: deepest JSON nesting accepted.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
    ) -> None:
        if max_body_bytes < 1 or max_json_depth < 1:
            msg = f"limits must be positive: {max_body_bytes=}, {max_json_depth=}"
            raise ValueError(msg)
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    def _too_large(self) -> dict[str, str]:
        return {
            "detail": f"request body over {self.max_body_bytes} bytes "
            "(HLSL_MAX_BODY_BYTES / --max-body-bytes)"
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: bytes | None = None
        chunked = False
        ctype = b""
        for key, value in scope.get("headers", ()):  # one pass (every request comes here)
            if key == b"content-length":
                length = bytes(value)
            elif key == b"transfer-encoding":
                chunked = True
            elif key == b"content-type":
                ctype = bytes(value).lower()
        if length is None and not chunked:
            await self.app(scope, receive, send)
            return
        if length is not None:
            text = length.strip()
            if not text.isdigit() or len(text) > 18:
                await _reply(send, 400, {"detail": "Content-Length: expected a byte count"})
                return
            if int(text) > self.max_body_bytes:
                await _reply(send, 413, self._too_large())
                return
            if int(text) == 0 and not chunked:
                await self.app(scope, receive, send)
                return
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _reply(send, 413, self._too_large())
                return
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        if not ctype or b"json" in ctype:
            detail = None
            if json_depth_exceeds(body, self.max_json_depth):
                detail = (
                    f"request body nested deeper than {self.max_json_depth} levels "
                    "(HLSL_MAX_JSON_DEPTH / --max-json-depth)"
                )
            elif not body.isascii():
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError as ex:  # JSON is UTF-8 (RFC 8259)
                    detail = f"request body is not UTF-8 (byte {ex.start})"
            if detail is not None:
                await _reply(send, 400, {"detail": detail})
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_JSON_DEPTH",
    "DEFAULT_RATE_PER_S",
    "OPEN_PATHS",
    "TOKEN_ENV",
    "AccessCounters",
    "BearerAuth",
    "BodyGuard",
    "RateLimit",
    "TokenBuckets",
    "json_depth_exceeds",
    "token_from_env",
]
