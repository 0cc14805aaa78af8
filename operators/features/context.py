"""Perp context features from ``activeAssetCtx``: funding, premium, mark against oracle, open
interest and its change over the trend window, mark and oracle prices (DESIGN.md §4, Perp
context)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from operators.bars import Bar
from operators.features.vector import Missing, Values

_PERP_NAMES: Final = (
    "funding_rate_1h",
    "premium_bps",
    "mark_oracle_bps",
    "open_interest",
    "oi_change_pct",
    "mark_px",
    "oracle_px",
)


@dataclass(slots=True)
class ContextFeatures:
    """The latest asset context and the open interest since the trend window's start; `update`
    once per bar."""

    ctx: tuple[float, float, float, float, float | None] | None = None  # fund, oi, mark, orc, prem
    oi: deque[tuple[int, float]] = field(default_factory=deque)

    def update(self, bar: Bar, start: int, values: Values, missing: Missing) -> None:
        """Take in the bar's contexts and set the context features (``start``: the trend
        window's start, the open-interest reference)."""
        ctxs = bar.ctxs
        if ctxs:
            ctx = ctxs[-1]
            self.ctx = (ctx.funding_1h, ctx.open_interest, ctx.mark_px, ctx.oracle_px, ctx.premium)
            for c in ctxs:
                self.oi.append((c.time_ms, c.open_interest))
        if self.ctx is None:
            for n in _PERP_NAMES:
                missing[n] = "no_asset_ctx"
            return
        funding, oi, mark, oracle, premium = self.ctx
        values["funding_rate_1h"] = funding
        values["open_interest"] = oi
        values["mark_px"] = mark
        values["oracle_px"] = oracle
        if premium is not None:
            values["premium_bps"] = 1e4 * premium
        else:
            missing["premium_bps"] = "no_premium"
        if oracle > 0 and mark > 0:
            values["mark_oracle_bps"] = 1e4 * (mark - oracle) / oracle
        else:
            missing["mark_oracle_bps"] = "no_mark_or_oracle"
        # The reference is the context at (or just before) the start of the trend window.
        while len(self.oi) > 2 and self.oi[1][0] <= start:
            self.oi.popleft()
        first_oi = self.oi[0][1] if self.oi else None
        if first_oi and len(self.oi) >= 2:
            values["oi_change_pct"] = 100.0 * (oi - first_oi) / first_oi
        elif first_oi == 0.0:
            missing["oi_change_pct"] = "zero_baseline"
        else:
            missing["oi_change_pct"] = "warming_up"

    def mark(self) -> tuple[Any, ...]:
        """Everything `update` may change (`restore` puts it back)."""
        return self.ctx, tuple(self.oi)

    def restore(self, m: tuple[Any, ...]) -> None:
        """Back to the state `mark` saw."""
        self.ctx, oi = m
        self.oi = deque(oi)
