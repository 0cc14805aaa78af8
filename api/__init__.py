"""API: serving the store to agents and people.

What lives here: the composition root (`runtime`: pipeline, flow thread, app and server for
``python -m api.server``, ``python -m api.mcp`` and the ``bytewax.run`` entry), the FastAPI app
(`app`, with what its routes read in `signals` and `health`), OpenAPI (`openapi`), the response
models (`schemas`, `signal_envelope`, `documents`), views (`views`), Server-Sent Events
(`stream`, `sse`), metrics (`metrics`, `http_metrics`, `mcp_metrics`), access control
(`security`), MCP (`mcp/`) and the dashboard (`dashboard`). `server` is the command line.

What it may import: `connectors`, `operators` and `flows`; nothing from `tools`
(`tests/test_layers.py` checks it).
"""
