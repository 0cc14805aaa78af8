"""The dashboard: one self-contained HTML page at ``GET /`` (include `dashboard_router`).

The page (``api/static/dashboard.html``) is plain HTML, inline CSS and vanilla JS: no build step
and no external fetches, so it works offline. Its header shows the service's health as
``/v1/state`` reports it (ok or not and why, the flow's state and mode, the last error, every live
connection with its reconnects and last error, stale coins) and how the page gets its data
(stream, polling, reconnecting); a finished replay says so instead of looking live. One card per
coin shows the regime with its colour and confidence, direction, edge score and actionable flag,
what a trader reads next (``p_right``, expected move, costs and net edge, spread, depth within
the band, funding, the volatility forecast), explain codes (hover for their meaning; a legend of
every code is at the bottom), freshness per stream with ages, warm-up progress, a chart of recent
mid prices shaded by regime, and a drill-down of every feature (name, value, what it is, why it
is null). It loads the current state from ``GET /v1/signals`` (charts seeded from ``GET
/v1/signal/{coin}/history``) and then follows the SSE stream ``GET /v1/stream``; on ``event:
dropped`` it reloads from ``/v1/signals``.

URL options: ``?coins=BTC,ETH`` filters the coins (resolved like the API: exact, else unique
case-insensitive; a coin the service does not serve is named on the page, and the others are
streamed); ``?token=SECRET`` sends ``Authorization: Bearer SECRET`` with every request for an API
that needs a token (``HLSL_API_TOKEN``). ``EventSource`` cannot send headers, so with a token, or
when ``/v1/stream`` answers with an HTTP error, the page polls ``/v1/signals`` every 2 s instead.

The explain codes' meanings (`EXPLAIN_DOCS`, one per `operators.edge.Explain` value) and the
features' descriptions (`api.schemas.Features`) are put into the page when the router is built,
so the legend and the drill-down never disagree with the code.

The page is served with a Content-Security-Policy that only allows same-origin connections, so a
browser blocks any attempt to reach the network beyond this API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal

import orjson
from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.schemas import Features
from connectors.codes import Explain

STATIC_DIR: Final = Path(__file__).with_name("static")
PAGE: Final = STATIC_DIR / "dashboard.html"
DOCS_PLACEHOLDER: Final = "/*HLSL_DOCS*/{}"
"""Where the page's ``<script type="application/json">`` gets the legend and feature docs."""

Tone = Literal["good", "info", "warn", "bad"]

EXPLAIN_DOCS: Final[dict[str, tuple[Tone, str]]] = {
    "REGIME_TRENDING": ("info", "Regime TRENDING: moves tend to continue (a tradable regime)."),
    "REGIME_MEAN_REVERTING": (
        "info",
        "Regime MEAN REVERTING: moves tend to fade back to the mean (a tradable regime).",
    ),
    "REGIME_LIQUIDATION_RISK": (
        "bad",
        "Regime LIQUIDATION RISK: cascade stress (spread, depth, one-sided flow, OI drop, high "
        "volatility forecast); no call.",
    ),
    "REGIME_CHAOTIC": ("warn", "Regime CHAOTIC: volatile without a usable structure; no call."),
    "REGIME_UNKNOWN": ("warn", "No regime yet: warming up, or the inputs do not decide one."),
    "WARMING_UP": ("warn", "Too few price observations yet: the signal is not trusted."),
    "NO_PRICE_INPUT": ("bad", "No price input for this coin: nothing to judge."),
    "REGIME_NEW": ("warn", "The regime has just changed: not confirmed by time yet."),
    "REGIME_STABLE": ("good", "The regime has held for a while."),
    "REGIME_CHANGE_PENDING": (
        "warn",
        "Another regime is a candidate, waiting for confirmation (hysteresis).",
    ),
    "MOMENTUM_UP": ("info", "Momentum over the trend window is up."),
    "MOMENTUM_DOWN": ("info", "Momentum over the trend window is down."),
    "FLOW_CONFIRMS": ("good", "Aggressor trade flow agrees with the call."),
    "FLOW_CONTRADICTS": ("warn", "Aggressor trade flow goes against the call."),
    "PRICE_ABOVE_MEAN": ("info", "Price is above its window mean (mean reversion: short)."),
    "PRICE_BELOW_MEAN": ("info", "Price is below its window mean (mean reversion: long)."),
    "PRICE_AT_MEAN": ("info", "Price is at its window mean: nothing to revert."),
    "LIQUIDITY_GOOD": (
        "good",
        "Liquidity is at least 0.7 of usual for this coin (spread and depth; volume without them).",
    ),
    "LIQUIDITY_POOR": (
        "bad",
        "Liquidity is under 0.3 of usual for this coin (spread or depth; volume without them).",
    ),
    "LIQUIDITY_UNKNOWN": ("warn", "Liquidity cannot be judged yet (no usual level learnt)."),
    "VOL_EXPANSION": ("warn", "Short-window volatility is well above its usual level."),
    "ONE_SIDED_FLOW": ("bad", "Stress: trade flow is heavily one-sided."),
    "SPREAD_BLOWOUT": ("bad", "Stress: the spread is far wider than usual."),
    "DEPTH_COLLAPSE": ("bad", "Stress: book depth is far below usual."),
    "OI_DROP": ("bad", "Stress: open interest is falling fast (liquidations)."),
    "DEGRADED_INPUTS": ("warn", "No quotes have been seen for this coin (lower confidence)."),
    "STALE_INPUT": ("bad", "An input stream is stale now: not actionable."),
    "SCORE_BELOW_THRESHOLD": (
        "warn",
        "Not emitted since schema 1.2: actionable means the net edge beats the costs.",
    ),
    "ORDER_FLOW_CONFIRMS": ("good", "Order-book flow (OFI) agrees with the call."),
    "ORDER_FLOW_CONTRADICTS": ("warn", "Order-book flow (OFI) goes against the call."),
    "UNCALIBRATED": ("warn", "No calibration table: the score is the raw heuristic."),
    "NET_EDGE_POSITIVE": ("good", "The expected move beats the costs (net edge > 0)."),
    "COSTS_EXCEED_EDGE": (
        "warn",
        "The costs (fee + half spread + slippage) exceed the expected move.",
    ),
    "COST_UNKNOWN": (
        "warn",
        "The costs cannot be measured (no sane quote, or no book to measure slippage): "
        "not actionable.",
    ),
    "BOOK_TOO_THIN": ("bad", "The latest book cannot fill the quoted size: no slippage figure."),
    "REGIME_NOT_TRADABLE": ("warn", "The regime is not one the edge trades."),
    "STEP_ERROR": (
        "bad",
        "A computation step failed for this bar: regime held, no call (see degraded).",
    ),
    "NO_DEMONSTRATED_SKILL": (
        "warn",
        "No out-of-sample skill at this horizon: no probability, score 0.5, not actionable.",
    ),
    "NO_RULE_FIRED": ("warn", "No regime rule held this bar (the label is held, if any)."),
    "NO_NEW_DATA": ("warn", "The bar brought no new data: regime held, no call."),
    "VOL_FORECAST_HIGH": (
        "warn",
        "The next hour's forecast volatility is at or above the coin's norm (risk flag).",
    ),
}
"""Tone (card colour) and meaning of each explain code, shown in the page's legend."""

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


def page_docs() -> dict[str, Any]:
    """What the page explains: every explain code (tone, meaning) and every feature."""
    explain = {
        code.value: dict(
            zip(("tone", "text"), EXPLAIN_DOCS.get(code.value, ("info", "")), strict=True)
        )
        for code in Explain
    }
    features = {name: field.description or "" for name, field in Features.model_fields.items()}
    return {"explain": explain, "features": features}


def render_page() -> str:
    """The page with `page_docs` in place (``<`` escaped: it sits inside a script element)."""
    page = PAGE.read_text(encoding="utf-8")
    if DOCS_PLACEHOLDER not in page:
        msg = f"{PAGE} has no {DOCS_PLACEHOLDER!r} placeholder"
        raise RuntimeError(msg)
    docs = orjson.dumps(page_docs()).decode().replace("<", "\\u003c")
    return page.replace(DOCS_PLACEHOLDER, docs, 1)


def dashboard_router() -> APIRouter:
    """A router serving the dashboard page at ``GET /`` (built once, here: fails early)."""
    page = render_page()
    router = APIRouter(tags=["dashboard"])

    @router.api_route(
        "/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False
    )
    def dashboard() -> HTMLResponse:
        """The live dashboard (HTML)."""
        return HTMLResponse(page, headers=HEADERS)

    return router


__all__ = [
    "CONTENT_SECURITY_POLICY",
    "EXPLAIN_DOCS",
    "PAGE",
    "dashboard_router",
    "page_docs",
    "render_page",
]
