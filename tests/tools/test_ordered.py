"""`tools.ordered`: every envelope in (timestamp_ms, coin) order with bounded memory, and
``tools.replay --out`` streaming through it (same bytes however small the runs)."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

import tools.ordered
from tests.conftest import SAMPLE
from tools.ordered import OrderedEnvelopes
from tools.replay import main as replay_main


def _env(ts: int, coin: str, k: int) -> dict[str, object]:
    return {"timestamp_ms": ts, "coin": coin, "k": k}


def test_merged_is_sorted_with_ties_in_arrival_order_and_memory_bounded(tmp_path: Path) -> None:
    rng = random.Random(5)
    items = []
    for k in range(1000):  # nearly ordered, as the flow emits them, with ties
        ts = 1000 * (k // 7) + 1000 * rng.choice((0, 0, 0, 1, -1, -3))
        items.append((rng.choice(("BTC", "ETH", "SOL")), _env(ts, "x", k)))
    out = OrderedEnvelopes(run_size=64, spill_dir=tmp_path)
    for coin, env in items:
        out.add(coin, env)
    assert out.count == 1000
    assert out.peak_held <= 64
    assert out.runs == 1000 // 64
    got = [orjson.loads(raw) for raw in out.merged()]
    want = [env for _, env in sorted(items, key=lambda kv: (kv[1]["timestamp_ms"], kv[0]))]
    assert got == want
    assert list(tmp_path.iterdir()) == []  # the runs are removed


def test_counting_only_keeps_nothing() -> None:
    out = OrderedEnvelopes(keep=False, run_size=1)
    for k in range(10):
        out.add("BTC", _env(k, "BTC", k))
    assert (out.count, out.peak_held, out.runs) == (10, 0, 0)
    assert list(out.merged()) == []


def test_replay_out_is_the_same_bytes_with_tiny_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, spilled = tmp_path / "whole.ndjson", tmp_path / "runs" / "spilled.ndjson"
    assert replay_main([str(SAMPLE), "--out", str(whole), "--log-level", "ERROR"]) == 0
    monkeypatch.setattr(tools.ordered, "RUN_SIZE", 50)
    assert replay_main([str(SAMPLE), "--out", str(spilled), "--log-level", "ERROR"]) == 0
    assert spilled.read_bytes() == whole.read_bytes()
    assert [p.name for p in spilled.parent.iterdir()] == ["spilled.ndjson"]  # no runs left
