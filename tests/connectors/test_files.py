"""NdjsonSource / read_events / ReplayStats on hand-written capture files and the real captures."""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import logging
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import lz4.frame
import orjson
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

import connectors.files as files_mod
from connectors.events import AssetCtx, Bbo, BookSnapshot, Candle, Mid, Trades
from connectors.files import NdjsonSource, ReplayStats, read_events
from connectors.parse import FrameParser
from connectors.validate import ValidationConfig
from tests.conftest import real_file

T0_NS = 1_757_015_216_673_877_954  # 2025-09-04T19:46:56.673877954
T0_MS = T0_NS // 1_000_000  # exchange times near the receive times (the edge checks them)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def norm(e: Any) -> tuple[Any, ...]:
    """A comparable value for any event (BookSnapshot is not a dataclass)."""
    if isinstance(e, BookSnapshot):
        return (
            "book",
            e.coin,
            e.time_ms,
            e.recv_ms,
            e.bid_px,
            e.bid_sz,
            e.bid_n,
            e.ask_px,
            e.ask_sz,
            e.ask_n,
        )
    return (type(e).__name__, *dataclasses.astuple(e))


def iso(ns: int) -> str:
    """A receive time in ns as the archive's ISO stamp with 9 fraction digits."""
    secs, frac = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}"


def bare(frame: Any, recv_ns: int | None = None) -> bytes:
    return orjson.dumps(frame)


def envelope(frame: Any, recv_ns: int) -> bytes:
    return orjson.dumps({"time": iso(recv_ns), "ver_num": 1, "raw": frame})


def hft(frame: Any, recv_ns: int) -> bytes:
    return f"{recv_ns} ".encode() + orjson.dumps(frame)


def bbo(coin: str, time_ms: int, bid: str = "100.0", ask: str = "101.0") -> dict[str, Any]:
    return {
        "channel": "bbo",
        "data": {
            "coin": coin,
            "time": time_ms,
            "bbo": [{"px": bid, "sz": "1.5", "n": 2}, {"px": ask, "sz": "2.5", "n": 3}],
        },
    }


def write(path: Path, lines: Sequence[bytes], *, trailing_newline: bool = True) -> Path:
    body = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
    name = path.name.lower()
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(body, mtime=0))
    elif name.endswith(".lz4"):
        path.write_bytes(lz4.frame.compress(body))
    else:
        path.write_bytes(body)
    return path


def drain(part: Any, max_batches: int | None = None) -> list[Any]:
    out: list[Any] = []
    n = 0
    try:
        while max_batches is None or n < max_batches:
            out.extend(part.next_batch())
            n += 1
    except StopIteration:
        pass
    return out


def _stats() -> ReplayStats:
    """Stats whose parser passes a coin's first price on at once (no first-price hold), so
    these tests can check reading and merging event by event."""
    return ReplayStats(parser=FrameParser(config=ValidationConfig(confirm_first_price=False)))


_PARTS: list[Any] = []


def build(
    paths: Sequence[Path],
    resume: dict[str, int] | None = None,
    stats: ReplayStats | None = None,
    **kw: Any,
) -> Any:
    """A replay partition, closed at the end of the test (see `_close_parts`)."""
    if stats is None:
        # These tests check reading and merging event by event: no first-price hold.
        stats = _stats()
    part = NdjsonSource(paths, stats, **kw).build_part("step", "replay", resume)
    _PARTS.append(part)
    return part


@pytest.fixture(autouse=True)
def _close_parts() -> Any:
    yield
    while _PARTS:
        _PARTS.pop().close()


# One of every channel, with a receive time 100 ms apart; exchange times on the timed ones.
SESSION: list[dict[str, Any]] = [
    {"channel": "subscriptionResponse", "data": {"method": "subscribe", "subscription": {}}},
    {
        "channel": "trades",
        "data": [
            {
                "coin": "BTC",
                "side": "B",
                "px": "109741.0",
                "sz": "0.5",
                "time": 1757015216500,
                "tid": 1,
            },
            {
                "coin": "BTC",
                "side": "A",
                "px": "109740.0",
                "sz": "0.25",
                "time": 1757015216500,
                "tid": 2,
            },
        ],
    },
    bbo("BTC", 1757015216600, "109740.0", "109741.0"),
    {
        "channel": "l2Book",
        "data": {
            "coin": "BTC",
            "time": 1757015216700,
            "levels": [
                [{"px": "109740.0", "sz": "1.0", "n": 3}, {"px": "109739.0", "sz": "2.0", "n": 1}],
                [{"px": "109741.0", "sz": "0.5", "n": 2}],
            ],
        },
    },
    {
        "channel": "activeAssetCtx",
        "data": {
            "coin": "BTC",
            "ctx": {
                "funding": "0.0000125",
                "openInterest": "36585.31848",
                "oraclePx": "109750.0",
                "markPx": "109741.0",
                "midPx": "109740.5",
                "premium": "-0.0001",
                "impactPxs": ["109740.0", "109741.0"],
                "dayNtlVlm": "1000.5",
                "prevDayPx": "108000.0",
            },
        },
    },
    {"channel": "allMids", "data": {"mids": {"BTC": "109740.5", "ETH": "4300.1"}}},
    {"channel": "pong"},
]
SESSION_RECV = [T0_NS + k * 100_000_000 for k in range(len(SESSION))]


def session_lines(fmt: Callable[[Any, int], bytes]) -> list[bytes]:
    return [fmt(f, r) for f, r in zip(SESSION, SESSION_RECV, strict=True)]


def expected_session(with_recv: bool) -> list[tuple[Any, ...]]:
    def recv(k: int) -> int | None:
        return SESSION_RECV[k] // 1_000_000 if with_recv else None

    untimed_ctx = recv(4) if with_recv else 1757015216700
    untimed_mid = recv(5) if with_recv else 1757015216700
    events: list[Any] = [
        Trades(
            "BTC",
            1757015216500,
            recv(1),
            ((109741.0, 0.5, 1), (109740.0, 0.25, -1)),
            0.5,
            0.25,
            109741.0 * 0.5,
            109740.0 * 0.25,
            109741.0,
            109740.0,
        ),
        Bbo("BTC", 1757015216600, recv(2), 109740.0, 1.5, 109741.0, 2.5),
    ]
    book = ("book", "BTC", 1757015216700, recv(3))
    book += ((109740.0, 109739.0), (1.0, 2.0), (3.0, 1.0), (109741.0,), (0.5,), (2.0,))
    ctx = AssetCtx(
        "BTC",
        untimed_ctx,
        recv(4),
        0.0000125,
        36585.31848,
        109741.0,
        109750.0,
        109740.5,
        -0.0001,
        109740.0,
        109741.0,
        1000.5,
        108000.0,
    )
    mid = Mid("BTC", untimed_mid, recv(5), 109740.5)
    return [norm(events[0]), norm(events[1]), book, norm(ctx), norm(mid)]


# --------------------------------------------------------------------------------------------
# formats x compression
# --------------------------------------------------------------------------------------------

FORMATS = {"bare": bare, "envelope": envelope, "hft": hft}


@pytest.mark.parametrize("suffix", [".ndjson", ".ndjson.gz", ".ndjson.lz4", ".NDJSON.GZ"])
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_line_formats_and_compressions(tmp_path: Path, fmt: str, suffix: str) -> None:
    path = write(tmp_path / f"cap{suffix}", session_lines(FORMATS[fmt]))
    stats = _stats()
    events = read_events([path], stats)
    assert [norm(e) for e in events] == expected_session(with_recv=fmt != "bare")
    assert stats.lines == len(SESSION)
    assert stats.skipped == {}
    assert stats.errors == []
    assert stats.finished
    assert dict(stats.parser.control) == {"subscriptionResponse": 1, "pong": 1}
    assert stats.frames == 5
    assert stats.files == [str(path)]


def test_last_line_without_newline_is_read(tmp_path: Path) -> None:
    path = write(tmp_path / "c.ndjson", session_lines(envelope), trailing_newline=False)
    assert [norm(e) for e in read_events([path], _stats())] == expected_session(with_recv=True)


# --------------------------------------------------------------------------------------------
# real captures
# --------------------------------------------------------------------------------------------


def test_real_live_capture(live_capture: Path) -> None:
    stats = _stats()
    events = read_events([live_capture], stats)
    assert stats.lines == 24_261
    assert dict(stats.parser.frames) == {"trades": 6_580, "bbo": 13_896, "l2Book": 3_785}
    assert stats.frames == 24_261
    assert stats.skipped == {}
    assert stats.errors == []
    assert stats.blank_lines == 0
    assert sum(isinstance(e, Bbo) for e in events) == 13_896
    books = [e for e in events if isinstance(e, BookSnapshot)]
    assert len(books) == 3_785
    assert all(e.coin == "BTC" for e in books)
    assert all(e.recv_ms is not None for e in events)
    # First line: 2025-09-04T19:46:56.673877954.
    assert events[0].recv_ms == 1757015216673
    assert {e.coin for e in events if isinstance(e, Trades)} == {"BTC", "ETH", "SOL"}


def test_real_archive_lz4_books() -> None:
    path = real_file("archive/BTC_l2Book_20240101_h12.lz4")
    stats = _stats()
    events = read_events([path], stats)
    assert dict(stats.parser.frames) == {"l2Book": 5_587}
    assert len(events) == 5_587
    assert stats.skipped == {}
    assert stats.errors == []
    first = events[0]
    assert isinstance(first, BookSnapshot)
    assert (first.coin, first.time_ms, first.recv_ms) == ("BTC", 1704110399915, 1704110401138)
    assert first.bid_px[:2] == (42727.0, 42723.0)
    for e in events:
        assert isinstance(e, BookSnapshot)
        assert e.error is None
        assert len(e.bid_px) == len(e.ask_px) == 20
        assert all(a > b for a, b in zip(e.bid_px, e.bid_px[1:], strict=False))
        assert all(a < b for a, b in zip(e.ask_px, e.ask_px[1:], strict=False))
        assert e.bid_px[0] < e.ask_px[0]
    assert all(a.recv_ms <= b.recv_ms for a, b in itertools.pairwise(events))  # type: ignore[operator]


def test_real_hftbacktest_capture() -> None:
    path = real_file("captures/hftbacktest_BTC_20250126.txt")
    stats = _stats()
    events = read_events([path], stats)
    assert dict(stats.parser.frames) == {"l2Book": 46, "trades": 9}
    assert stats.lines == 55
    assert stats.skipped == {}
    assert sum(isinstance(e, BookSnapshot) for e in events) == 46
    assert events[0].recv_ms == 1737918843893
    assert all(e.coin == "BTC" for e in events)


def test_real_candle_file_every_candle_emitted_at_close() -> None:
    path = real_file("frames/hl_candles_5m_BTC_20250314-20250726.ndjson.gz")
    with gzip.open(path, "rb") as fh:
        raw = [orjson.loads(line)["raw"]["data"] for line in fh]
    stats = _stats()
    events = read_events([path], stats)
    assert dict(stats.parser.frames) == {"candle": len(raw)}
    assert len(events) == len(raw) > 38_000
    for c, r in zip(events, raw, strict=True):
        assert isinstance(c, Candle)
        assert (c.coin, c.interval, c.open_ms, c.time_ms) == ("BTC", "5m", r["t"], r["T"])
        assert c.time_ms == c.open_ms + 299_999
        assert c.recv_ms is not None
        assert c.time_ms < c.recv_ms
    first = events[0]
    assert (first.o, first.h, first.low, first.c, first.v) == (
        82765.0,
        82817.0,
        82697.0,
        82699.0,
        24.16464,
    )


# --------------------------------------------------------------------------------------------
# merging several files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_merge_by_receive_time(tmp_path: Path, batch_size: int) -> None:
    s = 1_000_000_000
    # Exchange times deliberately disagree with receive order (ETH's are the smallest).
    a = write(
        tmp_path / "a.ndjson",
        [envelope(bbo("BTC", T0_MS + 9000 + k), T0_NS + (2 * k) * s) for k in range(3)],
    )
    b = write(
        tmp_path / "b.ndjson.gz",
        [envelope(bbo("ETH", T0_MS + 10 + k), T0_NS + (2 * k + 1) * s) for k in range(3)],
    )
    events = drain(build([a, b], batch_size=batch_size))
    assert [(e.coin, e.time_ms - T0_MS) for e in events] == [
        ("BTC", 9000),
        ("ETH", 10),
        ("BTC", 9001),
        ("ETH", 11),
        ("BTC", 9002),
        ("ETH", 12),
    ]
    recv = [e.recv_ms for e in events]
    assert recv == sorted(recv)


def test_merge_by_exchange_time_without_receive_time(tmp_path: Path) -> None:
    a = write(tmp_path / "a.ndjson", [bare(bbo("BTC", t)) for t in (1000, 3000, 5000)])
    b = write(tmp_path / "b.ndjson", [bare(bbo("ETH", t)) for t in (2000, 2500, 6000)])
    c = write(tmp_path / "c.ndjson.lz4", [bare(bbo("SOL", t)) for t in (500, 5500)])
    events = read_events([a, b, c], _stats())
    assert [(e.coin, e.time_ms) for e in events] == [
        ("SOL", 500),
        ("BTC", 1000),
        ("ETH", 2000),
        ("ETH", 2500),
        ("BTC", 3000),
        ("BTC", 5000),
        ("SOL", 5500),
        ("ETH", 6000),
    ]


# --------------------------------------------------------------------------------------------
# malformed lines
# --------------------------------------------------------------------------------------------


def _malformed_file(path: Path) -> Path:
    return write(
        path,
        [
            bare(bbo("BTC", 1)),  # 1
            bare(bbo("BTC", 2)),  # 2
            b"",  # 3 blank
            b"{bad json",  # 4
            bare(bbo("BTC", 3)),  # 5
            b'{"channel":"nope","data":{}}',  # 6
            b"   ",  # 7 blank
            bare(bbo("BTC", 4)),  # 8
            b"Websocket connection established.",  # 9
            bare(bbo("BTC", 5)),  # 10
        ],
    )


@pytest.mark.parametrize("batch_size", [1, 3, 1000])
@pytest.mark.parametrize("second_file", [False, True])
def test_malformed_lines_counted_logged_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, batch_size: int, second_file: bool
) -> None:
    path = _malformed_file(tmp_path / "m.ndjson")
    paths = [path]
    if second_file:  # exercises the merge path instead of the single-file fast path
        paths.append(write(tmp_path / "other.ndjson", [bare(bbo("ETH", 100))]))
    stats = _stats()
    with caplog.at_level(logging.WARNING):
        events = drain(build(paths, stats=stats, batch_size=batch_size))
    assert [(e.coin, e.time_ms) for e in events if e.coin == "BTC"] == [
        ("BTC", t) for t in range(1, 6)
    ]
    assert stats.skipped == {"invalid_json": 1, "unknown_channel": 1}
    assert stats.blank_lines == 2
    assert stats.lines == 10 + int(second_file)
    assert dict(stats.parser.control) == {"greeting": 1}
    assert stats.errors == []
    messages = [r.getMessage() for r in caplog.records]
    assert any("invalid_json" in m and f"{path}:4 " in m for m in messages), messages
    assert any("unknown_channel" in m and f"{path}:6 " in m for m in messages), messages
    assert len(messages) == 2


def test_skip_log_thins_but_counts_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "bad.ndjson", [b"{bad"] * 25 + [bare(bbo("BTC", 1))])
    stats = _stats()
    with caplog.at_level(logging.WARNING):
        events = read_events([path], stats)
    assert len(events) == 1
    assert stats.skipped == {"invalid_json": 25}
    assert len(caplog.records) == 20  # the first 20 per reason
    assert f"{path}:20 " in caplog.records[-1].getMessage()


@pytest.mark.parametrize("merged", [False, True])
@pytest.mark.parametrize("suffix", [".ndjson", ".ndjson.gz"])
def test_line_longer_than_a_read_chunk(tmp_path: Path, suffix: str, merged: bool) -> None:
    # A frame bigger than two read chunks (2 x 256 KiB), e.g. a large allMids or allDexsAssetCtxs.
    mids = {f"@{k}": f"{k}.5" for k in range(60_000)} | {"BTC": "100.5"}
    huge = bare({"channel": "allMids", "data": {"mids": mids}})
    assert len(huge) > 2 * files_mod.CHUNK_BYTES  # at least one whole read has no newline
    path = write(tmp_path / f"long{suffix}", [bare(bbo("BTC", 1)), huge, bare(bbo("BTC", 2))])
    paths = [path]
    if merged:  # the merge path reads records one by one (next_record)
        paths.append(write(tmp_path / "z.ndjson", [bare(bbo("ETH", 50_000))]))
    stats = _stats()
    events = [e for e in read_events(paths, stats) if e.coin == "BTC"]
    assert [norm(e) for e in events] == [
        norm(Bbo("BTC", 1, None, 100.0, 1.5, 101.0, 2.5)),
        norm(Mid("BTC", 1, None, 100.5)),
        norm(Bbo("BTC", 2, None, 100.0, 1.5, 101.0, 2.5)),
    ]
    assert stats.skipped == {}
    assert stats.errors == []


# --------------------------------------------------------------------------------------------
# truncated compressed files
# --------------------------------------------------------------------------------------------

N_BIG = 4000  # ~600 KB decompressed: more than two read chunks


def _big_lines() -> list[bytes]:
    return [
        bare(bbo("BTC", k, bid=f"{100000 + k % 97}.0", ask=f"{100100 + k % 89}.0"))
        for k in range(N_BIG)
    ]


def _truncated(tmp_path: Path, suffix: str, cut: int) -> tuple[Path, int]:
    """A compressed capture with its last ``cut`` bytes removed, and its complete-line count."""
    body = b"\n".join(_big_lines()) + b"\n"
    if suffix == ".gz":
        blob = gzip.compress(body, mtime=0)[:-cut]
        readable = zlib.decompressobj(wbits=31).decompress(blob)
    else:
        blob = lz4.frame.compress(body)[:-cut]
        readable = lz4.frame.LZ4FrameDecompressor().decompress(blob)
    path = tmp_path / f"trunc.ndjson{suffix}"
    path.write_bytes(blob)
    complete = readable.count(b"\n")
    assert 0 < complete < N_BIG
    return path, complete


@pytest.mark.parametrize(
    ("suffix", "cut"), [(".gz", 50), (".gz", 5000), (".lz4", 50), (".lz4", 20_000)]
)
def test_truncated_file_delivers_every_complete_line(tmp_path: Path, suffix: str, cut: int) -> None:
    path, complete = _truncated(tmp_path, suffix, cut)
    stats = _stats()
    events = read_events([path], stats)  # no exception escapes
    assert [e.time_ms for e in events] == list(range(complete))
    # A stream cut inside its last block is a crash tail: a warning, not an error.
    assert stats.errors == []
    assert stats.skipped == {"truncated_tail": 1}
    assert stats.finished


@pytest.mark.parametrize("merged", [False, True])
@pytest.mark.parametrize("suffix", [".gz", ".lz4"])
def test_truncated_tail_warning_names_last_good_line(
    tmp_path: Path, suffix: str, merged: bool, caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = _truncated(tmp_path, suffix, 50)
    paths = [path]
    if merged:
        paths.append(write(tmp_path / "z.ndjson", [bare(bbo("ETH", 50_000))]))
    stats = _stats()
    with caplog.at_level(logging.WARNING):
        events = read_events(paths, stats)
    delivered = sum(e.coin == "BTC" for e in events)
    assert stats.errors == []
    assert stats.skipped == {"truncated_tail": 1}
    [msg] = [r.getMessage() for r in caplog.records if "truncated_tail" in r.getMessage()]
    assert f"skipped truncated_tail at {path}:{delivered + 1} " in msg
    assert f"after line {delivered};" in msg


@pytest.mark.parametrize("suffix", [".gz", ".lz4"])
def test_truncated_file_does_not_stop_other_files(tmp_path: Path, suffix: str) -> None:
    path, complete = _truncated(tmp_path, suffix, 5000)
    other = write(tmp_path / "other.ndjson", [bare(bbo("ETH", 10 * k + 5)) for k in range(600)])
    stats = _stats()
    events = read_events([path, other], stats)
    btc = [e.time_ms for e in events if e.coin == "BTC"]
    eth = [e.time_ms for e in events if e.coin == "ETH"]
    assert eth == [10 * k + 5 for k in range(600)]
    assert btc == list(range(len(btc)))  # a clean prefix, never a gap
    assert 0 < len(btc) <= complete
    assert stats.errors == []
    assert stats.skipped == {"truncated_tail": 1}


def test_not_actually_compressed_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.ndjson.gz"
    bogus.write_bytes(b'{"channel":"pong"}\n')
    good = write(tmp_path / "good.ndjson", [bare(bbo("ETH", 1))])
    stats = _stats()
    events = read_events([bogus, good], stats)
    assert [(e.coin, e.time_ms) for e in events] == [("ETH", 1)]
    assert len(stats.errors) == 1
    assert str(bogus) in stats.errors[0]


# --------------------------------------------------------------------------------------------
# resume
# --------------------------------------------------------------------------------------------


def _resume_lines() -> list[bytes]:
    lines = [envelope(bbo("BTC", T0_MS + k), T0_NS + k * 2_000_000) for k in range(40)]
    lines[10:10] = [b"", b"{bad"]
    return lines


@pytest.mark.parametrize("small_chunks", [False, True])
@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("suffix", [".ndjson", ".ndjson.gz", ".ndjson.lz4"])
def test_resume_continues_after_last_emitted_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    suffix: str,
    batch_size: int,
    small_chunks: bool,
) -> None:
    lines = _resume_lines()
    if small_chunks:  # many reads, lines split across chunk boundaries (chunk > longest line)
        monkeypatch.setattr(files_mod, "CHUNK_BYTES", max(len(x) for x in lines) + 13)
    path = write(tmp_path / f"r{suffix}", lines)
    full = [norm(e) for e in drain(build([path], batch_size=batch_size))]
    assert len(full) == 40
    for n_batches in (0, 1, 2, 5, 13, 100):
        part = build([path], batch_size=batch_size)
        head = drain(part, n_batches)
        snap = part.snapshot()
        part.close()
        assert isinstance(snap, dict)
        assert list(snap) == [str(path)]
        assert isinstance(snap[str(path)], int)
        tail = drain(build([path], resume=snap, batch_size=batch_size))
        assert [norm(e) for e in head + tail] == full, (n_batches, snap)


def test_resume_offset_is_decompressed_bytes_of_emitted_lines(tmp_path: Path) -> None:
    lines = [bare(bbo("BTC", k)) for k in range(10)]
    for suffix in (".ndjson", ".ndjson.gz"):
        path = write(tmp_path / f"o{suffix}", lines)
        part = build([path], batch_size=3)
        assert part.snapshot() == {str(path): 0}
        got = part.next_batch()  # the record buffered at start-up + 3 lines
        assert [e.time_ms for e in got] == [0, 1, 2, 3]
        assert part.snapshot() == {str(path): sum(len(x) + 1 for x in lines[:4])}
        part.close()


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_resume_merged_files(tmp_path: Path, batch_size: int) -> None:
    a = write(
        tmp_path / "a.ndjson",
        [envelope(bbo("BTC", T0_MS + k), T0_NS + 2 * k * 10**6) for k in range(15)],
    )
    b = write(
        tmp_path / "b.ndjson.gz",
        [envelope(bbo("ETH", T0_MS + k), T0_NS + (2 * k + 1) * 10**6) for k in range(12)],
    )
    full = [norm(e) for e in drain(build([a, b], batch_size=batch_size))]
    assert len(full) == 27
    for n_batches in (0, 1, 3, 7, 50):
        part = build([a, b], batch_size=batch_size)
        head = drain(part, n_batches)
        snap = part.snapshot()
        part.close()
        assert set(snap) == {str(a), str(b)}
        tail = drain(build([a, b], resume=snap, batch_size=batch_size))
        assert [norm(e) for e in head + tail] == full, (n_batches, snap)


# --------------------------------------------------------------------------------------------
# pacing, stop, argument checks
# --------------------------------------------------------------------------------------------


def test_paced_replay_waits_for_due_records(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.ndjson",
        [envelope(bbo("BTC", T0_MS + k), T0_NS + k * 10**9) for k in range(3)],
    )
    part = build([path], speed=1.0)
    assert part.next_awake() is None
    first = part.next_batch()
    assert [e.time_ms - T0_MS for e in first] == [0]
    awake = part.next_awake()
    now = datetime.now(UTC)
    assert awake is not None
    assert now < awake <= now + timedelta(seconds=0.3)
    assert list(part.next_batch()) == []  # the next record is 1 s away
    assert part.next_awake() is not None
    part.close()


def test_unpaced_replay_never_sleeps(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.ndjson",
        [envelope(bbo("BTC", T0_MS + k), T0_NS + k * 10**9) for k in range(3)],
    )
    part = build([path])
    assert [e.time_ms - T0_MS for e in part.next_batch()] == [0, 1, 2]
    assert part.next_awake() is None


def test_paced_replay_duration(tmp_path: Path) -> None:
    # A 2-second capture at speed 40 must take at least 50 ms (and deliver everything in order).
    path = write(
        tmp_path / "p.ndjson",
        [envelope(bbo("BTC", T0_MS + k), T0_NS + k * 500_000_000) for k in range(5)],
    )
    part = build([path], speed=40.0)
    got: list[Any] = []
    start = time.monotonic()
    try:
        while True:
            got.extend(part.next_batch())
            awake = part.next_awake()
            if awake is not None:
                time.sleep(max(0.0, (awake - datetime.now(UTC)).total_seconds()))
    except StopIteration:
        pass
    elapsed = time.monotonic() - start
    assert [e.time_ms - T0_MS for e in got] == [0, 1, 2, 3, 4]
    assert 0.045 <= elapsed < 2.0


def test_stop_event_ends_the_source(tmp_path: Path) -> None:
    path = write(tmp_path / "s.ndjson", [bare(bbo("BTC", k)) for k in range(10)])
    stop = threading.Event()
    part = build([path], stop=stop, batch_size=2)
    assert [e.time_ms for e in part.next_batch()] == [0, 1, 2]
    stop.set()
    with pytest.raises(StopIteration):
        part.next_batch()
    stop2 = threading.Event()
    stop2.set()
    with pytest.raises(StopIteration):
        build([path], stop=stop2).next_batch()


def test_source_rejects_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ndjson"
    with pytest.raises(FileNotFoundError, match=r"nope\.ndjson"):
        NdjsonSource([missing])
    with pytest.raises(FileNotFoundError):
        NdjsonSource([tmp_path])  # a directory is not a capture


def test_source_rejects_negative_speed_and_no_files(tmp_path: Path) -> None:
    path = write(tmp_path / "x.ndjson", [bare(bbo("BTC", 1))])
    with pytest.raises(ValueError, match="speed must be >= 0"):
        NdjsonSource([path], speed=-1.0)
    with pytest.raises(ValueError, match="no capture files"):
        NdjsonSource([])


@pytest.mark.parametrize("batch_size", [0, -5])
def test_source_rejects_non_positive_batch_size(tmp_path: Path, batch_size: int) -> None:
    # batch_size=0 makes the single-file fast path return [] forever (read_events never ends).
    path = write(tmp_path / "x.ndjson", [bare(bbo("BTC", 1)), bare(bbo("BTC", 2))])
    with pytest.raises(ValueError, match="batch_size"):
        NdjsonSource([path], batch_size=batch_size)


def test_stats_shared_parser_and_list_parts(tmp_path: Path) -> None:
    path = write(tmp_path / "x.ndjson", [bare(bbo("BTC", 1))])
    stats = _stats()
    src = NdjsonSource([path], stats)
    assert src.stats is stats
    assert src.list_parts() == ["replay"]
    assert not stats.finished


# --------------------------------------------------------------------------------------------
# bytewax flow
# --------------------------------------------------------------------------------------------


def test_flow_run_main_delivers_every_event(tmp_path: Path) -> None:
    a = write(tmp_path / "a.ndjson.gz", session_lines(envelope))
    b = write(
        tmp_path / "b.ndjson",
        [
            envelope(
                bbo("ETH", 1757015216650 + k, "4300.0", "4300.2"), T0_NS + 50_000_000 + k * 10**8
            )
            for k in range(4)
        ],
    )
    expected = [norm(e) for e in read_events([a, b], _stats())]
    # session: trades, bbo, book, ctx, 2 mids (ETH was seen first); plus 4 ETH bbo.
    assert len(expected) == 10

    out: list[Any] = []
    stats = _stats()
    flow = Dataflow("replay_test")
    stream = op.input("in", flow, NdjsonSource([a, b], stats, batch_size=2))
    op.output("out", stream, TestingSink(out))
    run_main(flow)
    assert [norm(e) for e in out] == expected
    assert stats.finished
    assert stats.frames == 9
