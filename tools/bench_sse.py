"""SSE fan-out lag: many raw ``/v1/stream`` clients, events published in timed batches.

Used by `tools.bench_api` (the in-memory store) and `tools.bench_redis` (a Redis-backed
``--serve-only`` replica): the same subscribers and the same lag arithmetic for both, only the
publisher differs. A publisher is a function ``(batches, size, interval_s) -> [t0, ...]`` that
publishes ``batches`` batches of ``size`` envelopes, one batch every ``interval_s``, and returns
the CLOCK_MONOTONIC time (shared by the processes of one machine) at which each envelope was
handed to the store, in publishing order.

A client's lag for an envelope is its receipt time minus that hand-over time. Envelopes are
matched by order: SSE ids are ``<run>:<seq>`` with ``seq`` rising in publishing order (one writer),
so the k-th new id a client sees after a round starts is the k-th envelope published in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"

Publisher = Callable[[int, int, float], list[float]]
"""``(batches, size, interval_s) -> hand-over times``, run in a thread (it may block)."""


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


def id_seq(raw: bytes) -> int:
    """The sequence number of an SSE id ``<run>:<seq>`` (a bare integer is read as is)."""
    return int(raw.rsplit(b":", 1)[-1])


async def subscriber(
    port: int, token: str, got: dict[int, float], opened: asyncio.Event, done: asyncio.Event
) -> None:
    """One raw SSE client: record the receipt time of every ``id:`` (by its sequence number)."""
    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
    req = (
        f"GET /v1/stream HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
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
                got.setdefault(id_seq(buf[i + 5 : j]), t)
                pos = j
            buf = buf[pos:] if pos else buf[-64:] if len(buf) > 1 << 16 else buf
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def lags_by_order(got: dict[int, float], before: int, stamps: list[float]) -> list[float]:
    """A client's lags for one round: its first ``len(stamps)`` ids above ``before`` (the highest
    sequence number any client had seen before the round), in order, against ``stamps``."""
    new = sorted(s for s in got if s > before)[: len(stamps)]
    return [got[s] - t0 for s, t0 in zip(new, stamps, strict=False)]


def fan_out(
    pid: int,
    port: int,
    token: str,
    publish: Publisher,
    registered: Callable[[], int],
    *,
    subscribers: int,
    batches: int,
    batch: int,
    interval_s: float,
    rounds: int,
) -> dict[str, Any]:
    """Open ``subscribers`` streams on ``port`` (server process ``pid``), measure them idle, then
    publish ``rounds`` times and measure the lag of every delivery (best and median round).

    ``registered()`` is how many streams the server holds (waited for before publishing)."""

    async def run() -> dict[str, Any]:
        rss0 = rss_mb(pid)
        done = asyncio.Event()
        got: list[dict[int, float]] = [{} for _ in range(subscribers)]
        opened = [asyncio.Event() for _ in range(subscribers)]
        tasks = [
            asyncio.create_task(subscriber(port, token, g, o, done))
            for g, o in zip(got, opened, strict=True)
        ]
        async with asyncio.timeout(60):
            await asyncio.gather(*(o.wait() for o in opened))
            while await asyncio.to_thread(registered) < subscribers:  # noqa: ASYNC110
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
            before = max((max(g) for g in got if g), default=-1)
            c0, t0 = cpu_s(pid), time.monotonic()
            stamps = await asyncio.wait_for(
                asyncio.to_thread(publish, batches, batch, interval_s),
                timeout=batches * interval_s + 30,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not all(  # noqa: ASYNC110
                sum(1 for s in g if s > before) >= len(stamps) for g in got
            ):
                await asyncio.sleep(0.05)  # polling plain dicts filled by other tasks
            busy_cpu_s += cpu_s(pid) - c0
            busy_s += time.monotonic() - t0
            lags: list[float] = []
            for g in got:
                mine = lags_by_order(g, before, stamps)
                missing += len(stamps) - len(mine)
                lags.extend(mine)
            deliveries += len(lags)
            events += len(stamps)
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


__all__ = ["HOST", "Publisher", "cpu_s", "fan_out", "id_seq", "lags_by_order", "pct", "rss_mb"]
