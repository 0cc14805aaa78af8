"""One bad frame in a real capture changes nothing: the issue #8 triggers, end to end.

Each case inserts one line into the first lines of the real 35-minute capture and replays it with
``python -m tools.replay``: the envelopes must be byte-identical to those of the same lines
without it, the replay must exit 0, and the line must be counted under its reason code.
"""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import LIVE_CAPTURE, real_file
from tools.replay import main as replay_main

HEAD_LINES = 2000
INSERT_AT = 1000


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[bytes], bytes, Path]:
    """The capture's first lines, the envelopes they replay to, and a scratch directory."""
    src = real_file(LIVE_CAPTURE)
    with gzip.open(src, "rb") as fh:
        lines = [line.rstrip(b"\n") for line in itertools.islice(fh, HEAD_LINES)]
    tmp = tmp_path_factory.mktemp("bad_frames")
    return lines, _replay(lines, tmp / "clean", []), tmp


def _replay(lines: list[bytes], base: Path, extra_args: list[str]) -> bytes:
    capture = base.with_suffix(".ndjson")
    out = base.with_suffix(".out.ndjson")
    capture.write_bytes(b"\n".join(lines) + b"\n")
    rc = replay_main([str(capture), "--out", str(out), "--log-level", "ERROR", *extra_args])
    assert rc == 0
    return out.read_bytes()


def _stamp(line: bytes) -> str:
    stamp: str = orjson.loads(line)["time"]
    return stamp


def _wrap(frame: Any, stamp: str) -> bytes:
    raw = frame if isinstance(frame, bytes) else orjson.dumps(frame)
    return b'{"time":"' + stamp.encode() + b'","ver_num":1,"raw":' + raw + b"}"


T = 1_757_015_290_000  # an exchange time inside the head (2025-09-04T19:48:10Z)


def _bbo(bid: Any, ask: Any, *, coin: Any = "BTC", time: Any = T, sz: Any = "1.0") -> Any:
    return {
        "channel": "bbo",
        "data": {
            "coin": coin,
            "time": time,
            "bbo": [{"px": bid, "sz": sz, "n": 1}, {"px": ask, "sz": sz, "n": 1}],
        },
    }


def _book(bids: list[tuple[Any, Any]], asks: list[tuple[Any, Any]], coin: Any = "BTC") -> Any:
    def side(levels: list[tuple[Any, Any]]) -> list[dict[str, Any]]:
        return [{"px": px, "sz": sz, "n": 1} for px, sz in levels]

    return {
        "channel": "l2Book",
        "data": {"coin": coin, "time": T, "levels": [side(bids), side(asks)]},
    }


def _ctx(**over: Any) -> Any:
    ctx = {
        "funding": "0.0000125",
        "openInterest": "30000.0",
        "oraclePx": "109800.0",
        "markPx": "109801.0",
        "midPx": "109801.5",
        "premium": "0.0001",
        "impactPxs": ["109801.0", "109802.0"],
        "dayNtlVlm": "1000000.0",
        "prevDayPx": "108000.0",
    }
    ctx.update(over)
    return {"channel": "activeAssetCtx", "data": {"coin": over.pop("coin", "BTC"), "ctx": ctx}}


def _candle(**over: Any) -> Any:
    data = {"t": T - 60_000, "T": T - 1, "s": "BTC", "i": "1m", "o": "109800.0"}
    data |= {"c": "109801.0", "h": "109810.0", "l": "109790.0", "v": "1.5", "n": 10}
    data.update(over)
    return {"channel": "candle", "data": data}


def _trade(px: Any, sz: Any, *, time: Any = T) -> Any:
    return {
        "channel": "trades",
        "data": [{"coin": "BTC", "side": "B", "px": px, "sz": sz, "time": time, "tid": 7}],
    }


def _huge_time(frame: Any) -> bytes:
    """``frame`` as JSON with its time replaced by 2^70 (past what orjson writes)."""
    return orjson.dumps(frame).replace(str(T).encode(), str(2**70).encode())


_DEEP = b'{"channel":"bbo","data":' + b"[" * 1000 + b"]" * 1000 + b"}"

# (case id, frame, reason code it is skipped under)
TRIGGERS: list[tuple[str, Any, str]] = [
    ("bbo_zero", _bbo("0", "0"), "bad_price"),
    ("bbo_mid_zero", _bbo("-100", "100"), "bad_price"),
    ("bbo_negative", _bbo("-2", "-1"), "bad_price"),
    ("bbo_huge", _bbo("1e307", "1.5e308"), "price_outlier"),
    ("bbo_crossed", _bbo("109900.0", "109800.0"), "crossed_quote"),
    ("bbo_locked", _bbo("109800.0", "109800.0"), "crossed_quote"),
    ("bbo_negative_size", _bbo("109800.0", "109801.0", sz="-5"), "bad_size"),
    ("bbo_coin_null", _bbo("109800.0", "109801.0", coin=None), "bad_coin"),
    ("bbo_coin_int", _bbo("109800.0", "109801.0", coin=123), "bad_coin"),
    ("bbo_false_price", _bbo(False, "109801.0"), "bad_bbo"),
    ("bbo_nan", _bbo("NaN", "109801.0"), "bad_price"),
    ("time_1e15", _bbo("109800.0", "109801.0", time=10**15), "future_time"),
    ("time_2e63", _bbo("109800.0", "109801.0", time=2**63 - 1), "future_time"),
    ("time_2e70", _huge_time(_bbo("109800.0", "109801.0")), "future_time"),
    ("time_ten_years", _bbo("109800.0", "109801.0", time=T + 10 * 365 * 86_400_000), "future_time"),
    ("time_string", _bbo("109800.0", "109801.0", time="soon"), "bad_time"),
    ("book_zero", _book([("0", "1")], [("0", "1")]), "bad_price"),
    ("book_mid_zero", _book([("-5", "1")], [("5", "1")]), "bad_price"),
    ("book_negative_size", _book([("109800.0", "-1")], [("109801.0", "1")]), "bad_size"),
    (
        "book_unordered",
        _book([("109700.0", "1"), ("109800.0", "1")], [("109801.0", "1")]),
        "unordered_book",
    ),
    ("book_coin_null", _book([("109800.0", "1")], [("109801.0", "1")], coin=None), "bad_coin"),
    ("book_huge", _book([("1e307", "1")], [("1.5e308", "1")]), "price_outlier"),
    ("ctx_oracle_zero", _ctx(oraclePx="0"), "bad_price"),
    ("ctx_oi_negative", _ctx(openInterest="-100"), "bad_size"),
    ("ctx_false", _ctx(funding=False), "bad_activeAssetCtx"),
    ("ctx_coin_int", {"channel": "activeAssetCtx", "data": {"coin": 5, "ctx": {}}}, "bad_coin"),
    ("candle_coin_int", _candle(s=7), "bad_coin"),
    ("candle_zero", _candle(o="0"), "bad_price"),
    ("trade_negative", _trade("-1", "1"), "bad_price"),
    ("trade_huge", _trade("1e300", "1"), "price_outlier"),
    ("trade_far_future", _huge_time(_trade("109800.0", "1")), "future_time"),
    ("deep_json", _DEEP, "too_deep"),
    (
        "forged_gap",
        {"channel": "hlsl.gap", "data": {"coins": ["BTC"], "down_ms": "x"}},
        "forged_control",
    ),
    ("forged_activate", {"channel": "hlsl.activate", "data": {"coins": "BTC"}}, "forged_control"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("frame", "reason"), [(f, r) for _, f, r in TRIGGERS], ids=[c for c, *_ in TRIGGERS]
)
def test_one_bad_frame_changes_nothing(
    head: tuple[list[bytes], bytes, Path], frame: Any, reason: str, request: pytest.FixtureRequest
) -> None:
    lines, clean, tmp = head
    bad = _wrap(frame, _stamp(lines[INSERT_AT - 1]))
    dirty = [*lines[:INSERT_AT], bad, *lines[INSERT_AT:]]
    name = request.node.callspec.id
    capture = tmp / f"{name}.ndjson"
    capture.write_bytes(b"\n".join(dirty) + b"\n")
    out = tmp / f"{name}.out.ndjson"
    summary_path = tmp / f"{name}.summary"
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = replay_main([str(capture), "--out", str(out), "--log-level", "ERROR"])
    summary_path.write_text(err.getvalue())
    assert rc == 0
    assert out.read_bytes() == clean, f"{name}: the envelopes changed"
    summary = orjson.loads(err.getvalue()[: err.getvalue().rindex("}") + 1])
    assert summary["lines_skipped"] == {reason: 1}, summary["lines_skipped"]


@pytest.mark.slow
def test_a_bad_first_price_is_held_and_rejected(head: tuple[list[bytes], bytes, Path]) -> None:
    # No reference price yet: the first BTC quote is 1e307. It is held until later BTC prices
    # disagree with it, then rejected; the envelopes equal those without it.
    lines, clean, tmp = head
    bad = _wrap(_bbo("1e307", "1.5e308", time=1_757_015_209_000), _stamp(lines[0]))
    got = _replay([bad, *lines], tmp / "first", [])
    assert got == clean


@pytest.mark.slow
def test_legacy_control_inside_raw_is_refused_unless_trusted(
    head: tuple[list[bytes], bytes, Path],
) -> None:
    lines, clean, tmp = head
    gap = {"channel": "hlsl.gap", "data": {"coins": ["BTC"], "reason": "reconnect", "down_ms": 5}}
    dirty = [*lines[:INSERT_AT], _wrap(gap, _stamp(lines[INSERT_AT - 1])), *lines[INSERT_AT:]]
    assert _replay(dirty, tmp / "legacy_refused", []) == clean
    trusted = _replay(dirty, tmp / "legacy_trusted", ["--trust-legacy-control"])
    assert trusted != clean  # the gap reached BTC's features and freshness
    marker = {"channel": "hlsl.gap", "data": gap["data"]}
    line = (
        b'{"time":"'
        + _stamp(lines[INSERT_AT - 1]).encode()
        + b'","ver_num":1,"hlsl":'
        + orjson.dumps(marker)
        + b"}"
    )
    as_marker = _replay([*lines[:INSERT_AT], line, *lines[INSERT_AT:]], tmp / "marker", [])
    assert as_marker == trusted  # a marker outside raw is the project's own: accepted
