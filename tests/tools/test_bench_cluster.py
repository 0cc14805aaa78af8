"""`tools.bench_cluster`: the simulated whole-market capture it replays."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import orjson
import pytest

from tools import bench_cluster
from tools.bench_live import market_feed
from tools.simulate.capture import iso_ns


def test_market_capture_is_the_live_benchmarks_market_streamed_to_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = bench_cluster.market_capture(5, 10.0)
    assert path.parent == tmp_path
    assert not path.with_suffix(".part").exists()
    feed, _coins = market_feed(5, 10.0)
    want = b"".join(
        orjson.dumps({"time": iso_ns(recv or 0), "ver_num": 1, "raw": frame}) + b"\n"
        for recv, frame in feed.items
    )
    got = gzip.decompress(path.read_bytes())
    assert got == want
    lines = got.splitlines()
    assert len(lines) > 100
    channels = {orjson.loads(x)["raw"]["channel"] for x in lines}
    assert "subscriptionResponse" not in channels
    assert "pong" not in channels
    # cached: a second call neither regenerates nor rewrites it
    mtime = path.stat().st_mtime_ns
    assert bench_cluster.market_capture(5, 10.0) == path
    assert path.stat().st_mtime_ns == mtime
