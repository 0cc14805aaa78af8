"""What the features of one bar are: their names (`FEATURE_NAMES`), documented ranges
(`FEATURE_BOUNDS`, `check_features`) and the `FeatureVector` that carries them downstream.

Every feature group of `operators.features` fills the same ``values``/``missing`` pair of dicts: a
value it could not compute stays None and gets a reason code in ``missing`` (never a silent 0).
`ratio_to_median` is the one rule the ``*_ratio`` features share.
"""

from __future__ import annotations

from typing import Final, TypeAlias

import msgspec

from connectors.events import BookSnapshot, Stream
from connectors.fields import FEATURE_NAMES
from connectors.freshness import StreamClock
from operators.failures import (
    FINITE,
    NON_NEGATIVE,
    POSITIVE,
    SIGNED_UNIT,
    UNIT,
    Bound,
    Degraded,
    compile_checker,
)
from operators.rolling import RollingMedian

FEATURE_BOUNDS: Final[dict[str, Bound]] = dict.fromkeys(FEATURE_NAMES, FINITE) | {
    # prices
    "mid_px": POSITIVE,
    "weighted_mid_px": POSITIVE,
    "microprice_px": POSITIVE,
    "vwap_px": POSITIVE,
    "mark_px": POSITIVE,
    "oracle_px": POSITIVE,
    # book
    "spread_bps": NON_NEGATIVE,
    "tob_imbalance": SIGNED_UNIT,
    "depth_band_bps": POSITIVE,
    "depth_bid_usd": NON_NEGATIVE,
    "depth_ask_usd": NON_NEGATIVE,
    "depth_imbalance": SIGNED_UNIT,
    "book_levels": NON_NEGATIVE,
    # flow
    "trade_count": NON_NEGATIVE,
    "buy_volume": NON_NEGATIVE,
    "sell_volume": NON_NEGATIVE,
    "trade_flow_imbalance": SIGNED_UNIT,
    "trade_flow_imbalance_bar": SIGNED_UNIT,
    "trade_rate_per_s": NON_NEGATIVE,
    "trade_rate_burst": NON_NEGATIVE,
    "vpin": UNIT,
    # volatility and trend
    "realized_vol_bps": NON_NEGATIVE,
    "realized_vol_ann": NON_NEGATIVE,
    "vol_expansion_ratio": NON_NEGATIVE,
    "parkinson_vol_ann": NON_NEGATIVE,
    "garman_klass_vol_ann": NON_NEGATIVE,
    "efficiency_ratio": UNIT,
    "variance_ratio": NON_NEGATIVE,
    # relative to the coin's own history
    "spread_ratio": NON_NEGATIVE,
    "depth_ratio": NON_NEGATIVE,
    "volume_ratio": NON_NEGATIVE,
    # perp context
    "open_interest": NON_NEGATIVE,
    "oi_change_pct": Bound(-100.0),
}
"""Each feature's documented range (every value is also finite); the API schema carries them."""

STEP_ERROR_REASON: Final = "step_error"
"""``features_missing`` reason of every feature of a bar whose computation failed."""

check_features: Final = compile_checker(
    "check_features",
    [(f"features.{n}", f"x[{n!r}]", FEATURE_BOUNDS[n]) for n in FEATURE_NAMES],
    {},
)
"""``check_features(values)``: raise `RangeError` for the first value that is not finite or is
outside its range (`FEATURE_BOUNDS`); None values are not checked."""

Values: TypeAlias = dict[str, float | None]
"""A bar's feature values by name (every name of `FEATURE_NAMES`; None: not computed)."""
Missing: TypeAlias = dict[str, str]
"""Why a feature is None, by name (reason codes, DESIGN.md §4)."""


def ratio_to_median(
    history: RollingMedian, x: float, name: str, min_obs: int, values: Values, missing: Missing
) -> None:
    """``name`` = x over the rolling median of its own history (then x joins the history):
    ``warming_up`` while the history holds fewer than ``min_obs`` values, ``zero_baseline`` when
    its median is not positive."""
    history.update(x)
    if len(history) < min_obs:
        missing[name] = "warming_up"
        return
    base = history.get() or 0.0
    if base > 0:
        values[name] = x / base
    else:
        missing[name] = "zero_baseline"


class FeatureVector(msgspec.Struct):
    """Features of one coin as of one bar close (exchange time)."""

    coin: str
    open_ms: int
    close_ms: int
    values: dict[str, float | None]
    missing: dict[str, str]
    observations: int
    window_span_ms: int | None
    price_source: str | None
    streams: dict[Stream, StreamClock]
    """A copy of the coin's stream clocks as of this bar (safe to keep)."""
    candle_interval_ms: int | None
    event_count: int
    warmup_obs: int
    gaps: int = 0
    """Input gaps (live reconnects) inside this bar."""
    book: BookSnapshot | None = None
    """The latest usable book (both sides present) as of this bar, for book walks (edge costs)."""
    window_obs: int = 0
    """Price observations in the window (``window_span_ms`` spans ``window_obs − 1`` intervals)."""
    degraded: Degraded | None = None
    """Set when a step failed for this bar (the values are then all None, or held downstream)."""
    checked: bool = False
    """The features step has checked ``values`` (finite, in range): the envelope need not again."""
    bar_return: float | None = None
    """Log return of this bar's price observation over the previous one (None: no new price, or
    the first one after an input gap): what the volatility state (`operators.forecast`) folds."""
    trend_returns: int = 0
    """Returns in the trend window behind ``momentum_bps`` (``min(R, observations − 1)``)."""
    px_decimals: int = 0
    """The most decimals seen in the coin's wire prices so far: published prices are rounded to
    one more (`operators.envelope.publish_round`)."""

    @property
    def warming_up(self) -> bool:
        """Fewer price observations than the warm-up needs."""
        return self.observations < self.warmup_obs

    def get(self, name: str) -> float | None:
        """A feature value (None when missing)."""
        return self.values.get(name)
