"""Seeded Hyperliquid market simulator: scripted regimes → a capture in the exchange's wire format.

The simulator replays nothing: it invents a market. Each coin follows a script of phases (one
regime label each); the price process, aggressor flow, spread, depth, trade rate, open interest and
premium follow the phase, and every stream is emitted exactly as Hyperliquid's public WebSocket
sends it (``../shared/reference/hyperliquid-api.md`` §1.3–1.4), wrapped in the archive envelope
``{"time": "<receive time, ISO UTC, ns>", "ver_num": 1, "raw": <frame>}``.

What a capture holds (per coin unless noted):

- ``subscriptionResponse`` acks first (trades, l2Book, bbo, candle 1m, activeAssetCtx per coin,
  then allMids), all before any data;
- ``trades``: the first frame replays the last 30 trades (times before the start, several block
  times in one frame); every later frame holds the fills of one ~100 ms block (one ``time``);
  ``tid`` is unique per coin across the whole capture (the replay included);
- ``bbo`` on every block where the best bid/ask (price, size or order count) changed;
- ``l2Book`` 20 levels a side, all coins on one push clock (``book_interval_ms``);
- ``candle`` 1m, re-pushed about once a second while it changes; the last push of a bucket equals
  the aggregate of that bucket's trades;
- ``activeAssetCtx`` about once a second, ``allMids`` (global) about every 5 s, ``pong`` (global)
  every 50 s; these three carry no exchange time.

Receive time = generation time + a simulated latency in [150, 500) ms; frames come out in receive
order and each stream (channel, coin) is strictly increasing in receive time.

Usage::

    python -m tools.simulate --out data/sample.ndjson.gz --seconds 600 --seed 7 \\
        --coins BTC,ETH,SOL --book-interval-ms 1000 --truth data/sample.truth.json
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import io
import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

__all__ = [
    "CHAOTIC",
    "DEFAULT_SCRIPTS",
    "LABELS",
    "LIQUIDATION_RISK",
    "MEAN_REVERTING",
    "TRENDING",
    "Phase",
    "SimConfig",
    "generate",
    "main",
    "truth",
    "write_capture",
]

TRENDING: Final = "TRENDING"
MEAN_REVERTING: Final = "MEAN_REVERTING"
LIQUIDATION_RISK: Final = "LIQUIDATION_RISK"
CHAOTIC: Final = "CHAOTIC"
LABELS: Final = (TRENDING, MEAN_REVERTING, LIQUIDATION_RISK, CHAOTIC)

BOOK_LEVELS: Final = 20
REPLAY_TRADES: Final = 30
MAX_TRADES_PER_FRAME: Final = 120
CANDLE_MS: Final = 60_000
MIN_LATENCY_MS: Final = 150.0
MAX_LATENCY_MS: Final = 499.0
IMPACT_NOTIONAL_USD: Final = 20_000.0
INTEREST_8H: Final = 0.0001
ZERO_HASH: Final = "0x" + "0" * 64
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


@dataclass(frozen=True)
class Phase:
    """One scripted regime phase.

    Attributes:
        label: one of `LABELS`.
        duration_s: length in seconds (> 0).
        direction: +1 up / -1 down; 0 picks the label's default (TRENDING up, LIQUIDATION_RISK
            down); ignored (reported as 0) for MEAN_REVERTING and CHAOTIC.
    """

    label: str
    duration_s: float
    direction: int = 0

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            msg = f"unknown phase label {self.label!r}; expected one of {LABELS}"
            raise ValueError(msg)
        if not self.duration_s > 0:
            msg = f"phase duration must be > 0 s, got {self.duration_s!r}"
            raise ValueError(msg)
        if self.direction not in (-1, 0, 1):
            msg = f"phase direction must be -1, 0 or 1, got {self.direction!r}"
            raise ValueError(msg)

    @property
    def sign(self) -> int:
        """The effective direction: +1, -1, or 0 for directionless labels."""
        if self.label == TRENDING:
            return self.direction or 1
        if self.label == LIQUIDATION_RISK:
            return self.direction or -1
        return 0


DEFAULT_SCRIPTS: Final[dict[str, tuple[Phase, ...]]] = {
    "BTC": (
        Phase(MEAN_REVERTING, 150),
        Phase(TRENDING, 150, 1),
        Phase(CHAOTIC, 90),
        Phase(LIQUIDATION_RISK, 60),
        Phase(MEAN_REVERTING, 150),
    ),
    "ETH": (
        Phase(TRENDING, 120, -1),
        Phase(MEAN_REVERTING, 120),
        Phase(LIQUIDATION_RISK, 60),
        Phase(CHAOTIC, 120),
        Phase(TRENDING, 180, 1),
    ),
    "SOL": (
        Phase(CHAOTIC, 90),
        Phase(MEAN_REVERTING, 120),
        Phase(TRENDING, 150, 1),
        Phase(LIQUIDATION_RISK, 45),
        Phase(MEAN_REVERTING, 195),
    ),
    "HYPE": (
        Phase(TRENDING, 120, 1),
        Phase(CHAOTIC, 90),
        Phase(MEAN_REVERTING, 150),
        Phase(LIQUIDATION_RISK, 60),
        Phase(MEAN_REVERTING, 180),
    ),
}
"""Default scripts (each 600 s; a longer run repeats the script, a shorter one cuts it)."""


@dataclass(frozen=True)
class _CoinSpec:
    """Static market parameters of one coin (sizes in coins, prices in USD)."""

    px_decimals: int  # decimals of the book tick (tick = 10 ** -px_decimals)
    sz_decimals: int
    start_px: float
    vol_bps: float  # calm volatility, bps per sqrt(second)
    touch_sz: float  # median size at the touch
    level_sz: float  # median size of a deeper level
    order_sz: float  # typical resting order (sets the level order count n)
    trade_sz: float  # median fill size
    frame_rate: float  # trades frames per second when calm
    churn: float  # probability per block that the touch changes without a trade
    hysteresis: float  # ticks the fair price may leave the quotes before a requote
    open_interest: float
    day_ntl: float


_SPECS: Final[dict[str, _CoinSpec]] = {
    "BTC": _CoinSpec(0, 5, 101_250.0, 0.9, 1.6, 0.9, 0.35, 0.004, 2.0, 0.15, 3.5, 31_500.0, 4.2e9),
    "ETH": _CoinSpec(1, 4, 3_480.0, 1.1, 45.0, 25.0, 8.0, 0.12, 1.2, 0.08, 1.2, 620_000.0, 1.9e9),
    "SOL": _CoinSpec(2, 2, 182.4, 1.4, 700.0, 400.0, 120.0, 4.0, 0.9, 0.05, 0.6, 2.9e6, 5.5e8),
    "HYPE": _CoinSpec(3, 2, 38.412, 1.8, 900.0, 600.0, 150.0, 12.0, 0.8, 0.05, 0.5, 2.5e7, 3.0e8),
}

# Other allMids keys (spot "@107", a k-coin) as (start mid, decimals).
_EXTRA_MIDS: Final = {"@107": (38.37, 3), "HYPE": (38.45, 3), "kPEPE": (0.011234, 6)}


@dataclass(frozen=True)
class _Regime:
    """How a phase label shapes the market."""

    vol_mult: float
    rate_mult: float
    extra_orders: float  # mean extra taker orders per trades frame (Poisson)
    fill_p: float  # per-fill stop probability (fills per taker order ~ geometric)
    depth: tuple[float, float]  # depth multiplier range, drawn at phase entry
    gap_p: float  # probability of an empty tick between two book levels
    max_spread: int  # ticks; a wider spread forces a requote


_REGIMES: Final = {
    MEAN_REVERTING: _Regime(0.8, 1.0, 0.3, 0.55, (0.9, 1.1), 0.12, 2),
    TRENDING: _Regime(1.2, 1.3, 0.4, 0.5, (0.8, 1.0), 0.15, 2),
    CHAOTIC: _Regime(3.5, 1.8, 0.6, 0.45, (0.45, 0.65), 0.3, 6),
    LIQUIDATION_RISK: _Regime(3.0, 3.5, 1.0, 0.35, (0.1, 0.25), 0.55, 10),
}
_OU_KAPPA: Final = 0.12  # mean reversion speed per second (half-life ~6 s)
_CHAOS_FLIP_RATE: Final = 0.5  # flow sign flips per second


@dataclass(frozen=True)
class SimConfig:
    """What to simulate.

    Attributes:
        coins: coins to simulate (each needs a spec: BTC, ETH, SOL or HYPE).
        seconds: simulated exchange time, from ``start_ms``.
        seed: the only source of randomness.
        start_ms: exchange time of the first block (ms epoch; default 2026-01-01T00:00Z).
        book_interval_ms: l2Book push interval (one clock for all coins).
        scripts: phase scripts per coin; ``None`` (or a missing coin) uses `DEFAULT_SCRIPTS`.
    """

    coins: tuple[str, ...] = ("BTC", "ETH", "SOL")
    seconds: float = 600
    seed: int = 7
    start_ms: int = 1_767_225_600_000
    book_interval_ms: int = 1000
    scripts: dict[str, tuple[Phase, ...]] | None = None

    def __post_init__(self) -> None:
        if not self.coins or len(set(self.coins)) != len(self.coins):
            msg = f"coins must be non-empty and unique, got {self.coins!r}"
            raise ValueError(msg)
        unknown = [c for c in self.coins if c not in _SPECS]
        if unknown:
            msg = f"no market spec for {unknown}; known coins: {sorted(_SPECS)}"
            raise ValueError(msg)
        if not self.seconds > 0:
            msg = f"seconds must be > 0, got {self.seconds!r}"
            raise ValueError(msg)
        if self.book_interval_ms <= 0:
            msg = f"book_interval_ms must be > 0, got {self.book_interval_ms!r}"
            raise ValueError(msg)
        for coin in self.coins:
            if not self.script(coin):
                msg = f"empty script for {coin}"
                raise ValueError(msg)

    @property
    def end_ms(self) -> int:
        """Exchange time where the simulation stops (exclusive)."""
        return self.start_ms + round(self.seconds * 1000)

    def script(self, coin: str) -> tuple[Phase, ...]:
        """The phase script used for ``coin``."""
        if self.scripts is not None and coin in self.scripts:
            return self.scripts[coin]
        return DEFAULT_SCRIPTS[coin]


@dataclass(frozen=True)
class _Span:
    label: str
    start_ms: int
    end_ms: int
    direction: int


def _spans(config: SimConfig, coin: str) -> list[_Span]:
    """The coin's script laid out on exchange time, repeated or cut to fit the run."""
    script = config.script(coin)
    out: list[_Span] = []
    t = float(config.start_ms)
    end = config.end_ms
    i = 0
    while round(t) < end:
        ph = script[i % len(script)]
        stop = min(t + ph.duration_s * 1000, float(end))
        if round(stop) > round(t):
            out.append(_Span(ph.label, round(t), round(stop), ph.sign))
        t = stop
        i += 1
    return out


def truth(config: SimConfig) -> dict[str, Any]:
    """The scripted ground truth of a run.

    Args:
        config: the run.

    Returns:
        ``{"coins": {coin: [{"label", "start_ms", "end_ms", "direction"}, ...]}, "seed",
        "start_ms", "end_ms"}``; phases are half-open ``[start_ms, end_ms)`` in exchange time and
        tile the run; ``direction`` is +1/-1 for TRENDING and LIQUIDATION_RISK, else 0.
    """
    return {
        "coins": {
            coin: [
                {
                    "label": s.label,
                    "start_ms": s.start_ms,
                    "end_ms": s.end_ms,
                    "direction": s.direction,
                }
                for s in _spans(config, coin)
            ]
            for coin in config.coins
        },
        "seed": config.seed,
        "start_ms": config.start_ms,
        "end_ms": config.end_ms,
    }


def _fmt(units: int, decimals: int) -> str:
    """Exchange-style decimal string of ``units`` × 10**-decimals ("109741.0", "0.0009")."""
    sign = "-" if units < 0 else ""
    if decimals == 0:
        return f"{sign}{abs(units)}.0"
    whole, frac = divmod(abs(units), 10**decimals)
    digits = f"{frac:0{decimals}d}".rstrip("0") or "0"
    return f"{sign}{whole}.{digits}"


def _fmt_float(value: float, decimals: int) -> str:
    return _fmt(round(value * 10**decimals), decimals)


def _address(rng: random.Random) -> str:
    return f"0x{rng.getrandbits(160):040x}"


@dataclass
class _Level:
    """A book level below the touch: gap (ticks) from the level above, normalised size, n factor."""

    gap: int
    size: float
    nf: float


class _Candle:
    __slots__ = ("c", "dirty", "h", "l", "n", "o", "t", "v")

    def __init__(self, t: int, px: int) -> None:
        self.t = t
        self.o = self.h = self.l = self.c = px
        self.v = 0
        self.n = 0
        self.dirty = True


class _CoinSim:
    """State and per-block dynamics of one coin."""

    def __init__(self, coin: str, config: SimConfig, makers: list[str], takers: list[str]) -> None:
        self.coin = coin
        self.spec = spec = _SPECS[coin]
        self.rng = rng = random.Random(f"{config.seed}/{coin}")
        self.spans = _spans(config, coin)
        self.span_idx = -1
        self.span = self.spans[0]
        self.regime = _REGIMES[self.span.label]
        self.makers = makers
        self.takers = takers
        self.lot: int = 10**spec.sz_decimals
        self.tick = 10.0**-spec.px_decimals
        self.c = spec.start_px * math.exp(rng.gauss(0.0, 0.004)) / self.tick  # fair, in ticks
        self.anchor = self.c
        self.drift = 0.0  # log-price drift per second
        self.flow = 1  # chaotic flow sign
        self.burst = 0.0
        self.depth = 1.0
        self.bid = self.ask = 0
        self.bid_sz = self.ask_sz = 1
        self.bid_n = self.ask_n = 1
        self.last_bbo: tuple[int, int, int, int, int, int] | None = None
        self.deep: tuple[list[_Level], list[_Level]] = ([], [])
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
        self._requote()
        for side in (0, 1):
            self.deep[side][:] = [self._new_level(i) for i in range(1, BOOK_LEVELS)]

    # ----- phase and state helpers -------------------------------------------------------------

    def _enter(self, idx: int) -> None:
        rng = self.rng
        self.span_idx = idx
        self.span = span = self.spans[idx]
        self.regime = reg = _REGIMES[span.label]
        self.anchor = self.c
        self.depth = rng.uniform(*reg.depth)
        if span.label == TRENDING:
            self.drift = span.direction * rng.uniform(40.0, 70.0) / 60.0 * 1e-4
        elif span.label == LIQUIDATION_RISK:
            self.drift = span.direction * rng.uniform(3.5, 5.5) * 1e-4
            self.oi_rate = -rng.uniform(6e-4, 9e-4)
        else:
            self.drift = 0.0
        self.flow = rng.choice((-1, 1))
        if idx:
            for side in (0, 1):
                self.deep[side][:] = [self._new_level(i) for i in range(1, BOOK_LEVELS)]

    def _new_level(self, i: int) -> _Level:
        rng = self.rng
        gap = 1
        while rng.random() < self.regime.gap_p and gap < 6:
            gap += 1
        if rng.random() < 0.08:  # dust
            size = rng.randint(1, 400) / self.lot / max(self.depth, 1e-9)
        else:
            size = self.spec.level_sz * (1 + 0.07 * i) * math.exp(rng.gauss(0.0, 0.9))
        return _Level(gap, size, rng.uniform(0.5, 1.5))

    def _draw_spread(self) -> int:
        rng = self.rng
        label = self.span.label
        if label == LIQUIDATION_RISK:
            return rng.randint(3, 10)
        if label == CHAOTIC:
            k = 1
            while rng.random() < 0.5 and k < 6:
                k += 1
            return k
        return 1 if rng.random() < 0.88 else 2

    def _touch(self) -> tuple[int, int]:
        size = self.spec.touch_sz * self.depth * math.exp(self.rng.gauss(0.0, 0.8))
        lots = max(1, round(size * self.lot))
        return lots, self._orders(lots, self.rng.uniform(0.6, 1.4))

    def _orders(self, lots: int, nf: float) -> int:
        return max(1, min(99, round(lots / self.lot / self.spec.order_sz * nf) + 1))

    def _requote(self) -> None:
        k = self._draw_spread()
        self.bid = round(self.c - k / 2)
        self.ask = self.bid + k
        self.bid_sz, self.bid_n = self._touch()
        self.ask_sz, self.ask_n = self._touch()

    def _lots(self, level: _Level) -> int:
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

    def mid_units(self) -> int:
        """Mid in units of tick / 10."""
        return (self.bid + self.ask) * 5

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
            dx -= _OU_KAPPA * math.log(self.c / self.anchor) * dt
        elif label == CHAOTIC:
            if rng.random() < 1 - math.exp(-_CHAOS_FLIP_RATE * dt):
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
        h = spec.hysteresis
        if (
            changed
            or self.c < self.bid - h
            or self.c > self.ask + h
            or self.ask - self.bid > reg.max_spread
            or rng.random() < 0.02
        ):
            self._requote()
        elif rng.random() < spec.churn:
            if rng.random() < 0.5:
                self.bid_sz, self.bid_n = self._churn(self.bid_sz, self.bid_n)
            else:
                self.ask_sz, self.ask_n = self._churn(self.ask_sz, self.ask_n)

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

        bbo = (self.bid, self.bid_sz, self.bid_n, self.ask, self.ask_sz, self.ask_n)
        if bbo != self.last_bbo:
            self.last_bbo = bbo
            out.append(("bbo", self.bbo_frame(t)))
        return out

    def _churn(self, lots: int, n: int) -> tuple[int, int]:
        rng = self.rng
        new = max(1, round(lots * math.exp(rng.gauss(0.0, 0.3))))
        if new > lots:
            n += 1
        elif new < lots and n > 1:
            n -= 1
        return new, n

    def _p_buy(self) -> float:
        label = self.span.label
        if label == MEAN_REVERTING:
            sd = self.spec.vol_bps * self.regime.vol_mult * 1e-4 / math.sqrt(2 * _OU_KAPPA)
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
            "px": _fmt(px, self.spec.px_decimals),
            "sz": _fmt(lots, self.spec.sz_decimals),
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
        n_orders = 1 + _poisson(rng, reg.extra_orders)
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
            levels = self.side_levels(1 if buy else 0)
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
            refill = li > 0 or left <= 0
            if buy:
                self.ask_sz, self.ask_n = self._touch() if refill else (left, self.ask_n)
            else:
                self.bid_sz, self.bid_n = self._touch() if refill else (left, self.bid_n)
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
                px = (self.ask if buy else self.bid) + drift
                size = self.spec.trade_sz * math.exp(1.2 * rng.gauss(0.0, 1.0))
                lots = max(1, round(size * self.lot))
                self._roll_candle(t, px)
                trades.append(self._trade(t, buy, px, lots, hsh, taker))
        if self.candle is not None:
            self.candle.dirty = False  # history: only candles that change live are pushed
        return {"channel": "trades", "data": trades}

    # ----- frames ----------------------------------------------------------------------------

    def _level(self, px: int, lots: int, n: int) -> dict[str, Any]:
        return {
            "px": _fmt(px, self.spec.px_decimals),
            "sz": _fmt(lots, self.spec.sz_decimals),
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
                "o": _fmt(cd.o, pd),
                "c": _fmt(cd.c, pd),
                "h": _fmt(cd.h, pd),
                "l": _fmt(cd.l, pd),
                "v": _fmt(cd.v, self.spec.sz_decimals),
                "n": cd.n,
            },
        }

    def candle_due(self) -> dict[str, Any] | None:
        """The open candle if it changed since its last push."""
        cd = self.candle
        return self.candle_frame() if cd is not None and cd.dirty else None

    def _impact(self, side: int) -> float:
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

    def ctx_frame(self, t: int) -> dict[str, Any]:
        """An ``activeAssetCtx`` frame (oracle/mark every ~3 s, premium/funding every ~5 s)."""
        rng = self.rng
        imp_bid, imp_ask = self._impact(0), self._impact(1)
        if t >= self.next_oracle_ms:
            self.next_oracle_ms = t + rng.randint(2_800, 3_200)
            self.oracle = self.oracle_ema * (1 + self.basis)
            last = self.last_trade or (self.bid + self.ask) / 2
            book_px = sorted((self.bid, self.ask, last))[1]
            mid = (self.bid + self.ask) / 2
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
                    "funding": _fmt_float(self.funding, 10),
                    "openInterest": _fmt_float(self.oi, spec.sz_decimals),
                    "prevDayPx": _fmt(self.prev_day, pd),
                    "dayNtlVlm": _fmt(self.day_ntl, 10),
                    "premium": _fmt_float(self.premium, 10),
                    "oraclePx": _fmt_float(self.oracle * tick, od),
                    "markPx": _fmt_float(self.mark * tick, od),
                    "midPx": _fmt(self.mid_units(), pd + 1),
                    "impactPxs": [_fmt_float(imp_bid * tick, od), _fmt_float(imp_ask * tick, od)],
                    "dayBaseVlm": _fmt(self.day_base, spec.sz_decimals),
                },
            },
        }


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's Poisson sampler (small ``lam``)."""
    limit = math.exp(-lam)
    k = 0
    p = rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


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
        self.coins = [_CoinSim(c, config, makers, takers) for c in config.coins]
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
            mids[cs.coin] = _fmt(cs.mid_units(), cs.spec.px_decimals + 1)
        for k, (v, d) in list(self.extra.items()):
            v *= math.exp(rng.gauss(0.0, 3e-4))
            self.extra[k] = (v, d)
            mids[k] = _fmt_float(v, d)
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
                    self.emit(t, "l2Book", cs.coin, cs.book_frame(t))
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


def iso_ns(ns: int) -> str:
    """Archive receive-time string (``2025-09-04T19:46:56.673877954``, UTC, no suffix)."""
    sec, frac = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}"


def _write_lines(config: SimConfig, fh: io.BufferedIOBase) -> Counter[str]:
    counts: Counter[str] = Counter()
    buf: list[bytes] = []
    sec_cache: tuple[int, str] = (-1, "")
    for recv, frame in generate(config):
        sec, frac = divmod(recv, 1_000_000_000)
        if sec != sec_cache[0]:
            stamp = datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
            sec_cache = (sec, stamp)
        counts[str(frame["channel"])] += 1
        buf.append(orjson.dumps({"time": f"{sec_cache[1]}.{frac:09d}", "ver_num": 1, "raw": frame}))
        if len(buf) >= 2048:
            fh.write(b"\n".join(buf) + b"\n")
            buf.clear()
    if buf:
        fh.write(b"\n".join(buf) + b"\n")
    return counts


def _write(config: SimConfig, out_path: Path) -> Counter[str]:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("wb") as raw:
        if out_path.name.endswith(".gz"):
            # No file name and mtime 0 in the header: same config → same bytes.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
                return _write_lines(config, gz)
        return _write_lines(config, raw)


def write_capture(config: SimConfig, out_path: Path) -> int:
    """Write a simulated capture as archive-envelope NDJSON.

    Args:
        config: what to simulate.
        out_path: destination; gzip-compressed (byte-reproducible) if the name ends in ``.gz``.

    Returns:
        The number of frames (lines) written.
    """
    return sum(_write(config, out_path).values())


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: write a capture (and optionally its truth), print a summary.

    Args:
        argv: arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The process exit status (0; argument errors exit 2 via argparse).
    """
    ap = argparse.ArgumentParser(
        prog="python -m tools.simulate",
        description="Write a seeded, simulated Hyperliquid capture with scripted regimes.",
    )
    ap.add_argument("--out", type=Path, required=True, help="output .ndjson or .ndjson.gz")
    ap.add_argument("--seconds", type=float, default=600.0, help="simulated seconds")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--coins", default="BTC,ETH,SOL", help="comma-separated coins")
    ap.add_argument("--book-interval-ms", type=int, default=1000, help="l2Book push interval")
    ap.add_argument("--start-ms", type=int, default=SimConfig.start_ms, help="exchange start time")
    ap.add_argument("--truth", type=Path, default=None, help="also write the ground truth JSON")
    args = ap.parse_args(argv)
    coins = tuple(c.strip() for c in args.coins.split(",") if c.strip())
    try:
        config = SimConfig(
            coins=coins,
            seconds=args.seconds,
            seed=args.seed,
            start_ms=args.start_ms,
            book_interval_ms=args.book_interval_ms,
        )
    except ValueError as ex:
        ap.error(str(ex))
    counts = _write(config, args.out)
    if args.truth is not None:
        args.truth.parent.mkdir(parents=True, exist_ok=True)
        args.truth.write_bytes(orjson.dumps(truth(config), option=orjson.OPT_INDENT_2) + b"\n")
    by_channel = " ".join(f"{ch}={n}" for ch, n in sorted(counts.items()))
    size = args.out.stat().st_size
    print(f"wrote {sum(counts.values())} frames ({size} bytes) to {args.out}: {by_channel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
