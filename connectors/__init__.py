"""Connectors, the lowest layer: frames in, envelopes out.

What lives here: the typed events and their parsing from raw Hyperliquid frames under the edge's
validation rules (`events`, `parse`, `validate`, `errors`), the sources (`files` and `captures`
for replays, `live` for the WebSocket, `rest` for ``/info``), crash-safe recording
(`recording`), the store the flow's sink writes and the API reads (`store`, `stored`, `sinks`)
with what it needs to re-judge freshness at request time (`freshness`, `codes`), the envelope's
names and column types (`fields`) and the Parquet history sink (`parquet`).

What it may import: the standard library and third-party packages only; nothing from
`operators`, `flows`, `api` or `tools` (`tests/test_layers.py` checks it).
"""
