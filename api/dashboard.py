"""The dashboard: one self-contained HTML page at ``GET /`` (include `dashboard_router`).

The page (``api/static/dashboard.html``) is plain HTML, inline CSS and vanilla JS: no build step
and no external fetches, so it works offline. It shows one card per coin (regime with its colour
and confidence, direction, edge score and actionable flag, explain codes, freshness per stream with
ages, warm-up progress) and a chart of recent mid prices shaded by regime. It loads the current
state from ``GET /v1/signals`` (charts seeded from ``GET /v1/signal/{coin}/history``) and then
follows the SSE stream ``GET /v1/stream``; on ``event: dropped`` it reloads from ``/v1/signals``.

URL options: ``?coins=BTC,ETH`` filters the coins; ``?token=SECRET`` sends
``Authorization: Bearer SECRET`` with every request for an API that needs a token
(``HLSL_API_TOKEN``). ``EventSource`` cannot send headers, so with a token, or when
``/v1/stream`` answers with an HTTP error, the page polls ``/v1/signals`` every 2 s instead.

The page is served with a Content-Security-Policy that only allows same-origin connections, so a
browser blocks any attempt to reach the network beyond this API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

STATIC_DIR: Final = Path(__file__).with_name("static")
PAGE: Final = STATIC_DIR / "dashboard.html"

CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'none'",
        "script-src 'unsafe-inline'",
        "style-src 'unsafe-inline'",
        "connect-src 'self'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def dashboard_router() -> APIRouter:
    """A router serving the dashboard page at ``GET /`` (read once, here: fails early if absent)."""
    page = PAGE.read_text(encoding="utf-8")
    router = APIRouter(tags=["dashboard"])

    @router.api_route(
        "/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False
    )
    def dashboard() -> HTMLResponse:
        """The live dashboard (HTML)."""
        return HTMLResponse(page, headers=HEADERS)

    return router


__all__ = ["CONTENT_SECURITY_POLICY", "PAGE", "dashboard_router"]
