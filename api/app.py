"""The FastAPI application over a `SignalStore`.

Routes: ``GET /health``, ``GET /v1/state``, ``GET /v1/signals``, ``GET /v1/signal/{coin}``,
``GET /v1/signal/{coin}/history``; OpenAPI at ``/docs``.

Honesty rules:

- Freshness is judged again at request time, on the source's clock (the latest event time in a
  replay, the wall clock live). A signal whose inputs went stale since its bar closed is served
  with ``actionable: false`` and ``STALE_INPUT`` added to ``edge.explain``.
- Coin names are case-sensitive on Hyperliquid: an exact match wins, else a unique
  case-insensitive one. Unknown coin: 404 with the coins served; a string that cannot be a coin
  name, or a malformed query: 422; a tracked coin without a signal yet: 503 with the reason.
- Errors are ``{"detail": "..."}`` and never carry a traceback.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.schemas import (
    CoinState,
    ErrorBody,
    Health,
    SignalEnvelope,
    SignalHistory,
    SignalList,
    SourceState,
    State,
)
from api.store import RunState, SignalStore
from connectors.events import Stream
from flows.settings import COIN_PATTERN
from operators.edge import Explain
from operators.envelope import stream_block
from operators.freshness import FreshnessStatus, judge_stream

log = logging.getLogger(__name__)

_COIN_RE = re.compile(COIN_PATTERN)
_STREAM_OF = {s.value: s for s in Stream}


class ApiError(Exception):
    """An error with an HTTP status, a reason and optionally the coins served."""

    def __init__(self, status: int, detail: str, coins: list[str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.coins = coins


def refresh(env: dict[str, Any], now_ms: int | None) -> dict[str, Any]:
    """A copy of ``env`` with freshness judged as of ``now_ms`` (the source clock).

    If the inputs are stale now, the signal is not actionable any more (``STALE_INPUT``).
    """
    if now_ms is None:
        return env
    old = env["freshness"]
    streams: dict[str, Any] = {}
    any_present = False
    any_stale = False
    for name, s in old["streams"].items():
        judged = judge_stream(
            _STREAM_OF[name],
            s["last_exchange_ms"],
            s["last_recv_ms"],
            s["expected_interval_ms"],
            max(now_ms, env["timestamp_ms"]),
        )
        streams[name] = stream_block(judged)
        any_present |= judged.status is not FreshnessStatus.MISSING
        any_stale |= judged.status is FreshnessStatus.STALE
    status = (
        FreshnessStatus.STALE
        if any_stale
        else FreshnessStatus.OK
        if any_present
        else FreshnessStatus.MISSING
    )
    out = dict(env)
    out["freshness"] = {
        "as_of_ms": max(now_ms, env["timestamp_ms"]),
        "status": str(status),
        "streams": streams,
    }
    if any_stale and env["edge"]["actionable"]:
        edge = dict(env["edge"])
        edge["actionable"] = False
        if Explain.STALE_INPUT.value not in edge["explain"]:
            edge["explain"] = [*edge["explain"], Explain.STALE_INPUT.value]
        out["edge"] = edge
    return out


def get_store(request: Request) -> SignalStore:
    """The store behind this app (override in tests with ``app.dependency_overrides``)."""
    store: SignalStore = request.app.state.store
    return store


StoreDep = Annotated[SignalStore, Depends(get_store)]
CoinParam = Annotated[
    str, Path(description="coin name, exact (kPEPE, xyz:SP500) or unique case-insensitive")
]


def create_app(
    store: SignalStore,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """Build the API over ``store`` (``lifespan`` starts and stops whatever feeds it)."""

    @asynccontextmanager
    async def _no_lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield

    app = FastAPI(
        title="Hyperliquid Signal Layer",
        version="1.0",
        summary="Agent-readable regime, edge and market-structure signals for Hyperliquid perps.",
        lifespan=lifespan or _no_lifespan,
        responses={
            404: {"model": ErrorBody, "description": "unknown coin (lists the coins served)"},
            422: {"model": ErrorBody, "description": "not a coin name, or a malformed query"},
            503: {"model": ErrorBody, "description": "no signal yet, or the flow failed"},
        },
    )
    app.state.store = store

    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, ex: ApiError) -> JSONResponse:
        body: dict[str, Any] = {"detail": ex.detail}
        if ex.coins is not None:
            body["coins"] = ex.coins
        return JSONResponse(body, status_code=ex.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, ex: RequestValidationError) -> JSONResponse:
        parts = []
        for err in ex.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path"))
            parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else err.get("msg", ""))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, ex: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(ex.detail)}, status_code=ex.status_code)

    @app.exception_handler(Exception)
    async def _crash(_req: Request, ex: Exception) -> JSONResponse:
        log.error("unhandled error in the API", exc_info=ex)
        return JSONResponse({"detail": "internal error (logged)"}, status_code=500)

    def resolve(s: SignalStore, name: str) -> str:
        if not _COIN_RE.fullmatch(name):
            msg = f"{name[:40]!r} is not a coin name (expected {COIN_PATTERN})"
            raise ApiError(422, msg)
        coin = s.resolve(name)
        if coin is None:
            coins = s.coins()
            ambiguous = [c for c in coins if c.lower() == name.lower()]
            if ambiguous:
                msg = (
                    f"coin {name!r} is ambiguous: {', '.join(ambiguous)} (names are case-sensitive)"
                )
                raise ApiError(404, msg, coins)
            raise ApiError(404, f"unknown coin {name!r}", coins)
        return coin

    def no_signal_reason(s: SignalStore, coin: str) -> str:
        if s.state is RunState.FAILED:
            return f"the signal flow failed: {s.error}"
        if s.state is RunState.STARTING:
            return "the signal flow is starting"
        if s.state in (RunState.FINISHED, RunState.STOPPED):
            return f"the input ended before any bar of {coin} closed"
        return f"no bar of {coin} has closed yet (first signal after the first bar plus lateness)"

    def health_of(s: SignalStore) -> Health:
        ok = s.state in (RunState.STARTING, RunState.RUNNING, RunState.FINISHED) and not s.error
        return Health(
            ok=ok,
            status=str(s.state),
            mode=s.mode,
            error=s.error,
            coins=s.coins(),
            signals_emitted=s.signals_emitted,
            source_clock_ms=s.now_ms(),
            uptime_s=round(time.time() - s.started_wall_s, 3),
            connections=(s.source_info() or {}).get("connections", []),
        )

    @app.get("/health", response_model=Health, tags=["service"])
    def health(s: StoreDep) -> Any:
        """Is the flow alive (200) or failed (503)? Always answers, never blocks."""
        h = health_of(s)
        if s.state is RunState.FAILED:
            return JSONResponse(h.model_dump(mode="json"), status_code=503)
        return h

    @app.get("/v1/state", response_model=State, tags=["service"])
    def state(s: StoreDep) -> State:
        """Flow status, source counters (frames by channel, skipped lines by reason), coins."""
        latest = s.latest_all()
        now = s.now_ms()
        coins = []
        for coin in s.coins():
            env = latest.get(coin)
            fresh = refresh(env, now)["freshness"]["status"] if env else None
            coins.append(
                CoinState(
                    coin=coin,
                    has_signal=env is not None,
                    timestamp_ms=env["timestamp_ms"] if env else None,
                    regime=env["regime"]["label"] if env else None,
                    freshness=fresh,
                    late_events=s.late_events.get(coin, 0),
                )
            )
        info = s.source_info() or {
            "kind": "none",
            "files": [],
            "lines_read": 0,
            "frames_by_channel": {},
            "control_frames": {},
            "lines_skipped": {},
            "duplicate_trades": 0,
            "ignored_coin_events": 0,
            "errors": [],
            "finished": False,
            "latest_event_ms": None,
        }
        return State(
            health=health_of(s),
            source=SourceState(**info),
            coins=coins,
            late_events=sum(s.late_events.values()),
        )

    @app.get("/v1/signals", response_model=SignalList, tags=["signals"])
    def signals(s: StoreDep) -> dict[str, Any]:
        """The latest signal of every coin that has one (freshness judged now)."""
        now = s.now_ms()
        latest = s.latest_all()
        data = [refresh(latest[c], now) for c in s.coins() if c in latest]
        return {"data": data, "count": len(data)}

    @app.get("/v1/signal/{coin}", response_model=SignalEnvelope, tags=["signals"])
    def signal(coin: CoinParam, s: StoreDep) -> dict[str, Any]:
        """A coin's latest signal (freshness judged now; stale means not actionable)."""
        name = resolve(s, coin)
        env = s.latest(name)
        if env is None:
            raise ApiError(503, no_signal_reason(s, name))
        return refresh(env, s.now_ms())

    @app.get("/v1/signal/{coin}/history", response_model=SignalHistory, tags=["signals"])
    def history(
        coin: CoinParam,
        s: StoreDep,
        limit: Annotated[int, Query(ge=1, le=100_000, description="newest N envelopes")] = 100,
        since_ms: Annotated[
            int | None, Query(ge=0, description="only envelopes after this exchange time")
        ] = None,
    ) -> dict[str, Any]:
        """A coin's stored signals, oldest first, as they were emitted (freshness as of then)."""
        name = resolve(s, coin)
        data = s.history(name, limit=limit, since_ms=since_ms)
        return {"coin": name, "data": data, "count": len(data)}

    return app


__all__ = ["ApiError", "SignalEnvelope", "create_app", "refresh"]
