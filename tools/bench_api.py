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
import os
import socket
import statistics
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from connectors.captures import sample_capture

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CAPTURE = sample_capture()  # the shipped demo capture (packaged in the wheel)
HOST = "127.0.0.1"
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


def free_port() -> int:
    """A free TCP port on the loopback."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` (nearest rank)."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


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
    targets = {
        "signal": (
            f"http://{HOST}:{api_port}/v1/signal/{COIN}",
            {"Authorization": f"Bearer {TOKEN}"},
        ),
        "bare": (f"http://{HOST}:{bare_port}/ok", {}),
    }
    load = _load_raw if client == "raw" else _load_httpx
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in targets}
    for _ in range(rounds):
        for name, (url, headers) in targets.items():
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
    res: dict[str, Any] = {}
    for name, rs in runs.items():
        best = max(rs, key=lambda r: r["rps"])
        res[name] = best | {
            "median_rps": statistics.median(r["rps"] for r in rs),
            "rounds": [round(r["rps"]) for r in rs],
            "requests": sum(r["requests"] for r in rs),
        }
    res["ratio"] = res["signal"]["rps"] / res["bare"]["rps"]
    res["median_ratio"] = res["signal"]["median_rps"] / res["bare"]["median_rps"]
    return res


async def _subscriber(
    port: int, got: dict[int, float], opened: asyncio.Event, done: asyncio.Event
) -> None:
    """One raw SSE client: record the receipt time of every ``id:``."""
    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
    req = (
        f"GET /v1/stream HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n"
    )
    writer.write(req.encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        msg = f"stream refused: {head[:80]!r}"
        raise RuntimeError(msg)
    opened.set()
    buf = b""
    try:
        while not done.is_set():
            data = await reader.read(1 << 16)
            if not data:
                break
            t = time.monotonic()
            buf += data
            pos = 0
            while True:
                i = buf.find(b"\nid: ", pos)
                if i < 0:
                    break
                j = buf.find(b"\n", i + 5)
                if j < 0:
                    break
                got.setdefault(int(buf[i + 5 : j]), t)
                pos = j
            buf = buf[pos:] if pos else buf[-64:] if len(buf) > 1 << 16 else buf
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


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
    """Open ``subscribers`` streams, measure them idle, then publish ``rounds`` times and
    measure the lag of every delivery (best and median round)."""

    async def run() -> dict[str, Any]:
        rss0 = rss_mb(pid)
        done = asyncio.Event()
        got: list[dict[int, float]] = [{} for _ in range(subscribers)]
        opened = [asyncio.Event() for _ in range(subscribers)]
        tasks = [
            asyncio.create_task(_subscriber(port, g, o, done))
            for g, o in zip(got, opened, strict=True)
        ]
        async with asyncio.timeout(30):
            await asyncio.gather(*(o.wait() for o in opened))
            while True:  # the server side registers right after the headers
                conn.send(("subscribers", None))
                if await asyncio.to_thread(conn.recv) >= subscribers:
                    break
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        rss1 = rss_mb(pid)
        idle_s = 3.0
        c0 = cpu_s(pid)
        await asyncio.sleep(idle_s)
        idle_cpu = (cpu_s(pid) - c0) / idle_s
        per_round: list[dict[str, float]] = []
        missing = deliveries = events = 0
        busy_cpu_s = busy_s = 0.0
        for _ in range(rounds):
            c0, t0 = cpu_s(pid), time.monotonic()
            conn.send(("publish", (batches, batch, interval_s)))
            stamps: list[tuple[int, float]] = await asyncio.wait_for(
                asyncio.to_thread(conn.recv), timeout=batches * interval_s + 30
            )
            want = {seq for seq, _ in stamps}
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not all(want <= g.keys() for g in got):  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # polling plain dicts filled by other tasks
            busy_cpu_s += cpu_s(pid) - c0
            busy_s += time.monotonic() - t0
            put = dict(stamps)
            lags = [g[s] - put[s] for g in got for s in want if s in g]
            missing += sum(len(want - g.keys()) for g in got)
            deliveries += len(lags)
            events += len(want)
            per_round.append(
                {
                    "p50_ms": pct(lags, 0.5) * 1000,
                    "p99_ms": pct(lags, 0.99) * 1000,
                    "max_ms": max(lags) * 1000 if lags else float("nan"),
                }
            )
            await asyncio.sleep(0.5)
        done.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        best = min(per_round, key=lambda r: r["p99_ms"])
        return {
            "subscribers": subscribers,
            "events": events,
            "deliveries": deliveries,
            "missing": missing,
            "lag_p50_ms": best["p50_ms"],
            "lag_p99_ms": best["p99_ms"],
            "lag_max_ms": best["max_ms"],
            "median_p99_ms": statistics.median(r["p99_ms"] for r in per_round),
            "rounds_p99_ms": [round(r["p99_ms"], 1) for r in per_round],
            "rss_idle_mb": rss1 - rss0,
            "rss_per_subscriber_kb": (rss1 - rss0) * 1024 / subscribers,
            "idle_cpu_pct": 100 * idle_cpu,
            "busy_cpu_pct": 100 * busy_cpu_s / busy_s,
        }

    return asyncio.run(run())


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
    ap.add_argument("--subscribers", type=int, default=500, help="SSE subscribers")
    ap.add_argument("--batches", type=int, default=30, help="batches published per round")
    ap.add_argument("--sse-rounds", type=int, default=3, help="publishing rounds")
    ap.add_argument("--batch", type=int, default=3, help="envelopes per batch")
    ap.add_argument("--interval-ms", type=float, default=100.0, help="between batches")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    if not 1 <= args.clients <= 256 or not 1 <= args.subscribers <= 2000:
        ap.error("--clients must be 1..256 and --subscribers 1..2000")
    if not 0 < args.seconds <= 60 or not 1 <= args.rounds <= 10 or not 1 <= args.batches <= 10_000:
        ap.error("--seconds must be in (0, 60], --rounds 1..10, --batches 1..10000")
    if not 1 <= args.sse_rounds <= 10 or not 1 <= args.batch <= 1000:
        ap.error("--sse-rounds must be 1..10 and --batch 1..1000")
    logging.basicConfig(level=logging.WARNING)
    result = bench(args)
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(report(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
