"""Adaptive conformal levels of the volatility interval (Gibbs & Candès 2021), per coin.

The forecast's 10th–90th percentile interval (`operators.forecast`) starts at the fitted
split-conformal quantiles. Each published interval is kept as pending until its horizon has
passed; then its miss is known and each tail's level moves (ACI, one step per scored forecast)::

    α_lo ← clip(α_lo + γ·(0.1 − 1{RV < lower}))     α_hi ← clip(α_hi + γ·(0.1 − 1{RV > upper}))

``RV`` = Σ r² of the coin's bar returns after the forecast's bar up to and including the first
bar that closes at or after ``close + horizon_ms``; ``lower``/``upper`` = the published
``(vol_p10_bps/1e4)²`` and ``(vol_p90_bps/1e4)²`` (exactly what the evaluation scores). A tail
that misses more than 10 % of the time lowers its level (a wider bound), one that misses less
raises it. Levels are clipped to `ACI_CLIP`; the next forecast at that horizon uses them through
`operators.forecast.shifted`. Levels are kept per horizon (``horizon_ms``), at most
`MAX_HORIZONS`; pending forecasts at most `MAX_PENDING` (when full, a new forecast is not
queued: long horizons on short bars are then scored on a subsample). The queue is kept in order
of due time, so the forecasts due are at its front. Causal: a forecast is scored only on
returns that closed after it, and a level changes only when a horizon has passed.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from operators.forecast import ACI_CLIP, ACI_TARGET, Forecast, VolModel

MAX_PENDING: Final = 512
"""Forecasts awaiting their horizon, per coin (the tick data's 60-bar horizon needs 60)."""
MAX_HORIZONS: Final = 8
"""Horizons with their own levels, per coin (a new one past this starts at the fitted levels
and is not adapted)."""

Pending = tuple[int, int, float, float, float]
"""``(due_ms, horizon_ms, Σr² when made, lower variance, upper variance)``."""


def step(alpha: float, gamma: float, miss: bool) -> float:
    """One ACI update of a tail level: ``clip(α + γ·(0.1 − miss))``."""
    a = alpha + gamma * (ACI_TARGET - (1.0 if miss else 0.0))
    lo, hi = ACI_CLIP
    return lo if a < lo else hi if a > hi else a


@dataclass(slots=True)
class IntervalTracker:
    """One coin's pending intervals and adapted tail levels ``(α_lo, α_hi)`` per horizon."""

    gamma: float = 0.0
    pending: deque[Pending] = field(default_factory=deque)
    levels: dict[int, tuple[float, float]] = field(default_factory=dict)
    cum: float = 0.0
    """Σ r² of every return folded so far (a pending forecast keeps its value when made)."""

    @classmethod
    def for_model(cls, model: VolModel | None) -> IntervalTracker:
        """A tracker with the model's step (0, no adaptation, without a model)."""
        return cls(0.0 if model is None else model.aci_gamma)

    def __deepcopy__(self, memo: dict[int, object]) -> IntervalTracker:
        """Entries and levels are immutable tuples: copying the containers is a deep copy."""
        return IntervalTracker(self.gamma, deque(self.pending), dict(self.levels), self.cum)

    def mark(self) -> tuple[object, ...]:
        """A copy of the state, for `restore`."""
        return (tuple(self.pending), dict(self.levels), self.cum)

    def restore(self, m: tuple[object, ...]) -> None:
        """Back to the state `mark` copied."""
        pending, levels, self.cum = m  # type: ignore[assignment]
        self.pending = deque(pending)  # type: ignore[call-overload]
        self.levels = dict(levels)  # type: ignore[call-overload]

    def level(self, horizon_ms: int) -> tuple[float, float] | None:
        """The adapted ``(α_lo, α_hi)`` at ``horizon_ms`` (None: none yet, the fitted bounds)."""
        return self.levels.get(horizon_ms)

    def fold(self, r: float | None, close_ms: int) -> None:
        """Fold the return of the bar closing at ``close_ms``; score each forecast whose horizon
        has now passed and move its horizon's levels."""
        if r is not None:
            self.cum += r * r
        pending = self.pending
        while pending and pending[0][0] <= close_ms:
            _, horizon_ms, made, lower, upper = pending.popleft()
            rv = self.cum - made
            a_lo, a_hi = self.levels.get(horizon_ms, (ACI_TARGET, ACI_TARGET))
            if horizon_ms in self.levels or len(self.levels) < MAX_HORIZONS:
                self.levels[horizon_ms] = (
                    step(a_lo, self.gamma, rv < lower),
                    step(a_hi, self.gamma, rv > upper),
                )

    def record(self, close_ms: int, fc: Forecast | None) -> None:
        """Queue the interval published at ``close_ms`` (none without a forecast; not queued
        when `MAX_PENDING` are waiting, or with γ = 0: nothing would adapt)."""
        if fc is None or self.gamma <= 0.0 or len(self.pending) >= MAX_PENDING:
            return
        lower = (fc.vol_p10_bps / 1e4) ** 2
        upper = (fc.vol_p90_bps / 1e4) ** 2
        entry = (close_ms + fc.horizon_ms, fc.horizon_ms, self.cum, lower, upper)
        pending = self.pending
        if pending and pending[-1][0] > entry[0]:  # a shorter horizon than before: keep by due
            pending.insert(bisect.bisect_right(pending, entry[0], key=lambda e: e[0]), entry)
        else:
            pending.append(entry)
