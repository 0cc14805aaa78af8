"""Access control (`api.security`): bearer token, CORS, per-client rate limit, extension points."""

from __future__ import annotations

import time
from typing import Any

import httpx2
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from starlette.responses import PlainTextResponse

from api.app import create_app
from api.security import TOKEN_ENV, TokenBuckets, token_from_env
from api.stream import RETRY_MS
from connectors.store import SignalStore
from flows.settings import Settings
from tests.api.test_stream import serve, subscribers

TOKEN = "s3cret-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# /docs, /redoc and /openapi.json stay open: the page asks for the token itself (Authorize).
PROTECTED = ("/v1/state", "/v1/signals", "/v1/signal/BTC", "/v1/stream", "/metrics")


@pytest.fixture(autouse=True)
def no_env_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def _sub_app() -> FastAPI:
    sub = FastAPI()

    @sub.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    return sub


def _client(**kwargs: Any) -> TestClient:
    return TestClient(create_app(SignalStore(coins=("BTC",)), **kwargs))


# -- token ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PROTECTED)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
def test_protected_routes_need_the_token(path: str, headers: dict[str, str]) -> None:
    r = _client(token=TOKEN).get(path, headers=headers)
    assert r.status_code == 401
    assert r.json() == {"detail": "unauthorized"}
    assert r.headers["www-authenticate"] == "Bearer"


def test_the_token_opens_every_route() -> None:
    client = _client(token=TOKEN)
    assert client.get("/v1/state", headers=AUTH).status_code == 200
    assert client.get("/v1/signals", headers=AUTH).status_code == 200
    assert client.get("/v1/signal/BTC", headers=AUTH).status_code == 503  # no signal yet
    assert client.get("/metrics", headers=AUTH).status_code == 200
    assert client.get("/v1/state", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_health_needs_no_token() -> None:
    client = _client(token=TOKEN)
    assert client.get("/health").status_code == 200
    assert client.get("/health", headers={"Authorization": "Bearer wrong"}).status_code == 200


def test_the_stream_needs_the_token_and_streams_with_it() -> None:
    app = create_app(SignalStore(), token=TOKEN, sse_keepalive_s=0.2)
    with serve(app) as base, httpx2.Client(base_url=base, timeout=5) as client:
        assert client.get("/v1/stream").status_code == 401
        assert subscribers(app) == 0
        with client.stream("GET", "/v1/stream", headers=AUTH) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = r.iter_lines()
            assert next(lines) == f"retry: {RETRY_MS}"
            assert next(lines) == ""
            assert next(lines) == ": ping"


def test_the_token_covers_mounted_apps_and_extra_routers() -> None:
    router = APIRouter()

    @router.get("/extra")
    def extra() -> dict[str, int]:
        return {"extra": 1}

    starlette_sub = PlainTextResponse("raw")
    client = _client(
        token=TOKEN,
        extra_routers=[router],
        mounts=[("/mcp", _sub_app()), ("/raw", lambda s, r, se: starlette_sub(s, r, se))],
    )
    for path, body in (("/extra", {"extra": 1}), ("/mcp/ping", {"pong": "yes"})):
        assert client.get(path).status_code == 401
        r = client.get(path, headers=AUTH)
        assert r.status_code == 200
        assert r.json() == body
    assert client.get("/raw/x").status_code == 401
    assert client.get("/raw/x", headers=AUTH).text == "raw"


def test_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert token_from_env({}) is None
    assert token_from_env({TOKEN_ENV: "  "}) is None
    assert token_from_env({TOKEN_ENV: " abc "}) == "abc"
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    client = _client()
    assert client.get("/v1/signals").status_code == 401
    assert client.get("/v1/signals", headers=AUTH).status_code == 200
    assert _client(token=None).get("/v1/signals").status_code == 200  # explicitly off
    monkeypatch.delenv(TOKEN_ENV)
    assert _client().get("/v1/signals").status_code == 200  # unset: no authentication


def test_the_server_binds_the_loopback_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HLSL_HOST", raising=False)
    assert Settings(replay=["x"]).host == "127.0.0.1"


# -- CORS ----------------------------------------------------------------------------------------


def test_no_cross_origin_access_by_default() -> None:
    r = _client(token=None).get("/v1/signals", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers


def test_listed_origins_get_cors_headers() -> None:
    origin = "http://localhost:3000"
    client = _client(token=TOKEN, cors_origins=[origin])
    pre = client.options(
        "/v1/signals",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization,last-event-id",
        },
    )
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == origin
    allowed = pre.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed
    assert "last-event-id" in allowed
    r = client.get("/v1/signals", headers={"Origin": origin, **AUTH})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == origin
    # a refusal is readable by the page too
    r = client.get("/v1/signals", headers={"Origin": origin})
    assert r.status_code == 401
    assert r.headers["access-control-allow-origin"] == origin
    other = client.get("/v1/signals", headers={"Origin": "http://evil.example", **AUTH})
    assert "access-control-allow-origin" not in other.headers
    bad = client.options(
        "/v1/signals",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert bad.status_code == 400


# -- rate limit ----------------------------------------------------------------------------------


def test_token_bucket_refills_at_its_rate() -> None:
    now = [100.0]
    b = TokenBuckets(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [b.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("a") == pytest.approx(0.5)
    assert b.take("b") == 0.0  # another client has its own bucket
    now[0] += 0.5
    assert b.take("a") == 0.0
    assert b.take("a") > 0
    now[0] += 100
    assert [b.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # never more than the burst
    assert b.take("a") > 0


def test_token_buckets_stay_bounded() -> None:
    now = [0.0]
    b = TokenBuckets(rate_per_s=1.0, burst=2, clock=lambda: now[0], max_keys=100)
    for i in range(1000):
        now[0] += 0.001
        b.take(f"10.0.{i // 256}.{i % 256}")
    assert len(b) <= 100


def test_a_flooding_client_gets_429_with_retry_after_and_others_do_not() -> None:
    app = create_app(SignalStore(), token=None, rate_limit_per_s=2, rate_limit_burst=5)
    flooder = TestClient(app, client=("10.0.0.1", 1111))
    polite = TestClient(app, client=("10.0.0.2", 2222))
    codes = [flooder.get("/v1/signals").status_code for _ in range(8)]
    assert codes == [200] * 5 + [429] * 3
    r = flooder.get("/v1/signals")
    assert r.status_code == 429
    assert r.json() == {"detail": "too many requests"}
    assert int(r.headers["retry-after"]) >= 1
    assert polite.get("/v1/signals").status_code == 200
    assert polite.get("/health").status_code == 200
    time.sleep(0.6)  # one token back at 2/s
    assert flooder.get("/v1/signals").status_code == 200
    assert flooder.get("/v1/signals").status_code == 429


def test_a_stream_counts_once() -> None:
    app = create_app(
        SignalStore(), token=None, rate_limit_per_s=0.01, rate_limit_burst=3, sse_keepalive_s=0.05
    )
    with serve(app) as base, httpx2.Client(base_url=base, timeout=5) as client:
        with client.stream("GET", "/v1/stream") as r:
            assert r.status_code == 200
            pings = 0
            for line in r.iter_lines():  # ten keep-alives later, still one request spent
                pings += line.startswith(":")
                if pings == 10:
                    break
        assert client.get("/v1/signals").status_code == 200
        assert client.get("/v1/signals").status_code == 200
        r = client.get("/v1/signals")
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1


def test_rate_limit_zero_turns_it_off() -> None:
    client = TestClient(create_app(SignalStore(), token=None, rate_limit_per_s=0))
    assert all(client.get("/health").status_code == 200 for _ in range(300))
