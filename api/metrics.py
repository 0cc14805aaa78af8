"""``GET /metrics``: the service in Prometheus text format, read from the store at scrape time.

Each app gets its own `prometheus_client.CollectorRegistry` holding one `ServiceCollector`, so
apps (and tests) never collide and the flow carries no Prometheus objects: counters the source
and store already keep are turned into metric families when scraped.

=====================================  =======  ==============================================
metric                                 type     from
=====================================  =======  ==============================================
``hlsl_up``                            gauge    1 unless the flow failed or every coin is stale
``hlsl_flow_info{mode}``               gauge    1; ``mode`` is ``replay`` or ``live``
``hlsl_flow_state{state}``             gauge    one-hot over starting, running, finished,
                                               stopped, failed (a stable label set)
``hlsl_frames_total{channel}``         counter  ``source_info()["frames_by_channel"]``
``hlsl_control_frames_total{kind}``    counter  subscription acks, pongs, ...
``hlsl_frames_skipped_total{reason}``  counter  ``source_info()["lines_skipped"]``
``hlsl_duplicate_trades_total``        counter  trades seen twice (after reconnects)
``hlsl_ignored_coin_events_total``     counter  events of coins not tracked
``hlsl_reconnects_total{connection}``  counter  live connections (``source_info()["connections"]``)
``hlsl_connection_up{connection}``     gauge    live connections
``hlsl_bars_closed_total{coin}``       counter  bars closed = envelopes stored, per coin
``hlsl_signals_emitted_total``         counter  envelopes stored
``hlsl_late_events_total{coin}``       counter  events that arrived after their bar closed
``hlsl_signal_lag_seconds``            histo    live: wall clock at store minus bar close
``hlsl_data_age_seconds{coin}``        gauge    age of the coin's newest input (source clock)
``hlsl_stream_age_seconds{coin,stream}`` gauge  age of each present input stream
``hlsl_coin_stale{coin}``              gauge    1 if the coin's latest signal is stale now
``hlsl_sse_subscribers``               gauge    open ``/v1/stream`` clients
``hlsl_sse_connections_total``         counter  streams opened
``hlsl_sse_clients_dropped_total``     counter  clients dropped for falling behind
``hlsl_sse_resume_gaps_total``         counter  resumes that could not be gap-free
``hlsl_stream_last_id``                gauge    newest sequence number
``hlsl_http_rejected_total{reason}``   counter  401s and 429s
=====================================  =======  ==============================================

With a shared store (``--store redis://…``), read from its mirror
(`connectors.redis_mirror.RedisMirror.status`):

========================================  =======  ===========================================
``hlsl_store_up``                         gauge    1 while this server reads the shared store
``hlsl_store_mirror_lag_seconds{q}``      gauge    Redis write to local mirror, ``q`` 0.5/0.99
``hlsl_store_buffered``                   gauge    envelopes the flow processes hold unwritten
``hlsl_store_dropped_total``              counter  envelopes the flow processes dropped (Redis
                                                   unreachable past their buffer)
``hlsl_store_outages_total``              counter  times this server lost the shared store
``hlsl_store_processes``                  gauge    flow processes reporting
========================================  =======  ===========================================

and ``hlsl_step_errors_total{step,coin}`` (counter): bars whose computation failed in a step and
were published degraded, from `operators.failures.STEP_ERRORS` (process-wide).

Per coin with a signal, as served now (freshness re-judged on the source clock), for alerts:

===========================================  =====  ============================================
``hlsl_regime{coin,label}``                  gauge  one-hot over the five regime labels
``hlsl_regime_confidence{coin}``             gauge  the regime's confidence, 0..1
``hlsl_direction{coin}``                     gauge  1 LONG, -1 SHORT, 0 FLAT
``hlsl_edge_score{coin}``                    gauge  ``edge.score``, 0..1
``hlsl_edge_actionable{coin}``               gauge  1 if ``edge.actionable`` (as served now)
``hlsl_edge_p_right{coin}``                  gauge  ``edge.p_right`` (absent while null)
``hlsl_net_edge_bps{coin}``                  gauge  ``edge.net_edge_bps`` (absent while null)
``hlsl_signal_age_seconds{coin}``            gauge  source clock now minus the bar close
===========================================  =====  ============================================

The process and its callers:

=================================================  =======  ======================================
``process_*``                                      mixed    CPU seconds, resident and virtual
                                                            memory, open and max fds, start time
                                                            (`prometheus_client.ProcessCollector`;
                                                            Linux ``/proc``)
``hlsl_http_requests_total{route,method,status}``  counter  requests answered (`HttpMetrics`)
``hlsl_http_request_duration_seconds{route,...}``  histo    request to last body byte (a stream's
                                                            whole life for ``/v1/stream``)
``hlsl_mcp_tool_calls_total{tool,outcome}``        counter  MCP tool calls, ``ok`` or ``error``
                                                            (`record_mcp_tool_call`, process-wide)
=================================================  =======  ======================================

``route`` is the route template (``/v1/signal/{coin}``, a mount's prefix such as ``/mcp``), or
``unmatched`` for a path no route serves, so raw paths never become labels; ``method`` is one of
the standard methods or ``OTHER``.

This module is `ServiceCollector`, which reads everything above at scrape time, and the per-app
registry; it stays whole because the tables are the one catalogue of ``/metrics``. The HTTP
request metrics (`api.http_metrics`) and the MCP tool-call counts (`api.mcp_metrics`) are their
own modules; their names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.responses import Response

from api.http_metrics import (
    HTTP_BUCKETS,
    METHODS,
    UNMATCHED,
    HttpMetrics,
    HttpStats,
    http_stats,
    route_template,
)
from api.mcp_metrics import (
    MAX_TOOL_LABELS,
    MCP_TOOL_CALLS,
    OUTCOMES,
    ToolCalls,
    mcp_tool_call,
    record_mcp_tool_call,
)
from api.security import AccessCounters
from api.stream import Broadcaster, Refresh
from connectors.store import RunState, SignalStore
from operators.failures import STEP_ERRORS
from operators.regime import RegimeLabel

StaleCheck = Callable[[], bool]


def _counter(name: str, doc: str, label: str, values: dict[str, Any]) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        fam.add_metric([str(key)], float(value))
    return fam


def _ages(served: dict[str, Any]) -> tuple[str, float | None, dict[str, float]]:
    """An envelope's freshness status, newest input age (s) and age per stream (s)."""
    fresh = served["freshness"]
    streams = {
        name: s["age_ms"] / 1000
        for name, s in fresh["streams"].items()
        if s.get("age_ms") is not None
    }
    return fresh["status"], min(streams.values()) if streams else None, streams


def coin_ages(
    store: SignalStore, refresh: Refresh
) -> dict[str, tuple[str, float | None, dict[str, float]]]:
    """Per coin with a signal: freshness status now, newest input age (s), age per stream (s)."""
    now = store.now_ms()
    return {coin: _ages(refresh(env, now)) for coin, env in sorted(store.latest_all().items())}


_DIRECTION: Final = {"LONG": 1.0, "SHORT": -1.0, "FLAT": 0.0}


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (bools and nulls are not)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


class CoinGauges:
    """The per-coin gauges one alerts on (regime, direction, edge, age), from served envelopes."""

    def __init__(self) -> None:
        self.regime = GaugeMetricFamily(
            "hlsl_regime",
            "1 for the coin's regime label, 0 for the others",
            labels=["coin", "label"],
        )
        self.confidence = GaugeMetricFamily(
            "hlsl_regime_confidence", "The regime's confidence, 0..1", labels=["coin"]
        )
        self.direction = GaugeMetricFamily(
            "hlsl_direction", "The call: 1 LONG, -1 SHORT, 0 FLAT", labels=["coin"]
        )
        self.score = GaugeMetricFamily("hlsl_edge_score", "edge.score, 0..1", labels=["coin"])
        self.actionable = GaugeMetricFamily(
            "hlsl_edge_actionable", "1 if the signal is actionable as served now", labels=["coin"]
        )
        self.p_right = GaugeMetricFamily(
            "hlsl_edge_p_right",
            "Calibrated probability the call is right (absent while null)",
            labels=["coin"],
        )
        self.net_edge = GaugeMetricFamily(
            "hlsl_net_edge_bps",
            "Expected move net of costs, bps (absent while null)",
            labels=["coin"],
        )
        self.age = GaugeMetricFamily(
            "hlsl_signal_age_seconds",
            "Source clock now minus the bar close of the coin's latest signal",
            labels=["coin"],
        )

    def add(self, coin: str, env: dict[str, Any], now_ms: int | None) -> None:
        """One coin's envelope as served at ``now_ms`` (the source clock)."""
        regime = env.get("regime") or {}
        label = regime.get("label")
        for known in RegimeLabel:
            self.regime.add_metric([coin, known.value], 1.0 if label == known.value else 0.0)
        if (conf := _number(regime.get("confidence"))) is not None:
            self.confidence.add_metric([coin], conf)
        if (d := _DIRECTION.get(str(env.get("direction")))) is not None:
            self.direction.add_metric([coin], d)
        edge = env.get("edge") or {}
        if (score := _number(edge.get("score"))) is not None:
            self.score.add_metric([coin], score)
        self.actionable.add_metric([coin], 1.0 if edge.get("actionable") is True else 0.0)
        if (p := _number(edge.get("p_right"))) is not None:
            self.p_right.add_metric([coin], p)
        if (net := _number(edge.get("net_edge_bps"))) is not None:
            self.net_edge.add_metric([coin], net)
        ts = env.get("timestamp_ms")
        if now_ms is not None and isinstance(ts, int):
            self.age.add_metric([coin], max(0, now_ms - ts) / 1000)

    def families(self) -> Iterator[Metric]:
        """The gauges (each present, possibly without samples)."""
        yield from (
            self.regime,
            self.confidence,
            self.direction,
            self.score,
            self.actionable,
            self.p_right,
            self.net_edge,
            self.age,
        )


def shared_store_metrics(st: dict[str, Any]) -> Iterator[Metric]:
    """The shared store's families from its mirror's status."""
    up = GaugeMetricFamily("hlsl_store_up", "1 while this server reads the shared store")
    up.add_metric([], 1.0 if st.get("connected") else 0.0)
    yield up
    lag = GaugeMetricFamily(
        "hlsl_store_mirror_lag_seconds",
        "Time from a Redis write to this server's mirror, recent quantiles",
        labels=["q"],
    )
    for q, key in (("0.5", "p50"), ("0.99", "p99")):
        value = (st.get("mirror_lag_ms") or {}).get(key)
        if value is not None:
            lag.add_metric([q], float(value) / 1000)
    yield lag
    buffered = GaugeMetricFamily(
        "hlsl_store_buffered", "Envelopes the flow processes hold, not yet written"
    )
    buffered.add_metric([], float(st.get("buffered") or 0))
    yield buffered
    yield CounterMetricFamily(
        "hlsl_store_dropped",
        "Envelopes the flow processes dropped while the store was unreachable",
        value=float(st.get("dropped") or 0),
    )
    yield CounterMetricFamily(
        "hlsl_store_outages",
        "Times this server lost the shared store",
        value=float(st.get("outages") or 0),
    )
    procs = GaugeMetricFamily("hlsl_store_processes", "Flow processes reporting to the store")
    procs.add_metric([], float(len(st.get("processes") or ())))
    yield procs


class ServiceCollector(Collector):
    """Reads the store, the push channel and the access counters at scrape time.

    Args:
        store: the signal store.
        refresh: re-judges freshness now (`api.signals.refresh`).
        streams: the push channel.
        access: requests turned away.
        healthy: whether ``/health`` would answer 200.
        store_status: the shared store's status, or None (memory).
    """

    def __init__(
        self,
        store: SignalStore,
        refresh: Refresh,
        streams: Broadcaster,
        access: AccessCounters,
        healthy: Callable[[], bool],
        store_status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.store = store
        self.refresh = refresh
        self.streams = streams
        self.access = access
        self.healthy = healthy
        self.store_status = store_status

    def collect(self) -> Iterable[Metric]:
        """The metric families, computed now."""
        s = self.store
        info = s.source_info() or {}

        up = GaugeMetricFamily("hlsl_up", "1 unless the flow failed or every coin is stale")
        up.add_metric([], 1.0 if self.healthy() else 0.0)
        yield up
        flow = GaugeMetricFamily("hlsl_flow_info", "The flow's mode (value 1)", labels=["mode"])
        flow.add_metric([s.mode], 1.0)
        yield flow
        state = GaugeMetricFamily(
            "hlsl_flow_state", "1 for the flow's current state, 0 for the others", labels=["state"]
        )
        for st in RunState:
            state.add_metric([st.value], 1.0 if s.state is st else 0.0)
        yield state

        yield _counter(
            "hlsl_frames", "Frames read, by channel", "channel", info.get("frames_by_channel", {})
        )
        yield _counter(
            "hlsl_control_frames",
            "Control frames (acks, pongs), by kind",
            "kind",
            info.get("control_frames", {}),
        )
        yield _counter(
            "hlsl_frames_skipped",
            "Input lines/frames skipped, by reason",
            "reason",
            info.get("lines_skipped", {}),
        )
        yield CounterMetricFamily(
            "hlsl_duplicate_trades",
            "Trades seen twice (dropped)",
            value=float(info.get("duplicate_trades", 0)),
        )
        yield CounterMetricFamily(
            "hlsl_ignored_coin_events",
            "Events of coins not tracked",
            value=float(info.get("ignored_coin_events", 0)),
        )
        conns = info.get("connections", [])
        reconnects = CounterMetricFamily(
            "hlsl_reconnects", "Live WebSocket reconnects", labels=["connection"]
        )
        conn_up = GaugeMetricFamily(
            "hlsl_connection_up", "1 if the live connection is open", labels=["connection"]
        )
        for c in conns:
            reconnects.add_metric([str(c.get("name"))], float(c.get("reconnects", 0)))
            conn_up.add_metric([str(c.get("name"))], 1.0 if c.get("connected") else 0.0)
        yield reconnects
        yield conn_up

        yield _counter(
            "hlsl_bars_closed",
            "Bars closed (one envelope each), by coin",
            "coin",
            dict(s.emitted_by_coin),
        )
        yield CounterMetricFamily(
            "hlsl_signals_emitted", "Envelopes stored", value=float(s.signals_emitted)
        )
        yield _counter(
            "hlsl_late_events",
            "Events that arrived after their bar had closed, by coin",
            "coin",
            dict(s.late_events),
        )
        buckets, total = s.lag.snapshot()
        lag = HistogramMetricFamily(
            "hlsl_signal_lag_seconds",
            "Live end-to-end lag: wall clock when stored minus the bar close (exchange time)",
        )
        lag.add_metric([], [(le, float(n)) for le, n in buckets], total)
        yield lag

        age = GaugeMetricFamily(
            "hlsl_data_age_seconds",
            "Age of the coin's newest input on the source clock",
            labels=["coin"],
        )
        stream_age = GaugeMetricFamily(
            "hlsl_stream_age_seconds",
            "Age of each present input stream on the source clock",
            labels=["coin", "stream"],
        )
        stale = GaugeMetricFamily(
            "hlsl_coin_stale", "1 if the coin's latest signal is stale now", labels=["coin"]
        )
        gauges = CoinGauges()
        now = s.now_ms()
        for coin, env in sorted(s.latest_all().items()):
            served = self.refresh(env, now)
            status, newest, streams = _ages(served)
            if newest is not None:
                age.add_metric([coin], newest)
            for name, value in streams.items():
                stream_age.add_metric([coin, name], value)
            stale.add_metric([coin], 1.0 if status == "stale" else 0.0)
            gauges.add(coin, served, now)
        yield age
        yield stream_age
        yield stale
        yield from gauges.families()

        b = self.streams
        subs = GaugeMetricFamily("hlsl_sse_subscribers", "Open /v1/stream clients")
        subs.add_metric([], float(b.subscribers))
        yield subs
        yield CounterMetricFamily(
            "hlsl_sse_connections", "Streams opened", value=float(b.connections)
        )
        yield CounterMetricFamily(
            "hlsl_sse_clients_dropped",
            "Stream clients dropped for falling behind",
            value=float(b.slow_clients),
        )
        yield CounterMetricFamily(
            "hlsl_sse_resume_gaps",
            "Last-Event-ID resumes that could not be gap-free",
            value=float(b.resume_gaps),
        )
        last = GaugeMetricFamily("hlsl_stream_last_id", "Newest stream sequence number")
        last.add_metric([], float(s.last_seq))
        yield last

        if self.store_status is not None:
            yield from shared_store_metrics(self.store_status())

        step_errors = CounterMetricFamily(
            "hlsl_step_errors",
            "Bars whose computation failed in a step (published degraded), by step and coin",
            labels=["step", "coin"],
        )
        for (step, coin), n in sorted(STEP_ERRORS.snapshot().items()):
            step_errors.add_metric([step, coin], float(n))
        yield step_errors

        mcp = CounterMetricFamily(
            "hlsl_mcp_tool_calls", "MCP tool calls, by tool and outcome", labels=["tool", "outcome"]
        )
        for (tool, outcome), n in sorted(MCP_TOOL_CALLS.snapshot().items()):
            mcp.add_metric([tool, outcome], float(n))
        yield mcp

        yield _counter(
            "hlsl_http_rejected",
            "Requests turned away, by reason",
            "reason",
            {"unauthorized": self.access.unauthorized, "rate_limited": self.access.rate_limited},
        )


def make_registry(collector: Collector) -> CollectorRegistry:
    """A fresh registry (one per app) holding ``collector``, the process collector
    (``process_*``) and the HTTP request metrics (`HttpStats`, fed by `HttpMetrics`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    http_stats(registry)
    return registry


def metrics_response(registry: CollectorRegistry) -> Response:
    """The registry in Prometheus text format."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


__all__ = [
    "HTTP_BUCKETS",
    "MAX_TOOL_LABELS",
    "MCP_TOOL_CALLS",
    "METHODS",
    "OUTCOMES",
    "UNMATCHED",
    "CoinGauges",
    "HttpMetrics",
    "HttpStats",
    "ServiceCollector",
    "StaleCheck",
    "ToolCalls",
    "coin_ages",
    "http_stats",
    "make_registry",
    "mcp_tool_call",
    "metrics_response",
    "record_mcp_tool_call",
    "route_template",
]
