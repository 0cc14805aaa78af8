"""Replay throughput, end to end, as a ratio to plain JSON parsing of the same lines.

    python -m tools.bench [PATH] [--repeat 5] [--json]
    python -m tools.bench --live     # live latency against the local exchange (tools.bench_live)
    python -m tools.bench --api      # API throughput and SSE fan-out (tools.bench_api)
    python -m tools.bench --soak     # RSS over a long live run, 120 coins (tools.bench_soak)
    python -m tools.bench --cluster  # whole-market replay on 1 vs 2 processes (tools.bench_cluster)

Default PATH: the real 35-minute capture ``../shared/data/real/frames/
hl_live_20250904_btc-eth-sol.ndjson.gz`` (falls back to ``data/sample.ndjson.gz`` when the shared
data is absent). Each round measures, back to back on the same machine:

- reference: ``orjson.loads`` over every line of the capture, already decompressed in memory;
- flow: the full signal flow (read + decompress + parse + bars + features + regime + edge +
  envelopes into the store), as ``tools.replay`` runs it;
- frame path: the same flow cut after the 1 s windows (read + decompress + parse + bars), to
  show what the per-frame path costs apart from the per-bar science.

Machines here are shared and noisy, so the figure that matters is the ratio, flow/reference,
taken from the best round of each (and the median shown beside it).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from connectors.captures import sample_capture
from connectors.files import open_capture
from flows.pipeline import build_pipeline, run_pipeline, tune_gc
from flows.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared/data/real/frames/hl_live_20250904_btc-eth-sol.ndjson.gz"
FALLBACK = sample_capture()  # the shipped demo capture (packaged in the wheel)


def read_lines(path: Path) -> list[bytes]:
    """Every non-blank line of a capture, decompressed."""
    with open_capture(path) as fh:
        return [line for line in fh.read().split(b"\n") if line.strip()]


def reference_rate(lines: list[bytes]) -> float:
    """Lines per second of a plain ``orjson.loads`` loop (results dropped)."""
    loads = orjson.loads
    t0 = time.perf_counter()
    for line in lines:
        loads(line)
    return len(lines) / (time.perf_counter() - t0)


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


def frame_path_rate(path: Path) -> float:
    """Frames per second of the frame path alone: read, decompress, parse, group, 1 s windows
    (the bars go to a sink that drops them; no features, regime, edge or envelopes)."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import run_main

    from connectors.files import NdjsonSource, ReplayStats
    from operators.bars import fold_bars

    stats = ReplayStats()
    flow = Dataflow("frame_path")
    events = op.input("read_frames", flow, NdjsonSource([path], stats))
    bars, late = fold_bars("fold_bars", events, bar_ms=1000, lateness_ms=1000)
    op.inspect("drop_bars", bars, _drop)
    op.inspect("drop_late", late, _drop)
    gc.collect()
    t0 = time.perf_counter()
    run_main(flow)
    return stats.lines / (time.perf_counter() - t0)


def _drop(_step: str, _item: object) -> None:
    return None


def bench(path: Path, repeat: int) -> dict[str, Any]:
    """Interleaved rounds of reference and flow; best and median of each."""
    lines = read_lines(path)
    tune_gc()
    refs: list[float] = []
    flows: list[float] = []
    paths: list[float] = []
    frames = signals = 0
    for _ in range(repeat):
        refs.append(reference_rate(lines))
        paths.append(frame_path_rate(path))
        rate, frames, signals = flow_rate(path)
        flows.append(rate)
    best_ref, best_flow = max(refs), max(flows)
    med_ref, med_flow = statistics.median(refs), statistics.median(flows)
    return {
        "capture": str(path),
        "frames": frames,
        "signals": signals,
        "rounds": repeat,
        "reference_orjson_frames_per_s": {"best": round(best_ref), "median": round(med_ref)},
        "flow_frames_per_s": {"best": round(best_flow), "median": round(med_flow)},
        "frame_path_frames_per_s": {
            "best": round(max(paths)),
            "median": round(statistics.median(paths)),
        },
        "ratio_frame_path_to_reference": {
            "best": round(max(paths) / best_ref, 3),
            "median": round(statistics.median(paths) / med_ref, 3),
        },
        "ratio_flow_to_reference": {
            "best": round(best_flow / best_ref, 3),
            "median": round(med_flow / med_ref, 3),
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tools.bench`` (``--live``: `tools.bench_live`; ``--api``:
    `tools.bench_api`; ``--soak``: `tools.bench_soak`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--live" in args:
        args.remove("--live")
        from tools import bench_live

        return bench_live.main(args)
    if "--cluster" in args:
        args.remove("--cluster")
        from tools import bench_cluster

        return bench_cluster.main(args)
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
    ap = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.split("\n")[0])
    ap.add_argument("path", nargs="?", type=Path, help="capture to replay")
    ap.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON only")
    ns = ap.parse_args(argv)
    path = ns.path
    if path is None:
        path = DEFAULT if DEFAULT.is_file() else FALLBACK
        if path == FALLBACK:
            print(f"note: {DEFAULT} not found; using {FALLBACK}", file=sys.stderr)
    if not path.is_file():
        print(f"error: capture {path} not found", file=sys.stderr)
        return 2
    r = bench(path, max(1, ns.repeat))
    if ns.json:
        print(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode())
        return 0
    ref, flow, ratio = (
        r["reference_orjson_frames_per_s"],
        r["flow_frames_per_s"],
        r["ratio_flow_to_reference"],
    )
    print(f"capture   {r['capture']}  ({r['frames']} frames -> {r['signals']} signals)")
    print(f"rounds    {r['rounds']} (interleaved; best / median)")
    print(f"reference orjson.loads   {ref['best']:>9,} / {ref['median']:>9,} frames/s")
    fp, fpr = r["frame_path_frames_per_s"], r["ratio_frame_path_to_reference"]
    print(f"flow      end to end     {flow['best']:>9,} / {flow['median']:>9,} frames/s")
    print(f"ratio     flow/reference {ratio['best']:>9.3f} / {ratio['median']:>9.3f}")
    print(f"frame path (no science)  {fp['best']:>9,} / {fp['median']:>9,} frames/s")
    print(f"ratio     path/reference {fpr['best']:>9.3f} / {fpr['median']:>9.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
