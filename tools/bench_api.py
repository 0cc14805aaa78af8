"""API serving figures: REST throughput and p99 against a bare FastAPI route, and SSE fan-out.

    python -m tools.bench_api [--capture data/sample.ndjson.gz] [--seconds 5] [--clients 16]
                              [--subscribers 500] [--json]

A server process (spawned, so client and server do not share a GIL) replays the capture into a
store and serves, on 127.0.0.1 only:

- the API (`api.app.create_app`) with a token and the rate limiter on (the limit set out of
  reach, so every request pays for both checks but none is refused);
- a bare FastAPI app with one route returning ``{"ok": 1}``, ``async def`` like the signal
  route.

REST: ``--clients`` asyncio workers on one httpx2 client (keep-alive) hammer
``GET /v1/signal/{coin}`` and then ``GET /ok``, interleaved over ``--rounds`` rounds of
``--seconds`` each; requests/s, p50 and p99 and the server's CPU share, and the ratio of the two
throughputs (the aim is >= 0.8).

SSE: ``--subscribers`` clients (raw asyncio sockets, so the client side stays light) open
``GET /v1/stream``; the server's memory and CPU are read while they sit idle; then a thread in
the server, standing in for the flow's sink thread, stores ``--batches`` batches of ``--batch``
envelopes every ``--interval-ms`` and notes the time of each ``put_many``. Lag is client receipt
minus that time (CLOCK_MONOTONIC is shared by processes); every subscriber must get every event.
Everything is bounded in count and time.

One program past ~400 lines: the server process, its REST load and its SSE subscribers form one
measurement run in one process tree, and read best together.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing as mp
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from connectors.captures import sample_capture
from tools.bench_sse import HOST, cpu_s, fan_out, pct
from tools.redis_local import free_port

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CAPTURE = sample_capture()  # the shipped demo capture (packaged in the wheel)
TOKEN = "bench-token-0123456789abcdef"
READY_TIMEOUT_S = 60.0
COIN = "BTC"

log = logging.getLogger(__name__)


# -- the server process --------------------------------------------------------------------------


def _serve(conn: Connection, capture: str, api_port: int, bare_port: int) -> None:
    """Server process: replay, then serve both apps until told to stop (commands on ``conn``)."""
    import uvicorn
    from fastapi import FastAPI

    from api.app import create_app
    from flows.pipeline import build_pipeline, run_pipeline
    from flows.settings import Settings

    logging.basicConfig(level=logging.WARNING)
    pipeline = build_pipeline(Settings(replay=[capture], api=False), collect=True)
    run_pipeline(pipeline)
    store = pipeline.store
    envelopes = list(pipeline.collected or [])
    app = create_app(store, token=TOKEN, rate_limit_per_s=1e9)
    bare = FastAPI()

    @bare.get("/ok")
    async def ok() -> dict[str, int]:
        return {"ok": 1}

    servers = [
        uvicorn.Server(
            uvicorn.Config(
                a, host=HOST, port=p, log_level="warning", access_log=False, lifespan="off"
            )
        )
        for a, p in ((app, api_port), (bare, bare_port))
    ]

    def commands() -> None:
        while True:
            cmd, arg = conn.recv()
            if cmd == "publish":
                batches, size, interval_s = arg
                stamps: list[tuple[int, float]] = []
                i = 0
                next_t = time.monotonic()
                for _ in range(batches):
                    items = [envelopes[(i + k) % len(envelopes)] for k in range(size)]
                    i += size
                    t0 = time.monotonic()
                    store.put_many(items)
                    last = store.last_seq
                    stamps.extend((seq, t0) for seq in range(last - size + 1, last + 1))
                    next_t += interval_s
                    time.sleep(max(0.0, next_t - time.monotonic()))
                conn.send(stamps)
            elif cmd == "subscribers":
                conn.send(app.state.streams.subscribers)
            elif cmd == "stop":
                app.state.streams.close_all()
                for s in servers:
                    s.should_exit = True
                conn.send("stopping")
                return

    async def run() -> None:
        await asyncio.gather(*(s.serve() for s in servers))

    threading.Thread(target=commands, name="bench-commands", daemon=True).start()
    conn.send(("ready", len(envelopes), store.last_seq))
    asyncio.run(run())


# -- measuring -----------------------------------------------------------------------------------


async def _load_httpx(
    url: str, clients: int, seconds: float, headers: dict[str, str]
) -> list[float]:
    """Latencies (s) of ``clients`` httpx2 workers requesting ``url`` back to back."""
    import httpx2

    lat: list[float] = []
    limits = httpx2.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx2.AsyncClient(limits=limits, timeout=10.0, headers=headers) as client:
        for _ in range(clients):  # warm the connections
            (await client.get(url)).raise_for_status()
        end = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < end:
                t0 = time.perf_counter()
                r = await client.get(url)
                lat.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    msg = f"{url}: HTTP {r.status_code} {r.text[:200]}"
                    raise RuntimeError(msg)

        await asyncio.gather(*(worker() for _ in range(clients)))
    return lat


async def _load_raw(url: str, clients: int, seconds: float, headers: dict[str, str]) -> list[float]:
    """Latencies (s) of ``clients`` keep-alive HTTP/1.1 connections on raw asyncio streams
    (a light client, so that the server, not the client, is what saturates)."""
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    req = f"GET /{path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()
    lat: list[float] = []
    end = time.monotonic() + seconds

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            msg = f"{url}: {head[:80]!r}"
            raise RuntimeError(msg)
        i = head.lower().find(b"content-length:")
        n = int(head[i + 15 : head.find(b"\r\n", i)])
        await reader.readexactly(n)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            await one(reader, writer)  # warm-up
            while time.monotonic() < end:
                t0 = time.perf_counter()
                await one(reader, writer)
                lat.append(time.perf_counter() - t0)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    await asyncio.gather(*(worker() for _ in range(clients)))
    return lat


def interleaved(
    targets: dict[str, tuple[str, dict[str, str], int]],
    clients: int,
    seconds: float,
    rounds: int,
    client: str = "raw",
) -> dict[str, dict[str, Any]]:
    """Interleaved rounds of load on each ``name -> (url, headers, server pid)``: per name the
    best round (req/s, p50/p99, server CPU), the median req/s and every round's req/s."""
    load = _load_raw if client == "raw" else _load_httpx
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in targets}
    for _ in range(rounds):
        for name, (url, headers, pid) in targets.items():
            c0, t0 = cpu_s(pid), time.monotonic()
            lat = asyncio.run(load(url, clients, seconds, headers))
            elapsed = time.monotonic() - t0
            runs[name].append(
                {
                    "requests": len(lat),
                    "rps": len(lat) / elapsed,
                    "p50_ms": pct(lat, 0.5) * 1000,
                    "p99_ms": pct(lat, 0.99) * 1000,
                    "server_cpu_pct": 100 * (cpu_s(pid) - c0) / elapsed,
                }
            )
    res: dict[str, dict[str, Any]] = {}
    for name, rs in runs.items():
        best = max(rs, key=lambda r: r["rps"])
        res[name] = best | {
            "median_rps": statistics.median(r["rps"] for r in rs),
            "rounds": [round(r["rps"]) for r in rs],
            "requests": sum(r["requests"] for r in rs),
        }
    return res


def rest_bench(
    pid: int,
    api_port: int,
    bare_port: int,
    clients: int,
    seconds: float,
    rounds: int,
    client: str = "raw",
) -> dict[str, Any]:
    """Interleaved rounds against the signal route and the bare route (best and median)."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    targets = {
        "signal": (f"http://{HOST}:{api_port}/v1/signal/{COIN}", auth, pid),
        "bare": (f"http://{HOST}:{bare_port}/ok", {}, pid),
    }
    res: dict[str, Any] = interleaved(targets, clients, seconds, rounds, client)
    res["ratio"] = res["signal"]["rps"] / res["bare"]["rps"]
    res["median_ratio"] = res["signal"]["median_rps"] / res["bare"]["median_rps"]
    return res


def asker(conn: Connection) -> Callable[[str, Any], Any]:
    """``ask(cmd, arg)``: send a command to a server process on ``conn`` and wait for its
    answer (one question at a time: the publisher and the stream counter share the pipe)."""
    lock = threading.Lock()

    def ask(cmd: str, arg: Any) -> Any:
        with lock:
            conn.send((cmd, arg))
            return conn.recv()

    return ask


def sse_bench(
    pid: int,
    conn: Connection,
    port: int,
    subscribers: int,
    batches: int,
    batch: int,
    interval_s: float,
    rounds: int,
) -> dict[str, Any]:
    """`tools.bench_sse.fan_out` on the in-memory store: the server process publishes (its
    ``put_many``, standing in for the flow's sink) and counts its streams, asked on ``conn``."""
    ask = asker(conn)

    def publish(n: int, size: int, every_s: float) -> list[float]:
        return [t0 for _seq, t0 in ask("publish", (n, size, every_s))]

    return fan_out(
        pid,
        port,
        TOKEN,
        publish,
        lambda: int(ask("subscribers", None)),
        subscribers=subscribers,
        batches=batches,
        batch=batch,
        interval_s=interval_s,
        rounds=rounds,
    )


# -- the command line ----------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Start the server process, run both measurements, stop it."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    api_port, bare_port = free_port(), free_port()
    proc = ctx.Process(
        target=_serve, args=(child, str(args.capture), api_port, bare_port), daemon=True
    )
    proc.start()
    try:
        if not parent.poll(READY_TIMEOUT_S):
            msg = "the server process did not start"
            raise RuntimeError(msg)
        _, n_env, n_seq = parent.recv()
        pid = proc.pid
        assert pid is not None
        _wait_port(api_port)
        _wait_port(bare_port)
        rest = rest_bench(
            pid, api_port, bare_port, args.clients, args.seconds, args.rounds, args.client
        )
        sse = sse_bench(
            pid,
            parent,
            api_port,
            args.subscribers,
            args.batches,
            args.batch,
            args.interval_ms / 1000,
            args.sse_rounds,
        )
        parent.send(("stop", None))
        if parent.poll(10):
            parent.recv()
    finally:
        proc.join(timeout=15)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
    return {
        "capture": str(args.capture),
        "envelopes": n_env,
        "stored": n_seq,
        "client": args.client,
        "rest": rest,
        "sse": sse,
    }


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        with socket.socket() as s, contextlib.suppress(OSError):
            s.connect((HOST, port))
            return
        time.sleep(0.05)
    msg = f"port {port} did not open"
    raise RuntimeError(msg)


def report(r: dict[str, Any]) -> str:
    """The results as a small table."""
    rest, sse = r["rest"], r["sse"]
    n_req = rest["signal"]["requests"] + rest["bare"]["requests"]
    lines = [
        f"capture {r['capture']}: {r['envelopes']} envelopes stored",
        "",
        f"REST, {r['client']} client, {n_req} requests; best round (rounds' req/s)",
        f"{'':<26}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'server CPU':>12}   rounds",
    ]
    for name, label in (("signal", f"GET /v1/signal/{COIN}"), ("bare", "bare GET /ok")):
        d = rest[name]
        lines.append(
            f"{label:<26}{d['rps']:>8.0f}{d['p50_ms']:>8.2f}{d['p99_ms']:>8.2f}"
            f"{d['server_cpu_pct']:>11.0f}%   {d['rounds']}"
        )
    lines.append(
        f"{'ratio (aim >= 0.8)':<26}{rest['ratio']:>8.2f}   (median rounds: "
        f"{rest['median_ratio']:.2f})"
    )
    lines += [
        "",
        f"SSE fan-out: {sse['subscribers']} subscribers x {sse['events']} events "
        f"({sse['deliveries']} deliveries, {sse['missing']} missing)",
        f"  lag put_many -> client, best round: p50 {sse['lag_p50_ms']:.1f} ms, "
        f"p99 {sse['lag_p99_ms']:.1f} ms, max {sse['lag_max_ms']:.1f} ms (aim p99 < 50 ms)",
        f"  p99 by round: {sse['rounds_p99_ms']} ms (median {sse['median_p99_ms']:.1f} ms)",
        f"  idle: +{sse['rss_idle_mb']:.1f} MB RSS ({sse['rss_per_subscriber_kb']:.1f} KB each), "
        f"server CPU {sse['idle_cpu_pct']:.1f}%; while publishing: CPU {sse['busy_cpu_pct']:.0f}%",
    ]
    return "\n".join(lines)


def emit(result: dict[str, Any], table: Callable[[dict[str, Any]], str], *, as_json: bool) -> None:
    """Print a benchmark's result: as JSON, or as ``table`` renders it."""
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() if as_json else table(result)
    sys.stdout.write(text + "\n")


def add_sse_args(ap: argparse.ArgumentParser) -> None:
    """The SSE fan-out's shape, and ``--json`` (shared with `tools.bench_redis`)."""
    ap.add_argument("--subscribers", type=int, default=500, help="SSE subscribers")
    ap.add_argument("--batches", type=int, default=30, help="batches published per round")
    ap.add_argument("--sse-rounds", type=int, default=3, help="publishing rounds")
    ap.add_argument("--batch", type=int, default=3, help="envelopes per batch")
    ap.add_argument("--interval-ms", type=float, default=100.0, help="between batches")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse REST and SSE shapes out of bounds (everything the benchmark does is bounded)."""
    if not 1 <= args.clients <= 256 or not 1 <= args.subscribers <= 2000:
        ap.error("--clients must be 1..256 and --subscribers 1..2000")
    if not 0 < args.seconds <= 60 or not 1 <= args.rounds <= 10 or not 1 <= args.batches <= 10_000:
        ap.error("--seconds must be in (0, 60], --rounds 1..10, --batches 1..10000")
    if not 1 <= args.sse_rounds <= 10 or not 1 <= args.batch <= 1000:
        ap.error("--sse-rounds must be 1..10 and --batch 1..1000")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tools.bench_api``."""
    ap = argparse.ArgumentParser(
        prog="python -m tools.bench_api", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--capture", type=Path, default=DEFAULT_CAPTURE, help="capture to replay")
    ap.add_argument("--seconds", type=float, default=2.5, help="seconds per REST round")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved REST rounds")
    ap.add_argument("--clients", type=int, default=16, help="concurrent REST clients")
    ap.add_argument(
        "--client",
        choices=("raw", "httpx2"),
        default="raw",
        help="REST load client: raw asyncio keep-alive sockets (light: the server saturates) "
        "or httpx2 (heavier: the client may be the bottleneck)",
    )
    add_sse_args(ap)
    args = ap.parse_args(argv)
    check_args(ap, args)
    logging.basicConfig(level=logging.WARNING)
    emit(bench(args), report, as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
