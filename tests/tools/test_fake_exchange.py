"""Tests for the local fake Hyperliquid exchange (`tools.fake_exchange`).

Expected wire behaviour is written out from the exchange reference
(``../shared/reference/hyperliquid-api.md`` §0–§4) and the real captured frames, independently of
the module's own constants. Every network wait is bounded by a timeout.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tools.fake_exchange import (
    CaptureFeed,
    FakeExchange,
    Faults,
    Injection,
    ListFeed,
    SimFeed,
    build_parser,
    exchange_from_args,
    load_injections,
    main,
)
from tools.simulate import SimConfig

REPO = Path(__file__).resolve().parents[2]
REAL = REPO.parent / "shared" / "data" / "real"
SIM = SimConfig(coins=("BTC", "ETH", "SOL"), seconds=120, seed=7, book_interval_ms=250)
PARSE_PREFIX = "Error parsing JSON into valid websocket request: "
DESERIALIZE = "Failed to deserialize the JSON body into the target type"
DATA_CHANNELS = {"trades", "l2Book", "bbo", "candle", "activeAssetCtx", "allMids"}

Frame = dict[str, Any]


# ----- helpers -----------------------------------------------------------------------------------


def ws_connect(ex: FakeExchange) -> ClientConnection:
    return connect(ex.ws_url, open_timeout=3, close_timeout=1)


def send(ws: ClientConnection, method: str, **subscription: Any) -> None:
    ws.send(json.dumps({"method": method, "subscription": subscription}))


def recv(ws: ClientConnection, timeout: float = 3.0) -> Any:
    """The next message, decoded (a dict, or the raw text when it is not JSON)."""
    text = ws.recv(timeout=timeout)
    assert isinstance(text, str)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def recv_until(ws: ClientConnection, pred: Callable[[Any], bool], timeout: float = 3.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail("expected message not received in time")
        msg = recv(ws, remaining)
        if pred(msg):
            return msg


def collect(ws: ClientConnection, seconds: float) -> list[Any]:
    """Every message received during ``seconds``."""
    out: list[Any] = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            out.append(recv(ws, remaining))
        except TimeoutError:
            break
    return out


def read_until_closed(ws: ClientConnection, timeout: float = 3.0) -> tuple[list[Any], Any]:
    """Messages until the server closes the socket, and the close exception."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail("the server did not close the socket in time")
        try:
            out.append(recv(ws, remaining))
        except ConnectionClosed as ex:
            return out, ex
        except TimeoutError:
            pytest.fail("the server did not close the socket in time")


def is_channel(*channels: str) -> Callable[[Any], bool]:
    return lambda m: isinstance(m, dict) and m.get("channel") in channels


def ack_of(msg: Any) -> Frame:
    assert msg["channel"] == "subscriptionResponse", msg
    sub: Frame = msg["data"]["subscription"]
    return sub


def coin_of(msg: Frame) -> str:
    data = msg["data"]
    if msg["channel"] == "trades":
        return str(data[0]["coin"])
    if msg["channel"] == "candle":
        return str(data["s"])
    return str(data.get("coin", ""))


def post_info(
    url: str,
    body: bytes | Any,
    *,
    content_type: str = "application/json",
    method: str = "POST",
) -> tuple[int, bytes, str]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=3) as resp:
            return resp.status, resp.read(), resp.headers.get("content-type", "")
    except urllib.error.HTTPError as ex:
        with ex:
            return ex.code, ex.read(), ex.headers.get("content-type", "")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture(scope="module")
def exchange() -> Iterator[FakeExchange]:
    """A shared exchange on the simulator (no faults; tests must not change its state)."""
    with FakeExchange(
        SimFeed(SIM), loop_feed=True, extra_coins=("DOGE",), delisted=("MATIC",)
    ) as ex:
        yield ex


@pytest.fixture
def make_exchange() -> Iterator[Callable[..., FakeExchange]]:
    """Start private exchanges (for faults and limits); all are stopped at the end."""
    started: list[FakeExchange] = []

    def make(**kwargs: Any) -> FakeExchange:
        ex = FakeExchange(kwargs.pop("feed", None) or SimFeed(SIM), **kwargs)
        ex.start()
        started.append(ex)
        return ex

    yield make
    for ex in started:
        ex.stop()


# ----- lifecycle ---------------------------------------------------------------------------------


def test_port_zero_picks_a_free_port_and_stop_is_prompt() -> None:
    ex = FakeExchange(SimFeed(SIM))
    ex.start()
    try:
        assert ex.port > 0
        assert ex.ws_url == f"ws://127.0.0.1:{ex.port}/ws"
        assert ex.info_url == f"http://127.0.0.1:{ex.port}/info"
        with ws_connect(ex) as ws:
            send(ws, "subscribe", type="bbo", coin="BTC")
            assert ack_of(recv(ws)) == {"type": "bbo", "coin": "BTC"}
            t0 = time.monotonic()
            ex.stop()
            elapsed = time.monotonic() - t0
            read_until_closed(ws, 2.0)  # stopping drops the clients
    finally:
        ex.stop()  # idempotent
    assert elapsed < 2.0
    with pytest.raises(RuntimeError):
        ex.start()


def test_greeting_is_sent_first_when_enabled(make_exchange: Callable[..., FakeExchange]) -> None:
    ex = make_exchange(greeting=True)
    with ws_connect(ex) as ws:
        assert ws.recv(timeout=2) == "Websocket connection established."


# ----- WebSocket protocol ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subscription", "echo"),
    [
        (
            {"type": "l2Book", "coin": "BTC"},
            {"type": "l2Book", "coin": "BTC", "nSigFigs": None, "mantissa": None, "fast": False},
        ),
        (
            {"type": "l2Book", "coin": "BTC", "fast": True},
            {"type": "l2Book", "coin": "BTC", "nSigFigs": None, "mantissa": None, "fast": True},
        ),
        (
            {"type": "l2Book", "coin": "ETH", "nSigFigs": 5, "mantissa": 2},
            {"type": "l2Book", "coin": "ETH", "nSigFigs": 5, "mantissa": 2, "fast": False},
        ),
        ({"type": "trades", "coin": "SOL"}, {"type": "trades", "coin": "SOL"}),
        ({"type": "bbo", "coin": "BTC"}, {"type": "bbo", "coin": "BTC"}),
        (
            {"type": "candle", "coin": "BTC", "interval": "1m"},
            {"type": "candle", "coin": "BTC", "interval": "1m"},
        ),
        ({"type": "activeAssetCtx", "coin": "ETH"}, {"type": "activeAssetCtx", "coin": "ETH"}),
        ({"type": "allMids"}, {"type": "allMids"}),
    ],
)
def test_ack_echoes_subscription_with_defaults(
    exchange: FakeExchange, subscription: Frame, echo: Frame
) -> None:
    with ws_connect(exchange) as ws:
        ws.send(json.dumps({"method": "subscribe", "subscription": subscription}))
        first = recv(ws)
        assert first == {
            "channel": "subscriptionResponse",
            "data": {"method": "subscribe", "subscription": echo},
        }
        # The subscribed stream follows (a snapshot right after the ack).
        data = recv_until(ws, is_channel(*DATA_CHANNELS))
        assert data["channel"] == subscription["type"]


def test_ping_gets_pong(exchange: FakeExchange) -> None:
    with ws_connect(exchange) as ws:
        ws.send('{"method":"ping"}')
        assert ws.recv(timeout=2) == '{"channel":"pong"}'


def test_trades_subscribe_replays_last_30_trades_each_time(exchange: FakeExchange) -> None:
    with ws_connect(exchange) as ws:
        for _ in range(2):
            send(ws, "subscribe", type="trades", coin="BTC")
            assert ack_of(recv(ws)) == {"type": "trades", "coin": "BTC"}
            replay = recv(ws)
            assert replay["channel"] == "trades"
            trades = replay["data"]
            assert len(trades) == 30
            assert {t["coin"] for t in trades} == {"BTC"}
            times = [t["time"] for t in trades]
            assert times == sorted(times)  # oldest first
            assert times[-1] <= now_ms()
            for t in trades:
                assert isinstance(t["px"], str)
                assert isinstance(t["sz"], str)
                assert t["side"] in ("A", "B")
                assert isinstance(t["tid"], int)
                assert len(t["users"]) == 2
            send(ws, "unsubscribe", type="trades", coin="BTC")
            unsub = recv_until(ws, is_channel("subscriptionResponse"))
            assert unsub["data"] == {
                "method": "unsubscribe",
                "subscription": {"type": "trades", "coin": "BTC"},
            }


def test_only_subscribed_streams_are_sent(exchange: FakeExchange) -> None:
    with ws_connect(exchange) as ws:
        send(ws, "subscribe", type="bbo", coin="BTC")
        send(ws, "subscribe", type="l2Book", coin="ETH")
        msgs = collect(ws, 1.5)
        data = [m for m in msgs if is_channel(*DATA_CHANNELS)(m)]
        streams = {(m["channel"], coin_of(m)) for m in data}
        assert streams == {("bbo", "BTC"), ("l2Book", "ETH")}
        assert all(m["channel"] in DATA_CHANNELS | {"subscriptionResponse"} for m in msgs)

        send(ws, "unsubscribe", type="bbo", coin="BTC")
        recv_until(ws, lambda m: m.get("data", {}).get("method") == "unsubscribe")
        later = collect(ws, 0.8)
        assert later, "l2Book ETH should go on"
        assert {(m["channel"], coin_of(m)) for m in later} == {("l2Book", "ETH")}


def test_times_are_restamped_near_now(exchange: FakeExchange) -> None:
    with ws_connect(exchange) as ws:
        for kind in ("bbo", "l2Book", "trades"):
            send(ws, "subscribe", type=kind, coin="BTC")
        send(ws, "subscribe", type="candle", coin="BTC", interval="1m")
        msgs = collect(ws, 1.5)
    now = now_ms()
    seen: set[str] = set()
    replay_skipped = False
    for m in msgs:
        channel = m["channel"]
        if channel in ("bbo", "l2Book"):
            assert now - 5_000 < m["data"]["time"] <= now + 50, m
        elif channel == "trades":
            if not replay_skipped:  # the 30-trade replay reaches tens of seconds back
                replay_skipped = True
                assert now - 120_000 < m["data"][0]["time"] <= now
                continue
            for t in m["data"]:
                assert now - 5_000 < t["time"] <= now + 50, t
        elif channel == "candle":
            c = m["data"]
            assert c["t"] % 60_000 == 0
            assert c["T"] == c["t"] + 59_999
            assert now - 180_000 < c["t"] <= now
            assert c["s"] == "BTC"
            assert c["i"] == "1m"
            assert all(isinstance(c[k], str) for k in "ohlcv")
            assert isinstance(c["n"], int)
        seen.add(channel)
    assert {"bbo", "l2Book", "trades", "candle"} <= seen


def test_l2book_depth_fast_and_aggregation(exchange: FakeExchange) -> None:
    with ws_connect(exchange) as ws:
        send(ws, "subscribe", type="l2Book", coin="BTC")
        recv(ws)
        book = recv(ws)["data"]
        bids, asks = book["levels"]
        assert len(bids) == 20
        assert len(asks) == 20
        assert "fast" not in book
        bid_px = [Decimal(x["px"]) for x in bids]
        ask_px = [Decimal(x["px"]) for x in asks]
        assert bid_px == sorted(bid_px, reverse=True)
        assert ask_px == sorted(ask_px)
        assert bid_px[0] < ask_px[0]

    with ws_connect(exchange) as ws:
        send(ws, "subscribe", type="l2Book", coin="BTC", fast=True)
        recv(ws)
        fast = recv(ws)["data"]
        assert [len(side) for side in fast["levels"]] == [5, 5]
        assert fast["fast"] is True

    with ws_connect(exchange) as ws:
        send(ws, "subscribe", type="l2Book", coin="BTC", nSigFigs=3)
        recv(ws)
        agg = recv(ws)["data"]
        top = Decimal(agg["levels"][0][0]["px"])
        step = Decimal(10) ** (top.adjusted() - 2)  # 3 significant figures
        for side in agg["levels"]:
            assert side
            for level in side:
                assert Decimal(level["px"]) % step == 0


@pytest.mark.parametrize(
    "subscription",
    [
        {"type": "trades", "coin": "btc"},  # mis-cased
        {"type": "l2Book", "coin": "NOPE"},
        {"type": "bbo", "coin": "SP500"},
        {"type": "l2Book", "coin": "BTC", "nSigFigs": 6},
        {"type": "l2Book", "coin": "BTC", "nSigFigs": 4, "mantissa": 2},
    ],
)
def test_unknown_coin_or_bad_params_drop_the_socket(
    exchange: FakeExchange, subscription: Frame
) -> None:
    with ws_connect(exchange) as ws:
        send(ws, "subscribe", type="bbo", coin="BTC")
        assert ack_of(recv(ws)) == {"type": "bbo", "coin": "BTC"}
        ws.send(json.dumps({"method": "subscribe", "subscription": subscription}))
        msgs, closed = read_until_closed(ws, 2.0)
    assert closed.rcvd is None  # no close frame: the client sees 1006
    assert all(m["channel"] == "bbo" for m in msgs), msgs  # no error, no ack


@pytest.mark.parametrize(
    "request_text",
    [
        "not json",
        "[1, 2]",
        '{"method":"nope"}',
        '{"method":"subscribe"}',
        '{"method":"subscribe","subscription":{"type":"nope","coin":"BTC"}}',
        '{"method":"subscribe","subscription":{"type":"bbo","coin":["BTC","ETH"]}}',
        '{"method":"subscribe","subscription":{"type":"candle","coin":"BTC","interval":"7m"}}',
        '{"method":"subscribe","subscription":{"type":"webData2","user":"0x0"}}',
    ],
)
def test_bad_requests_get_an_error_frame_and_the_socket_stays_open(
    exchange: FakeExchange, request_text: str
) -> None:
    with ws_connect(exchange) as ws:
        ws.send(request_text)
        assert recv(ws) == {"channel": "error", "data": PARSE_PREFIX + request_text}
        ws.send('{"method":"ping"}')
        assert recv(ws) == {"channel": "pong"}


def test_double_subscribe_and_unsubscribe_errors(exchange: FakeExchange) -> None:
    with ws_connect(exchange) as ws:
        send(ws, "subscribe", type="l2Book", coin="SOL", nSigFigs=None, mantissa=None)
        recv_until(ws, is_channel("subscriptionResponse"))
        send(ws, "subscribe", type="l2Book", coin="SOL")
        err = recv_until(ws, is_channel("error", "subscriptionResponse"))
        # Verbatim from a real capture (2026-09-24).
        assert err == {
            "channel": "error",
            "data": 'Already subscribed: {"type":"l2Book","coin":"SOL",'
            '"nSigFigs":null,"mantissa":null,"fast":false}',
        }
        send(ws, "unsubscribe", type="trades", coin="ETH")
        err = recv_until(ws, is_channel("error", "subscriptionResponse"))
        assert err == {
            "channel": "error",
            "data": 'Already unsubscribed: {"type":"trades","coin":"ETH"}',
        }
        # A loose unsubscribe matches the normalized subscription.
        send(ws, "unsubscribe", type="l2Book", coin="SOL")
        ack = recv_until(ws, is_channel("error", "subscriptionResponse"))
        assert ack["data"] == {
            "method": "unsubscribe",
            "subscription": {
                "type": "l2Book",
                "coin": "SOL",
                "nSigFigs": None,
                "mantissa": None,
                "fast": False,
            },
        }
        ws.send('{"method":"ping"}')
        assert recv_until(ws, is_channel("pong")) == {"channel": "pong"}


def test_delisted_and_extra_coins_stream_empty_books(exchange: FakeExchange) -> None:
    with ws_connect(exchange) as ws:
        send(ws, "subscribe", type="l2Book", coin="MATIC")
        recv(ws)
        book = recv(ws)
        assert book["channel"] == "l2Book"
        assert book["data"]["coin"] == "MATIC"
        assert book["data"]["levels"] == [[], []]
        send(ws, "subscribe", type="bbo", coin="DOGE")
        bbo = recv_until(ws, is_channel("bbo"))
        assert bbo["data"]["coin"] == "DOGE"
        assert bbo["data"]["bbo"] == [None, None]
        # Empty books follow the feed's push clock.
        again = recv_until(ws, is_channel("l2Book"))
        assert again["data"]["levels"] == [[], []]
        assert again["data"]["time"] > book["data"]["time"]


def test_post_request_over_websocket(exchange: FakeExchange) -> None:
    with ws_connect(exchange) as ws:
        ws.send(
            '{"method":"post","id":7,"request":{"type":"info",'
            '"payload":{"type":"l2Book","coin":"NOPE"}}}'
        )
        # Verbatim from a real capture (2026-09-24).
        assert recv(ws) == {
            "channel": "post",
            "data": {
                "id": 7,
                "response": {"type": "info", "payload": {"type": "l2Book", "data": None}},
            },
        }
        ws.send('{"method":"post","id":8,"request":{"type":"info","payload":{"type":"meta"}}}')
        reply = recv(ws)["data"]
        assert reply["id"] == 8
        assert reply["response"]["payload"]["data"]["universe"][0]["name"] == "BTC"


def test_other_channels_have_the_wire_shapes(exchange: FakeExchange) -> None:
    with ws_connect(exchange) as ws:
        send(ws, "subscribe", type="activeAssetCtx", coin="BTC")
        send(ws, "subscribe", type="allMids")
        msgs = collect(ws, 1.2)
    ctx = next(m for m in msgs if m["channel"] == "activeAssetCtx")
    assert ctx["data"]["coin"] == "BTC"
    assert isinstance(ctx["data"]["ctx"]["funding"], str)
    assert isinstance(ctx["data"]["ctx"]["markPx"], str)
    mids = next(m for m in msgs if m["channel"] == "allMids")["data"]["mids"]
    assert {"BTC", "ETH", "SOL"} <= set(mids)
    assert all(isinstance(v, str) for v in mids.values())


# ----- POST /info --------------------------------------------------------------------------------


def test_info_meta(exchange: FakeExchange) -> None:
    status, body, ctype = post_info(exchange.info_url, {"type": "meta"})
    assert status == 200
    assert ctype.startswith("application/json")
    meta = orjson.loads(body)
    assert meta["marginTables"] == []
    assert meta["collateralToken"] == 0
    universe = {u["name"]: u for u in meta["universe"]}
    assert list(universe)[:3] == ["BTC", "ETH", "SOL"]
    assert universe["BTC"] == {"name": "BTC", "szDecimals": 5, "maxLeverage": 50}
    assert universe["ETH"]["szDecimals"] == 4
    assert universe["SOL"]["szDecimals"] == 2
    assert universe["MATIC"]["isDelisted"] is True
    assert "isDelisted" not in universe["DOGE"]


def test_info_l2book(exchange: FakeExchange) -> None:
    status, body, _ = post_info(exchange.info_url, {"type": "l2Book", "coin": "BTC"})
    assert status == 200
    book = orjson.loads(body)
    assert set(book) == {"coin", "time", "levels"}
    assert book["coin"] == "BTC"
    assert [len(side) for side in book["levels"]] == [20, 20]
    assert abs(book["time"] - now_ms()) < 5_000
    for coin in ("NOPE", "btc"):
        status, body, _ = post_info(exchange.info_url, {"type": "l2Book", "coin": coin})
        assert (status, body) == (200, b"null")


def test_info_candle_snapshot(exchange: FakeExchange) -> None:
    now = now_ms()
    req = {"coin": "BTC", "interval": "1m", "startTime": now - 3_600_000, "endTime": now}
    status, body, _ = post_info(exchange.info_url, {"type": "candleSnapshot", "req": req})
    assert status == 200
    candles = orjson.loads(body)
    assert 1 <= len(candles) <= 500
    starts = [c["t"] for c in candles]
    assert starts == sorted(starts)
    assert len(set(starts)) == len(starts)
    for c in candles:
        assert c["T"] == c["t"] + 59_999
        assert c["s"] == "BTC"
        assert c["i"] == "1m"
        assert all(isinstance(c[k], str) for k in "ohlcv")
        assert Decimal(c["l"]) <= min(Decimal(c["o"]), Decimal(c["c"])) <= Decimal(c["h"])
    assert candles[-1]["T"] >= now - 60_000  # the last one is (or was just) open

    req = {"coin": "BTC", "interval": "5m", "startTime": now + 3_600_000, "endTime": now + 7e6}
    status, body, _ = post_info(exchange.info_url, {"type": "candleSnapshot", "req": req})
    assert status == 422  # endTime must be an integer
    req["endTime"] = now + 7_200_000
    status, body, _ = post_info(exchange.info_url, {"type": "candleSnapshot", "req": req})
    assert (status, orjson.loads(body)) == (200, [])
    status, body, _ = post_info(exchange.info_url, {"type": "candleSnapshot"})
    assert (status, body.decode()) == (422, DESERIALIZE)


def test_info_all_mids(exchange: FakeExchange) -> None:
    status, body, _ = post_info(exchange.info_url, {"type": "allMids"})
    assert status == 200
    mids = orjson.loads(body)
    assert {"BTC", "ETH", "SOL"} <= set(mids)
    assert all(isinstance(v, str) and Decimal(v) > 0 for v in mids.values())


def test_info_errors(exchange: FakeExchange) -> None:
    url = exchange.info_url
    assert post_info(url, b"", method="GET")[0] == 405
    assert post_info(url, {"type": "meta"}, content_type="text/plain")[0] == 415
    assert post_info(url, b"{not json")[0] == 400
    status, body, _ = post_info(url, {"type": "nope"})
    assert (status, body.decode()) == (422, DESERIALIZE)
    status, body, _ = post_info(url, {"type": "l2Book"})
    assert (status, body.decode()) == (422, DESERIALIZE)


def test_info_weight_budget_answers_429(make_exchange: Callable[..., FakeExchange]) -> None:
    ex = make_exchange(rest_weight_per_min=45)
    assert post_info(ex.info_url, {"type": "meta"})[0] == 200  # 20
    assert post_info(ex.info_url, {"type": "meta"})[0] == 200  # 40
    assert post_info(ex.info_url, {"type": "meta"})[0] == 429  # 60 > 45
    assert post_info(ex.info_url, {"type": "allMids"})[0] == 200  # 42
    assert post_info(ex.info_url, {"type": "l2Book", "coin": "BTC"})[0] == 200  # 44
    assert post_info(ex.info_url, {"type": "l2Book", "coin": "BTC"})[0] == 429
    stats = ex.stats
    assert stats.rate_limited == 2
    assert stats.info_requests == {"meta": 2, "allMids": 1, "l2Book": 1}


# ----- faults ------------------------------------------------------------------------------------


def test_drop_all_closes_every_client(make_exchange: Callable[..., FakeExchange]) -> None:
    ex = make_exchange()
    with ws_connect(ex) as a, ws_connect(ex) as b:
        for ws in (a, b):
            send(ws, "subscribe", type="bbo", coin="BTC")
            recv(ws)
        assert ex.drop_all() == 2
        for ws in (a, b):
            _, closed = read_until_closed(ws, 2.0)
            assert closed.rcvd is None
    assert ex.stats.drops_injected == 2
    with ws_connect(ex) as ws:  # the server still accepts new connections
        ws.send('{"method":"ping"}')
        assert recv(ws) == {"channel": "pong"}


def test_drop_every_with_a_close_code(make_exchange: Callable[..., FakeExchange]) -> None:
    ex = make_exchange(faults=Faults(drop_every_s=0.4, drop_code=1012))
    with ws_connect(ex) as ws:
        t0 = time.monotonic()
        _, closed = read_until_closed(ws, 2.0)
        assert 0.2 < time.monotonic() - t0 < 1.5
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1012


def test_silence_stops_exactly_one_stream(make_exchange: Callable[..., FakeExchange]) -> None:
    ex = make_exchange()
    with ws_connect(ex) as ws:
        send(ws, "subscribe", type="bbo", coin="BTC")
        send(ws, "subscribe", type="l2Book", coin="BTC")
        send(ws, "subscribe", type="bbo", coin="ETH")
        collect(ws, 0.3)
        ex.set_faults(silence=("bbo:BTC",))
        ws.send('{"method":"ping"}')  # everything after the pong was sent under the fault
        recv_until(ws, is_channel("pong"))
        ws.send('{"method":"ping"}')
        msgs = collect(ws, 1.2)
        streams = {(m["channel"], coin_of(m)) for m in msgs if m["channel"] != "pong"}
        assert streams == {("l2Book", "BTC"), ("bbo", "ETH")}
        assert {"channel": "pong"} in msgs
        assert ex.stats.frames_silenced > 0

        ex.set_faults(Faults())
        recv_until(ws, lambda m: m["channel"] == "bbo" and coin_of(m) == "BTC", timeout=2.0)


def test_silence_after_delay(make_exchange: Callable[..., FakeExchange]) -> None:
    ex = make_exchange(faults=Faults(silence=("l2Book",), silence_after_s=0.6))
    with ws_connect(ex) as ws:
        send(ws, "subscribe", type="l2Book", coin="ETH")
        early = collect(ws, 0.5)
        assert any(m["channel"] == "l2Book" for m in early)
        collect(ws, 0.2)
        assert not any(m["channel"] == "l2Book" for m in collect(ws, 0.8))


def test_stall_stops_everything_including_pongs(
    make_exchange: Callable[..., FakeExchange],
) -> None:
    ex = make_exchange()
    with ws_connect(ex) as ws:
        send(ws, "subscribe", type="bbo", coin="BTC")
        recv(ws)
        ex.stall(1.2)
        t0 = time.monotonic()
        ws.send('{"method":"ping"}')
        buffered: list[Any] = []
        silent = False
        while not silent:  # what was already on its way, then silence
            try:
                buffered.append(recv(ws, 0.6))
            except TimeoutError:
                silent = True
        assert time.monotonic() - t0 < 1.2
        assert all(m["channel"] == "bbo" for m in buffered)  # the ping got no pong
        time.sleep(max(0.0, 1.25 - (time.monotonic() - t0)))
        ws.send('{"method":"ping"}')
        after = collect(ws, 0.5)
        assert after.count({"channel": "pong"}) == 1  # the socket survived; one pong only
    stats = ex.stats
    assert stats.stalls_injected == 1
    assert stats.frames_stalled > 0


def test_periodic_stall(make_exchange: Callable[..., FakeExchange]) -> None:
    ex = make_exchange(faults=Faults(stall_every_s=0.3, stall_for_s=0.2))
    time.sleep(0.7)
    assert ex.stats.stalls_injected >= 2


def test_malformed_and_unknown_frames_at_the_configured_rate(
    make_exchange: Callable[..., FakeExchange],
) -> None:
    ex = make_exchange(faults=Faults(malformed_every=3, unknown_every=4))
    with ws_connect(ex) as ws:
        for coin in ("BTC", "ETH", "SOL"):
            send(ws, "subscribe", type="bbo", coin=coin)
            send(ws, "subscribe", type="l2Book", coin=coin)
        texts: list[str] = []
        deadline = time.monotonic() + 4.0
        while len(texts) < 50 and time.monotonic() < deadline:
            text = ws.recv(timeout=2.0)
            assert isinstance(text, str)
            texts.append(text)
    n_data = 0
    expected: list[str] = []  # extra frames due after the last data frame
    last_data = ""
    malformed = unknown = 0
    for text in texts:
        if expected:
            kind = expected.pop(0)
            if kind == "malformed":
                with pytest.raises(json.JSONDecodeError):
                    json.loads(text)
                assert last_data.startswith(text)
                malformed += 1
            else:
                assert json.loads(text)["channel"] == "fakeExchangeUnknown"
                unknown += 1
            continue
        msg = json.loads(text)
        assert msg["channel"] != "fakeExchangeUnknown"
        if msg["channel"] in DATA_CHANNELS:
            n_data += 1
            last_data = text
            expected = (["malformed"] if n_data % 3 == 0 else []) + (
                ["unknown"] if n_data % 4 == 0 else []
            )
    assert n_data >= 12
    assert malformed >= 4
    assert unknown >= 3
    assert malformed == n_data // 3 or malformed == n_data // 3 - 1  # the last may be pending
    stats = ex.stats
    assert stats.sent("malformed") >= malformed
    assert stats.sent("fakeExchangeUnknown") >= unknown


def test_error_frames_every_n_seconds(make_exchange: Callable[..., FakeExchange]) -> None:
    ex = make_exchange(faults=Faults(error_every_s=0.3))
    with ws_connect(ex) as ws:
        errors = [m for m in collect(ws, 1.1) if m["channel"] == "error"]
        assert len(errors) >= 2
        assert all(isinstance(m["data"], str) for m in errors)
        ws.send('{"method":"ping"}')
        recv_until(ws, is_channel("pong"))


def test_idle_connections_are_closed(make_exchange: Callable[..., FakeExchange]) -> None:
    # A 2 s timeout against pings every ~0.2 s: a loaded machine must not close the busy socket.
    ex = make_exchange(idle_timeout_s=2.0)
    with ws_connect(ex) as busy, ws_connect(ex) as idle:
        closed: ConnectionClosed | None = None
        deadline = time.monotonic() + 20.0
        while closed is None:  # pongs are messages sent: the pinging socket stays open
            assert time.monotonic() < deadline, "the idle socket was not closed"
            busy.send('{"method":"ping"}')
            assert recv(busy) == {"channel": "pong"}
            try:
                idle.recv(timeout=0.2)
            except TimeoutError:
                continue
            except ConnectionClosed as ex_closed:
                closed = ex_closed
            else:
                pytest.fail("the idle socket received a message")
        assert closed.rcvd is None
        busy.send('{"method":"ping"}')
        assert recv(busy) == {"channel": "pong"}
    assert ex.stats.idle_closes == 1


# ----- injected frames ---------------------------------------------------------------------------

HUGE_FRAME = '{"channel":"bbo", "data":{"coin":"BTC","time":1180591620717411303424,"px":1.50}}'
DEEP_RAW = '{"channel":"bbo","data":' + "[" * 1000 + "]" * 1000 + "}"


def write_inject(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def inject_lines() -> list[str]:
    """Out of offset order on purpose; equal offsets keep their file order."""
    return [
        json.dumps({"offset_s": 0.9, "raw": DEEP_RAW}),
        '{"offset_s": 0.6, "frame": ' + HUGE_FRAME + "}",
        "",
        json.dumps({"offset_s": 0.6, "raw": '{"channel":"bbo","da'}),
        json.dumps({"offset_s": 0, "raw": "not json at all"}),
    ]


EXPECTED_INJECTED = [
    (0.0, "not json at all"),
    (0.6, HUGE_FRAME),
    (0.6, '{"channel":"bbo","da'),
    (0.9, DEEP_RAW),
]


def test_inject_file_is_read_verbatim_in_offset_order(tmp_path: Path) -> None:
    items = load_injections(write_inject(tmp_path / "inject.ndjson", inject_lines()))
    assert [(i.offset_s, i.text) for i in items] == EXPECTED_INJECTED
    frame = {"channel": "bbo", "data": {"time": 2**70}}
    assert (
        Injection.of_frame(1, frame).text == '{"channel":"bbo","data":{"time":' + str(2**70) + "}}"
    )


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ('{"offset_s": -1, "raw": "x"}', "offset_s must be a finite number >= 0"),
        ('{"offset_s": NaN, "raw": "x"}', "offset_s must be a finite number >= 0"),
        ('{"offset_s": "1", "raw": "x"}', "offset_s must be a finite number >= 0"),
        ('{"offset_s": 1}', "got keys"),
        ('{"offset_s": 1, "raw": "x", "frame": 1}', "got keys"),
        ('{"offset_s": 1, "raw": {"channel": "bbo"}}', '"raw" must be a string'),
        ('{"offset_s": 1, "frame": {"channel": }', "expected a JSON value"),
        ('{"offset_s": 1, "frame": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deep"),
        ('["offset_s", 1]', "not a JSON object"),
        ('{"offset_s": 1, "raw": "x"} trailing', "unexpected text"),
    ],
)
def test_bad_inject_file_names_the_line(tmp_path: Path, line: str, error: str) -> None:
    path = write_inject(tmp_path / "bad.ndjson", ['{"offset_s": 0, "raw": "ok"}', line])
    with pytest.raises(ValueError, match=rf"bad\.ndjson:2: .*{re.escape(error)}"):
        load_injections(path)
    with pytest.raises(ValueError, match=r"bad\.ndjson:2"):
        FakeExchange(SimFeed(SIM), inject=path)


def _texts_until(ws: ClientConnection, want: int, wanted: set[str], timeout: float) -> list[str]:
    """Raw messages until ``want`` of them are in ``wanted`` (all kept, in arrival order)."""
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while sum(t in wanted for t in out) < want:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"only {sum(t in wanted for t in out)} of {want} injected frames arrived")
        text = ws.recv(timeout=remaining)
        assert isinstance(text, str)
        out.append(text)
    return out


def test_injected_frames_follow_each_clients_first_subscription(
    make_exchange: Callable[..., FakeExchange], tmp_path: Path
) -> None:
    ex = make_exchange(inject=write_inject(tmp_path / "inject.ndjson", inject_lines()))
    assert [(i.offset_s, i.text) for i in ex.injections] == EXPECTED_INJECTED
    wanted = {text for _, text in EXPECTED_INJECTED}
    with ws_connect(ex) as idle, ws_connect(ex) as ws:
        sent = time.monotonic()
        send(ws, "subscribe", type="bbo", coin="BTC")
        assert ack_of(recv(ws)) == {"type": "bbo", "coin": "BTC"}
        texts = _texts_until(ws, len(EXPECTED_INJECTED), wanted, timeout=15.0)
        got = [t for t in texts if t in wanted]
        assert got == [text for _, text in EXPECTED_INJECTED]  # verbatim, in offset order
        # not before its offset (the subscription reached the server after ``sent``)
        assert time.monotonic() - sent >= 0.9
        assert all(t in wanted or json.loads(t)["channel"] in DATA_CHANNELS for t in texts)
        # a connection that never subscribed gets nothing: only its pong comes back
        idle.send('{"method":"ping"}')
        assert recv(idle) == {"channel": "pong"}
        # a later connection gets the whole schedule from its own first subscription
        with ws_connect(ex) as late:
            send(late, "subscribe", type="trades", coin="ETH")
            late_texts = _texts_until(late, len(EXPECTED_INJECTED), wanted, timeout=15.0)
            assert [t for t in late_texts if t in wanted] == got
    stats = ex.stats  # once per connection
    assert stats.frames_injected == 2 * len(EXPECTED_INJECTED)
    assert stats.sent("injected") == 2 * len(EXPECTED_INJECTED)
    assert stats.malformed_injected == 0


def test_injected_frames_from_code_and_during_a_stall(
    make_exchange: Callable[..., FakeExchange],
) -> None:
    frame = {"channel": "fakeBad", "data": {"n": 1}}
    ex = make_exchange(
        feed=ListFeed(
            [{"channel": "bbo", "data": {"coin": "BTC", "time": 1, "bbo": [None, None]}}]
        ),
        inject=[Injection.of_frame(0.2, frame), Injection(3.0, "late")],
    )
    with ws_connect(ex) as ws:
        send(ws, "subscribe", type="bbo", coin="BTC")
        recv_until(ws, is_channel("fakeBad"), timeout=5.0)
        ex.stall(30.0)  # the 3 s message falls inside the stall: discarded, like everything
        deadline = time.monotonic() + 15.0
        while ex.stats.frames_stalled == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    stats = ex.stats
    assert stats.frames_stalled >= 1
    assert stats.frames_injected == 1


# ----- feeds and CLI -----------------------------------------------------------------------------


def _trade(coin: str, px: str, t: int, tid: int) -> Frame:
    return {
        "coin": coin,
        "side": "B",
        "px": px,
        "sz": "0.5",
        "time": t,
        "hash": "0x" + "0" * 64,
        "tid": tid,
        "users": ["0x" + "1" * 40, "0x" + "2" * 40],
    }


def _book(coin: str, t: int, bid: str, ask: str) -> Frame:
    return {
        "channel": "l2Book",
        "data": {
            "coin": coin,
            "time": t,
            "levels": [[{"px": bid, "sz": "1.0", "n": 1}], [{"px": ask, "sz": "2.0", "n": 2}]],
        },
    }


def test_capture_feed_replays_and_loops(
    tmp_path: Path, make_exchange: Callable[..., FakeExchange]
) -> None:
    t0 = 1_700_000_000_000
    frames = [
        {"channel": "subscriptionResponse", "data": {"method": "subscribe", "subscription": {}}},
        {"channel": "trades", "data": [_trade("XYZ", "10.5", t0 - 5_000 + i, i) for i in range(3)]},
        _book("XYZ", t0, "10.4", "10.6"),
        {"channel": "trades", "data": [_trade("XYZ", "10.6", t0 + 100, 99)]},
        _book("XYZ", t0 + 200, "10.5", "10.7"),
        {"channel": "pong"},
    ]
    path = tmp_path / "capture.ndjson.gz"
    with gzip.open(path, "wb") as fh:
        for i, frame in enumerate(frames):
            recv_ns = (t0 + 100 * i) * 1_000_000
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(recv_ns // 10**9))
            line = {"time": f"{stamp}.{recv_ns % 10**9:09d}", "ver_num": 1, "raw": frame}
            fh.write(orjson.dumps(line) + b"\n")
    feed = CaptureFeed(path)
    assert feed.info.coins == ("XYZ",)
    assert feed.info.trade_coins == {"XYZ"}
    ex = make_exchange(feed=feed, loop_feed=True)
    assert ex.universe == ("XYZ",)
    with ws_connect(ex) as ws:
        send(ws, "subscribe", type="l2Book", coin="XYZ")
        send(ws, "subscribe", type="bbo", coin="XYZ")  # derived from the books
        msgs = collect(ws, 1.5)
    books = [m["data"] for m in msgs if m["channel"] == "l2Book"]
    assert len(books) >= 4  # two per pass: the feed loops
    times = [b["time"] for b in books]
    assert times == sorted(times)
    assert abs(times[-1] - now_ms()) < 2_000
    bbos = [m["data"] for m in msgs if m["channel"] == "bbo"]
    assert bbos
    assert all(len(b["bbo"]) == 2 for b in bbos)
    assert ex.stats.feed_passes >= 2
    _, body, _ = post_info(ex.info_url, {"type": "allMids"})
    assert set(orjson.loads(body)) == {"XYZ"}


def test_list_feed_dedupes_trades_and_serves_recent_trades(
    make_exchange: Callable[..., FakeExchange],
) -> None:
    t0 = 1_700_000_000_000
    replay = {"channel": "trades", "data": [_trade("ABC", "1.0", t0 + i, i) for i in range(40)]}
    again = {"channel": "trades", "data": [_trade("ABC", "1.1", t0 + 39, 39)]}  # duplicate
    feed = ListFeed([replay, again, _book("ABC", t0 + 50, "0.9", "1.2")])
    ex = make_exchange(feed=feed)
    with ws_connect(ex) as ws:
        send(ws, "subscribe", type="trades", coin="ABC")
        recv(ws)
        trades = recv(ws)["data"]
    assert [t["tid"] for t in trades] == list(range(10, 40))
    _, body, _ = post_info(ex.info_url, {"type": "recentTrades", "coin": "ABC"})
    assert [t["tid"] for t in orjson.loads(body)] == list(range(30, 40))


@pytest.mark.skipif(
    not (REAL / "captures" / "probe_frames_20260924.ndjson").is_file(),
    reason="real captures (../shared/data/real) not present",
)
def test_real_probe_capture_is_served(make_exchange: Callable[..., FakeExchange]) -> None:
    feed = CaptureFeed(REAL / "captures" / "probe_frames_20260924.ndjson")
    ex = make_exchange(feed=feed, delisted=("MATIC",))
    assert {"BTC", "kPEPE", "xyz:SP500", "MATIC"} <= set(ex.universe)
    _, body, _ = post_info(ex.info_url, {"type": "meta"})
    names = [u["name"] for u in orjson.loads(body)["universe"]]
    assert "xyz:SP500" not in names
    assert "BTC" in names
    _, body, _ = post_info(ex.info_url, {"type": "l2Book", "coin": "MATIC"})
    assert orjson.loads(body)["levels"] == [[], []]
    with ws_connect(ex) as ws:
        send(ws, "subscribe", type="l2Book", coin="xyz:SP500")
        recv(ws)
        book = recv(ws)["data"]
        assert book["levels"][0][0] == {"px": "7673.3", "sz": "8.066", "n": 2}


def test_cli_arguments_build_the_exchange() -> None:
    args = build_parser().parse_args(
        [
            "--simulate",
            "--coins",
            "BTC,ETH",
            "--port",
            "0",
            "--drop-every",
            "30",
            "--stall-every",
            "20",
            "--stall-for",
            "2",
            "--silence",
            "l2Book:BTC,bbo:ETH",
            "--silence-after",
            "5",
            "--malformed-every",
            "100",
            "--unknown-every",
            "50",
            "--error-every",
            "10",
            "--delisted",
            "MATIC",
        ]
    )
    ex = exchange_from_args(args)
    assert ex.faults == Faults(
        drop_every_s=30,
        stall_every_s=20,
        stall_for_s=2,
        silence=("l2Book:BTC", "bbo:ETH"),
        silence_after_s=5,
        malformed_every=100,
        unknown_every=50,
        error_every_s=10,
    )
    assert ex.universe == ("BTC", "ETH", "MATIC")
    with pytest.raises(ValueError, match=r"^--stall-for = 2: must be < --stall-every \(1\)$"):
        exchange_from_args(
            build_parser().parse_args(["--simulate", "--stall-every", "1", "--stall-for", "2"])
        )


def test_cli_serves_until_sigterm() -> None:
    cmd = [sys.executable, "-m", "tools.fake_exchange", "--simulate", "--coins", "BTC"]
    cmd += ["--port", "0", "--seconds", "30", "--log-level", "WARNING"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        watchdog = threading.Timer(20.0, proc.kill)  # never hang the suite on readline
        watchdog.start()
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline().strip() for _ in range(2)]
            assert lines[0].startswith("ws:"), lines
            assert lines[1].startswith("info:"), lines
            ws_url = lines[0].split()[-1]
            info_url = lines[1].split()[-1]
            with connect(ws_url, open_timeout=3, close_timeout=1) as ws:
                send(ws, "subscribe", type="trades", coin="BTC")
                assert ack_of(recv(ws)) == {"type": "trades", "coin": "BTC"}
                assert len(recv(ws)["data"]) == 30
            assert post_info(info_url, {"type": "meta"})[0] == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)


def test_cli_inject_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_inject(tmp_path / "inject.ndjson", inject_lines())
    args = build_parser().parse_args(["--simulate", "--port", "0", "--inject", str(path)])
    ex = exchange_from_args(args)
    assert [(i.offset_s, i.text) for i in ex.injections] == EXPECTED_INJECTED
    assert exchange_from_args(build_parser().parse_args(["--simulate"])).injections == ()
    bad = write_inject(tmp_path / "bad.ndjson", ['{"offset_s": 1, "raw": 2}'])
    assert main(["--simulate", "--port", "0", "--inject", str(bad)]) == 2
    assert "bad.ndjson:1" in capsys.readouterr().err
    assert main(["--simulate", "--port", "0", "--inject", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == f"error: --inject = {tmp_path / 'none'}: no such file\n"
