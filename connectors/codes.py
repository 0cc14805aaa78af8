"""The envelope's stable machine codes, defined once in the lowest layer that needs them.

``edge.explain`` carries `Explain` codes; the signal store (`connectors.stored`) splices
``STALE_INPUT`` into stored envelopes at request time, so the codes live here, below the
operators that emit them (`operators.edge`) and the API that documents them. Codes are never
renamed or removed, only added to.
"""

from __future__ import annotations

from enum import StrEnum


class Explain(StrEnum):
    """Stable machine codes explaining an edge (never renamed, only added to)."""

    REGIME_TRENDING = "REGIME_TRENDING"
    REGIME_MEAN_REVERTING = "REGIME_MEAN_REVERTING"
    REGIME_LIQUIDATION_RISK = "REGIME_LIQUIDATION_RISK"
    REGIME_CHAOTIC = "REGIME_CHAOTIC"
    REGIME_UNKNOWN = "REGIME_UNKNOWN"
    WARMING_UP = "WARMING_UP"
    NO_PRICE_INPUT = "NO_PRICE_INPUT"
    REGIME_NEW = "REGIME_NEW"
    REGIME_STABLE = "REGIME_STABLE"
    REGIME_CHANGE_PENDING = "REGIME_CHANGE_PENDING"
    MOMENTUM_UP = "MOMENTUM_UP"
    MOMENTUM_DOWN = "MOMENTUM_DOWN"
    FLOW_CONFIRMS = "FLOW_CONFIRMS"
    FLOW_CONTRADICTS = "FLOW_CONTRADICTS"
    PRICE_ABOVE_MEAN = "PRICE_ABOVE_MEAN"
    PRICE_BELOW_MEAN = "PRICE_BELOW_MEAN"
    PRICE_AT_MEAN = "PRICE_AT_MEAN"
    LIQUIDITY_GOOD = "LIQUIDITY_GOOD"
    LIQUIDITY_POOR = "LIQUIDITY_POOR"
    LIQUIDITY_UNKNOWN = "LIQUIDITY_UNKNOWN"
    VOL_EXPANSION = "VOL_EXPANSION"
    ONE_SIDED_FLOW = "ONE_SIDED_FLOW"
    SPREAD_BLOWOUT = "SPREAD_BLOWOUT"
    DEPTH_COLLAPSE = "DEPTH_COLLAPSE"
    OI_DROP = "OI_DROP"
    DEGRADED_INPUTS = "DEGRADED_INPUTS"
    STALE_INPUT = "STALE_INPUT"
    SCORE_BELOW_THRESHOLD = "SCORE_BELOW_THRESHOLD"
    ORDER_FLOW_CONFIRMS = "ORDER_FLOW_CONFIRMS"
    ORDER_FLOW_CONTRADICTS = "ORDER_FLOW_CONTRADICTS"
    UNCALIBRATED = "UNCALIBRATED"
    NET_EDGE_POSITIVE = "NET_EDGE_POSITIVE"
    COSTS_EXCEED_EDGE = "COSTS_EXCEED_EDGE"
    COST_UNKNOWN = "COST_UNKNOWN"
    BOOK_TOO_THIN = "BOOK_TOO_THIN"
    REGIME_NOT_TRADABLE = "REGIME_NOT_TRADABLE"
    STEP_ERROR = "STEP_ERROR"
    """A step failed for this bar: the regime is held, no call is made (see ``degraded``)."""
    NO_DEMONSTRATED_SKILL = "NO_DEMONSTRATED_SKILL"
    """The calibration shows no out-of-sample skill at this horizon: no probability is given,
    ``score`` is 0.5 and the call is not actionable."""
    NO_RULE_FIRED = "NO_RULE_FIRED"
    """No regime rule held this bar (the label, if any, is held by confirmation only)."""
    NO_NEW_DATA = "NO_NEW_DATA"
    """The bar brought no new data: the regime is held and no call is made."""
    VOL_FORECAST_HIGH = "VOL_FORECAST_HIGH"
    """The next hour's forecast volatility is at or above the coin's norm (the risk flag)."""
