"""Flow processes and API replicas on one Redis, as real subprocesses (issue #13).

- Two flow processes (each a ``bytewax.run flows.signal`` over its own coins of the sample, the
  second joining the first's run) and two ``api.server --serve-only`` replicas: both serve every
  coin; an SSE client on one replica that is killed mid-stream resumes on the other with
  ``Last-Event-ID``, with no gap and no duplicate.
- Redis frozen for ~10 s under a slow replay: nothing crashes, every request answers (503 with
  the reason, never a hang), ``/health`` says so, and once Redis is back the buffered envelopes
  arrive, in order, on the stream that stayed open.
- A malformed store URL, refused credentials, an unreachable Redis, ``--serve-only`` with the
  memory store: one line, exit 2, no password.

Every wait is a condition with a generous bound; each test stays under 60 s.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors.redis_store import RedisWriter
from tests.api.test_stream import Reader, seq_of, stream
from tests.conftest import REPO, SAMPLE
from tests.flows.test_cli import Proc, assert_clean_stderr, clean_env, free_port, get_json
from tests.flows.test_startup_errors import run
from tests.redis.conftest import RedisServer, redis_binary

PREFIX = "hlsl:replay"  # the default for a replay


def flow_env(server: RedisServer, coins: str, speed: str, **extra: str) -> dict[str, str]:
    return clean_env(
        HLSL_REPLAY=str(SAMPLE),
        HLSL_API="0",
        HLSL_COINS=coins,
        HLSL_STORE=server.url,
        HLSL_SPEED=speed,
        **extra,
    )


def api_env() -> dict[str, str]:
    return clean_env(HLSL_RATE_LIMIT_PER_S="0")  # the tests poll


def api_args(server: RedisServer, port: int, *more: str) -> list[str]:
    return [
        "-m",
        "api.server",
        "--serve-only",
        "--store",
        server.url,
        "--store-prefix",
        PREFIX,
        "--port",
        str(port),
        "--store-timeout-ms",
        "300",
        *more,
    ]


def until(what: str, check: Callable[[], Any], within_s: float, procs: list[Proc]) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        for p in procs:
            assert p.alive(), f"a process exited ({p.popen.returncode}):\n{p.stderr()}"
        try:
            got = check()
        except (OSError, ValueError):
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within_s} s waiting for {what}")
        time.sleep(0.05)


def health(port: int) -> tuple[int, Any]:
    return get_json(port, "/health", timeout_s=3.0)


def read_signals(sse: Reader, n: int) -> list[tuple[str, str]]:
    """The next ``n`` signal events as ``(id, coin)`` (pings skipped; no other event allowed)."""
    out = []
    while len(out) < n:
        e = sse.next()
        if e.kind == ":":
            continue
        assert e.kind == "signal", e
        assert e.id is not None
        out.append((e.id, orjson.loads(e.data)["coin"]))
    return out


def test_two_flows_two_replicas_serve_every_coin_and_resume_across_replicas(
    redis_server: RedisServer, start: Callable[..., Proc]
) -> None:
    procs = [
        start(
            ["-m", "bytewax.run", "flows.signal"],
            flow_env(redis_server, "BTC", "30"),
            "flow-btc",
        )
    ]
    until("the first flow's run", lambda: redis_server.client().get(f"{PREFIX}:run"), 30, procs)
    procs.append(
        start(
            ["-m", "bytewax.run", "flows.signal"],
            flow_env(redis_server, "ETH,SOL", "30"),
            "flow-eth-sol",
        )
    )
    ports = [free_port(), free_port()]
    apis = [
        start([*api_args(redis_server, port)], api_env(), f"api{i}") for i, port in enumerate(ports)
    ]
    everyone = procs + apis
    for port in ports:
        until(
            "a replica serving every coin",
            lambda port=port: (
                {e["coin"] for e in get_json(port, "/v1/signals")[1]["data"]}
                == {"BTC", "ETH", "SOL"}
            ),
            45,
            everyone,
        )
        body = until(  # the flows' counters are read about once a second
            "both flow processes reporting",
            lambda port=port: (
                (h := health(port))[0] == 200 and len(h[1]["store"]["processes"]) == 2 and h[1]
            ),
            10,
            everyone,
        )
        assert "@" not in body["store"]["url"]
    # an SSE client on replica 0, killed mid-stream; it resumes on replica 1
    base = [f"http://127.0.0.1:{port}" for port in ports]
    with stream(base[0]) as sse:
        first = read_signals(sse, 40)
        apis[0].popen.send_signal(signal.SIGKILL)
        apis[0].popen.wait(timeout=10)
    everyone.remove(apis[0])
    last_id = first[-1][0]
    run = last_id.rpartition(":")[0]
    got = list(first)
    with stream(base[1], headers={"Last-Event-ID": last_id}) as sse:
        head = 0
        deadline = time.monotonic() + 45
        while True:
            assert time.monotonic() < deadline, "the replay did not finish"
            last = seq_of(got[-1][0])
            if last >= head:  # caught up with what the replica holds: more, or the end?
                status, body = health(ports[1])
                head = body["store"]["head_seq"]
                if last >= head:
                    if body["status"] == "finished":
                        break
                    time.sleep(0.1)
                    continue
            got += read_signals(sse, 1)
    seqs = [seq_of(i) for i, _ in got]
    assert all(i.rpartition(":")[0] == run for i, _ in got)
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "a gap or a duplicate across replicas"
    assert {c for _, c in got} == {"BTC", "ETH", "SOL"}
    status, state = get_json(ports[1], "/v1/state")
    assert status == 200
    assert state["health"]["signals_emitted"] == seqs[-1]  # every envelope of both flows
    for p in procs:
        assert p.popen.wait(timeout=30) == 0, p.stderr()
        assert_clean_stderr(p.stderr())


def test_redis_frozen_for_ten_seconds_nothing_crashes_and_the_gap_is_reported(
    redis_server: RedisServer, start: Callable[..., Proc]
) -> None:
    flow = start(
        ["-m", "bytewax.run", "flows.signal"],
        flow_env(redis_server, "BTC,ETH,SOL", "4", HLSL_STORE_TIMEOUT_MS="300"),
        "flow",
    )
    port = free_port()
    api = start([*api_args(redis_server, port)], api_env(), "api")
    procs = [flow, api]
    until("signals", lambda: health(port)[1]["signals_emitted"] > 20, 45, procs)
    base = f"http://127.0.0.1:{port}"
    with stream(base) as sse:
        before = read_signals(sse, 5)
        redis_server.pause()
        try:
            paused = time.monotonic()
            body = until(
                "/health to report the store",
                lambda: (h := health(port))[0] == 503 and h[1],
                15,
                procs,
            )
            assert "unreachable" in body["reason"]
            assert "cannot vouch" in body["reason"]
            t0 = time.monotonic()
            status, err = get_json(port, "/v1/signal/BTC", timeout_s=5)
            assert status == 503
            assert "unreachable" in err["detail"]
            assert time.monotonic() - t0 < 3, "a request waited on Redis"
            while time.monotonic() - paused < 10:  # every answer is prompt all along
                t0 = time.monotonic()
                assert health(port)[0] == 503
                assert time.monotonic() - t0 < 3
                time.sleep(0.5)
        finally:
            redis_server.resume()
        until("the store to be back", lambda: health(port)[0] == 200, 30, procs)
        store = until(
            "the flow's buffer to be written",
            lambda: (s := health(port)[1]["store"])["buffered"] == 0 and s,
            30,
            procs,
        )
        assert store["outages"] >= 1
        assert store["dropped"] == 0  # buffered (the flow went on), then flushed
        head = store["head_seq"]
        after = read_signals(sse, max(1, head - seq_of(before[-1][0])))
    seqs = [seq_of(i) for i, _ in before + after]
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "the open stream missed envelopes"
    assert flow.alive()
    assert_clean_stderr(flow.stderr())
    assert_clean_stderr(api.stderr())
    assert "unreachable" in flow.stderr()  # logged, one line per outage, no password


def cannot_start(args: list[str], env: dict[str, str]) -> str:
    proc = run(args, env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    rest = [
        ln for ln in proc.stderr.splitlines() if ln.strip() and "unreachable (attempt" not in ln
    ]
    assert len(rest) == 1, proc.stderr
    assert "cannot start:" in rest[0]
    assert "s3cret" not in proc.stderr
    return rest[0]


def test_bad_store_settings_and_refused_auth_exit_2_in_one_line_without_the_password(
    tmp_path: Path,
) -> None:
    server = RedisServer(redis_binary(), tmp_path, ("--requirepass", "s3cret-pw"))
    server.start()
    try:
        port = free_port()
        wrong = f"redis://:s3cret-wrong@127.0.0.1:{server.port}/0"
        t0 = time.monotonic()
        line = cannot_start(api_args_for(wrong, port), clean_env())
        assert "refused the credentials" in line
        assert time.monotonic() - t0 < 30
        line = cannot_start(
            ["-m", "bytewax.run", "flows.signal"],
            clean_env(HLSL_REPLAY=str(SAMPLE), HLSL_API="0", HLSL_STORE=wrong),
        )
        assert "refused the credentials" in line
        assert "HLSL_STORE" in line
    finally:
        server.stop()
    line = cannot_start(api_args_for("redis://:s3cret@127.0.0.1:99999/0", free_port()), clean_env())
    assert "--store (HLSL_STORE)" in line
    line = cannot_start(api_args_for("http://127.0.0.1:6379", free_port()), clean_env())
    assert "must be memory, redis://" in line
    gone = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    line = cannot_start([*api_args_for(gone, free_port()), "--start-timeout-s", "1"], clean_env())
    assert "did not answer" in line
    line = cannot_start(["-m", "api.server", "--serve-only"], clean_env())
    assert "--serve-only (HLSL_SERVE_ONLY) needs a shared store" in line


def api_args_for(url: str, port: int) -> list[str]:
    return ["-m", "api.server", "--serve-only", "--store", url, "--port", str(port)]


def test_mcp_over_stdio_serves_the_shared_store(
    redis_server: RedisServer, sample: list[tuple[str, dict[str, Any]]]
) -> None:
    """``python -m api.mcp --serve-only --store redis://…``: MCP tools answer from Redis."""
    w = RedisWriter(redis_server.url, PREFIX, timeout_ms=500, history_limit=1000)
    w.join_run()
    w.start()
    w.submit((c, e["timestamp_ms"], orjson.dumps(e), e["timestamp_ms"]) for c, e in sample[:300])
    assert w.finish()
    args = [sys.executable, "-m", "api.mcp", "--serve-only", "--store", redis_server.url]
    env = clean_env(HLSL_LOG_LEVEL="WARNING", HLSL_STORE_PREFIX=PREFIX)
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        hello = {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        }
        ask = {"name": "get_signal", "arguments": {"coin": "ETH"}}
        calls = [
            {"method": "initialize", "params": hello},
            {"method": "tools/call", "params": ask},
        ]
        answers = []
        for i, call in enumerate(calls, 1):
            proc.stdin.write(orjson.dumps({"jsonrpc": "2.0", "id": i, **call}).decode() + "\n")
            proc.stdin.flush()
            answers.append(orjson.loads(proc.stdout.readline()))
            if i == 1:
                note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
                proc.stdin.write(orjson.dumps(note).decode() + "\n")
                proc.stdin.flush()
        got = orjson.loads(answers[1]["result"]["content"][0]["text"])
        want = [e for c, e in sample[:300] if c == "ETH"][-1]
        assert got["coin"] == "ETH"
        assert got["timestamp_ms"] == want["timestamp_ms"]
        proc.stdin.close()
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        if not proc.stdin.closed:
            proc.stdin.close()
