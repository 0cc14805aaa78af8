"""What the live source connects to and subscribes, and the exchange's limits it stays inside.

`LiveConfig` (endpoints, timings, sharding, validation), `subscriptions_for` (a coin's
subscriptions), `shard` (coins over connections) and `Limits` (the per-IP budgets every
connection of the process shares). Re-exported by `connectors.live`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from connectors.rest import (
    NEW_CONNECTIONS_PER_MIN,
    REST_WEIGHT_PER_MIN,
    WS_MESSAGES_PER_MIN,
    RateLimiter,
)
from connectors.validate import ValidationConfig

MAINNET_WS: Final = "wss://api.hyperliquid.xyz/ws"
MAINNET_INFO: Final = "https://api.hyperliquid.xyz/info"
SUBS_PER_COIN: Final = 5
MAX_SUBSCRIPTIONS: Final = 1000
MAX_CONNECTIONS: Final = 10

# Silence (s) after which a subscription seen before counts as dead, at the least; trades and
# candles are event-driven (an idle coin may print nothing for minutes) and are not watched.
_SILENCE_FLOOR_S: Final = {"l2Book": 30.0, "bbo": 120.0, "activeAssetCtx": 20.0, "allMids": 40.0}


@dataclass(frozen=True)
class LiveConfig:
    """Connection settings (durations in seconds, as their names say)."""

    ws_url: str = MAINNET_WS
    info_url: str = MAINNET_INFO
    book_fast: bool = False
    candle_interval: str = "1m"
    ping_interval_s: float = 20.0
    stall_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    healthy_after_s: float = 60.0
    silence_factor: float = 10.0
    watchdog_every_s: float = 1.0
    ack_timeout_s: float = 5.0
    warm_start: bool = True
    warm_candles: int = 120
    coins_per_connection: int = 40
    batch_size: int = 1000
    silence_floor_s: dict[str, float] = field(default_factory=lambda: dict(_SILENCE_FLOOR_S))
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    """What a frame must be to be accepted (`connectors.validate`)."""
    ip_share: int = 1
    """Processes sharing this machine's IP (a Bytewax cluster on one host): each takes
    ``1/ip_share`` of the per-IP rate budgets (`Limits`)."""


class Limits:
    """The per-IP budgets shared by every connection of the process.

    ``share`` processes on one IP (a Bytewax cluster on one host) divide each budget: outbound
    messages, new connections and REST weight per minute, and their bursts. The connections and
    subscriptions themselves need no division: they are the source's partitions, one global list
    that Bytewax spreads over the processes (``allMids`` rides on the first connection only).
    """

    def __init__(self, share: int = 1) -> None:
        n = max(1, share)
        self.share = n
        self.ws_messages = RateLimiter(WS_MESSAGES_PER_MIN / n, burst=max(1.0, 1000 / n))
        self.new_connections = RateLimiter(NEW_CONNECTIONS_PER_MIN / n, burst=max(1.0, 10 / n))
        self.rest_weight = RateLimiter(
            REST_WEIGHT_PER_MIN / n, burst=max(1.0, REST_WEIGHT_PER_MIN / 2 / n)
        )


def subscriptions_for(coin: str, config: LiveConfig) -> list[dict[str, Any]]:
    """The per-coin subscriptions (one frame each)."""
    book: dict[str, Any] = {"type": "l2Book", "coin": coin}
    if config.book_fast:
        book["fast"] = True
    return [
        {"type": "trades", "coin": coin},
        book,
        {"type": "bbo", "coin": coin},
        {"type": "activeAssetCtx", "coin": coin},
        {"type": "candle", "coin": coin, "interval": config.candle_interval},
    ]


def shard(coins: Sequence[str], per_connection: int) -> list[list[str]]:
    """Split coins over connections (at most `MAX_CONNECTIONS`)."""
    if len(coins) * SUBS_PER_COIN + 1 > MAX_SUBSCRIPTIONS:
        msg = (
            f"{len(coins)} coins need {len(coins) * SUBS_PER_COIN + 1} subscriptions; the "
            f"exchange allows {MAX_SUBSCRIPTIONS} per IP"
        )
        raise ValueError(msg)
    per = max(per_connection, -(-len(coins) // MAX_CONNECTIONS))
    return [list(coins[i : i + per]) for i in range(0, len(coins), per)] or [[]]
