"""A run of the signal flow: its settings, source, store, sinks and flow, built and run.

`build_pipeline` builds everything a `Settings` describes (a replay if ``replay`` is set, else
live) and fails at start, before any work; `run_pipeline` runs it on the calling thread and
records the outcome in its store. What serves the store (the API, MCP) is assembled above, in
`api.runtime`; ``python -m bytewax.run flows.signal`` enters there too.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import DynamicSink, Sink, StatelessSinkPartition
from bytewax.testing import run_main

from connectors.captures import expand_captures
from connectors.errors import FrameError
from connectors.events import Event
from connectors.files import NdjsonSource, ReplayStats
from connectors.live import HyperliquidSource, LiveConfig, Recorder
from connectors.parquet import ParquetSink
from connectors.parse import FrameParser
from connectors.rest import resolve_coins
from connectors.sinks import StoreSink
from connectors.store import RunState, SignalStore
from connectors.validate import ValidationConfig
from flows.history import parquet_sink
from flows.outcome import replay_coins, replay_info, replay_problems
from flows.settings import Settings
from flows.startup import check_output_path, fetch_perps
from flows.wiring import build_flow, signal_config

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
    """A sink that calls ``on_end`` once every partition is closed (the flow reached its end)."""

    def __init__(self, inner: DynamicSink[tuple[str, Envelope]], on_end: Callable[[], None]):
        self.inner = inner
        self.on_end = on_end
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
        with self._lock:
            self._open -= 1
            last = self._open == 0 and self._built >= worker_count
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
    tap: Sink[tuple[str, Envelope]] | None = None,
) -> Pipeline:
    """Build the pipeline a `Settings` describes: a replay if ``replay`` is set, else live.

    Everything that can fail at start fails here, before any work: the output paths
    (``signals_out``, ``record``), the captures (a directory replays every capture in it), the
    coins (live: retried while the exchange is unreachable, up to ``start_timeout_s``).
    ``live_override`` replaces the connection settings derived from ``settings`` (tests use it
    for short watchdog floors); ``on_end`` is called when the flow has written its last envelope;
    ``tap`` gets every envelope too (`flows.wiring.build_flow`).
    """
    stop = stop if stop is not None else threading.Event()
    collected: list[tuple[str, Envelope]] | None = [] if collect else None
    live = not settings.replay
    stats: ReplayStats | None = None
    source: Source[Event]
    check_outputs(settings)
    if live:
        coins = live_coins(settings, stop)
        store = SignalStore(settings.history_limit, coins, mode="live")
        recorder = (
            Recorder(settings.record, flush_s=settings.record_flush_s) if settings.record else None
        )
        config = live_override if live_override is not None else live_config(settings)
        hl = HyperliquidSource(coins, config, stop=stop, recorder=recorder)
        store.source_info = hl.info
        source = hl
    else:
        paths = expand_captures(settings.replay)
        wanted = replay_coins(settings)
        parser = FrameParser(frozenset(wanted) if wanted else None, validation_config(settings))
        stats = ReplayStats(parser=parser)
        skips = stats.skips

        def held_rejection(ex: FrameError) -> None:
            skips.skip(ex.reason, "a coin's first prices (held until confirmed)", ex.detail)

        parser.on_reject = held_rejection
        store = SignalStore(settings.history_limit, wanted, mode="replay")
        replay_stats = stats
        store.source_clock = lambda: replay_stats.parser.latest_ms
        store.source_info = lambda: replay_info(replay_stats)
        source = NdjsonSource(
            paths, stats, speed=settings.speed, stop=stop, batch_size=settings.batch_size
        )
    history = parquet_sink(settings)  # the directory is checked here, before any work
    store_sink = StoreSink(store, collected, on_build, log_path=settings.signals_out)
    sink: Sink[tuple[str, Envelope]] = (
        store_sink if on_end is None else EndNotifyingSink(store_sink, on_end)
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
    )
    return Pipeline(settings, store, stats, stop, flow, collected, source=source, history=history)


def validation_config(settings: Settings) -> ValidationConfig:
    """The edge's validation limits from `Settings`."""
    return ValidationConfig(
        max_clock_skew_ms=settings.max_clock_skew_ms,
        max_price_jump=settings.max_price_jump,
        trust_legacy_control=settings.trust_legacy_control,
        max_json_depth=settings.max_json_depth,
    )


def live_config(settings: Settings) -> LiveConfig:
    """Connection settings from `Settings`."""
    return LiveConfig(
        validation=validation_config(settings),
        ws_url=settings.ws_url,
        info_url=settings.info_url,
        book_fast=settings.book_fast,
        warm_start=settings.warm_start,
        ping_interval_s=settings.ping_interval_s,
        stall_timeout_s=settings.stall_timeout_s,
        batch_size=settings.batch_size,
    )


def check_outputs(settings: Settings) -> None:
    """Fail now if an output file named by the settings cannot be written (`StartupError`)."""
    if settings.signals_out:
        check_output_path(settings.signals_out, "--signals-out (HLSL_SIGNALS_OUT)")
    if settings.record:
        check_output_path(settings.record, "--record (HLSL_RECORD)")


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
        raise
    finish_run(p)
