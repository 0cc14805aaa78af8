"""FrameParser, decode_line, iso_to_ns and peek_time_ms on real and hand-built frames.

Every expected value below was read off the wire text (`../shared/data/real/captures/...`) or
computed by hand; nothing is derived from the code under test.
"""

from __future__ import annotations

import gzip
import pickle
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import connectors._parse_trades as trades_mod
from connectors.errors import FrameError
from connectors.events import AssetCtx, Bbo, BookSnapshot, Candle, Mid, Trades
from connectors.files import ReplayStats, read_events
from connectors.parse import GREETING, FrameParser, decode_line, iso_to_ns, peek_time_ms
from connectors.validate import ValidationConfig
from tests.conftest import real_file

PROBE = "captures/probe_frames_20260924.ndjson"
VERBATIM = "captures/verbatim_frames_20260903.ndjson"
HFT_BTC = "captures/hftbacktest_BTC_20250126.txt"

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _parser(coins: frozenset[str] | None = None) -> FrameParser:
    """A parser without the price-continuity guard: these tests check one frame at a time with
    made-up prices (the guard and the first-price hold have their own tests in
    test_validate.py)."""
    return FrameParser(
        coins, ValidationConfig(confirm_first_price=False, max_price_jump=float("inf"))
    )


def _parse_file(path: Path, parser: FrameParser) -> list[list[Any]]:
    """Events per line (index 0 = line 1), decoding each line like the replay does."""
    out = []
    for line in path.read_bytes().splitlines():
        recv_ns, frame = decode_line(line)
        out.append(parser.parse(frame, recv_ns))
    return out


def _trade(
    coin: str, side: str, px: str, sz: str, time: int, tid: int, **extra: Any
) -> dict[str, Any]:
    return {"coin": coin, "side": side, "px": px, "sz": sz, "time": time, "tid": tid, **extra}


def _trades_frame(*trades: dict[str, Any]) -> dict[str, Any]:
    return {"channel": "trades", "data": list(trades)}


def _candle_frame(
    t: int, close_t: int, v: str, n: int, *, c: str = "100.0", coin: str = "BTC", i: str = "1m"
) -> dict[str, Any]:
    return {
        "channel": "candle",
        "data": {
            "t": t,
            "T": close_t,
            "s": coin,
            "i": i,
            "o": "100.0",
            "c": c,
            "h": "101.0",
            "l": "99.0",
            "v": v,
            "n": n,
        },
    }


def _bbo_frame(coin: str, time: int, bid: str = "1.0", ask: str = "2.0") -> dict[str, Any]:
    return {
        "channel": "bbo",
        "data": {
            "coin": coin,
            "time": time,
            "bbo": [{"px": bid, "sz": "1.0", "n": 1}, {"px": ask, "sz": "1.0", "n": 1}],
        },
    }


def _ms(ms: int) -> int:
    """A receive time in ns for a receive time in ms."""
    return ms * 1_000_000


# --------------------------------------------------------------------------------------------
# Real frames: probe capture (2026-09-24)
# --------------------------------------------------------------------------------------------


def test_probe_frames_every_channel_and_control() -> None:
    parser = _parser()
    per_line = _parse_file(real_file(PROBE), parser)
    assert len(per_line) == 18
    # Lines 1-4, 13-18 are control traffic: no events.
    for lineno in (1, 2, 3, 4, 12, 13, 14, 15, 16, 17, 18):
        assert per_line[lineno - 1] == [], f"line {lineno}"

    [btc] = per_line[4]
    assert isinstance(btc, BookSnapshot)
    assert (btc.coin, btc.time_ms, btc.recv_ms) == ("BTC", 1790232236546, None)
    assert btc.bid_px == (84143.0, 84142.0, 84141.0)
    assert btc.bid_sz == (10.25923, 1.65875, 1.12923)
    assert btc.bid_n == (36.0, 7.0, 2.0)
    assert btc.ask_px == (84144.0, 84150.0, 84151.0)
    assert btc.ask_sz == (50.66449, 0.00711, 0.01782)
    assert btc.ask_n == (18.0, 2.0, 1.0)
    assert btc.has_top
    assert btc.error is None

    [kpepe] = per_line[5]
    assert isinstance(kpepe, BookSnapshot)
    assert kpepe.coin == "kPEPE"
    assert kpepe.bid_px == (0.004411, 0.00441, 0.004409)
    assert kpepe.bid_sz == (2058973.0, 7447326.0, 6589982.0)
    assert kpepe.ask_px == (0.004413, 0.004414, 0.004415)

    [sp500] = per_line[6]
    assert isinstance(sp500, BookSnapshot)
    assert (sp500.coin, sp500.time_ms) == ("xyz:SP500", 1790232237073)
    assert sp500.bid_px == (7673.3, 7673.1, 7673.0)
    assert sp500.ask_px == (7673.4, 7673.6, 7673.7)

    [matic] = per_line[7]
    assert isinstance(matic, BookSnapshot)
    assert (matic.coin, matic.time_ms) == ("MATIC", 1790232237073)
    assert matic.bid_px == ()
    assert matic.ask_px == ()
    assert matic.bid_sz == ()
    assert matic.ask_sz == ()
    assert not matic.has_top
    assert matic.error is None

    assert per_line[8] == [
        Bbo("BTC", 1790232237145, None, 84143.0, 10.25923, 84144.0, 50.66422),
    ]
    # activeAssetCtx has no time and this file no receive time: the latest exchange time before
    # it is the bbo's (line 9).
    assert per_line[9] == [
        AssetCtx(
            coin="BTC",
            time_ms=1790232237145,
            recv_ms=None,
            funding_1h=0.0000018952,
            open_interest=36585.31848,
            mark_px=84148.0,
            oracle_px=84198.0,
            mid_px=84143.5,
            premium=-0.0006413454,
            impact_bid_px=84143.0,
            impact_ask_px=84144.0,
            day_ntl_vlm=4161029539.6949653625,
            prev_day_px=86627.0,
        )
    ]
    [trades] = per_line[10]
    assert trades == Trades(
        coin="BTC",
        time_ms=1790232216193,
        recv_ms=None,
        prints=((84143.0, 0.00036, -1),),
        buy_sz=0.0,
        sell_sz=0.00036,
        buy_ntl=0.0,
        sell_ntl=84143.0 * 0.00036,
        high_px=84143.0,
        low_px=84143.0,
    )
    # Line 12 is an open 1m candle (T=...239999 is after every time seen): nothing yet.
    assert per_line[11] == []

    assert dict(parser.frames) == {
        "l2Book": 4,
        "bbo": 1,
        "activeAssetCtx": 1,
        "trades": 1,
        "candle": 1,
    }
    # Client requests: subscribe x2 (lines 1-2), ping (13), post (15).
    assert dict(parser.control) == {
        "client_request": 4,
        "subscriptionResponse": 2,
        "pong": 1,
        "error": 2,
        "post": 1,
    }
    assert parser.duplicates == 0
    assert parser.latest_ms == 1790232237145
    assert parser.seen_coins == {"BTC", "kPEPE", "xyz:SP500", "MATIC"}


def test_verbatim_frames_every_channel_and_control() -> None:
    parser = _parser()
    per_line = _parse_file(real_file(VERBATIM), parser)
    assert len(per_line) == 11

    assert per_line[0] == [Bbo("BTC", 1788490065008, None, 80639.0, 0.00186, 80640.0, 13.74589)]
    [matic_bbo] = per_line[1]
    assert matic_bbo == Bbo("MATIC", 1788490065008, None, None, None, None, None)
    assert not matic_bbo.has_top

    assert per_line[2] == [
        AssetCtx(
            coin="BTC",
            time_ms=1788490065008,
            recv_ms=None,
            funding_1h=0.0000052974,
            open_interest=36295.80812,
            mark_px=80640.0,
            oracle_px=80684.7,
            mid_px=80639.5,
            premium=-0.0005540084,
            impact_bid_px=80637.2,
            impact_ask_px=80640.0,
            day_ntl_vlm=4490636699.3287734985,
            prev_day_px=77759.0,
        )
    ]
    assert per_line[3] == [
        AssetCtx(
            coin="MATIC",
            time_ms=1788490065008,
            recv_ms=None,
            funding_1h=0.0,
            open_interest=0.0,
            mark_px=0.37621,
            oracle_px=0.3754,
            mid_px=None,
            premium=None,
            impact_bid_px=None,
            impact_ask_px=None,
            day_ntl_vlm=0.0,
            prev_day_px=0.37621,
        )
    ]
    assert per_line[4] == [
        Trades(
            coin="BTC",
            time_ms=1788490042052,
            recv_ms=None,
            prints=((80639.0, 0.00022, -1), (80640.0, 0.00404, 1)),
            buy_sz=0.00404,
            sell_sz=0.00022,
            buy_ntl=80640.0 * 0.00404,
            sell_ntl=80639.0 * 0.00022,
            high_px=80640.0,
            low_px=80639.0,
        )
    ]
    # The 1m candle (T = 1788490079999) is still open at line 6 ...
    assert per_line[5] == []
    # ... and closes when the MATIC book (time 1788490374938) moves the clock past its T.
    book, candle = per_line[6]
    assert isinstance(book, BookSnapshot)
    assert (book.coin, book.time_ms, book.bid_px, book.ask_px) == ("MATIC", 1788490374938, (), ())
    assert not book.has_top
    assert candle == Candle(
        coin="BTC",
        time_ms=1788490079999,
        recv_ms=None,
        interval="1m",
        open_ms=1788490020000,
        o=80640.0,
        h=80641.0,
        low=80639.0,
        c=80640.0,
        v=2.20493,
        n=61,
    )
    for lineno in (8, 9, 10, 11):
        assert per_line[lineno - 1] == []
    assert dict(parser.frames) == {
        "bbo": 2,
        "activeAssetCtx": 2,
        "trades": 1,
        "candle": 1,
        "l2Book": 1,
    }
    assert dict(parser.control) == {"subscriptionResponse": 2, "pong": 1, "error": 1}


def test_greeting_line_is_control_traffic() -> None:
    parser = _parser()
    for line in (b"Websocket connection established.", b'"Websocket connection established."'):
        recv_ns, frame = decode_line(line)
        assert (recv_ns, frame) == (None, GREETING)
        assert parser.parse(frame) == []
    assert dict(parser.control) == {"greeting": 2}
    assert sum(parser.frames.values()) == 0


def test_hftbacktest_first_line_receive_ns() -> None:
    first = real_file(HFT_BTC).read_bytes().split(b"\n", 1)[0]
    recv_ns, frame = decode_line(first)
    assert recv_ns == 1737918843893903000
    assert frame["channel"] == "l2Book"
    [book] = _parser().parse(frame, recv_ns)
    assert isinstance(book, BookSnapshot)
    assert book.recv_ms == 1737918843893
    assert book.coin == "BTC"
    assert book.bid_px[:3] == (105055.0, 105054.0, 105053.0)
    assert book.bid_n[:3] == (5.0, 1.0, 2.0)
    assert book.ask_px[:2] == (105056.0, 105057.0)
    assert len(book.bid_px) == len(book.ask_px) == 20


# --------------------------------------------------------------------------------------------
# Trades
# --------------------------------------------------------------------------------------------


def test_trade_sides_group_by_time_and_aggregates() -> None:
    parser = _parser()
    frame = _trades_frame(
        _trade("BTC", "B", "100.5", "2", 1000, 1),
        _trade("BTC", "A", "100.0", "1.25", 1000, 2),
        _trade("BTC", "B", "101.25", "0.5", 1000, 3),
        _trade("BTC", "A", "99.75", "3", 1001, 4),
    )
    first, second = parser.parse(frame, _ms(1500))
    assert first == Trades(
        coin="BTC",
        time_ms=1000,
        recv_ms=1500,
        prints=((100.5, 2.0, 1), (100.0, 1.25, -1), (101.25, 0.5, 1)),
        buy_sz=2.5,
        sell_sz=1.25,
        buy_ntl=251.625,  # 100.5*2 + 101.25*0.5
        sell_ntl=125.0,
        high_px=101.25,
        low_px=100.0,
    )
    assert (first.first_px, first.last_px) == (100.5, 101.25)
    assert second == Trades(
        "BTC", 1001, 1500, ((99.75, 3.0, -1),), 0.0, 3.0, 0.0, 299.25, 99.75, 99.75
    )
    assert parser.latest_ms == 1001
    assert parser.frames["trades"] == 1


def test_trades_of_several_coins_in_one_frame() -> None:
    frame = _trades_frame(
        _trade("ETH", "B", "2000", "1", 5, 1),
        _trade("SOL", "A", "150", "2", 5, 1),
        _trade("ETH", "A", "1999", "3", 5, 2),
    )
    eth, sol = _parser().parse(frame)
    assert (eth.coin, eth.buy_sz, eth.sell_sz, eth.high_px, eth.low_px) == (
        "ETH",
        1.0,
        3.0,
        2000.0,
        1999.0,
    )
    assert (sol.coin, sol.buy_sz, sol.sell_sz, sol.sell_ntl) == ("SOL", 0.0, 2.0, 300.0)


def test_trade_prices_parsed_exactly_from_strings() -> None:
    [ev] = _parser().parse(_trades_frame(_trade("kPEPE", "B", "0.004411", "2058973.0", 7, 9)))
    assert ev.prints == ((0.004411, 2058973.0, 1),)
    assert ev.buy_ntl == 0.004411 * 2058973.0


@pytest.mark.parametrize("side", ["b", "s", "S", "", None, "BUY", 1])
def test_unknown_trade_side_is_bad_trades(side: Any) -> None:
    frame = _trades_frame(_trade("BTC", side, "100", "1", 1, 1))
    with pytest.raises(FrameError) as info:
        _parser().parse(frame)
    assert info.value.reason == "bad_trades"


@pytest.mark.parametrize(
    ("px", "sz"),
    [
        ("abc", "1"),
        ("100", "abc"),
        ("0", "1"),
        ("-1", "1"),
        ("100", "-0.5"),
        ("nan", "1"),
        (None, "1"),
    ],
)
def test_garbage_trade_numbers_are_bad_trades(px: Any, sz: Any) -> None:
    with pytest.raises(FrameError) as info:
        _parser().parse(_trades_frame(_trade("BTC", "B", px, sz, 1, 1)))
    # Unreadable numbers are bad_trades; readable but impossible ones say which rule failed.
    assert info.value.reason in ("bad_trades", "bad_price", "bad_size")
    if px in ("0", "-1"):
        assert info.value.reason == "bad_price"
    if sz == "-0.5":
        assert info.value.reason == "bad_size"


@pytest.mark.parametrize(
    ("px", "sz"), [("inf", "1"), ("Infinity", "1"), ("1e400", "1"), ("1", "inf")]
)
def test_non_finite_trade_numbers_are_bad_trades(px: str, sz: str) -> None:
    # A non-finite price or size would make every notional/VWAP downstream inf.
    with pytest.raises(FrameError) as info:
        _parser().parse(_trades_frame(_trade("BTC", "B", px, sz, 1, 1)))
    assert info.value.reason == ("bad_size" if sz == "inf" else "bad_price")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (_bbo_frame("BTC", 1, bid="inf"), "bad_price"),
        (_bbo_frame("BTC", 1, ask="nan"), "bad_price"),
        (_candle_frame(0, 59999, "inf", 1), "bad_size"),
        ({"channel": "allMids", "data": {"mids": {"BTC": "nan"}}}, "bad_price"),
    ],
)
def test_non_finite_numbers_in_other_channels(frame: dict[str, Any], reason: str) -> None:
    with pytest.raises(FrameError) as info:
        _parser(coins=frozenset({"BTC"})).parse(frame, _ms(60000))
    assert info.value.reason == reason


def test_non_finite_ctx_number_is_bad_ctx() -> None:
    frame = orjson.loads(orjson.dumps(CTX_ETH))
    frame["data"]["ctx"]["openInterest"] = "inf"
    with pytest.raises(FrameError) as info:
        _parser().parse(frame, _ms(1))
    assert info.value.reason == "bad_size"


@pytest.mark.parametrize("data", [{"coin": "BTC"}, "x", None, [{"coin": "BTC", "side": "B"}]])
def test_malformed_trades_payload_is_bad_trades(data: Any) -> None:
    with pytest.raises(FrameError) as info:
        _parser().parse({"channel": "trades", "data": data})
    assert info.value.reason == "bad_trades"


def test_trades_dedupe_replayed_frame() -> None:
    parser = _parser()
    frame = _trades_frame(
        _trade("BTC", "B", "100", "1", 1000, 11),
        _trade("BTC", "A", "101", "2", 1000, 12),
        _trade("BTC", "A", "102", "3", 1001, 13),
    )
    first = parser.parse(frame)
    assert [len(e.prints) for e in first] == [2, 1]
    assert parser.duplicates == 0
    # The exchange's replay on re-subscribe: the same trades again, plus one new one.
    again = parser.parse(_trades_frame(*frame["data"], _trade("BTC", "B", "103", "4", 1002, 14)))
    assert again == [
        Trades("BTC", 1002, None, ((103.0, 4.0, 1),), 4.0, 0.0, 412.0, 0.0, 103.0, 103.0)
    ]
    assert parser.duplicates == 3
    assert parser.parse(frame) == []
    assert parser.duplicates == 6
    assert parser.frames["trades"] == 3


def test_same_tid_different_time_or_coin_is_not_duplicate() -> None:
    parser = _parser()
    parser.parse(_trades_frame(_trade("ETH", "B", "1", "1", 1000, 77)))
    later = parser.parse(_trades_frame(_trade("ETH", "B", "1", "1", 1001, 77)))
    other = parser.parse(_trades_frame(_trade("SOL", "B", "1", "1", 1000, 77)))
    assert [e.time_ms for e in later] == [1001]
    assert [e.coin for e in other] == ["SOL"]
    assert parser.duplicates == 0


def test_dedupe_memory_is_bounded_and_keeps_recent_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    # Patched where the trades parser reads it (connectors.parse only re-exports it).
    monkeypatch.setattr(trades_mod, "DEDUPE_CAPACITY", 4)
    parser = _parser()
    for tid in range(1, 6):
        assert len(parser.parse(_trades_frame(_trade("BTC", "B", "1", "1", tid, tid)))) == 1
    # Over capacity (5 > 4): the oldest keys were dropped down to half the capacity.
    assert parser.parse(_trades_frame(_trade("BTC", "B", "1", "1", 5, 5))) == []
    assert parser.parse(_trades_frame(_trade("BTC", "B", "1", "1", 4, 4))) == []
    assert parser.duplicates == 2
    assert len(parser.parse(_trades_frame(_trade("BTC", "B", "1", "1", 1, 1)))) == 1
    # Per coin: another coin's keys neither evict BTC's nor count against them.
    for tid in range(10, 14):
        assert len(parser.parse(_trades_frame(_trade("ETH", "B", "1", "1", tid, tid)))) == 1
    assert parser.parse(_trades_frame(_trade("BTC", "B", "1", "1", 1, 1))) == []


def test_events_survive_pickling() -> None:
    frame = {
        "channel": "l2Book",
        "data": {
            "coin": "BTC",
            "time": 5,
            "levels": [[{"px": "100", "sz": "1", "n": 2}], [{"px": "101", "sz": "3", "n": 1}]],
        },
    }
    [book] = _parser().parse(frame, _ms(6))
    copy = pickle.loads(pickle.dumps(book))
    assert (copy.coin, copy.time_ms, copy.recv_ms) == ("BTC", 5, 6)
    assert (copy.bid_px, copy.bid_sz, copy.bid_n) == ((100.0,), (1.0,), (2.0,))
    assert (copy.ask_px, copy.ask_sz, copy.ask_n) == ((101.0,), (3.0,), (1.0,))
    bad = BookSnapshot("BTC", 5, None, ([{"px": "x", "sz": "1"}], []))
    bad_copy = pickle.loads(pickle.dumps(bad))
    assert bad_copy.bid_px == ()
    assert bad_copy.error is not None
    [trades] = _parser().parse(_trades_frame(_trade("BTC", "A", "2", "3", 1, 1)))
    assert pickle.loads(pickle.dumps(trades)) == trades


def _raw_live_trades(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with gzip.open(path, "rb") as fh:
        for line in fh:
            frame = orjson.loads(line)["raw"]
            if frame["channel"] == "trades":
                out.extend(frame["data"])
    return out


def test_live_capture_duplicates_and_volume_by_side(live_capture: Path) -> None:
    # Independent computation from the raw lines.
    seen: set[tuple[str, int, int]] = set()
    expected_dups = 0
    expected_prints = 0
    volume: dict[tuple[str, str], float] = defaultdict(float)
    notional: dict[tuple[str, str], float] = defaultdict(float)
    for tr in _raw_live_trades(live_capture):
        key = (tr["coin"], tr["tid"], tr["time"])
        if key in seen:
            expected_dups += 1
            continue
        seen.add(key)
        expected_prints += 1
        volume[(tr["coin"], tr["side"])] += float(tr["sz"])
        notional[(tr["coin"], tr["side"])] += float(tr["px"]) * float(tr["sz"])
    assert expected_dups > 0  # the capture does carry repeats (README)
    assert {side for _, side in volume} == {"A", "B"}

    stats = ReplayStats()
    events = read_events([live_capture], stats)
    assert stats.parser.duplicates == expected_dups
    trades = [e for e in events if isinstance(e, Trades)]
    assert sum(len(e.prints) for e in trades) == expected_prints

    got_vol: dict[tuple[str, str], float] = defaultdict(float)
    got_ntl: dict[tuple[str, str], float] = defaultdict(float)
    for e in trades:
        got_vol[(e.coin, "B")] += e.buy_sz
        got_vol[(e.coin, "A")] += e.sell_sz
        got_ntl[(e.coin, "B")] += e.buy_ntl
        got_ntl[(e.coin, "A")] += e.sell_ntl
        assert sum(sz for _, sz, s in e.prints if s > 0) == pytest.approx(e.buy_sz, rel=1e-12)
        assert e.low_px == min(px for px, _, _ in e.prints)
        assert e.high_px == max(px for px, _, _ in e.prints)
    assert set(got_vol) == set(volume)
    for key, vol in volume.items():
        assert vol > 0, key
        assert got_vol[key] == pytest.approx(vol, rel=1e-9), key
        assert got_ntl[key] == pytest.approx(notional[key], rel=1e-9), key
    assert {e.coin for e in trades} == {"BTC", "ETH", "SOL"}


# --------------------------------------------------------------------------------------------
# Candles
# --------------------------------------------------------------------------------------------


def test_live_candle_pushes_emit_final_push_once_at_close() -> None:
    parser = _parser()
    # Bucket [60000, 119999] pushed three times while open.
    assert parser.parse(_candle_frame(60000, 119999, "1.0", 1), _ms(61000)) == []
    assert parser.parse(_candle_frame(60000, 119999, "2.0", 3), _ms(90000)) == []
    assert parser.parse(_candle_frame(60000, 119999, "3.5", 5, c="100.5"), _ms(119000)) == []
    # The first push of the next bucket closes it: the final push, stamped at T.
    out = parser.parse(_candle_frame(120000, 179999, "0.5", 1), _ms(120500))
    assert out == [
        Candle("BTC", 119999, 119000, "1m", 60000, 100.0, 101.0, 99.0, 100.5, 3.5, 5),
    ]
    # A late re-push of the emitted bucket is ignored.
    assert parser.parse(_candle_frame(60000, 119999, "9.9", 9), _ms(121000)) == []
    assert parser.parse(_candle_frame(120000, 179999, "0.75", 2), _ms(130000)) == []
    # A later frame (any channel) past the open candle's T closes it.
    out = parser.parse(_trades_frame(_trade("BTC", "B", "100", "1", 180100, 1)), _ms(180200))
    assert [type(e) for e in out] == [Trades, Candle]
    assert out[1] == Candle("BTC", 179999, 130000, "1m", 120000, 100.0, 101.0, 99.0, 100.0, 0.75, 2)
    # ... once: another push of that bucket and another late frame change nothing.
    assert parser.parse(_candle_frame(120000, 179999, "0.8", 3), _ms(181000)) == []
    assert parser.parse(_bbo_frame("BTC", 181500), _ms(181600)) == [
        Bbo("BTC", 181500, 181600, 1.0, 1.0, 2.0, 1.0)
    ]
    assert parser.frames["candle"] == 7


def test_closed_candle_file_emits_each_candle_at_once() -> None:
    parser = _parser()
    # Files of closed candles: received just after T.
    out1 = parser.parse(_candle_frame(0, 299999, "24.16464", 0, i="5m"), _ms(300000))
    out2 = parser.parse(_candle_frame(300000, 599999, "16.5", 0, i="5m"), _ms(600000))
    assert out1 == [Candle("BTC", 299999, 300000, "5m", 0, 100.0, 101.0, 99.0, 100.0, 24.16464, 0)]
    assert out2 == [Candle("BTC", 599999, 600000, "5m", 300000, 100.0, 101.0, 99.0, 100.0, 16.5, 0)]
    # Re-push of an emitted bucket: ignored.
    assert parser.parse(_candle_frame(300000, 599999, "16.5", 0, i="5m"), _ms(600001)) == []


def test_candle_intervals_and_coins_are_independent() -> None:
    parser = _parser()
    assert parser.parse(_candle_frame(0, 59999, "1", 1), _ms(1000)) == []
    assert parser.parse(_candle_frame(0, 299999, "1", 1, i="5m"), _ms(1000)) == []
    assert parser.parse(_candle_frame(0, 59999, "1", 1, coin="ETH"), _ms(1000)) == []
    out = parser.parse(_candle_frame(60000, 119999, "2", 2), _ms(60001))
    # The new 1m BTC bucket closes the previous 1m BTC bucket; the ETH 1m bucket (T 59999) is
    # due too on this frame's receive time; the 5m bucket stays open.
    assert sorted((c.coin, c.interval, c.open_ms) for c in out) == [
        ("BTC", "1m", 0),
        ("ETH", "1m", 0),
    ]


def test_candle_array_form_is_tolerated() -> None:
    frame = _candle_frame(0, 59999, "1", 1)
    frame["data"] = [frame["data"]]
    [c] = _parser().parse(frame, _ms(60000))
    assert (c.open_ms, c.time_ms, c.v) == (0, 59999, 1.0)


@pytest.mark.parametrize(
    "patch",
    [{"t": None}, {"T": "59999"}, {"T": -1}, {"o": "abc"}, {"v": None}],
)
def test_bad_candle(patch: dict[str, Any]) -> None:
    frame = _candle_frame(0, 59999, "1", 1)
    frame["data"].update(patch)
    with pytest.raises(FrameError) as info:
        _parser().parse(frame, _ms(60000))
    assert info.value.reason == ("bad_time" if patch == {"T": "59999"} else "bad_candle")


# --------------------------------------------------------------------------------------------
# allMids, activeAssetCtx, untimed frames, coin filter
# --------------------------------------------------------------------------------------------

MIDS = {
    "channel": "allMids",
    "data": {"mids": {"BTC": "69172.5", "ETH": "2500.25", "@107": "69.4"}},
}
CTX_ETH = {
    "channel": "activeAssetCtx",
    "data": {
        "coin": "ETH",
        "ctx": {
            "funding": "0.0000125",
            "openInterest": "1000.5",
            "oraclePx": "2500.0",
            "markPx": "2500.5",
            "midPx": "2500.25",
            "premium": "0.0001",
            "impactPxs": ["2500.0", "2500.5"],
        },
    },
}


def test_all_mids_with_coin_filter() -> None:
    parser = _parser(coins=frozenset({"ETH", "BTC", "DOGE"}))
    out = parser.parse(MIDS, _ms(5000))
    assert out == [Mid("BTC", 5000, 5000, 69172.5), Mid("ETH", 5000, 5000, 2500.25)]


def test_all_mids_without_filter_only_seen_coins() -> None:
    parser = _parser()
    assert parser.parse(MIDS, _ms(5000)) == []
    parser.parse(_bbo_frame("ETH", 6000), _ms(6000))
    assert parser.parse(MIDS, _ms(7000)) == [Mid("ETH", 7000, 7000, 2500.25)]
    parser.parse(_trades_frame(_trade("BTC", "B", "1", "1", 7100, 1)), _ms(7100))
    assert [m.coin for m in parser.parse(MIDS, _ms(8000))] == ["BTC", "ETH"]


def test_untimed_frames_take_latest_exchange_time() -> None:
    parser = _parser()
    parser.parse(_bbo_frame("ETH", 4000))
    parser.parse(_bbo_frame("ETH", 3000))  # older: latest stays 4000
    [ctx] = parser.parse(CTX_ETH)
    assert (ctx.time_ms, ctx.recv_ms) == (4000, None)
    assert ctx == AssetCtx(
        "ETH",
        4000,
        None,
        0.0000125,
        1000.5,
        2500.5,
        2500.0,
        2500.25,
        0.0001,
        2500.0,
        2500.5,
        0.0,
        0.0,
    )
    assert parser.parse(MIDS) == [Mid("ETH", 4000, None, 2500.25)]
    # With a receive time, that wins.
    [ctx] = parser.parse(CTX_ETH, _ms(9000))
    assert (ctx.time_ms, ctx.recv_ms) == (9000, 9000)


@pytest.mark.parametrize(
    ("frame", "reason"), [(MIDS, "untimed_allMids"), (CTX_ETH, "untimed_activeAssetCtx")]
)
def test_untimed_frame_without_any_clock_raises(frame: dict[str, Any], reason: str) -> None:
    parser = _parser(coins=frozenset({"ETH"}))
    with pytest.raises(FrameError) as info:
        parser.parse(frame)
    assert info.value.reason == reason


def test_coin_filter_drops_other_coins_and_counts() -> None:
    parser = _parser(coins=frozenset({"BTC"}))
    book = {"channel": "l2Book", "data": {"coin": "ETH", "time": 10, "levels": [[], []]}}
    assert parser.parse(book, _ms(10)) == []
    assert parser.parse(_bbo_frame("ETH", 11), _ms(11)) == []
    assert parser.parse(CTX_ETH, _ms(12)) == []
    assert parser.parse(_candle_frame(0, 5, "1", 1, coin="ETH"), _ms(13)) == []
    out = parser.parse(
        _trades_frame(
            _trade("ETH", "B", "1", "1", 14, 1),
            _trade("BTC", "A", "2", "1", 14, 2),
            _trade("SOL", "A", "2", "1", 15, 3),
        ),
        _ms(15),
    )
    assert [(e.coin, e.time_ms) for e in out] == [("BTC", 14)]
    assert parser.ignored_coin == 6
    assert parser.seen_coins == {"BTC"}
    assert parser.parse(_bbo_frame("BTC", 16), _ms(16)) == [Bbo("BTC", 16, 16, 1.0, 1.0, 2.0, 1.0)]
    assert parser.ignored_coin == 6
    assert parser.latest_ms == 16


# --------------------------------------------------------------------------------------------
# Garbage frames
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (
            {
                "channel": "bbo",
                "data": {"coin": "BTC", "time": 1, "bbo": [{"px": "abc", "sz": "1"}, None]},
            },
            "bad_bbo",
        ),
        ({"channel": "bbo", "data": {"coin": "BTC", "time": "1", "bbo": [None, None]}}, "bad_time"),
        ({"channel": "bbo", "data": {"coin": "BTC", "time": 1, "bbo": [None]}}, "bad_bbo"),
        ({"channel": "bbo"}, "bad_bbo"),
        ({"channel": "l2Book", "data": {"coin": "BTC", "time": 1, "levels": [[]]}}, "bad_l2Book"),
        (
            {"channel": "l2Book", "data": {"coin": "BTC", "time": None, "levels": [[], []]}},
            "bad_time",
        ),
        (
            {"channel": "l2Book", "data": {"coin": "BTC", "time": 1, "levels": [{}, []]}},
            "bad_l2Book",
        ),
        ({"channel": "allMids", "data": {"mids": ["BTC"]}}, "bad_allMids"),
        (
            {"channel": "activeAssetCtx", "data": {"coin": "BTC", "ctx": {"funding": "x"}}},
            "bad_activeAssetCtx",
        ),
    ],
)
def test_garbage_frames_raise_frame_error(frame: dict[str, Any], reason: str) -> None:
    with pytest.raises(FrameError) as info:
        _parser().parse(frame, _ms(1))
    assert info.value.reason == reason


def test_bad_all_mids_price() -> None:
    parser = _parser(coins=frozenset({"BTC"}))
    with pytest.raises(FrameError) as info:
        parser.parse({"channel": "allMids", "data": {"mids": {"BTC": "abc"}}}, _ms(1))
    assert info.value.reason == "bad_allMids"


def test_book_with_bad_level_is_lazy_error() -> None:
    frame = {
        "channel": "l2Book",
        "data": {
            "coin": "BTC",
            "time": 5,
            "levels": [[{"px": "abc", "sz": "1", "n": 1}], [{"px": "101", "sz": "1", "n": 1}]],
        },
    }
    # Levels are checked at the edge: an unreadable one rejects the frame.
    with pytest.raises(FrameError) as info:
        _parser().parse(frame)
    assert info.value.reason == "bad_l2Book"
    # A snapshot built from such levels elsewhere still reads as empty instead of crashing.
    book = BookSnapshot("BTC", 5, None, tuple(frame["data"]["levels"]))  # type: ignore[arg-type]
    assert book.error is None
    assert book.bid_px == ()
    assert not book.has_top
    assert book.error is not None
    assert book.error.startswith("unreadable level")


@pytest.mark.parametrize("channel", ["nope", "activeSpotAssetCtx", 7])
def test_unknown_channel(channel: Any) -> None:
    with pytest.raises(FrameError) as info:
        _parser().parse({"channel": channel, "data": {}})
    assert info.value.reason == "unknown_channel"


@pytest.mark.parametrize("channel", [["trades"], {"x": 1}])
def test_unhashable_channel_is_frame_error(channel: Any) -> None:
    # A JSON frame whose channel is an array or object must be skipped like any bad frame, not
    # crash the replay with a TypeError (files.py only catches FrameError).
    with pytest.raises(FrameError):
        _parser().parse({"channel": channel, "data": {}})


@pytest.mark.parametrize("frame", [{"data": {}}, [1, 2], 5, "hello"])
def test_unknown_frame(frame: Any) -> None:
    with pytest.raises(FrameError) as info:
        _parser().parse(frame)
    assert info.value.reason == "unknown_frame"


# --------------------------------------------------------------------------------------------
# decode_line
# --------------------------------------------------------------------------------------------


def test_decode_bare_frame() -> None:
    assert decode_line(b'{"channel":"pong"}') == (None, {"channel": "pong"})
    assert decode_line(b'{"channel":"pong"}\r') == (None, {"channel": "pong"})


def test_decode_archive_envelope_exact_ns() -> None:
    line = (
        b'{"time": "2025-09-04T19:46:56.673877954", "ver_num": 1, '
        b'"raw": {"channel": "bbo", "data": {"coin": "BTC", "time": 1757015216600, '
        b'"bbo": [{"px": "109741.0", "sz": "0.5", "n": 1}, null]}}}'
    )
    recv_ns, frame = decode_line(line)
    whole = int(datetime(2025, 9, 4, 19, 46, 56, tzinfo=UTC).timestamp())
    assert recv_ns == whole * 1_000_000_000 + 673_877_954 == 1757015216673877954
    assert frame["channel"] == "bbo"
    [bbo] = _parser().parse(frame, recv_ns)
    assert bbo == Bbo("BTC", 1757015216600, 1757015216673, 109741.0, 0.5, None, None)


def test_decode_envelope_without_ver_num_is_a_bare_object() -> None:
    obj = {"time": "2025-09-04T19:46:56", "raw": {"channel": "pong"}}
    assert decode_line(orjson.dumps(obj)) == (None, obj)


def test_decode_envelope_with_int_or_missing_time() -> None:
    assert decode_line(b'{"time": 123, "ver_num": 1, "raw": {"channel": "pong"}}') == (
        123,
        {"channel": "pong"},
    )
    assert decode_line(b'{"ver_num": 1, "raw": {"channel": "pong"}}') == (None, {"channel": "pong"})


def test_decode_recv_ns_prefix() -> None:
    assert decode_line(b'1737918843893903000 {"channel":"pong"}') == (
        1737918843893903000,
        {"channel": "pong"},
    )


@pytest.mark.parametrize(
    "line",
    [
        b"{bad json",
        b'{"channel": "pong"',
        b"12345",
        b"12a45 {}",
        b"123 {bad",
        b"hello world",
        b"",
        b"[1, 2]",
    ],
)
def test_decode_malformed_is_invalid_json(line: bytes) -> None:
    with pytest.raises(FrameError) as info:
        decode_line(line)
    assert info.value.reason == "invalid_json"


def test_decode_bad_envelope_time() -> None:
    with pytest.raises(FrameError) as info:
        decode_line(b'{"time": "yesterday", "ver_num": 1, "raw": {"channel": "pong"}}')
    assert info.value.reason == "bad_receive_time"


# --------------------------------------------------------------------------------------------
# iso_to_ns
# --------------------------------------------------------------------------------------------

STAMP_NS = 1757015216673877954  # 2025-09-04T19:46:56.673877954Z


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2025-09-04T19:46:56.673877954", STAMP_NS),
        ("2025-09-04T19:46:56.673877954Z", STAMP_NS),
        ("2025-09-04T19:46:56.673877954+00:00", STAMP_NS),
        ("2025-09-04T19:46:56", 1757015216000000000),
        ("2025-09-04T19:46:56Z", 1757015216000000000),
        ("2025-09-04T19:46:56+00:00", 1757015216000000000),
        ("2025-09-04T19:46:56.5", 1757015216500000000),
        ("2025-09-04T19:46:56.000001", 1757015216000001000),
        ("1970-01-01T00:00:01.5", 1_500_000_000),
        ("1970-01-01T00:00:00", 0),
        # More than 9 fraction digits: truncated to ns.
        ("2025-09-04T19:46:56.6738779549", STAMP_NS),
        # Fallback forms (datetime.fromisoformat: µs precision).
        ("2025-09-04T21:46:56.673877+02:00", 1757015216673877000),
        ("2025-09-04T15:46:56.673877-04:00", 1757015216673877000),
        ("2025-09-04 19:46:56.673877", 1757015216673877000),
        ("2025-09-04 19:46:56+00:00", 1757015216000000000),
        ("2025-09-04", 1756944000000000000),
    ],
)
def test_iso_to_ns(stamp: str, expected: int) -> None:
    assert iso_to_ns(stamp) == expected
    assert iso_to_ns(stamp) == expected  # served from the second cache the 2nd time


def test_iso_to_ns_same_second_different_fractions() -> None:
    base = 1757015216000000000
    for frac, ns in ((".1", 100_000_000), (".000000001", 1), (".999999999", 999_999_999), ("", 0)):
        assert iso_to_ns("2025-09-04T19:46:56" + frac) == base + ns


@pytest.mark.parametrize(
    "stamp",
    ["yesterday", "", "2025-13-04T19:46:56", "2025-09-04T19:46:56.", "2025-09-04T19:46:56.12x"],
)
def test_iso_to_ns_rejects_garbage(stamp: str) -> None:
    with pytest.raises(FrameError) as info:
        iso_to_ns(stamp)
    assert info.value.reason == "bad_receive_time"


@pytest.mark.parametrize(
    "stamp",
    [
        "2025-09-04T25:00:00",  # hour 25
        "2025-09-04T12:60:00",  # minute 60
        "2025-09-04T12:00:61",  # second 61
    ],
)
def test_iso_to_ns_rejects_out_of_range_fields(stamp: str) -> None:
    # datetime.fromisoformat rejects each of these; the fast path must not turn them into a
    # silently wrong time.
    with pytest.raises(ValueError, match="must be in"):
        datetime.fromisoformat(stamp)
    with pytest.raises(FrameError) as info:
        iso_to_ns(stamp)
    assert info.value.reason == "bad_receive_time"


def test_iso_to_ns_non_ascii_digit_fraction_is_frame_error() -> None:
    # "\u00b2" passes str.isdigit() but not int(): it must not escape as a ValueError past the
    # replay's FrameError handler.
    with pytest.raises(FrameError) as info:
        iso_to_ns("2025-09-04T19:46:56.\u00b2")
    assert info.value.reason == "bad_receive_time"


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1),  # noqa: DTZ001 - naive on purpose: archive stamps
        max_value=datetime(2099, 12, 31),  # noqa: DTZ001
    )
)
def test_iso_to_ns_equals_datetime_for_microsecond_stamps(d: datetime) -> None:
    exact = (d.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1) * 1000
    assert iso_to_ns(d.isoformat()) == exact
    assert iso_to_ns(d.isoformat() + "Z") == exact
    assert iso_to_ns(d.isoformat() + "+00:00") == exact


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2025-09-04 19:46:56.000101", 1757015216000101000),
        ("1978-08-01T02:00:00.000101+02:00", 270777600000101000),
        ("1978-08-01 00:00:00.000101", 270777600000101000),
    ],
)
def test_iso_to_ns_fallback_is_exact_to_the_microsecond(stamp: str, expected: int) -> None:
    # The fallback path must agree with datetime arithmetic exactly (no float rounding).
    d = datetime.fromisoformat(stamp)
    d = d if d.tzinfo is not None else d.replace(tzinfo=UTC)
    assert (d - EPOCH) // timedelta(microseconds=1) * 1000 == expected
    assert iso_to_ns(stamp) == expected


# --------------------------------------------------------------------------------------------
# peek_time_ms
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (_bbo_frame("BTC", 1788490065008), 1788490065008),
        ({"channel": "l2Book", "data": {"coin": "BTC", "time": 42, "levels": [[], []]}}, 42),
        (_trades_frame(_trade("BTC", "B", "1", "1", 7, 1), _trade("BTC", "B", "1", "1", 9, 2)), 7),
        (_candle_frame(60000, 119999, "1", 1), 119999),
        (MIDS, None),
        (CTX_ETH, None),
        ({"channel": "trades", "data": []}, None),
        ({"channel": "bbo", "data": {"time": "1"}}, None),
        ({"channel": "pong"}, None),
        (GREETING, None),
        (None, None),
    ],
)
def test_peek_time_ms(frame: Any, expected: int | None) -> None:
    assert peek_time_ms(frame) == expected


# --------------------------------------------------------------------------------------------
# Property: valid trades frames never raise and conserve volume by side
# --------------------------------------------------------------------------------------------

_decimal = st.decimals(
    min_value="0.000001", max_value="1000000", places=6, allow_nan=False, allow_infinity=False
)
_trade_st = st.tuples(
    st.sampled_from(["BTC", "ETH", "kPEPE", "xyz:SP500"]),
    st.sampled_from(["A", "B"]),
    _decimal,
    st.one_of(st.just("0"), _decimal.map(str)),
    st.integers(min_value=1_700_000_000_000, max_value=1_700_000_000_005),
)


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.lists(_trade_st, min_size=1, max_size=40))
def test_valid_trades_frames_conserve_volume(rows: list[tuple[str, str, Any, str, int]]) -> None:
    trades = [
        _trade(coin, side, str(px), sz, t, tid) for tid, (coin, side, px, sz, t) in enumerate(rows)
    ]
    parser = _parser()
    events = parser.parse(_trades_frame(*trades))
    assert all(isinstance(e, Trades) for e in events)
    # One event per (coin, time), in first-seen order.
    keys = list(dict.fromkeys((tr["coin"], tr["time"]) for tr in trades))
    assert [(e.coin, e.time_ms) for e in events] == keys
    for e in events:
        mine = [tr for tr in trades if (tr["coin"], tr["time"]) == (e.coin, e.time_ms)]
        assert e.prints == tuple(
            (float(tr["px"]), float(tr["sz"]), 1 if tr["side"] == "B" else -1) for tr in mine
        )
        buy = [float(tr["sz"]) for tr in mine if tr["side"] == "B"]
        sell = [float(tr["sz"]) for tr in mine if tr["side"] == "A"]
        assert e.buy_sz == pytest.approx(sum(buy), rel=1e-12, abs=1e-15)
        assert e.sell_sz == pytest.approx(sum(sell), rel=1e-12, abs=1e-15)
        assert e.high_px == max(float(tr["px"]) for tr in mine)
        assert e.low_px == min(float(tr["px"]) for tr in mine)
    # The same frame again: everything is a duplicate.
    assert parser.parse(_trades_frame(*trades)) == []
    assert parser.duplicates == len(trades)
