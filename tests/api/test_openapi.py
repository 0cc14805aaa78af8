"""The OpenAPI document and the docs pages: usable offline and with a token (issue #10)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from api.app import create_app
from connectors.store import SignalStore
from flows.settings import COIN_PATTERN

TOKEN = "s3cret-token"


def _ops(doc: dict) -> list[tuple[str, str, dict]]:  # type: ignore[type-arg]
    return [(p, m, op) for p, item in doc["paths"].items() for m, op in item.items()]


def test_docs_pages_load_their_assets_from_this_server_not_a_cdn() -> None:
    client = TestClient(create_app(SignalStore(), token=None))
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
        assert urls, page
        for url in urls:
            assert not url.startswith(("http://", "https://", "//")), (page, url)
            if url.endswith((".js", ".css")):
                asset = client.get(url)
                assert asset.status_code == 200, url
                assert len(asset.content) > 10_000, url


def test_with_a_token_the_docs_open_and_every_other_route_declares_bearer_auth() -> None:
    client = TestClient(create_app(SignalStore(), token=TOKEN, rate_limit_per_s=0))
    assert client.get("/docs").status_code == 200
    assert client.get("/static-offline-docs/swagger-ui.css").status_code == 200
    assert client.get("/v1/signals").status_code == 401
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    for path, method, op in _ops(doc):
        if path in ("/health", "/"):
            assert "security" not in op, path
            assert "401" not in op["responses"], path
        else:
            assert op["security"] == [{"bearerAuth": []}], (method, path)
            assert "401" in op["responses"], (method, path)
        assert "429" not in op["responses"]  # rate limiting is off here


def test_without_a_token_no_security_is_declared_and_429_follows_the_rate_limit() -> None:
    doc = TestClient(create_app(SignalStore(), token=None, rate_limit_per_s=5)).get("/openapi.json")
    doc_json = doc.json()
    assert "securitySchemes" not in doc_json.get("components", {})
    for path, method, op in _ops(doc_json):
        assert "security" not in op, path
        assert "429" in op["responses"], (method, path)


def test_404_only_where_there_is_a_coin_and_the_coin_has_its_pattern() -> None:
    doc = TestClient(create_app(SignalStore(), token=None)).get("/openapi.json").json()
    coin_routes = 0
    for path, method, op in _ops(doc):
        names = {p["name"] for p in op.get("parameters", [])}
        has_coin = "{coin}" in path or "coins" in names  # /v1/stream?coins=DOGE is a 404 too
        assert ("404" in op["responses"]) == has_coin, (method, path)
        for param in op.get("parameters", []):
            if param["name"] == "coin":
                coin_routes += 1
                assert param["schema"]["pattern"] == COIN_PATTERN
    assert coin_routes >= 2
    assert "404" in doc["paths"]["/v1/stream"]["get"]["responses"]


def test_a_wrong_method_is_405_with_allow() -> None:
    client = TestClient(create_app(SignalStore(), token=None))
    r = client.post("/v1/signals")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"
    assert client.post("/v1/stream").headers["allow"] == "GET"  # a stream is not run for HEAD
    assert r.json() == {"detail": "Method Not Allowed"}
