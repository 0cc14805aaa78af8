"""Serving from Redis against serving from memory, in one run: REST, SSE fan-out, mirror lag.

    python -m tools.bench --redis [--capture data/sample.ndjson.gz] [--seconds 2.5] [--rounds 3]
                                  [--clients 16] [--subscribers 500] [--json]

What a user deploys, started as a user would, on 127.0.0.1 only:

- a private ``redis-server`` (`tools.redis_local`: a free port, no persistence);
- the flow, ``python -m bytewax.run flows.signal`` replaying the capture into it
  (``HLSL_STORE``, ``HLSL_STORE_PREFIX=hlsl:bench``), joining the run of the writer process
  below (started first, so the run outlives the replay);
- a replica, ``python -m api.server --serve-only`` on that store: no flow, every route served
  from its mirror (one ``XREAD BLOCK`` reader, `connectors.redis_mirror`);
- beside them, the in-memory reference: the same capture replayed into a `SignalStore` in a
  server process (`tools.bench_api`), the same app, token and rate limiter (limit out of reach).

REST: ``GET /v1/signal/BTC`` on both, ``--clients`` keep-alive connections each, interleaved over
``--rounds`` rounds (best and median req/s, p50/p99, server CPU): the ratio Redis / memory (aim
>= 0.7).

SSE: ``--subscribers`` raw clients on each server in turn (`tools.bench_sse`), events published
in batches: into the memory store by its server process (``put_many``, as the flow's sink does),
and into Redis by a writer process (`connectors.redis_store.RedisWriter`, the sink's own writer,
joined to the flow's run). Lag is receipt minus hand-over to the store, so the Redis figure
carries the whole path: writer thread, Lua script, the replica's ``XREAD``, its fan-out. Aim: p99
through Redis <= 2x the in-memory p99 of the same run. The replica's own lag behind Redis (its
mirror's ``mirror_lag_ms``, from ``/v1/state``) is reported beside it (aim <= 250 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from tools import bench_api
from tools.bench_sse import HOST, fan_out
from tools.redis_local import LocalRedis, RedisStartError, free_port

REPO = Path(__file__).resolve().parents[1]
PREFIX = "hlsl:bench"
TOKEN = bench_api.TOKEN
COIN = bench_api.COIN
START_TIMEOUT_S = 120.0

log = logging.getLogger(__name__)


# -- the processes -------------------------------------------------------------------------------


def _env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HLSL_")}
    env.update(
        HLSL_STORE=url,
        HLSL_STORE_PREFIX=PREFIX,
        HLSL_API_TOKEN=TOKEN,
        HLSL_RATE_LIMIT_PER_S="1e9",
        PYTHONPATH=str(REPO),
        **extra,
    )
    return env


def replay_into_redis(url: str, capture: Path, work: Path) -> Path:
    """``bytewax.run flows.signal`` replays the capture into Redis; returns its signals file."""
    out = work / "signals.ndjson"
    env = _env(url, HLSL_REPLAY=str(capture), HLSL_API="0", HLSL_SIGNALS_OUT=str(out))
    log_path = work / "flow.log"
    with log_path.open("wb") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", "bytewax.run", "flows.signal"],
            cwd=REPO,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=START_TIMEOUT_S * 5,
            check=False,
        )
    if proc.returncode != 0:
        msg = f"the flow exited {proc.returncode}: {log_path.read_text()[-2000:]}"
        raise RuntimeError(msg)
    return out


def start_replica(url: str, port: int, work: Path) -> subprocess.Popen[bytes]:
    """``python -m api.server --serve-only`` on the store."""
    log_path = (work / "replica.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.server", "--serve-only", "--port", str(port)],
        cwd=REPO,
        env=_env(url),
        stdout=log_path,
        stderr=subprocess.STDOUT,
    )
    log_path.close()
    return proc


def _without_ctrl_c(target: Callable[..., None], *args: Any) -> None:
    """Run ``target(*args)`` in a child process deaf to Ctrl-C: the parent stops it (and tells)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    target(*args)


def _publisher(conn: Connection, url: str) -> None:
    """Writer process: starts the run (the flow then joins it) and, once given the flow's
    signals file, writes batches of those envelopes on command."""
    from connectors.redis_store import RedisWriter

    logging.basicConfig(level=logging.WARNING)
    writer = RedisWriter(url, PREFIX, timeout_ms=1000, history_limit=1000, process="bench-pub")
    writer.join_run()
    writer.start()
    conn.send(("ready", writer.run))
    items: list[tuple[str, int, bytes]] = []
    i = 0
    while True:
        cmd, arg = conn.recv()
        if cmd == "stop":
            writer.finish()
            conn.send("stopped")
            return
        if cmd == "load":
            with open(arg, "rb") as fh:
                for line in fh:
                    env = orjson.loads(line)
                    items.append((env["coin"], env["timestamp_ms"], line.rstrip(b"\n")))
            conn.send(len(items))
            continue
        batches, size, interval_s = arg
        stamps: list[float] = []
        next_t = time.monotonic()
        for _ in range(batches):
            now = int(time.time() * 1000)
            batch = [items[(i + k) % len(items)] for k in range(size)]
            i += size
            t0 = time.monotonic()
            writer.submit([(coin, ts, data, now) for coin, ts, data in batch])
            stamps.extend([t0] * size)
            next_t += interval_s
            time.sleep(max(0.0, next_t - time.monotonic()))
        conn.send(stamps)


def _get(port: int, path: str) -> Any:
    req = urllib.request.Request(
        f"http://{HOST}:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=5) as r:  # loopback: our own server
        return r.read()


def _wait_ready(port: int, proc: subprocess.Popen[bytes] | None, work: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            msg = f"the replica exited {proc.returncode}: {(work / 'replica.log').read_text()}"
            raise RuntimeError(msg)
        with contextlib.suppress(OSError, ValueError):
            _get(port, f"/v1/signal/{COIN}")
            return
        time.sleep(0.1)
    msg = f"port {port} did not serve /v1/signal/{COIN}"
    raise RuntimeError(msg)


def sse_subscribers(port: int) -> int:
    """Open streams, from the server's ``/metrics`` (``hlsl_sse_subscribers``)."""
    for line in _get(port, "/metrics").decode().splitlines():
        if line.startswith("hlsl_sse_subscribers "):
            return int(float(line.split()[1]))
    return 0


def mirror_lag(port: int) -> dict[str, Any]:
    """The replica's ``mirror_lag_ms`` (last, p50, p99) from ``/v1/state``."""

    def find(node: Any) -> Any:
        if isinstance(node, dict):
            if "mirror_lag_ms" in node:
                return node["mirror_lag_ms"]
            for v in node.values():
                found = find(v)
                if found is not None:
                    return found
        return None

    return find(orjson.loads(_get(port, "/v1/state"))) or {}


# -- measuring -----------------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Start Redis, the flow, the replica and the memory server; measure; stop everything.

    Their work directory (Redis's, the flow's signals file, the logs: a few MB) is removed at the
    end, also on an error or Ctrl-C.
    """
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="hlsl-bench-redis-", ignore_cleanup_errors=True) as tmp:
        return _measure(args, Path(tmp), load0)


def _measure(args: argparse.Namespace, work: Path, load0: float) -> dict[str, Any]:
    server = LocalRedis(work)
    server.start()
    ctx = mp.get_context("spawn")
    procs: list[Any] = []
    stopped = False  # told to stop (else, on an error or Ctrl-C, they are not waited for)
    try:
        pub_conn, pub_child = ctx.Pipe()
        pub = ctx.Process(
            target=_without_ctrl_c, args=(_publisher, pub_child, server.url), daemon=True
        )
        pub.start()
        procs.append(pub)
        if not pub_conn.poll(START_TIMEOUT_S):
            msg = "the Redis writer did not start"
            raise RuntimeError(msg)
        pub_conn.recv()  # its run is running: the flow joins it, and it outlives the flow
        signals = replay_into_redis(server.url, Path(args.capture), work)
        pub_conn.send(("load", str(signals)))
        pub_conn.recv()
        replica_port = free_port()
        replica = start_replica(server.url, replica_port, work)
        procs.append(replica)
        mem_conn, child = ctx.Pipe()
        mem_port, bare_port = free_port(), free_port()
        mem = ctx.Process(
            target=_without_ctrl_c,
            args=(bench_api._serve, child, str(args.capture), mem_port, bare_port),
            daemon=True,
        )
        mem.start()
        procs.append(mem)
        if not mem_conn.poll(START_TIMEOUT_S):
            msg = "the memory server did not start"
            raise RuntimeError(msg)
        mem_conn.recv()
        _wait_ready(replica_port, replica, work)
        _wait_ready(mem_port, None, work)
        assert mem.pid is not None
        auth = {"Authorization": f"Bearer {TOKEN}"}
        path = f"/v1/signal/{COIN}"
        targets = {
            "memory": (f"http://{HOST}:{mem_port}{path}", auth, mem.pid),
            "redis": (f"http://{HOST}:{replica_port}{path}", auth, replica.pid),
        }
        rest: dict[str, Any] = bench_api.interleaved(
            targets, args.clients, args.seconds, args.rounds
        )
        rest["ratio"] = rest["redis"]["rps"] / rest["memory"]["rps"]
        rest["median_ratio"] = rest["redis"]["median_rps"] / rest["memory"]["median_rps"]
        ask_mem, ask_pub = bench_api.asker(mem_conn), bench_api.asker(pub_conn)

        sse: dict[str, Any] = {}
        shape = {
            "subscribers": args.subscribers,
            "batches": args.batches,
            "batch": args.batch,
            "interval_s": args.interval_ms / 1000,
            "rounds": args.sse_rounds,
        }
        sse["memory"] = fan_out(
            mem.pid,
            mem_port,
            TOKEN,
            lambda n, size, every: [t for _s, t in ask_mem("publish", (n, size, every))],
            lambda: int(ask_mem("subscribers", None)),
            **shape,
        )
        sse["redis"] = fan_out(
            replica.pid,
            replica_port,
            TOKEN,
            lambda n, size, every: list(ask_pub("publish", (n, size, every))),
            lambda: sse_subscribers(replica_port),
            **shape,
        )
        sse["p99_ratio"] = sse["redis"]["lag_p99_ms"] / sse["memory"]["lag_p99_ms"]
        sse["median_p99_ratio"] = sse["redis"]["median_p99_ms"] / sse["memory"]["median_p99_ms"]
        lag = mirror_lag(replica_port)
        info = server.client().info("memory")
        ask_mem("stop", None)
        ask_pub("stop", None)
        stopped = True
    finally:
        for p in procs:
            if isinstance(p, subprocess.Popen):
                p.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=10)
            else:
                p.join(timeout=10 if stopped else 0)
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=10)
        server.stop()
    return {
        "capture": str(args.capture),
        "load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "rest": rest,
        "sse": sse,
        "mirror_lag_ms": lag,
        "redis_used_memory_mb": round(int(info.get("used_memory", 0)) / 2**20, 1),
    }


def _ms(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.1f} ms"


def report(r: dict[str, Any]) -> str:
    """The results as a small table."""
    rest, sse, lag = r["rest"], r["sse"], r["mirror_lag_ms"]
    load = r["load_avg_1m"]
    lines = [
        f"capture {r['capture']}; load average {load[0]} -> {load[1]} on {r['cpus']} CPUs",
        "",
        f"REST GET /v1/signal/{COIN}, best round (rounds' req/s)",
        f"{'':<28}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'server CPU':>12}   rounds",
    ]
    for name, label in (("memory", "memory store"), ("redis", "Redis --serve-only replica")):
        d = rest[name]
        lines.append(
            f"{label:<28}{d['rps']:>8.0f}{d['p50_ms']:>8.2f}{d['p99_ms']:>8.2f}"
            f"{d['server_cpu_pct']:>11.0f}%   {d['rounds']}"
        )
    lines.append(
        f"{'ratio Redis/memory':<28}{rest['ratio']:>8.2f}   "
        f"(median rounds {rest['median_ratio']:.2f}; aim >= 0.7)"
    )
    lines += ["", "SSE fan-out, lag hand-over to the store -> client"]
    for name in ("memory", "redis"):
        s = sse[name]
        lines.append(
            f"  {name:<7}{s['subscribers']} subscribers x {s['events']} events, "
            f"{s['missing']} missing: p50 {s['lag_p50_ms']:.1f} ms, p99 {s['lag_p99_ms']:.1f} ms "
            f"(rounds {s['rounds_p99_ms']}), max {s['lag_max_ms']:.1f} ms; "
            f"server CPU {s['busy_cpu_pct']:.0f}%"
        )
    lines.append(
        f"  p99 Redis/memory {sse['p99_ratio']:.2f} (median rounds {sse['median_p99_ratio']:.2f};"
        " aim <= 2)"
    )
    lines.append(
        f"replica behind Redis (mirror_lag_ms): p50 {_ms(lag.get('p50'))}, "
        f"p99 {_ms(lag.get('p99'))} (aim <= 250 ms)"
    )
    lines.append(f"Redis used_memory {r['redis_used_memory_mb']} MB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tools.bench --redis`` (and ``python -m tools.bench_redis``)."""
    ap = argparse.ArgumentParser(
        prog="python -m tools.bench --redis", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--capture", type=Path, default=bench_api.DEFAULT_CAPTURE)
    ap.add_argument("--seconds", type=float, default=2.5, help="seconds per REST round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved REST rounds")
    ap.add_argument("--clients", type=int, default=16, help="concurrent REST clients")
    bench_api.add_sse_args(ap)
    args = ap.parse_args(argv)
    bench_api.check_args(ap, args)
    if not args.capture.is_file():
        ap.error(f"--capture {args.capture}: no such file")
    logging.basicConfig(level=logging.WARNING)
    try:
        result = bench(args)
    except RedisStartError as ex:
        sys.stderr.write(f"tools.bench --redis: {ex}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("tools.bench --redis: interrupted\n")
        return 130
    bench_api.emit(result, report, as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
