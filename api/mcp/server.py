"""The MCP server: `build_server` makes the tools and resources over a `SignalSource`.

`SignalServer` puts this layer's rules on top of the SDK's `FastMCP`: strict arguments and
one-line errors, resource errors as JSON-RPC errors with proper codes, one listed resource per
coin with a signal, and every tool call counted for metrics. Each tool runs its blocking read off
the event loop and returns structured content checked by the exact model of its answer, plus the
same JSON as text.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.fastmcp.tools import Tool
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import McpError
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    CallToolResult,
    ErrorData,
    Resource,
    TextContent,
)
from pydantic import AnyUrl, BaseModel, ValidationError

from api.mcp.schemas import (
    COIN_RULE,
    EXPLAIN_REGIME_DOC,
    GET_HISTORY_DOC,
    GET_SIGNAL_DOC,
    HISTORY_LIMIT_DEFAULT,
    INSTRUCTIONS,
    LIST_SIGNALS_DOC,
    MAX_ANSWER_BYTES,
    AnyObject,
    CoinArg,
    FeaturesArg,
    LimitArg,
    SinceArg,
    UntilArg,
    ViewArg,
    argument_error,
    list_schema,
    shallow_schema,
    signal_schema,
    strict_tool,
)
from api.mcp.sources import SignalQueryError, SignalSource
from api.metrics import mcp_tool_call
from api.schemas import SignalEnvelope, SignalHistory, SignalList
from api.signals import explain_signal
from api.views import (
    CompactSignal,
    View,
    ViewError,
    apply_view,
    check_features,
    resolve_view,
)
from flows.settings import code_version
from operators.explain import RegimeExplanation
from operators.regime import RegimeConfig

log = logging.getLogger("api.mcp")  # one logger for the package (not "__main__" under -m)

SERVER_NAME = "hyperliquid-signal-layer"
URI_PREFIX = "signal://hyperliquid/"
URI_TEMPLATE = URI_PREFIX + "{coin}"
RESOURCE_NOT_FOUND = -32002
"""MCP's JSON-RPC error code for an unknown resource (the specification's, not in the SDK 1.x)."""

T = TypeVar("T")


_FULL_MODELS: dict[str, type[BaseModel]] = {
    "signal": SignalEnvelope,
    "list": SignalList,
    "history": SignalHistory,
}


def view_result(
    kind: str,
    fetch: Callable[..., Any],
    args: tuple[Any, ...],
    view: View | None,
    features: list[str] | None,
    default: View,
) -> CallToolResult:
    """``fetch(*args)`` (an envelope, list or history document) in the view asked for, checked
    by its model, as structured content and as JSON text."""
    names = None if features is None else check_features(features)
    chosen = resolve_view(view, names, default)
    doc = fetch(*args)
    if chosen != "full":
        doc = apply_view(doc, chosen, names)
    text = orjson.dumps(doc)
    if len(text) > MAX_ANSWER_BYTES:  # measured before the models' pass, the costly part
        # a history range (until_ms) keeps the oldest `limit`, else the newest
        oldest = kind == "history" and args[3] is not None
        raise ToolError(too_big(kind, len(text), doc, chosen, keep_oldest=oldest))
    if chosen == "full":
        _FULL_MODELS[kind].model_validate(doc)
    else:
        for env in doc["data"] if kind != "signal" else [doc]:
            CompactSignal.model_validate(env)
    return CallToolResult(
        content=[TextContent(type="text", text=text.decode())],
        structuredContent=doc,
    )


def too_big(
    kind: str, size: int, doc: dict[str, Any], view: View, *, keep_oldest: bool = False
) -> str:
    """Why an answer of ``size`` bytes is refused, and what would fit (`MAX_ANSWER_BYTES`): for a
    history, the largest ``limit`` whose answer fits (its newest envelopes, or with
    ``keep_oldest`` its oldest, as that limit would select)."""
    data: list[Any] = doc.get("data", [doc])
    head = f"the answer would be {size / 1024:,.0f} KB ({len(data)} {view} envelopes), over the "
    head += f"{MAX_ANSWER_BYTES // 1024} KB one answer may carry; "
    if kind == "history":
        sizes = [len(orjson.dumps(e)) + 1 for e in data]  # each with its comma
        room = MAX_ANSWER_BYTES - (size - sum(sizes)) - 32  # the rest, and digits of count
        fits = 0
        for n in sizes if keep_oldest else reversed(sizes):
            room -= n
            if room < 0:
                break
            fits += 1
        smaller = "view compact or fewer features" if view == "full" else "fewer features"
        return head + (
            f"ask limit <= {max(1, fits)} (or {smaller}) and page a time range with until_ms "
            "and next_since_ms"
        )
    smaller = "view compact or fewer features" if view == "full" else "fewer features"
    return head + f"ask {smaller}, or read coins one by one with get_signal"


def _result(model: type[BaseModel], fetch: Callable[..., Any], *args: Any) -> CallToolResult:
    """``fetch(*args)`` validated by ``model``, as structured content and as JSON text."""
    value = model.model_validate(fetch(*args))
    return CallToolResult(
        content=[TextContent(type="text", text=value.model_dump_json())],
        structuredContent=value.model_dump(mode="json"),
    )


async def _call(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call off the event loop; a query error becomes a tool error."""
    try:
        return await anyio.to_thread.run_sync(fn, *args)
    except (SignalQueryError, ViewError) as ex:
        raise ToolError(str(ex)) from ex


def _rpc_code(status: int) -> int:
    """The JSON-RPC error code for a REST status."""
    if status == 404:
        return RESOURCE_NOT_FOUND
    if status in (400, 422):
        return INVALID_PARAMS
    return INTERNAL_ERROR


class SignalServer(FastMCP[Any]):
    """`FastMCP` with this layer's rules on top.

    - ``serverInfo.version`` is this package's version (`flows.settings.code_version`);
    - tool arguments are validated strictly and an invalid one is one clean line naming it;
    - ``signal://hyperliquid/{coin}`` is read here: an error is a JSON-RPC error with a proper
      code (-32002 unknown coin, -32602 not a coin name, -32603 no signal yet) and the
      REST API's message once;
    - the resource listing names one ``signal://hyperliquid/{coin}`` per coin.

    Args:
        source: where signals come from.
        strict_tools: the tools (`strict_tool`).
        **kwargs: passed to `FastMCP`.
    """

    def __init__(self, source: SignalSource, strict_tools: list[Tool], **kwargs: Any) -> None:
        super().__init__(tools=strict_tools, **kwargs)
        self.source = source
        self._strict = {t.name: t for t in strict_tools}
        # The SDK reports its own version unless told (no FastMCP parameter in 1.x).
        self._mcp_server.version = code_version()

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        """Check the arguments strictly, then call the tool; errors are one clean line.

        Every call is counted in ``hlsl_mcp_tool_calls_total{tool,outcome}``."""
        with mcp_tool_call(name if name in self._strict else "other"):
            return await self._call_tool(name, arguments)

    async def _call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        tool = self._strict.get(name)
        if tool is None:
            msg = f"unknown tool {name!r} (tools: {', '.join(self._strict)})"
            raise ToolError(msg)
        meta = tool.fn_metadata
        try:
            meta.arg_model.model_validate(meta.pre_parse_json(arguments))
        except ValidationError as ex:
            fields = list(meta.arg_model.model_fields)
            raise ToolError(argument_error(name, ex, fields)) from None
        if isinstance(arguments.get("features"), list):
            try:
                check_features(arguments["features"])
            except ViewError as ex:
                msg = f"{name}: invalid arguments: features: {ex}"
                raise ToolError(msg) from None
        try:
            return await super().call_tool(name, arguments)
        except ToolError as ex:
            if isinstance(ex.__cause__, ToolError):  # ours, wrapped "Error executing tool ..."
                raise ex.__cause__ from None
            raise

    async def read_resource(self, uri: AnyUrl | str) -> list[ReadResourceContents]:
        """Read a resource; an error is a JSON-RPC error (code and one clean message)."""
        text = str(uri)
        if text.startswith(URI_PREFIX):
            coin = urllib.parse.unquote(text[len(URI_PREFIX) :])
            await self.source.wait_ready()
            try:
                env = await anyio.to_thread.run_sync(self.source.signal, coin)
            except SignalQueryError as ex:
                data = {"status": ex.status, "coins": ex.coins}
                error = ErrorData(code=_rpc_code(ex.status), message=str(ex), data=data)
                raise McpError(error) from None
            body = SignalEnvelope.model_validate(env).model_dump_json()
            return [ReadResourceContents(content=body, mime_type="application/json")]
        try:
            return list(await super().read_resource(uri))
        except Exception as ex:
            known = ", ".join([URI_TEMPLATE, *SCHEMA_RESOURCES])
            msg = f"unknown resource {text[:200]!r} (resources: {known})"
            raise McpError(ErrorData(code=RESOURCE_NOT_FOUND, message=msg)) from ex

    async def list_resources(self) -> list[Resource]:
        """Static resources plus the latest signal of every coin that has one."""
        listed = await super().list_resources()
        try:
            await self.source.wait_ready()
            coins = await anyio.to_thread.run_sync(self.source.coins_with_signal)
        except SignalQueryError as ex:
            log.warning("cannot list coins: %s", ex)
            coins = []
        return [
            *listed,
            *(
                Resource(
                    uri=f"{URI_PREFIX}{c}",
                    name=f"signal-{c}",
                    title=f"Latest {c} signal",
                    description=f"The latest {c} signal envelope (freshness judged on read).",
                    mimeType="application/json",
                )
                for c in coins
            ),
        ]


SCHEMA_RESOURCES: dict[str, tuple[str, type[BaseModel]]] = {
    "schema://hyperliquid/signal-envelope": ("SignalEnvelope", SignalEnvelope),
    "schema://hyperliquid/compact-signal": ("CompactSignal", CompactSignal),
    "schema://hyperliquid/regime-explanation": ("RegimeExplanation", RegimeExplanation),
}
"""JSON Schemas served as resources (the tools' output schemas are shallow)."""


def build_server(
    source: SignalSource,
    *,
    regime_config: RegimeConfig | None = None,
    transport_security: TransportSecuritySettings | None = None,
) -> SignalServer:
    """The MCP server (tools and resources) over a source of signals.

    Args:
        source: `StoreSource` (in-process) or `ApiSource` (a running REST API).
        regime_config: thresholds shown by ``explain_regime`` (default: the flow's).
        transport_security: DNS-rebinding protection of the HTTP transport (default: the SDK's
            for a localhost server: Host must be 127.0.0.1, localhost or [::1], any port; see
            `transport_security_for`).

    Returns:
        The server; run it with `run_stdio` or serve it with `McpHttpApp`.
    """
    cfg = regime_config if regime_config is not None else RegimeConfig()

    # Each tool returns a CallToolResult built off the event loop: structured content checked by
    # the exact model of its view, plus the same JSON (compact) as text. The output schemas are
    # shallow (top-level fields and types); the full ones are resources.
    async def get_signal(
        coin: CoinArg, view: ViewArg = None, features: FeaturesArg = None
    ) -> CallToolResult:
        await source.wait_ready()
        return await _call(view_result, "signal", source.signal, (coin,), view, features, "full")

    async def list_signals(view: ViewArg = None, features: FeaturesArg = None) -> CallToolResult:
        await source.wait_ready()
        return await _call(view_result, "list", source.signals, (), view, features, "compact")

    async def get_history(
        coin: CoinArg,
        since_ms: SinceArg = None,
        limit: LimitArg = HISTORY_LIMIT_DEFAULT,
        view: ViewArg = None,
        features: FeaturesArg = None,
        until_ms: UntilArg = None,
    ) -> CallToolResult:
        await source.wait_ready()
        args = (coin, since_ms, limit, until_ms)
        return await _call(view_result, "history", source.history, args, view, features, "compact")

    def explain(coin: str) -> RegimeExplanation:
        return explain_signal(source.signal(coin), cfg)  # as GET /v1/signal/{coin}/explain

    async def explain_regime(coin: CoinArg) -> CallToolResult:
        await source.wait_ready()
        return await _call(_result, RegimeExplanation, explain, coin)

    one_signal = signal_schema()
    tools = [
        strict_tool(get_signal, "Latest signal of a coin", GET_SIGNAL_DOC, one_signal, AnyObject),
        strict_tool(
            list_signals,
            "Latest signal of every coin",
            LIST_SIGNALS_DOC,
            list_schema("SignalList", with_coin=False),
            AnyObject,
        ),
        strict_tool(
            get_history,
            "Stored signals of a coin",
            GET_HISTORY_DOC,
            list_schema("SignalHistory", with_coin=True),
            AnyObject,
        ),
        strict_tool(
            explain_regime,
            "Why a coin's regime is what it is",
            EXPLAIN_REGIME_DOC,
            shallow_schema(
                RegimeExplanation,
                "RegimeExplanation",
                "full JSON Schema: resource schema://hyperliquid/regime-explanation",
            ),
            RegimeExplanation,
        ),
    ]

    root = logging.getLogger()
    root_level, root_handlers = root.level, list(root.handlers)
    server = SignalServer(
        source,
        tools,
        name=SERVER_NAME,
        instructions=INSTRUCTIONS,
        # HTTP: the app is mounted (its own path is "/"); read-only tools need no session, so
        # each POST is answered with plain JSON (no SSE stream, nothing kept per client).
        streamable_http_path="/",
        stateless_http=True,
        json_response=True,
        transport_security=transport_security,
    )
    # FastMCP() calls logging.basicConfig (SDK 1.x): building a server must not configure logging.
    root.setLevel(root_level)
    root.handlers[:] = root_handlers

    async def read_signal(coin: str) -> str:  # listed as the template; read by SignalServer
        env = await _call(source.signal, coin)
        return SignalEnvelope.model_validate(env).model_dump_json()

    server.resource(
        URI_TEMPLATE,
        name="signal",
        title="Latest signal of a coin",
        description="The latest signal envelope of a coin as JSON (schema: SignalEnvelope), "
        "freshness judged on read. " + COIN_RULE,
        mime_type="application/json",
    )(read_signal)

    for uri, (name, model) in SCHEMA_RESOURCES.items():
        server.resource(
            uri,
            name=f"schema-{name}",
            title=f"JSON Schema of {name}",
            description=f"The JSON Schema of {name} (the tools' output schemas are shallow).",
            mime_type="application/schema+json",
        )(_schema_text(model))
    return server


def _schema_text(model: type[BaseModel]) -> Callable[[], str]:
    def schema_text() -> str:
        return json.dumps(model.model_json_schema(), separators=(",", ":"))

    return schema_text
