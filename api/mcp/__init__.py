"""The signal layer as an MCP server (official ``mcp`` SDK, 1.x ``FastMCP``): stdio and HTTP.

Tools (all read-only and idempotent, each with an output schema equal to the REST API's model and
returning structured content):

- ``get_signal(coin)`` → `api.schemas.SignalEnvelope` (as ``GET /v1/signal/{coin}``);
- ``list_signals()`` → `api.schemas.SignalList` (as ``GET /v1/signals``);
- ``get_history(coin, since_ms, limit)`` → `api.schemas.SignalHistory` (as
  ``GET /v1/signal/{coin}/history``; ``limit`` is capped at 1000 here, an agent's context is small);
- ``explain_regime(coin)`` → `operators.explain.RegimeExplanation` (as
  ``GET /v1/signal/{coin}/explain``, the same function: `api.signals.explain_signal`): the rule
  behind the regime, its inputs, thresholds and margin, in plain words.

Resources: ``signal://hyperliquid/{coin}`` (template; the latest envelope as JSON), and one listed
resource per coin that has a signal.

Semantics are the REST API's (`api.app`): a coin name matches exactly, else a unique
case-insensitive match; an unknown coin is a tool error naming the coins served; freshness is
judged again at call time on the source's clock (as ``GET /v1/signal/{coin}`` does), so a
signal whose inputs went stale is served with ``actionable: false`` and ``STALE_INPUT``.

Run it:

- ``python -m api.mcp`` (stdio) runs the flow in-process with the server's settings (``HLSL_*``
  variables or the same flags as ``python -m api.server``: ``--replay CAPTURE``, else live
  ``--coins``), or ``python -m api.mcp --api-url http://127.0.0.1:8000`` reads a running server,
  or ``python -m api.mcp --serve-only --store redis://…`` serves the shared store (its mirror on
  a thread of its own, `api.runtime.MirrorThread`).
  A finished replay keeps being served; the server ends when the client closes stdin (or on
  SIGINT/SIGTERM), stopping the flow cleanly. Nothing but MCP messages is written to stdout
  (logs go to stderr; see `protect_stdout`).
- HTTP: `mcp_http_app` returns an ASGI app (the SDK's streamable HTTP transport) to mount in the
  FastAPI app; its session manager must run in the app's lifespan (see `McpHttpApp`).

What lives where:

- `api.mcp.sources`: where signals come from (`SignalSource`, `StoreSource`, `ApiSource`,
  `SignalQueryError`, `client_token`);
- `api.mcp.schemas`: what an agent reads (instructions, tool descriptions, argument types, the
  shallow output schemas, strict tools, `argument_error`);
- `api.mcp.server`: the tools and resources (`build_server`, `SignalServer`);
- `api.mcp.http`: the streamable HTTP transport (`mcp_http_app`, `McpHttpApp`,
  `transport_security_for`, `replay_wait_s`);
- `api.mcp.stdio`: the stdio transport (`protect_stdout`, `run_stdio`);
- `api.mcp.__main__`: ``python -m api.mcp`` and ``hlsl-mcp`` (`main`, `cli`). Not imported here:
  importing it from the package would make ``python -m api.mcp`` run it twice.

Imports: the package sits in the API layer. It may import the API modules beside it (`api.app`,
`api.schemas`, `api.views`, `api.metrics`), `flows.settings`, connectors and operators (the
regime explanation is `operators.explain`), and the ``mcp`` SDK; never `tools`. Inside it,
`schemas` and `sources` import no sibling, `server` imports those two, `http` imports `server`
and `sources`, `stdio` none. Only `__main__` reaches `api.server` and `flows.signal` (lazily, to
run the flow in-process), since `api.server` imports this package to mount MCP over HTTP.
"""

from __future__ import annotations

from api.mcp.http import (
    LOCAL_HOSTS,
    WILDCARD_HOSTS,
    McpHttpApp,
    mcp_http_app,
    replay_wait_s,
    transport_security_for,
)
from api.mcp.schemas import (
    HISTORY_LIMIT_DEFAULT,
    HISTORY_LIMIT_MAX,
    INSTRUCTIONS,
    argument_error,
)
from api.mcp.server import (
    RESOURCE_NOT_FOUND,
    SCHEMA_RESOURCES,
    SERVER_NAME,
    URI_PREFIX,
    URI_TEMPLATE,
    SignalServer,
    build_server,
)
from api.mcp.sources import (
    ApiSource,
    SignalQueryError,
    SignalSource,
    StoreSource,
    client_token,
)
from api.mcp.stdio import protect_stdout, run_stdio
from operators.explain import RegimeExplanation, explain_envelope

__all__ = [
    "HISTORY_LIMIT_DEFAULT",
    "HISTORY_LIMIT_MAX",
    "INSTRUCTIONS",
    "LOCAL_HOSTS",
    "RESOURCE_NOT_FOUND",
    "SCHEMA_RESOURCES",
    "SERVER_NAME",
    "URI_PREFIX",
    "URI_TEMPLATE",
    "WILDCARD_HOSTS",
    "ApiSource",
    "McpHttpApp",
    "RegimeExplanation",
    "SignalQueryError",
    "SignalServer",
    "SignalSource",
    "StoreSource",
    "argument_error",
    "build_server",
    "client_token",
    "explain_envelope",
    "mcp_http_app",
    "protect_stdout",
    "replay_wait_s",
    "run_stdio",
    "transport_security_for",
]
