"""The simulator: runs the coins on one block clock and orders their frames by receive time.

Blocks are ~100 ms apart (60–140 ms). Besides each coin's own frames (trades, bbo, a final candle
push per bucket), the simulator schedules ``l2Book`` (all coins on one push clock,
``book_interval_ms``), ``activeAssetCtx`` and candle pushes (about once a second per coin),
``allMids`` (about every 5 s, with a few extra keys such as spot ``@107``) and ``pong`` (every
50 s). Receive time = generation time + a simulated latency in [150, 500) ms; frames come out in
receive order and each stream (channel, coin) is strictly increasing in receive time. Every
capture starts with the ``subscriptionResponse`` acks, all before any data.

Imports `tools.simulate.coin`, `.config` and `.wire`.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from typing import Any, Final

from tools.simulate.coin import CoinSim
from tools.simulate.config import SimConfig
from tools.simulate.wire import fmt, fmt_float

MIN_LATENCY_MS: Final = 150.0
MAX_LATENCY_MS: Final = 499.0
_NS_PER_MS: Final = 1_000_000

# Extra offset (ms) added to the shared latency per channel (bbo is fastest, books slowest).
_CHANNEL_LATENCY_MS: Final = {
    "bbo": -40.0,
    "trades": 40.0,
    "l2Book": 60.0,
    "candle": 20.0,
    "activeAssetCtx": 0.0,
    "allMids": 30.0,
    "pong": 0.0,
}


# Other allMids keys (spot "@107", a k-coin) as (start mid, decimals).
_EXTRA_MIDS: Final = {"@107": (38.37, 3), "HYPE": (38.45, 3), "kPEPE": (0.011234, 6)}


def _address(rng: random.Random) -> str:
    return f"0x{rng.getrandbits(160):040x}"


def _subscriptions(coins: tuple[str, ...]) -> list[dict[str, Any]]:
    subs: list[dict[str, Any]] = []
    for coin in coins:
        subs.append({"type": "trades", "coin": coin})
        subs.append(
            {"type": "l2Book", "coin": coin, "nSigFigs": None, "mantissa": None, "fast": False}
        )
        subs.append({"type": "bbo", "coin": coin})
        subs.append({"type": "candle", "coin": coin, "interval": "1m"})
        subs.append({"type": "activeAssetCtx", "coin": coin})
    subs.append({"type": "allMids"})
    return subs


class _Simulator:
    """Runs the block clock, schedules the periodic streams and orders frames by receive time."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        addr = random.Random(f"{config.seed}/addresses")
        makers = [_address(addr) for _ in range(24)]
        takers = [_address(addr) for _ in range(400)]
        self.coins = [CoinSim(c, config, makers, takers) for c in config.coins]
        self.extra = {
            k: (v * math.exp(self.rng.gauss(0.0, 0.01)), d)
            for k, (v, d) in _EXTRA_MIDS.items()
            if k not in config.coins
        }
        self.heap: list[tuple[int, int, dict[str, Any]]] = []
        self.seq = 0
        self.last_recv: dict[tuple[str, str], int] = {}
        self.lat = 260.0

    def emit(self, gen_ms: int, channel: str, coin: str, frame: dict[str, Any]) -> None:
        rng = self.rng
        lat = self.lat + _CHANNEL_LATENCY_MS[channel] + abs(rng.gauss(0.0, 30.0))
        lat = min(max(lat, MIN_LATENCY_MS), MAX_LATENCY_MS)
        recv = gen_ms * _NS_PER_MS + int(lat * _NS_PER_MS) + rng.randrange(1000)
        key = (channel, coin)
        last = self.last_recv.get(key)
        if last is not None and recv <= last:
            recv = last + rng.randrange(1_000, 50_000)
        self.last_recv[key] = recv
        heapq.heappush(self.heap, (recv, self.seq, frame))
        self.seq += 1

    def mids_frame(self) -> dict[str, Any]:
        rng = self.rng
        mids: dict[str, str] = {}
        for cs in self.coins:
            mids[cs.coin] = fmt(cs.book.mid_units(), cs.spec.px_decimals + 1)
        for k, (v, d) in list(self.extra.items()):
            v *= math.exp(rng.gauss(0.0, 3e-4))
            self.extra[k] = (v, d)
            mids[k] = fmt_float(v, d)
        return {"channel": "allMids", "data": {"mids": mids}}

    def run(self) -> Iterator[tuple[int, dict[str, Any]]]:
        cfg = self.config
        rng = self.rng
        t = cfg.start_ms
        # Acks arrive before any data (data latency is >= 150 ms).
        recv = t * _NS_PER_MS + rng.randrange(80 * _NS_PER_MS, 100 * _NS_PER_MS)
        for sub in _subscriptions(cfg.coins):
            yield (
                recv,
                {
                    "channel": "subscriptionResponse",
                    "data": {"method": "subscribe", "subscription": sub},
                },
            )
            recv += rng.randrange(100_000, 600_000)
        for cs in self.coins:
            self.emit(t, "trades", cs.coin, cs.replay(t))
        next_book = t
        next_mids = t + rng.randrange(0, 5_000)
        next_pong = t + 50_000
        next_ctx = {cs.coin: t + rng.randrange(0, 1_000) for cs in self.coins}
        next_candle = {cs.coin: t + rng.randrange(0, 1_000) for cs in self.coins}
        dt = 0.1
        last_t = t
        heap = self.heap
        while t < cfg.end_ms:
            for cs in self.coins:
                for channel, frame in cs.step(t, dt):
                    self.emit(t, channel, cs.coin, frame)
            if t >= next_book:
                next_book = t + round(cfg.book_interval_ms * rng.uniform(0.97, 1.06))
                for cs in self.coins:
                    self.emit(t, "l2Book", cs.coin, cs.book.book_frame(t))
            for cs in self.coins:
                coin = cs.coin
                if t >= next_ctx[coin]:
                    next_ctx[coin] = t + rng.randint(950, 1_070)
                    self.emit(t, "activeAssetCtx", coin, cs.ctx_frame(t))
                if t >= next_candle[coin]:
                    next_candle[coin] = t + rng.randint(900, 1_200)
                    candle = cs.candle_due()
                    if candle is not None:
                        self.emit(t, "candle", coin, candle)
            if t >= next_mids:
                next_mids = t + rng.randint(4_900, 5_150)
                self.emit(t, "allMids", "", self.mids_frame())
            if t >= next_pong:
                next_pong = t + 50_000
                self.emit(t, "pong", "", {"channel": "pong"})
            bound = t * _NS_PER_MS + int(MIN_LATENCY_MS * _NS_PER_MS)
            while heap and heap[0][0] < bound:
                item = heapq.heappop(heap)
                yield item[0], item[2]
            self.lat = min(max(self.lat + rng.gauss(0.0, 4.0) + 0.02 * (260 - self.lat), 170), 420)
            last_t = t
            gap = rng.randint(60, 140)
            dt = gap / 1000
            t += gap
        for cs in self.coins:  # the final state of each open candle
            candle = cs.candle_due()
            if candle is not None:
                self.emit(last_t, "candle", cs.coin, candle)
        while heap:
            item = heapq.heappop(heap)
            yield item[0], item[2]


def generate(config: SimConfig) -> Iterator[tuple[int, dict[str, Any]]]:
    """Simulate a capture.

    Args:
        config: what to simulate; the output depends on nothing else.

    Yields:
        ``(receive_time_ns, frame)`` in non-decreasing receive time, where ``frame`` is a raw
        Hyperliquid WebSocket frame (``{"channel": ..., "data": ...}`` or ``{"channel": "pong"}``).
    """
    return _Simulator(config).run()
