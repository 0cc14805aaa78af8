"""Tests for the FastAPI app (`api.app`) over a `SignalStore` filled by a real replay.

The real capture (``../shared/data/real/frames/hl_live_20250904_btc-eth-sol.ndjson.gz``) is
replayed once per module; hand-made stores (copies of real envelopes under other coin names and
source clocks) cover what the capture cannot: ambiguous names, tracked coins without a signal,
stale inputs, a failed flow.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app, get_store
from api.schemas import SignalEnvelope
from connectors.store import RunState, SignalStore
from flows.pipeline import Pipeline, build_pipeline, run_pipeline
from flows.settings import Settings
from operators.envelope import SCHEMA_VERSION
from operators.features import FEATURE_NAMES
from tests.conftest import LIVE_CAPTURE, real_file

Envelope = dict[str, Any]

STREAMS = ("trades", "l2Book", "bbo", "candle", "activeAssetCtx", "allMids")
PRESENT_ON_CAPTURE = ("trades", "l2Book", "bbo")
ABSENT_ON_CAPTURE = ("candle", "activeAssetCtx", "allMids")
ROUTES = {
    "/health",
    "/v1/state",
    "/v1/signals",
    "/v1/signal/{coin}",
    "/v1/signal/{coin}/history",
    "/v1/signal/{coin}/explain",
    "/v1/stream",
}
HOUR_MS = 3_600_000


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replayed() -> Pipeline:
    """The real capture replayed once through the whole flow (envelopes collected too)."""
    path = real_file(LIVE_CAPTURE)
    pipeline = build_pipeline(Settings(replay=[str(path)], api=False), collect=True)
    run_pipeline(pipeline)
    assert pipeline.store.state is RunState.FINISHED, pipeline.store.error
    assert pipeline.collected, "the replay produced no envelopes"
    return pipeline


@pytest.fixture(scope="module")
def client(replayed: Pipeline) -> TestClient:
    return TestClient(create_app(replayed.store))


@pytest.fixture(scope="module")
def by_coin(replayed: Pipeline) -> dict[str, list[Envelope]]:
    """Every emitted envelope per coin, in emission (= timestamp) order."""
    out: dict[str, list[Envelope]] = {}
    for coin, env in replayed.collected or []:
        out.setdefault(coin, []).append(env)
    return out


@pytest.fixture(scope="module")
def actionable_btc(by_coin: dict[str, list[Envelope]]) -> Envelope:
    """A real BTC envelope, fresh at its bar close, marked actionable.

    Net of fees and spread no bar of the 35-minute capture is actionable (DESIGN.md §6), so a
    fresh real envelope is taken and only its ``actionable`` flag is set: these tests are about
    what the API does with an actionable signal whose inputs go stale, not about the edge.
    """
    for env in reversed(by_coin["BTC"]):
        streams = env["freshness"]["streams"]
        if (
            env["edge"]["direction"] != "FLAT"
            and env["freshness"]["status"] == "ok"
            and all(streams[s]["status"] == "ok" for s in PRESENT_ON_CAPTURE)
        ):
            out = copy.deepcopy(env)
            out["edge"]["actionable"] = True
            return out
    pytest.fail("the real capture has no fresh, directional BTC envelope")


def _as(env: Envelope, coin: str, ts: int | None = None) -> Envelope:
    """A deep copy of a real envelope under another coin name (and optionally bar close)."""
    out = copy.deepcopy(env)
    out["coin"] = coin
    if ts is not None:
        out["timestamp_ms"] = ts
    return out


def _store_with(
    envs: dict[str, Envelope],
    *,
    coins: tuple[str, ...] = (),
    state: RunState = RunState.RUNNING,
    clock: Callable[[], int | None] | None = None,
) -> SignalStore:
    store = SignalStore(coins=coins)
    store.put_many(list(envs.items()))
    store.state = state
    if clock is not None:
        store.source_clock = clock
    return store


def _client(store: SignalStore) -> TestClient:
    return TestClient(create_app(store))


def _assert_error(r: Any, status: int) -> dict[str, Any]:
    """An error response: the status, a JSON ``{"detail": str}`` body, no traceback."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("detail"), str), body
    assert body["detail"], body
    assert set(body) <= {"detail", "coins"}, body
    assert "Traceback" not in r.text
    assert 'File "' not in r.text
    return body


# -- the contract --------------------------------------------------------------------------------


def test_signal_btc_has_the_public_contract(
    client: TestClient, by_coin: dict[str, list[Envelope]]
) -> None:
    r = client.get("/v1/signal/BTC")
    assert r.status_code == 200, r.text
    body = r.json()
    SignalEnvelope.model_validate(body)

    # the public contract, field for field
    assert body["coin"] == "BTC"
    assert isinstance(body["timestamp_ms"], int)
    assert body["timestamp_ms"] == by_coin["BTC"][-1]["timestamp_ms"]
    assert {"label", "confidence"} <= set(body["regime"])
    assert isinstance(body["regime"]["label"], str)
    assert 0.0 <= body["regime"]["confidence"] <= 1.0
    assert set(body["signals"]) == {"momentum", "liquidity", "risk"}
    for name, value in body["signals"].items():
        assert value is None or 0.0 <= value <= 1.0, (name, value)
    edge = body["edge"]
    assert 0.0 <= edge["score"] <= 1.0
    assert isinstance(edge["actionable"], bool)
    assert isinstance(edge["explain"], list)
    assert all(isinstance(code, str) and code for code in edge["explain"])

    # what agents get on top of it
    assert body["schema_version"] == SCHEMA_VERSION  # bumped by each release of additions
    assert body["direction"] in {"LONG", "SHORT", "FLAT"}
    assert body["direction"] == edge["direction"]
    assert isinstance(body["regime"]["since_ms"], int)
    assert body["regime"]["since_ms"] <= body["timestamp_ms"]
    assert list(body["features"]) == list(FEATURE_NAMES)
    for name in ("mid_px", "spread_bps", "depth_bid_usd", "trade_rate_per_s", "realized_vol_bps"):
        assert name in body["features"], name
    assert body["features"]["mid_px"] is not None
    assert body["features"]["spread_bps"] is not None
    for name, value in body["features"].items():
        assert value is None or isinstance(value, int | float), (name, value)

    fresh = body["freshness"]
    assert set(fresh["streams"]) == set(STREAMS)
    assert fresh["as_of_ms"] >= body["timestamp_ms"]
    for s in PRESENT_ON_CAPTURE:
        assert fresh["streams"][s]["status"] == "ok", (s, fresh["streams"][s])
        assert isinstance(fresh["streams"][s]["last_exchange_ms"], int)
    for s in ABSENT_ON_CAPTURE:
        block = fresh["streams"][s]
        assert block["status"] == "missing", (s, block)
        assert block["last_exchange_ms"] is None
        assert block["reason"], (s, block)
    assert fresh["status"] == "ok"

    warm = body["warmup"]
    assert warm["warming_up"] is False
    assert warm["observations"] >= warm["required"]
    assert warm["coverage"] == 1.0


def test_every_signal_served_validates(client: TestClient) -> None:
    for coin in ("BTC", "ETH", "SOL"):
        r = client.get(f"/v1/signal/{coin}")
        assert r.status_code == 200, (coin, r.text)
        env = SignalEnvelope.model_validate(r.json())
        assert env.coin == coin


# -- coin resolution -----------------------------------------------------------------------------


def test_case_insensitive_unique_match_resolves(client: TestClient) -> None:
    for name in ("btc", "Btc", "bTC"):
        r = client.get(f"/v1/signal/{name}")
        assert r.status_code == 200, (name, r.text)
        assert r.json()["coin"] == "BTC"
    r = client.get("/v1/signal/eth/history", params={"limit": 3})
    assert r.status_code == 200, r.text
    assert r.json()["coin"] == "ETH"


def test_exact_match_wins_and_case_collisions_are_ambiguous(actionable_btc: Envelope) -> None:
    store = _store_with(
        {
            "kPEPE": _as(actionable_btc, "kPEPE"),
            "KPEPE": _as(actionable_btc, "KPEPE", actionable_btc["timestamp_ms"] + 1000),
        }
    )
    client = _client(store)
    for name in ("kPEPE", "KPEPE"):
        r = client.get(f"/v1/signal/{name}")
        assert r.status_code == 200, (name, r.text)
        assert r.json()["coin"] == name
        r = client.get(f"/v1/signal/{name}/history")
        assert r.status_code == 200, (name, r.text)
        assert r.json()["coin"] == name
        assert [e["coin"] for e in r.json()["data"]] == [name]
    for path in ("/v1/signal/kpepe", "/v1/signal/Kpepe/history"):
        body = _assert_error(client.get(path), 404)
        assert "ambiguous" in body["detail"], body
        assert "kPEPE" in body["detail"], body
        assert "KPEPE" in body["detail"], body
        assert sorted(body["coins"]) == ["KPEPE", "kPEPE"]


def test_exact_match_wins_over_a_case_insensitive_one(actionable_btc: Envelope) -> None:
    store = _store_with({"BTC": _as(actionable_btc, "BTC"), "btc": _as(actionable_btc, "btc")})
    client = _client(store)
    assert client.get("/v1/signal/btc").json()["coin"] == "btc"
    assert client.get("/v1/signal/BTC").json()["coin"] == "BTC"
    assert "ambiguous" in _assert_error(client.get("/v1/signal/Btc"), 404)["detail"]


def test_unknown_coin_is_404_listing_the_coins_served(client: TestClient) -> None:
    for path in ("/v1/signal/DOGE", "/v1/signal/DOGE/history"):
        body = _assert_error(client.get(path), 404)
        assert "DOGE" in body["detail"], body
        assert body["coins"] == ["BTC", "ETH", "SOL"]


@pytest.mark.parametrize(
    "raw",
    [
        "b%20c",  # a space
        "A" * 40,  # longer than any coin name (32)
        "BTC!",
        "BTC%0A",  # a trailing newline must not slip past the `$` anchor
        "%C3%A9TH",  # non-ASCII
    ],
)
def test_a_string_that_cannot_be_a_coin_name_is_422(client: TestClient, raw: str) -> None:
    for path in (f"/v1/signal/{raw}", f"/v1/signal/{raw}/history"):
        body = _assert_error(client.get(path), 422)
        assert "not a coin name" in body["detail"], (path, body)


def test_tracked_coin_without_a_signal_is_503_with_a_reason(actionable_btc: Envelope) -> None:
    store = _store_with({"BTC": _as(actionable_btc, "BTC")}, coins=("BTC", "HYPE"))
    client = _client(store)
    assert client.get("/v1/signal/BTC").status_code == 200
    body = _assert_error(client.get("/v1/signal/HYPE"), 503)
    assert "HYPE" in body["detail"], body
    assert "closed" in body["detail"], body
    # case-insensitive resolution reaches the tracked coin too
    assert _assert_error(client.get("/v1/signal/hype"), 503)["detail"] == body["detail"]
    # the history of a tracked coin without signals is empty, not an error
    r = client.get("/v1/signal/HYPE/history")
    assert r.status_code == 200, r.text
    assert r.json() == {"coin": "HYPE", "data": [], "count": 0}


@pytest.mark.parametrize(
    ("state", "words"),
    [
        (RunState.STARTING, "starting"),
        (RunState.FINISHED, "ended"),
        (RunState.FAILED, "failed"),
    ],
)
def test_no_signal_reason_follows_the_flow_state(state: RunState, words: str) -> None:
    store = _store_with({}, coins=("HYPE",), state=state)
    store.error = "RuntimeError: boom" if state is RunState.FAILED else None
    body = _assert_error(_client(store).get("/v1/signal/HYPE"), 503)
    assert words in body["detail"], body
    if state is RunState.FAILED:
        assert "boom" in body["detail"], body


def test_hip3_style_names_are_accepted(actionable_btc: Envelope) -> None:
    store = _store_with({"xyz:SP500": _as(actionable_btc, "xyz:SP500")})
    client = _client(store)
    for name in ("xyz:SP500", "XYZ:sp500"):
        r = client.get(f"/v1/signal/{name}")
        assert r.status_code == 200, (name, r.text)
        assert r.json()["coin"] == "xyz:SP500"
    r = client.get("/v1/signal/xyz:SP500/history")
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 1


# -- history -------------------------------------------------------------------------------------


def test_history_default_is_newest_100_oldest_first(
    client: TestClient, by_coin: dict[str, list[Envelope]]
) -> None:
    r = client.get("/v1/signal/BTC/history")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["coin"] == "BTC"
    assert body["count"] == len(body["data"]) == 100
    stamps = [e["timestamp_ms"] for e in body["data"]]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)
    assert stamps == [e["timestamp_ms"] for e in by_coin["BTC"][-100:]]
    for env in body["data"]:
        SignalEnvelope.model_validate(env)


def test_history_limit(client: TestClient, by_coin: dict[str, list[Envelope]]) -> None:
    r = client.get("/v1/signal/ETH/history", params={"limit": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 5
    assert body["data"] == by_coin["ETH"][-5:]
    # the store keeps history_limit (1000) per coin; a larger limit returns all of them
    r = client.get("/v1/signal/BTC/history", params={"limit": 100_000})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(by_coin["BTC"]) > 1000
    assert body["count"] == 1000
    assert [e["timestamp_ms"] for e in body["data"]] == [
        e["timestamp_ms"] for e in by_coin["BTC"][-1000:]
    ]


def test_history_since_ms_returns_only_newer(
    client: TestClient, by_coin: dict[str, list[Envelope]]
) -> None:
    envs = by_coin["SOL"]
    since = envs[-10]["timestamp_ms"]
    r = client.get("/v1/signal/SOL/history", params={"since_ms": since, "limit": 100_000})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 9
    assert [e["timestamp_ms"] for e in body["data"]] == [e["timestamp_ms"] for e in envs[-9:]]
    assert all(e["timestamp_ms"] > since for e in body["data"])
    # since_ms and limit combine: the newest `limit` of those after since_ms
    r = client.get("/v1/signal/SOL/history", params={"since_ms": since, "limit": 2})
    assert [e["timestamp_ms"] for e in r.json()["data"]] == [e["timestamp_ms"] for e in envs[-2:]]
    # since_ms = 0 is valid; past the newest signal: nothing
    r = client.get("/v1/signal/SOL/history", params={"since_ms": 0, "limit": 3})
    assert r.json()["count"] == 3
    r = client.get("/v1/signal/SOL/history", params={"since_ms": envs[-1]["timestamp_ms"]})
    assert r.status_code == 200
    assert r.json() == {"coin": "SOL", "data": [], "count": 0}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"limit": 100_001}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"since_ms": -1}, "since_ms"),
        ({"since_ms": "yesterday"}, "since_ms"),
    ],
)
def test_history_malformed_query_is_422(
    client: TestClient, params: dict[str, Any], field: str
) -> None:
    body = _assert_error(client.get("/v1/signal/BTC/history", params=params), 422)
    assert field in body["detail"], body


@pytest.mark.parametrize(
    ("url", "query", "words"),
    [
        # a misspelt bound used to be ignored: envelopes after the asked time came back
        ("/v1/signal/BTC/history", "until=1757016400000&limit=2", ["'until'", "'until_ms'"]),
        ("/v1/signal/BTC/history", "start_ms=1", ["'start_ms'", "since_ms"]),
        ("/v1/signal/BTC/history", "limit=2&limit=3", ["limit: given more than once"]),
        ("/v1/signals", "limit=1", ["'limit'", "features, view"]),
        ("/v1/signal/BTC", "foo=bar", ["'foo'", "(it takes: features, view)"]),
        ("/v1/signal/BTC", "view=compact&view=full", ["view: given more than once"]),
        ("/v1/signal/BTC/explain", "view=compact", ["'view'", "it takes: none"]),
        ("/v1/state", "verbose=1", ["'verbose'"]),
        ("/v1/stream", "coin=BTC", ["'coin'", "did you mean 'coins'?"]),
        ("/v1/stream", "coins=BTC&coins=ETH", ["coins: given more than once", "comma-separated"]),
    ],
)
def test_a_query_parameter_a_route_does_not_take_is_422(
    client: TestClient, url: str, query: str, words: list[str]
) -> None:
    body = _assert_error(client.get(f"{url}?{query}"), 422)
    for word in words:
        assert word in body["detail"], body


def test_every_documented_query_parameter_is_accepted(client: TestClient) -> None:
    """The strict check reads the names off each route: every parameter OpenAPI documents for a
    /v1 GET passes it (a bad value may still be refused, but never as an unknown name)."""
    spec = client.get("/openapi.json").json()
    checked = 0
    for path, item in spec["paths"].items():
        if not path.startswith("/v1/") or path == "/v1/stream" or "get" not in item:
            continue
        url = path.replace("{coin}", "BTC")
        for param in item["get"].get("parameters", []):
            if param["in"] != "query":
                continue
            r = client.get(url, params={param["name"]: "1"})
            assert "not a query parameter" not in r.text, (path, param["name"], r.text)
            checked += 1
    assert checked >= 7  # signals 2, signal 2, history 5


def test_history_limit_bounds_are_inclusive(client: TestClient) -> None:
    assert client.get("/v1/signal/BTC/history", params={"limit": 1}).json()["count"] == 1
    r = client.get("/v1/signal/BTC/history", params={"limit": 100_000})
    assert r.status_code == 200, r.text


# -- lists, health, state ------------------------------------------------------------------------


def test_signals_lists_every_coin_with_a_signal(
    client: TestClient, by_coin: dict[str, list[Envelope]]
) -> None:
    r = client.get("/v1/signals")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 3
    assert [e["coin"] for e in body["data"]] == ["BTC", "ETH", "SOL"]
    for env in body["data"]:
        SignalEnvelope.model_validate(env)
        assert env["timestamp_ms"] == by_coin[env["coin"]][-1]["timestamp_ms"]


def test_signals_leaves_out_tracked_coins_without_a_signal(actionable_btc: Envelope) -> None:
    store = _store_with({"BTC": _as(actionable_btc, "BTC")}, coins=("HYPE", "BTC"))
    body = _client(store).get("/v1/signals").json()
    assert body["count"] == 1
    assert [e["coin"] for e in body["data"]] == ["BTC"]
    empty = _client(SignalStore(coins=("BTC",))).get("/v1/signals")
    assert empty.status_code == 200
    assert empty.json() == {"data": [], "count": 0}


def test_health_after_a_replay(client: TestClient, replayed: Pipeline) -> None:
    r = client.get("/health")
    assert r.status_code == 200, r.text
    h = r.json()
    assert h["status"] == "finished"
    assert h["ok"] is True
    assert h["error"] is None
    assert h["mode"] == "replay"
    assert h["coins"] == ["BTC", "ETH", "SOL"]
    assert h["signals_emitted"] == len(replayed.collected or [])
    assert h["source_clock_ms"] == replayed.stats.parser.latest_ms
    assert h["uptime_s"] >= 0


def test_health_is_503_when_the_flow_failed() -> None:
    store = SignalStore()
    store.state = RunState.FAILED
    store.error = "RuntimeError: the source broke"
    r = _client(store).get("/health")
    assert r.status_code == 503, r.text
    h = r.json()
    assert h["status"] == "failed"
    assert h["ok"] is False
    assert h["error"] == "RuntimeError: the source broke"
    assert "Traceback" not in r.text


@pytest.mark.parametrize("state", [RunState.STARTING, RunState.RUNNING, RunState.STOPPED])
def test_health_is_200_unless_failed(state: RunState) -> None:
    store = SignalStore()
    store.state = state
    r = _client(store).get("/health")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == str(state)


def test_state_has_source_counters_and_coin_summaries(
    client: TestClient, by_coin: dict[str, list[Envelope]]
) -> None:
    r = client.get("/v1/state")
    assert r.status_code == 200, r.text
    st = r.json()
    src = st["source"]
    assert src["kind"] == "replay"
    assert src["frames_by_channel"] == {"trades": 6580, "bbo": 13896, "l2Book": 3785}
    assert src["lines_read"] == 24261
    assert src["lines_skipped"] == {}
    assert src["errors"] == []
    assert src["finished"] is True
    assert len(src["files"]) == 1
    assert src["files"][0].endswith("hl_live_20250904_btc-eth-sol.ndjson.gz")
    assert isinstance(src["latest_event_ms"], int)
    assert st["health"]["status"] == "finished"
    assert [c["coin"] for c in st["coins"]] == ["BTC", "ETH", "SOL"]
    for c in st["coins"]:
        last = by_coin[c["coin"]][-1]
        assert c["has_signal"] is True
        assert c["timestamp_ms"] == last["timestamp_ms"]
        assert c["regime"] == last["regime"]["label"]
        assert c["freshness"] in {"ok", "stale", "missing"}
        assert c["late_events"] == 0
    assert st["late_events"] == 0


def test_state_counts_late_events_and_coins_without_signals(actionable_btc: Envelope) -> None:
    store = _store_with({"BTC": _as(actionable_btc, "BTC")}, coins=("BTC", "HYPE"))
    store.count_late("BTC", 3)
    store.count_late("HYPE")
    st = _client(store).get("/v1/state").json()
    coins = {c["coin"]: c for c in st["coins"]}
    assert coins["BTC"]["late_events"] == 3
    assert coins["HYPE"]["late_events"] == 1
    assert coins["HYPE"]["has_signal"] is False
    assert coins["HYPE"]["timestamp_ms"] is None
    assert coins["HYPE"]["regime"] is None
    assert coins["HYPE"]["freshness"] is None
    assert st["late_events"] == 4
    # no source attached: a neutral source block, not an error
    assert st["source"]["kind"] == "none"
    assert st["source"]["frames_by_channel"] == {}


# -- freshness at request time -------------------------------------------------------------------


def test_stale_inputs_at_request_time_make_a_signal_not_actionable(
    actionable_btc: Envelope,
) -> None:
    env = _as(actionable_btc, "BTC")
    pristine = copy.deepcopy(env)
    clock = env["timestamp_ms"] + HOUR_MS
    store = _store_with({"BTC": env}, clock=lambda: clock)
    client = _client(store)

    r = client.get("/v1/signal/BTC")
    assert r.status_code == 200, r.text
    body = r.json()
    SignalEnvelope.model_validate(body)
    fresh = body["freshness"]
    assert fresh["as_of_ms"] == clock
    assert fresh["status"] == "stale"
    for s in PRESENT_ON_CAPTURE:
        block = fresh["streams"][s]
        assert block["status"] == "stale", (s, block)
        assert isinstance(block["reason"], str), (s, block)
        assert "stale" in block["reason"], (s, block)
        assert block["age_ms"] == clock - block["last_exchange_ms"]
        assert block["last_exchange_ms"] == env["freshness"]["streams"][s]["last_exchange_ms"]
    for s in ABSENT_ON_CAPTURE:
        assert fresh["streams"][s]["status"] == "missing", s
    edge = body["edge"]
    assert edge["actionable"] is False
    assert "STALE_INPUT" in edge["explain"]
    assert edge["explain"][: len(env["edge"]["explain"])] == env["edge"]["explain"]
    assert edge["explain"].count("STALE_INPUT") == 1
    # everything that is not freshness or the edge's verdict is served as stored
    for key in ("timestamp_ms", "coin", "direction", "regime", "signals", "features", "warmup"):
        assert body[key] == env[key], key
    assert edge["score"] == env["edge"]["score"]

    # /v1/signals and /v1/state judge it the same way
    listed = client.get("/v1/signals").json()["data"][0]
    assert listed["edge"]["actionable"] is False
    assert "STALE_INPUT" in listed["edge"]["explain"]
    assert listed["freshness"] == fresh
    assert client.get("/v1/state").json()["coins"][0]["freshness"] == "stale"

    # the stored envelope is not mutated
    assert store.latest("BTC") == env
    assert env == pristine
    # history serves envelopes as they were emitted
    hist = client.get("/v1/signal/BTC/history").json()["data"]
    assert hist == [pristine]


def test_freshness_at_the_bar_close_is_ok(actionable_btc: Envelope) -> None:
    env = _as(actionable_btc, "BTC")
    store = _store_with({"BTC": env}, clock=lambda: env["timestamp_ms"])
    body = _client(store).get("/v1/signal/BTC").json()
    fresh = body["freshness"]
    assert fresh["as_of_ms"] == env["timestamp_ms"]
    assert fresh["status"] == "ok"
    for s in PRESENT_ON_CAPTURE:
        assert fresh["streams"][s]["status"] == "ok", (s, fresh["streams"][s])
        assert fresh["streams"][s]["reason"] is None
    for s in ABSENT_ON_CAPTURE:
        assert fresh["streams"][s]["status"] == "missing", s
    assert fresh == env["freshness"]
    assert body["edge"] == env["edge"]
    assert body["edge"]["actionable"] is True


def test_a_source_clock_behind_the_bar_close_judges_as_of_the_bar_close(
    actionable_btc: Envelope,
) -> None:
    env = _as(actionable_btc, "BTC")
    store = _store_with({"BTC": env}, clock=lambda: env["timestamp_ms"] - 10 * HOUR_MS)
    body = _client(store).get("/v1/signal/BTC").json()
    assert body["freshness"]["as_of_ms"] == env["timestamp_ms"]
    assert body["edge"]["actionable"] is True


# -- error bodies --------------------------------------------------------------------------------


def test_error_bodies_are_json_detail(client: TestClient) -> None:
    cases = [
        ("GET", "/v1/signal/DOGE", 404),
        ("GET", "/v1/signal/BTC!", 422),
        ("GET", "/v1/signal/BTC/history?limit=0", 422),
        ("GET", "/v1/nope", 404),
        ("GET", "/v1/signal/", 404),
        ("POST", "/v1/signals", 405),
        ("DELETE", "/v1/signal/BTC", 405),
    ]
    for method, path, status in cases:
        _assert_error(client.request(method, path), status)


def test_a_path_no_route_matches_is_a_404_naming_the_paths(client: TestClient) -> None:
    for path in ("/v1/signal/BTC%2FETH", "/v1/nope", "/v1/signal/"):
        body = _assert_error(client.get(path), 404)
        assert body["detail"].startswith("no such path '/v1/"), body
        assert "/v1/signal/{coin}/history" in body["detail"], body


def test_head_is_answered_wherever_get_is(client: TestClient) -> None:
    """Uptime probes ask HEAD /health (it was 405): the GET's status and headers, no body."""
    paths = ["/health", "/v1/state", "/v1/signals", "/v1/signal/BTC", "/v1/signal/btc/history"]
    paths += ["/v1/signal/BTC/explain", "/openapi.json", "/docs", "/v1/signal/DOGE", "/v1/nope"]
    for path in paths:
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code, (path, head.status_code, got.status_code)
        assert head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
        if path in ("/health", "/v1/state"):  # their bodies carry the uptime: lengths vary
            assert int(head.headers["content-length"]) > 0, path
        else:
            assert head.headers["content-length"] == str(len(got.content)), path
    assert client.head("/v1/signal/BTC/history?until=1").status_code == 422
    assert client.head("/v1/stream").status_code == 405  # an endless response is not run


def test_an_internal_error_is_500_with_a_generic_detail(
    replayed: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(replayed.store)

    def broken_store() -> SignalStore:
        raise RuntimeError("kaboom: secret internal state")

    app.dependency_overrides[get_store] = broken_store
    client = TestClient(app, raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="api.app"):
        for path in ("/v1/signals", "/v1/signal/BTC", "/v1/signal/BTC/history", "/v1/state"):
            body = _assert_error(client.get(path), 500)
            assert body == {"detail": "internal error (logged)"}, body
            assert "kaboom" not in str(body)
    # the detail promises the error was logged (with its traceback, on the server side)
    logged = [r for r in caplog.records if r.name == "api.app" and r.levelno == logging.ERROR]
    assert len(logged) == 4
    assert all(r.exc_info and "kaboom" in str(r.exc_info[1]) for r in logged)


# -- OpenAPI -------------------------------------------------------------------------------------


def test_openapi_lists_the_routes(client: TestClient) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert set(spec["paths"]) == ROUTES
    for path in ROUTES:
        assert set(spec["paths"][path]) == {"get"}, path
    assert "SignalEnvelope" in spec["components"]["schemas"]
    r = client.get("/docs")
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]
    assert "/openapi.json" in r.text


# -- the store itself ----------------------------------------------------------------------------


def test_store_history_is_bounded_and_filtered(actionable_btc: Envelope) -> None:
    store = SignalStore(history_limit=3)
    t0 = actionable_btc["timestamp_ms"]
    envs = [_as(actionable_btc, "BTC", t0 + 1000 * i) for i in range(5)]
    store.put_many(("BTC", e) for e in envs)
    assert store.signals_emitted == 5
    assert store.latest("BTC") == envs[-1]
    assert store.history("BTC") == envs[-3:]
    assert store.history("BTC", limit=2) == envs[-2:]
    assert store.history("BTC", limit=0) == []
    assert store.history("BTC", since_ms=t0 + 3000) == envs[-1:]
    assert store.history("BTC", since_ms=t0 + 3000, limit=10) == envs[-1:]
    assert store.history("ETH") == []
    assert store.latest("ETH") is None
    assert store.latest_all() == {"BTC": envs[-1]}


def test_store_coins_and_resolve() -> None:
    store = SignalStore(coins=("SOL", "BTC"))
    env: Envelope = {"timestamp_ms": 1}
    store.put_many([("kPEPE", env), ("KPEPE", env), ("ETH", env), ("BTC", env)])
    store.note_coin("HYPE")
    # configured first, in their order, then the others seen, sorted
    assert store.coins() == ["SOL", "BTC", "ETH", "HYPE", "KPEPE", "kPEPE"]
    assert store.resolve("BTC") == "BTC"
    assert store.resolve("eth") == "ETH"
    assert store.resolve("hype") == "HYPE"
    assert store.resolve("kPEPE") == "kPEPE"
    assert store.resolve("KPEPE") == "KPEPE"
    assert store.resolve("kpepe") is None
    assert store.resolve("DOGE") is None


def test_store_is_thread_safe_under_concurrent_reads_and_writes() -> None:
    store = SignalStore(history_limit=50)
    coins = [f"C{i}" for i in range(8)]
    rounds = 2000
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(mine: list[str]) -> None:
        try:
            for n in range(rounds):
                store.put_many((c, {"timestamp_ms": n, "coin": c}) for c in mine)
        except BaseException as ex:  # pragma: no cover - reported below
            errors.append(ex)

    def reader() -> None:
        try:
            while not stop.is_set():
                latest = store.latest_all()
                for c, env in latest.items():
                    assert env["coin"] == c
                for c in store.coins():
                    hist = store.history(c, limit=20)
                    stamps = [e["timestamp_ms"] for e in hist]
                    assert stamps == sorted(stamps)
                    assert len(hist) <= 20
                    assert store.resolve(c.lower()) == c
        except BaseException as ex:  # pragma: no cover - reported below
            errors.append(ex)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    writers = [threading.Thread(target=writer, args=(coins[i::2],)) for i in range(2)]
    for t in writers:
        t.start()
    for t in writers:
        t.join(timeout=30)
    stop.set()
    for t in readers:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in [*readers, *writers])
    assert errors == []
    assert store.signals_emitted == rounds * len(coins)
    assert store.coins() == sorted(coins)
    for c in coins:
        hist = store.history(c)
        assert len(hist) == 50
        assert store.latest(c) == {"timestamp_ms": rounds - 1, "coin": c}


def test_store_live_clock_is_the_wall_clock() -> None:
    import time

    store = SignalStore(mode="live")
    store.source_clock = lambda: 0
    before = int(time.time() * 1000)
    now = store.now_ms()
    assert now is not None
    assert before <= now <= int(time.time() * 1000)
    replay = SignalStore()
    assert replay.now_ms() is None
    replay.source_clock = lambda: 123
    assert replay.now_ms() == 123
