"""No request body makes the API (REST or MCP over HTTP at /mcp/) answer 500.

A body over ``max_body_bytes`` gets 413 (declared by Content-Length or streamed); a JSON body
nested deeper than ``max_json_depth`` gets 400 with the reason, before any parser sees it (a
200 KB body of arrays nested 100,000 deep used to be a 500 with a RecursionError).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from api.app import create_app
from api.mcp import mcp_http_app
from api.security import BodyGuard, json_depth_exceeds
from connectors.store import SignalStore

MAX_BODY = 256 * 1024
MAX_DEPTH = 64
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = (
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",'
    b'"capabilities":{},"clientInfo":{"name":"test","version":"0"}}}'
)


def _nested(depth: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return open_ * depth + close * depth


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    store = SignalStore(coins=["BTC"])
    mcp = mcp_http_app(store)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with mcp.lifespan():
            yield

    app = create_app(
        store,
        lifespan,
        token=None,
        rate_limit_per_s=0,
        max_body_bytes=MAX_BODY,
        max_json_depth=MAX_DEPTH,
        mounts=[("/mcp", mcp)],
    )
    with TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False) as c:
        yield c


def test_json_depth_scan() -> None:
    assert not json_depth_exceeds(b"", 4)
    assert not json_depth_exceeds(_nested(4), 4)
    assert json_depth_exceeds(_nested(5), 4)
    assert json_depth_exceeds(b'{"a":' * 5 + b"1" + b"}" * 5, 4)
    assert not json_depth_exceeds(b"[]" * 1000, 4)  # many brackets, shallow
    assert not json_depth_exceeds(b'["' + b"[" * 1000 + b'"]', 4)  # inside a string
    assert not json_depth_exceeds(b'["\\"' + b"{" * 1000 + b'"]', 4)  # escaped quote
    assert json_depth_exceeds(b'["\\\\"' + b",[" * 10 + b"]" * 10 + b"]", 4)  # escaped backslash
    assert json_depth_exceeds(_nested(100_000), 64)


def test_mcp_deep_body_is_400_not_500(client: TestClient) -> None:
    body = _nested(100_000)  # 200 KB: the trigger
    for path in ("/mcp/", "/mcp"):
        r = client.post(path, content=body, headers=HEADERS)
        assert r.status_code == 400, r.text
        assert "nested deeper than 64" in r.json()["detail"]
        assert "Traceback" not in r.text


def test_mcp_large_body_is_413(client: TestClient) -> None:
    big = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"' + b"x" * MAX_BODY + b'"}}'
    r = client.post("/mcp/", content=big, headers=HEADERS)
    assert r.status_code == 413, r.text
    assert "HLSL_MAX_BODY_BYTES" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    r = client.post("/mcp/", content=chunks(), headers=HEADERS)
    assert r.status_code == 413, r.text


def test_mcp_still_answers_within_the_limits(client: TestClient) -> None:
    r = client.post("/mcp/", content=INIT, headers=HEADERS)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["serverInfo"]["name"]
    # brackets inside strings do not count; nesting at the limit passes the guard
    deep_ok = INIT.replace(b'"test"', b'"' + b"[" * 5000 + b'"')
    assert client.post("/mcp/", content=deep_ok, headers=HEADERS).status_code == 200
    at_limit = b'{"jsonrpc":"2.0","id":2,"method":"x","params":{"a":' + _nested(62) + b"}}"
    r = client.post("/mcp/", content=at_limit, headers=HEADERS)
    assert r.status_code < 500
    assert "nested deeper" not in r.text


def test_rest_bodies(client: TestClient) -> None:
    for method, path in (("GET", "/v1/signal/BTC"), ("POST", "/v1/signals"), ("PUT", "/health")):
        r = client.request(method, path, content=_nested(100_000))
        assert r.status_code == 400, (method, path, r.text)
        r = client.request(method, path, content=b"[" * (MAX_BODY + 1))
        assert r.status_code == 413, (method, path, r.text)
    # a GET without a body is untouched
    assert client.get("/health").status_code in (200, 503)


def test_non_utf8_json_is_400(client: TestClient) -> None:
    r = client.post("/mcp/", content=INIT[:10] + b"\xff" + INIT[10:], headers=HEADERS)
    assert r.status_code == 400, r.text
    assert "not UTF-8" in r.json()["detail"]


def test_no_body_gives_500(client: TestClient) -> None:
    rng = random.Random(8)
    pieces = [b"[", b"]", b"{", b"}", b'"', b"\\", b":", b",", b"1e999", b"-", b"null", b"\xff"]
    bodies = [
        b"",
        b"\x00" * 100,
        b"{",
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":' + _nested(63) + b"}",
        b'{"jsonrpc":"2.0","id":1e400,"method":"tools/call"}',
        INIT[:-7],
        *(b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 400))) for _ in range(40)),
    ]
    for body in bodies:
        for path in ("/mcp/", "/v1/signals"):
            r = client.post(path, content=body, headers=HEADERS)
            assert r.status_code < 500, (path, body[:80], r.status_code, r.text[:200])


async def _call(app: Any, headers: list[tuple[bytes, bytes]], messages: list[Message]) -> Any:
    sent: list[Message] = []
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    await app(scope, receive, send)
    return sent, queue


def test_guard_reads_no_more_than_the_limit() -> None:
    import anyio

    seen: list[bytes] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = BodyGuard(inner, max_body_bytes=1024, max_json_depth=8)
    chunk: Message = {"type": "http.request", "body": b"x" * 600, "more_body": True}
    te = [(b"transfer-encoding", b"chunked")]
    sent, left = anyio.run(_call, guard, te, [chunk, chunk, chunk, chunk])
    assert sent[0]["status"] == 413
    assert len(left) == 2  # stopped reading once past the limit
    sent, _ = anyio.run(_call, guard, [(b"content-length", b"abc")], [])
    assert sent[0]["status"] == 400
    last: Message = {"type": "http.request", "body": b"[[1]]", "more_body": False}
    sent, _ = anyio.run(_call, guard, te, [{**chunk, "body": b"[["}, last])
    assert sent[0]["status"] == 204
    assert seen == [b"[[[[1]]"]  # the app gets the body whole, once
