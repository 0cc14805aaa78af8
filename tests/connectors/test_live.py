"""Live ingestion against the project's local exchange (tools/fake_exchange/) on loopback.

Each test runs the real flow (`build_pipeline` in live mode, `run_pipeline` on a thread) against a
`FakeExchange` streaming the seeded simulator, then stops it through the stop event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from connectors.errors import FeedError
from connectors.live import LiveConfig
from connectors.rest import CoinError, InfoClient, resolve_coins
from flows.pipeline import Pipeline, build_pipeline, run_pipeline
from flows.settings import Settings
from tools.fake_exchange import FakeExchange, Faults, SimFeed
from tools.replay import replay
from tools.simulate import SimConfig

COINS = ["BTC", "ETH"]


def _exchange(**kw: object) -> FakeExchange:
    feed = SimFeed(SimConfig(coins=("BTC", "ETH"), seconds=120, seed=11))
    return FakeExchange(feed, **kw)  # type: ignore[arg-type]


@pytest.fixture
def exchange() -> Iterator[FakeExchange]:
    with _exchange() as ex:
        yield ex


def _config(ex: FakeExchange, **kw: object) -> LiveConfig:
    base = LiveConfig(
        ws_url=ex.ws_url,
        info_url=ex.info_url,
        ping_interval_s=1.0,
        stall_timeout_s=3.0,
        backoff_initial_s=0.1,
        backoff_max_s=0.5,
        warm_start=False,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


class _Run:
    """A live pipeline running on a thread."""

    def __init__(self, ex: FakeExchange, tmp: Path | None = None, **cfg: object) -> None:
        extra: dict[str, object] = {}
        if tmp is not None:
            extra = {"record": str(tmp / "rec.ndjson"), "signals_out": str(tmp / "sig.ndjson")}
        settings = Settings(coins=COINS, ws_url=ex.ws_url, info_url=ex.info_url, api=False, **extra)  # type: ignore[arg-type]
        self.pipeline: Pipeline = build_pipeline(settings, live_override=_config(ex, **cfg))
        self.thread = threading.Thread(target=self._run, name="test-live-flow")
        self.error: BaseException | None = None
        self.thread.start()

    def _run(self) -> None:
        try:
            run_pipeline(self.pipeline)
        except BaseException as ex:  # reported by the test
            self.error = ex

    def conn(self) -> dict[str, object]:
        conns: list[dict[str, object]] = self.pipeline.store.source_info()["connections"]
        return conns[0]

    def wait(self, cond: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if cond():
                return
            time.sleep(0.05)
        pytest.fail(f"timed out after {timeout_s} s waiting for {what}; conn={self.conn()}")

    def stop(self) -> None:
        self.pipeline.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the flow did not stop"
        assert self.error is None, self.error


def _acked(run: _Run) -> bool:
    c = run.conn()
    return bool(c["connected"]) and c["acknowledged"] == c["subscriptions"]


def test_subscriptions_acknowledged_and_signals_flow(exchange: FakeExchange) -> None:
    run = _Run(exchange)
    try:
        run.wait(lambda: _acked(run), 10, "all subscriptions acknowledged")
        c = run.conn()
        assert c["subscriptions"] == 5 * len(COINS) + 1  # 5 per coin + allMids once
        assert c["primed_coins"] == 0  # no warm start here: nothing was primed from REST

        def fresh_bbo() -> bool:
            env = run.pipeline.store.latest("BTC")
            return env is not None and env["freshness"]["streams"]["bbo"]["status"] == "ok"

        run.wait(fresh_bbo, 10, "a BTC signal with a fresh bbo")
        env = run.pipeline.store.latest("BTC")
        assert env is not None
        assert env["freshness"]["streams"]["trades"]["last_exchange_ms"] is not None
        assert env["features"]["spread_bps"] is not None
        assert run.pipeline.store.mode == "live"
    finally:
        run.stop()
    assert exchange.stats.subscriptions >= 5 * len(COINS) + 1


def test_forced_drop_reconnects_and_resubscribes(exchange: FakeExchange) -> None:
    run = _Run(exchange)
    try:
        run.wait(lambda: _acked(run), 10, "first subscriptions acknowledged")
        before = exchange.stats.subscriptions
        assert exchange.drop_all() >= 1
        run.wait(lambda: run.conn()["reconnects"] == 1 and _acked(run), 15, "resubscribed")
        assert exchange.stats.subscriptions >= before + 5 * len(COINS) + 1
        # the hole is visible downstream as a gap in a bar
        run.wait(
            lambda: any(
                e["bar"]["gaps"] > 0 for e in run.pipeline.store.history("BTC", limit=1000)
            ),
            10,
            "a bar with a gap",
        )
    finally:
        run.stop()


def test_stalled_connection_is_replaced(exchange: FakeExchange) -> None:
    run = _Run(exchange, stall_timeout_s=1.5, ack_timeout_s=1.0)
    try:
        run.wait(lambda: _acked(run), 10, "subscriptions acknowledged")
        exchange.stall(4.0)  # nothing at all, pongs included, while the socket stays open
        run.wait(lambda: run.conn()["reconnects"] >= 1, 10, "a reconnect after the stall")
        assert "no frame" in str(run.conn()["last_error"])
        run.wait(lambda: _acked(run), 15, "resubscribed after the stall")
    finally:
        run.stop()


def test_malformed_unknown_and_error_frames_are_survived_and_counted() -> None:
    with _exchange(faults=Faults(malformed_every=20, unknown_every=25, error_every_s=1.0)) as ex:
        run = _Run(ex)
        try:
            run.wait(
                lambda: (
                    run.pipeline.store.source_info()["lines_skipped"].get("invalid_json", 0) >= 3
                    and run.conn()["error_frames"] >= 2
                ),
                15,
                "bad frames counted",
            )
            info = run.pipeline.store.source_info()
            assert info["lines_skipped"].get("unknown_channel", 0) >= 1
            assert info["control_frames"].get("error", 0) >= 2
            n = run.pipeline.store.signals_emitted
            run.wait(lambda: run.pipeline.store.signals_emitted > n, 10, "signals still flowing")
            assert run.conn()["connected"]
        finally:
            run.stop()


def test_unknown_coin_is_refused_before_any_socket_opens(exchange: FakeExchange) -> None:
    listed, delisted = InfoClient(exchange.info_url).perps()
    with pytest.raises(CoinError, match=r"'btc' is not a listed perpetual \(did you mean 'BTC'"):
        resolve_coins(["btc"], listed, delisted)
    settings = Settings(
        coins=["BTC", "NOPE"], ws_url=exchange.ws_url, info_url=exchange.info_url, api=False
    )
    with pytest.raises(FeedError, match="'NOPE' is not a listed perpetual"):
        build_pipeline(settings)
    assert exchange.stats.connections_opened == 0


def test_all_coins_takes_every_listed_perp(exchange: FakeExchange) -> None:
    listed, delisted = InfoClient(exchange.info_url).perps()
    assert resolve_coins(["ALL"], listed, delisted) == [c for c in listed if c not in delisted]


def test_silent_subscription_is_resubscribed(exchange: FakeExchange) -> None:
    floors = {"l2Book": 2.5, "bbo": 30.0, "activeAssetCtx": 30.0, "allMids": 30.0}
    run = _Run(exchange, silence_floor_s=floors, silence_factor=3.0, watchdog_every_s=0.2)
    try:
        run.wait(lambda: _acked(run), 10, "subscriptions acknowledged")
        time.sleep(3.0)  # learn the book's cadence
        assert run.conn()["resubscribes"] == 0
        exchange.set_faults(silence=("l2Book:BTC",))
        run.wait(lambda: int(run.conn()["resubscribes"]) >= 1, 15, "a re-subscription")
        assert run.conn()["reconnects"] == 0  # only that subscription, not the connection
    finally:
        run.stop()


def test_recording_replays_into_identical_signals(exchange: FakeExchange, tmp_path: Path) -> None:
    run = _Run(exchange, tmp=tmp_path)
    try:
        run.wait(lambda: run.pipeline.store.signals_emitted >= 20, 20, "20 signals")
    finally:
        run.stop()
    assert sum(run.pipeline.store.late_events.values()) == 0, "late frames: not comparable"
    live = [orjson.loads(line) for line in (tmp_path / "sig.ndjson").read_bytes().splitlines()]
    assert len(live) == run.pipeline.store.signals_emitted
    _, replayed, _ = replay(Settings(replay=[str(tmp_path / "rec.ndjson")], api=False))

    def key(e: dict[str, object]) -> tuple[object, object]:
        return e["timestamp_ms"], e["coin"]

    assert sorted(live, key=key) == replayed


def test_recorder_tool_writes_a_complete_replayable_capture(
    exchange: FakeExchange, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    out = tmp_path / "btc.ndjson.gz"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.recorder",
            "--coins",
            "BTC",
            "--out",
            str(out),
            "--seconds",
            "3",
            "--ws-url",
            exchange.ws_url,
            "--info-url",
            exchange.info_url,
            "--quiet",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "recorded" in proc.stderr
    from connectors.files import ReplayStats, read_events

    stats = ReplayStats()
    events = read_events([out], stats)
    assert stats.errors == []
    assert stats.skipped == {}
    assert stats.parser.control["subscriptionResponse"] == 6  # 5 + allMids, recorded verbatim
    assert stats.parser.frames["bbo"] > 5
    assert {e.coin for e in events} == {"BTC"}


def test_recorder_refuses_an_unknown_coin(exchange: FakeExchange, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.recorder",
            "--coins",
            "btc",
            "--out",
            str(tmp_path / "x.ndjson"),
            "--seconds",
            "1",
            "--ws-url",
            exchange.ws_url,
            "--info-url",
            exchange.info_url,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "did you mean 'BTC'" in proc.stderr
    assert exchange.stats.connections_opened == 0


def test_two_workers_never_open_a_socket_twice(exchange: FakeExchange, tmp_path: Path) -> None:
    """`bytewax.run -w 2`: one partition per connection, so each socket opens once."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO

    env = dict(os.environ)
    env.update(
        HLSL_COINS="BTC,ETH",
        HLSL_WS_URL=exchange.ws_url,
        HLSL_INFO_URL=exchange.info_url,
        HLSL_API="0",
        HLSL_WARM_START="0",
        # with no API, an output is required (a flow whose results go nowhere is refused)
        HLSL_SIGNALS_OUT=str(tmp_path / "signals.ndjson"),
    )
    env.pop("HLSL_REPLAY", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "flows.signal", "-w", "2"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and exchange.stats.subscriptions < 11:
            time.sleep(0.1)
        time.sleep(1.0)
        stats = exchange.stats
        assert stats.connections_opened == 1, stats
        assert stats.subscriptions == 11, stats  # 5 per coin + allMids, once
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
