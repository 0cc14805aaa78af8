"""Hyperliquid ``POST /info`` requests, paced within the exchange's per-IP limits.

Only what ingestion needs: ``meta`` (to validate coins before any socket opens: a subscription
for an unknown or mis-cased coin makes the real server close the whole socket), ``l2Book`` and
``candleSnapshot`` (warm start). Requests use the standard library; they run off the event loop.
"""

from __future__ import annotations

import difflib
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Final

import orjson

from connectors.errors import FeedError

REST_WEIGHT_PER_MIN: Final = 1200
WS_MESSAGES_PER_MIN: Final = 2000
NEW_CONNECTIONS_PER_MIN: Final = 30
WEIGHT: Final = {"meta": 20, "l2Book": 2, "allMids": 2, "candleSnapshot": 20}


class InfoError(FeedError):
    """A ``/info`` request failed (network, HTTP status or an unusable body)."""


class CoinError(FeedError):
    """Requested coins are not listed perpetuals; the message names close matches."""


class RateLimiter:
    """A thread-safe token bucket: ``per_min`` tokens a minute, bursts up to ``burst``.

    `acquire` blocks (sleeping, never spinning) until the tokens are available, or returns False
    if ``stop`` is set first.
    """

    def __init__(self, per_min: float, burst: float | None = None) -> None:
        self.rate_per_s = per_min / 60.0
        self.capacity = burst if burst is not None else per_min
        self._tokens = self.capacity
        self._t = time.monotonic()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._t) * self.rate_per_s)
        self._t = now

    def wait_time(self, n: float = 1.0) -> float:
        """Seconds until ``n`` tokens are available (0 if now); takes them when it returns 0."""
        with self._lock:
            self._refill()
            if self._tokens >= n:
                self._tokens -= n
                return 0.0
            return (n - self._tokens) / self.rate_per_s

    def acquire(self, n: float = 1.0, stop: threading.Event | None = None) -> bool:
        """Block until ``n`` tokens are taken; False if ``stop`` was set while waiting."""
        while True:
            wait = self.wait_time(n)
            if wait <= 0:
                return True
            if stop is not None:
                if stop.wait(min(wait, 1.0)):
                    return False
            else:
                time.sleep(min(wait, 1.0))


@dataclass
class InfoClient:
    """A small ``/info`` client with the REST weight budget applied before each request."""

    url: str
    timeout_s: float = 10.0
    limiter: RateLimiter | None = None
    stop: threading.Event | None = None

    def post(self, body: dict[str, Any]) -> tuple[Any, bytes]:
        """POST a request; returns ``(decoded JSON, raw body bytes)``."""
        weight = WEIGHT.get(str(body.get("type")), 20)
        if self.limiter is not None and not self.limiter.acquire(weight, self.stop):
            msg = "stopped while waiting for REST weight"
            raise InfoError(msg)
        req = urllib.request.Request(
            self.url,
            data=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw: bytes = resp.read()
        except urllib.error.HTTPError as ex:
            msg = f"POST {self.url} {body.get('type')}: HTTP {ex.code}"
            raise InfoError(msg) from ex
        except (urllib.error.URLError, OSError, TimeoutError) as ex:
            msg = f"POST {self.url} {body.get('type')}: {ex}"
            raise InfoError(msg) from ex
        try:
            return orjson.loads(raw), raw
        except orjson.JSONDecodeError as ex:
            msg = f"POST {self.url} {body.get('type')}: body is not JSON"
            raise InfoError(msg) from ex

    def perps(self) -> tuple[list[str], set[str]]:
        """Listed perpetuals from ``meta``: ``(all names, delisted names)``."""
        meta, _ = self.post({"type": "meta"})
        try:
            universe = meta["universe"]
            names = [str(u["name"]) for u in universe]
            delisted = {str(u["name"]) for u in universe if u.get("isDelisted")}
        except (KeyError, TypeError) as ex:
            msg = f"unexpected meta response: {str(meta)[:120]}"
            raise InfoError(msg) from ex
        return names, delisted


def resolve_coins(requested: list[str], listed: list[str], delisted: set[str]) -> list[str]:
    """Validate requested coins against ``meta``; ``["ALL"]`` means every non-delisted perp.

    Raises `CoinError` naming every unknown coin with its close matches (names are
    case-sensitive on Hyperliquid: ``btc`` is not ``BTC``).
    """
    if [c.upper() for c in requested] == ["ALL"]:
        return [c for c in listed if c not in delisted]
    known = set(listed)
    problems = []
    for coin in requested:
        if coin in known:
            if coin in delisted:
                problems.append(f"{coin!r} is delisted")
            continue
        folded = [c for c in listed if c.lower() == coin.lower()]
        near = folded or difflib.get_close_matches(coin, listed, n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(repr(c) for c in near)}?)" if near else ""
        problems.append(f"{coin!r} is not a listed perpetual{hint}")
    if problems:
        msg = "; ".join(problems) + " (coin names are case-sensitive)"
        raise CoinError(msg)
    return list(dict.fromkeys(requested))
