"""The push channel, ``GET /v1/stream`` (`api.stream`): contract, filters, resume, slow clients.

Streams are read for real: uvicorn serves the app from a thread on a free loopback port and an
httpx2 client reads with read timeouts, or the `Broadcaster`'s async generator is driven directly
on an event loop. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import signal
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import orjson
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.signals import refresh
from api.stream import Broadcaster, close_streams_on_exit
from connectors.store import SignalStore
from flows.pipeline import build_pipeline, run_pipeline
from flows.settings import Settings
from tests.conftest import SAMPLE

Envelope = dict[str, Any]
READ_TIMEOUT_S = 5.0


# -- helpers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn from a thread on a free loopback port; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    app.state.test_server = server
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app.state.streams.close_all()
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "uvicorn did not stop"


@dataclass
class Event:
    """One SSE message: ``kind`` is the event name, or ``:`` for a comment."""

    kind: str
    data: str = ""
    id: str | None = None


class Reader:
    """Parses an SSE response line by line (the client's read timeout bounds every wait)."""

    def __init__(self, response: httpx2.Response) -> None:
        self.lines = response.iter_lines()

    def next(self) -> Event:
        kind, data, eid = "", [], None
        for line in self.lines:
            if line.startswith(":"):
                return Event(":", line[1:].strip())
            if not line:
                if kind or data or eid is not None:
                    return Event(kind or "message", "\n".join(data), eid)
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                eid = value
        raise EOFError("the stream ended")

    def events(self, n: int, *, comments: bool = False) -> list[Event]:
        out: list[Event] = []
        while len(out) < n:
            e = self.next()
            if comments or e.kind != ":":
                out.append(e)
        return out


@contextmanager
def stream(
    base: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> Iterator[Reader]:
    timeout = httpx2.Timeout(READ_TIMEOUT_S, connect=5.0)
    with (
        httpx2.Client(base_url=base, timeout=timeout) as client,
        client.stream("GET", "/v1/stream", params=params, headers=headers) as r,
    ):
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        yield Reader(r)


def wait_for(what: str, check: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.005)


def seq_of(event_id: str | bytes | None) -> int:
    """The sequence number of an opaque SSE id ``<run>:<seq>``."""
    assert event_id is not None
    text = event_id.decode() if isinstance(event_id, bytes) else event_id
    run, sep, seq = text.rpartition(":")
    assert sep, text
    assert run, text
    assert ":" not in run, text
    return int(seq)


def ids_in(data: bytes) -> list[int]:
    """The sequence numbers of the ``id:`` lines of raw SSE bytes."""
    return [seq_of(x[4:]) for x in data.split(b"\n") if x.startswith(b"id: ")]


def subscribers(app: FastAPI) -> int:
    n: int = app.state.streams.subscribers
    return n


def variant(env: Envelope, label: str, direction: str, actionable: bool, ts: int) -> Envelope:
    out = copy.deepcopy(env)
    out["regime"]["label"] = label
    out["direction"] = direction
    out["edge"]["actionable"] = actionable
    out["timestamp_ms"] = ts
    return out


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> list[tuple[str, Envelope]]:
    """Every envelope the shipped sample capture produces, in emission order."""
    pipeline = build_pipeline(Settings(replay=[str(SAMPLE)], api=False), collect=True)
    run_pipeline(pipeline)
    assert pipeline.collected
    return list(pipeline.collected)


@pytest.fixture
def envs(sample: list[tuple[str, Envelope]]) -> list[tuple[str, Envelope]]:
    """200 envelopes, the coins taking turns (BTC, ETH, SOL, BTC, ...)."""
    by_coin: dict[str, list[tuple[str, Envelope]]] = {}
    for item in sample:
        by_coin.setdefault(item[0], []).append(item)
    turns = zip(*(by_coin[c] for c in sorted(by_coin)), strict=False)
    return [item for group in turns for item in group][:200]


# -- the contract --------------------------------------------------------------------------------


def test_stream_sends_each_new_envelope_with_its_sequence_id(
    envs: list[tuple[str, Envelope]],
) -> None:
    store = SignalStore()
    store.source_clock = lambda: envs[20][1]["timestamp_ms"]
    store.put_many(envs[:5])  # before the client: not sent (no Last-Event-ID)
    app = create_app(store, token=None, sse_keepalive_s=60)
    with serve(app) as base, stream(base) as sse:
        wait_for("the subscriber", lambda: subscribers(app) == 1)
        store.put_many(envs[5:8])
        store.put_many(envs[8:10])
        got = sse.events(5)
        with httpx2.Client(base_url=base) as c:
            latest = c.get(f"/v1/signal/{envs[9][0]}")
    assert [e.kind for e in got] == ["signal"] * 5
    assert [e.id for e in got] == [f"{store.run}:{n}" for n in range(6, 11)]
    now = store.now_ms()
    for e, (coin, env) in zip(got, envs[5:10], strict=True):
        body = orjson.loads(e.data)
        assert body["coin"] == coin
        assert body == orjson.loads(orjson.dumps(refresh(env, now)))
    # the same document, byte for byte, as GET /v1/signal/{coin} returns for that envelope
    assert latest.status_code == 200, latest.text
    assert got[-1].data.encode() == latest.content


def test_stream_validates_before_streaming(envs: list[tuple[str, Envelope]]) -> None:
    store = SignalStore(coins=("BTC", "kPEPE", "KPEPE"))
    store.put_many(envs[:3])
    client = TestClient(create_app(store, token=None))
    r = client.get("/v1/stream", params={"coins": "BTC,DOGE"})
    assert r.status_code == 404
    assert r.json()["detail"] == "unknown coin 'DOGE'"
    assert r.json()["coins"] == store.coins()
    assert client.get("/v1/stream", params={"coins": "kpepe"}).status_code == 404  # ambiguous
    for params in ({"coins": "BTC;ETH"}, {"coins": ""}, {"coins": "BTC,,ETH"}, {"on": "x"}):
        r = client.get("/v1/stream", params=params)
        assert r.status_code == 422, (params, r.text)
        assert set(r.json()) == {"detail"}
        assert r.headers["content-type"] == "application/json"
    r = client.get("/v1/stream", headers={"Last-Event-ID": "x" * 200})
    assert r.status_code == 422
    assert "Last-Event-ID" in r.json()["detail"]


def test_stream_filters_coins_case_insensitively(envs: list[tuple[str, Envelope]]) -> None:
    store = SignalStore()
    store.put_many(envs[:6])  # every coin twice
    assert store.coins() == ["BTC", "ETH", "SOL"]
    app = create_app(store, token=None)
    with serve(app) as base, stream(base, {"coins": "btc, Sol"}) as sse:
        wait_for("the subscriber", lambda: subscribers(app) == 1)
        store.put_many(envs[6:60])
        want = [(f"{store.run}:{i + 1}", c) for i, (c, _) in enumerate(envs[:60]) if i >= 6]
        want = [(i, c) for i, c in want if c in {"BTC", "SOL"}]
        got = sse.events(len(want))
    assert [(e.id, orjson.loads(e.data)["coin"]) for e in got] == want


def test_stream_on_change_sends_only_label_direction_or_actionable_changes(
    envs: list[tuple[str, Envelope]],
) -> None:
    base_env = envs[0][1]
    t = base_env["timestamp_ms"]
    script = [  # coin, label, direction, actionable, is it a change for that coin?
        ("BTC", "TRENDING", "LONG", True, True),  # first of its coin
        ("ETH", "TRENDING", "LONG", True, True),  # first of its coin
        ("BTC", "TRENDING", "LONG", True, False),
        ("BTC", "MEAN_REVERTING", "LONG", True, True),  # label
        ("ETH", "TRENDING", "LONG", True, False),
        ("BTC", "MEAN_REVERTING", "SHORT", True, True),  # direction
        ("BTC", "MEAN_REVERTING", "SHORT", False, True),  # actionable
        ("BTC", "MEAN_REVERTING", "SHORT", False, False),
        ("ETH", "CHAOTIC", "LONG", True, True),
    ]
    items = [
        (coin, variant(base_env | {"coin": coin}, label, d, a, t + 1000 * i))
        for i, (coin, label, d, a, _) in enumerate(script)
    ]
    store = SignalStore()
    app = create_app(store, token=None)
    with serve(app) as base:
        with stream(base, {"on": "change"}) as sse:
            wait_for("the subscriber", lambda: subscribers(app) == 1)
            for item in items:  # one at a time, and then all again in one batch below
                store.put_many([item])
            want = [f"{store.run}:{i + 1}" for i, row in enumerate(script) if row[4]]
            assert [e.id for e in sse.events(len(want))] == want
        # a resume computes the same changes from the ring
        start = {"Last-Event-ID": f"{store.run}:0"}
        with stream(base, {"on": "change", "coins": "BTC"}, start) as sse:
            want = [
                f"{store.run}:{i + 1}" for i, row in enumerate(script) if row[4] and row[0] == "BTC"
            ]
            assert [e.id for e in sse.events(len(want))] == want


def test_stream_sends_keepalives_while_idle() -> None:
    app = create_app(SignalStore(), token=None, sse_keepalive_s=0.2)
    with serve(app) as base, stream(base) as sse:
        t0 = time.monotonic()
        pings = sse.events(3, comments=True)
        elapsed = time.monotonic() - t0
    assert [(e.kind, e.data) for e in pings] == [(":", "ping")] * 3
    assert 0.4 <= elapsed < 3.0


# -- resume --------------------------------------------------------------------------------------


def test_resume_from_last_event_id_has_no_gap_and_no_duplicate(
    envs: list[tuple[str, Envelope]],
) -> None:
    store = SignalStore()
    app = create_app(store, token=None, sse_queue_size=4096)
    total = 300
    items = [envs[i % len(envs)] for i in range(total)]

    def writer() -> None:
        for i in range(0, total, 3):
            store.put_many(items[i : i + 3])
            time.sleep(0.002)

    seen: list[int] = []
    with serve(app) as base:
        thread = threading.Thread(target=writer)
        thread.start()
        last = 0
        reconnects = 0
        try:
            while last < total:
                with stream(base, headers={"Last-Event-ID": f"{store.run}:{last}"}) as sse:
                    for _ in range(37):  # then drop the connection, mid-stream
                        e = sse.next()
                        if e.kind == ":":
                            continue
                        assert e.kind == "signal", e
                        assert e.id is not None
                        seen.append(seq_of(e.id))
                        last = seq_of(e.id)
                        if last == total:
                            break
                reconnects += 1
                assert reconnects < 50
        finally:
            thread.join(timeout=10)
    assert seen == list(range(1, total + 1))
    assert reconnects >= 5


def test_resume_older_than_the_ring_says_how_much_was_missed(
    envs: list[tuple[str, Envelope]],
) -> None:
    store = SignalStore(ring_size=5)
    store.put_many(envs[:20])  # the ring holds ids 16..20
    app = create_app(store, token=None)
    run = store.run
    held = [f"{run}:{n}" for n in range(16, 21)]
    with serve(app) as base:
        with stream(base, headers={"Last-Event-ID": f"{run}:3"}) as sse:
            first, *rest = sse.events(6)
        with stream(base, headers={"Last-Event-ID": f"{run}:17"}) as sse:
            no_gap = sse.events(3)
        restarts = []
        # another run's id, one ahead of this run, an integer id of an older release, garbage
        for other in ("mh0000000aa:5", f"{run}:999", "17", "12a"):
            with stream(base, headers={"Last-Event-ID": other}) as sse:
                restarts.append((other, sse.events(6)))
    assert first.kind == "dropped"
    assert first.id is None
    drop = orjson.loads(first.data)
    assert drop["missed"] == 12  # ids 4..15
    assert drop["last_id"] == f"{run}:3"
    assert drop["reason"].startswith("history_evicted:")
    assert [e.id for e in rest] == held
    assert [(e.kind, e.id) for e in no_gap] == [("signal", f"{run}:{n}") for n in (18, 19, 20)]
    for other, (restarted, *again) in restarts:
        assert restarted.kind == "dropped", other
        assert orjson.loads(restarted.data) | {"reason": ""} == {
            "missed": 15,
            "last_id": other,
            "reason": "",
        }
        assert orjson.loads(restarted.data)["reason"].startswith("restarted:")
        assert [e.id for e in again] == held


def test_stream_follows_a_whole_replay_in_order(sample: list[tuple[str, Envelope]]) -> None:
    pipeline = build_pipeline(Settings(replay=[str(SAMPLE)], api=False))
    app = create_app(pipeline.store, token=None, sse_queue_size=len(sample) + 10)
    start = {"Last-Event-ID": f"{pipeline.store.run}:0"}
    with serve(app) as base, stream(base, headers=start) as sse:
        wait_for("the subscriber", lambda: subscribers(app) == 1)
        run_pipeline(pipeline)
        got = sse.events(pipeline.store.signals_emitted)
    assert [seq_of(e.id) for e in got] == list(range(1, len(sample) + 1))
    assert [orjson.loads(e.data)["coin"] for e in got] == [c for c, _ in sample]


# -- slow and idle clients -----------------------------------------------------------------------


def test_a_batch_larger_than_the_queue_reaches_a_client_that_is_not_behind(
    envs: list[tuple[str, Envelope]],
) -> None:
    """A whole market closing a few bars at once stores more envelopes in one batch than a
    client's queue holds; a client that has taken everything so far is not slow and gets it
    all (it was dropped at once before: `tools.bench --live` on 180 coins measured nothing)."""
    store = SignalStore()
    b = Broadcaster(store, keepalive_s=60, queue_size=8)

    async def main() -> list[bytes]:
        events = b.events()
        first = asyncio.ensure_future(anext(events))
        while b.subscribers < 1:  # noqa: ASYNC110 - a plain counter, no event to wait on
            await asyncio.sleep(0.001)
        store.put_many(envs[:50])  # one batch, 50 > 8
        got = [await asyncio.wait_for(first, 30)]
        async with asyncio.timeout(30):
            while len(ids_in(b"".join(got))) < 50:
                got.append(await anext(events))
        await events.aclose()
        return got

    got = b"".join(asyncio.run(main()))
    assert b"event: dropped" not in got
    assert got.count(b"event: signal\n") == 50
    assert b.slow_clients == 0


def test_a_slow_client_is_dropped_while_others_get_everything(
    envs: list[tuple[str, Envelope]],
) -> None:
    store = SignalStore()
    b = Broadcaster(store, keepalive_s=60, queue_size=8)
    total = 200
    put_s: list[float] = []
    fast_seen = [0]  # the last id the fast client has read
    progress = threading.Condition()

    def writer() -> None:
        for i in range(0, total, 2):
            # Keep the fast client within its queue (8) whatever the machine's load: the test is
            # about the slow one falling behind, not about how fast this thread outruns the loop.
            with progress:
                progress.wait_for(lambda i=i: fast_seen[0] >= i - 4, timeout=10)
            t0 = time.perf_counter()
            store.put_many([envs[i % len(envs)], envs[(i + 1) % len(envs)]])
            put_s.append(time.perf_counter() - t0)

    async def main() -> tuple[list[bytes], bytes, list[bytes]]:
        slow = b.events()
        fast = b.events()
        first_slow = asyncio.ensure_future(anext(slow))  # subscribes, then waits
        fast_got: list[bytes] = []

        async def read_fast() -> None:
            async for chunk in fast:
                fast_got.append(chunk)
                ids = ids_in(chunk)
                if ids:
                    with progress:
                        fast_seen[0] = ids[-1]
                        progress.notify_all()
                if b":%d\n" % total in chunk:
                    return

        reading = asyncio.ensure_future(read_fast())
        while b.subscribers < 2:  # noqa: ASYNC110 - a plain counter, no event to wait on
            await asyncio.sleep(0.001)
        thread = threading.Thread(target=writer)
        thread.start()
        async with asyncio.timeout(60):
            await reading
        await asyncio.to_thread(thread.join, 60)
        async with asyncio.timeout(30):
            slow_first = await first_slow  # delivered, then never read again: falls behind
            assert b.subscribers == 1  # the slow one was removed when it fell behind
            slow_rest = [chunk async for chunk in slow]  # the dropped event, then the end
        await fast.aclose()
        assert b.subscribers == 0
        return fast_got, slow_first, slow_rest

    fast_got, slow_first, slow_rest = asyncio.run(main())
    ids = ids_in(b"".join(fast_got))
    assert ids == list(range(1, total + 1))
    assert b"event: dropped" not in b"".join(fast_got)
    assert slow_first.startswith(b"event: signal\n")
    assert len(slow_rest) == 1
    assert slow_rest[0].startswith(b"event: dropped\ndata: ")
    drop = orjson.loads(slow_rest[0].split(b"data: ", 1)[1].split(b"\n", 1)[0])
    first_ids = ids_in(slow_first)
    assert drop["last_id"] == f"{store.run}:{first_ids[-1]}"  # what it was sent before it stopped
    assert drop["missed"] >= 9  # more than its queue of 8
    assert drop["reason"].startswith("slow_client:")
    assert b.slow_clients == 1
    # The writer never waits on a client: a blocked put_many would stall for the whole test
    # (seconds). Bounds generous enough for a busy machine (a GC pause is not a block).
    put_s.sort()
    assert put_s[len(put_s) // 2] < 0.05, f"median put_many {put_s[len(put_s) // 2] * 1e3:.1f} ms"
    assert put_s[-1] < 2.0, f"put_many took {put_s[-1] * 1000:.1f} ms"


def test_a_client_that_stops_reading_over_tcp_is_dropped(envs: list[tuple[str, Envelope]]) -> None:
    """A socket that never reads fills the kernel buffers, then its queue: it gets ``dropped``
    and is closed, while a reading client gets every event and ``put_many`` never waits."""
    store = SignalStore(ring_size=64)
    app = create_app(store, token=None, sse_queue_size=32, sse_keepalive_s=60)
    request = b"GET /v1/stream HTTP/1.1\r\nHost: x\r\n\r\n"
    with serve(app) as base:
        port = int(base.rsplit(":", 1)[1])
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", port))
        slow.sendall(request)
        wait_for("the slow subscriber", lambda: subscribers(app) == 1)
        fast = socket.create_connection(("127.0.0.1", port))
        fast.sendall(request)
        wait_for("the fast subscriber", lambda: subscribers(app) == 2)
        fast_data = bytearray()
        stop = threading.Event()

        def read_fast() -> None:
            fast.settimeout(0.2)
            while not stop.is_set():
                try:
                    chunk = fast.recv(1 << 20)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                fast_data.extend(chunk)

        reader = threading.Thread(target=read_fast)
        reader.start()
        put_s: list[float] = []
        sent = 0
        deadline = time.monotonic() + 20
        try:
            while subscribers(app) == 2 and sent < 20_000:
                assert time.monotonic() < deadline, "the slow client was never dropped"
                t0 = time.perf_counter()
                store.put_many(envs[:8])
                put_s.append(time.perf_counter() - t0)
                sent += 8
                time.sleep(0.002)
            assert subscribers(app) == 1
            wait_for("the fast client", lambda: b":%d\n" % sent in fast_data, 10)
        finally:
            stop.set()
            reader.join(timeout=5)
        slow.settimeout(5)
        slow_data = bytearray()
        while chunk := slow.recv(1 << 20):  # the server closes it after `dropped`
            slow_data.extend(chunk)
        slow.close()
        fast.close()
    ids = ids_in(bytes(fast_data))
    assert ids == list(range(1, sent + 1))
    tail = bytes(slow_data).rsplit(b"event: dropped\ndata: ", 1)
    assert len(tail) == 2, "the slow client was not told"
    drop = orjson.loads(tail[1].split(b"\n", 1)[0])
    assert drop["missed"] > 32
    assert drop["reason"].startswith("slow_client:")
    slow_ids = ids_in(tail[0])
    assert slow_ids == list(range(1, seq_of(drop["last_id"]) + 1))  # what it got is gap-free
    # The writer never waits on a client: a blocked put_many would stall for the whole test
    # (seconds). Bounds generous enough for a busy machine (a GC pause is not a block).
    put_s.sort()
    assert put_s[len(put_s) // 2] < 0.05, f"median put_many {put_s[len(put_s) // 2] * 1e3:.1f} ms"
    assert put_s[-1] < 2.0, f"put_many took {put_s[-1] * 1000:.1f} ms"


def test_a_client_that_leaves_during_a_resume_backlog_is_not_written_to(
    envs: list[tuple[str, Envelope]], caplog: pytest.LogCaptureFixture
) -> None:
    """A resume sends the ring (here 4,096 envelopes, 16 MB); a client that reads 2 KB of it and
    closes ends its stream there: the server does not render and write the rest into the dead
    socket (asyncio logs every such write, about 60 lines a client before the fix)."""
    store = SignalStore(ring_size=4096)
    store.put_many((envs * 21)[:4096])
    app = create_app(store, token=None, sse_keepalive_s=60)
    request = b"GET /v1/stream HTTP/1.1\r\nHost: x\r\nLast-Event-ID: bogus\r\n\r\n"
    with caplog.at_level(logging.WARNING, logger="asyncio"), serve(app) as base:
        port = int(base.rsplit(":", 1)[1])
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port)) as client:
                client.sendall(request)
                assert client.recv(2000)
        wait_for("the streams to end", lambda: subscribers(app) == 0, 10)
        with stream(base) as sse:  # the server still serves
            wait_for("a new subscriber", lambda: subscribers(app) == 1)
            store.put_many(envs[:1])
            assert sse.events(1)[0].kind == "signal"
    failed = [r.getMessage() for r in caplog.records if "socket.send" in r.getMessage()]
    assert failed == []


def test_500_idle_subscribers_cost_next_to_nothing(envs: list[tuple[str, Envelope]]) -> None:
    store = SignalStore()
    b = Broadcaster(store, keepalive_s=60)
    n = 500

    async def main() -> tuple[int, float, float, int, list[bytes]]:
        loop = asyncio.get_running_loop()
        scheduled = 0
        real = loop.call_soon_threadsafe

        def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal scheduled
            scheduled += getattr(callback, "__name__", "") == "dispatch"
            return real(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        threads = threading.active_count()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        gens = [b.events() for _ in range(n)]
        firsts = [asyncio.ensure_future(anext(g)) for g in gens]
        while b.subscribers < n:  # noqa: ASYNC110 - a plain counter, no event to wait on
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        per_sub = sum(s.size_diff for s in after.compare_to(before, "filename")) / n
        assert threading.active_count() == threads  # no thread per subscriber
        t0 = time.perf_counter()
        await asyncio.to_thread(store.put_many, envs[:3])  # from another thread, like the sink
        put_s = time.perf_counter() - t0
        async with asyncio.timeout(5):
            got = await asyncio.gather(*firsts)
        for g in gens:
            await g.aclose()
        return scheduled, per_sub, put_s, b.subscribers, got

    scheduled, per_sub, put_s, left, got = asyncio.run(main())
    assert scheduled == 1  # one hand-off per batch per event loop, not per subscriber
    assert per_sub < 16_000, f"{per_sub:.0f} bytes per idle subscriber"
    assert put_s < 0.5
    assert left == 0
    assert len(set(got)) == 1  # the same bytes for everyone, rendered once
    assert got[0].count(b"event: signal\n") == 3


def test_close_all_ends_every_stream(envs: list[tuple[str, Envelope]]) -> None:
    store = SignalStore()
    app = create_app(store, token=None, sse_keepalive_s=60)
    with serve(app) as base, stream(base) as sse:
        wait_for("the subscriber", lambda: subscribers(app) == 1)
        store.put_many(envs[:1])
        assert sse.next().id == f"{store.run}:1"
        app.state.streams.close_all()
        with pytest.raises(EOFError):
            sse.next()
        wait_for("the unsubscribe", lambda: subscribers(app) == 0)


def test_a_stopping_server_ends_open_streams() -> None:
    """uvicorn waits for open responses on shutdown; `close_streams_on_exit` ends the streams."""
    app = create_app(SignalStore(), token=None, sse_keepalive_s=60)
    with serve(app) as base, stream(base) as sse:
        server = app.state.test_server
        close_streams_on_exit(server, app.state.streams)
        wait_for("the subscriber", lambda: subscribers(app) == 1)
        server.handle_exit(signal.SIGTERM, None)  # what the signal handler calls
        with pytest.raises(EOFError):
            sse.next()
        assert server.should_exit
