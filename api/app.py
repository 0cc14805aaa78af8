"""The FastAPI application over a `SignalStore`.

Routes: ``GET /health``, ``GET /v1/state``, ``GET /v1/signals``, ``GET /v1/signal/{coin}``,
``GET /v1/signal/{coin}/history``, ``GET /v1/signal/{coin}/explain`` (why the regime is what it
is, `operators.explain`), ``GET /v1/stream`` (Server-Sent Events, `api.stream`), ``GET /metrics``
(Prometheus, `api.metrics`); OpenAPI at ``/docs``.

Access (`api.security`, ASGI middleware around everything, mounted sub-apps included): with a
token (``HLSL_API_TOKEN``) every path but ``/health`` needs ``Authorization: Bearer <token>``;
each client IP has a token bucket (429 with ``Retry-After`` past it); CORS origins are allowed
only when listed; a request body over ``HLSL_MAX_BODY_BYTES`` gets 413 and a JSON body nested
deeper than ``HLSL_MAX_JSON_DEPTH`` 400, before any parser (FastAPI's, MCP's) sees it.

Honesty rules:

- Freshness is judged again at request time, on the source's clock (the latest event time in a
  replay, the wall clock live). A signal whose inputs went stale since its bar closed is served
  with ``actionable: false`` and ``STALE_INPUT`` added to ``edge.explain``.
- Coin names are case-sensitive on Hyperliquid: an exact match wins, else a unique
  case-insensitive one. Unknown coin: 404 with the coins served; a string that cannot be a coin
  name, a malformed query, or a query parameter the route does not take (`api.query`): 422;
  a tracked coin without a signal yet: 503 with the reason.
- Errors are ``{"detail": "..."}`` and never carry a traceback.
- ``/health`` is 503 when the flow failed, or when every coin with a signal is stale now.

What the routes read and how they refuse lives in `api.signals` (shared with MCP) and
`api.health`; this module is the app itself: its routes, their documentation and the order of
the middleware around them, which reads best as the one function `create_app`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from enum import Enum
from typing import Annotated, Any, Final, Literal

import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.sse import EventSourceResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from api.head import HeadAsGet, head_as_get
from api.health import judge_health, state_of, unhealthy
from api.metrics import HttpMetrics, ServiceCollector, make_registry, metrics_response
from api.openapi import DOCS_PATHS, DOCS_PREFIX
from api.openapi import install as install_openapi
from api.query import check_query, strict_query
from api.schemas import (
    ErrorBody,
    Health,
    SignalEnvelope,
    SignalHistory,
    SignalList,
    State,
)
from api.security import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_RATE_PER_S,
    OPEN_PATHS,
    AccessCounters,
    BearerAuth,
    BodyGuard,
    RateLimit,
    TokenBuckets,
    token_from_env,
)
from api.signals import (
    ApiError,
    explain_signal,
    history_json,
    history_page,
    latest_record,
    list_json,
    refresh,
    resolve,
    vouch,
)
from api.stream import DEFAULT_KEEPALIVE_S, DEFAULT_QUEUE_SIZE, Broadcaster, with_retry
from api.views import VIEW_PARAMETERS, FeaturesQuery, ViewError, ViewQuery, view_query
from api.views import render as render_view
from connectors.store import MAX_EVENT_ID_CHARS, SignalStore, StoredEnvelope
from operators.explain import RegimeExplanation
from operators.regime import RegimeConfig

log = logging.getLogger(__name__)

STRICT: Final = [Depends(strict_query)]
"""The /v1 routes refuse query parameters they do not take (`api.query`)."""
SIGNAL_QUERY: Final = frozenset(p["name"] for p in VIEW_PARAMETERS)
"""What ``GET /v1/signal/{coin}`` takes (read by hand there, documented by `VIEW_PARAMETERS`)."""


STREAM_IN_SCHEMA: Final = True
"""Whether ``/v1/stream`` is listed in OpenAPI (off while tests pin the five REST paths)."""

MAX_STREAM_COINS: Final = 256
"""Coins one stream may name in ``coins=``."""

CORS_HEADERS: Final = (
    "Authorization",
    "Content-Type",
    "Last-Event-ID",
    "Mcp-Session-Id",
    "Mcp-Protocol-Version",
)
"""Request headers a browser on an allowed origin may send."""

STREAM_DESCRIPTION: Final = """
**Push: `GET /v1/stream`** (Server-Sent Events). Query: `coins=BTC,eth` (resolved like the REST
routes; unknown: 404, malformed: 422), `on=every|change` (`change`: only when the regime label,
direction or actionable flag differs from the coin's previous envelope). Header `Last-Event-ID`
resumes from the server's history without gaps. Events: `event: signal`, `id: <run>:<seq>` (opaque;
a run id new for each run of the flow, and a sequence number), `data: <envelope as GET /v1/signal
returns it>`; `event: dropped` with data `{"missed": n, "last_id": "<run>:<seq>", "reason":
"..."}` when events after `last_id` will not come (a resume past
the history: then the stream continues; a client that fell behind: then the stream closes);
`: ping` comments while idle. **Metrics:** `GET /metrics` (Prometheus text).
"""


class FromEnv(Enum):
    """Sentinel: take the setting from the environment (``HLSL_API_TOKEN``)."""

    TOKEN = "HLSL_API_TOKEN"


async def get_store(request: Request) -> SignalStore:
    """The store behind this app (override in tests with ``app.dependency_overrides``).

    ``async`` so that resolving it costs no thread-pool hop.
    """
    store: SignalStore = request.app.state.store
    return store


StoreDep = Annotated[SignalStore, Depends(get_store)]
CoinParam = Annotated[
    str, Path(description="coin name, exact (kPEPE, xyz:SP500) or unique case-insensitive")
]


def _parse_last_event_id(value: str | None) -> str | None:
    """The ``Last-Event-ID`` header (None when absent or blank). Ids are opaque
    (``<run>:<seq>``): one this service did not issue in this run cannot resume gap-free and
    gets the ``dropped`` event (`api.stream.Broadcaster.events`); only an over-long value is
    refused (422)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if len(text) > MAX_EVENT_ID_CHARS or not text.isprintable():
        msg = f"Last-Event-ID: expected an event id (<run>:<seq>), got {text[:40]!r}"
        raise ApiError(422, msg)
    return text


def create_app(
    store: SignalStore,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    *,
    token: str | FromEnv | None = FromEnv.TOKEN,
    cors_origins: Sequence[str] = (),
    rate_limit_per_s: float = DEFAULT_RATE_PER_S,
    rate_limit_burst: float | None = None,
    sse_keepalive_s: float = DEFAULT_KEEPALIVE_S,
    sse_queue_size: int = DEFAULT_QUEUE_SIZE,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
    extra_routers: Iterable[APIRouter] = (),
    mounts: Iterable[tuple[str, ASGIApp]] = (),
    regime_config: RegimeConfig | None = None,
    store_status: Callable[[], dict[str, Any]] | None = None,
) -> FastAPI:
    """Build the API over ``store``.

    Args:
        store: what the flow writes.
        lifespan: starts and stops whatever feeds the store.
        token: bearer token every path but ``/health`` needs; by default ``HLSL_API_TOKEN``
            (unset or blank: none); None turns authentication off.
        cors_origins: origins browsers may call the API from (none by default).
        rate_limit_per_s: requests a second per client IP, sustained (0 turns limiting off).
        rate_limit_burst: requests at once per client IP (default twice the rate, at least 1).
        sse_keepalive_s: seconds of silence before a ``: ping`` on ``/v1/stream``.
        sse_queue_size: events a stream client may fall behind before it is dropped.
        max_body_bytes: largest request body (413 past it; ``HLSL_MAX_BODY_BYTES``).
        max_json_depth: deepest JSON nesting of a request body (400 past it;
            ``HLSL_MAX_JSON_DEPTH``).
        extra_routers: more routers to include (e.g. the dashboard).
        mounts: ``(path, asgi_app)`` sub-apps to mount (e.g. MCP over HTTP); the access
            middleware covers them too.
        regime_config: thresholds ``/v1/signal/{coin}/explain`` shows (default: the flow's).
        store_status: the shared store's status (`connectors.redis_mirror.RedisMirror.status`)
            for ``/health`` and ``/metrics``; None for the memory store.

    ``app.state`` holds ``store``, ``streams`` (the `Broadcaster`: uvicorn's graceful shutdown
    waits for open streams, so call `api.stream.close_streams_on_exit` on the server, or
    ``streams.close_all()``, to let SIGINT/SIGTERM end them), ``access`` (refusal counters) and
    ``metrics_registry``.
    """

    @asynccontextmanager
    async def _no_lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield

    api_token = token_from_env() if isinstance(token, FromEnv) else token
    # Swagger UI and ReDoc from the installed fastapi-offline package: /docs works offline.
    app = FastAPIOffline(
        title="Hyperliquid Signal Layer",
        version="1.0",
        summary="Agent-readable regime, edge and market-structure signals for Hyperliquid perps.",
        description=STREAM_DESCRIPTION,
        lifespan=lifespan or _no_lifespan,
        responses={
            404: {"model": ErrorBody, "description": "unknown coin (lists the coins served)"},
            422: {"model": ErrorBody, "description": "not a coin name, or a malformed query"},
            503: {"model": ErrorBody, "description": "no signal yet, or the flow failed"},
        },
    )
    install_openapi(app, bearer=api_token is not None, rate_limited=rate_limit_per_s > 0)
    streams = Broadcaster(store, keepalive_s=sse_keepalive_s, queue_size=sse_queue_size)
    access = AccessCounters()
    app.state.store = store
    app.state.streams = streams
    app.state.access = access

    def shared_status() -> dict[str, Any] | None:
        """The shared store's status for /health, /v1/state and /metrics (None: memory)."""
        return store_status() if store_status is not None else None

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, ex: ApiError) -> JSONResponse:
        body: dict[str, Any] = {"detail": ex.detail}
        if ex.coins is not None:
            body["coins"] = ex.coins
        if ex.earliest_ms is not None:
            body["earliest_ms"] = ex.earliest_ms
        return JSONResponse(body, status_code=ex.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, ex: RequestValidationError) -> JSONResponse:
        parts = []
        for err in ex.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path"))
            parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else err.get("msg", ""))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, ex: StarletteHTTPException) -> JSONResponse:
        # Keep the exception's headers: a 405 must say which methods are allowed (Allow),
        # HEAD included wherever GET is (`api.head`).
        headers = ex.headers
        if headers and "GET" in headers.get("Allow", "").split(", ") and head_as_get(req.url.path):
            headers = {**headers, "Allow": headers["Allow"] + ", HEAD"}
        detail = str(ex.detail)
        if ex.status_code == 404 and detail == "Not Found":  # no route: say which there are
            detail = f"no such path {req.url.path[:80]!r}; the API's paths: {', '.join(paths())}"
        return JSONResponse({"detail": detail}, status_code=ex.status_code, headers=headers)

    def paths() -> list[str]:
        """The documented GET paths (for a 404 that matched no route)."""
        return [
            r.path
            for r in app.routes
            if isinstance(r, APIRoute) and r.include_in_schema and "GET" in (r.methods or ())
        ]

    @app.exception_handler(Exception)
    async def _crash(_req: Request, ex: Exception) -> JSONResponse:
        log.error("unhandled error in the API", exc_info=ex)
        return JSONResponse({"detail": "internal error (logged)"}, status_code=500)

    @app.get(
        "/health",
        response_model=Health,
        tags=["service"],
        responses={503: {"model": Health, "description": "flow failed, or every coin stale"}},
    )
    def health(s: StoreDep) -> Any:
        """Is the flow alive (200), or failed or serving only stale coins (503)? Never blocks;
        needs no token."""
        h, unhealthy = judge_health(s, shared_status())
        if unhealthy:
            return JSONResponse(h.model_dump(mode="json"), status_code=503)
        return h

    @app.get("/v1/state", response_model=State, tags=["service"], dependencies=STRICT)
    def state(s: StoreDep) -> State:
        """Flow status, source counters (frames by channel, skipped lines by reason), coins."""
        return state_of(s, shared_status())

    @app.get("/v1/signals", response_model=SignalList, tags=["signals"], dependencies=STRICT)
    def signals(s: StoreDep, view: ViewQuery = None, features: FeaturesQuery = None) -> Response:
        """The latest signal of every coin that has one (freshness judged now)."""
        # Spliced from the stored bytes (no Pydantic pass, as GET /v1/signal/{coin}).
        vouch(s)
        now = s.now_ms()
        latest = s.records()
        body = list_json((latest[c] for c in s.coins() if c in latest), now)
        return Response(render_view(body, view, features), media_type="application/json")

    # coin -> its last body (one per coin: bounded by the coins served)
    rendered: dict[str, tuple[StoredEnvelope, int | None, bytes]] = {}

    @app.get(
        "/v1/signal/{coin}",
        response_model=SignalEnvelope,
        tags=["signals"],
        openapi_extra={"parameters": VIEW_PARAMETERS},
    )
    async def signal(coin: CoinParam, s: StoreDep, request: Request) -> Response:
        """A coin's latest signal (freshness judged now; stale means not actionable)."""
        # The hot path. async: a few microseconds under the store's lock, so no thread-pool
        # hops (the list, state and history routes, whose work grows with coins, stay in the
        # pool). The stored bytes with the freshness block spliced in (`StoredEnvelope.json_at`,
        # the bytes /v1/stream sends) instead of being re-validated by Pydantic on every
        # request, which cost two thirds of the request:
        # envelopes are built in the model's exact shape (operators/envelope.py) and the tests
        # validate every envelope a replay emits, and every one served, against the model.
        name, rec = latest_record(s, coin)
        now = s.now_ms()
        last = rendered.get(name)
        if last is not None and last[0] is rec and last[1] == now:
            body = last[2]  # same envelope, same clock: same bytes
        else:
            body = rec.json_at(now)
            rendered[name] = (rec, now, body)
        if request.scope["query_string"]:
            # read by hand on the hot path: FastAPI's solving of two declared query parameters
            # cost more than the rest of the request (documented through openapi_extra)
            try:
                check_query(request.query_params.multi_items(), SIGNAL_QUERY)
                view, features = view_query(request.query_params)
                if view is not None or features is not None:
                    body = render_view(body, view, features)
            except ViewError as ex:
                detail = str(ex)
                if not detail.startswith(("view:", "features:")):
                    detail = f"features: {detail}"
                raise ApiError(422, detail) from None
        return Response(body, media_type="application/json")

    @app.get(
        "/v1/signal/{coin}/history",
        response_model=SignalHistory,
        tags=["signals"],
        dependencies=STRICT,
    )
    def history(
        coin: CoinParam,
        s: StoreDep,
        limit: Annotated[
            int,
            Query(
                ge=1,
                le=100_000,
                description="at most N envelopes: the newest N, or with until_ms the oldest N of "
                "the range (a page)",
            ),
        ] = 100,
        since_ms: Annotated[
            int | None, Query(ge=0, description="only envelopes after this exchange time")
        ] = None,
        until_ms: Annotated[
            int | None,
            Query(
                ge=0,
                description="a time range: envelopes with since_ms < timestamp_ms <= until_ms, "
                "the oldest `limit` of them (page on with next_since_ms); 404 with earliest_ms "
                "when the range reaches before the history held",
            ),
        ] = None,
        view: ViewQuery = None,
        features: FeaturesQuery = None,
    ) -> Response:
        """A coin's stored signals, oldest first, as they were emitted (freshness as of then):
        the newest ``limit`` (after ``since_ms``), or a time range with ``until_ms``."""
        name = resolve(s, coin)
        vouch(s)
        recs, next_since = history_page(s, name, limit, since_ms, until_ms)
        body = render_view(history_json(name, recs, next_since), view, features)
        return Response(body, media_type="application/json")

    @app.get(
        "/v1/signal/{coin}/explain",
        response_model=RegimeExplanation,
        tags=["signals"],
        summary="Why a coin's regime is what it is",
        dependencies=STRICT,
    )
    def explain(coin: CoinParam, s: StoreDep) -> Response:
        """The rule behind the coin's latest regime call, its margin, the features the rules read,
        the thresholds, each rule condition checked against them, caveats saying when not to trust
        the call, and a summary in plain words (freshness judged now). Confidence is margin x input
        quality x stability, not a probability. The same document as the MCP tool
        ``explain_regime``."""
        _name, rec = latest_record(s, coin)
        env = orjson.loads(rec.json_at(s.now_ms()))
        body = explain_signal(env, regime_config).model_dump_json()
        return Response(body, media_type="application/json")

    @app.get(
        "/v1/stream",
        # Not response_class=EventSourceResponse: FastAPI would then drive the endpoint as a
        # generator with its own fixed 15 s pings and two extra tasks per client. The endpoint
        # validates first (404/422 before any byte is streamed) and returns the response.
        response_class=Response,
        responses={200: {"content": {"text/event-stream": {}}, "description": "SSE stream"}},
        tags=["signals"],
        include_in_schema=STREAM_IN_SCHEMA,
        dependencies=STRICT,
    )
    async def stream(
        s: StoreDep,
        coins: Annotated[
            str | None,
            Query(
                max_length=4096,
                description="comma-separated coins (exact or unique case-insensitive)",
            ),
        ] = None,
        on: Annotated[
            Literal["every", "change"],
            Query(description="every envelope, or only regime/direction/actionable changes"),
        ] = "every",
        last_event_id: Annotated[
            str | None, Header(description="resume after this event id (SSE reconnect)")
        ] = None,
    ) -> EventSourceResponse:
        """New envelopes as Server-Sent Events (``event: signal``, ``id: <run>:<seq>``)."""
        wanted: frozenset[str] | None = None
        if coins is not None:
            names = [c.strip() for c in coins.split(",")]
            if not all(names):
                raise ApiError(422, "coins: expected comma-separated coin names")
            if len(names) > MAX_STREAM_COINS:
                raise ApiError(422, f"coins: at most {MAX_STREAM_COINS} coins")
            wanted = frozenset(resolve(s, n) for n in names)
        vouch(s)
        last = _parse_last_event_id(last_event_id)
        events = with_retry(streams.events(wanted, changes_only=on == "change", last_id=last))
        return EventSourceResponse(
            events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    registry = make_registry(
        ServiceCollector(
            store,
            refresh,
            streams,
            access,
            lambda: not unhealthy(store, shared_status())[0],
            store_status,
        )
    )
    app.state.metrics_registry = registry

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus text format (see `api.metrics`)."""
        return metrics_response(registry)

    for router in extra_routers:
        app.include_router(router)
    for path, sub in mounts:
        app.mount(path, sub)

    # Outermost last: CORS (so refusals carry its headers) > rate limit > token > body guard >
    # the app (mounts included): a body is read only once the request is authorised.
    app.add_middleware(HeadAsGet)  # innermost: HEAD /health and friends run as GET (api.head)
    app.add_middleware(BodyGuard, max_body_bytes=max_body_bytes, max_json_depth=max_json_depth)
    if api_token is not None:
        app.add_middleware(
            BearerAuth,
            token=api_token,
            counters=access,
            open_paths=OPEN_PATHS | DOCS_PATHS,
            open_prefixes=(DOCS_PREFIX,),
        )
    if rate_limit_per_s > 0:
        burst = rate_limit_burst if rate_limit_burst is not None else 2 * rate_limit_per_s
        app.add_middleware(
            RateLimit, buckets=TokenBuckets(rate_limit_per_s, max(1.0, burst)), counters=access
        )
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=list(CORS_HEADERS),
            expose_headers=["Retry-After", "Mcp-Session-Id"],
            max_age=600,
        )
    app.add_middleware(HttpMetrics, registry=registry)  # outermost: refusals are counted too
    return app


__all__ = [
    "FromEnv",
    "SignalEnvelope",
    "create_app",
    "get_store",
]
