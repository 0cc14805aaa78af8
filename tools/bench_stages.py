"""The cost of a bar, and of a frame, split by stage, as ratios to plain JSON parsing.

    python -m tools.bench --stages [PATH] [--repeat 5] [--json]

`tools.bench` measures the per-bar cost as the full flow's time minus the frame path's. This
program says where that cost goes: the bars the flow's windows close on the capture (the same
`operators.bars.fold_bars` step, run once through Bytewax) are fed, outside Bytewax and in the
flow's order, through each stage's own step function, one stage over every bar at a time:

- features: `operators.steps.update_features` (feature state per coin, range checks);
- regime: `operators.steps.classify` (volatility state, forecast ratio, rules, hysteresis);
- score: `operators.steps.score_bar` (freshness, signals, forecast with its adaptive interval,
  calibrated edge net of costs);
- envelope: `operators.steps.publish` (the envelope built, checked and encoded once);
- store: the store sink's work (`connectors.stored.StoredEnvelope`, `SignalStore.put_many`,
  in batches of 64 as the flow hands them over).

Each round also times the reference (``orjson.loads`` of every line, `tools.bench`), so every
stage is given in µs per bar and as a ratio to the reference's time per line; best and median of
the rounds, and the load average. The sum leaves out Bytewax's own per-item cost (a stateful
step costs a few µs per item), so it is a little under `tools.bench`'s ``us_per_bar``.

The frame path (`tools.bench`'s "frame path", the flow cut after its windows) is split the same
way, per frame: ``read`` (decompress and split the lines, `tools.bench_reference.line_chunks`),
``parse`` (the replay source drained without Bytewax, `connectors.files.read_events`: typed
decoding and validation into events, minus ``read``) and ``windows`` (the frame path through
Bytewax with `operators.bars.fold_bars`, minus both).

It holds the capture's bars, and for ``parse`` its events, in memory: meant for captures of
minutes (the real one, ``--whole-market --seconds 300``'s), not a whole-market hour.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from connectors.files import read_events
from connectors.store import SignalStore
from connectors.stored import StoredEnvelope
from flows.pipeline import tune_gc
from operators import steps
from operators.bars import Bar
from operators.edge import EdgeScorer
from operators.envelope import Producer
from operators.interval import IntervalTracker
from tools.bench_reference import capture_or_default, frame_path, line_chunks, reference_rate_of

STAGES = ("features", "regime", "score", "envelope", "store")
FRAME_STAGES = ("read", "parse", "windows")
BATCH = 64


def closed_bars(path: Path) -> list[tuple[str, Bar]]:
    """``(coin, bar)`` for every bar the flow's 1 s windows close on the capture, in order."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import run_main

    from connectors.files import NdjsonSource, ReplayStats
    from operators.bars import fold_bars

    flow = Dataflow("bench_stages")
    events = op.input("read_frames", flow, NdjsonSource([path], ReplayStats()))
    bars, late = fold_bars("fold_bars", events, bar_ms=1000, lateness_ms=1000)
    out: list[tuple[str, Bar]] = []

    def keep(_step: str, item: tuple[str, Bar]) -> None:
        out.append(item)

    def drop(_step: str, _item: object) -> None:
        return None

    op.inspect("keep_bars", bars, keep)
    op.inspect("drop_late", late, drop)
    run_main(flow)
    return out


def _per_coin(
    items: list[tuple[str, Any]], mapper: Callable[[Any, Any], tuple[Any, Any]]
) -> list[tuple[str, Any]]:
    """``mapper(state, item) -> (state, out)`` over the items, with a state per coin (as a keyed
    Bytewax ``stateful_map`` holds it)."""
    states: dict[str, Any] = {}
    out = []
    for coin, item in items:
        state, result = mapper(states.get(coin), item)
        states[coin] = state
        out.append((coin, result))
    return out


def one_round(bars: list[tuple[str, Bar]]) -> dict[str, float]:
    """Seconds each stage took over every bar (fresh state per coin, as a new replay)."""
    cfg = steps.SignalConfig()
    scorer = EdgeScorer(cfg.edge, cfg.calibration)
    producer = Producer("bench", 1000, 1000)

    def features(state: Any, bar: Bar) -> tuple[Any, Any]:
        return steps.update_features("f", cfg.features, state, bar)

    def regime(state: Any, fv: Any) -> tuple[Any, Any]:
        return steps.classify("r", cfg.regime, state, fv)

    def score(state: IntervalTracker | None, item: Any) -> tuple[IntervalTracker, Any]:
        if state is None:
            state = IntervalTracker.for_model(scorer.vol_model)
        return state, steps.score_bar("s", scorer, item, state)

    clock = time.perf_counter
    gc.collect()
    t0 = clock()
    fvs = _per_coin(bars, features)
    t1 = clock()
    regimes = _per_coin(fvs, regime)
    t2 = clock()
    scored = _per_coin(regimes, score)
    t3 = clock()
    envelopes = [(coin, steps.publish("e", producer, s)) for coin, s in scored]
    t4 = clock()
    store = SignalStore()
    for i in range(0, len(envelopes), BATCH):
        store.put_many(
            [(c, StoredEnvelope(env)) for c, env in envelopes[i : i + BATCH] if env is not None]
        )
    t5 = clock()
    return {
        "features": t1 - t0,
        "regime": t2 - t1,
        "score": t3 - t2,
        "envelope": t4 - t3,
        "store": t5 - t4,
    }


def frame_round(path: Path) -> tuple[dict[str, float], int]:
    """Seconds of each frame-path stage over the capture (``read``, ``parse``, ``windows``), and
    the number of lines."""
    clock = time.perf_counter
    gc.collect()
    t0 = clock()
    lines = sum(len(chunk) for chunk, _ in line_chunks(path))
    read = clock() - t0
    gc.collect()
    t0 = clock()
    read_events([path])
    parsed = clock() - t0
    rate, _ = frame_path(path)
    whole = lines / rate
    took = {"read": read, "parse": parsed - read, "windows": whole - parsed}
    return took, lines


def _summary(values: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        k: {"best": round(min(v), 2), "median": round(statistics.median(v), 2)}
        for k, v in values.items()
    }


def bench(path: Path, repeat: int) -> dict[str, Any]:
    """Interleaved rounds of the reference and the stages; µs per bar and ratios per stage."""
    tune_gc()
    bars = closed_bars(path)
    n = max(1, len(bars))
    per_stage: dict[str, list[float]] = {s: [] for s in (*STAGES, "sum")}
    ratios: dict[str, list[float]] = {s: [] for s in (*STAGES, "sum")}
    per_frame: dict[str, list[float]] = {s: [] for s in (*FRAME_STAGES, "sum")}
    frame_ratios: dict[str, list[float]] = {s: [] for s in (*FRAME_STAGES, "sum")}
    lines = 0
    for _ in range(repeat):
        us_line = 1e6 / reference_rate_of(path)
        took = one_round(bars)
        took["sum"] = sum(took.values())
        for stage, seconds in took.items():
            us = seconds / n * 1e6
            per_stage[stage].append(us)
            ratios[stage].append(us / us_line)
        took, lines = frame_round(path)
        took["sum"] = sum(took.values())
        for stage, seconds in took.items():
            us = seconds / max(1, lines) * 1e6
            per_frame[stage].append(us)
            frame_ratios[stage].append(us / us_line)
    load = os.getloadavg()
    return {
        "capture": str(path),
        "bars": len(bars),
        "rounds": repeat,
        "frames": lines,
        "us_per_bar": _summary(per_stage),
        "bar_to_line_ratio": _summary(ratios),
        "us_per_frame": _summary(per_frame),
        "frame_to_line_ratio": _summary(frame_ratios),
        "load_avg_1m": round(load[0], 2),
        "load_avg": [round(x, 2) for x in load],
    }


def report(r: dict[str, Any]) -> str:
    """The result of `bench` as text."""
    load = " / ".join(f"{x:.2f}" for x in r["load_avg"])
    lines = [
        f"capture   {r['capture']}",
        f"          {r['bars']:,} bars, each stage over all of them, outside Bytewax",
        f"rounds    {r['rounds']} (interleaved with the orjson.loads reference; best / median); "
        f"load average {load}",
        "stage         us per bar          ratio to one orjson.loads line",
    ]
    for s in (*STAGES, "sum"):
        us, ratio = r["us_per_bar"][s], r["bar_to_line_ratio"][s]
        lines.append(
            f"{s:<10} {us['best']:>8.1f} / {us['median']:>8.1f}    "
            f"{ratio['best']:>8.1f} / {ratio['median']:>8.1f}"
        )
    lines.append(f"frame path, {r['frames']:,} frames:")
    lines.append("stage         us per frame        ratio to one orjson.loads line")
    for s in (*FRAME_STAGES, "sum"):
        us, ratio = r["us_per_frame"][s], r["frame_to_line_ratio"][s]
        lines.append(
            f"{s:<10} {us['best']:>8.2f} / {us['median']:>8.2f}    "
            f"{ratio['best']:>8.2f} / {ratio['median']:>8.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tools.bench --stages``."""
    ap = argparse.ArgumentParser(
        prog="python -m tools.bench --stages", description=__doc__.split("\n")[0]
    )
    ap.add_argument("path", nargs="?", type=Path, help="capture to replay")
    ap.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON only")
    ns = ap.parse_args(argv)
    path = ns.path
    path = capture_or_default(path)
    if path is None:
        return 2
    if ns.repeat < 1:
        ap.error("--repeat must be >= 1")
    r = bench(path, ns.repeat)
    print(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode() if ns.json else report(r))
    return 0
