"""Cluster throughput: a whole-market replay on 1 and on N Bytewax processes, in one run.

    python -m tools.bench --cluster [--coins 180] [--seconds 300] [--processes 2] [--rounds 3]
                                    [--capture PATH] [--json]

The capture is a simulated whole market (``--coins`` coins for ``--seconds`` of exchange time,
the simulator's markets renamed C000, C001, ...), generated once and cached in ``$TMPDIR``; or
``--capture`` (a file, or a directory or glob of captures such as an archive layout of per-coin
files, which needs no split). Each round runs, interleaved, the standard one-process path
(``python -m bytewax.run flows.signal``) and an N-process cluster of the same entry
(``bytewax.run -i k -a "127.0.0.1:p0;…"``, what ``python -m bytewax.testing flows.signal -p N``
starts), both as a user would: ``HLSL_REPLAY`` the capture, ``HLSL_API=0``,
``HLSL_SIGNALS_OUT`` a file (one per process). Reported, best and median over the rounds: wall
time, frames/s, the speed-up of N processes over one, every process's CPU seconds (from
``wait4``), and, as the yardstick of this machine at this moment, plain ``orjson.loads`` of the
same lines (frames/s as a ratio to it). The outputs are checked: the N processes' signals, sorted
by (time, coin), are the one-process run's bytes. The load average is printed beside the figures:
on a shared 2-core machine a second process only helps when a core is free.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lz4.frame
import orjson

from connectors.captures import expand_captures
from tools.simulate.capture import iso_ns

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 1800.0


def market_capture(coins: int, seconds: float) -> Path:
    """The simulated whole-market capture, generated once into ``$TMPDIR`` (cached)."""
    from tools.bench_live import market_frames  # the 180-coin market of the live benchmark

    path = Path(tempfile.gettempdir()) / f"hlsl-bench-market-{coins}c-{seconds:g}s.ndjson.gz"
    if path.exists():
        return path
    part = path.with_suffix(".part")
    with gzip.open(part, "wb", compresslevel=1) as fh:
        # streamed frame by frame: a whole-market hour held as a list took ~20 GB
        for recv_ns, frame in market_frames(coins, seconds):
            line = {"time": iso_ns(recv_ns or 0), "ver_num": 1, "raw": frame}
            fh.write(orjson.dumps(line) + b"\n")
    part.replace(path)
    return path


def capture_lines(path: Path) -> list[bytes]:
    """Every line of a capture: a file (gzip, LZ4 or plain) or a directory or glob of them (what
    ``HLSL_REPLAY`` accepts, `connectors.captures.expand_captures`)."""
    lines: list[bytes] = []
    for name in expand_captures([str(path)]):
        if name.endswith(".gz"):
            data = gzip.decompress(Path(name).read_bytes())
        elif name.endswith(".lz4"):
            data = lz4.frame.decompress(Path(name).read_bytes())
        else:
            data = Path(name).read_bytes()
        lines.extend(data.splitlines())
    return lines


def orjson_lines_per_s(path: Path) -> tuple[float, int]:
    """Plain ``orjson.loads`` of every line (decompressed first): lines/s and the line count."""
    lines = capture_lines(path)
    loads = orjson.loads
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for line in lines:
            loads(line)
        best = min(best, time.perf_counter() - t0)
    return len(lines) / best, len(lines)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def run_cluster(capture: Path, processes: int, out_dir: Path) -> dict[str, Any]:
    """One replay on ``processes`` Bytewax processes; wall seconds, CPU per process, output."""
    out = out_dir / f"signals-{processes}.ndjson"
    env = {
        **os.environ,
        "HLSL_REPLAY": str(capture),
        "HLSL_API": "0",
        "HLSL_SIGNALS_OUT": str(out),
        "HLSL_LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "bytewax.run", "flows.signal"]
    if processes > 1:
        addresses = ";".join(f"127.0.0.1:{p}" for p in _free_ports(processes))
        cmds = [[*cmd, "-i", str(i), "-a", addresses] for i in range(processes)]
    else:
        cmds = [cmd]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(c, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for c in cmds
    ]
    cpu: list[float] = []
    failed: list[str] = []
    for p in procs:
        _pid, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        cpu.append(round(usage.ru_utime + usage.ru_stime, 2))
        err = p.stderr.read().decode(errors="replace") if p.stderr else ""
        if p.returncode != 0:
            failed.append(f"process exit {p.returncode}: {err.strip()[-300:]}")
    wall = time.perf_counter() - t0
    files = (
        [out] if processes == 1 else [out.with_suffix(f".p{i}.ndjson") for i in range(processes)]
    )
    lines = [ln for f in files if f.exists() for ln in f.read_bytes().splitlines()]
    lines.sort(key=lambda b: (orjson.loads(b)["timestamp_ms"], orjson.loads(b)["coin"]))
    digest = hashlib.sha256(b"\n".join(lines)).hexdigest()
    for f in files:
        f.unlink(missing_ok=True)
    return {"wall_s": wall, "cpu_s": cpu, "signals": len(lines), "sha256": digest, "failed": failed}


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Interleaved rounds of the one-process path and the N-process cluster."""
    capture = Path(args.capture) if args.capture else market_capture(args.coins, args.seconds)
    load = os.getloadavg()
    ref_lines_s, n_lines = orjson_lines_per_s(capture)
    one: list[dict[str, Any]] = []
    many: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hlsl-bench-cluster-") as tmp:
        for _ in range(args.rounds):
            one.append(run_cluster(capture, 1, Path(tmp)))
            many.append(run_cluster(capture, args.processes, Path(tmp)))
    load_after = os.getloadavg()

    def figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
        walls = sorted(r["wall_s"] for r in runs)
        best = runs[min(range(len(runs)), key=lambda i: runs[i]["wall_s"])]
        return {
            "wall_s": {"best": round(walls[0], 2), "median": round(statistics.median(walls), 2)},
            "frames_per_s": {
                "best": round(n_lines / walls[0]),
                "median": round(n_lines / statistics.median(walls)),
            },
            "ratio_to_orjson": round(n_lines / walls[0] / ref_lines_s, 4),
            "cpu_s_per_process": best["cpu_s"],
            "signals": best["signals"],
        }

    res_one, res_many = figures(one), figures(many)
    same = {r["sha256"] for r in one + many}
    return {
        "capture": str(capture),
        "frames": n_lines,
        "orjson_lines_per_s": round(ref_lines_s),
        "processes": args.processes,
        "one_process": res_one,
        "cluster": res_many,
        "speedup": {
            "best": round(res_one["wall_s"]["best"] / res_many["wall_s"]["best"], 3),
            "median": round(res_one["wall_s"]["median"] / res_many["wall_s"]["median"], 3),
        },
        "same_output": len(same) == 1,
        "failed": [f for r in one + many for f in r["failed"]],
        "load_avg_1m": round(load[0], 2),
        "load_avg_1m_after": round(load_after[0], 2),
        "cpus": os.cpu_count(),
    }


def report(r: dict[str, Any]) -> str:
    """The result as a few lines of text."""
    o, c = r["one_process"], r["cluster"]
    n = r["processes"]
    return "\n".join(
        [
            f"capture: {r['capture']} ({r['frames']:,} frames); orjson.loads "
            f"{r['orjson_lines_per_s']:,} lines/s; load {r['load_avg_1m']} -> "
            f"{r['load_avg_1m_after']} on {r['cpus']} CPUs",
            f"1 process : {o['frames_per_s']['best']:>8,} frames/s best "
            f"({o['ratio_to_orjson']:.3f}x orjson), median {o['frames_per_s']['median']:,}; "
            f"CPU s {o['cpu_s_per_process']}",
            f"{n} processes: {c['frames_per_s']['best']:>8,} frames/s best "
            f"({c['ratio_to_orjson']:.3f}x orjson), median {c['frames_per_s']['median']:,}; "
            f"CPU s {c['cpu_s_per_process']}",
            f"speed-up {n} vs 1: {r['speedup']['best']}x best, {r['speedup']['median']}x median; "
            f"same output: {r['same_output']}",
            *[f"error: {f}" for f in r["failed"]],
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tools.bench --cluster``."""
    ap = argparse.ArgumentParser(prog="python -m tools.bench --cluster", description=__doc__)
    ap.add_argument("--coins", type=int, default=180, help="simulated coins (180)")
    ap.add_argument("--seconds", type=float, default=300.0, help="simulated seconds (300)")
    ap.add_argument("--processes", type=int, default=2, help="processes in the cluster (2)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    ap.add_argument("--capture", help="replay this capture instead of the simulated market")
    ap.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = ap.parse_args(argv)
    if args.processes < 2 or args.rounds < 1 or args.coins < 1 or args.seconds <= 0:
        ap.error("--processes >= 2, --rounds >= 1, --coins >= 1 and --seconds > 0")
    r = bench(args)
    print(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode() if args.json else report(r))
    return 1 if r["failed"] or not r["same_output"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
