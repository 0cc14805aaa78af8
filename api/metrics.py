"""``GET /metrics``: the service in Prometheus text format, read from the store at scrape time.

Each app gets its own `prometheus_client.CollectorRegistry` holding one `ServiceCollector`, so
apps (and tests) never collide and the flow carries no Prometheus objects: counters the source
and store already keep are turned into metric families when scraped.

=====================================  =======  ==============================================
metric                                 type     from
=====================================  =======  ==============================================
``hlsl_up``                            gauge    1 unless the flow failed or every coin is stale
``hlsl_flow_info{state,mode}``         gauge    the flow's state (value 1)
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

and ``hlsl_step_errors_total{step,coin}`` (counter): bars whose computation failed in a step and
were published degraded, from `operators.failures.STEP_ERRORS` (process-wide).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.responses import Response

from api.security import AccessCounters
from api.store import SignalStore
from api.stream import Broadcaster, Refresh
from operators.failures import STEP_ERRORS

StaleCheck = Callable[[], bool]


def _counter(name: str, doc: str, label: str, values: dict[str, Any]) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        fam.add_metric([str(key)], float(value))
    return fam


def coin_ages(
    store: SignalStore, refresh: Refresh
) -> dict[str, tuple[str, float | None, dict[str, float]]]:
    """Per coin with a signal: freshness status now, newest input age (s), age per stream (s)."""
    now = store.now_ms()
    out: dict[str, tuple[str, float | None, dict[str, float]]] = {}
    for coin, env in sorted(store.latest_all().items()):
        fresh = refresh(env, now)["freshness"]
        streams = {
            name: s["age_ms"] / 1000
            for name, s in fresh["streams"].items()
            if s.get("age_ms") is not None
        }
        out[coin] = (fresh["status"], min(streams.values()) if streams else None, streams)
    return out


class ServiceCollector(Collector):
    """Reads the store, the push channel and the access counters at scrape time.

    Args:
        store: the signal store.
        refresh: re-judges freshness now (`api.app.refresh`).
        streams: the push channel.
        access: requests turned away.
        healthy: whether ``/health`` would answer 200.
    """

    def __init__(
        self,
        store: SignalStore,
        refresh: Refresh,
        streams: Broadcaster,
        access: AccessCounters,
        healthy: Callable[[], bool],
    ) -> None:
        self.store = store
        self.refresh = refresh
        self.streams = streams
        self.access = access
        self.healthy = healthy

    def collect(self) -> Iterable[Metric]:
        """The metric families, computed now."""
        s = self.store
        info = s.source_info() or {}

        up = GaugeMetricFamily("hlsl_up", "1 unless the flow failed or every coin is stale")
        up.add_metric([], 1.0 if self.healthy() else 0.0)
        yield up
        flow = GaugeMetricFamily("hlsl_flow_info", "The flow's state", labels=["state", "mode"])
        flow.add_metric([str(s.state), s.mode], 1.0)
        yield flow

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
        for coin, (status, newest, streams) in coin_ages(s, self.refresh).items():
            if newest is not None:
                age.add_metric([coin], newest)
            for name, value in streams.items():
                stream_age.add_metric([coin, name], value)
            stale.add_metric([coin], 1.0 if status == "stale" else 0.0)
        yield age
        yield stream_age
        yield stale

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

        step_errors = CounterMetricFamily(
            "hlsl_step_errors",
            "Bars whose computation failed in a step (published degraded), by step and coin",
            labels=["step", "coin"],
        )
        for (step, coin), n in sorted(STEP_ERRORS.snapshot().items()):
            step_errors.add_metric([step, coin], float(n))
        yield step_errors

        yield _counter(
            "hlsl_http_rejected",
            "Requests turned away, by reason",
            "reason",
            {"unauthorized": self.access.unauthorized, "rate_limited": self.access.rate_limited},
        )


def make_registry(collector: Collector) -> CollectorRegistry:
    """A fresh registry holding only ``collector`` (one per app)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def metrics_response(registry: CollectorRegistry) -> Response:
    """The registry in Prometheus text format."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


__all__ = ["ServiceCollector", "coin_ages", "make_registry", "metrics_response"]
