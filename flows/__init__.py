"""Flows: wiring and settings.

What lives here: the one `Settings` object (`settings`; ``HLSL_*`` variables mirror the flags),
start-up checks that fail in one line (`startup`), the dataflow's wiring (`wiring.build_flow`),
a run built from settings and run to its end (`pipeline`), how a replay went (`outcome`) and the
history outputs (`history`). `signal` is the module ``python -m bytewax.run flows.signal`` loads:
it asks the composition root (`api.runtime`) for its flow and nothing imports it.

What it may import: `connectors` and `operators`; nothing from `api` or `tools`, except the
entry module `signal`, the one listed exception in `tests/test_layers.py`.
"""
