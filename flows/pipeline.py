"""A run of the signal flow: its settings, source, store, sinks and flow, built and run.

`build_pipeline` builds everything a `Settings` describes (a replay if ``replay`` is set, else
live) and fails at start, before any work; `run_pipeline` runs it on the calling thread and
records the outcome in its store. What serves the store (the API, MCP) is assembled above, in
`api.runtime`; ``python -m bytewax.run flows.signal`` enters there too.

A run of several Bytewax workers (``bytewax.run -w/-i/-a``, ``bytewax.testing -p``; `Cluster`,
`bytewax_cluster`) replays partitioned by coin (`connectors.partitions`), writes
``--signals-out`` and ``--record`` one file per process (``signals.p0.ndjson``), and refuses what
its store cannot do (`check_cluster`).
"""

from __future__ import annotations

import gc
import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import DynamicSink, Sink, StatelessSinkPartition
from bytewax.testing import run_main

from connectors.captures import expand_captures
from connectors.events import Event
from connectors.files import NdjsonSource, ReplayStats
from connectors.live import HyperliquidSource, LiveConfig, Recorder
from connectors.parse import FrameParser
from connectors.partitions import PartitionedReplaySource, ReplayPlan, plan_replay
from connectors.redis_store import RedisWriter, wait_for_redis
from connectors.rest import resolve_coins
from connectors.sinks import StoreSink
from connectors.store import RunState, SignalStore
from connectors.validate import ValidationConfig
from flows.cluster import Cluster
from flows.history import parquet_sink
from flows.outcome import replay_coins, replay_info, replay_problems
from flows.settings import Settings
from flows.startup import check_output_path, fetch_perps
from flows.wiring import build_flow, signal_config

if TYPE_CHECKING:  # imported only with --parquet (flows.history): pyarrow is ~100 MB
    from connectors.parquet import ParquetSink

log = logging.getLogger(__name__)

Envelope = dict[str, Any]


@dataclass
class Pipeline:
    """Everything one run needs: settings, store, source stats, stop event and the flow."""

    settings: Settings
    store: SignalStore
    stats: ReplayStats | None
    stop: threading.Event
    flow: Dataflow
    collected: list[tuple[str, Envelope]] | None = None
    source: Source[Event] | None = None
    problems: list[str] = field(default_factory=list)
    """Why a finished replay gave nothing useful (no frames, no signals, an absent coin)."""
    history: ParquetSink | None = None
    """The Parquet history sink (``--parquet``), if any: its counters say what was written."""
    cluster: Cluster = field(default_factory=Cluster)
    plan: ReplayPlan | None = None
    """A partitioned replay's plan (None: one partition, or live)."""

    def release(self) -> None:
        """Give up what the run made for itself (the split of multi-coin captures, removed by
        the last process done with it) once the run is over."""
        if self.plan is not None:
            self.plan.release()

    writer: RedisWriter | None = None
    """The shared store's writer (``--store redis://…``), or None (memory store)."""

    def finish_writer(self) -> None:
        """Write what the shared store's writer holds and mark this process done (idempotent)."""
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.finish()


class _EndPartition(StatelessSinkPartition[tuple[str, Envelope]]):
    def __init__(
        self, inner: StatelessSinkPartition[tuple[str, Envelope]], done: Callable[[], None]
    ):
        self._inner = inner
        self._done = done

    def write_batch(self, items: list[tuple[str, Envelope]]) -> None:
        self._inner.write_batch(items)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._done()


class EndNotifyingSink(DynamicSink[tuple[str, Envelope]]):
    """A sink that calls ``on_end`` once every partition of this process is closed (the flow
    reached its end); ``local_workers``: the workers of this process that build one."""

    def __init__(
        self,
        inner: DynamicSink[tuple[str, Envelope]],
        on_end: Callable[[], None],
        local_workers: int | None = None,
    ):
        self.inner = inner
        self.on_end = on_end
        self.local_workers = local_workers
        self._lock = threading.Lock()
        self._open = 0
        self._built = 0

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> StatelessSinkPartition[tuple[str, Envelope]]:
        part = self.inner.build(step_id, worker_index, worker_count)
        with self._lock:
            self._open += 1
            self._built += 1
        return _EndPartition(part, lambda: self._closed(worker_count))

    def _closed(self, worker_count: int) -> None:
        # Each process builds the partitions of its own workers only.
        expected = worker_count if self.local_workers is None else self.local_workers
        with self._lock:
            self._open -= 1
            last = self._open == 0 and self._built >= expected
        if last:
            self.on_end()


def build_pipeline(
    settings: Settings,
    *,
    collect: bool = False,
    on_build: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
    live_override: LiveConfig | None = None,
    on_end: Callable[[], None] | None = None,
    cluster: Cluster | None = None,
    tap: Sink[tuple[str, Envelope]] | None = None,
) -> Pipeline:
    """Build the pipeline a `Settings` describes: a replay if ``replay`` is set, else live.

    Everything that can fail at start fails here, before any work: the output paths
    (``signals_out``, ``record``), the captures (a directory replays every capture in it), the
    coins (live: retried while the exchange is unreachable, up to ``start_timeout_s``).
    ``live_override`` replaces the connection settings derived from ``settings`` (tests use it
    for short watchdog floors); ``on_end`` is called when the flow has written its last envelope;
    ``tap`` gets every envelope too (`flows.wiring.build_flow`).
    ``cluster`` is how Bytewax runs the flow: with several workers a replay is partitioned by
    coin, and with several processes each writes its own output files (`Cluster.output_path`).
    """
    cluster = cluster if cluster is not None else Cluster()
    stop = stop if stop is not None else threading.Event()
    collected: list[tuple[str, Envelope]] | None = [] if collect else None
    live = not settings.replay
    stats: ReplayStats | None = None
    plan: ReplayPlan | None = None
    source: Source[Event]
    check_outputs(settings, cluster)
    writer = shared_writer(settings, stop)
    # With a shared store this process's own store keeps only the counters and each coin's
    # latest envelope: the API serves from the shared store's mirror.
    limit = 1 if writer is not None else settings.history_limit
    ring = {"ring_size": 1} if writer is not None else {}
    if live:
        coins = live_coins(settings, stop)
        store = SignalStore(limit, coins, mode="live", **ring)
        record = cluster.output_path(settings.record)
        recorder = Recorder(record, flush_s=settings.record_flush_s) if record else None
        config = live_override if live_override is not None else live_config(settings, cluster)
        hl = HyperliquidSource(coins, config, stop=stop, recorder=recorder)
        store.source_info = hl.info
        source = hl
    else:
        paths = expand_captures(settings.replay)
        wanted = replay_coins(settings)
        validation = validation_config(settings)
        parser = FrameParser(frozenset(wanted) if wanted else None, validation)
        stats = ReplayStats(parser=parser)
        stats.report_held_rejections()
        store = SignalStore(limit, wanted, mode="replay", **ring)
        replay_stats = stats
        store.source_clock = lambda: replay_stats.latest_ms
        store.source_info = lambda: replay_info(replay_stats)
        if cluster.workers > 1:
            plan = plan_replay(
                paths,
                coins=parser.coins,
                run_key=cluster.run_key(),
                spool_root=Path(tempfile.gettempdir()),
                config=validation,
                workers=cluster.workers,
            )
            source = PartitionedReplaySource(
                plan,
                stats,
                speed=settings.speed,
                stop=stop,
                batch_size=settings.batch_size,
                place=(cluster.process_id, cluster.workers_per_process, cluster.processes),
            )
        else:
            source = NdjsonSource(
                paths, stats, speed=settings.speed, stop=stop, batch_size=settings.batch_size
            )
    history = parquet_sink(settings)  # the directory is checked here, before any work
    signals_out = cluster.output_path(settings.signals_out)
    store_sink = StoreSink(store, collected, on_build, log_path=signals_out, shared=writer)
    sink: Sink[tuple[str, Envelope]] = (
        store_sink
        if on_end is None
        else EndNotifyingSink(store_sink, on_end, local_workers=cluster.workers_per_process)
    )
    flow = build_flow(
        source,
        sink,
        bar_ms=settings.bar_ms,
        lateness_ms=settings.lateness_ms,
        live=live,
        config=signal_config(settings),
        on_late=lambda coin, _e: store.count_late(coin),
        history=history,
        tap=tap,
        routes=plan.routes if plan is not None else None,
    )
    if writer is not None:
        writer.join_run()
        writer.start(store)
    return Pipeline(
        settings,
        store,
        stats,
        stop,
        flow,
        collected,
        source=source,
        history=history,
        cluster=cluster,
        plan=plan,
        writer=writer,
    )


def shared_writer(settings: Settings, stop: threading.Event | None) -> RedisWriter | None:
    """The shared store's writer the settings name (None: memory), once Redis answers.

    Raises:
        connectors.redis_store.StoreStartError: refused credentials, or no answer for
            ``start_timeout_s``.
    """
    if not settings.shared_store:
        return None
    wait_for_redis(settings.store, settings.store_timeout_ms, settings.start_timeout_s, stop)
    return RedisWriter(
        settings.store,
        settings.store_key_prefix(),
        timeout_ms=settings.store_timeout_ms,
        history_limit=settings.history_limit,
    )


def validation_config(settings: Settings) -> ValidationConfig:
    """The edge's validation limits from `Settings`."""
    return ValidationConfig(
        max_clock_skew_ms=settings.max_clock_skew_ms,
        max_price_jump=settings.max_price_jump,
        trust_legacy_control=settings.trust_legacy_control,
        max_json_depth=settings.max_json_depth,
    )


def live_config(settings: Settings, cluster: Cluster | None = None) -> LiveConfig:
    """Connection settings from `Settings` (and how many processes of the cluster share this
    host's IP: each takes its share of the per-IP budgets)."""
    return LiveConfig(
        ip_share=(cluster or Cluster()).processes_on_this_host(),
        validation=validation_config(settings),
        ws_url=settings.ws_url,
        info_url=settings.info_url,
        book_fast=settings.book_fast,
        warm_start=settings.warm_start,
        ping_interval_s=settings.ping_interval_s,
        stall_timeout_s=settings.stall_timeout_s,
        batch_size=settings.batch_size,
    )


def check_outputs(settings: Settings, cluster: Cluster | None = None) -> None:
    """Fail now if an output file named by the settings (this process's, in a cluster) cannot
    be written (`StartupError`)."""
    cluster = cluster if cluster is not None else Cluster()
    signals_out = cluster.output_path(settings.signals_out)
    record = cluster.output_path(settings.record)
    if signals_out:
        check_output_path(signals_out, "--signals-out (HLSL_SIGNALS_OUT)")
    if record:
        check_output_path(record, "--record (HLSL_RECORD)")


def live_coins(settings: Settings, stop: threading.Event | None = None) -> list[str]:
    """Validate the requested coins against the exchange's ``meta`` before any socket opens.

    Network errors are retried with backoff (one warning per attempt) until
    ``settings.start_timeout_s``; an unknown coin fails at once.
    """
    if not settings.coins:
        msg = "live mode needs coins: --coins BTC,ETH,SOL (or ALL), or HLSL_COINS"
        raise ValueError(msg)
    listed, delisted = fetch_perps(settings.info_url, settings.start_timeout_s, stop)
    return resolve_coins(settings.coins, listed, delisted)


def finish_run(p: Pipeline) -> None:
    """Record how a run ended in its store: finished or stopped, and a replay's problems."""
    stopped = p.stop.is_set()
    errors = list(p.stats.errors) if p.stats is not None else []
    if p.stats is not None and not stopped:
        p.problems = replay_problems(p.settings, p.stats, p.store)
        errors.extend(p.problems)
    if errors:
        p.store.error = "; ".join(errors)
    p.store.state = RunState.STOPPED if stopped else RunState.FINISHED
    p.release()
    p.finish_writer()


def tune_gc() -> None:
    """Make the cyclic GC cheap for a long-running flow (bytewax-0.21.md §7.1).

    Start-up objects are frozen out of collection and the young-generation threshold is raised:
    parsed frames die young, so frequent gen-0 scans only cost time.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def run_pipeline(p: Pipeline, epoch_interval: timedelta = timedelta(seconds=10)) -> None:
    """Run a pipeline to its end on this thread, recording the outcome in its store."""
    p.store.state = RunState.RUNNING
    try:
        run_main(p.flow, epoch_interval=epoch_interval)
    except BaseException as ex:
        p.store.state = RunState.FAILED
        p.store.error = f"{type(ex).__name__}: {ex}"
        log.exception("the signal flow failed")
        p.finish_writer()
        raise
    finish_run(p)
