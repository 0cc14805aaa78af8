"""The signal dataflow: frames → events → bars → features → regime → edge → envelopes → store.

Step ids read like the diagram::

    read_frames ─► fold_bars_group ─► fold_bars ─► fold_bars_close ─► compute_features
        ─► classify_regime ─► score_edge ─► build_envelope ─► write_store
                                   └─► fold_bars_late ─► count_late

Run it with ``python -m bytewax.run flows.signal`` (configured by ``HLSL_*`` variables, see
`flows.settings.Settings`): it replays ``HLSL_REPLAY``, serves the API while it runs unless
``HLSL_API=0``, exits when the replay ends, and ends cleanly on SIGINT/SIGTERM.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink
from bytewax.testing import run_main

from api.store import RunState, SignalStore
from connectors.errors import FrameError
from connectors.events import Event
from connectors.files import NdjsonSource, ReplayStats
from connectors.live import HyperliquidSource, LiveConfig, Recorder
from connectors.parse import FrameParser
from connectors.rest import InfoClient, resolve_coins
from connectors.sinks import StoreSink
from connectors.validate import ValidationConfig
from flows.settings import Settings, code_version
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


def build_pipeline(
    settings: Settings,
    *,
    collect: bool = False,
    on_build: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
    live_override: LiveConfig | None = None,
) -> Pipeline:
    """Build the pipeline a `Settings` describes: a replay if ``replay`` is set, else live.

    ``live_override`` replaces the connection settings derived from ``settings`` (tests use it
    for short watchdog floors).
    """
    stop = stop if stop is not None else threading.Event()
    collected: list[tuple[str, Envelope]] | None = [] if collect else None
    live = not settings.replay
    stats: ReplayStats | None = None
    source: Source[Event]
    if live:
        coins = live_coins(settings)
        store = SignalStore(settings.history_limit, coins, mode="live")
        recorder = (
            Recorder(settings.record, flush_s=settings.record_flush_s) if settings.record else None
        )
        config = live_override if live_override is not None else live_config(settings)
        hl = HyperliquidSource(coins, config, stop=stop, recorder=recorder)
        store.source_info = hl.info
        source = hl
    else:
        parser = FrameParser(
            frozenset(settings.coins) if settings.coins else None, validation_config(settings)
        )
        stats = ReplayStats(parser=parser)
        skips = stats.skips

        def held_rejection(ex: FrameError) -> None:
            skips.skip(ex.reason, "a coin's first prices (held until confirmed)", ex.detail)

        parser.on_reject = held_rejection
        store = SignalStore(settings.history_limit, settings.coins, mode="replay")
        replay_stats = stats
        store.source_clock = lambda: replay_stats.parser.latest_ms
        store.source_info = lambda: replay_info(replay_stats)
        source = NdjsonSource(
            settings.replay, stats, speed=settings.speed, stop=stop, batch_size=settings.batch_size
        )
    sink = StoreSink(store, collected, on_build, log_path=settings.signals_out)
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


def live_coins(settings: Settings) -> list[str]:
    """Validate the requested coins against the exchange's ``meta`` before any socket opens."""
    if not settings.coins:
        msg = "live mode needs coins: --coins BTC,ETH,SOL (or ALL), or HLSL_COINS"
        raise ValueError(msg)
    listed, delisted = InfoClient(settings.info_url).perps()
    return resolve_coins(settings.coins, listed, delisted)


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
    if p.stats is not None and p.stats.errors:
        p.store.error = "; ".join(p.stats.errors)
    p.store.state = RunState.STOPPED if p.stop.is_set() else RunState.FINISHED


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


def _flow_from_env() -> Dataflow:
    """The module-level ``flow`` for ``python -m bytewax.run flows.signal``."""
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()
    holder: list[Pipeline] = []

    def start_api() -> None:
        if settings.api:
            from api.server import serve_in_thread

            serve_in_thread(holder[0], settings.host, settings.port)

    pipeline = build_pipeline(settings, on_build=start_api, stop=stop)
    holder.append(pipeline)
    pipeline.store.state = RunState.RUNNING
    if threading.current_thread() is threading.main_thread():
        install_stop_handlers(stop)
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
