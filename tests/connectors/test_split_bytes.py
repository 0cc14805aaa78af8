"""The split pass's exact output: a hand-built capture that takes every routing rule splits to
exactly the records pinned in ``tests/golden/split_records.bin``.

`test_partitions` proves the split *means* what the one-partition replay means (events and
counters); this pins its bytes, so a speed-up of `connectors.split` cannot change a record,
a clock hint or a stream's name unnoticed. The capture covers one-coin frames of each channel,
``trades`` frames of several coins or a coin-less row, ``allMids`` before and after activation,
gap and activation markers (valid and not), candles held open, closed by another coin's frame,
replaced and already closed, exchange times the time rules refuse, receive stamps of every form
(and broken ones), bare and ``<ns> <frame>`` lines, blank, torn and undecodable lines, and a
``node_fills_by_block`` capture merged beside it. Regenerate the golden file (only for a change
of output that is meant, with `SPLIT_VERSION` bumped) with
``python -m tests.connectors.test_split_bytes``.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import lz4.frame
import orjson
import pytest

from connectors.split import Splitter
from connectors.validate import TimeCheck, ValidationConfig

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "split_records.bin"

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00 UTC in ms


def stamp(ms: int, frac: str | None = None) -> str:
    s, r = divmod(ms, 1000)
    hh, rem = divmod(s - T0 // 1000, 3600)
    mm, ss = divmod(rem, 60)
    f = frac if frac is not None else f".{r:03d}123456"
    return f"2026-01-01T{hh:02d}:{mm:02d}:{ss:02d}{f}"


def env(ms: int, frame: object, frac: str | None = None) -> bytes:
    return orjson.dumps({"time": stamp(ms, frac), "ver_num": 1, "raw": frame})


def marker(ms: int, channel: str, data: object) -> bytes:
    return orjson.dumps(
        {"time": stamp(ms), "ver_num": 1, "hlsl": {"channel": channel, "data": data}}
    )


def bbo(coin: object, t: object) -> dict:
    return {
        "channel": "bbo",
        "data": {"coin": coin, "time": t, "bbo": [{"px": "1", "sz": "1", "n": 1}, None]},
    }


def book(coin: object, t: object) -> dict:
    return {"channel": "l2Book", "data": {"coin": coin, "time": t, "levels": [[], []]}}


def ctx(coin: object) -> dict:
    return {"channel": "activeAssetCtx", "data": {"coin": coin, "ctx": {"markPx": "1"}}}


def trade(coin: object, t: object, tid: int = 1) -> dict:
    return {"coin": coin, "side": "B", "px": "10", "sz": "1", "time": t, "tid": tid, "hash": "h"}


def trades(*rows: dict) -> dict:
    return {"channel": "trades", "data": list(rows)}


def candle(coin: object, i: object, t: object, T: object) -> dict:
    return {
        "channel": "candle",
        "data": {
            "s": coin,
            "i": i,
            "t": t,
            "T": T,
            "o": "1",
            "c": "1",
            "h": "1",
            "l": "1",
            "v": "1",
            "n": 1,
        },
    }


def mids(**m: str) -> dict:
    return {"channel": "allMids", "data": {"mids": m}}


def zoo_lines() -> list[bytes]:
    t = T0 + 1000
    out: list[bytes] = []
    add = out.append
    add(b'{"channel":"subscriptionResponse","data":{"method":"subscribe"}}')
    add(b"Websocket connection established.")
    add(b'"Websocket connection established."')
    add(env(t, mids(BTC="1", ETH="2")))  # allMids before any coin is known
    add(env(t + 1, bbo("BTC", t)))
    add(env(t + 2, book("ETH", t + 1)))
    add(env(t + 3, ctx("SOL")))
    add(env(t + 4, mids(BTC="1", ETH="2", SOL="3", XRP="4")))  # fan-out to known coins
    add(env(t + 5, trades(trade("BTC", t + 3), trade("BTC", t + 4, 2))))  # one coin
    add(env(t + 6, trades(trade("BTC", t + 5), trade("ETH", t + 5, 3), trade("BTC", t + 6, 4))))
    add(env(t + 7, trades(trade("BTC", t + 6), trade(None, t + 6))))  # a row without a coin
    add(env(t + 8, trades()))  # no rows
    add(env(t + 9, trades(trade("", t + 6))))
    add(env(t + 10, bbo("", t + 9)))
    add(env(t + 11, bbo(5, t + 9)))
    add(env(t + 12, bbo("DOGE", "x")))  # a bad time: no clock move
    add(env(t + 13, bbo("DOGE", t + 10**9)))  # a future time
    add(env(t + 14, bbo("DOGE", t - 10**9)))  # a stale time
    add(env(t + 16, bbo("DOGE", t + 16 + 60_000)))  # the skew allowed, exactly
    add(env(t + 17, bbo("DOGE", t + 17 + 60_001)))  # one ms more
    add(env(t + 18, bbo("DOGE", t + 18 - 604_800_000)))  # the age allowed, exactly
    add(env(t + 19, bbo("DOGE", t + 19 - 604_800_001)))  # one ms more
    add(env(t + 15, book("DOGE", None)))
    # candles: one held open, then closed by another coin's frame
    add(env(t + 20, candle("BTC", "1m", t, t + 100)))
    add(env(t + 21, candle("ETH", "1m", t, t + 5000)))
    add(env(t + 22, candle("ETH", "5m", t - 1000, t - 10)))  # T passed: closes at once
    add(env(t + 150, bbo("SOL", t + 140)))  # closes BTC's 1m candle
    add(env(t + 160, candle("BTC", "1m", t, t + 100)))  # a bucket already closed
    add(env(t + 170, candle("ETH", "1m", t + 60000, t + 119999)))  # a new bucket closes the old
    add(env(t + 171, {"channel": "candle", "data": [candle("SOL", "1m", t, t + 59999)["data"]]}))
    add(
        env(
            t + 172,
            {
                "channel": "candle",
                "data": [
                    candle("SOL", "1m", t, t + 1)["data"],
                    candle("ETH", "1m", t, t + 1)["data"],
                ],
            },
        )
    )
    add(env(t + 173, candle("SOL", 1, t, t + 10)))  # an odd interval
    add(env(t + 174, candle("SOL", "1m", "t", t + 10)))
    add(env(t + 175, candle(None, "1m", t, t + 10)))
    # control markers
    add(marker(t + 200, "hlsl.gap", {"coins": ["BTC", "ETH"], "reason": "reconnect"}))
    add(marker(t + 201, "hlsl.gap", {"coins": ["BTC", 3]}))
    add(marker(t + 202, "hlsl.gap", {"coins": []}))
    add(marker(t + 203, "hlsl.gap", "nope"))
    add(marker(t + 204, "hlsl.activate", {"coins": ["BTC", "SOL", "ADA"]}))
    add(marker(t + 205, "hlsl.activate", {"coins": "BTC"}))
    add(marker(t + 206, "hlsl.other", {"coins": ["BTC"]}))
    add(b'{"time":"2026-01-01T00:00:01.207000000","ver_num":1,"hlsl":"flat"}')
    add(env(t + 210, mids(BTC="1", ETH="2", SOL="3", ADA="5")))  # fan-out to activated coins
    add(env(t + 211, bbo("ADA", t + 200)))  # a stream that starts after the activation
    add(env(t + 212, bbo("XRP", t + 200)))
    add(marker(t + 213, "hlsl.activate", {"coins": ["XRP"]}))
    add(env(t + 214, {"channel": "allMids", "data": {"mids": "x"}}))
    add(env(t + 215, {"channel": "allMids", "data": {}}))
    add(env(t + 216, {"channel": "allMids", "data": {"mids": {}}}))
    # receive stamps of every form
    add(env(t + 300, bbo("BTC", t + 299), frac=""))
    add(env(t + 301, bbo("BTC", t + 299), frac=".5"))
    add(env(t + 302, bbo("BTC", t + 299), frac=".301Z"))
    add(env(t + 303, bbo("BTC", t + 299), frac=".303000+00:00"))
    add(env(t + 304, bbo("BTC", t + 299), frac=".1234567891234"))
    add(env(t + 305, bbo("BTC", t + 299), frac="Z"))
    add(env(t + 306, bbo("BTC", t + 299), frac=".30600000x"))
    add(env(t + 307, bbo("BTC", t + 299), frac=".+1234567"))
    add(env(t + 308, bbo("BTC", t + 299), frac="+01:00"))
    add(env(t + 309, bbo("BTC", t + 299), frac=".３０９０００００0"))  # non-ASCII digits
    add(env(t + 310, bbo("BTC", t + 299), frac=" "))
    add(orjson.dumps({"time": "2026-01-01T25:00:00.000000000", "ver_num": 1, "raw": bbo("BTC", t)}))
    add(orjson.dumps({"time": "2026-13-01T00:00:00.000000000", "ver_num": 1, "raw": bbo("BTC", t)}))
    add(orjson.dumps({"time": "2026-01-01 00:00:01.400000000", "ver_num": 1, "raw": bbo("BTC", t)}))
    add(orjson.dumps({"time": "yesterday", "ver_num": 1, "raw": bbo("BTC", t)}))
    add(orjson.dumps({"time": "2026-01-01T0a:00:01.000000000", "ver_num": 1, "raw": bbo("BTC", t)}))
    add(orjson.dumps({"time": "2026-01-01", "ver_num": 1, "raw": bbo("BTC", t)}))
    add(orjson.dumps({"time": "", "ver_num": 1, "raw": bbo("BTC", t)}))
    add(orjson.dumps({"time": t * 1_000_000 + 400_000_000, "ver_num": 1, "raw": bbo("BTC", t)}))
    add(orjson.dumps({"time": None, "ver_num": 1, "raw": bbo("BTC", t)}))
    add(
        orjson.dumps(
            {"time": "2026-01-01T00:00:01.401000000", "ver_num": "1", "raw": bbo("BTC", t)}
        )
    )
    add(
        orjson.dumps(
            {"time": "2026-01-01T00:00:01.402000000", "ver_num": 1, "raw": bbo("BTC", t), "x": 1}
        )
    )
    add(orjson.dumps({"time": "2026-01-01T00:00:01.403000000", "raw": bbo("BTC", t)}))
    add(orjson.dumps({"time": "2026-01-01T00:00:01.404000000", "ver_num": 1}))
    add(orjson.dumps({"time": "2026-01-01T00:00:01.405000000", "ver_num": 1, "raw": "frame"}))
    add(orjson.dumps({"time": "2026-01-01T00:00:01.406000000", "ver_num": 1, "raw": {"data": 1}}))
    add(
        orjson.dumps({"time": "2026-01-01T00:00:01.407000000", "ver_num": 1, "raw": {"channel": 7}})
    )
    add(
        orjson.dumps(
            {"time": "2026-01-01T00:00:01.408000000", "ver_num": 1, "raw": {"channel": "pong"}}
        )
    )
    add(
        orjson.dumps(
            {"time": "2026-01-01T00:00:01.409000000", "ver_num": 1, "raw": {"channel": "bbo"}}
        )
    )
    add(
        orjson.dumps(
            {
                "time": "2026-01-01T00:00:01.410000000",
                "ver_num": 1,
                "raw": {"channel": "bbo", "data": [1]},
            }
        )
    )
    add(
        orjson.dumps(
            {
                "time": "2026-01-01T00:00:01.411000000",
                "ver_num": 1,
                "raw": {"channel": "trades", "data": {"coin": "BTC"}},
            }
        )
    )
    add(
        orjson.dumps(
            {
                "time": "2026-01-01T00:00:01.412000000",
                "ver_num": 1,
                "raw": {"channel": "trades", "data": [1, 2]},
            }
        )
    )
    add(
        orjson.dumps(
            {
                "time": "2026-01-01T00:00:01.413000000",
                "ver_num": 1,
                "raw": {"channel": "candle", "data": 5},
            }
        )
    )
    add(
        orjson.dumps(
            {
                "time": "2026-01-01T00:00:01.414000000",
                "ver_num": 1,
                "raw": {"channel": "notAChannel", "data": {"coin": "BTC"}},
            }
        )
    )
    add(
        b'{"time": "2026-01-01T00:00:01.415000000", "ver_num": 1, "raw": {"channel": "bbo"'
        b', "data": {"coin": "BTC", "time": 1767225601300}}}'
    )
    add(
        b'{"time":"2026-01-01T00:00:01.416000000","ver_num":1,"raw":{"channel":"bbo","data'
        b'":{"coin":"BTC","time":1767225601300}}}   '
    )
    add(
        b'{"time":"2026-01-01T00:00:01.417000000","ver_num":1,"raw":{"channel":"bbo","data'
        b'":{"coin":"BTC","coin":"ETH","time":1767225601300}}}'
    )
    add(
        b'{"time":"2026-01-01T00:00:01.418000000","ver_num":1,"raw":{"channel":"bbo","data'
        b'":{"coin":"BTC","time":1767225601300.0}}}'
    )
    add(
        b'{"time":"2026-01-01T00:00:01.419000000","ver_num":1,"raw":{"channel":"bbo","data'
        b'":{"coin":"BTC","time":true}}}'
    )
    add(
        b'{"time":"2026-01-01T00:00:01.420000000","ver_num":1,"raw":{"channel":"bbo","data'
        b'":{"coin":"B\\u0054C","time":1767225601300}}}'
    )
    add(
        b'{"time":"2026-01-01T00:00:01.421000000","ver_num":1,"raw":{"channel":"bbo","data'
        b'":{"coin":"BTC","time":1767225601300}},"raw":{"channel":"pong"}}'
    )
    add(
        b'{"time":"2026-01-01T00:00:01.422000000","ver_num":1,"raw":{"channel":"l2Book","d'
        b'ata":{"coin":"BTC","time":1767225601300,"levels":' + b"[" * 80 + b"]" * 80 + b"}}}"
    )
    add(
        b'{"time":"2026-01-01T00:00:01.423000000","ver_num":1,"raw":{"channel":"bbo","data'
        b'":{"coin":"BTC","time":1767225601300}}'
    )  # torn
    add(
        b'{"time":"2026-01-01T00:00:01.424000000","ver_num":1,"raw":{"channel":"trades","d'
        b'ata":[{"coin":"BTC","time":1767225601300},{"coin":"BTC","time":1767225601301}]}}'
    )
    add(
        b'{"time":"2026-01-01T00:00:01.425000000","ver_num":1,"raw":{"channel":"trades","d'
        b'ata":[{"coin":"BTC","time":1767225601300},{"coin":"BTC","time":"late"}]}}'
    )
    add(
        b'{"time":"2026-01-01T00:00:01.426000000","ver_num":1,"raw":{"channel":"trades","d'
        b'ata":[{"coin":"BTC","time":1767225601300},5]}}'
    )
    add(
        b'{"time":"2026-01-01T00:00:01.427000000","ver_num":1,"raw":{"channel":"l2Book","d'
        b'ata":{"coin":"BTC"}}}'
    )
    add(
        b'{"time":"2026-01-01T00:00:01.428000000","ver_num":1,"raw":{"channel":"activeAsse'
        b'tCtx","data":{"coin":"BTC","time":"ignored"}}}'
    )
    add(
        b'{"time":"2026-01-01T00:00:01.429\xff00000","ver_num":1,"raw":{"channel":"bbo","d'
        b'ata":{"coin":"BTC","time":1767225601300}}}'
    )
    add(
        b'{"time":"2026-01-01T00:00:01.430000000","ver_num":1,"raw":{"channel":"bbo","data'
        b'":{"coin":"\xc3\xa9","time":1767225601300}}}'
    )
    # other line forms
    add(b"")
    add(b"   ")
    add(b"garbage")
    add(b"{not json")
    add(b"[1, 2]")
    add(b"null")
    add(b"1767225601500000000 " + orjson.dumps(bbo("ETH", t + 450)))
    add(
        b"1767225601500000001 " + orjson.dumps(trades(trade("ETH", t + 450), trade("SOL", t + 450)))
    )
    add(b"1767225601500000002 " + orjson.dumps(mids(BTC="9", ETH="8", SOL="7")))
    add(b"1767225601500000003 not json")
    add(b"17672256015x0000003 {}")
    add(b"1767225601500000004")
    add(orjson.dumps(bbo("SOL", t + 460)))  # bare frames: no receive time
    add(orjson.dumps(trades(trade("SOL", t + 461), trade("ETH", t + 461))))
    add(orjson.dumps(candle("SOL", "1m", t + 60000, t + 119999)))
    add(orjson.dumps(mids(BTC="9", SOL="7")))
    add(orjson.dumps({"channel": "bbo", "data": {"coin": "SOL"}}))
    add(orjson.dumps({"hlsl": {"channel": "hlsl.gap", "data": {"coins": ["BTC"]}}}))
    add(orjson.dumps({"ver_num": 1, "hlsl": {"channel": "hlsl.gap", "data": {"coins": ["SOL"]}}}))
    add(
        orjson.dumps(
            {
                "time": stamp(t + 470),
                "ver_num": 1,
                "raw": bbo("SOL", t + 469),
                "hlsl": {"channel": "hlsl.gap", "data": {"coins": ["BTC"]}},
            }
        )
    )
    add(env(t + 480, bbo("BTC", t + 479)))
    add(env(t + 200_000, candle("BTC", "1m", t + 120_000, t + 179_999)))  # a later bucket held open
    add(env(t + 200_001, bbo("ETH", t + 200_000)))
    add(env(t + 400_000, bbo("DOGE", t + 399_999)))  # closes every open candle
    add(env(t + 400_001, candle("SOL", "1h", t, t + 3_600_000)))  # open at the end
    add(env(t + 400_002, candle("SOL", "1h", t, t + 3_600_000)))  # the same bucket again
    add(env(t + 400_003, bbo("BTC", t + 400_000)))
    add(env(t + 400_004, bbo("BTC", t + 400_000)))  # same time: duplicate for the parser
    add(env(t + 400_005, bbo("ETH", t + 400_000)))
    add(env(t + 399_000, bbo("ETH", t + 399_000)))  # receive time going back
    return out


def fills_lines() -> list[bytes]:
    def fill(coin: object, crossed: object, tm: int, px: str = "1") -> list:
        return [
            "0xuser",
            {
                "coin": coin,
                "px": px,
                "sz": "1",
                "side": "B",
                "time": tm,
                "crossed": crossed,
                "tid": tm,
                "hash": "0xh",
                "oid": 1,
                "fee": "0",
            },
        ]

    def block(ms: int | None, events: list, stamp_: object = None) -> bytes:
        b: dict = {"block_time": "x", "block_number": 1, "events": events}
        if ms is not None:
            b["local_time"] = stamp(ms)
        elif stamp_ is not None:
            b["local_time"] = stamp_
        return orjson.dumps(b)

    t = T0 + 1000
    return [
        block(t + 5, [fill("BTC", True, t), fill("BTC", False, t), fill("ETH", True, t + 1)]),
        block(t + 6, []),
        block(t + 7, [fill("BTC", False, t)]),
        block(t + 8, [fill("SOL", True, t + 2), fill(5, True, t + 2), fill("SOL", True, t + 3)]),
        block(t + 9, [["0xuser"]]),
        block(t + 10, [fill("BTC", "yes", t)]),
        b'{"events": 3}',
        b"[]",
        b"garbage",
        b"",
        block(None, [fill("ETH", True, t + 11)]),
        block(None, [fill("ETH", True, t + 12)], stamp_=12),
        block(None, [fill("ETH", True, t + 13)], stamp_="2026-01-01T00:00:01.500000000Z"),
        block(t + 160, [fill("ADA", True, t + 150), fill("XRP", True, t + 10**8)]),
        block(t + 400_010, [fill("BTC", True, t + 400_009)]),
    ]


CASES: dict[str, tuple[list[str], frozenset[str] | None, set[str], ValidationConfig]] = {
    "zoo": (["zoo"], None, set(), ValidationConfig()),
    "zoo-filter": (["zoo"], frozenset({"BTC", "ADA"}), set(), ValidationConfig()),
    "zoo-known": (["zoo"], None, {"ETH", "LTC"}, ValidationConfig()),
    "zoo-limits": (["zoo"], None, set(), ValidationConfig(max_json_depth=4, max_clock_skew_ms=5)),
    "zoo-fills": (["zoo", "fills"], None, set(), ValidationConfig()),
    "zoo-fills-filter": (["zoo", "fills"], frozenset({"BTC", "SOL"}), set(), ValidationConfig()),
}


def split_dump(tmp: Path) -> bytes:
    """Every case's streams, decompressed, each under its stream key and file name (run in
    ``tmp``: records name their capture, by the relative path given)."""
    assert Path.cwd() == tmp
    (tmp / "zoo.ndjson").write_bytes(b"\n".join(zoo_lines()) + b"\n")
    (tmp / "fills.ndjson").write_bytes(b"\n".join(fills_lines()) + b"\n")
    out: list[bytes] = []
    for name, (caps, coins, known, config) in CASES.items():
        dest = tmp / name
        dest.mkdir()
        files = [f"{c}.ndjson" for c in caps]
        names = Splitter(files, list(range(len(files))), dest, coins, set(known), config).run()
        out.append(b"## %s\n" % name.encode())
        for coin, fname in names.items():
            out.append(b"# stream %s %s\n" % (orjson.dumps(coin), fname.encode()))
            out.append(_decompress((dest / fname).read_bytes()))
        assert sorted(p.name for p in dest.iterdir()) == sorted(names.values())
    return b"".join(out)


def _decompress(raw: bytes) -> bytes:
    """A stream file: LZ4 frames appended one after another."""
    parts = []
    while raw:
        dec = lz4.frame.LZ4FrameDecompressor()
        parts.append(dec.decompress(raw))
        raw = dec.unused_data
    return b"".join(parts)


def test_the_split_of_every_routing_case_is_pinned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    got = split_dump(tmp_path)
    want = GOLDEN.read_bytes()
    if got != want:
        for n, (a, b) in enumerate(zip(got.split(b"\n"), want.split(b"\n"), strict=False)):
            assert a == b, f"first different record: line {n + 1} of {GOLDEN.name}"
    assert got == want


@pytest.mark.parametrize("recv_ms", [None, 0, 1_000, 50_000, 10**9])
@pytest.mark.parametrize("latest_ms", [None, 0, 900, 1_000, 40_000, 10**9])
def test_the_time_window_is_what_check_accepts(recv_ms: int | None, latest_ms: int | None) -> None:
    # The split pass compares exchange times against `TimeCheck.window` instead of calling
    # `check` per time: the two must accept exactly the same times.
    times = TimeCheck(ValidationConfig(max_clock_skew_ms=50, max_age_ms=2_000))
    lo, hi = times.window(recv_ms, latest_ms)
    edges = {recv_ms, latest_ms, lo, hi, 0, 1 << 53} - {None}
    probes = {e + d for e in edges if e is not None for d in (-2_050, -51, -1, 0, 1, 51, 2_050)}
    for t in itertools.chain(sorted(probes), [-1]):
        try:
            times.check(t, recv_ms, latest_ms, "trades")
            accepted = True
        except Exception:
            accepted = False
        assert accepted == (lo <= t <= hi), (t, recv_ms, latest_ms, lo, hi)


if __name__ == "__main__":
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)
        GOLDEN.write_bytes(split_dump(Path(d).resolve()))
    sys.stdout.write(f"wrote {GOLDEN}\n")
