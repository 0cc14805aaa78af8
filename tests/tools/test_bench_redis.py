"""`tools.bench_redis` (``python -m tools.bench --redis``) and the SSE arithmetic it shares with
`tools.bench_api` (`tools.bench_sse`). The smoke run checks that the benchmark runs end to end and
that every figure it reports is there and physical, not how fast anything is (benchmarks measure
speed, tests never do)."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pytest

from tools import bench_redis
from tools.bench_sse import id_seq, lags_by_order
from tools.redis_local import RedisStartError

REPO = Path(__file__).resolve().parents[2]
WORK_DIRS = "hlsl-bench-redis-*"


def need_redis() -> None:
    if shutil.which("redis-server") is None:
        reason = "redis-server is not installed (Debian package redis-server; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def test_sse_ids_are_read_by_their_sequence_number() -> None:
    assert id_seq(b"mx6gdzrvfz7:1804") == 1804
    assert id_seq(b"42") == 42


def test_lags_are_matched_to_hand_overs_in_publishing_order() -> None:
    got = {9: 0.5, 10: 2.25, 11: 2.5, 12: 3.0}  # 9: seen before the round
    assert lags_by_order(got, 9, [2.0, 2.0, 2.75]) == [0.25, 0.5, 0.25]
    assert lags_by_order({10: 2.5}, 9, [2.0, 2.0]) == [0.5]  # one not (yet) received


def test_bench_redis_runs_end_to_end(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_redis()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    args = ["--json", "--seconds", "0.3", "--rounds", "1", "--subscribers", "4"]
    args += ["--batches", "3", "--batch", "2", "--interval-ms", "20", "--sse-rounds", "1"]
    assert bench_redis.main(args) == 0
    assert list(tmp_path.glob(WORK_DIRS)) == []  # its work directory is gone
    r = orjson.loads(capsys.readouterr().out)
    for name in ("memory", "redis"):
        assert r["rest"][name]["requests"] > 0
        assert r["rest"][name]["rps"] > 0
        sse = r["sse"][name]
        assert sse["events"] == 6  # 3 batches of 2
        assert sse["missing"] == 0
        assert sse["deliveries"] == 24  # to each of 4 subscribers
        assert 0 <= sse["lag_p50_ms"] <= sse["lag_p99_ms"] < 10_000
    assert math.isclose(r["rest"]["ratio"], r["rest"]["redis"]["rps"] / r["rest"]["memory"]["rps"])
    lag = r["mirror_lag_ms"]
    assert lag["p99"] is not None
    assert 0 <= lag["p50"] <= lag["p99"]
    assert r["redis_used_memory_mb"] > 0


@pytest.mark.parametrize(
    ("error", "code", "said"),
    [
        (RedisStartError("redis-server did not answer"), 2, "redis-server did not answer"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_the_work_directory_is_removed_when_the_run_stops_early(
    error: BaseException,
    code: int,
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    workdirs: list[Path] = []

    class FailingRedis:
        def __init__(self, workdir: Path) -> None:
            workdirs.append(workdir)

        def start(self) -> None:
            (workdirs[0] / "signals.ndjson").write_bytes(b"{}\n" * 1000)
            raise error

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(bench_redis, "LocalRedis", FailingRedis)
    try:
        got = bench_redis.main(["--rounds", "1"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped main(): a traceback")
    assert got == code
    assert capsys.readouterr().err == f"tools.bench --redis: {said}\n"
    assert len(workdirs) == 1
    assert workdirs[0].parent == tmp_path
    assert workdirs[0].name.startswith("hlsl-bench-redis-")
    assert not workdirs[0].exists()


def test_ctrl_c_stops_the_bench_cleanly_and_removes_its_work_directory(tmp_path: Path) -> None:
    """Ctrl-C in a terminal: SIGINT to the whole process group, during the replay into Redis."""
    need_redis()
    cmd = [sys.executable, "-m", "tools.bench", "--redis", "--seconds", "0.2", "--rounds", "1"]
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives it
    ) as proc:
        try:
            deadline = time.monotonic() + 30
            while not list(tmp_path.glob(f"{WORK_DIRS}/flow.log")):  # the flow has started
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the flow did not start"
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    assert "Traceback" not in err, err
    assert err == "tools.bench --redis: interrupted\n"
    assert out == ""
    assert proc.returncode == 130
    assert list(tmp_path.glob(WORK_DIRS)) == []
