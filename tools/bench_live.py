"""Live latency: from a frame leaving the (local) exchange to its signal being readable.

    python -m tools.bench --live [--seconds 20] [--scenario small|market|both]

Everything runs on loopback. The local exchange (`tools.fake_exchange`) streams simulated
markets; the server (``python -m api.server --coins ...``, a separate process) ingests them live;
this tool

- subscribes to the same streams at the exchange itself and notes, per frame, when it left the
  exchange (receive time on loopback) and which coin and bar it belongs to;
- listens to the server's ``GET /v1/stream`` (SSE) and notes when each coin's bar became readable;
- reports per-frame latency (p50, p99) = readable time of the frame's bar − frame send time,
  against the aim ``bar_ms + lateness_ms + 250 ms``, and the CPU the server process used.

Scenarios: ``small`` = BTC, ETH, SOL at 12× the simulator's real-time rate (~400 frames/s);
``market`` = 180 synthetic coins (simulated markets renamed) at ~700 frames/s.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from websockets.sync.client import connect

from tools.fake_exchange import FakeExchange, Feed, ListFeed, SimFeed
from tools.simulate import SimConfig
from tools.simulate.market import generate_market, market_coins

REPO = Path(__file__).resolve().parents[1]
BAR_MS = 1000
LATENESS_MS = 1000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def market_frames(n_coins: int, seconds: float) -> Iterator[tuple[int, dict[str, Any]]]:
    """``n_coins`` synthetic coins' data frames, in receive order, one at a time: 4-coin
    simulations with other seeds, renamed (`tools.simulate.market`), without acks and pongs.
    `tools.bench_cluster` streams the same market to a file."""
    for recv_ns, frame in generate_market(n_coins, seconds, seed=100):
        if frame.get("channel") not in ("subscriptionResponse", "pong"):
            yield recv_ns, frame


def market_feed(n_coins: int, seconds: float) -> tuple[Feed, list[str]]:
    """`market_frames` as a feed of the local exchange, and the coins' names."""
    items: list[tuple[int | None, dict[str, Any]]] = list(market_frames(n_coins, seconds))
    return ListFeed(items), market_coins(n_coins)


class _Tap:
    """A client of the exchange: when each frame left it, by coin and bar."""

    def __init__(self, ws_url: str, coins: list[str]) -> None:
        self.sent: dict[tuple[str, int], list[float]] = defaultdict(list)
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ws_url, coins), daemon=True)
        self._thread.start()

    def _run(self, ws_url: str, coins: list[str]) -> None:
        with connect(ws_url, max_size=None) as ws:
            for c in coins:
                for typ in ("trades", "l2Book", "bbo", "activeAssetCtx"):
                    ws.send(
                        orjson.dumps(
                            {"method": "subscribe", "subscription": {"type": typ, "coin": c}}
                        ).decode()
                    )
            while not self._stop.is_set():
                try:
                    raw = ws.recv(timeout=0.2)
                except TimeoutError:
                    continue
                now = time.time()
                frame = orjson.loads(raw)
                data = frame.get("data")
                ch = frame.get("channel")
                if ch == "trades" and isinstance(data, list):
                    for tr in data:
                        self.sent[(tr["coin"], tr["time"] // BAR_MS)].append(now)
                    self.frames += 1
                elif ch in ("l2Book", "bbo", "activeAssetCtx") and isinstance(data, dict):
                    t = data.get("time")  # a context has no exchange time: it is stamped on receipt
                    ms = int(now * 1000) if t is None else t
                    self.sent[(data["coin"], ms // BAR_MS)].append(now)
                    self.frames += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)


class _Stream:
    """An SSE client of the server: when each (coin, bar) became readable."""

    def __init__(self, port: int) -> None:
        self.readable: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(port,), daemon=True)
        self._thread.start()

    def _run(self, port: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/v1/stream")
        resp = conn.getresponse()
        data = b""
        while not self._stop.is_set():
            try:
                line = resp.readline()
            except TimeoutError:
                continue
            if not line:
                return
            if line.startswith(b"data:"):
                data += line[5:].strip()
            elif line.strip() == b"" and data:
                env = orjson.loads(data)
                data = b""
                if isinstance(env, dict) and "timestamp_ms" in env:
                    key = (env["coin"], env["bar"]["open_ms"] // BAR_MS)
                    self.readable.setdefault(key, time.time())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _wait_http(port: int, path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    msg = f"server on port {port} did not answer {path} within {timeout_s} s"
    raise TimeoutError(msg)


def run_scenario(
    name: str, feed: Feed, coins: list[str], speed: float, seconds: float
) -> dict[str, Any]:
    """Run one scenario; returns its figures."""
    with FakeExchange(feed, speed=speed, loop_feed=True, idle_timeout_s=None) as ex:
        port = _free_port()
        cmd = [
            sys.executable,
            "-m",
            "api.server",
            "--coins",
            ",".join(coins),
            "--ws-url",
            ex.ws_url,
            "--info-url",
            ex.info_url,
            "--port",
            str(port),
            "--no-warm-start",
            "--log-level",
            "WARNING",
        ]
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            _wait_http(port, "/health", 60)
            tap = _Tap(ex.ws_url, coins)
            stream = _Stream(port)
            time.sleep(3.0)  # warm-up: connections, first bars
            t0 = time.time()
            cpu0 = _cpu_s(proc.pid)
            frames0 = tap.frames
            time.sleep(seconds)
            t1 = time.time()
            cpu1 = _cpu_s(proc.pid)
            frames = tap.frames - frames0
            time.sleep((BAR_MS + LATENESS_MS) / 1000 + 2.0)  # let the last bars close
            tap.stop()
            stream.stop()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    lat: list[float] = []
    unmatched = 0
    for key, sends in tap.sent.items():
        bar_start = key[1] * BAR_MS / 1000
        if not (t0 <= bar_start and bar_start + BAR_MS / 1000 <= t1):
            continue
        ready = stream.readable.get(key)
        if ready is None:
            unmatched += len(sends)
            continue
        lat.extend(ready - s for s in sends)
    lat.sort()

    def pct(p: float) -> float | None:
        return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

    return {
        "scenario": name,
        "coins": len(coins),
        "frames_per_s": round(frames / (t1 - t0)),
        "latency_ms_p50": pct(0.50),
        "latency_ms_p99": pct(0.99),
        "latency_ms_mean": round(1000 * statistics.fmean(lat), 1) if lat else None,
        "aim_ms_p99": BAR_MS + LATENESS_MS + 250,
        "frames_measured": len(lat),
        "frames_without_signal": unmatched,
        "server_cpu_cores": round((cpu1 - cpu0) / (t1 - t0), 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tools.bench --live``."""
    ap = argparse.ArgumentParser(prog="python -m tools.bench --live", description=__doc__)
    ap.add_argument("--seconds", type=float, default=20.0, help="measurement window per scenario")
    ap.add_argument("--scenario", choices=("small", "market", "both"), default="both")
    ap.add_argument("--json", action="store_true")
    ns = ap.parse_args(argv)
    results = []
    if ns.scenario in ("small", "both"):
        small: Feed = SimFeed(SimConfig(coins=("BTC", "ETH", "SOL"), seconds=600, seed=7))
        results.append(
            run_scenario("BTC+ETH+SOL x12", small, ["BTC", "ETH", "SOL"], 12.0, ns.seconds)
        )
    if ns.scenario in ("market", "both"):
        feed, coins = market_feed(180, 120)
        # ~180 coins x ~11 frames/s simulated: slow the clock to ~700 frames/s in total.
        results.append(run_scenario("market 180 coins", feed, coins, 0.4, ns.seconds))
    if ns.json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
        return 0
    cols = (
        "scenario",
        "coins",
        "frames_per_s",
        "latency_ms_p50",
        "latency_ms_p99",
        "aim_ms_p99",
        "server_cpu_cores",
        "frames_measured",
        "frames_without_signal",
    )
    print("  ".join(f"{c:>18}" for c in cols))
    for r in results:
        print("  ".join(f"{r[c]!s:>18}" for c in cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
