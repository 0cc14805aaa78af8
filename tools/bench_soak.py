"""Soak: the server's memory over a long live run against the local exchange.

    python -m tools.bench --soak [--coins 120] [--minutes 30] [--interval-s 30]
                                 [--history-limit 60] [--speed 0.4] [--json] [--trace-dir DIR]

Everything runs on loopback, as ``tools.bench --live`` does: the local exchange
(`tools.fake_exchange`) streams ``--coins`` synthetic markets (the simulator's coins renamed
C000, C001, ...; the feed loops), and the server (``python -m api.server --coins ...``, a separate
process) ingests them live while this tool acts as its clients: one SSE client on
``/v1/stream`` and a poller that reads ``/v1/signal/{coin}``, ``/v1/signals``, a history,
``/v1/state`` and ``/metrics`` every couple of seconds.

Every ``--interval-s`` it samples the server's RSS (``/proc/<pid>/status``), its CPU, the
signals stored and the machine's load average, and at the end reports the table and:

- ``growth_last_third_pct``: RSS growth over the last third of the run (the last 10 minutes of
  30), the figure that says whether memory levelled off (aim: < 2 %);
- ``rss_per_coin_kb``: (final RSS − RSS when the server first answered) / coins.

``--trace-dir DIR`` runs the server under ``tracemalloc`` and writes, every interval, the 30
source lines whose allocations grew most since the first snapshot to ``DIR/growth_<s>.txt``
(slower; for finding a leak, not for the figures).

    python -m tools.bench --soak --per-coin [--json]

measures instead, in-process and without a server, what one coin costs: the same synthetic
markets replayed (8 and then 32 coins, 660 s of exchange time so that the 600-bar baselines
fill, history 60) under
``tracemalloc``; the slope of the traced memory (flow state, parser, store) per coin, and the
store's share of it (`connectors.store.SignalStore.memory`).

One program past ~400 lines: the exchange, the server process, its clients and the sampling
form one measurement and read best together.
"""

from __future__ import annotations

import argparse
import http.client
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson

from tools.bench_live import _cpu_s, _free_port, _wait_http, market_feed
from tools.fake_exchange import FakeExchange

REPO = Path(__file__).resolve().parents[1]


def rss_kb(pid: int) -> int:
    """Resident set size of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class _Clients:
    """An SSE reader and a REST poller against the server (what a deployment sees)."""

    def __init__(self, port: int, coins: list[str], poll_s: float = 2.0) -> None:
        self.port = port
        self.coins = coins
        self.poll_s = poll_s
        self.events = 0
        self.requests = 0
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._sse, daemon=True),
            threading.Thread(target=self._poll, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _sse(self) -> None:
        while not self._stop.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/v1/stream")
                resp = conn.getresponse()
                while not self._stop.is_set():
                    line = resp.readline()
                    if not line:
                        break
                    if line.startswith(b"event: signal"):
                        self.events += 1
            except OSError:
                self.errors += 1
                self._stop.wait(1.0)

    def _poll(self) -> None:
        i = 0
        while not self._stop.wait(self.poll_s):
            coin = self.coins[i % len(self.coins)]
            i += 1
            paths = [
                f"/v1/signal/{coin}",
                "/v1/signals",
                f"/v1/signal/{coin}/history?limit=100",
                "/v1/state",
                "/metrics",
            ]
            for path in paths:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    resp.read()
                    conn.close()
                    self.requests += 1
                    if resp.status >= 500:
                        self.errors += 1
                except OSError:
                    self.errors += 1

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=6)


def _signals(port: int) -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/health")
        body = orjson.loads(conn.getresponse().read())
        conn.close()
        n = body.get("signals_emitted")
        return n if isinstance(n, int) else None
    except (OSError, ValueError):
        return None


def growth_pct(samples: list[dict[str, Any]], fraction: float = 1 / 3) -> float | None:
    """RSS growth (%) from the sample at the start of the last ``fraction`` of the run to the
    last sample."""
    if len(samples) < 2:
        return None
    t_end = samples[-1]["t_s"]
    t_from = t_end * (1 - fraction)
    start = next(s for s in samples if s["t_s"] >= t_from)
    if start is samples[-1]:
        start = samples[-2]
    end_kb, start_kb = float(samples[-1]["rss_kb"]), float(start["rss_kb"])
    return round(100 * (end_kb - start_kb) / start_kb, 2)


def run_soak(
    n_coins: int,
    minutes: float,
    interval_s: float,
    history_limit: int,
    speed: float,
    trace_dir: Path | None = None,
    out: Any = sys.stderr,
) -> dict[str, Any]:
    """Run the soak; returns the samples and the summary figures."""
    feed, coins = market_feed(n_coins, 120)
    with FakeExchange(feed, speed=speed, loop_feed=True, idle_timeout_s=None) as ex:
        port = _free_port()
        server = [
            "--coins",
            ",".join(coins),
            "--ws-url",
            ex.ws_url,
            "--info-url",
            ex.info_url,
            "--port",
            str(port),
            "--no-warm-start",
            "--history-limit",
            str(history_limit),
            "--rate-limit-per-s",
            "0",
            "--log-level",
            "WARNING",
        ]
        cmd = [sys.executable, "-m", "tools.bench_soak"]
        if trace_dir is not None:
            cmd += ["--serve-traced", str(trace_dir), "--interval-s", str(interval_s)]
        else:
            cmd = [sys.executable, "-m", "api.server"]
        proc = subprocess.Popen(
            [*cmd, *server],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        samples: list[dict[str, Any]] = []
        clients: _Clients | None = None
        try:
            _wait_http(port, "/health", 120)
            t0 = time.monotonic()
            cpu0 = _cpu_s(proc.pid)
            rss0 = rss_kb(proc.pid)
            clients = _Clients(port, coins)
            end = t0 + minutes * 60
            next_at = t0 + interval_s
            print(f"{'t_s':>6} {'rss_mb':>8} {'signals':>9} {'cpu':>6} {'load1':>6}", file=out)
            while True:
                now = time.monotonic()
                if now < next_at:
                    time.sleep(min(next_at - now, 1.0))
                    if proc.poll() is not None:
                        msg = f"the server exited ({proc.returncode})"
                        raise RuntimeError(msg)
                    continue
                t = now - t0
                cpu = _cpu_s(proc.pid)
                sample: dict[str, Any] = {
                    "t_s": round(t, 1),
                    "rss_kb": rss_kb(proc.pid),
                    "signals": _signals(port),
                    "cpu_cores": round((cpu - cpu0) / t, 3),
                    "load_avg": [round(x, 2) for x in os.getloadavg()],
                }
                samples.append(sample)
                print(
                    f"{sample['t_s']:>6.0f} {sample['rss_kb'] / 1024:>8.1f} "
                    f"{sample['signals']!s:>9} {sample['cpu_cores']:>6.2f} "
                    f"{sample['load_avg'][0]:>6.2f}",
                    file=out,
                    flush=True,
                )
                next_at += interval_s
                if next_at > end + 0.5:
                    break
        finally:
            if clients is not None:
                clients.stop()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    last = samples[-1] if samples else None
    return {
        "coins": n_coins,
        "minutes": minutes,
        "history_limit": history_limit,
        "speed": speed,
        "traced": trace_dir is not None,
        "rss_start_kb": rss0,
        "rss_end_kb": last["rss_kb"] if last else None,
        "rss_peak_kb": max(s["rss_kb"] for s in samples) if samples else None,
        "growth_last_third_pct": growth_pct(samples),
        "rss_per_coin_kb": round((last["rss_kb"] - rss0) / n_coins, 1) if last else None,
        "signals_per_s": round(
            (last["signals"] or 0) / last["t_s"] if last and last["signals"] else 0.0, 1
        ),
        "sse_events": clients.events if clients else 0,
        "requests": clients.requests if clients else 0,
        "client_errors": clients.errors if clients else 0,
        "server_cpu_cores": last["cpu_cores"] if last else None,
        "load_avg_end": last["load_avg"] if last else None,
        "samples": samples,
    }


def _traced_replay(n_coins: int, seconds: float, history_limit: int, tmp: Path) -> dict[str, Any]:
    """Replay ``n_coins`` synthetic markets under tracemalloc; memory near the end of the run."""
    from connectors.store import SignalStore
    from flows.pipeline import build_pipeline, run_pipeline
    from flows.settings import Settings

    feed, _coins = market_feed(n_coins, seconds)
    path = tmp / f"market_{n_coins}.ndjson"
    with path.open("wb") as fh:
        for recv_ns, frame in feed.frames(0):
            fh.write(f"{recv_ns} ".encode() + orjson.dumps(frame) + b"\n")
    pipeline = build_pipeline(
        Settings(replay=[str(path)], api=False, history_limit=history_limit), collect=False
    )
    store: SignalStore = pipeline.store
    samples: list[tuple[int, int]] = []  # (envelopes stored, traced bytes)
    done = threading.Event()
    expected = n_coins * int(seconds)  # one envelope per coin per 1 s bar
    by_file: dict[str, int] = {}

    def sample() -> None:
        while not done.wait(0.1):
            n = store.signals_emitted
            samples.append((n, tracemalloc.get_traced_memory()[0]))
            if not by_file and n >= 0.9 * expected:  # where the memory is, near the end
                stats = tracemalloc.take_snapshot().statistics("filename")
                for st in stats[:12]:
                    name = st.traceback[0].filename
                    short = name.split("site-packages/")[-1].replace(str(REPO) + "/", "")
                    by_file[short] = st.size

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run_pipeline(pipeline)
        mem = store.memory()
    finally:
        done.set()
        sampler.join()
        tracemalloc.stop()
    total = store.signals_emitted
    late = [b for n, b in samples if n >= 0.9 * total] or [b for _, b in samples[-3:]]
    return {
        "coins": n_coins,
        "signals": total,
        "traced_bytes": (max(late) if late else 0) - base,
        "store_bytes": mem["envelope_bytes"],
        "store_envelopes": mem["envelopes"],
        "top_files_bytes": by_file,
    }


def per_coin(seconds: float = 660.0, history_limit: int = 60) -> dict[str, Any]:
    """What one coin costs in-process: the slope between 8 and 32 replayed coins."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        small = _traced_replay(8, seconds, history_limit, Path(tmp))
        large = _traced_replay(32, seconds, history_limit, Path(tmp))
    n = large["coins"] - small["coins"]
    per = (large["traced_bytes"] - small["traced_bytes"]) / n
    store = (large["store_bytes"] - small["store_bytes"]) / n
    envs = (large["store_envelopes"] - small["store_envelopes"]) / n
    return {
        "history_limit": history_limit,
        "runs": [small, large],
        "per_coin_kb": round(per / 1024, 1),
        "store_per_coin_kb": round(store / 1024, 1),
        "store_bytes_per_envelope": round(store / envs) if envs else None,
        "state_per_coin_kb": round((per - store) / 1024, 1),
        "top_files_per_coin_kb": {
            f: round((b - small["top_files_bytes"].get(f, 0)) / n / 1024, 1)
            for f, b in large["top_files_bytes"].items()
        },
    }


def serve_traced(trace_dir: Path, interval_s: float, server_args: list[str]) -> None:
    """Run ``api.server`` under tracemalloc, writing the top growing lines every interval."""
    trace_dir.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(1)
    started = time.monotonic()

    def dump() -> None:
        base: tracemalloc.Snapshot | None = None
        while True:
            time.sleep(interval_s)
            snap = tracemalloc.take_snapshot().filter_traces(
                (tracemalloc.Filter(False, tracemalloc.__file__),)
            )
            if base is None:
                base = snap
                continue
            top = snap.compare_to(base, "lineno")[:30]
            t = round(time.monotonic() - started)
            total = sum(s.size for s in snap.statistics("filename"))
            lines = [f"traced {total / 1e6:.1f} MB at {t} s; growth since first snapshot:"]
            lines += [str(s) for s in top]
            (trace_dir / f"growth_{t:05d}.txt").write_text("\n".join(lines) + "\n")

    threading.Thread(target=dump, daemon=True).start()
    sys.argv = ["api.server", *server_args]
    runpy.run_module("api.server", run_name="__main__", alter_sys=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tools.bench --soak``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--serve-traced"]:  # internal: the traced server process
        trace_dir, interval = Path(args[1]), float(args[3])
        serve_traced(trace_dir, interval, args[4:])
        return 0
    ap = argparse.ArgumentParser(prog="python -m tools.bench --soak", description=__doc__)
    ap.add_argument("--coins", type=int, default=120, help="synthetic coins (default 120)")
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the run (default 30)")
    ap.add_argument("--interval-s", type=float, default=30.0, help="RSS sample period (30)")
    ap.add_argument("--history-limit", type=int, default=60, help="server's history (60)")
    ap.add_argument(
        "--speed", type=float, default=0.4, help="exchange clock rate (0.4: ~3 frames/s per coin)"
    )
    ap.add_argument("--trace-dir", type=Path, help="run the server under tracemalloc")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--per-coin", action="store_true", help="in-process bytes per coin instead")
    ap.add_argument(
        "--per-coin-seconds",
        type=float,
        default=660.0,
        help="exchange seconds replayed by --per-coin (660: the 600-bar baselines fill)",
    )
    ns = ap.parse_args(args)
    if ns.per_coin:
        pc = per_coin(ns.per_coin_seconds, ns.history_limit)
        if ns.json:
            print(orjson.dumps(pc, option=orjson.OPT_INDENT_2).decode())
        else:
            print(
                f"per coin (history {pc['history_limit']}): {pc['per_coin_kb']} KB traced, of "
                f"which the store {pc['store_per_coin_kb']} KB "
                f"({pc['store_bytes_per_envelope']} B/envelope) and flow state + parser "
                f"{pc['state_per_coin_kb']} KB"
            )
        return 0
    if ns.coins < 1 or ns.minutes <= 0 or ns.interval_s <= 0:
        ap.error("--coins, --minutes and --interval-s must be positive")
    r = run_soak(
        ns.coins, ns.minutes, ns.interval_s, ns.history_limit, ns.speed, ns.trace_dir, sys.stderr
    )
    if ns.json:
        print(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(
        f"coins {r['coins']}  history {r['history_limit']}  minutes {r['minutes']}  "
        f"signals/s {r['signals_per_s']}  server CPU {r['server_cpu_cores']} cores"
    )
    print(
        f"RSS start {r['rss_start_kb'] / 1024:.1f} MB  end {(r['rss_end_kb'] or 0) / 1024:.1f} MB  "
        f"peak {(r['rss_peak_kb'] or 0) / 1024:.1f} MB  per coin {r['rss_per_coin_kb']} KB"
    )
    print(
        f"growth over the last third: {r['growth_last_third_pct']} % (aim < 2 %)  "
        f"load average at the end {r['load_avg_end']}  SSE events {r['sse_events']}  "
        f"requests {r['requests']}  client errors {r['client_errors']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
