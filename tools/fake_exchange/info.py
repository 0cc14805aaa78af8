"""``POST /info``: the REST market-data requests, also answered over the WebSocket (``post``).

``Content-Type: application/json`` bodies of type ``meta``, ``metaAndAssetCtxs``, ``l2Book``,
``candleSnapshot`` (≤ 500 candles), ``allMids``, ``recentTrades`` and ``exchangeStatus``; GET →
405, other content type → 415, bad JSON → 400, unknown type or bad fields → 422 ``Failed to
deserialize the JSON body into the target type``, unknown ``l2Book`` coin → 200 ``null``, a
non-empty ``dex`` → 500 ``null``. Each request is charged to the client's weight budget
(`tools.fake_exchange.limits`); past it the answer is 429. WebSocket ``post`` requests are
answered from the same handlers and budget. ``meta`` lists first-dex perps only (no HIP-3 or spot
names), with ``szDecimals``/``maxLeverage`` from a small table or the sizes seen in the feed, and
an empty ``marginTables``.

Imports `tools.fake_exchange.feeds`, `.limits`, `.market`, `.protocol` and `.stats`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tools.fake_exchange.feeds import Universe
from tools.fake_exchange.limits import RATE_LIMITED, WeightBudget, info_weight
from tools.fake_exchange.market import Market, render_book
from tools.fake_exchange.protocol import (
    CANDLE_INTERVALS_MS,
    DEFAULT_MAX_LEVERAGE,
    DEFAULT_SZ_DECIMALS,
    KNOWN_MAX_LEVERAGE,
    KNOWN_SZ_DECIMALS,
    Sub,
    WsRequest,
    accepted,
    dumps,
    now_ms,
    opt_int,
)
from tools.fake_exchange.stats import ExchangeStats

RECENT_TRADES: Final = 10

# axum's JSON extractor rejections (the real /info is an axum server).
CONTENT_TYPE_ERROR: Final = "Expected request with `Content-Type: application/json`"
SYNTAX_ERROR: Final = "Failed to parse the request body as JSON"
DESERIALIZE_ERROR: Final = "Failed to deserialize the JSON body into the target type"


class InfoError(Exception):
    """A request answered with an error status (``body`` for JSON answers, else ``text``)."""

    def __init__(self, status: int, text: str, body: Any = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.body = body


def _bad_request() -> InfoError:
    return InfoError(422, DESERIALIZE_ERROR)


@dataclass(frozen=True)
class InfoResult:
    """An answer: ``value`` (JSON) for 200 and 500, ``text`` for the other statuses."""

    status: int
    value: Any = None
    text: str = ""


class InfoApi:
    """The ``/info`` handlers over the market state, with the per-client weight budget.

    Args:
        market: the state to answer from.
        universe: the coins listed.
        budget: the per-client weight budget.
        stats: the counters to update.
        now: the server loop's clock (s), for the budget's window.
    """

    def __init__(
        self,
        market: Market,
        universe: Universe,
        budget: WeightBudget,
        stats: ExchangeStats,
        now: Callable[[], float],
    ) -> None:
        self.market = market
        self.universe = universe
        self.budget = budget
        self.stats = stats
        self.now = now

    def request(self, payload: Any, client: str) -> InfoResult:
        """Answer one ``/info`` payload (REST or WS ``post``), charging the client's budget."""
        kind = payload.get("type") if type(payload) is dict else None
        handler = self._handlers.get(kind) if type(kind) is str else None
        if handler is None or type(kind) is not str:
            return InfoResult(422, text=DESERIALIZE_ERROR)
        weight = info_weight(kind)
        now = self.now()
        if not self.budget.allows(client, weight, now):
            self.stats.rate_limited += 1
            return InfoResult(429, text=RATE_LIMITED)
        try:
            value, extra = handler(self, payload)
        except InfoError as ex:
            return InfoResult(ex.status, value=ex.body, text=ex.text)
        self.budget.charge(client, weight + extra, now)
        requests = self.stats.info_requests
        requests[kind] = requests.get(kind, 0) + 1
        return InfoResult(200, value=value)

    def _meta(self) -> dict[str, Any]:
        universe: list[dict[str, Any]] = []
        sz_decimals = self.market.info.sz_decimals
        for coin in self.universe.coins:
            if ":" in coin or "/" in coin or coin.startswith(("@", "#")):
                continue  # HIP-3 and spot names are not first-dex perps
            entry: dict[str, Any] = {
                "name": coin,
                "szDecimals": KNOWN_SZ_DECIMALS.get(
                    coin, sz_decimals.get(coin, DEFAULT_SZ_DECIMALS)
                ),
                "maxLeverage": KNOWN_MAX_LEVERAGE.get(coin, DEFAULT_MAX_LEVERAGE),
            }
            if coin in self.universe.delisted:
                entry["isDelisted"] = True
            universe.append(entry)
        return {"universe": universe, "marginTables": [], "collateralToken": 0}

    @staticmethod
    def _check_dex(payload: dict[str, Any]) -> None:
        dex = payload.get("dex")
        if dex is not None and type(dex) is not str:
            raise _bad_request()
        if dex:
            raise InfoError(500, "null", None)

    def _info_meta(self, payload: dict[str, Any]) -> tuple[Any, int]:
        self._check_dex(payload)
        return self._meta(), 0

    def _info_meta_ctxs(self, payload: dict[str, Any]) -> tuple[Any, int]:
        self._check_dex(payload)
        meta = self._meta()
        ctxs: list[dict[str, Any]] = []
        for entry in meta["universe"]:
            coin = entry["name"]
            known = self.market.ctxs.get(coin)
            if known is not None:
                ctxs.append(known["ctx"])
                continue
            mid = self.market.mids().get(coin)
            ctxs.append(
                {
                    "funding": "0.0",
                    "openInterest": "0.0",
                    "prevDayPx": mid or "0.0",
                    "dayNtlVlm": "0.0",
                    "premium": None,
                    "oraclePx": mid or "0.0",
                    "markPx": mid or "0.0",
                    "midPx": mid,
                    "impactPxs": None,
                    "dayBaseVlm": "0.0",
                }
            )
        return [meta, ctxs], 0

    def _info_l2book(self, payload: dict[str, Any]) -> tuple[Any, int]:
        coin = payload.get("coin")
        ok_sig, n_sig = opt_int(payload.get("nSigFigs"))
        ok_man, mantissa = opt_int(payload.get("mantissa"))
        if type(coin) is not str or not (ok_sig and ok_man):
            raise _bad_request()
        if coin not in self.universe.valid:
            return None, 0
        sub = Sub("l2Book", coin, n_sig_figs=n_sig, mantissa=mantissa)
        if not accepted(sub, self.universe.valid):
            raise _bad_request()
        book = self.market.books.get(coin) or self.market.empty_book(coin)
        return orjson.loads(render_book(book, sub))["data"], 0

    def _info_candles(self, payload: dict[str, Any]) -> tuple[Any, int]:
        req = payload.get("req")
        if type(req) is not dict:
            raise _bad_request()
        coin = req.get("coin")
        interval = req.get("interval")
        start = req.get("startTime")
        end = req.get("endTime")
        if (
            type(coin) is not str
            or type(interval) is not str
            or interval not in CANDLE_INTERVALS_MS
            or type(start) is not int
            or (end is not None and type(end) is not int)
        ):
            raise _bad_request()
        series = self.market.candles.series.get((coin, interval))
        if series is None:
            return [], 0
        stop = end if end is not None else now_ms()
        candles = [c.wire(coin, interval) for c in series.between(start, stop)]
        return candles, len(candles) // 60

    def _info_mids(self, payload: dict[str, Any]) -> tuple[Any, int]:
        self._check_dex(payload)
        return self.market.mids(), 0

    def _info_recent_trades(self, payload: dict[str, Any]) -> tuple[Any, int]:
        coin = payload.get("coin")
        if type(coin) is not str:
            raise _bad_request()
        trades = list(self.market.history.get(coin, ()))[-RECENT_TRADES:]
        return trades, len(trades) // 20

    def _info_status(self, payload: dict[str, Any]) -> tuple[Any, int]:
        return {"specialStatuses": None, "time": now_ms()}, 0

    _handlers: Final[dict[str, Callable[[InfoApi, dict[str, Any]], tuple[Any, int]]]] = {
        "meta": _info_meta,
        "metaAndAssetCtxs": _info_meta_ctxs,
        "l2Book": _info_l2book,
        "candleSnapshot": _info_candles,
        "allMids": _info_mids,
        "recentTrades": _info_recent_trades,
        "exchangeStatus": _info_status,
    }

    async def serve(self, request: Request) -> Response:
        """Answer one HTTP ``POST /info``."""
        content_type = request.headers.get("content-type", "")
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            return Response(CONTENT_TYPE_ERROR, 415, media_type="text/plain; charset=utf-8")
        body = await request.body()
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as ex:
            text = f"{SYNTAX_ERROR}: {ex}"
            return Response(text, 400, media_type="text/plain; charset=utf-8")
        client = request.client.host if request.client is not None else ""
        result = self.request(payload, client)
        if result.status in (200, 500):
            return Response(
                orjson.dumps(result.value), result.status, media_type="application/json"
            )
        return Response(result.text, result.status, media_type="text/plain; charset=utf-8")

    def post(self, request: WsRequest, client: str) -> str:
        """The ``post`` frame answering a WebSocket ``post`` request of ``client``."""
        result = self.request(request.payload, client)
        if result.status == 200:
            response: dict[str, Any] = {
                "type": "info",
                "payload": {"type": request.payload.get("type"), "data": result.value},
            }
        else:
            response = {"type": "error", "payload": result.text}
        frame = {"channel": "post", "data": {"id": request.post_id, "response": response}}
        return dumps(frame)
