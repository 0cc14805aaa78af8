"""MCP over the SDK's streamable HTTP transport, to mount in the FastAPI app.

`mcp_http_app` builds `McpHttpApp` (an ASGI app whose session manager runs in the serving app's
lifespan) over the store the REST API reads; `transport_security_for` says which ``Host`` and
``Origin`` values it accepts (DNS-rebinding protection); `replay_wait_s` how long a tool waits for
an in-process replay.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.responses import JSONResponse
from starlette.routing import Router
from starlette.types import Receive, Scope, Send

from api.mcp.server import build_server
from api.mcp.sources import SignalSource, StoreSource
from connectors.store import SignalStore
from flows.settings import Settings

log = logging.getLogger("api.mcp")  # one logger for the package (not "__main__" under -m)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]", "*")


def transport_security_for(settings: Settings) -> TransportSecuritySettings:
    """DNS-rebinding protection for MCP over HTTP from the settings.

    Allowed Host values: 127.0.0.1, localhost and [::1] (as the SDK allows by default), the
    bound ``--host`` unless it is a wildcard (0.0.0.0, ::), and ``--mcp-allowed-hosts``. An entry
    without a port allows any port. Origins (sent by browsers only): ``http://`` and
    ``https://`` of those hosts, and ``--mcp-allowed-origins``.
    """
    bound = settings.host.strip()
    hosts = list(LOCAL_HOSTS)
    if bound not in WILDCARD_HOSTS:
        hosts.append(f"[{bound}]" if ":" in bound and not bound.startswith("[") else bound)
    extra = list(settings.mcp_allowed_hosts)
    allowed_hosts: list[str] = []
    for host in [*hosts, *extra]:
        allowed_hosts += [host] if _has_port(host) else [host, f"{host}:*"]
    allowed_origins: list[str] = []
    for host in hosts:
        for scheme in ("http", "https"):
            allowed_origins += [f"{scheme}://{host}", f"{scheme}://{host}:*"]
    for origin in settings.mcp_allowed_origins:
        origin = origin.rstrip("/")
        netloc = origin.split("://", 1)[-1]
        allowed_origins += [origin] if _has_port(netloc) else [origin, f"{origin}:*"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(dict.fromkeys(allowed_hosts)),
        allowed_origins=list(dict.fromkeys(allowed_origins)),
    )


def _has_port(host: str) -> bool:
    if host.startswith("["):
        return "]:" in host
    return ":" in host


def replay_wait_s(settings: Settings) -> float:
    """How long MCP tools wait for an in-process replay: ``HLSL_MCP_WAIT_FOR_REPLAY_S`` for a
    full-speed replay; a paced one (``--speed`` > 0) plays like live data and is answered as it
    goes."""
    if not settings.replay or settings.speed > 0:
        return 0.0
    return settings.mcp_wait_for_replay_s


class McpHttpApp:
    """The streamable HTTP transport as an ASGI app (any path it is mounted at).

    Stateless JSON mode: each POST is answered with ``application/json`` and nothing is kept per
    client (the tools are read-only; no server-to-client notifications over HTTP). The SDK's
    session manager still needs a running task group: enter `lifespan` around the serving app's
    life. Starlette does not run a mounted app's lifespan, so when mounted::

        mcp = mcp_http_app(store)

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with mcp.lifespan():
                yield  # (start the flow around this as before)

        app = create_app(store, lifespan)
        app.mount("/mcp", mcp)  # endpoint http://host:port/mcp/ (POST /mcp redirects, 307)

    Served on its own (``uvicorn.run(mcp_http_app(store))``) it runs its lifespan itself. Each
    `lifespan` builds a fresh server (a session manager runs only once), so it can be entered
    again after it ended, but not twice at once. Requests outside it get 503.

    Args:
        source: where signals come from.
        transport_security: see `build_server`.
    """

    def __init__(
        self, source: SignalSource, transport_security: TransportSecuritySettings | None = None
    ) -> None:
        self.source = source
        self.transport_security = transport_security
        self._manager: StreamableHTTPSessionManager | None = None
        self._router = Router(lifespan=lambda _app: self.lifespan())

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Run the session manager (sessions end when this exits).

        Raises:
            RuntimeError: it is already running.
        """
        if self._manager is not None:
            msg = "the MCP HTTP transport is already running"
            raise RuntimeError(msg)
        server = build_server(self.source, transport_security=self.transport_security)
        server.streamable_http_app()  # creates the session manager
        manager = server.session_manager
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "lifespan":
            await self._router.lifespan(scope, receive, send)
            return
        manager = self._manager
        if manager is None:
            detail = "the MCP transport is not running (McpHttpApp.lifespan was not entered)"
            await JSONResponse({"detail": detail}, status_code=503)(scope, receive, send)
            return
        await manager.handle_request(scope, receive, send)


def mcp_http_app(
    store: SignalStore,
    *,
    transport_security: TransportSecuritySettings | None = None,
    settings: Settings | None = None,
) -> McpHttpApp:
    """The MCP streamable HTTP transport over ``store``, to mount in the FastAPI app.

    Mount it (``app.mount("/mcp", mcp)``) and enter ``mcp.lifespan()`` in the app's lifespan:
    see `McpHttpApp`.

    Args:
        store: the store the flow writes (the same one the REST API reads).
        transport_security: DNS-rebinding protection; by default `transport_security_for`
            ``settings``, and without settings the SDK's localhost default (Host 127.0.0.1,
            localhost and [::1], any port).
        settings: the server's settings: allowed hosts and origins (``--mcp-allowed-hosts``,
            ``--mcp-allowed-origins``, the bound ``--host``) and the replay wait
            (``--mcp-wait-for-replay-s``).

    Returns:
        The ASGI app.
    """
    wait_s = 0.0
    if settings is not None:
        wait_s = replay_wait_s(settings)
        if transport_security is None:
            transport_security = transport_security_for(settings)
            if settings.host.strip() in WILDCARD_HOSTS and not settings.mcp_allowed_hosts:
                log.warning(
                    "MCP over HTTP accepts only Host %s (and --host %s is a wildcard): set "
                    "--mcp-allowed-hosts / HLSL_MCP_ALLOWED_HOSTS to the names clients use",
                    ", ".join(LOCAL_HOSTS),
                    settings.host,
                )
    return McpHttpApp(StoreSource(store, wait_s), transport_security)
