"""Every issue #8 trigger, sent by the local exchange into a live ``python -m api.server``.

The local exchange (`tools.fake_exchange`) serves the real 35-minute capture (the simulator when
``../shared`` is absent) and, a few seconds after the server's first subscription, injects each
frame of `tests.flows.test_bad_frames.TRIGGERS` verbatim and back to back (``--inject``). The
server must skip and count each one under its reason code in ``/v1/state`` and ``/metrics``, keep
serving every coin with signals that go on advancing, keep ``/health`` out of "the signal flow
failed", and exit 0 on SIGTERM.

The exchange re-stamps the capture's exchange times to the wall clock (`_Restamp`: at speed 1 a
frame is stamped ``time + (now - first feed time)``), so the triggers' times, taken inside the
capture (``T``), are moved by the same kind of offset: to the moment the injection can be due at
the earliest. They then lag the live stream by the server's start-up time at most, never lead it;
the far-future ones stay as far ahead, and the >64-bit ones are raw strings.
"""

from __future__ import annotations

import collections
import re
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import LIVE_CAPTURE, REAL
from tests.flows.test_bad_frames import TRIGGERS, T
from tests.flows.test_cli import Proc, assert_clean_stderr, clean_env, free_port, get_json
from tools.fake_exchange import CaptureFeed, FakeExchange, Feed, SimFeed
from tools.simulate import SimConfig

COINS = ("BTC", "ETH", "SOL")
INJECT_AFTER_S = 3.0
"""Offset of the injections after the first subscription: the coins have prices by then."""
_TIME_KEYS = frozenset({"time", "t", "T"})
_NEAR_T_MS = 11 * 365 * 86_400_000  # times within this of T are the capture's; others are absurd
EXPECTED = collections.Counter(reason for _, _, reason in TRIGGERS)


def _shift_times(value: Any, delta_ms: int) -> Any:
    """``value`` with every exchange time near `T` moved by ``delta_ms`` (absurd ones kept)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            near = type(v) is int and abs(v - T) <= _NEAR_T_MS
            out[k] = v + delta_ms if k in _TIME_KEYS and near else _shift_times(v, delta_ms)
        return out
    if isinstance(value, list):
        return [_shift_times(v, delta_ms) for v in value]
    return value


def _inject_file(path: Path, earliest_ms: int) -> Path:
    """The triggers as an inject file, their times moved to ``earliest_ms``."""
    lines = []
    for _, frame, _ in TRIGGERS:
        if isinstance(frame, bytes):  # 2^70 times and 1000-deep arrays: as written
            item = {"offset_s": INJECT_AFTER_S, "raw": frame.decode()}
        else:
            item = {"offset_s": INJECT_AFTER_S, "frame": _shift_times(frame, earliest_ms - T)}
        lines.append(orjson.dumps(item))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _feed() -> Feed:
    capture = REAL / LIVE_CAPTURE
    if capture.is_file():
        return CaptureFeed(capture)
    return SimFeed(SimConfig(coins=COINS, seconds=600, seed=7, start_ms=int(time.time() * 1000)))


@pytest.fixture
def server_procs() -> Iterator[list[Proc]]:
    """Server processes of a test; any still running at its end is killed."""
    procs: list[Proc] = []
    yield procs
    for p in procs:
        p.kill()


def _wait(what: str, cond: Callable[[], Any], within_s: float, proc: Proc) -> Any:
    """Poll ``cond`` until it returns something truthy; fail if the server dies or time is up."""
    deadline = time.monotonic() + within_s
    last: Any = None
    while time.monotonic() < deadline:
        assert proc.alive(), f"the server exited with {proc.popen.returncode}:\n{proc.stderr()}"
        try:
            last = cond()
        except (OSError, ValueError) as ex:  # not listening yet, or a partial answer
            last = ex
        else:
            if last:
                return last
        time.sleep(0.2)
    pytest.fail(
        f"timed out after {within_s:.0f} s waiting for {what} (last: {last!r}):\n"
        f"{proc.stderr()[-4000:]}"
    )


def _skips(port: int) -> dict[str, int]:
    status, state = get_json(port, "/v1/state")
    assert status == 200, state
    skipped: dict[str, int] = state["source"]["lines_skipped"]
    return skipped


def _metric_skips(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    pattern = re.compile(r'^hlsl_frames_skipped_total\{reason="([^"]+)"\} (\S+)$', re.M)
    return {reason: float(value) for reason, value in pattern.findall(text)}


def _signal_times(port: int) -> dict[str, int] | None:
    """Each coin's latest signal time, or None until every coin has one."""
    out = {}
    for coin in COINS:
        status, env = get_json(port, f"/v1/signal/{coin}", timeout_s=5.0)
        if status != 200:
            return None
        out[coin] = int(env["timestamp_ms"])
    return out


def test_live_server_skips_and_counts_every_trigger(
    tmp_path: Path, server_procs: list[Proc]
) -> None:
    feed = _feed()
    assert feed.info.coins[:3] == COINS  # scanned now, before the clock below starts
    earliest_ms = time.time_ns() // 1_000_000 + int(INJECT_AFTER_S * 1000)
    inject = _inject_file(tmp_path / "triggers.ndjson", earliest_ms)
    with FakeExchange(feed, inject=inject) as ex:
        assert len(ex.injections) == len(TRIGGERS)
        port = free_port()
        args = ["-m", "api.server", "--port", str(port), "--coins", ",".join(COINS)]
        args += ["--ws-url", ex.ws_url, "--info-url", ex.info_url, "--no-warm-start"]
        args += ["--log-level", "WARNING"]
        proc = Proc(args, clean_env(), tmp_path, "server")
        server_procs.append(proc)

        # the injections follow the server's first subscription by INJECT_AFTER_S
        _wait("a signal for every coin", lambda: _signal_times(port), 40, proc)
        _wait("the injections", lambda: ex.stats.sent("injected") >= len(TRIGGERS), 30, proc)

        # each trigger is skipped and counted under its reason code
        def counted() -> bool:
            got = _skips(port)
            return all(got.get(reason, 0) >= n for reason, n in EXPECTED.items())

        _wait("every trigger counted", counted, 20, proc)
        skipped = _skips(port)
        assert {r: skipped.get(r, 0) for r in EXPECTED} == dict(EXPECTED), skipped
        metrics = _metric_skips(port)
        assert {r: metrics.get(r) for r in EXPECTED} == {r: float(n) for r, n in EXPECTED.items()}

        # the flow goes on: every coin's signal advances past the injections, dated now
        after = _signal_times(port)
        assert after is not None

        def advanced() -> dict[str, int] | None:
            now = _signal_times(port)
            if now is None or any(now[c] <= after[c] for c in COINS):
                return None
            return now

        latest = _wait("every coin's signal to advance", advanced, 20, proc)
        wall_ms = time.time_ns() // 1_000_000
        for coin in COINS:
            assert abs(latest[coin] - wall_ms) < 120_000, (coin, latest[coin], wall_ms)

        status, health = get_json(port, "/health", timeout_s=5.0)
        assert status == 200, health
        assert health["status"] == "running", health
        assert "failed" not in str(health.get("reason")), health
        conns = health["connections"]
        # one connection, so each trigger came once (a reconnect would have repeated them)
        assert [c["reconnects"] for c in conns] == [0] * len(conns), conns
        assert ex.stats.sent("injected") == len(TRIGGERS)
        assert sum(c["skipped"] for c in conns) >= len(TRIGGERS)

        rc = proc.signal_and_wait(signal.SIGTERM, within_s=20.0)
        err = proc.stderr()
        assert rc == 0, err
        assert_clean_stderr(err)
