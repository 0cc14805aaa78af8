"""The OpenAPI document as a client generator or a person in ``/docs`` needs it.

FastAPI's generated document is adjusted once, on first request:

- with a token, a ``bearerAuth`` HTTP bearer scheme, required on every operation but the open
  paths (so the ``Authorize`` button of ``/docs`` works), and a documented 401;
- with rate limiting on, a documented 429 on every operation;
- 404 "unknown coin" only on operations that take a coin (`takes_coins`);
- the ``coin`` path parameter carries the pattern of a coin name.

``/docs`` and ``/redoc`` load Swagger UI and ReDoc from the installed ``fastapi-offline`` package
(no CDN), so they work on a machine with no internet.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.security import OPEN_PATHS
from flows.settings import COIN_PATTERN

DOCS_PATHS: Final = frozenset(
    {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/static-offline-docs"}
)
"""Paths the documentation needs without a token (the UI asks for it with ``Authorize``)."""
DOCS_PREFIX: Final = "/static-offline-docs/"

_ERROR: Final = {"$ref": "#/components/schemas/ErrorBody"}
_METHODS: Final = ("get", "put", "post", "delete", "patch", "options", "head")


def install(app: FastAPI, *, bearer: bool, rate_limited: bool) -> None:
    """Make ``app.openapi()`` return the adjusted document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        adjust(doc, bearer=bearer, rate_limited=rate_limited)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def takes_coins(path: str, op: dict[str, Any]) -> bool:
    """Whether an operation names coins (a ``{coin}`` path, or a ``coins`` query as
    ``/v1/stream``), so an unknown one is its 404."""
    return "{coin}" in path or any(p.get("name") == "coins" for p in op.get("parameters", []))


def adjust(doc: dict[str, Any], *, bearer: bool, rate_limited: bool) -> None:
    """Apply the module's rules to a generated OpenAPI document in place."""
    components = doc.setdefault("components", {})
    if bearer:
        components.setdefault("securitySchemes", {})["bearerAuth"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "the server's HLSL_API_TOKEN, sent as 'Authorization: Bearer <token>'",
        }
    for path, item in doc.get("paths", {}).items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            responses = op.setdefault("responses", {})
            if not takes_coins(path, op):
                responses.pop("404", None)
            if bearer and path not in OPEN_PATHS:
                op["security"] = [{"bearerAuth": []}]
                responses["401"] = _response("missing or wrong bearer token")
            if rate_limited:
                responses["429"] = _response(
                    "too many requests from this client; retry after the Retry-After header"
                )
            for param in op.get("parameters", []):
                if param.get("name") == "coin" and param.get("in") == "path":
                    param.setdefault("schema", {})["pattern"] = COIN_PATTERN


def _response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def is_docs_path(path: str) -> bool:
    """True for the documentation pages and their assets (open without a token)."""
    return path in DOCS_PATHS or path.startswith(DOCS_PREFIX)
