"""The API's Pydantic v2 models, in one place: the signal envelope contract and the service
documents.

The envelope and its blocks are `api.signal_envelope`; lists, history, health, state, errors and
the stream's ``dropped`` data are `api.documents`. Both are re-exported here, the path the app,
the MCP server and the tests import from.

Run as ``python -m api.schemas > api/signal_envelope.schema.json`` to regenerate the committed
JSON Schema of the envelope (a test fails when it drifts from `SignalEnvelope`).
"""

from __future__ import annotations

import orjson

from api.documents import (
    CoinState,
    ConnectionState,
    DroppedEvent,
    ErrorBody,
    Health,
    SignalHistory,
    SignalList,
    SourceState,
    State,
)
from api.signal_envelope import (
    BarInfo,
    Count,
    Degraded,
    Edge,
    EdgeCosts,
    Features,
    Freshness,
    Ms,
    NonNegative,
    Percent,
    Positive,
    Producer,
    Regime,
    SignalEnvelope,
    Signals,
    SignedUnit,
    StreamFreshness,
    Unit,
    VolForecast,
    Warmup,
    envelope_json_schema,
)

__all__ = [
    "BarInfo",
    "CoinState",
    "ConnectionState",
    "Count",
    "Degraded",
    "DroppedEvent",
    "Edge",
    "EdgeCosts",
    "ErrorBody",
    "Features",
    "Freshness",
    "Health",
    "Ms",
    "NonNegative",
    "Percent",
    "Positive",
    "Producer",
    "Regime",
    "SignalEnvelope",
    "SignalHistory",
    "SignalList",
    "Signals",
    "SignedUnit",
    "SourceState",
    "State",
    "StreamFreshness",
    "Unit",
    "VolForecast",
    "Warmup",
    "envelope_json_schema",
]


if __name__ == "__main__":
    import sys

    sys.stdout.write(
        orjson.dumps(
            envelope_json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        ).decode()
        + "\n"
    )
