"""`tools.bench_redis` (``python -m tools.bench --redis``) and the SSE arithmetic it shares with
`tools.bench_api` (`tools.bench_sse`). The smoke run checks that the benchmark runs end to end and
that every figure it reports is there and physical, not how fast anything is (benchmarks measure
speed, tests never do)."""

from __future__ import annotations

import math
import os
import shutil

import orjson
import pytest

from tools import bench_redis
from tools.bench_sse import id_seq, lags_by_order


def test_sse_ids_are_read_by_their_sequence_number() -> None:
    assert id_seq(b"mx6gdzrvfz7:1804") == 1804
    assert id_seq(b"42") == 42


def test_lags_are_matched_to_hand_overs_in_publishing_order() -> None:
    got = {9: 0.5, 10: 2.25, 11: 2.5, 12: 3.0}  # 9: seen before the round
    assert lags_by_order(got, 9, [2.0, 2.0, 2.75]) == [0.25, 0.5, 0.25]
    assert lags_by_order({10: 2.5}, 9, [2.0, 2.0]) == [0.5]  # one not (yet) received


def test_bench_redis_runs_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("redis-server") is None:
        reason = "redis-server is not installed (Debian package redis-server; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    args = ["--json", "--seconds", "0.3", "--rounds", "1", "--subscribers", "4"]
    args += ["--batches", "3", "--batch", "2", "--interval-ms", "20", "--sse-rounds", "1"]
    assert bench_redis.main(args) == 0
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
