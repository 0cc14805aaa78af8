"""``GET /v1/signal/{coin}/explain``: the MCP tool ``explain_regime``'s document over REST.

On a replay of ``data/sample.ndjson.gz`` the route answers exactly what the tool answers for the
same coin (structured content, and the JSON text byte for byte); its errors are those of
``GET /v1/signal/{coin}`` (404 unknown coin, 422 not a coin name, 503 no signal yet); OpenAPI
lists it with the `RegimeExplanation` schema.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from mcp.shared.memory import create_connected_server_and_client_session
from mcp.types import CallToolResult, TextContent

from api.app import create_app
from api.mcp import RegimeExplanation, StoreSource, build_server, explain_envelope
from api.signals import refresh
from connectors.store import RunState, SignalStore

PATH = "/v1/signal/{coin}/explain"


@pytest.fixture(scope="module")
def client(sample_store: SignalStore) -> TestClient:
    return TestClient(create_app(sample_store, token=None, rate_limit_per_s=0))


def _mcp_explain(store: SignalStore, coins: list[str]) -> dict[str, CallToolResult]:
    """``explain_regime`` for each coin, through an MCP client session (in memory)."""
    server = build_server(StoreSource(store))
    out: dict[str, CallToolResult] = {}

    async def run() -> None:
        async with create_connected_server_and_client_session(server) as session:
            await session.initialize()
            for coin in coins:
                out[coin] = await session.call_tool("explain_regime", {"coin": coin})

    anyio.run(run)
    return out


def test_rest_answers_what_the_mcp_tool_answers(
    sample_store: SignalStore, client: TestClient
) -> None:
    coins = [*sample_store.coins(), "btc", "Eth"]
    assert sample_store.coins() == ["BTC", "ETH", "SOL"]
    for coin, result in _mcp_explain(sample_store, coins).items():
        assert not result.isError, result.content
        r = client.get(f"/v1/signal/{coin}/explain")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.json() == result.structuredContent, coin
        text = result.content[0]
        assert isinstance(text, TextContent)
        assert r.text == text.text, coin  # the same bytes
        body = RegimeExplanation.model_validate(r.json())
        assert body.coin == coin.upper()


def test_the_explanation_is_of_the_envelope_served_now(
    sample_store: SignalStore, client: TestClient
) -> None:
    env = sample_store.latest("SOL")
    assert env is not None
    served = client.get("/v1/signal/SOL").json()
    assert served == refresh(env, sample_store.now_ms())
    body = client.get("/v1/signal/sol/explain").json()
    assert body == explain_envelope(served).model_dump(mode="json")
    assert (body["label"], body["rule"], body["margin"]) == (
        env["regime"]["label"],
        env["regime"]["rule"],
        env["regime"]["margin"],
    )
    assert body["freshness_status"] == served["freshness"]["status"]


def _same_error_as_the_signal_route(client: TestClient, coin: str, status: int) -> Any:
    explained = client.get(f"/v1/signal/{coin}/explain")
    signal = client.get(f"/v1/signal/{coin}")
    assert explained.status_code == status, explained.text
    assert signal.status_code == status, signal.text
    assert explained.json() == signal.json()
    return explained.json()


def test_unknown_coin_is_404_naming_the_coins(client: TestClient) -> None:
    body = _same_error_as_the_signal_route(client, "DOGE", 404)
    assert body == {"detail": "unknown coin 'DOGE'", "coins": ["BTC", "ETH", "SOL"]}


def test_a_string_that_is_not_a_coin_name_is_422(client: TestClient) -> None:
    for name in ("not a coin", "x" * 40, "BTC%24"):
        body = _same_error_as_the_signal_route(client, name, 422)
        assert "is not a coin name" in body["detail"], body


def test_before_any_signal_it_is_503_with_the_reason() -> None:
    store = SignalStore(coins=("BTC",))
    store.state = RunState.RUNNING
    client = TestClient(create_app(store, token=None, rate_limit_per_s=0))
    body = _same_error_as_the_signal_route(client, "btc", 503)
    assert body == {
        "detail": "no bar of BTC has closed yet (first signal after the first bar plus lateness)"
    }
    store.state = RunState.STARTING
    assert _same_error_as_the_signal_route(client, "BTC", 503) == {
        "detail": "the signal flow is starting"
    }


def test_openapi_lists_the_route_with_the_explanation_schema(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    op = doc["paths"][PATH]["get"]
    sibling = doc["paths"]["/v1/signal/{coin}"]["get"]
    assert op["tags"] == sibling["tags"] == ["signals"]
    assert op["summary"] == "Why a coin's regime is what it is"
    assert "explain_regime" in op["description"]
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/RegimeExplanation"}
    for status in ("404", "422", "503"):
        assert op["responses"][status] == sibling["responses"][status], status
    [param] = op["parameters"]
    [coin] = [p for p in sibling["parameters"] if p["name"] == "coin"]
    assert param == coin
    schema = doc["components"]["schemas"]["RegimeExplanation"]
    assert set(schema["properties"]) == set(RegimeExplanation.model_fields)
    assert set(schema["required"]) == set(RegimeExplanation.model_fields)
