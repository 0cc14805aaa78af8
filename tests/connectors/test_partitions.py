"""The partitioned replay: one partition per coin gives each coin exactly the events (in order)
and the counters the one-partition replay gives, and the split of a multi-coin capture is made
once per run and found by every process.

`read_partitions` reads each partition as a worker would; the one-partition reference is
`read_events`. The flow-level proof (a 2-process cluster reproduces the golden hashes) is in
``tests/flows/test_cluster.py``; an in-process 2-worker run is here.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import re
import socket
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import lz4.frame
import orjson
import pytest
from bytewax.testing import cluster_main

from connectors.events import BookSnapshot, Event
from connectors.files import ReplayStats, read_events
from connectors.parse import FrameParser
from connectors.partitions import (
    COIN_PREFIX,
    FOREIGN_COIN,
    OTHER_PART,
    PartitionedReplaySource,
    plan_replay,
    read_partitions,
)
from connectors.routing import state_worker
from connectors.split import split_once
from connectors.spool import load_manifest
from connectors.validate import ValidationConfig
from flows.cluster import Cluster
from flows.pipeline import build_pipeline
from flows.settings import Settings
from tests.conftest import LIVE_CAPTURE, SAMPLE, real_file

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "hashes.json"


def norm(e: Event) -> tuple[Any, ...]:
    if isinstance(e, BookSnapshot):
        return ("book", e.coin, e.time_ms, e.recv_ms, e.bid_px, e.bid_sz, e.ask_px, e.ask_sz)
    return (type(e).__name__, *dataclasses.astuple(e))  # type: ignore[call-overload]


def _stats(coins: frozenset[str] | None = None) -> ReplayStats:
    stats = ReplayStats(parser=FrameParser(coins))
    stats.report_held_rejections()
    return stats


def counters(stats: ReplayStats) -> dict[str, Any]:
    return {
        "lines": stats.lines,
        "blank": stats.blank_lines,
        "frames": dict(stats.frames_by_channel()),
        "control": dict(stats.control_frames()),
        "skipped": stats.skipped,
        "duplicates": stats.duplicates,
        "ignored": stats.ignored_coin,
        "latest": stats.latest_ms,
        "errors": len(stats.errors),
    }


def assert_same_as_one_partition(
    paths: list[str], tmp_path: Path, coins: frozenset[str] | None = None
) -> dict[str, list[Event]]:
    """Every coin's events, in order, and every counter, equal the one-partition replay's."""
    whole = _stats(coins)
    by_coin: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for e in read_events(paths, whole):
        by_coin[e.coin].append(norm(e))
    plan = plan_replay(paths, coins=coins, run_key=str(tmp_path), spool_root=tmp_path / "spool")
    parted = _stats(coins)
    parts = read_partitions(plan, parted)
    assert parts.pop(OTHER_PART) == []
    got = {key.removeprefix(COIN_PREFIX): [norm(e) for e in evs] for key, evs in parts.items()}
    assert {c: evs for c, evs in got.items() if evs} == dict(by_coin)
    assert counters(parted) == counters(whole)
    assert parted.finished
    plan.release()
    return parts


# -- the same events and counters as one partition -------------------------------------------


def test_the_sample_per_coin(tmp_path: Path) -> None:
    parts = assert_same_as_one_partition([str(SAMPLE)], tmp_path)
    assert sorted(parts) == ["coin:BTC", "coin:ETH", "coin:SOL"]


def test_a_cluster_plan_balances_the_coins_and_lists_each_once(tmp_path: Path) -> None:
    # The sample's three coins hash BTC and SOL to worker 1 of 2: the plan moves the lighter one
    # (SOL) to worker 0 by a route key, and each process lists exactly its coins' partitions.
    plan = plan_replay([str(SAMPLE)], coins=None, run_key="r", spool_root=tmp_path, workers=2)
    try:
        assert [state_worker(c, 2) for c in ("BTC", "ETH", "SOL")] == [1, 0, 1]
        assert list(plan.routes) == ["SOL"]
        assert state_worker(plan.routes["SOL"], 2) == 0
        listed = [
            PartitionedReplaySource(plan, _stats(), place=(p, 1, 2)).list_parts() for p in (0, 1)
        ]
        assert sorted(listed[0]) == ["coin:ETH", "coin:SOL", OTHER_PART]
        assert listed[1] == ["coin:BTC"]
        # One worker in the run: nothing to balance.
        alone = plan_replay([str(SAMPLE)], coins=None, run_key="r1", spool_root=tmp_path)
        assert alone.routes == {}
        alone.release()
    finally:
        plan.release()


@pytest.mark.parametrize(
    "rel",
    [
        LIVE_CAPTURE,
        "captures/probe_frames_20260924.ndjson",  # bare frames: no receive times
        "captures/verbatim_frames_20260903.ndjson",  # a candle closed by another coin's frame
        "captures/hftbacktest_BTC_20250126.txt",  # "<receive ns> <frame>" lines
        "captures/node_fills_by_block_20251027.ndjson",  # 187 coins of fills
    ],
)
def test_real_captures_per_coin(rel: str, tmp_path: Path) -> None:
    assert_same_as_one_partition([str(real_file(rel))], tmp_path)


def test_two_captures_merged_by_receive_time(tmp_path: Path) -> None:
    lines = gzip.decompress(SAMPLE.read_bytes()).splitlines()
    a = tmp_path / "a.ndjson"
    b = tmp_path / "b.ndjson.gz"
    a.write_bytes(b"\n".join(lines[0::3]) + b"\n")
    b.write_bytes(gzip.compress(b"\n".join(x for i, x in enumerate(lines) if i % 3) + b"\n"))
    assert_same_as_one_partition([str(a), str(b)], tmp_path)


def test_an_archive_file_joins_its_coins_partition(tmp_path: Path) -> None:
    # The sample's BTC books as an archive hour; everything else as a recording.
    lines = gzip.decompress(SAMPLE.read_bytes()).splitlines()
    is_btc_book = [b'"channel":"l2Book"' in x and b'"coin":"BTC"' in x for x in lines]
    hour = tmp_path / "market_data" / "20260101" / "0" / "l2Book" / "BTC.lz4"
    hour.parent.mkdir(parents=True)
    books = [x for x, k in zip(lines, is_btc_book, strict=True) if k]
    hour.write_bytes(lz4.frame.compress(b"\n".join(books)))
    rest = tmp_path / "rest.ndjson"
    others = [x for x, k in zip(lines, is_btc_book, strict=True) if not k]
    rest.write_bytes(b"\n".join(others) + b"\n")
    plan = plan_replay(
        [str(rest), str(hour)], coins=None, run_key="t", spool_root=tmp_path / "spool"
    )
    btc = plan.part("coin:BTC")
    assert (str(hour), False) in btc.inputs
    assert len(btc.inputs) == 2
    plan.release()
    assert_same_as_one_partition([str(rest), str(hour)], tmp_path)


def test_an_archive_only_replay_is_not_split(tmp_path: Path) -> None:
    book = orjson.dumps({"channel": "l2Book", "data": {"coin": "ETH", "time": 1, "levels": []}})
    hour = tmp_path / "market_data" / "20260101" / "0" / "l2Book" / "ETH.lz4"
    hour.parent.mkdir(parents=True)
    hour.write_bytes(lz4.frame.compress(book + b"\n"))
    plan = plan_replay([str(hour)], coins=None, run_key="t", spool_root=tmp_path / "spool")
    assert plan.spool is None
    assert [p.key for p in plan.parts] == ["coin:ETH", OTHER_PART]
    assert plan.part("coin:ETH").inputs == ((str(hour), False),)


def test_a_coin_filter(tmp_path: Path) -> None:
    parts = assert_same_as_one_partition([str(SAMPLE)], tmp_path, frozenset({"ETH"}))
    assert sorted(parts) == ["coin:ETH"]


def test_bad_lines_are_counted_once_where_they_are(tmp_path: Path) -> None:
    lines = gzip.decompress(SAMPLE.read_bytes()).splitlines()[:2000]
    lines[100] = b""
    lines[200] = b'{"time":"2026-01-01T00:00:05.000000000","ver_num":1,"raw":{"channel":"bbo"'
    lines[300] = b'{"channel":"nope","data":{}}'
    lines[400] = b"garbage"
    path = tmp_path / "bad.ndjson.gz"
    body = gzip.compress(b"\n".join(lines) + b"\n")
    path.write_bytes(body[: len(body) - 20])  # a torn tail too
    whole = _stats()
    read_events([str(path)], whole)
    assert set(whole.skipped) >= {"invalid_json", "unknown_channel", "truncated_tail"}
    assert_same_as_one_partition([str(path)], tmp_path)


def test_frames_of_another_coin_in_an_archive_file_are_skipped(tmp_path: Path) -> None:
    books = [
        orjson.dumps(
            {
                "time": f"2026-01-01T00:00:0{i}.000000000",
                "ver_num": 1,
                "raw": {
                    "channel": "bbo",
                    "data": {
                        "coin": coin,
                        "time": 1_767_225_600_000 + i * 1000,
                        "bbo": [{"px": "99", "sz": "1", "n": 1}, {"px": "101", "sz": "1", "n": 1}],
                    },
                },
            }
        )
        for i, coin in enumerate(["BTC", "ETH", "BTC", "BTC"])
    ]
    hour = tmp_path / "market_data" / "20260101" / "0" / "bbo" / "BTC.lz4"
    hour.parent.mkdir(parents=True)
    hour.write_bytes(lz4.frame.compress(b"\n".join(books)))
    plan = plan_replay([str(hour)], coins=None, run_key="t", spool_root=tmp_path)
    stats = ReplayStats(parser=FrameParser(config=ValidationConfig(confirm_first_price=False)))
    parts = read_partitions(plan, stats)
    assert [e.coin for e in parts["coin:BTC"]] == ["BTC"] * 3
    assert stats.skipped == {FOREIGN_COIN: 1}


# -- the split: once per run -----------------------------------------------------------------


def test_the_split_is_made_once_and_found_by_every_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="connectors.split")
    results: list[Any] = []

    def one() -> None:
        kw: dict[str, Any] = {"coins": None, "known": set(), "run_key": "r", "root": tmp_path}
        results.append(split_once([str(SAMPLE)], [0], **kw))

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 3
    assert len({spool.path for spool in results}) == 1
    assert len({spool.user for spool in results}) == 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("replay: split 1 capture") for m in messages) == 1
    assert sum(m.startswith("replay: using the split") for m in messages) == 2
    path, manifest = results[0].path, results[0].manifest
    assert load_manifest(path, manifest.digest) is not None
    assert manifest.coins() == {"BTC", "ETH", "SOL"}
    assert not list(tmp_path.glob("*.tmp-*"))
    # The last process done with the split removes it, whichever made it.
    results[0].release()
    results[2].release()
    assert path.is_dir()
    results[1].release()
    assert list(tmp_path.iterdir()) == []


def test_a_crashed_process_does_not_keep_the_split(tmp_path: Path) -> None:
    kw: dict[str, Any] = {"coins": None, "known": set(), "run_key": "r", "root": tmp_path}
    spool = split_once([str(SAMPLE)], [0], **kw)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    users = spool.path.with_name(spool.path.name + ".users")
    (users / f"{socket.gethostname()}-{dead}-0").touch()  # registered, then gone
    (users / "another-host-1-0").touch()  # another host's process: not ours to judge
    spool.release()
    assert spool.path.is_dir()
    (users / "another-host-1-0").unlink()
    spool.release()  # (again: only the dead one was left, and it is forgotten)
    assert list(tmp_path.iterdir()) == []


def test_another_run_gets_its_own_split(tmp_path: Path) -> None:
    a = plan_replay([str(SAMPLE)], coins=None, run_key="run a", spool_root=tmp_path)
    b = plan_replay([str(SAMPLE)], coins=None, run_key="run b", spool_root=tmp_path)
    assert a.spool is not None
    assert b.spool is not None
    assert a.spool.path != b.spool.path
    a.release()
    assert not a.spool.path.exists()
    assert b.spool.path.exists()
    b.release()
    assert list(tmp_path.iterdir()) == []


# -- the flow on 2 workers -------------------------------------------------------------------


def test_two_workers_publish_the_golden_sample(tmp_path: Path) -> None:
    cluster = Cluster(workers_per_process=2)
    settings = Settings(replay=[str(SAMPLE)], api=False)
    p = build_pipeline(settings, collect=True, cluster=cluster)
    assert p.plan is not None
    assert p.plan.spool is not None
    cluster_main(p.flow, [], 0, worker_count_per_proc=2)
    items = sorted(p.collected or [], key=lambda kv: (kv[1]["timestamp_ms"], kv[0]))
    data = b"".join(orjson.dumps(env) + b"\n" for _, env in items)
    data = re.sub(rb'"code_version":"[^"]*"', b'"code_version":"*"', data)
    record = orjson.loads(GOLDEN.read_bytes())["sample"]
    assert len(items) == record["envelopes"]
    assert hashlib.sha256(data).hexdigest() == record["sha256"]
    assert p.stats is not None
    assert p.stats.lines == 19_311
    assert sorted(p.stats.partitions) == ["coin:BTC", "coin:ETH", "coin:SOL", OTHER_PART]
    p.release()
    assert not p.plan.spool.path.exists()
