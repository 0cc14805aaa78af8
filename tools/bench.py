"""Replay throughput and the cost of a bar, end to end, as ratios to plain JSON parsing.

    python -m tools.bench [PATH] [--repeat 5] [--json]
    python -m tools.bench --whole-market [--coins 180] [--seconds 3600]   # simulated market hour
    python -m tools.bench --live     # live latency against the local exchange (tools.bench_live)
    python -m tools.bench --api      # API throughput and SSE fan-out (tools.bench_api)
    python -m tools.bench --soak     # RSS over a long live run, 120 coins (tools.bench_soak)
    python -m tools.bench --cluster  # whole-market replay on 1 vs 2 processes (tools.bench_cluster)
    python -m tools.bench --redis    # REST, SSE: a Redis replica vs memory (tools.bench_redis)
    python -m tools.bench --stages   # the cost of a bar split by stage (tools.bench_stages)

Default PATH: the real 35-minute capture ``../shared/data/real/frames/
hl_live_20250904_btc-eth-sol.ndjson.gz`` (falls back to ``data/sample.ndjson.gz`` when the shared
data is absent). ``--whole-market`` replays a simulated hour of the whole market instead: 180
coins (``python -m tools.simulate --market 180 --seconds 3600``), generated once into
``$TMPDIR/hlsl-bench/`` and reused. Each round measures, back to back on the same machine:

- reference: ``orjson.loads`` over every line of the capture, already decompressed in memory
  (a chunk at a time; only the ``loads`` loop is timed; a capture of one chunk, such as the real
  one, is parsed 5 times and the fastest pass counts);
- frame path: the flow cut after the 1 s windows (read + decompress + parse and validate + bars;
  the bars go to a sink that counts and drops them);
- flow: the full signal flow (the frame path + features + forecast + regime + edge + envelopes
  into the store), as ``tools.replay`` runs it.

Machines here are shared and noisy, so the figures that matter are ratios to the reference of the
same run: frames/s of the flow and of the frame path over ``orjson.loads`` lines/s, and the cost
of a bar, ``us_per_bar`` = (flow time − frame path time) / bars, over the reference's time per
line (``bar_to_line_ratio``). For rates, "best" and "median" are of each measurement's rounds;
the per-bar figures are computed within each round (its flow, frame path and reference, so a busy
moment does not pair one round's reference with another's flow), then the best and median of the
rounds. The load average at the end of the run goes with them.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from flows.pipeline import build_pipeline, run_pipeline, tune_gc
from flows.settings import Settings
from tools.bench_reference import capture_or_default, frame_path, reference_rate_of

MARKET_COINS = 180
MARKET_SECONDS = 3600.0


def flow_rate(path: Path) -> tuple[float, int, int]:
    """Frames per second of the full flow; also frames and signals."""
    pipeline = build_pipeline(Settings(replay=[str(path)], api=False))
    gc.collect()
    t0 = time.perf_counter()
    run_pipeline(pipeline)
    elapsed = time.perf_counter() - t0
    assert pipeline.stats is not None  # a replay pipeline
    lines = pipeline.stats.lines
    return lines / elapsed, lines, pipeline.store.signals_emitted


def per_bar(ref: float, flow: float, path: float, frames: int, bars: int) -> tuple[float, float]:
    """``(µs per bar, its ratio to the reference's µs per line)`` from three rates (frames/s):
    the flow's time minus the frame path's, over the bars."""
    us = (1.0 / flow - 1.0 / path) * frames / max(1, bars) * 1e6
    return us, us / (1e6 / ref)


def bench(path: Path, repeat: int) -> dict[str, Any]:
    """Interleaved rounds of reference, frame path and flow; best and median of each."""
    tune_gc()
    refs: list[float] = []
    flows: list[float] = []
    paths: list[float] = []
    frames = signals = bars = 0
    for _ in range(repeat):
        refs.append(reference_rate_of(path))
        rate, bars = frame_path(path)
        paths.append(rate)
        rate, frames, signals = flow_rate(path)
        flows.append(rate)
    best_ref, best_flow, best_path = max(refs), max(flows), max(paths)
    med_ref, med_flow, med_path = (statistics.median(x) for x in (refs, flows, paths))
    rounds = [per_bar(*rates, frames, bars) for rates in zip(refs, flows, paths, strict=True)]
    us = [u for u, _ in rounds]
    ratios = [r for _, r in rounds]
    load = os.getloadavg()
    return {
        "capture": str(path),
        "frames": frames,
        "signals": signals,
        "bars": bars,
        "rounds": repeat,
        "reference_orjson_frames_per_s": {"best": round(best_ref), "median": round(med_ref)},
        "flow_frames_per_s": {"best": round(best_flow), "median": round(med_flow)},
        "frame_path_frames_per_s": {"best": round(best_path), "median": round(med_path)},
        "ratio_frame_path_to_reference": {
            "best": round(best_path / best_ref, 3),
            "median": round(med_path / med_ref, 3),
        },
        "ratio_flow_to_reference": {
            "best": round(best_flow / best_ref, 3),
            "median": round(med_flow / med_ref, 3),
        },
        "reference_us_per_line": {
            "best": round(1e6 / best_ref, 3),
            "median": round(1e6 / med_ref, 3),
        },
        "us_per_bar": {"best": round(min(us), 2), "median": round(statistics.median(us), 2)},
        "bar_to_line_ratio": {
            "best": round(min(ratios), 2),
            "median": round(statistics.median(ratios), 2),
        },
        "load_avg_1m": round(load[0], 2),
        "load_avg": [round(x, 2) for x in load],
    }


def market_capture(coins: int, seconds: float, seed: int = 7) -> Path:
    """The simulated whole-market capture (``python -m tools.simulate --market``), generated once
    into ``$TMPDIR/hlsl-bench/`` and reused."""
    from tools.simulate.cli import main as simulate

    cache = Path(tempfile.gettempdir()) / "hlsl-bench"
    out = cache / f"market_{coins}c_{seconds:g}s_seed{seed}.ndjson.gz"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    print(f"note: simulating {coins} coins for {seconds:g} s into {out} (once)", file=sys.stderr)
    part = out.with_name(f"part-{os.getpid()}-{out.name}")
    argv = ["--out", str(part), "--seconds", f"{seconds:g}", "--seed", str(seed)]
    try:
        simulate([*argv, "--market", str(coins)])
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tools.bench`` (``--live``: `tools.bench_live`; ``--api``:
    `tools.bench_api`; ``--soak``: `tools.bench_soak`; ``--cluster``: `tools.bench_cluster`;
    ``--redis``: `tools.bench_redis`; ``--stages``: `tools.bench_stages`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--live" in args:
        args.remove("--live")
        from tools import bench_live

        return bench_live.main(args)
    if "--stages" in args:
        args.remove("--stages")
        from tools import bench_stages

        return bench_stages.main(args)
    if "--cluster" in args:
        args.remove("--cluster")
        from tools import bench_cluster

        return bench_cluster.main(args)
    if "--redis" in args:
        args.remove("--redis")
        from tools import bench_redis

        return bench_redis.main(args)
    if "--soak" in args:
        args.remove("--soak")
        from tools import bench_soak

        return bench_soak.main(args)
    if "--api" in args:
        args.remove("--api")
        from tools import bench_api  # type: ignore[attr-defined,unused-ignore]

        result: int = bench_api.main(args)
        return result
    argv = args
    modes = "\n".join(line.strip() for line in __doc__.splitlines()[4:10])
    ap = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description=__doc__.split("\n")[0],
        epilog="other modes (each with its own --help):\n" + modes,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("path", nargs="?", type=Path, help="capture to replay")
    ap.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON only")
    ap.add_argument(
        "--whole-market",
        action="store_true",
        help="replay a simulated whole-market hour instead (generated once, cached)",
    )
    ap.add_argument(
        "--coins", type=int, default=MARKET_COINS, help=f"--whole-market coins ({MARKET_COINS})"
    )
    ap.add_argument(
        "--seconds",
        type=float,
        default=MARKET_SECONDS,
        help=f"--whole-market simulated seconds ({MARKET_SECONDS:g})",
    )
    ns = ap.parse_args(argv)
    path = ns.path
    if ns.whole_market:
        if path is not None:
            ap.error("--whole-market takes no PATH")
        if ns.coins < 1 or not ns.seconds > 0:
            ap.error("--coins must be >= 1 and --seconds > 0")
        path = market_capture(ns.coins, ns.seconds)
    path = capture_or_default(path)
    if path is None:
        return 2
    r = bench(path, max(1, ns.repeat))
    if ns.json:
        print(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(report(r))
    return 0


def report(r: dict[str, Any]) -> str:
    """The result of `bench` as the text ``python -m tools.bench`` prints."""
    ref, flow, ratio = (
        r["reference_orjson_frames_per_s"],
        r["flow_frames_per_s"],
        r["ratio_flow_to_reference"],
    )
    fp, fpr = r["frame_path_frames_per_s"], r["ratio_frame_path_to_reference"]
    usb, bl, usl = r["us_per_bar"], r["bar_to_line_ratio"], r["reference_us_per_line"]
    load = " / ".join(f"{x:.2f}" for x in r["load_avg"])
    return "\n".join(
        (
            f"capture   {r['capture']}",
            f"          {r['frames']:,} frames -> {r['bars']:,} bars -> {r['signals']:,} signals",
            f"rounds    {r['rounds']} (interleaved; best / median); load average {load}",
            f"reference orjson.loads   {ref['best']:>9,} / {ref['median']:>9,} frames/s"
            f"   ({usl['best']:.2f} / {usl['median']:.2f} us a line)",
            f"frame path (no science)  {fp['best']:>9,} / {fp['median']:>9,} frames/s",
            f"ratio     path/reference {fpr['best']:>9.3f} / {fpr['median']:>9.3f}",
            f"flow      end to end     {flow['best']:>9,} / {flow['median']:>9,} frames/s",
            f"ratio     flow/reference {ratio['best']:>9.3f} / {ratio['median']:>9.3f}",
            f"per bar   flow - path    {usb['best']:>9.1f} / {usb['median']:>9.1f} us",
            f"ratio     bar/line       {bl['best']:>9.1f} / {bl['median']:>9.1f}",
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
