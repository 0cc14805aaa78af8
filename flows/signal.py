"""The signal dataflow: frames → events → bars → features → regime → edge → envelopes → store.

Step ids read like the diagram::

    read_frames ─► fold_bars_group ─► fold_bars ─► fold_bars_close ─► compute_features
        ─► classify_regime ─► score_edge ─► build_envelope ─► write_store
                                   └─► fold_bars_late ─► count_late

Run it with ``python -m bytewax.run flows.signal`` (configured by ``HLSL_*`` variables, see
`flows.settings.Settings`): it replays ``HLSL_REPLAY`` (files or directories of captures), or
reads the exchange live, and ends cleanly on SIGINT/SIGTERM. With ``HLSL_API=1`` (the default) the
API is bound before the flow starts and keeps serving after a replay ends, until SIGINT/SIGTERM;
with ``HLSL_API=0`` a replay exits after a summary (0, or 2 when it produced nothing). A start-up
error (a setting, a capture, an output path, the port, the exchange) is one line,
``cannot start: …``, and exit status 2; with no output at all (no API, no ``HLSL_SIGNALS_OUT``,
no ``HLSL_RECORD``) the flow refuses to start.
"""

from __future__ import annotations

import atexit
import difflib
import gc
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import DynamicSink, Sink, StatelessSinkPartition
from bytewax.testing import run_main

from connectors.captures import expand_captures
from connectors.errors import FeedError, FrameError
from connectors.events import Event
from connectors.files import NdjsonSource, ReplayStats, open_capture
from connectors.live import HyperliquidSource, LiveConfig, Recorder
from connectors.parse import FrameParser
from connectors.rest import resolve_coins
from connectors.sinks import StoreSink
from connectors.store import RunState, SignalStore
from connectors.validate import ValidationConfig
from flows.settings import Settings, code_version
from flows.startup import (
    LOG_FORMAT,
    StartupError,
    bind_listener,
    check_output_path,
    fail,
    fetch_perps,
)
from operators import steps
from operators.bars import fold_bars
from operators.edge import EdgeConfig
from operators.envelope import Producer
from operators.features import FeatureConfig
from operators.regime import RegimeConfig

log = logging.getLogger(__name__)

Envelope = dict[str, Any]


def signal_config(settings: Settings) -> steps.SignalConfig:
    """The operator configuration a `Settings` implies."""
    window = settings.window_obs
    return steps.SignalConfig(
        features=FeatureConfig(
            window_obs=window,
            short_obs=max(2, min(10, window // 3)),
            long_obs=max(window, 10 * window),
            warmup_obs=settings.warmup_obs,
            depth_band_bps=settings.depth_band_bps,
        ),
        regime=RegimeConfig(),
        edge=EdgeConfig(taker_fee_bps=settings.taker_fee_bps, size_usd=settings.edge_size_usd),
        calibration=settings.calibration_table(),
    )


def build_flow(
    source: Source[Event],
    sink: Sink[tuple[str, Envelope]],
    *,
    bar_ms: int = 1000,
    lateness_ms: int = 1000,
    live: bool = False,
    config: steps.SignalConfig | None = None,
    on_late: Callable[[str, Event], None] | None = None,
) -> Dataflow:
    """Wire the signal dataflow from any event source to any envelope sink."""
    cfg = config if config is not None else steps.SignalConfig()
    producer = Producer(code_version(), bar_ms, lateness_ms)
    flow = Dataflow("hyperliquid_signal")
    events = op.input("read_frames", flow, source)
    bars, late = fold_bars("fold_bars", events, bar_ms=bar_ms, lateness_ms=lateness_ms, live=live)
    if on_late is not None:
        count = on_late

        def inspect_late(_step: str, item: tuple[str, Event]) -> None:
            count(item[0], item[1])

        op.inspect("count_late", late, inspect_late)
    fvs = steps.features("compute_features", bars, cfg.features)
    regimes = steps.regime("classify_regime", fvs, cfg.regime)
    scored = steps.score("score_edge", regimes, cfg.edge, cfg.calibration)
    envelopes = steps.envelope("build_envelope", scored, producer)
    op.output("write_store", envelopes, sink)
    return flow


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
) -> Pipeline:
    """Build the pipeline a `Settings` describes: a replay if ``replay`` is set, else live.

    Everything that can fail at start fails here, before any work: the output paths
    (``signals_out``, ``record``), the captures (a directory replays every capture in it), the
    coins (live: retried while the exchange is unreachable, up to ``start_timeout_s``).
    ``live_override`` replaces the connection settings derived from ``settings`` (tests use it
    for short watchdog floors); ``on_end`` is called when the flow has written its last envelope.
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
    )
    return Pipeline(settings, store, stats, stop, flow, collected, source=source)


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


def replay_coins(settings: Settings) -> list[str]:
    """The coins a replay keeps (empty: every coin; ``ALL`` means every coin too)."""
    if [c.upper() for c in settings.coins] == ["ALL"]:
        return []
    return list(settings.coins)


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


SCAN_LINES = 200_000
"""Lines read at most to learn which coins a capture holds (only when a requested one is absent)."""


def capture_coins(paths: Sequence[str], max_lines: int = SCAN_LINES) -> set[str]:
    """The coins the first ``max_lines`` lines of some captures carry (best effort)."""
    parser = FrameParser()
    n = 0
    for path in paths:
        try:
            fh = open_capture(Path(path))
        except OSError:
            continue
        with fh:
            try:
                for line in fh:
                    n += 1
                    if n > max_lines:
                        return parser.seen_coins
                    try:
                        parser.parse_line(line.rstrip(b"\r\n"))
                    except Exception:  # any bad line: skipped, as the replay did
                        continue
            except (EOFError, OSError, ValueError, RuntimeError):
                continue
    return parser.seen_coins


def _coin_problems(requested: Iterable[str], seen: set[str], paths: Sequence[str]) -> list[str]:
    missing = [c for c in requested if c not in seen]
    if not missing:
        return []
    present = capture_coins(paths)
    out = []
    for coin in missing:
        folded = sorted(c for c in present if c.lower() == coin.lower())
        near = folded or difflib.get_close_matches(coin, sorted(present), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in near)}?" if near else ""
        listed = ", ".join(sorted(present)[:20]) or "none"
        out.append(
            f"unknown coin {coin!r} in this capture{hint} (coin names are case-sensitive; "
            f"coins in it: {listed})"
        )
    return out


def skip_counts(stats: ReplayStats) -> str:
    """Lines skipped by reason, as ``reason=n, ...`` (or ``none``)."""
    return ", ".join(f"{k}={v}" for k, v in sorted(stats.skipped.items())) or "none"


def replay_problems(p: Pipeline) -> list[str]:
    """Why a finished replay gave nothing useful: no frames, no signals, requested coins absent."""
    stats = p.stats
    if stats is None:
        return []
    files = ", ".join(stats.files)
    problems = _coin_problems(replay_coins(p.settings), stats.parser.seen_coins, stats.files)
    if stats.frames == 0:
        problems.append(
            f"no data frames accepted from {files} ({stats.lines} lines read; "
            f"skipped: {skip_counts(stats)})"
        )
    elif p.store.signals_emitted == 0:
        problems.append(
            f"no signals produced from {stats.frames} data frames of {files} "
            f"(skipped: {skip_counts(stats)})"
        )
    return problems


def finish_run(p: Pipeline) -> None:
    """Record how a run ended in its store: finished or stopped, and a replay's problems."""
    stopped = p.stop.is_set()
    errors = list(p.stats.errors) if p.stats is not None else []
    if p.stats is not None and not stopped:
        p.problems = replay_problems(p)
        errors.extend(p.problems)
    if errors:
        p.store.error = "; ".join(errors)
    p.store.state = RunState.STOPPED if stopped else RunState.FINISHED


def replay_info(stats: ReplayStats) -> dict[str, Any]:
    """What a replay source has done so far (for /health, /v1/state and summaries)."""
    p = stats.parser
    return {
        "kind": "replay",
        "files": list(stats.files),
        "lines_read": stats.lines,
        "frames_by_channel": dict(sorted(p.frames.items())),
        "control_frames": dict(sorted(p.control.items())),
        "lines_skipped": dict(sorted(stats.skipped.items())),
        "duplicate_trades": p.duplicates,
        "ignored_coin_events": p.ignored_coin,
        "errors": list(stats.errors),
        "finished": stats.finished,
        "latest_event_ms": p.latest_ms,
    }


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


def install_stop_handlers(stop: threading.Event) -> None:
    """On SIGINT/SIGTERM set ``stop`` (the sources end, windows flush) instead of aborting.

    Bytewax's own handling on the main thread is an abrupt abort (bytewax-0.21.md §5.4); a Python
    handler that only sets an event lets the flow reach a clean end of input. A second signal
    exits at once.
    """

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise SystemExit(128 + signum)
        log.info("signal %s: stopping the flow", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def start_message(ex: BaseException) -> str:
    """The one line a start-up failure is reported with."""
    if isinstance(ex, ValueError | OSError | FeedError):
        return str(ex)
    return f"{type(ex).__name__}: {ex}"


def _one_line(ex: BaseException) -> str:
    """An exception in one line: its first line and, if it has one, its root cause's."""

    def first(e: BaseException) -> str:
        text = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
        return f"{type(e).__name__}: {text}" if text else type(e).__name__

    root = ex
    seen = {id(ex)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        root = nxt
    return first(ex) if root is ex else f"{first(ex)} (caused by {first(root)})"


class _EntryState:
    """What the ``bytewax.run`` entry needs after the flow ends: the exit status to force."""

    exit_status = 0


def _flow_ended(p: Pipeline) -> None:
    """The flow wrote its last envelope (under ``bytewax.run``): record it and summarise."""
    finish_run(p)
    stats = p.stats
    if stats is not None:
        log.info(
            "replay %s: %d signals from %d data frames (%d lines read; skipped: %s)",
            p.store.state,
            p.store.signals_emitted,
            stats.frames,
            stats.lines,
            skip_counts(stats),
        )
    else:
        log.info("signal flow %s: %d signals", p.store.state, p.store.signals_emitted)
    for problem in p.problems:
        log.error("%s", problem)
    if p.settings.api:
        log.info("the API keeps serving the final state until SIGINT/SIGTERM")
    elif p.problems or (stats is not None and stats.errors):
        _EntryState.exit_status = 2 if p.problems else 1


def _force_exit_status() -> None:
    # atexit: the flow is done and every thread has ended; bytewax.run itself would exit 0.
    status = _EntryState.exit_status
    if status:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _entry_pipeline() -> Pipeline:
    settings = Settings.load()
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    if not (settings.api or settings.signals_out or settings.record):
        msg = (
            "nothing would receive the signals: HLSL_API=0 and no HLSL_SIGNALS_OUT (or "
            "HLSL_RECORD); serve the API or write the signals to a file"
        )
        raise StartupError(msg)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_stop_handlers(stop)
    sock: socket.socket | None = None
    if settings.api:
        sock = bind_listener(settings.host, settings.port)
    holder: list[Pipeline] = []
    try:
        pipeline = build_pipeline(settings, stop=stop, on_end=lambda: _flow_ended(holder[0]))
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    holder.append(pipeline)
    pipeline.store.state = RunState.RUNNING
    if sock is not None:
        from api.server import serve_in_thread

        serve_in_thread(pipeline, sock, stop)

    def flow_failed(
        kind: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        # A flow that fails under bytewax.run surfaces here: one line, the rest at DEBUG.
        pipeline.store.state = RunState.FAILED
        pipeline.store.error = _one_line(value)
        log.error("the signal flow failed: %s", _one_line(value))
        log.debug("the signal flow failed", exc_info=(kind, value, tb))
        if settings.api:
            log.info("the API keeps serving (status failed) until SIGINT/SIGTERM")

    sys.excepthook = flow_failed
    atexit.register(_force_exit_status)
    return pipeline


def _flow_from_env() -> Dataflow:
    """The module-level ``flow`` for ``python -m bytewax.run flows.signal``.

    Every start-up failure is one line, ``cannot start: …``, and exit status 2 (bytewax.run
    imports the flow in Python, so a `SystemExit` here ends the process cleanly).
    """
    try:
        pipeline = _entry_pipeline()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        fail("interrupted", log)
    except Exception as ex:  # no traceback at start: one line, details at DEBUG
        log.debug("start-up failed", exc_info=True)
        fail(start_message(ex), log)
    tune_gc()
    return pipeline.flow


def __getattr__(name: str) -> Any:
    # Built on first access, so importing this module for `build_flow` has no side effects.
    if name == "flow":
        flow = _flow_from_env()
        globals()["flow"] = flow
        return flow
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
