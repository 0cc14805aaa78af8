"""MCP access and first-contact behaviour (`api.mcp`): allowed hosts over HTTP, the proxy's
bearer token from the environment, and a replay still in progress.

HTTP requests go through Starlette's test client (the transport's Host check is the SDK's);
the proxy test runs ``python -m api.mcp --api-url`` against a uvicorn server with a token, through
the official SDK client. Every subprocess and session is bounded by a timeout.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import TextContent

from api.app import create_app
from api.mcp import (
    ApiSource,
    SignalQueryError,
    StoreSource,
    client_token,
    mcp_http_app,
    transport_security_for,
)
from api.signals import refresh
from api.views import compact_envelope
from connectors.store import RunState, SignalStore
from flows.settings import Settings
from tests.conftest import REPO, SAMPLE

TIMEOUT_S = 45.0
TOKEN = "s3cret-token"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}
HEADERS = {"Accept": "application/json, text/event-stream"}


# -- allowed hosts ---------------------------------------------------------------------------------


def _post(app: Any, host: str, origin: str | None = None) -> int:
    headers = {**HEADERS, "Host": host}
    if origin is not None:
        headers["Origin"] = origin
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        return client.post("/", json=INIT, headers=headers).status_code


def test_a_configured_host_is_allowed_others_get_421(sample_store: SignalStore) -> None:
    settings = Settings(
        host="0.0.0.0",
        mcp_allowed_hosts=["signals.example", "other.example:9000"],
        mcp_allowed_origins=["https://dash.example"],
    )
    app = mcp_http_app(sample_store, settings=settings)
    assert _post(app, "signals.example") == 200
    assert _post(app, "signals.example:8000") == 200  # no port given: any port
    assert _post(app, "other.example:9000") == 200
    assert _post(app, "other.example:9001") == 421  # a port given: that port only
    assert _post(app, "localhost:8000") == 200  # the local ones stay allowed
    assert _post(app, "evil.example") == 421
    assert _post(app, "signals.example", "https://dash.example") == 200
    assert _post(app, "signals.example", "https://evil.example") == 403


def test_default_hosts_are_the_local_ones_and_the_bound_host(sample_store: SignalStore) -> None:
    wildcard = mcp_http_app(sample_store, settings=Settings(host="0.0.0.0"))
    assert _post(wildcard, "127.0.0.1:8000") == 200
    assert _post(wildcard, "[::1]:8000") == 200
    assert _post(wildcard, "0.0.0.0:8000") == 421  # a wildcard is not a name clients use
    assert _post(wildcard, "10.1.2.3:8000") == 421
    bound = mcp_http_app(sample_store, settings=Settings(host="10.1.2.3"))
    assert _post(bound, "10.1.2.3:8000") == 200
    assert _post(bound, "10.9.9.9:8000") == 421
    sec = transport_security_for(Settings(host="::1"))
    assert "[::1]:*" in sec.allowed_hosts


def test_allowed_hosts_come_from_the_environment_and_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from api.server import parse_args

    monkeypatch.setenv("HLSL_MCP_ALLOWED_HOSTS", "a.example, b.example:81")
    settings = parse_args(["--mcp-allowed-origins", "https://a.example"])
    assert settings.mcp_allowed_hosts == ["a.example", "b.example:81"]
    assert settings.mcp_allowed_origins == ["https://a.example"]
    with pytest.raises(SystemExit):
        parse_args(["--mcp-allowed-origins", "a.example"])  # one line, exit 2


# -- the proxy's token -----------------------------------------------------------------------------


def test_client_token_from_env_or_file(tmp_path: Path) -> None:
    assert client_token({}) is None
    assert client_token({"HLSL_API_CLIENT_TOKEN": f" {TOKEN}\n"}) == TOKEN
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    assert client_token({"HLSL_API_CLIENT_TOKEN_FILE": str(path)}) == TOKEN
    with pytest.raises(ValueError, match="both set"):
        client_token({"HLSL_API_CLIENT_TOKEN": "x", "HLSL_API_CLIENT_TOKEN_FILE": str(path)})
    with pytest.raises(ValueError, match="cannot read it"):
        client_token({"HLSL_API_CLIENT_TOKEN_FILE": str(tmp_path / "absent")})
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        client_token({"HLSL_API_CLIENT_TOKEN_FILE": str(tmp_path / "empty")})


@pytest.fixture(scope="module")
def guarded(sample_store: SignalStore) -> Iterator[str]:
    """The REST API with a token, on a free port."""
    mcp = mcp_http_app(sample_store)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with mcp.lifespan():
            yield

    app = create_app(sample_store, lifespan, token=TOKEN, rate_limit_per_s=0)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-uvicorn-token")
    thread.start()
    deadline = time.monotonic() + TIMEOUT_S
    while not server.started:
        assert thread.is_alive(), "uvicorn failed"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=TIMEOUT_S)


def test_api_source_sends_the_token(guarded: str, sample_store: SignalStore) -> None:
    env = ApiSource(guarded, token=TOKEN).signal("BTC")
    assert env["timestamp_ms"] == refresh(sample_store.latest("BTC") or {}, None)["timestamp_ms"]
    with pytest.raises(SignalQueryError, match="HLSL_API_CLIENT_TOKEN") as ex:
        ApiSource(guarded).signal("BTC")
    assert ex.value.status == 401


def _stdio_call(args: list[str], env: dict[str, str], tool: str, arguments: dict[str, Any]) -> Any:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "api.mcp", *args], env=env, cwd=REPO
    )

    async def run() -> Any:
        with anyio.fail_after(TIMEOUT_S):
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                return await session.call_tool(tool, arguments)

    with tempfile.TemporaryFile("w+", encoding="utf-8") as errlog:
        return anyio.run(run)


def _env(**extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("HLSL_")}
    return {**env, **extra}


def test_stdio_proxy_reads_the_token_from_the_environment(
    guarded: str, sample_store: SignalStore, tmp_path: Path
) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN, encoding="utf-8")
    r = _stdio_call(
        ["--api-url", guarded], _env(HLSL_API_CLIENT_TOKEN_FILE=str(path)), "list_signals", {}
    )
    assert not r.isError, r.content
    assert r.structuredContent["count"] == 3
    expected = refresh(sample_store.latest("BTC") or {}, sample_store.now_ms())
    assert r.structuredContent["data"][0] == compact_envelope(expected)


# -- a replay in progress --------------------------------------------------------------------------


def _running_replay() -> SignalStore:
    s = SignalStore(coins=[], mode="replay")
    s.state = RunState.RUNNING
    s.source_info = lambda: {"lines_read": 1234, "latest_event_ms": 1767225600000, "files": []}
    return s


def _error(source: StoreSource, coin: str) -> SignalQueryError:
    with pytest.raises(SignalQueryError) as ex:
        source.signal(coin)
    return ex.value


def test_a_running_replay_says_how_far_it_has_got() -> None:
    source = StoreSource(_running_replay(), wait_for_replay_s=0)
    err = _error(source, "BTC")
    assert err.status == 503
    assert str(err).startswith("replay in progress (1,234 lines read, events up to 2026-01-01")
    assert "unknown coin 'BTC'" in str(err)
    assert "ask again shortly" in str(err)


def test_tools_wait_for_a_running_replay() -> None:
    store = _running_replay()
    source = StoreSource(store, wait_for_replay_s=TIMEOUT_S)
    finish = threading.Timer(0.3, lambda: setattr(store, "state", RunState.FINISHED))
    finish.start()
    try:
        started = time.monotonic()
        anyio.run(source.wait_ready)
        assert store.state is RunState.FINISHED
        assert time.monotonic() - started < TIMEOUT_S
    finally:
        finish.cancel()
    assert "replay in progress" not in str(_error(source, "BTC"))  # finished: the plain 404
    quick = StoreSource(_running_replay(), wait_for_replay_s=0.2)
    started = time.monotonic()
    anyio.run(quick.wait_ready)  # gives up after its bound, then answers with the progress
    assert time.monotonic() - started >= 0.2
    assert "replay in progress" in str(_error(quick, "BTC"))


def test_stdio_without_waiting_reports_the_progress() -> None:
    """HLSL_MCP_WAIT_FOR_REPLAY_S=0 on a slow (real-time) replay: an answer at once."""
    r = _stdio_call(
        [],
        _env(HLSL_REPLAY=str(SAMPLE), HLSL_SPEED="1", HLSL_MCP_WAIT_FOR_REPLAY_S="0"),
        "get_signal",
        {"coin": "BTC"},
    )
    assert r.isError
    text = r.content[0]
    assert isinstance(text, TextContent)
    assert text.text.startswith("replay in progress ("), text.text
