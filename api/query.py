"""Strict query strings: a parameter a route does not take, or one given twice, is a 422.

Without this, a misspelt parameter is silently ignored and the answer is wrong without a word:
``/v1/signal/BTC/history?until=…`` returned envelopes after the asked bound (the route takes
``until_ms``), ``/v1/stream?coin=BTC`` streamed every coin (it takes ``coins``), and
``limit=2&limit=3`` used the last value. The names a route takes are read off the route itself
(its declared query parameters and those its OpenAPI ``parameters`` document), so they cannot
drift from what it reads.

`strict_query` is the dependency the ``/v1`` routes declare; the hot route
``GET /v1/signal/{coin}`` reads its query by hand and calls `check_query` the same way.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, Final

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.signals import ApiError

MAX_NAME_CHARS: Final = 40
"""Longest parameter name quoted back in an error."""

_CACHE: Final = "_hlsl_query_names"
"""The attribute a route keeps its names in, once read (routes are unhashable)."""


def route_query_names(route: APIRoute) -> frozenset[str]:
    """The query parameters ``route`` takes: declared ones and those its OpenAPI documents."""
    names: set[str] = set()
    todo: list[Dependant] = [route.dependant]
    while todo:  # the route's own parameters and its dependencies' (e.g. a shared ViewQuery)
        dep = todo.pop()
        names.update(p.alias for p in dep.query_params)
        todo.extend(dep.dependencies)
    extra: Any = (route.openapi_extra or {}).get("parameters", ())
    names.update(p["name"] for p in extra if p.get("in") == "query")
    return frozenset(names)


def check_query(items: Iterable[tuple[str, str]], allowed: frozenset[str]) -> None:
    """Raise `ApiError` 422 for a parameter not in ``allowed`` or one given more than once."""
    seen: set[str] = set()
    for name, _value in items:
        if name not in allowed:
            shown = name[:MAX_NAME_CHARS]
            takes = ", ".join(sorted(allowed)) or "none"
            close = difflib.get_close_matches(name, sorted(allowed), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            msg = f"{shown!r}: not a query parameter of this endpoint (it takes: {takes}){hint}"
            raise ApiError(422, msg)
        if name in seen:
            hint = " (list several coins comma-separated)" if name == "coins" else ""
            raise ApiError(422, f"{name}: given more than once{hint}")
        seen.add(name)


def strict_query(request: Request) -> None:
    """FastAPI dependency: refuse query parameters the matched route does not take."""
    if not request.scope["query_string"]:
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):  # pragma: no cover - only declared on APIRoutes
        return
    allowed: frozenset[str] | None = getattr(route, _CACHE, None)
    if allowed is None:
        allowed = route_query_names(route)
        setattr(route, _CACHE, allowed)
    check_query(request.query_params.multi_items(), allowed)


__all__ = ["MAX_NAME_CHARS", "check_query", "route_query_names", "strict_query"]
