"""The order book of one simulated coin: the touch and the deeper levels, in ticks and lots.

The touch (best bid and ask with size and order count) is requoted around the fair price when the
price leaves it or at random, churns without trades, and is consumed by taker orders; the 19
deeper levels a side are gaps (ticks) and sizes drawn per regime, partly redrawn at every
``l2Book`` push. The book renders the ``bbo`` and ``l2Book`` frames and the impact prices of
``activeAssetCtx``.

All draws come from the coin's random stream, in the order the coin's dynamics call them.

Imports `tools.simulate.config`, `.regimes` and `.wire`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Final

from tools.simulate.config import CoinSpec
from tools.simulate.regimes import CHAOTIC, LIQUIDATION_RISK, REGIMES, Regime
from tools.simulate.wire import fmt

BOOK_LEVELS: Final = 20
IMPACT_NOTIONAL_USD: Final = 20_000.0


@dataclass
class Level:
    """A book level below the touch: gap (ticks) from the level above, normalised size, n factor."""

    gap: int
    size: float
    nf: float


class Book:
    """The book of ``coin`` (prices in ticks, sizes in lots of 10**-sz_decimals).

    Args:
        coin: the coin's name (for the frames).
        spec: its market parameters.
        rng: the coin's random stream.
        label: the regime label of the first phase (`enter` draws its depth).
    """

    def __init__(self, coin: str, spec: CoinSpec, rng: random.Random, label: str) -> None:
        self.coin = coin
        self.spec = spec
        self.rng = rng
        self.lot: int = 10**spec.sz_decimals
        self.tick = 10.0**-spec.px_decimals
        self.label = label
        self.regime: Regime = REGIMES[label]
        self.depth = 1.0
        self.bid = self.ask = 0
        self.bid_sz = self.ask_sz = 1
        self.bid_n = self.ask_n = 1
        self.deep: tuple[list[Level], list[Level]] = ([], [])

    def enter(self, label: str) -> None:
        """A new phase: its regime's gaps and spreads apply, and a depth multiplier is drawn."""
        self.label = label
        self.regime = REGIMES[label]
        self.depth = self.rng.uniform(*self.regime.depth)

    def renew(self) -> None:
        """Draw every deeper level of both sides afresh."""
        for side in (0, 1):
            self.deep[side][:] = [self._new_level(i) for i in range(1, BOOK_LEVELS)]

    def _new_level(self, i: int) -> Level:
        rng = self.rng
        gap = 1
        while rng.random() < self.regime.gap_p and gap < 6:
            gap += 1
        if rng.random() < 0.08:  # dust
            size = rng.randint(1, 400) / self.lot / max(self.depth, 1e-9)
        else:
            size = self.spec.level_sz * (1 + 0.07 * i) * math.exp(rng.gauss(0.0, 0.9))
        return Level(gap, size, rng.uniform(0.5, 1.5))

    def _draw_spread(self) -> int:
        rng = self.rng
        label = self.label
        if label == LIQUIDATION_RISK:
            return rng.randint(3, 10)
        if label == CHAOTIC:
            k = 1
            while rng.random() < 0.5 and k < 6:
                k += 1
            return k
        return 1 if rng.random() < 0.88 else 2

    def touch(self) -> tuple[int, int]:
        """A fresh touch order: ``(lots, n)``."""
        size = self.spec.touch_sz * self.depth * math.exp(self.rng.gauss(0.0, 0.8))
        lots = max(1, round(size * self.lot))
        return lots, self._orders(lots, self.rng.uniform(0.6, 1.4))

    def _orders(self, lots: int, nf: float) -> int:
        return max(1, min(99, round(lots / self.lot / self.spec.order_sz * nf) + 1))

    def requote(self, fair: float) -> None:
        """New quotes around the fair price ``fair`` (ticks), with a spread drawn per regime."""
        k = self._draw_spread()
        self.bid = round(fair - k / 2)
        self.ask = self.bid + k
        self.bid_sz, self.bid_n = self.touch()
        self.ask_sz, self.ask_n = self.touch()

    def churn(self) -> None:
        """One side's touch changes size (and order count) without a trade."""
        if self.rng.random() < 0.5:
            self.bid_sz, self.bid_n = self._churn(self.bid_sz, self.bid_n)
        else:
            self.ask_sz, self.ask_n = self._churn(self.ask_sz, self.ask_n)

    def _churn(self, lots: int, n: int) -> tuple[int, int]:
        rng = self.rng
        new = max(1, round(lots * math.exp(rng.gauss(0.0, 0.3))))
        if new > lots:
            n += 1
        elif new < lots and n > 1:
            n -= 1
        return new, n

    def consumed(self, buy: bool, left: int, refill: bool) -> None:
        """The touch a taker order hit: what is left of it, or a fresh order refilling the price."""
        if buy:
            self.ask_sz, self.ask_n = self.touch() if refill else (left, self.ask_n)
        else:
            self.bid_sz, self.bid_n = self.touch() if refill else (left, self.bid_n)

    def _lots(self, level: Level) -> int:
        return max(1, round(level.size * self.depth * self.lot))

    def side_levels(self, side: int) -> list[tuple[int, int, int]]:
        """Levels (price ticks, lots, n) of one side, best first (0 = bids, 1 = asks)."""
        if side == 0:
            px, sgn, out = self.bid, -1, [(self.bid, self.bid_sz, self.bid_n)]
        else:
            px, sgn, out = self.ask, 1, [(self.ask, self.ask_sz, self.ask_n)]
        for lv in self.deep[side]:
            px += sgn * lv.gap
            lots = self._lots(lv)
            out.append((px, lots, self._orders(lots, lv.nf)))
        return out

    def top(self) -> tuple[int, int, int, int, int, int]:
        """The touch: bid, its lots and n, ask, its lots and n."""
        return (self.bid, self.bid_sz, self.bid_n, self.ask, self.ask_sz, self.ask_n)

    def mid_units(self) -> int:
        """Mid in units of tick / 10."""
        return (self.bid + self.ask) * 5

    def impact(self, side: int) -> float:
        """Average fill price (ticks) of IMPACT_NOTIONAL_USD against one side of the book."""
        want = IMPACT_NOTIONAL_USD / self.tick  # in tick-units × coins
        got_ntl = got_sz = 0.0
        px = 0
        for px, lots, _ in self.side_levels(side):
            sz = lots / self.lot
            take = min(sz, (want - got_ntl) / px)
            got_ntl += take * px
            got_sz += take
            if got_ntl >= want * (1 - 1e-12):
                break
        return got_ntl / got_sz if got_sz > 0 else float(px)

    # ----- frames ----------------------------------------------------------------------------

    def _level(self, px: int, lots: int, n: int) -> dict[str, Any]:
        return {
            "px": fmt(px, self.spec.px_decimals),
            "sz": fmt(lots, self.spec.sz_decimals),
            "n": n,
        }

    def bbo_frame(self, t: int) -> dict[str, Any]:
        """A ``bbo`` frame of the current touch."""
        return {
            "channel": "bbo",
            "data": {
                "coin": self.coin,
                "time": t,
                "bbo": [
                    self._level(self.bid, self.bid_sz, self.bid_n),
                    self._level(self.ask, self.ask_sz, self.ask_n),
                ],
            },
        }

    def book_frame(self, t: int) -> dict[str, Any]:
        """Evolve the deeper levels a little and return an ``l2Book`` snapshot."""
        rng = self.rng
        for side in (0, 1):
            deep = self.deep[side]
            for i in range(len(deep)):
                if rng.random() < 0.35:
                    deep[i] = self._new_level(i + 1)
        return {
            "channel": "l2Book",
            "data": {
                "coin": self.coin,
                "time": t,
                "levels": [[self._level(*lv) for lv in self.side_levels(s)] for s in (0, 1)],
            },
        }
