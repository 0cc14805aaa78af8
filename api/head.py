"""``HEAD`` wherever ``GET`` is served (RFC 9110 §9.3.2): uptime probes ask ``HEAD /health``.

FastAPI's routes answer only the methods they declare, so ``HEAD /health`` was a 405 and a probe
that uses ``HEAD`` (several do by default) reported the service down. `HeadAsGet` runs a ``HEAD``
request as the ``GET`` it stands for and sends the status and headers (``Content-Length``
included) without the body. Streams are not run for a ``HEAD``: ``/v1/stream`` (an endless
response) and the MCP mount (``POST`` only) keep their own answer.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

NOT_AS_GET: Final = ("/v1/stream", "/mcp")
"""Paths (and their subpaths) whose ``HEAD`` is not run as a ``GET``."""


def head_as_get(path: str) -> bool:
    """Whether a ``HEAD`` of ``path`` is answered as its ``GET`` (not a stream)."""
    return not any(path == p or path.startswith(p + "/") for p in NOT_AS_GET)


class HeadAsGet:
    """ASGI middleware: ``HEAD`` runs as ``GET``, and the body is dropped."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        if not head_as_get(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_head(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # a body part: dropped
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_head)


__all__ = ["NOT_AS_GET", "HeadAsGet", "head_as_get"]
