"""The market model of one simulated coin: price, phases, trades, candles and asset context.

Per ~100 ms block (`CoinSim.step`) the fair price moves as the phase's regime says (mean
reversion, drift, chaotic flow, liquidation jumps), open interest, the oracle basis and the
quotes follow, and taker orders arrive at the regime's rate, walking the book (`Book`) in fills
of one block time. Fills feed the 1m candle and the day volumes; the oracle,
mark, premium and funding of ``activeAssetCtx`` are derived from the price and the book.

Every draw comes from the coin's own random stream (seeded ``"<seed>/<coin>"``), so the coins do
not disturb each other, and the order of the draws is the output: a change that reorders them
changes every capture.

Imports `tools.simulate.book`, `.config`, `.regimes` and `.wire`.
"""

from __future__ import annotations

import math
import random
from typing import Any, Final

from tools.simulate.book import Book
from tools.simulate.config import SPECS, SimConfig, spans
from tools.simulate.regimes import (
    CHAOS_FLIP_RATE,
    CHAOTIC,
    LIQUIDATION_RISK,
    MEAN_REVERTING,
    OU_KAPPA,
    REGIMES,
    TRENDING,
)
from tools.simulate.wire import fmt, fmt_float

REPLAY_TRADES: Final = 30
MAX_TRADES_PER_FRAME: Final = 120
CANDLE_MS: Final = 60_000
INTEREST_8H: Final = 0.0001
ZERO_HASH: Final = "0x" + "0" * 64


class _Candle:
    __slots__ = ("c", "dirty", "h", "l", "n", "o", "t", "v")

    def __init__(self, t: int, px: int) -> None:
        self.t = t
        self.o = self.h = self.l = self.c = px
        self.v = 0
        self.n = 0
        self.dirty = True


def poisson(rng: random.Random, lam: float) -> int:
    """Knuth's Poisson sampler (small ``lam``)."""
    limit = math.exp(-lam)
    k = 0
    p = rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class CoinSim:
    """State and per-block dynamics of one coin."""

    def __init__(self, coin: str, config: SimConfig, makers: list[str], takers: list[str]) -> None:
        self.coin = coin
        self.spec = spec = SPECS[coin]
        self.rng = rng = random.Random(f"{config.seed}/{coin}")
        self.spans = spans(config, coin)
        self.span_idx = -1
        self.span = self.spans[0]
        self.regime = REGIMES[self.span.label]
        self.book = Book(coin, spec, rng, self.span.label)
        self.makers = makers
        self.takers = takers
        self.lot: int = 10**spec.sz_decimals
        self.tick = 10.0**-spec.px_decimals
        self.c = spec.start_px * math.exp(rng.gauss(0.0, 0.004)) / self.tick  # fair, in ticks
        self.anchor = self.c
        self.drift = 0.0  # log-price drift per second
        self.flow = 1  # chaotic flow sign
        self.burst = 0.0
        self.last_bbo: tuple[int, int, int, int, int, int] | None = None
        self.tids: set[int] = set()
        self.candle: _Candle | None = None
        self.last_trade = 0
        self.oracle_ema = self.c
        self.basis = rng.gauss(4e-4, 2e-4)  # oracle above the perp: premium mildly negative
        self.oracle = self.c
        self.mark = self.c
        self.premium = -self.basis
        self.premium_ema = self.premium
        self.funding = 0.0
        self.next_oracle_ms = 0
        self.next_premium_ms = 0
        self.oi = spec.open_interest * rng.uniform(0.9, 1.1)
        day_ntl = spec.day_ntl * rng.uniform(0.8, 1.2)
        self.day_ntl = int(day_ntl * 1e6) * 10_000 + rng.randrange(10_000)  # units of 1e-10 USD
        self.day_base = round(day_ntl / spec.start_px * math.exp(rng.gauss(0.0, 0.01)) * self.lot)
        self.prev_day = round(self.c * math.exp(rng.gauss(0.0, 0.025)))
        self.oi_rate = 0.0
        self._enter(0)
        self.book.requote(self.c)
        self.book.renew()

    def _enter(self, idx: int) -> None:
        rng = self.rng
        self.span_idx = idx
        self.span = span = self.spans[idx]
        self.regime = REGIMES[span.label]
        self.anchor = self.c
        self.book.enter(span.label)
        if span.label == TRENDING:
            self.drift = span.direction * rng.uniform(40.0, 70.0) / 60.0 * 1e-4
        elif span.label == LIQUIDATION_RISK:
            self.drift = span.direction * rng.uniform(3.5, 5.5) * 1e-4
            self.oi_rate = -rng.uniform(6e-4, 9e-4)
        else:
            self.drift = 0.0
        self.flow = rng.choice((-1, 1))
        if idx:
            self.book.renew()

    # ----- per-block dynamics --------------------------------------------------------------------

    def step(self, t: int, dt: float) -> list[tuple[str, dict[str, Any]]]:
        """Advance one block ending at exchange time ``t``; returns (channel, frame) pairs."""
        rng = self.rng
        out: list[tuple[str, dict[str, Any]]] = []
        changed = False
        while t >= self.span.end_ms and self.span_idx + 1 < len(self.spans):
            self._enter(self.span_idx + 1)
            changed = True
        label = self.span.label
        reg = self.regime
        spec = self.spec
        sig = spec.vol_bps * reg.vol_mult * 1e-4 * math.sqrt(dt)
        dx = sig * rng.gauss(0.0, 1.0)
        if label == MEAN_REVERTING:
            dx -= OU_KAPPA * math.log(self.c / self.anchor) * dt
        elif label == CHAOTIC:
            if rng.random() < 1 - math.exp(-CHAOS_FLIP_RATE * dt):
                self.flow = -self.flow
            dx += self.flow * spec.vol_bps * 1e-4 * dt
        else:
            dx += self.drift * dt
            if label == LIQUIDATION_RISK and rng.random() < 0.1 * dt:
                dx += self.span.direction * rng.uniform(3.0, 9.0) * 1e-4
        self.c *= math.exp(dx)
        # Open interest, oracle (a lagging index plus a basis) and the premium's basis target.
        if label == LIQUIDATION_RISK:
            self.oi *= math.exp(self.oi_rate * dt + 2e-4 * math.sqrt(dt) * rng.gauss(0.0, 1.0))
            target = -self.span.direction * 9e-4
        else:
            drift_oi = 4e-5 if label == TRENDING else 0.0
            self.oi *= math.exp(drift_oi * dt + 6e-5 * math.sqrt(dt) * rng.gauss(0.0, 1.0))
            target = 4e-4
        self.basis += (target - self.basis) * (1 - math.exp(-dt / 8.0)) + 1e-5 * rng.gauss(0, 1)
        self.oracle_ema += (self.c - self.oracle_ema) * (1 - math.exp(-dt / 4.0))

        # Quotes: requote when the fair price leaves the quotes (with hysteresis) or at random.
        book = self.book
        h = spec.hysteresis
        if (
            changed
            or self.c < book.bid - h
            or self.c > book.ask + h
            or book.ask - book.bid > reg.max_spread
            or rng.random() < 0.02
        ):
            book.requote(self.c)
        elif rng.random() < spec.churn:
            book.churn()

        # Trades.
        self.burst *= math.exp(-dt / 2.0)
        if rng.random() < 0.12 * dt * reg.rate_mult:
            self.burst += rng.uniform(1.0, 3.0)
        lam = spec.frame_rate * reg.rate_mult * (1.0 + self.burst)
        if rng.random() < 1.0 - math.exp(-lam * dt):
            trades, flushed = self._trades(t)
            if flushed is not None:
                out.append(("candle", flushed))
            out.append(("trades", {"channel": "trades", "data": trades}))

        bbo = book.top()
        if bbo != self.last_bbo:
            self.last_bbo = bbo
            out.append(("bbo", book.bbo_frame(t)))
        return out

    def _p_buy(self) -> float:
        label = self.span.label
        if label == MEAN_REVERTING:
            sd = self.spec.vol_bps * self.regime.vol_mult * 1e-4 / math.sqrt(2 * OU_KAPPA)
            return 0.5 - 0.2 * math.tanh(math.log(self.c / self.anchor) / (2 * sd))
        if label == TRENDING:
            return 0.5 + 0.22 * self.span.direction
        if label == CHAOTIC:
            return 0.5 + 0.32 * self.flow
        return 0.5 + 0.42 * self.span.direction

    def _tid(self) -> int:
        rng = self.rng
        while True:
            tid = rng.getrandbits(50)
            if tid and tid not in self.tids:
                self.tids.add(tid)
                return tid

    def _trade(self, t: int, buy: bool, px: int, lots: int, hsh: str, taker: str) -> dict[str, Any]:
        maker = self.rng.choice(self.makers)
        self._book_trade(px, lots)
        return {
            "coin": self.coin,
            "side": "B" if buy else "A",
            "px": fmt(px, self.spec.px_decimals),
            "sz": fmt(lots, self.spec.sz_decimals),
            "time": t,
            "hash": hsh,
            "tid": self._tid(),
            "users": [taker, maker] if buy else [maker, taker],
        }

    def _book_trade(self, px: int, lots: int) -> None:
        """Account one fill in the candle and the day volumes (the candle is rolled by caller)."""
        cd = self.candle
        assert cd is not None
        if px > cd.h:
            cd.h = px
        if px < cd.l:
            cd.l = px
        cd.c = px
        cd.v += lots
        cd.n += 1
        cd.dirty = True
        self.last_trade = px
        self.day_base += lots
        self.day_ntl += px * lots * 10 ** (10 - self.spec.px_decimals - self.spec.sz_decimals)

    def _roll_candle(self, t: int, px: int) -> dict[str, Any] | None:
        """Start the candle of ``t``'s bucket if needed; returns the old bucket's final push."""
        bucket = t - t % CANDLE_MS
        cd = self.candle
        if cd is not None and cd.t == bucket:
            return None
        final = self.candle_frame() if cd is not None and cd.dirty else None
        self.candle = _Candle(bucket, px)
        return final

    def _taker(self) -> str:
        return self.takers[int(len(self.takers) * self.rng.random() ** 2.5)]

    def _trades(self, t: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        rng = self.rng
        reg = self.regime
        spec = self.spec
        label = self.span.label
        p_buy = self._p_buy()
        n_orders = 1 + poisson(rng, reg.extra_orders)
        trades: list[dict[str, Any]] = []
        flushed: dict[str, Any] | None = None
        cap = 25.0 * spec.trade_sz
        for _ in range(n_orders):
            if len(trades) >= MAX_TRADES_PER_FRAME:
                break
            buy = rng.random() < p_buy
            sgn = 1 if buy else -1
            mult = 1.0
            if label in (TRENDING, LIQUIDATION_RISK) and sgn == self.span.direction:
                mult = 1.2 if label == TRENDING else 1.8
            fills = 1
            while rng.random() > reg.fill_p and fills < 40:
                fills += 1
            fills = min(fills, MAX_TRADES_PER_FRAME - len(trades))
            hsh = f"0x{rng.getrandbits(256):064x}" if rng.random() < 0.25 else ZERO_HASH
            taker = self._taker()
            levels = self.book.side_levels(1 if buy else 0)
            li = 0
            left = levels[0][1]
            for _ in range(fills):
                size = min(spec.trade_sz * mult * math.exp(1.2 * rng.gauss(0.0, 1.0)), cap * mult)
                lots = max(1, round(size * self.lot))
                while lots > left and li + 1 < len(levels):
                    li += 1
                    left = levels[li][1]
                left -= lots
                px = levels[li][0]
                if flushed is None:
                    flushed = self._roll_candle(t, px)
                trades.append(self._trade(t, buy, px, lots, hsh, taker))
            # The consumed touch: what is left, or a fresh order refilling the same price.
            self.book.consumed(buy, left, refill=li > 0 or left <= 0)
        return trades, flushed

    def replay(self, start_ms: int) -> dict[str, Any]:
        """The first trades frame after subscribing: the last 30 trades, oldest first."""
        rng = self.rng
        back = rng.uniform(15_000, 50_000)
        n_blocks = rng.randint(8, 16)
        times = sorted({start_ms - 1 - round(rng.uniform(0.0, back)) for _ in range(n_blocks)})
        counts = [1] * len(times)
        for _ in range(REPLAY_TRADES - len(times)):
            counts[rng.randrange(len(times))] += 1
        trades: list[dict[str, Any]] = []
        for t, k in zip(times, counts, strict=True):
            drift = round(rng.gauss(0.0, 1.0) * self.spec.hysteresis * 2 * (start_ms - t) / back)
            buy = rng.random() < 0.5
            hsh = ZERO_HASH
            taker = self._taker()
            for _ in range(k):
                px = (self.book.ask if buy else self.book.bid) + drift
                size = self.spec.trade_sz * math.exp(1.2 * rng.gauss(0.0, 1.0))
                lots = max(1, round(size * self.lot))
                self._roll_candle(t, px)
                trades.append(self._trade(t, buy, px, lots, hsh, taker))
        if self.candle is not None:
            self.candle.dirty = False  # history: only candles that change live are pushed
        return {"channel": "trades", "data": trades}

    # ----- frames ----------------------------------------------------------------------------

    def candle_frame(self) -> dict[str, Any]:
        """A ``candle`` frame of the open candle (marks it pushed)."""
        cd = self.candle
        assert cd is not None
        cd.dirty = False
        pd = self.spec.px_decimals
        return {
            "channel": "candle",
            "data": {
                "t": cd.t,
                "T": cd.t + CANDLE_MS - 1,
                "s": self.coin,
                "i": "1m",
                "o": fmt(cd.o, pd),
                "c": fmt(cd.c, pd),
                "h": fmt(cd.h, pd),
                "l": fmt(cd.l, pd),
                "v": fmt(cd.v, self.spec.sz_decimals),
                "n": cd.n,
            },
        }

    def candle_due(self) -> dict[str, Any] | None:
        """The open candle if it changed since its last push."""
        cd = self.candle
        return self.candle_frame() if cd is not None and cd.dirty else None

    def ctx_frame(self, t: int) -> dict[str, Any]:
        """An ``activeAssetCtx`` frame (oracle/mark every ~3 s, premium/funding every ~5 s)."""
        rng = self.rng
        book = self.book
        imp_bid, imp_ask = book.impact(0), book.impact(1)
        if t >= self.next_oracle_ms:
            self.next_oracle_ms = t + rng.randint(2_800, 3_200)
            self.oracle = self.oracle_ema * (1 + self.basis)
            last = self.last_trade or (book.bid + book.ask) / 2
            book_px = sorted((book.bid, book.ask, last))[1]
            mid = (book.bid + book.ask) / 2
            self.mark = sorted((self.oracle * (1 + self.premium_ema), mid, book_px))[1]
        if t >= self.next_premium_ms:
            self.next_premium_ms = t + rng.randint(4_800, 5_200)
            o = self.oracle
            self.premium = (max(imp_bid - o, 0.0) - max(o - imp_ask, 0.0)) / o
            self.premium_ema += (self.premium - self.premium_ema) * (1 - math.exp(-5.0 / 60.0))
            p = self.premium_ema
            self.funding = (p + min(max(INTEREST_8H - p, -0.0005), 0.0005)) / 8
        spec = self.spec
        pd = spec.px_decimals
        od = 6 - spec.sz_decimals  # max price decimals of a perp
        tick = self.tick
        return {
            "channel": "activeAssetCtx",
            "data": {
                "coin": self.coin,
                "ctx": {
                    "funding": fmt_float(self.funding, 10),
                    "openInterest": fmt_float(self.oi, spec.sz_decimals),
                    "prevDayPx": fmt(self.prev_day, pd),
                    "dayNtlVlm": fmt(self.day_ntl, 10),
                    "premium": fmt_float(self.premium, 10),
                    "oraclePx": fmt_float(self.oracle * tick, od),
                    "markPx": fmt_float(self.mark * tick, od),
                    "midPx": fmt(book.mid_units(), pd + 1),
                    "impactPxs": [fmt_float(imp_bid * tick, od), fmt_float(imp_ask * tick, od)],
                    "dayBaseVlm": fmt(self.day_base, spec.sz_decimals),
                },
            },
        }
