"""Hyperliquid's archive as downloaded: the ``market_data/…/l2Book/COIN.lz4`` layout (directories
and globs) and ``node_fills_by_block`` fills turned into validated trades.

The real-data cases read ``../shared/data/real`` and skip with a reason when it is absent.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import lz4.frame
import orjson
import pytest

from connectors.archive import archive_coin, capture_format, fills_lines, fills_trades
from connectors.captures import expand_captures
from connectors.errors import FrameError
from connectors.events import BookSnapshot, Trades
from connectors.files import ReplayStats, read_events
from connectors.parse import FrameParser
from connectors.validate import ValidationConfig
from tests.conftest import real_file

FILLS = "captures/node_fills_by_block_20251027.ndjson"
ARCHIVE_HOUR = "archive/BTC_l2Book_20240101_h12.lz4"
T0 = "2025-10-27T17:00:00.063787823"
T0_MS = 1_761_584_400_063


def _stats() -> ReplayStats:
    stats = ReplayStats(parser=FrameParser(config=ValidationConfig(confirm_first_price=False)))
    stats.report_held_rejections()
    return stats


def fill(coin: str, side: str, crossed: bool, tid: int, px: str = "100.0") -> list[Any]:
    return [
        "0x" + "ab" * 20,
        {
            "coin": coin,
            "px": px,
            "sz": "1.5",
            "side": side,
            "time": T0_MS - 300,
            "crossed": crossed,
            "tid": tid,
            "oid": tid * 10,
            "fee": "0.0",
            "dir": "Open Long",
        },
    ]


def block(*events: list[Any], n: int = 1) -> bytes:
    return orjson.dumps(
        {"local_time": T0, "block_time": T0, "block_number": n, "events": list(events)}
    )


# -- the archive layout ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "coin"),
    [
        ("market_data/20240101/12/l2Book/BTC.lz4", "BTC"),
        ("/data/hl/market_data/20240101/3/l2Book/kPEPE.lz4", "kPEPE"),
        ("20240101/0/l2Book/@107.lz4", "@107"),
        ("trades/BTC.lz4", None),  # a folder named like a channel is not the layout
        ("market_data/20240101/12/l2Book/BTC.ndjson", None),
        ("market_data/2024-01-01/12/l2Book/BTC.lz4", None),
        ("market_data/20240101/25/l2Book/BTC.lz4", None),
        ("market_data/20240101/12/asset_ctxs/BTC.lz4", None),
    ],
)
def test_archive_coin_is_named_by_the_layout_only(path: str, coin: str | None) -> None:
    assert archive_coin(path) == coin


def _archive_tree(root: Path, lines_by_file: dict[str, list[bytes]]) -> list[Path]:
    out = []
    for rel, lines in lines_by_file.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(lz4.frame.compress(b"\n".join(lines) + b"\n"))
        out.append(p)
    return out


def test_a_directory_replays_the_archive_layout_below_it_and_nothing_else(tmp_path: Path) -> None:
    book = orjson.dumps({"channel": "l2Book", "data": {"coin": "X", "time": 1, "levels": [[], []]}})
    made = _archive_tree(
        tmp_path,
        {
            "market_data/20240101/12/l2Book/BTC.lz4": [book],
            "market_data/20240101/13/l2Book/BTC.lz4": [book],
            "market_data/20240101/12/l2Book/ETH.lz4": [book],
            "node_fills_by_block/hourly/20240101/12.lz4": [book],
            "elsewhere/20240101/12/l2Book/SOL.lz4": [book],  # not under the layout's roots
            "heldout/x.lz4": [book],
        },
    )
    (tmp_path / "top.ndjson").write_bytes(book + b"\n")
    found = expand_captures([tmp_path])
    assert found[0] == str(tmp_path / "top.ndjson")
    assert sorted(found[1:]) == sorted(str(p) for p in made[:4])
    assert not any("elsewhere" in f or "heldout" in f for f in found)


def test_a_glob_replays_what_it_matches(tmp_path: Path) -> None:
    book = b'{"channel":"pong"}'
    made = _archive_tree(
        tmp_path,
        {
            "market_data/20240101/12/l2Book/BTC.lz4": [book],
            "market_data/20240102/0/l2Book/ETH.lz4": [book],
        },
    )
    assert expand_captures([f"{tmp_path}/**/*.lz4"]) == sorted(str(p) for p in made)
    with pytest.raises(FileNotFoundError, match=r"HLSL_REPLAY.*no file matches"):
        expand_captures([f"{tmp_path}/**/*.gz"])


def test_a_directory_without_captures_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "notes.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.ndjson").write_text("{}")  # not the archive layout: not entered
    with pytest.raises(FileNotFoundError) as err:
        expand_captures([tmp_path])
    msg = str(err.value)
    assert "--replay (HLSL_REPLAY)" in msg
    assert str(tmp_path) in msg
    assert "holds no capture" in msg
    assert "\n" not in msg


def test_the_real_archive_hour_replays_from_the_layout(tmp_path: Path) -> None:
    hour = real_file(ARCHIVE_HOUR)
    target = tmp_path / "market_data" / "20240101" / "12" / "l2Book" / "BTC.lz4"
    target.parent.mkdir(parents=True)
    os.symlink(hour, target)
    paths = expand_captures([tmp_path / "market_data"])
    assert paths == [str(target)]
    assert archive_coin(paths[0]) == "BTC"
    stats = _stats()
    events = read_events(paths, stats)
    assert len(events) == 5_587
    assert all(isinstance(e, BookSnapshot) and e.coin == "BTC" for e in events)
    assert stats.skipped == {}


# -- node_fills_by_block --------------------------------------------------------------------------


def test_fills_become_one_trade_per_taker_fill_with_the_takers_side() -> None:
    line = block(
        fill("ETH", "B", True, 7),
        fill("ETH", "A", False, 7),  # the maker's side of the same trade
        fill("BTC", "A", True, 9, px="50000.0"),
        fill("BTC", "B", False, 9, px="50000.0"),
        fill("ETH", "A", True, 8),
        fill("ETH", "B", False, 8),
    )
    recv_ns, per_coin = fills_lines(line)
    assert recv_ns == 1_761_584_400_063_787_823
    assert [c for c, _ in per_coin] == ["ETH", "BTC"]
    frame = orjson.loads(per_coin[0][1])
    assert frame["time"] == T0
    assert frame["raw"]["channel"] == "trades"
    assert [(t["side"], t["tid"]) for t in frame["raw"]["data"]] == [("B", 7), ("A", 8)]
    assert set(frame["raw"]["data"][0]) == {"coin", "side", "px", "sz", "time", "tid"}


def test_a_block_without_taker_fills_gives_no_trades() -> None:
    assert fills_lines(block(fill("ETH", "A", False, 7)))[1] == []
    assert fills_lines(block())[1] == []


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"[1, 2]", "bad_fills"),
        (b'{"block_number": 1, "events": 3}', "bad_fills"),
        (block(["0xabc"]), "bad_fills"),
        (block(["0xabc", {"coin": "ETH", "crossed": "yes"}]), "bad_fills"),
        (b'{"local_time": "x", "events": [', "invalid_json"),
    ],
)
def test_a_line_that_is_not_a_block_is_refused(line: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as err:
        fills_trades(line)
    assert err.value.reason == reason


def test_fills_are_validated_like_websocket_trades(tmp_path: Path) -> None:
    path = tmp_path / "fills.ndjson"
    bad_px = block(fill("ETH", "B", True, 1, px="0"), fill("BTC", "B", True, 2, px="50000"), n=1)
    bad_side = block(fill("SOL", "X", True, 3), n=2)
    good = block(fill("ETH", "A", True, 4, px="101.0"), n=3)
    path.write_bytes(b"\n".join([bad_px, bad_side, good, b"not json"]) + b"\n")
    stats = _stats()
    events = read_events([path], stats)
    # The zero price costs only ETH's trades of that block; BTC's of the same block pass.
    assert [(e.coin, e.prints) for e in events if isinstance(e, Trades)] == [
        ("BTC", ((50000.0, 1.5, 1),)),
        ("ETH", ((101.0, 1.5, -1),)),
    ]
    assert stats.skipped == {"bad_price": 1, "bad_trades": 1, "invalid_json": 1}
    assert stats.lines == 4


def test_the_real_fills_file_replays_as_the_takers_trades() -> None:
    path = real_file(FILLS)
    lines = path.read_bytes().splitlines()
    assert capture_format(lines[:2]) == "fills"
    takers: Counter[tuple[str, str]] = Counter()
    liquidations = 0
    for raw in lines:
        for _user, f in orjson.loads(raw)["events"]:
            if f["crossed"]:
                takers[(f["coin"], f["side"])] += 1
                liquidations += "liquidation" in f
    assert sum(takers.values()) == 3_641  # both sides of every fill are in the file: one taker
    assert liquidations == 1
    stats = _stats()
    events = read_events([path], stats)
    trades = [e for e in events if isinstance(e, Trades)]
    assert len(trades) == len(events)
    got: Counter[tuple[str, str]] = Counter()
    for t in trades:
        for _px, _sz, side in t.prints:
            got[(t.coin, "B" if side > 0 else "A")] += 1
    assert got == takers
    assert stats.skipped == {}
    assert stats.duplicates == 0
    assert stats.lines == len(lines)
    assert {t.coin for t in trades} >= {"BTC", "ETH", "SOL", "@107", "xyz:XYZ100"}
    # Times: the fill's own (block) time, received at the block's local_time.
    assert all(t.recv_ms is not None and 0 <= t.recv_ms - t.time_ms < 60_000 for t in trades)
