"""The envelope's field and feature names with their types, as plain data, defined once.

This is the lowest layer that needs them: the Parquet sink (`connectors.parquet`) makes its
columns from them, and the operators take the feature names from here (`FEATURE_NAMES` is
defined only here; `operators.features` re-exports it). `ENVELOPE_FIELDS` mirrors
`operators.envelope.build_envelope` key for key, in its order. Tests replay the sample and check
every key of every envelope against these, and these against the committed JSON Schema, so a name
or a type cannot drift silently.

A leaf is one of the type names below; a nested dict is a block. Flattened, a leaf is the column
named by its path joined with `SEP` (``regime.label`` → ``regime_label``,
``freshness.streams.l2Book.status`` → ``freshness_streams_l2Book_status``). Every column is
nullable: a null value, a block that is null as a whole (`NULLABLE_BLOCKS`) or a key a sparse map
leaves out (`SPARSE_MAPS`) is a null cell, so fields can be added later (additive changes only).
"""

from __future__ import annotations

from typing import Final, TypeAlias

from connectors.events import STREAMS

STRING: Final = "string"
INT: Final = "int64"
FLOAT: Final = "float64"
BOOL: Final = "bool"
STRINGS: Final = "list<string>"
"""A list of strings (explain codes, regime inputs and stresses)."""
TYPES: Final = (STRING, INT, FLOAT, BOOL, STRINGS)

SEP: Final = "_"
"""Joins the keys of a nested field into its column name."""

FieldTree: TypeAlias = "dict[str, str | FieldTree]"

FEATURE_NAMES: Final[tuple[str, ...]] = (
    # book
    "mid_px",
    "spread_bps",
    "weighted_mid_px",
    "microprice_px",
    "microprice_offset_bps",
    "tob_imbalance",
    "depth_band_bps",
    "depth_bid_usd",
    "depth_ask_usd",
    "depth_imbalance",
    "book_levels",
    # flow
    "ofi",
    "ofi_norm",
    "ofi_zscore",
    "trade_count",
    "buy_volume",
    "sell_volume",
    "vwap_px",
    "trade_flow_imbalance",
    "trade_flow_imbalance_bar",
    "signed_notional_usd",
    "trade_rate_per_s",
    "trade_rate_burst",
    "vpin",
    # volatility and trend
    "realized_vol_bps",
    "realized_vol_ann",
    "vol_expansion_ratio",
    "parkinson_vol_ann",
    "garman_klass_vol_ann",
    "momentum_bps",
    "momentum_z",
    "efficiency_ratio",
    "variance_ratio",
    "price_zscore",
    # relative to the coin's own history
    "spread_ratio",
    "depth_ratio",
    "volume_ratio",
    # perp context
    "funding_rate_1h",
    "premium_bps",
    "mark_oracle_bps",
    "open_interest",
    "oi_change_pct",
    "mark_px",
    "oracle_px",
)
"""Every feature, in the envelope's order (counts such as ``trade_count`` are published as
floats, like every feature)."""

STREAM_NAMES: Final[tuple[str, ...]] = tuple(s.value for s in STREAMS)
"""The keys of ``freshness.streams``: every stream, named as the exchange names the channel."""

STREAM_FIELDS: Final[FieldTree] = {
    "status": STRING,
    "last_exchange_ms": INT,
    "last_recv_ms": INT,
    "age_ms": INT,
    "expected_interval_ms": INT,
    "reason": STRING,
}
"""One stream's freshness block."""

ENVELOPE_FIELDS: Final[FieldTree] = {
    "schema_version": STRING,
    "timestamp_ms": INT,
    "coin": STRING,
    "direction": STRING,
    "regime": {
        "label": STRING,
        "confidence": FLOAT,
        "since_ms": INT,
        "previous": STRING,
        "candidate": STRING,
        "candidate_count": INT,
        "dwell_bars": INT,
        "rule": STRING,
        "margin": FLOAT,
        "stresses": STRINGS,
        "inputs_used": STRINGS,
        "inputs_missing": STRINGS,
        "n_inputs": INT,
        "n_inputs_max": INT,
        "risk_ratio": FLOAT,
        "stale": BOOL,
        "flag_evidence": STRING,
    },
    "signals": {
        "momentum": FLOAT,
        "liquidity": FLOAT,
        "risk": FLOAT,
    },
    "forecast": {
        "horizon_ms": INT,
        "vol_bps": FLOAT,
        "vol_p10_bps": FLOAT,
        "vol_p90_bps": FLOAT,
        "model": STRING,
    },
    "edge": {
        "score": FLOAT,
        "actionable": BOOL,
        "explain": STRINGS,
        "direction": STRING,
        "horizon_ms": INT,
        "raw_score": FLOAT,
        "p_right": FLOAT,
        "calibration": STRING,
        "expected_move_bps": FLOAT,
        "cost_bps": FLOAT,
        "net_edge_bps": FLOAT,
        "size_usd": FLOAT,
        "costs": {
            "fee_bps": FLOAT,
            "half_spread_bps": FLOAT,
            "slippage_bps": FLOAT,
        },
    },
    "features": dict.fromkeys(FEATURE_NAMES, FLOAT),
    "features_missing": dict.fromkeys(FEATURE_NAMES, STRING),
    "freshness": {
        "as_of_ms": INT,
        "status": STRING,
        "streams": {name: dict(STREAM_FIELDS) for name in STREAM_NAMES},
    },
    "warmup": {
        "warming_up": BOOL,
        "observations": INT,
        "required": INT,
        "coverage": FLOAT,
    },
    "bar": {
        "open_ms": INT,
        "close_ms": INT,
        "events": INT,
        "gaps": INT,
        "price_source": STRING,
        "window_span_ms": INT,
    },
    "producer": {
        "code_version": STRING,
        "bar_ms": INT,
        "lateness_ms": INT,
    },
    "degraded": {
        "step": STRING,
        "reason": STRING,
    },
}
"""Every field of the envelope with its type, in `build_envelope`'s order."""

NULLABLE_BLOCKS: Final = frozenset({"forecast", "degraded"})
"""Blocks that are null as a whole (no model yet; nothing failed); their columns are then null."""

SPARSE_MAPS: Final = frozenset({"features_missing"})
"""Blocks that hold only the keys that apply (a reason for each null feature)."""


def columns(tree: FieldTree = ENVELOPE_FIELDS, prefix: str = "") -> dict[str, str]:
    """Column name → type name of every leaf of ``tree``, in declaration order."""
    out: dict[str, str] = {}
    for key, sub in tree.items():
        name = prefix + key
        for col, kind in (
            columns(sub, name + SEP).items() if isinstance(sub, dict) else [(name, sub)]
        ):
            if col in out:
                msg = f"two envelope fields flatten to the column {col!r}"
                raise ValueError(msg)
            out[col] = kind
    return out


COLUMNS: Final[dict[str, str]] = columns()
"""Every column of the flattened envelope → its type name."""
