"""The signal dataflow's wiring: frames → events → bars → features → regime → edge → envelopes.

Step ids read like the diagram::

    read_frames ─► fold_bars_group ─► fold_bars ─► fold_bars_close ─► compute_features
        ─► classify_regime ─► score_edge ─► build_envelope ─► write_store
                                   └─► fold_bars_late ─► count_late

`build_flow` wires any event source to any envelope sink (tests use Bytewax's testing sources
and sinks); `signal_config` turns `Settings` into the operators' configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from connectors.events import Event
from flows.settings import Settings, code_version
from operators import steps
from operators.bars import fold_bars
from operators.edge import EdgeConfig
from operators.envelope import Producer
from operators.features import FeatureConfig
from operators.regime import RegimeConfig

Envelope = dict[str, Any]


def _by_coin(item: tuple[str, Envelope]) -> tuple[str, Envelope]:
    return item[1]["coin"], item[1]


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
    history: Sink[tuple[str, Envelope]] | None = None,
    tap: Sink[tuple[str, Envelope]] | None = None,
    routes: Mapping[str, str] | None = None,
) -> Dataflow:
    """Wire the signal dataflow from any event source to any envelope sink.

    ``history`` (e.g. the Parquet sink, `flows.history`) gets every envelope too, in a step of its
    own (``write_history``) beside ``write_store``; so does ``tap`` (``write_tap``: e.g.
    ``tools.replay``'s ordered ``--out`` writer).
    """
    cfg = config if config is not None else steps.SignalConfig()
    producer = Producer(code_version(), bar_ms, lateness_ms)
    flow = Dataflow("hyperliquid_signal")
    events = op.input("read_frames", flow, source)
    bars, late = fold_bars(
        "fold_bars", events, bar_ms=bar_ms, lateness_ms=lateness_ms, live=live, routes=routes
    )
    if on_late is not None:
        count = on_late

        def inspect_late(_step: str, item: tuple[str, Event]) -> None:
            count(item[1].coin, item[1])

        op.inspect("count_late", late, inspect_late)
    fvs = steps.features("compute_features", bars, cfg.features)
    regimes = steps.regime("classify_regime", fvs, cfg.regime)
    scored = steps.score("score_edge", regimes, cfg.edge, cfg.calibration)
    envelopes = steps.envelope("build_envelope", scored, producer)
    if routes:
        envelopes = op.map("unroute", envelopes, _by_coin)
    op.output("write_store", envelopes, sink)
    if history is not None:
        op.output("write_history", envelopes, history)
    if tap is not None:
        op.output("write_tap", envelopes, tap)
    return flow
