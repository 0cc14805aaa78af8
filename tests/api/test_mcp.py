"""Tests for the MCP server (`api.mcp`) through the official SDK's client.

The sample capture (``data/sample.ndjson.gz``) is replayed once in-process; its final store is the
reference. Then:

- stdio: ``python -m api.mcp`` with ``HLSL_REPLAY`` (the flow in the subprocess), one client
  session whose answers the tests check against the reference (same replay, same bytes);
- stdout cleanliness: a raw JSON-RPC exchange with a server made to print, write to
  ``sys.__stdout__`` and to file descriptor 1: every stdout line must be a JSON-RPC message;
- HTTP: the streamable HTTP transport mounted at ``/mcp`` in the FastAPI app over the reference
  store, served by uvicorn on a free port;
- proxy: ``python -m api.mcp --api-url`` reading that server's REST API.

Every subprocess and session is bounded by a timeout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.fastmcp.exceptions import ToolError
from mcp.shared.exceptions import McpError
from mcp.types import CallToolResult, JSONRPCMessage, TextContent
from pydantic import AnyUrl, BaseModel

from api.app import create_app
from api.mcp import (
    HISTORY_LIMIT_DEFAULT,
    HISTORY_LIMIT_MAX,
    INSTRUCTIONS,
    RESOURCE_NOT_FOUND,
    ApiSource,
    RegimeExplanation,
    SignalQueryError,
    StoreSource,
    explain_envelope,
    mcp_http_app,
)
from api.mcp.schemas import MAX_ANSWER_BYTES
from api.mcp.server import view_result
from api.metrics import MCP_TOOL_CALLS
from api.schemas import SignalEnvelope, SignalHistory, SignalList
from api.signals import refresh
from api.views import EDGE_SCORE_MEANING, CompactSignal, compact_envelope
from connectors.store import RunState, SignalStore
from flows.pipeline import Pipeline, build_pipeline, run_pipeline
from flows.settings import Settings, code_version
from operators.regime import RegimeLabel, Rule
from tests.conftest import REPO, SAMPLE

Envelope = dict[str, Any]

TIMEOUT_S = 45.0
COINS = ["BTC", "ETH", "SOL"]
TOOLS: dict[str, type[BaseModel]] = {
    "get_signal": SignalEnvelope,
    "list_signals": SignalList,
    "get_history": SignalHistory,
    "explain_regime": RegimeExplanation,
}
SCHEMAS = [
    "schema://hyperliquid/signal-envelope",
    "schema://hyperliquid/compact-signal",
    "schema://hyperliquid/regime-explanation",
]
MAX_HISTORY_DEFAULT_BYTES = 64 * 1024
"""get_history with default arguments, text + structured content (was ~740 KB)."""
MAX_TOOLS_LIST_BYTES = 32 * 1024
"""tools/list (was ~88 KB: a full envelope schema in three output schemas)."""
MAX_COMPACT_PER_COIN_BYTES = 2 * 1024
"""list_signals (compact, the default) per coin, text + structured (full: ~7.5 KB)."""


# -- the reference ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replayed() -> Pipeline:
    """The sample capture replayed once in-process (every envelope collected too)."""
    pipeline = build_pipeline(Settings(replay=[str(SAMPLE)], api=False), collect=True)
    run_pipeline(pipeline)
    assert pipeline.store.state is RunState.FINISHED, pipeline.store.error
    return pipeline


@pytest.fixture(scope="module")
def store(replayed: Pipeline) -> SignalStore:
    return replayed.store


def _expected(store: SignalStore, coin: str) -> Envelope:
    env = store.latest(coin)
    assert env is not None
    return refresh(env, store.now_ms())


def _env(**extra: str) -> dict[str, str]:
    """The test's environment without HLSL_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HLSL_")}
    return {**env, **extra}


# -- one client session ----------------------------------------------------------------------------


@dataclass
class Session:
    """What a client saw in one session (filled by `_exercise`)."""

    tools: dict[str, Any] = field(default_factory=dict)
    tools_list_bytes: int = 0
    server_version: str = ""
    instructions: str = ""
    first_call: CallToolResult | None = None
    calls: dict[str, CallToolResult] = field(default_factory=dict)
    resources: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    resource_text: str = ""
    resource_error: str = ""
    resource_error_code: int = 0
    schema_text: str = ""
    stderr: str = ""


CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "signal_btc": ("get_signal", {"coin": "BTC"}),
    "signal_lower": ("get_signal", {"coin": "eth"}),
    "signals": ("list_signals", {}),
    "signals_full": ("list_signals", {"view": "full"}),
    "signal_compact": ("get_signal", {"coin": "BTC", "features": ["mid_px", "spread_bps"]}),
    "history": ("get_history", {"coin": "SOL", "limit": 5, "view": "full"}),
    "history_compact": ("get_history", {"coin": "SOL", "limit": 5}),
    "history_default": ("get_history", {"coin": "BTC"}),
    "history_since": (
        "get_history",
        {"coin": "BTC", "since_ms": 1767226190000, "limit": 1000, "view": "full"},
    ),
    "history_range": (
        "get_history",
        {
            "coin": "BTC",
            "since_ms": 1767225900000,
            "until_ms": 1767226000000,
            "limit": 40,
            "view": "full",
        },
    ),
    "explain": ("explain_regime", {"coin": "btc"}),
    "unknown": ("get_signal", {"coin": "DOGE"}),
    "unknown_explain": ("explain_regime", {"coin": "DOGE"}),
    "not_a_coin": ("get_signal", {"coin": "../etc"}),
    "limit_too_big": ("get_history", {"coin": "BTC", "limit": HISTORY_LIMIT_MAX + 1}),
    "history_too_big": ("get_history", {"coin": "BTC", "limit": 1000, "view": "full"}),
    "reversed_range": (
        "get_history",
        {"coin": "BTC", "since_ms": 1767226000000, "until_ms": 1767225900000},
    ),
    "limit_string": ("get_history", {"coin": "BTC", "limit": "5"}),
    "unknown_argument": ("get_signal", {"coin": "BTC", "coins": "ETH"}),
    "bad_view": ("list_signals", {"view": "tiny"}),
    "bad_feature": ("get_signal", {"coin": "BTC", "features": ["mid_px", "midpx"]}),
    "missing_coin": ("get_history", {}),
}


async def _exercise(s: ClientSession, final_ms: int) -> Session:
    """List, call every tool (once the flow has reached ``final_ms``) and read a resource."""
    out = Session()
    init = await s.initialize()
    out.server_version = init.serverInfo.version
    out.instructions = init.instructions or ""
    listed = await s.list_tools()  # also lets the client validate structured results
    out.tools = {t.name: t for t in listed.tools}
    out.tools_list_bytes = _nbytes(listed)
    while True:  # the subprocess replays the capture: wait for its last bar
        r = await s.call_tool("get_signal", {"coin": "BTC"})
        if out.first_call is None:
            out.first_call = r
        if r.isError:  # only "no signal yet" is worth waiting for; anything else fails now
            text = _error_text(r)
            assert "unknown coin" in text or "starting" in text or "closed yet" in text, text
        elif r.structuredContent and r.structuredContent["timestamp_ms"] >= final_ms:
            break
        await anyio.sleep(0.05)
    for key, (name, args) in CALLS.items():
        out.calls[key] = await s.call_tool(name, args)
    out.resources = [str(r.uri) for r in (await s.list_resources()).resources]
    out.templates = [t.uriTemplate for t in (await s.list_resource_templates()).resourceTemplates]
    read = await s.read_resource(AnyUrl("signal://hyperliquid/eth"))
    content = read.contents[0]
    out.resource_text = getattr(content, "text", "")
    try:
        await s.read_resource(AnyUrl("signal://hyperliquid/DOGE"))
    except McpError as ex:
        out.resource_error = ex.error.message
        out.resource_error_code = ex.error.code
    schema = await s.read_resource(AnyUrl(SCHEMAS[1]))
    out.schema_text = getattr(schema.contents[0], "text", "")
    return out


def _nbytes(result: BaseModel) -> int:
    """A result's size as the client receives it (JSON; a tool result: text + structured)."""
    return len(result.model_dump_json(by_alias=True, exclude_none=True))


def _stdio_session(args: list[str], env: dict[str, str], final_ms: int) -> Session:
    """Run `_exercise` against ``python -m api.mcp ARGS`` over stdio (stderr captured)."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "api.mcp", *args], env=env, cwd=REPO
    )

    async def run() -> Session:
        with anyio.fail_after(TIMEOUT_S):
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                return await _exercise(session, final_ms)

    with tempfile.TemporaryFile("w+", encoding="utf-8") as errlog:
        result = anyio.run(run)
        errlog.seek(0)
        result.stderr = errlog.read()
    return result


@pytest.fixture(scope="module")
def stdio(store: SignalStore) -> Session:
    """One stdio session against ``HLSL_REPLAY=data/sample.ndjson.gz python -m api.mcp``; tools
    wait for the replay to finish (``HLSL_MCP_WAIT_FOR_REPLAY_S``)."""
    final_ms = _expected(store, "BTC")["timestamp_ms"]
    env = _env(HLSL_REPLAY=str(SAMPLE), HLSL_MCP_WAIT_FOR_REPLAY_S=str(TIMEOUT_S))
    return _stdio_session([], env, final_ms)


def _structured(r: CallToolResult, model: type[BaseModel]) -> Envelope:
    """A successful result: structured content valid for ``model``, the same JSON as text."""
    assert not r.isError, r.content
    assert r.structuredContent is not None
    model.model_validate(r.structuredContent)
    text = r.content[0]
    assert isinstance(text, TextContent)
    assert json.loads(text.text) == r.structuredContent
    return r.structuredContent


def _error_text(r: CallToolResult) -> str:
    assert r.isError
    assert r.structuredContent is None
    text = r.content[0]
    assert isinstance(text, TextContent)
    assert "Traceback" not in text.text
    return text.text


# -- stdio: tools ----------------------------------------------------------------------------------


def test_tools_are_listed_with_small_output_schemas(stdio: Session) -> None:
    assert set(stdio.tools) == set(TOOLS)
    assert stdio.tools_list_bytes < MAX_TOOLS_LIST_BYTES, stdio.tools_list_bytes
    full_required = set(SignalEnvelope.model_json_schema()["required"])
    compact_required = set(CompactSignal.model_json_schema()["required"])
    for name, model in TOOLS.items():
        tool = stdio.tools[name]
        out = tool.outputSchema
        assert out["type"] == "object", name
        assert "$defs" not in out, name  # shallow: the full schemas are resources
        assert set(out["properties"]) >= set(model.model_json_schema()["properties"]), name
        assert tool.inputSchema["additionalProperties"] is False, name
        assert tool.annotations.readOnlyHint is True, name
        assert tool.annotations.idempotentHint is True, name
        assert tool.annotations.destructiveHint is False, name
    # every signal (either view) has what both views have
    required = set(stdio.tools["get_signal"].outputSchema["required"])
    assert required == full_required & compact_required
    assert set(stdio.tools["get_history"].inputSchema["properties"]) == {
        "coin",
        "since_ms",
        "until_ms",
        "limit",
        "view",
        "features",
    }
    assert stdio.tools["get_history"].inputSchema["required"] == ["coin"]
    assert stdio.tools["get_history"].inputSchema["properties"]["limit"]["default"] == (
        HISTORY_LIMIT_DEFAULT
    )
    assert json.loads(stdio.schema_text) == CompactSignal.model_json_schema()


def test_tool_descriptions_say_what_not_to_trust(stdio: Session) -> None:
    doc = stdio.tools["get_signal"].description
    for words in (
        "stale",
        "warming_up",
        "UNKNOWN",
        "actionable",
        "_bps",
        "features_missing",
        "case-insensitive",
        "view",
    ):
        assert words in doc, words
    for name in TOOLS:
        assert "heuristic" not in stdio.tools[name].description, name
        assert "calibration pending" not in stdio.tools[name].description, name
    for name in ("get_signal", "list_signals", "get_history"):
        assert EDGE_SCORE_MEANING in stdio.tools[name].description, name
    assert EDGE_SCORE_MEANING in stdio.instructions
    assert stdio.instructions == INSTRUCTIONS


def test_server_info_version_is_this_package(stdio: Session) -> None:
    assert stdio.server_version == code_version()


def test_get_signal_is_the_rest_answer(stdio: Session, store: SignalStore) -> None:
    body = _structured(stdio.calls["signal_btc"], SignalEnvelope)
    assert body == _expected(store, "BTC")
    lower = _structured(stdio.calls["signal_lower"], SignalEnvelope)
    assert lower["coin"] == "ETH"
    assert lower == _expected(store, "ETH")
    compact = _structured(stdio.calls["signal_compact"], CompactSignal)
    assert compact == compact_envelope(_expected(store, "BTC"), ["mid_px", "spread_bps"])
    assert set(compact["features"]) == {"mid_px", "spread_bps"}


def test_the_replay_is_waited_for(stdio: Session, store: SignalStore) -> None:
    """A one-shot client's first call is answered once the replay has finished."""
    assert stdio.first_call is not None
    assert _structured(stdio.first_call, SignalEnvelope) == _expected(store, "BTC")


def test_list_signals_and_history(stdio: Session, store: SignalStore) -> None:
    listed = _structured(stdio.calls["signals_full"], SignalList)
    assert listed == {"data": [_expected(store, c) for c in COINS], "count": 3}
    compact = stdio.calls["signals"]  # the default view
    body = _compact_list(compact)
    assert body == {"data": [compact_envelope(_expected(store, c)) for c in COINS], "count": 3}
    assert _nbytes(compact) < MAX_COMPACT_PER_COIN_BYTES * len(COINS), _nbytes(compact)

    hist = _structured(stdio.calls["history"], SignalHistory)
    assert hist == {"coin": "SOL", "data": store.history("SOL", limit=5), "count": 5}
    hist_compact = _compact_list(stdio.calls["history_compact"])
    assert hist_compact["data"] == [compact_envelope(e) for e in store.history("SOL", limit=5)]
    since = _structured(stdio.calls["history_since"], SignalHistory)
    assert since["data"] == store.history("BTC", since_ms=1767226190000)
    assert since["count"] == len(since["data"]) > 0
    assert all(e["timestamp_ms"] > 1767226190000 for e in since["data"])
    # a time range pages as the REST route does (since_ms < t <= until_ms, the oldest `limit`)
    ranged = _structured(stdio.calls["history_range"], SignalHistory)
    rest = TestClient(create_app(store)).get(
        "/v1/signal/BTC/history",
        params={"since_ms": 1767225900000, "until_ms": 1767226000000, "limit": 40, "view": "full"},
    )
    assert ranged == rest.json()
    assert ranged["count"] == 40
    assert ranged["next_since_ms"] == ranged["data"][-1]["timestamp_ms"]
    assert all(1767225900000 < e["timestamp_ms"] <= 1767226000000 for e in ranged["data"])


def test_history_defaults_fit_a_context(stdio: Session, store: SignalStore) -> None:
    r = stdio.calls["history_default"]
    body = _compact_list(r)
    assert body["count"] == HISTORY_LIMIT_DEFAULT
    assert body["data"][-1]["timestamp_ms"] == _expected(store, "BTC")["timestamp_ms"]
    assert _nbytes(r) < MAX_HISTORY_DEFAULT_BYTES, _nbytes(r)


def test_explain_regime(stdio: Session, store: SignalStore) -> None:
    body = _structured(stdio.calls["explain"], RegimeExplanation)
    env = _expected(store, "BTC")
    assert body == explain_envelope(env).model_dump(mode="json")
    reg = env["regime"]
    assert body["coin"] == "BTC"
    assert (body["label"], body["rule"], body["margin"]) == (
        reg["label"],
        reg["rule"],
        reg["margin"],
    )
    assert body["features"]["efficiency_ratio"] == env["features"]["efficiency_ratio"]
    assert body["thresholds"]["trend_enter_er"] == 0.40
    assert reg["label"] in body["summary"]
    assert reg["rule"] in body["summary"]


def test_unknown_coin_is_a_tool_error_naming_the_coins(stdio: Session) -> None:
    for key in ("unknown", "unknown_explain"):
        text = _error_text(stdio.calls[key])
        assert text == "unknown coin 'DOGE'; coins served: BTC, ETH, SOL", text
    assert "is not a coin name" in _error_text(stdio.calls["not_a_coin"])
    assert "limit" in _error_text(stdio.calls["limit_too_big"])
    too_big = _error_text(stdio.calls["history_too_big"])
    assert too_big.startswith("the answer would be 2,0"), too_big  # 602 full envelopes, ~2 MB
    assert "over the 256 KB one answer may carry; ask limit <= 7" in too_big, too_big
    assert _nbytes(stdio.calls["history_too_big"]) < 1024
    # a reversed range is the REST route's 422 text on every source (it was an empty page here)
    assert _error_text(stdio.calls["reversed_range"]) == "until_ms: must be >= since_ms"


def test_arguments_are_checked_strictly_in_one_clean_line(stdio: Session) -> None:
    expected = {
        "limit_string": 'get_history: invalid arguments: limit = "5": must be an integer',
        "unknown_argument": "get_signal: invalid arguments: unknown argument 'coins'",
        "bad_view": 'list_signals: invalid arguments: view = "tiny": must be one of',
        "bad_feature": "get_signal: invalid arguments: features: unknown feature 'midpx'",
        "missing_coin": "get_history: invalid arguments: missing argument 'coin'",
        "limit_too_big": "get_history: invalid arguments: limit = 1001: must be <= 1000",
    }
    for key, start in expected.items():
        text = _error_text(stdio.calls[key])
        assert text.startswith(start), (key, text)
        assert "\n" not in text, text
        assert "pydantic" not in text, text
        assert "http" not in text, text
        assert "Error executing tool" not in text, text


def test_resources(stdio: Session, store: SignalStore) -> None:
    assert stdio.templates == ["signal://hyperliquid/{coin}"]
    assert stdio.resources == [*SCHEMAS, *(f"signal://hyperliquid/{c}" for c in COINS)]
    body = json.loads(stdio.resource_text)
    SignalEnvelope.model_validate(body)
    assert body == _expected(store, "ETH")
    assert stdio.resource_error == "unknown coin 'DOGE'; coins served: BTC, ETH, SOL"
    assert stdio.resource_error_code == RESOURCE_NOT_FOUND


def test_stdio_logs_go_to_stderr(stdio: Session) -> None:
    assert "MCP server on stdio" in stdio.stderr
    assert "signal flow ended (finished)" in stdio.stderr


def _compact_list(r: CallToolResult) -> Envelope:
    """A list or history result in the compact view (each envelope valid for CompactSignal)."""
    assert not r.isError, r.content
    body = r.structuredContent
    assert body is not None
    for env in body["data"]:
        CompactSignal.model_validate(env)
    text = r.content[0]
    assert isinstance(text, TextContent)
    assert json.loads(text.text) == body
    return body


# -- stdio: nothing but protocol on stdout ---------------------------------------------------------

NOISY = """
import os, sys
import api.mcp.__main__ as m  # main reads protect_stdout from its own module: patch it there

protect = m.protect_stdout

def noisy():
    out = protect()
    print("NOISE print")
    sys.__stdout__.write("NOISE sys.__stdout__\\n")
    sys.__stdout__.flush()
    os.write(1, b"NOISE fd 1\\n")
    return out

m.protect_stdout = noisy
raise SystemExit(m.main())
"""


def _rpc(i: int, method: str, params: dict[str, Any] | None = None) -> str:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": i, "method": method}
    if params is not None:
        msg["params"] = params
    return json.dumps(msg)


def test_stdout_carries_only_json_rpc() -> None:
    requests = [
        _rpc(
            1,
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "0"},
            },
        ),
        json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        _rpc(2, "tools/list"),
        _rpc(3, "tools/call", {"name": "list_signals", "arguments": {}}),
        _rpc(4, "tools/call", {"name": "get_signal", "arguments": {"coin": "DOGE"}}),
        _rpc(5, "resources/read", {"uri": "signal://hyperliquid/BTC"}),
    ]
    lines: list[str] = []
    errors: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-c", NOISY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=_env(HLSL_REPLAY=str(SAMPLE)),
    ) as proc:
        assert proc.stdin is not None
        readers = [
            threading.Thread(target=lambda: lines.extend(proc.stdout or ())),
            threading.Thread(target=lambda: errors.extend(proc.stderr or ())),
        ]
        for t in readers:
            t.start()
        try:
            proc.stdin.write("\n".join(requests) + "\n")
            proc.stdin.flush()
            deadline = time.monotonic() + TIMEOUT_S
            while len(lines) < 5 and time.monotonic() < deadline:  # a client awaits answers
                time.sleep(0.05)
            proc.stdin.close()  # then hangs up: the server ends
            proc.wait(timeout=TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
            for t in readers:
                t.join(timeout=TIMEOUT_S)
    stderr = "".join(errors)
    assert proc.returncode == 0, stderr
    assert lines, stderr
    ids = []
    for line in lines:
        msg = JSONRPCMessage.model_validate_json(line)  # raises on anything else
        ids.append(getattr(msg.root, "id", None))
    assert sorted(i for i in ids if i is not None) == [1, 2, 3, 4, 5]
    stdout = "".join(lines)
    for noise in ("NOISE print", "NOISE sys.__stdout__", "NOISE fd 1"):
        assert noise in stderr, noise
        assert noise not in stdout, noise


def test_stdio_stops_the_flow_on_sigterm() -> None:
    """A live-speed replay still running; SIGTERM stops the flow cleanly and exits 0."""
    with (
        tempfile.TemporaryFile("a+b") as err,  # O_APPEND: reading it never moves writes
        subprocess.Popen(
            [sys.executable, "-m", "api.mcp"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=REPO,
            env=_env(HLSL_REPLAY=str(SAMPLE), HLSL_SPEED="1"),
        ) as proc,
    ):
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while b"MCP server on stdio" not in _read(err):
                assert proc.poll() is None, _read(err)
                assert time.monotonic() < deadline, _read(err)
                time.sleep(0.05)
            time.sleep(0.3)
            proc.terminate()
            out, _ = proc.communicate(timeout=TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
        log = _read(err).decode()
    assert proc.returncode == 0, log
    assert out == b""
    assert "signal flow ended (stopped)" in log, log


def _read(f: Any) -> bytes:
    f.seek(0)
    data: bytes = f.read()
    return data


# -- explanations over a whole replay --------------------------------------------------------------


def test_explanations_agree_with_the_flows_calls(replayed: Pipeline) -> None:
    """For every envelope, the recomputed checks of the rule that fired hold."""
    fired: set[Rule] = set()
    for _coin, env in replayed.collected or []:
        ex = explain_envelope(env)
        RegimeExplanation.model_validate(ex.model_dump(mode="json"))
        rule = Rule(ex.rule)
        checks = [c for c in ex.checks if c.rule == rule]
        if rule in (Rule.TREND, Rule.MEAN_REVERSION, Rule.CHAOS, Rule.VOL_STATE):
            assert checks
            assert all(c.met for c in checks), (env["timestamp_ms"], ex.checks)
            fired.add(rule)
        elif rule is Rule.CASCADE:
            # a one-way path; the move's size in norm units is the flow's to judge (not published)
            cond = {c.condition.split()[0].rstrip(":"): c for c in checks}
            assert cond["efficiency_ratio"].met, ex.checks
            assert cond["move_z"].met is None
            assert cond["move_z"].value is None
            if env["regime"]["risk_ratio"] is None:  # a shock: the expansion (or the flag)
                assert cond["vol_expansion_ratio"].met, ex.checks
            else:  # the risk flag was raised
                flags = [c for c in ex.checks if c.rule in (Rule.VOL_STATE, Rule.CHAOS)]
                assert any(c.met for c in flags), ex.checks
            met = {c.condition.split(":")[0].removeprefix("stress ") for c in checks if c.met}
            assert set(ex.stresses) <= met, (ex.stresses, met)
            fired.add(rule)
        if ex.label == RegimeLabel.UNKNOWN:
            assert any("UNKNOWN" in c for c in ex.caveats)
        if env["warmup"]["warming_up"]:
            assert any("warming up" in c for c in ex.caveats)
    assert fired >= {Rule.TREND, Rule.MEAN_REVERSION}, fired


def test_explanation_of_a_stale_signal_says_so(store: SignalStore) -> None:
    env = store.latest("BTC")
    assert env is not None
    stale = refresh(env, env["timestamp_ms"] + 3_600_000)
    ex = explain_envelope(stale)
    assert ex.freshness_status == "stale"
    assert not ex.actionable
    assert any("stale" in c for c in ex.caveats)


# -- HTTP: mounted in the FastAPI app --------------------------------------------------------------


@dataclass
class Served:
    """A uvicorn server on a free port."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread


@pytest.fixture(scope="module")
def served(store: SignalStore) -> Iterator[Served]:
    """The REST API with the MCP transport mounted at /mcp, as the lead mounts it."""
    mcp = mcp_http_app(store)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with mcp.lifespan():
            yield

    app = create_app(store, lifespan)
    app.mount("/mcp", mcp)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-uvicorn")
    thread.start()
    deadline = time.monotonic() + TIMEOUT_S
    while not server.started:
        assert thread.is_alive(), "uvicorn failed"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield Served(f"http://127.0.0.1:{port}", server, thread)
    server.should_exit = True
    thread.join(timeout=TIMEOUT_S)
    assert not thread.is_alive()


def _http_session(url: str, body: Callable[[ClientSession], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        with anyio.fail_after(TIMEOUT_S):
            async with (
                streamable_http_client(url) as (read, write, _session_id),
                ClientSession(read, write) as session,
            ):
                return await body(session)

    return anyio.run(run)


@pytest.mark.parametrize("path", ["/mcp/", "/mcp"])
def test_http_transport_mounted(served: Served, store: SignalStore, path: str) -> None:
    final_ms = _expected(store, "BTC")["timestamp_ms"]
    seen: Session = _http_session(served.url + path, lambda s: _exercise(s, final_ms))
    assert set(seen.tools) == set(TOOLS)
    assert _structured(seen.calls["signal_lower"], SignalEnvelope) == _expected(store, "ETH")
    assert _structured(seen.calls["signals_full"], SignalList)["count"] == 3
    assert _compact_list(seen.calls["signals"])["count"] == 3
    _structured(seen.calls["explain"], RegimeExplanation)
    assert "BTC, ETH, SOL" in _error_text(seen.calls["unknown"])
    assert _error_text(seen.calls["limit_string"]).startswith("get_history: invalid arguments")
    assert _error_text(seen.calls["reversed_range"]) == "until_ms: must be >= since_ms"
    assert json.loads(seen.resource_text) == _expected(store, "ETH")
    assert seen.resources == [*SCHEMAS, *(f"signal://hyperliquid/{c}" for c in COINS)]
    assert seen.resource_error_code == RESOURCE_NOT_FOUND
    assert seen.server_version == code_version()


def test_tool_calls_are_counted_for_metrics(served: Served) -> None:
    before = MCP_TOOL_CALLS.snapshot()

    async def calls(session: ClientSession) -> None:
        await session.initialize()
        await session.call_tool("get_signal", {"coin": "BTC"})
        await session.call_tool("get_signal", {"coin": "NOPE"})

    _http_session(served.url + "/mcp/", calls)
    after = MCP_TOOL_CALLS.snapshot()
    assert after.get(("get_signal", "ok"), 0) - before.get(("get_signal", "ok"), 0) == 1
    assert after.get(("get_signal", "error"), 0) - before.get(("get_signal", "error"), 0) == 1


def test_http_mount_keeps_the_rest_api(served: Served, store: SignalStore) -> None:
    client = TestClient(create_app(store))  # same answers in-process and over the socket
    with urllib.request.urlopen(served.url + "/v1/signal/BTC", timeout=TIMEOUT_S) as r:
        assert json.loads(r.read()) == client.get("/v1/signal/BTC").json()


def test_http_app_checks_host_and_needs_its_lifespan(store: SignalStore) -> None:
    app = mcp_http_app(store)
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "0"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream"}
    # without its lifespan: a clear 503, not a crash
    r = TestClient(app, base_url="http://127.0.0.1").post("/", json=init, headers=headers)
    assert r.status_code == 503, r.text
    assert "lifespan" in r.json()["detail"]
    # served on its own it runs its lifespan itself; a foreign Host is refused (DNS rebinding)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        r = client.post("/", json=init, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["result"]["serverInfo"]["name"] == "hyperliquid-signal-layer"
        evil = client.post("/", json=init, headers={**headers, "Host": "evil.example"})
        assert evil.status_code == 421, evil.text
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:  # again, after it ended
        assert client.post("/", json=init, headers=headers).status_code == 200


# -- proxy: --api-url ------------------------------------------------------------------------------


def test_stdio_proxy_reads_a_running_server(served: Served, store: SignalStore) -> None:
    final_ms = _expected(store, "BTC")["timestamp_ms"]
    seen = _stdio_session(["--api-url", served.url], _env(), final_ms)
    assert _structured(seen.calls["signal_btc"], SignalEnvelope) == _expected(store, "BTC")
    assert _structured(seen.calls["signals_full"], SignalList) == {
        "data": [_expected(store, c) for c in COINS],
        "count": 3,
    }
    assert _compact_list(seen.calls["signals"])["data"] == [
        compact_envelope(_expected(store, c)) for c in COINS
    ]
    assert _nbytes(seen.calls["history_default"]) < MAX_HISTORY_DEFAULT_BYTES
    hist = _structured(seen.calls["history"], SignalHistory)
    assert hist["data"] == store.history("SOL", limit=5)
    explained = _structured(seen.calls["explain"], RegimeExplanation)
    assert explained == explain_envelope(_expected(store, "BTC")).model_dump(mode="json")
    for key in ("unknown", "unknown_explain"):
        text = _error_text(seen.calls[key])
        assert "unknown coin 'DOGE'" in text, text
        assert "BTC, ETH, SOL" in text, text
    assert "is not a coin name" in _error_text(seen.calls["not_a_coin"])
    assert "until_ms: must be >= since_ms" in _error_text(seen.calls["reversed_range"])
    assert seen.resources == [*SCHEMAS, *(f"signal://hyperliquid/{c}" for c in COINS)]
    assert json.loads(seen.resource_text) == _expected(store, "ETH")
    assert seen.resource_error == "unknown coin 'DOGE'; coins served: BTC, ETH, SOL"


def test_an_answer_past_the_size_budget_names_the_largest_limit_that_fits(
    store: SignalStore,
) -> None:
    """1,000 full envelopes were 7.6 MB over MCP; past `MAX_ANSWER_BYTES` the call is refused
    with the exact largest ``limit`` whose answer fits (newest first, or a range's oldest)."""
    src = StoreSource(store)
    last = _expected(store, "BTC")["timestamp_ms"]
    for until in (None, last):

        def answer(limit: int, view: str | None = "full", until: int | None = until) -> Any:
            args = ("BTC", None, limit, until)
            return view_result("history", src.history, args, view, None, "compact")

        with pytest.raises(ToolError) as refused:
            answer(HISTORY_LIMIT_MAX)
        found = re.search(r"ask limit <= (\d+)", str(refused.value))
        assert found, refused.value
        fits = int(found[1])
        text = answer(fits).content[0].text
        assert MAX_ANSWER_BYTES - 4096 < len(text) <= MAX_ANSWER_BYTES  # the largest that fits
        with pytest.raises(ToolError):
            answer(fits + 1)
        assert len(answer(300, view=None).content[0].text) <= MAX_ANSWER_BYTES  # compact


def test_api_source_errors() -> None:
    with pytest.raises(ValueError, match="http"):
        ApiSource("ftp://example.com")
    with pytest.raises(SignalQueryError, match="cannot read the signal API") as ex:
        ApiSource("http://127.0.0.1:9", timeout_s=2).signal("BTC")
    assert ex.value.status == 502


def test_store_source_matches_the_rest_rules(store: SignalStore) -> None:
    api = TestClient(create_app(store))
    src = StoreSource(store)
    for name in ("BTC", "btc"):
        assert api.get(f"/v1/signal/{name}").json() == src.signal(name)
    for name in ("DOGE", "x" * 40, "a.b"):
        r = api.get(f"/v1/signal/{name}")
        with pytest.raises(SignalQueryError) as err:
            src.signal(name)
        assert r.status_code == err.value.status, (name, r.text)
        assert r.json()["detail"] == err.value.detail
        assert r.json().get("coins") == err.value.coins
    reversed_range = {"since_ms": 1767226000000, "until_ms": 1767225900000, "limit": 5}
    r = api.get("/v1/signal/BTC/history", params=reversed_range)
    with pytest.raises(SignalQueryError) as err:
        src.history("BTC", **reversed_range)
    assert (r.status_code, r.json()["detail"]) == (err.value.status, err.value.detail)
    assert r.status_code == 422
    empty = StoreSource(SignalStore(coins=["BTC"]))
    with pytest.raises(SignalQueryError, match="starting") as ex:
        empty.signal("BTC")
    assert ex.value.status == 503
