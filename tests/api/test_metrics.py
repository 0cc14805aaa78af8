"""``GET /metrics`` (`api.metrics`) and the all-stale ``/health`` rule."""

from __future__ import annotations

import copy
import time
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from connectors.store import RunState, SignalStore
from flows.pipeline import Pipeline, build_pipeline, run_pipeline
from flows.settings import Settings
from tests.api.test_stream import serve, subscribers, wait_for
from tests.conftest import SAMPLE

Envelope = dict[str, Any]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient | httpx2.Client) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def labelled(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(k[1])[label]: v for k, v in samples.items() if k[0] == name}


@pytest.fixture(scope="module")
def replayed() -> Pipeline:
    pipeline = build_pipeline(Settings(replay=[str(SAMPLE)], api=False), collect=True)
    run_pipeline(pipeline)
    assert pipeline.store.state is RunState.FINISHED
    return pipeline


def test_metrics_after_a_replay(replayed: Pipeline) -> None:
    store = replayed.store
    client = TestClient(create_app(store, token=None))
    m = scrape(client)
    info = store.source_info()
    assert labelled(m, "hlsl_frames_total", "channel") == {
        k: float(v) for k, v in info["frames_by_channel"].items()
    }
    assert sum(labelled(m, "hlsl_frames_total", "channel").values()) > 0
    assert labelled(m, "hlsl_frames_skipped_total", "reason") == {
        k: float(v) for k, v in info["lines_skipped"].items()
    }
    bars = labelled(m, "hlsl_bars_closed_total", "coin")
    assert set(bars) == {"BTC", "ETH", "SOL"}
    assert (
        sum(bars.values())
        == value(m, "hlsl_signals_emitted_total")
        == len(replayed.collected or [])
    )
    assert value(m, "hlsl_stream_last_id") == store.signals_emitted
    assert labelled(m, "hlsl_late_events_total", "coin") == {
        k: float(v) for k, v in store.late_events.items()
    }
    ages = labelled(m, "hlsl_data_age_seconds", "coin")
    assert set(ages) == {"BTC", "ETH", "SOL"}
    assert all(0 <= a < 60 for a in ages.values()), ages
    streams = {dict(k[1])["stream"] for k in m if k[0] == "hlsl_stream_age_seconds"}
    assert {"trades", "bbo", "l2Book"} <= streams
    assert labelled(m, "hlsl_coin_stale", "coin") == {"BTC": 0.0, "ETH": 0.0, "SOL": 0.0}
    assert value(m, "hlsl_up") == 1.0
    assert value(m, "hlsl_flow_info", mode="replay") == 1.0
    assert labelled(m, "hlsl_flow_state", "state") == {
        "starting": 0.0,
        "running": 0.0,
        "finished": 1.0,
        "stopped": 0.0,
        "failed": 0.0,
    }
    assert value(m, "hlsl_sse_subscribers") == 0.0
    assert value(m, "hlsl_signal_lag_seconds_count") == 0.0  # replayed times are not wall times
    assert labelled(m, "hlsl_http_rejected_total", "reason") == {
        "unauthorized": 0.0,
        "rate_limited": 0.0,
    }


def test_metrics_move_as_envelopes_arrive(replayed: Pipeline) -> None:
    collected = replayed.collected or []
    store = SignalStore()
    client = TestClient(create_app(store, token=None))
    before = scrape(client)
    assert value(before, "hlsl_signals_emitted_total") == 0
    store.put_many(collected[:10])
    store.count_late("BTC", 3)
    after = scrape(client)
    assert value(after, "hlsl_signals_emitted_total") == 10
    assert value(after, "hlsl_stream_last_id") == 10
    assert value(after, "hlsl_late_events_total", coin="BTC") == 3
    store.put_many(collected[10:25])
    again = scrape(client)
    assert value(again, "hlsl_signals_emitted_total") == 25
    assert sum(labelled(again, "hlsl_bars_closed_total", "coin").values()) == 25


def _conn(name: str, *, connected: bool, reconnects: int) -> dict[str, Any]:
    """A live connection's status, as `connectors.live` reports it."""
    return {
        "name": name,
        "coins": ["BTC"],
        "connected": connected,
        "subscriptions": 6,
        "acknowledged": 6 if connected else 0,
        "primed_coins": 1,
        "reconnects": reconnects,
        "resubscribes": 0,
        "frames": 100,
        "error_frames": 0,
        "skipped": 0,
        "last_frame_ms": None,
        "last_error": None,
    }


def test_live_lag_histogram_and_connections(replayed: Pipeline) -> None:
    env = copy.deepcopy((replayed.collected or [])[-1][1])
    store = SignalStore(mode="live")
    store.source_info = lambda: {
        "kind": "live",
        "frames_by_channel": {"trades": 7},
        "lines_skipped": {"bad_json": 2},
        "connections": [
            _conn("ws-0", connected=True, reconnects=3),
            _conn("ws-1", connected=False, reconnects=1),
        ],
    }
    now_ms = int(time.time() * 1000)
    store.put_many([("BTC", env | {"timestamp_ms": now_ms - 1500})])
    store.put_many([("BTC", env | {"timestamp_ms": now_ms - 200})])
    m = scrape(TestClient(create_app(store, token=None)))
    assert value(m, "hlsl_signal_lag_seconds_count") == 2
    assert value(m, "hlsl_signal_lag_seconds_bucket", le="0.1") == 0
    assert value(m, "hlsl_signal_lag_seconds_bucket", le="0.5") == 1
    assert value(m, "hlsl_signal_lag_seconds_bucket", le="2.0") == 2
    assert value(m, "hlsl_signal_lag_seconds_bucket", le="+Inf") == 2
    assert 1.6 < value(m, "hlsl_signal_lag_seconds_sum") < 5
    assert labelled(m, "hlsl_reconnects_total", "connection") == {"ws-0": 3.0, "ws-1": 1.0}
    assert labelled(m, "hlsl_connection_up", "connection") == {"ws-0": 1.0, "ws-1": 0.0}
    assert value(m, "hlsl_frames_skipped_total", reason="bad_json") == 2


def test_each_app_has_its_own_registry(replayed: Pipeline) -> None:
    a = TestClient(create_app(replayed.store, token=None))
    b = TestClient(create_app(SignalStore(), token=None))
    assert value(scrape(a), "hlsl_signals_emitted_total") > 0
    assert value(scrape(b), "hlsl_signals_emitted_total") == 0


def test_metrics_count_subscribers_and_refusals(replayed: Pipeline) -> None:
    store = SignalStore()
    app = create_app(store, token="t" * 24, rate_limit_per_s=1, rate_limit_burst=50)
    auth = {"Authorization": "Bearer " + "t" * 24}
    with serve(app) as base, httpx2.Client(base_url=base, timeout=5, headers=auth) as c:
        with c.stream("GET", "/v1/stream"):
            wait_for("the subscriber", lambda: subscribers(app) == 1)
            assert value(scrape(c), "hlsl_sse_subscribers") == 1
        wait_for("the unsubscribe", lambda: subscribers(app) == 0)
        m = scrape(c)
        assert value(m, "hlsl_sse_subscribers") == 0
        assert value(m, "hlsl_sse_connections_total") == 1
        assert httpx2.get(base + "/v1/signals").status_code == 401
        assert value(scrape(c), "hlsl_http_rejected_total", reason="unauthorized") == 1
        codes = [c.get("/health").status_code for _ in range(60)]
        assert 429 in codes
        rejected = labelled(
            scrape(TestClient(app, headers=auth)), "hlsl_http_rejected_total", "reason"
        )
        assert rejected["rate_limited"] >= 1


# -- health: every coin stale --------------------------------------------------------------------


def _live_store(envs: list[tuple[str, Envelope]], age_ms: dict[str, int]) -> SignalStore:
    """A live store whose coins' newest inputs are ``age_ms`` old by the wall clock."""
    store = SignalStore(mode="live")
    now = int(time.time() * 1000)
    items = []
    for coin, env in envs:
        e = copy.deepcopy(env)
        e["coin"] = coin
        e["timestamp_ms"] = now - age_ms[coin]
        for s in e["freshness"]["streams"].values():
            if s["last_exchange_ms"] is not None:
                s["last_exchange_ms"] = now - age_ms[coin]
                s["last_recv_ms"] = now - age_ms[coin]
        items.append((coin, e))
    store.put_many(items)
    store.state = RunState.RUNNING
    return store


def test_health_is_503_when_every_coin_is_stale(replayed: Pipeline) -> None:
    last = dict(replayed.collected or [])
    envs = [("BTC", last["BTC"]), ("ETH", last["ETH"])]
    stale = _live_store(envs, {"BTC": 3_600_000, "ETH": 3_600_000})
    r = TestClient(create_app(stale, token="x" * 20)).get("/health")  # open even with a token
    assert r.status_code == 503, r.text
    h = r.json()
    assert h["ok"] is False
    assert h["stale_coins"] == ["BTC", "ETH"]
    assert h["reason"] == "every coin's latest signal is stale"
    assert h["status"] == "running"
    assert value(scrape(TestClient(create_app(stale, token=None))), "hlsl_up") == 0.0

    one_fresh = _live_store(envs, {"BTC": 3_600_000, "ETH": 0})
    r = TestClient(create_app(one_fresh, token=None)).get("/health")
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True
    assert r.json()["stale_coins"] == ["BTC"]
    m = scrape(TestClient(create_app(one_fresh, token=None)))
    assert labelled(m, "hlsl_coin_stale", "coin") == {"BTC": 1.0, "ETH": 0.0}
    assert value(m, "hlsl_data_age_seconds", coin="BTC") >= 3600
    assert value(m, "hlsl_up") == 1.0


def test_health_with_no_signal_yet_is_not_stale() -> None:
    store = SignalStore(coins=("BTC",), mode="live")
    store.state = RunState.RUNNING
    r = TestClient(create_app(store, token=None)).get("/health")
    assert r.status_code == 200
    assert r.json()["stale_coins"] == []
    assert r.json()["reason"] is None


# -- the whole exposition, per-coin gauges, process, HTTP and MCP metrics -------------------------


def families(text: str) -> dict[str, Any]:
    """The exposition parsed by prometheus_client's own text parser, by family name."""
    out: dict[str, Any] = {}
    for fam in text_string_to_metric_families(text):
        assert fam.name not in out, f"family {fam.name} twice"
        out[fam.name] = fam
    return out


def test_the_exposition_parses_and_holds_every_family(replayed: Pipeline) -> None:
    client = TestClient(create_app(replayed.store, token=None))
    client.get("/health")
    r = client.get("/metrics")
    fams = families(r.text)
    expected = {
        "hlsl_up": "gauge",
        "hlsl_flow_info": "gauge",
        "hlsl_flow_state": "gauge",
        "hlsl_regime": "gauge",
        "hlsl_regime_confidence": "gauge",
        "hlsl_direction": "gauge",
        "hlsl_edge_score": "gauge",
        "hlsl_edge_actionable": "gauge",
        "hlsl_net_edge_bps": "gauge",
        "hlsl_signal_age_seconds": "gauge",
        "hlsl_http_requests": "counter",
        "hlsl_http_request_duration_seconds": "histogram",
        "hlsl_mcp_tool_calls": "counter",
        "process_cpu_seconds": "counter",
        "process_resident_memory_bytes": "gauge",
        "process_open_fds": "gauge",
    }
    for name, kind in expected.items():
        assert name in fams, f"{name} missing from /metrics"
        assert fams[name].type == kind, (name, fams[name].type)
    assert fams["process_resident_memory_bytes"].samples[0].value > 1e6
    assert fams["process_open_fds"].samples[0].value >= 3
    # every sample is a finite number (NaN or Inf would break alert arithmetic)
    for fam in fams.values():
        for smp in fam.samples:
            if not smp.name.endswith("_bucket"):
                assert smp.value == smp.value, smp
    # the flow's info carries no changing label
    assert [dict(smp.labels) for smp in fams["hlsl_flow_info"].samples] == [{"mode": "replay"}]


def test_per_coin_gauges_match_the_served_envelopes(replayed: Pipeline) -> None:
    store = replayed.store
    m = scrape(TestClient(create_app(store, token=None)))
    served = TestClient(create_app(store, token=None)).get("/v1/signals").json()["data"]
    assert {e["coin"] for e in served} == {"BTC", "ETH", "SOL"}
    now = store.now_ms()
    assert now is not None
    for env in served:
        coin = env["coin"]
        regimes = {
            dict(k[1])["label"]: v
            for k, v in m.items()
            if k[0] == "hlsl_regime" and dict(k[1])["coin"] == coin
        }
        assert set(regimes) == {
            "TRENDING",
            "MEAN_REVERTING",
            "LIQUIDATION_RISK",
            "CHAOTIC",
            "UNKNOWN",
        }
        assert regimes[env["regime"]["label"]] == 1.0
        assert sum(regimes.values()) == 1.0
        assert value(m, "hlsl_regime_confidence", coin=coin) == env["regime"]["confidence"]
        direction = {"LONG": 1.0, "SHORT": -1.0, "FLAT": 0.0}[env["direction"]]
        assert value(m, "hlsl_direction", coin=coin) == direction
        assert value(m, "hlsl_edge_score", coin=coin) == env["edge"]["score"]
        assert value(m, "hlsl_edge_actionable", coin=coin) == float(env["edge"]["actionable"])
        for name, field in (
            ("hlsl_net_edge_bps", "net_edge_bps"),
            ("hlsl_edge_p_right", "p_right"),
        ):
            key = (name, (("coin", coin),))
            if env["edge"][field] is None:
                assert key not in m, f"{name} of {coin} is null: no sample"
            else:
                assert m[key] == env["edge"][field]
        # the bar close can be ahead of the newest event (the bar's end): never a negative age
        age = max(0, now - env["timestamp_ms"]) / 1000
        assert value(m, "hlsl_signal_age_seconds", coin=coin) == age


def test_flow_state_is_one_hot_over_a_stable_label_set() -> None:
    store = SignalStore()
    client = TestClient(create_app(store, token=None))
    seen = []
    for state in RunState:
        store.state = state
        m = scrape(client)
        states = labelled(m, "hlsl_flow_state", "state")
        assert states == {s.value: 1.0 if s is state else 0.0 for s in RunState}
        seen.append(sorted(k for k in m if k[0].startswith("hlsl_flow_")))
    assert all(keys == seen[0] for keys in seen), "the flow's series must not churn"


def test_http_requests_are_counted_by_route_template() -> None:
    store = SignalStore(coins=("BTC", "ETH"))
    store.state = RunState.RUNNING
    sub = FastAPI()

    @sub.get("/inner/{x}")
    def inner(x: str) -> dict[str, str]:
        return {"x": x}

    app = create_app(store, token="k" * 24, mounts=[("/sub", sub)])
    auth = {"Authorization": "Bearer " + "k" * 24}
    client = TestClient(app, headers=auth)
    for coin in ("BTC", "ETH", "btc"):
        assert client.get(f"/v1/signal/{coin}").status_code == 503  # tracked, no signal yet
    assert client.get("/v1/signal/NOPE").status_code == 404
    assert client.get("/no/such/path").status_code == 404
    assert client.post("/health").status_code == 405
    assert client.get("/sub/inner/1").status_code == 200
    assert client.get("/sub/inner/2").status_code == 200
    assert TestClient(app).get("/v1/signals").status_code == 401  # refused before routing
    m = scrape(client)
    reqs = {
        (d["route"], d["method"], d["status"]): v
        for k, v in m.items()
        if k[0] == "hlsl_http_requests_total"
        for d in [dict(k[1])]
    }
    assert reqs[("/v1/signal/{coin}", "GET", "503")] == 3
    assert reqs[("/v1/signal/{coin}", "GET", "404")] == 1
    assert reqs[("unmatched", "GET", "404")] == 1
    assert reqs[("/health", "POST", "405")] == 1
    assert reqs[("/sub", "GET", "200")] == 2
    assert reqs[("/v1/signals", "GET", "401")] == 1
    routes = {r for r, _, _ in reqs}
    assert not any(c in r for r in routes for c in ("BTC", "ETH", "btc", "NOPE", "inner")), routes
    labels = {"route": "/v1/signal/{coin}", "method": "GET", "status": "503"}
    assert value(m, "hlsl_http_request_duration_seconds_count", **labels) == 3
    assert value(m, "hlsl_http_request_duration_seconds_bucket", le="+Inf", **labels) == 3
    assert 0 < value(m, "hlsl_http_request_duration_seconds_sum", **labels) < 30


def test_mcp_tool_calls_are_counted() -> None:
    from api.metrics import MAX_TOOL_LABELS, MCP_TOOL_CALLS, mcp_tool_call, record_mcp_tool_call

    before = MCP_TOOL_CALLS.snapshot()
    record_mcp_tool_call("get_signal", "ok")
    with mcp_tool_call("get_signal"):
        pass
    with pytest.raises(RuntimeError), mcp_tool_call("get_history"):
        raise RuntimeError("boom")
    record_mcp_tool_call("bad name with spaces", "ok")
    m = scrape(TestClient(create_app(SignalStore(), token=None)))

    def delta(tool: str, outcome: str) -> float:
        key = ("hlsl_mcp_tool_calls_total", (("outcome", outcome), ("tool", tool)))
        return m.get(key, 0.0) - before.get((tool, outcome), 0)

    assert delta("get_signal", "ok") == 2
    assert delta("get_history", "error") == 1
    assert delta("other", "ok") >= 1
    tools = {tool for tool, _ in MCP_TOOL_CALLS.snapshot()}
    for i in range(2 * MAX_TOOL_LABELS):
        record_mcp_tool_call(f"t{i}", "ok")
    assert len({tool for tool, _ in MCP_TOOL_CALLS.snapshot()}) <= max(
        MAX_TOOL_LABELS + 1, len(tools)
    )
