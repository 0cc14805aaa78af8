"""The exchange's wire protocol: message texts, subscriptions and client requests.

What the real server says and accepts on ``/ws`` (``../shared/reference/hyperliquid-api.md``
§0–§2): the greeting, ``pong``, the request-error texts, the six data channels and the 14 candle
intervals; a subscription (`Sub`) as the server echoes it in acks, and the parse of a client
message (`parse_request`) into ping, subscribe/unsubscribe or ``post``. Also the exchange's
number formatting (decimal strings) and the ``meta`` reference tables.

Imports nothing else of the fake exchange.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

import orjson

GREETING: Final = "Websocket connection established."
PARSE_ERROR: Final = "Error parsing JSON into valid websocket request: "
ALREADY_SUBSCRIBED: Final = "Already subscribed: "
ALREADY_UNSUBSCRIBED: Final = "Already unsubscribed: "
PONG: Final = '{"channel":"pong"}'

DATA_CHANNELS: Final = frozenset({"trades", "l2Book", "bbo", "candle", "activeAssetCtx", "allMids"})

_MINUTE: Final = 60_000
CANDLE_INTERVALS_MS: Final[dict[str, int]] = {
    "1m": _MINUTE,
    "3m": 3 * _MINUTE,
    "5m": 5 * _MINUTE,
    "15m": 15 * _MINUTE,
    "30m": 30 * _MINUTE,
    "1h": 60 * _MINUTE,
    "2h": 120 * _MINUTE,
    "4h": 240 * _MINUTE,
    "8h": 480 * _MINUTE,
    "12h": 720 * _MINUTE,
    "1d": 1440 * _MINUTE,
    "3d": 3 * 1440 * _MINUTE,
    "1w": 7 * 1440 * _MINUTE,
    "1M": 0,  # calendar month
}
"""Candle intervals (WS ``candle`` and REST ``candleSnapshot``) and their length in ms."""

KNOWN_SZ_DECIMALS: Final[dict[str, int]] = {
    "BTC": 5,
    "ETH": 4,
    "SOL": 2,
    "HYPE": 2,
    "kPEPE": 0,
    "MATIC": 1,
    "ATOM": 2,
    "DYDX": 1,
    "AVAX": 2,
    "BNB": 3,
    "APE": 1,
    "OP": 1,
    "LTC": 2,
    "ARB": 1,
    "DOGE": 0,
    "INJ": 1,
    "SUI": 1,
}
KNOWN_MAX_LEVERAGE: Final[dict[str, int]] = {"BTC": 50, "ETH": 50, "SOL": 20, "HYPE": 10}
DEFAULT_SZ_DECIMALS: Final = 2
DEFAULT_MAX_LEVERAGE: Final = 10


def dumps(obj: Any) -> str:
    """Compact JSON text, as the exchange writes it."""
    return orjson.dumps(obj).decode()


def error_frame(text: str) -> str:
    """A ``{"channel":"error","data":text}`` message."""
    return dumps({"channel": "error", "data": text})


def fmt_dec(value: Decimal) -> str:
    """Exchange-style decimal string: no exponent, no trailing zeros, at least one decimal."""
    s = format(value, "f")
    if "." in s:
        s = s.rstrip("0")
        if s.endswith("."):
            s += "0"
    else:
        s += ".0"
    return s


def decimals(value: str) -> int:
    """Significant decimals of a decimal string ("0.00036" → 5, "2058973.0" → 0)."""
    _, _, frac = value.partition(".")
    return len(frac.rstrip("0"))


def now_ms() -> int:
    """The wall clock in ms (exchange time)."""
    return time.time_ns() // 1_000_000


# ----- subscriptions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sub:
    """One subscription of the six data channels (first dex only)."""

    type: str
    coin: str = ""
    interval: str = ""
    n_sig_figs: int | None = None
    mantissa: int | None = None
    fast: bool = False
    dex: str | None = None

    def wire(self) -> dict[str, Any]:
        """The subscription as the server echoes it (defaults filled in, server key order)."""
        if self.type == "allMids":
            return {"type": "allMids"} if self.dex is None else {"type": "allMids", "dex": self.dex}
        if self.type == "l2Book":
            return {
                "type": "l2Book",
                "coin": self.coin,
                "nSigFigs": self.n_sig_figs,
                "mantissa": self.mantissa,
                "fast": self.fast,
            }
        if self.type == "candle":
            return {"type": "candle", "coin": self.coin, "interval": self.interval}
        return {"type": self.type, "coin": self.coin}

    @functools.cached_property
    def key(self) -> str:
        """The echoed subscription's JSON text: one key per distinct subscription."""
        return dumps(self.wire())

    @property
    def route(self) -> tuple[str, str, str]:
        """``(type, coin, interval)``: the stream the subscription reads."""
        return (self.type, self.coin, self.interval)


def opt_int(value: Any) -> tuple[bool, int | None]:
    """``(ok, value)`` for an optional integer field (``ok`` False: neither None nor an int)."""
    if value is None or type(value) is int:
        return True, value
    return False, None


def parse_sub(sub: Any) -> Sub | None:
    """A subscription object → `Sub`, or None when it would not deserialize on the server."""
    if type(sub) is not dict:
        return None
    kind = sub.get("type")
    if kind == "allMids":
        dex = sub.get("dex")
        return Sub("allMids", dex=dex) if dex is None or type(dex) is str else None
    coin = sub.get("coin")
    if type(coin) is not str:
        return None
    if kind in ("trades", "bbo", "activeAssetCtx"):
        return Sub(kind, coin)
    if kind == "candle":
        interval = sub.get("interval")
        if type(interval) is not str or interval not in CANDLE_INTERVALS_MS:
            return None
        return Sub("candle", coin, interval)
    if kind == "l2Book":
        ok_sig, n_sig = opt_int(sub.get("nSigFigs"))
        ok_man, mantissa = opt_int(sub.get("mantissa"))
        fast = sub.get("fast")
        if not (ok_sig and ok_man) or (fast is not None and type(fast) is not bool):
            return None
        return Sub("l2Book", coin, n_sig_figs=n_sig, mantissa=mantissa, fast=bool(fast))
    return None


def accepted(sub: Sub, coins: frozenset[str]) -> bool:
    """Whether the server serves ``sub`` (else it drops the socket; REST answers 422).

    Args:
        sub: a parsed subscription.
        coins: the universe (coins outside it, unknown or mis-cased, are refused).
    """
    if sub.type == "allMids":
        return sub.dex in (None, "")
    if sub.coin not in coins:
        return False
    if sub.type == "l2Book":
        if sub.n_sig_figs is not None and sub.n_sig_figs not in (2, 3, 4, 5):
            return False
        if sub.mantissa is not None and (sub.n_sig_figs != 5 or sub.mantissa not in (1, 2, 5)):
            return False
    return True


# ----- client requests -------------------------------------------------------------------------


@dataclass(frozen=True)
class WsRequest:
    """A well-formed client message: ``ping``, ``subscribe``/``unsubscribe`` or ``post``."""

    method: str
    sub: Sub | None = None
    post_id: int = 0
    payload: dict[str, Any] = field(default_factory=dict)


def parse_request(text: str) -> WsRequest | None:
    """A client message → `WsRequest`, or None (the server answers the parse error)."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    method = obj.get("method")
    if method == "ping":
        return WsRequest("ping")
    if method in ("subscribe", "unsubscribe"):
        sub = parse_sub(obj.get("subscription"))
        return None if sub is None else WsRequest(method, sub)
    if method == "post":
        post_id = obj.get("id")
        request = obj.get("request")
        if type(post_id) is not int or type(request) is not dict or request.get("type") != "info":
            return None
        payload = request.get("payload")
        if type(payload) is not dict:
            return None
        return WsRequest("post", post_id=post_id, payload=payload)
    return None
