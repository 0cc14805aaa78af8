"""The state every channel's parser shares, and the helpers they share.

`ParserCore` is the base of the per-channel parsers (`connectors._parse_trades`,
`connectors._parse_book`, `connectors._parse_candle`, `connectors._parse_mids_ctx`), which
`connectors.parse.FrameParser` combines: counters, the coin filter, the source clock
(`latest_ms`), the time and price-continuity checks, the trade de-duplication memory and the
candles still open. They are methods of one object, not calls between objects, so splitting the
parser by channel adds no call on the per-frame path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from connectors.errors import FrameError
from connectors.events import Candle, Event
from connectors.validate import PriceGuard, TimeCheck, ValidationConfig


class ParserCore:
    """Shared parser state (documented on `connectors.parse.FrameParser`) and helpers."""

    def __init__(
        self, coins: frozenset[str] | None = None, config: ValidationConfig | None = None
    ) -> None:
        self.coins = coins
        self.config = config if config is not None else ValidationConfig()
        self.frames: Counter[str] = Counter()
        self.control: Counter[str] = Counter()
        self.duplicates = 0
        self.ignored_coin = 0
        self.latest_ms: int | None = None
        self.seen_coins: set[str] = set()
        # Coins a live connection has activated (primed and subscribed); allMids fans out only
        # to them once a capture says so, so a replay sees exactly what the live run saw.
        self.active: set[str] | None = None
        self.on_reject: Callable[[FrameError], None] | None = None
        self._times = TimeCheck(self.config)
        self.guard = PriceGuard(
            self.config.max_price_jump, confirm_first=self.config.confirm_first_price
        )
        self._dedupe: dict[str, dict[tuple[int, int], None]] = {}
        # (coin, interval) -> (open t, fields) of the candle still open; closed bucket starts.
        self._open_candles: dict[tuple[str, str], Candle] = {}
        # No open candle closes before this source time (a lower bound of their close times):
        # frames before it need not look at the open candles (180 coins: 180 per frame).
        self._candles_due_ms: int | None = None
        self._closed_t: dict[tuple[str, str], int] = {}

    def _admit(self, out: list[Event]) -> list[Event]:
        """Pass events through the price-continuity guard (rejections after the fact reported)."""
        guard = self.guard
        out = guard.admit(out)
        if guard.rejected:
            rejected, guard.rejected = guard.rejected, []
            if self.on_reject is not None:
                for ex in rejected:
                    self.on_reject(ex)
        return out

    def _time(self, t: Any, recv_ms: int | None, channel: str) -> int:
        return self._times.check(t, recv_ms, self.latest_ms, channel)

    def _see(self, time_ms: int) -> None:
        latest = self.latest_ms
        if latest is None or time_ms > latest:
            self.latest_ms = time_ms

    def _keep(self, coin: str) -> bool:
        coins = self.coins
        if coins is not None and coin not in coins:
            self.ignored_coin += 1
            return False
        self.seen_coins.add(coin)
        return True

    def _untimed(self, recv_ms: int | None, channel: str) -> int:
        if recv_ms is not None:
            return recv_ms
        if self.latest_ms is not None:
            return self.latest_ms
        msg = "no receive time and no exchange time seen before it"
        raise FrameError(f"untimed_{channel}", msg)
