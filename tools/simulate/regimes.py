"""Regimes: the four labels, the phase scripts and how each label shapes the market.

Each coin follows a script of phases (`Phase`: one regime label and a duration each;
`DEFAULT_SCRIPTS` has one per known coin). A label sets the price process (mean reversion, drift,
chaotic flow), the trade rate and flow, the depth and spread of the book (`Regime`).

Imports nothing else of the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

TRENDING: Final = "TRENDING"
MEAN_REVERTING: Final = "MEAN_REVERTING"
LIQUIDATION_RISK: Final = "LIQUIDATION_RISK"
CHAOTIC: Final = "CHAOTIC"
LABELS: Final = (TRENDING, MEAN_REVERTING, LIQUIDATION_RISK, CHAOTIC)


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
class Regime:
    """How a phase label shapes the market."""

    vol_mult: float
    rate_mult: float
    extra_orders: float  # mean extra taker orders per trades frame (Poisson)
    fill_p: float  # per-fill stop probability (fills per taker order ~ geometric)
    depth: tuple[float, float]  # depth multiplier range, drawn at phase entry
    gap_p: float  # probability of an empty tick between two book levels
    max_spread: int  # ticks; a wider spread forces a requote


REGIMES: Final = {
    MEAN_REVERTING: Regime(0.8, 1.0, 0.3, 0.55, (0.9, 1.1), 0.12, 2),
    TRENDING: Regime(1.2, 1.3, 0.4, 0.5, (0.8, 1.0), 0.15, 2),
    CHAOTIC: Regime(3.5, 1.8, 0.6, 0.45, (0.45, 0.65), 0.3, 6),
    LIQUIDATION_RISK: Regime(3.0, 3.5, 1.0, 0.35, (0.1, 0.25), 0.55, 10),
}
OU_KAPPA: Final = 0.12  # mean reversion speed per second (half-life ~6 s)
CHAOS_FLIP_RATE: Final = 0.5  # flow sign flips per second
