"""What to simulate: the coins' market parameters, the run (`SimConfig`) and its ground truth.

`SimConfig` names the coins (each needs a `CoinSpec`: BTC, ETH, SOL or HYPE), the length, the
seed (the only source of randomness), the start time, the book cadence and the phase scripts.
`spans` lays a coin's script out on exchange time; `truth` is that layout for every coin, the
answer key the evaluation scores regime labels against.

Imports `tools.simulate.regimes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from tools.simulate.regimes import DEFAULT_SCRIPTS, Phase


@dataclass(frozen=True)
class CoinSpec:
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


SPECS: Final[dict[str, CoinSpec]] = {
    "BTC": CoinSpec(0, 5, 101_250.0, 0.9, 1.6, 0.9, 0.35, 0.004, 2.0, 0.15, 3.5, 31_500.0, 4.2e9),
    "ETH": CoinSpec(1, 4, 3_480.0, 1.1, 45.0, 25.0, 8.0, 0.12, 1.2, 0.08, 1.2, 620_000.0, 1.9e9),
    "SOL": CoinSpec(2, 2, 182.4, 1.4, 700.0, 400.0, 120.0, 4.0, 0.9, 0.05, 0.6, 2.9e6, 5.5e8),
    "HYPE": CoinSpec(3, 2, 38.412, 1.8, 900.0, 600.0, 150.0, 12.0, 0.8, 0.05, 0.5, 2.5e7, 3.0e8),
}


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
        unknown = [c for c in self.coins if c not in SPECS]
        if unknown:
            msg = f"no market spec for {unknown}; known coins: {sorted(SPECS)}"
            raise ValueError(msg)
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            msg = f"seconds must be a finite number > 0, got {self.seconds!r}"
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
class Span:
    """One phase on exchange time: ``[start_ms, end_ms)`` with its effective direction."""

    label: str
    start_ms: int
    end_ms: int
    direction: int


def spans(config: SimConfig, coin: str) -> list[Span]:
    """The coin's script laid out on exchange time, repeated or cut to fit the run."""
    script = config.script(coin)
    out: list[Span] = []
    t = float(config.start_ms)
    end = config.end_ms
    i = 0
    while round(t) < end:
        ph = script[i % len(script)]
        stop = min(t + ph.duration_s * 1000, float(end))
        if round(stop) > round(t):
            out.append(Span(ph.label, round(t), round(stop), ph.sign))
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
                for s in spans(config, coin)
            ]
            for coin in config.coins
        },
        "seed": config.seed,
        "start_ms": config.start_ms,
        "end_ms": config.end_ms,
    }
