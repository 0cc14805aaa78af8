"""The shared store on a real Redis: the flow's writer (`connectors.redis_store`) and the API's
mirror (`connectors.redis_mirror`), in one process against a private ``redis-server``.

Every wait is on a condition with a generous bound; a test takes seconds.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.stream import Broadcaster
from connectors.redis_mirror import RedisMirror, start_mirror, stop_mirror
from connectors.redis_store import RedisWriter, StoreStartError, wait_for_redis
from connectors.store import SignalStore, StoredEnvelope
from tests.redis.conftest import RedisServer, redis_binary

Envelope = dict[str, Any]
PREFIX = "hlsl:test"


def items(envs: list[tuple[str, Envelope]]) -> list[tuple[str, int | None, bytes, int | None]]:
    out = []
    for coin, env in envs:
        rec = StoredEnvelope(env)
        out.append((coin, rec.timestamp_ms, rec.raw, rec.timestamp_ms))
    return out


def writer(server: RedisServer, **kw: Any) -> RedisWriter:
    kw.setdefault("timeout_ms", 500)
    kw.setdefault("history_limit", 1000)
    return RedisWriter(server.url, PREFIX, **kw)


def until(what: str, check: Callable[[], bool], within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within_s} s waiting for {what}")
        time.sleep(0.01)


async def until_async(what: str, check: Callable[[], bool], within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.01)


def mirror_of(server: RedisServer, limit: int = 1000, ring: int = 4096) -> RedisMirror:
    store = SignalStore(limit, ring_size=ring)
    return RedisMirror(
        server.url, PREFIX, store, timeout_ms=500, history_limit=limit, ring_size=ring
    )


def test_the_mirror_holds_what_the_writer_wrote_same_bytes_ids_and_answers(
    redis_server: RedisServer, sample: list[tuple[str, Envelope]]
) -> None:
    """Half written before the mirror starts (its load), half after (its tail): every coin's
    latest and history are the same bytes as the memory store's, the ids are Redis's, and the
    REST history answers (ranges included) are byte-identical to the memory store's."""
    memory = SignalStore(1000)
    memory.put_many(sample)
    w = writer(redis_server)
    run = w.join_run()
    w.start()
    half = len(sample) // 2
    w.submit(items(sample[:half]))
    until("the first half written", lambda: w.written == half)
    mirror = mirror_of(redis_server)

    async def main() -> None:
        task = await start_mirror(mirror, 10)
        assert mirror.loaded.is_set()
        assert mirror.store.record_history("BTC")  # loaded
        for i in range(half, len(sample), 50):
            w.submit(items(sample[i : i + 50]))
        await until_async("the mirror's tail", lambda: mirror.head == len(sample))
        await stop_mirror(mirror, task)
        assert task.done()

    asyncio.run(main())
    assert w.finish()
    store = mirror.store
    assert store.run == run
    assert store.coins() == memory.coins()
    assert {c: r.raw for c, r in store.records().items()} == {
        c: r.raw for c, r in memory.records().items()
    }
    for coin in memory.coins():
        assert [r.raw for r in store.record_history(coin)] == [
            r.raw for r in memory.record_history(coin)
        ]
    resume = store.since(f"{run}:{len(sample) - 5}")
    assert [e.id for e in resume.entries] == [
        f"{run}:{n}" for n in range(len(sample) - 4, len(sample) + 1)
    ]
    # the same answers, byte for byte, from both stores (the source clock frozen alike)
    store.source_clock = memory.source_clock = lambda: sample[-1][1]["timestamp_ms"]
    store.mode = memory.mode
    a, b = TestClient(create_app(memory, token=None)), TestClient(create_app(store, token=None))
    stamps = [e["timestamp_ms"] for c, e in sample if c == "ETH"]
    rnd = random.Random(13)
    queries: list[dict[str, Any]] = [{}, {"limit": 7}, {"since_ms": stamps[100]}]
    for _ in range(20):
        lo, hi = sorted(rnd.sample(stamps, 2))
        queries.append({"since_ms": lo, "until_ms": hi, "limit": rnd.choice([1, 5, 50, 1000])})
    for q in queries:
        ra, rb = (
            a.get("/v1/signal/ETH/history", params=q),
            b.get("/v1/signal/ETH/history", params=q),
        )
        assert ra.status_code == rb.status_code == 200, (q, ra.text, rb.text)
        assert ra.content == rb.content, q
    for path in ("/v1/signal/BTC", "/v1/signals", "/v1/signal/SOL?view=compact"):
        assert a.get(path).content == b.get(path).content, path


def test_history_ranges_page_and_say_when_a_range_is_no_longer_held(
    sample: list[tuple[str, Envelope]],
) -> None:
    store = SignalStore(100)
    store.put_many(sample)
    client = TestClient(create_app(store, token=None))
    held = [r.timestamp_ms for r in store.record_history("BTC")]
    assert len(held) == 100
    got: list[int] = []
    since = held[0] - 1  # exactly what is held: complete
    while True:
        r = client.get(
            "/v1/signal/BTC/history",
            params={"since_ms": since, "until_ms": held[-1], "limit": 30, "view": "compact"},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        got += [e["timestamp_ms"] for e in body["data"]]
        if body["next_since_ms"] is None:
            break
        since = body["next_since_ms"]
    assert got == held  # oldest first, no gap, no duplicate across pages
    r = client.get("/v1/signal/BTC/history", params={"since_ms": 0, "until_ms": held[-1]})
    assert r.status_code == 404
    assert r.json()["earliest_ms"] == held[0]
    assert "BTC from since_ms=0 is no longer held" in r.json()["detail"]
    _earliest, evicted = store.retention("BTC")
    r = client.get("/v1/signal/BTC/history", params={"until_ms": evicted})
    assert r.status_code == 404  # names the bound asked for (it said "since_ms=None")
    assert f"BTC to until_ms={evicted} is no longer held" in r.json()["detail"]
    r = client.get("/v1/signal/BTC/history", params={"since_ms": held[5], "until_ms": held[2]})
    assert r.status_code == 422
    # without until_ms: exactly as before (the newest `limit`, no next_since_ms)
    r = client.get("/v1/signal/BTC/history", params={"since_ms": 0, "limit": 3})
    assert set(r.json()) == {"coin", "data", "count"}


def test_a_second_process_joins_the_run_and_a_later_run_starts_over(
    redis_server: RedisServer, sample: list[tuple[str, Envelope]]
) -> None:
    a, b = writer(redis_server, process="a"), writer(redis_server, process="b")
    run = a.join_run()
    a.start()
    assert b.join_run() == run  # the same cluster run
    b.start()
    a.submit(items([x for x in sample[:60] if x[0] == "BTC"]))
    b.submit(items([x for x in sample[:60] if x[0] != "BTC"]))
    until("both written", lambda: a.written + b.written == 60)
    r = redis_server.client()
    assert int(r.get(f"{PREFIX}:seq") or 0) == 60
    assert a.finish()
    assert b.finish()
    assert r.hgetall(f"{PREFIX}:writers") == {b"a": b"done", b"b": b"done"}
    c = writer(redis_server, process="c")
    again = c.join_run()
    assert again != run  # every writer of the last run is done: a new run, keys cleared
    assert r.get(f"{PREFIX}:seq") is None
    assert r.xlen(f"{PREFIX}:hist:BTC") == 0
    assert r.smembers(f"{PREFIX}:procs") == {b"c"}


def test_while_redis_is_unreachable_the_writer_buffers_then_drops_then_recovers(
    redis_server: RedisServer, sample: list[tuple[str, Envelope]]
) -> None:
    w = writer(redis_server, timeout_ms=200, buffer_limit=50)
    w.join_run()
    w.start()
    w.submit(items(sample[:10]))
    until("the first envelopes", lambda: w.written == 10)
    redis_server.pause()
    try:
        t0 = time.monotonic()
        w.submit(items(sample[10:40]))  # never waits on Redis
        w.submit(items(sample[40:110]))
        assert time.monotonic() - t0 < 0.5
        until("the writer to notice", lambda: not w.connected, 10)
        assert w.buffered <= 50
        until("drops to be counted", lambda: w.dropped == 50, 10)
    finally:
        redis_server.resume()
    until("the buffer to be written", lambda: w.connected and w.buffered == 0, 20)
    assert w.dropped == 50  # the oldest of what was held past the buffer of 50
    assert w.outages == 1
    assert w.finish()
    r = redis_server.client()
    proc = orjson.loads(r.hget(f"{PREFIX}:proc:{w.process}", "writer") or b"")
    assert proc["dropped"] == 50
    assert proc["connected"] is True
    # What Redis holds: the first 10, the newest 50, and perhaps the chunk that was in flight
    # when Redis froze (executed when it woke; its answer lost): each envelope once, in order.
    events = [
        (f[b"c"], orjson.loads(f[b"d"])["timestamp_ms"]) for _, f in r.xrange(f"{PREFIX}:events")
    ]
    assert len(events) == len(set(events))
    want = [(c.encode(), e["timestamp_ms"]) for c, e in sample[:110]]
    assert events[:10] == want[:10]
    assert events[-50:] == want[-50:]
    assert [e for e in events if e in want] == events


def test_a_redis_restart_without_data_starts_a_new_run_that_every_writer_follows(
    redis_server: RedisServer, sample: list[tuple[str, Envelope]]
) -> None:
    a, b = writer(redis_server, process="a"), writer(redis_server, process="b")
    run = a.join_run()
    b.join_run()
    a.start()
    b.start()
    a.submit(items(sample[:5]))
    until("written", lambda: a.written == 5)
    redis_server.stop()
    redis_server.start()  # empty
    a.submit(items(sample[5:10]))
    until("a to write again", lambda: a.written == 10, 20)
    b.submit(items(sample[10:15]))
    until("b to write again", lambda: b.written == 5, 20)
    r = redis_server.client()
    new = (r.get(f"{PREFIX}:run") or b"").decode()
    assert new
    assert new != run
    assert a.run == b.run == new
    assert not a.superseded
    assert not b.superseded
    assert int(r.get(f"{PREFIX}:seq") or 0) == 10
    assert a.finish()
    assert b.finish()


def test_start_up_refused_credentials_fail_at_once_unreachable_after_the_timeout(
    tmp_path: Any,
) -> None:
    server = RedisServer(redis_binary(), tmp_path, ("--requirepass", "s3cret-pw"))
    server.start()
    try:
        t0 = time.monotonic()
        bad = f"redis://:wrong-pw@127.0.0.1:{server.port}/0"
        with pytest.raises(StoreStartError) as refused:
            wait_for_redis(bad, 500, 30)
        assert time.monotonic() - t0 < 5  # at once, not after the start timeout
        assert "refused the credentials" in str(refused.value)
        assert "wrong-pw" not in str(refused.value)
        with pytest.raises(StoreStartError, match="refused the credentials"):
            wait_for_redis(f"redis://127.0.0.1:{server.port}/0", 500, 30)  # no password
        wait_for_redis(f"redis://:s3cret-pw@127.0.0.1:{server.port}/0", 500, 5)
    finally:
        server.stop()
    t0 = time.monotonic()
    with pytest.raises(StoreStartError, match="did not answer for") as gone:
        wait_for_redis(f"redis://:pw@127.0.0.1:{server.port}/0", 200, 1.0)
    assert 1.0 <= time.monotonic() - t0 < 10
    assert "pw@" not in str(gone.value)


ACL = ["~hlsl:*", "+@read", "+@write", "+@stream", "+@scripting", "+@transaction", "+ping", "+info"]
"""The README's ACL for the flows and APIs, less ``+time``."""


def test_the_readmes_acl_works_and_a_script_refused_midway_loses_nothing(
    redis_server: RedisServer, sample: list[tuple[str, Envelope]]
) -> None:
    admin = redis_server.client()
    admin.acl_setuser("hlsl", enabled=True, passwords=["+pw-123"], commands=ACL[1:], keys=ACL[:1])
    url = f"redis://hlsl:pw-123@127.0.0.1:{redis_server.port}/0"
    w = RedisWriter(url, PREFIX, timeout_ms=500, history_limit=1000)
    w.join_run()
    w.start()
    w.submit(items(sample[:20]))
    until("the refusal", lambda: w.last_error is not None and "script" in w.last_error)
    assert w.written == 0
    assert w.buffered == 20  # held, not marked written
    assert admin.xlen(f"{PREFIX}:events") == 0
    admin.acl_setuser("hlsl", enabled=True, commands=["+time"])  # the README's full list
    until("the buffer written", lambda: w.written == 20 and w.buffered == 0)
    assert w.finish()
    events = admin.xrange(f"{PREFIX}:events")
    assert [e for e, _ in events] == [f"0-{n}".encode() for n in range(1, 21)]  # once each
    assert w.last_error is not None  # the refusal stays reported


def test_envelopes_a_writer_dropped_reach_open_streams_as_a_dropped_event(
    redis_server: RedisServer, sample: list[tuple[str, Envelope]]
) -> None:
    w = writer(redis_server, timeout_ms=200, buffer_limit=10)
    w.join_run()
    w.start()
    mirror = mirror_of(redis_server)

    async def main() -> bytes:
        task = await start_mirror(mirror, 10)
        streams = Broadcaster(mirror.store, keepalive_s=60)
        sse = streams.events()
        pending = asyncio.ensure_future(anext(sse))  # subscribes, then waits
        await until_async("the subscriber", lambda: streams.subscribers == 1)
        redis_server.pause()
        try:
            w.submit(items(sample[:40]))  # 10 held at most: the rest dropped, counted
            await until_async("the drops", lambda: w.dropped >= 30 and not w.connected)
        finally:
            redis_server.resume()
        got = await asyncio.wait_for(pending, 20)
        while b"store_gap" not in got:
            got += await asyncio.wait_for(anext(sse), 20)
        w.submit(items(sample[40:41]))  # and the stream goes on
        after = b""
        while b"event: signal" not in after:
            after += await asyncio.wait_for(anext(sse), 20)
        await sse.aclose()
        await stop_mirror(mirror, task)
        return got + after

    got = asyncio.run(main())
    assert w.finish()
    drop = got.split(b"event: dropped\ndata: ", 1)[1].split(b"\n", 1)[0]
    body = orjson.loads(drop)
    assert body["reason"].startswith("store_gap:")
    assert w.process in body["reason"]
    assert body["missed"] == w.dropped
    assert b"event: signal" in got  # the stream goes on
