"""Tests for the seeded Hyperliquid market simulator (`tools.simulate`).

Wire-format checks use the exchange facts (``../shared/reference/hyperliquid-api.md`` §1.3–1.4),
written out here independently of the simulator's own constants; the realism checks recompute
regime statistics with numpy from the generated trades, bbo and asset-context frames.
"""

from __future__ import annotations

import gzip
import itertools
import re
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tools.simulate import LABELS, Phase, SimConfig, generate, main, truth, write_capture

Frames = list[tuple[int, dict[str, Any]]]

START_MS = 1_767_225_600_000
TICK = {"BTC": Decimal("1"), "ETH": Decimal("0.1"), "SOL": Decimal("0.01")}
SZ_DECIMALS = {"BTC": 5, "ETH": 4, "SOL": 2}
DECIMAL_RE = re.compile(r"^-?\d+\.\d+$")
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}$")
HASH_RE = re.compile(r"^0x[0-9a-f]{64}$")
ADDRESS_RE = re.compile(r"^0x[0-9a-f]{40}$")
CTX_KEYS = [
    "funding",
    "openInterest",
    "prevDayPx",
    "dayNtlVlm",
    "premium",
    "oraclePx",
    "markPx",
    "midPx",
    "impactPxs",
    "dayBaseVlm",
]
NS = 1_000_000  # ns per ms


def _dec(s: Any) -> Decimal:
    """A wire decimal string (never a number) as Decimal."""
    assert isinstance(s, str), f"expected a decimal string, got {s!r}"
    assert DECIMAL_RE.match(s), f"bad decimal string {s!r}"
    return Decimal(s)


def _px(s: Any, coin: str) -> Decimal:
    px = _dec(s)
    assert px > 0
    assert px % TICK[coin] == 0, f"{coin} price {s} off the tick grid"
    return px


def _sz(s: Any, coin: str) -> Decimal:
    sz = _dec(s)
    assert sz > 0
    assert sz == sz.quantize(Decimal(1).scaleb(-SZ_DECIMALS[coin])), f"{coin} size {s} off lot"
    return sz


def _is_int(v: Any) -> bool:
    return type(v) is int


def _level(lv: Any, coin: str) -> tuple[Decimal, Decimal]:
    assert list(lv) == ["px", "sz", "n"]
    assert _is_int(lv["n"])
    assert lv["n"] >= 1
    return _px(lv["px"], coin), _sz(lv["sz"], coin)


def _exchange_ms(frame: dict[str, Any]) -> int | None:
    ch = frame["channel"]
    data = frame.get("data")
    if ch in ("bbo", "l2Book"):
        return int(data["time"])
    if ch == "trades":
        return max(int(t["time"]) for t in data)
    if ch == "candle":
        return int(data["t"])
    return None


def _coin_of(frame: dict[str, Any]) -> str | None:
    ch, data = frame["channel"], frame.get("data")
    if ch == "trades":
        return str(data[0]["coin"])
    if ch == "candle":
        return str(data["s"])
    if ch in ("bbo", "l2Book", "activeAssetCtx"):
        return str(data["coin"])
    return None


@pytest.fixture(scope="module")
def run60() -> Frames:
    return list(generate(SimConfig(seconds=60)))


# ----- determinism -------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    cfg = SimConfig(seconds=20, seed=11)
    a, b = tmp_path / "a.ndjson.gz", tmp_path / "b.ndjson.gz"
    n = write_capture(cfg, a)
    assert write_capture(cfg, b) == n > 100
    assert a.read_bytes() == b.read_bytes()
    plain = tmp_path / "c.ndjson"
    assert write_capture(cfg, plain) == n
    assert gzip.decompress(a.read_bytes()) == plain.read_bytes()


def test_different_seed_gives_different_capture(tmp_path: Path) -> None:
    a, b = tmp_path / "a.ndjson", tmp_path / "b.ndjson"
    write_capture(SimConfig(seconds=20, seed=11), a)
    write_capture(SimConfig(seconds=20, seed=12), b)
    assert a.read_bytes() != b.read_bytes()


# ----- envelope, ordering, timestamps --------------------------------------------------------


def _iso_to_ns(stamp: str) -> int:
    base = datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return int(base.timestamp()) * 1_000_000_000 + int(stamp[20:])


def test_archive_envelope(tmp_path: Path) -> None:
    out = tmp_path / "cap.ndjson"
    cfg = SimConfig(seconds=10)
    n = write_capture(cfg, out)
    lines = out.read_bytes().splitlines()
    assert len(lines) == n
    expected = list(generate(cfg))
    for line, (recv, frame) in zip(lines, expected, strict=True):
        env = orjson.loads(line)
        assert list(env) == ["time", "ver_num", "raw"]
        assert env["ver_num"] == 1
        assert ISO_RE.match(env["time"]), env["time"]
        assert _iso_to_ns(env["time"]) == recv
        assert env["raw"] == frame


def test_receive_times_ordered_and_after_exchange_time(run60: Frames) -> None:
    recvs = np.array([r for r, _ in run60], dtype=np.int64)
    assert np.all(np.diff(recvs) >= 0)
    last_by_stream: dict[tuple[str, str | None], int] = {}
    first_trades: set[str] = set()
    for recv, frame in run60:
        key = (frame["channel"], _coin_of(frame))
        assert recv > last_by_stream.get(key, 0), f"stream {key} not strictly increasing"
        last_by_stream[key] = recv
        t = _exchange_ms(frame)
        if t is None:
            continue
        assert recv >= t * NS
        replay = frame["channel"] == "trades" and key[1] not in first_trades
        if frame["channel"] == "trades":
            first_trades.add(str(key[1]))
        if frame["channel"] in ("bbo", "l2Book") or (frame["channel"] == "trades" and not replay):
            assert 150 * NS <= recv - t * NS < 600 * NS


def test_acks_come_first_and_echo_server_defaults(run60: Frames) -> None:
    acks = [f for _, f in run60 if f["channel"] == "subscriptionResponse"]
    assert [f for _, f in run60[: len(acks)]] == acks
    subs = [a["data"]["subscription"] for a in acks]
    assert all(a["data"]["method"] == "subscribe" for a in acks)
    for coin in ("BTC", "ETH", "SOL"):
        assert {"type": "trades", "coin": coin} in subs
        assert {"type": "bbo", "coin": coin} in subs
        assert {"type": "activeAssetCtx", "coin": coin} in subs
        assert {"type": "candle", "coin": coin, "interval": "1m"} in subs
        book = {"type": "l2Book", "coin": coin, "nSigFigs": None, "mantissa": None, "fast": False}
        assert book in subs
    assert {"type": "allMids"} in subs
    assert len(subs) == 16
    pongs = [f for _, f in run60 if f["channel"] == "pong"]
    assert pongs == [{"channel": "pong"}]  # one every 50 s


# ----- channels ------------------------------------------------------------------------------


def test_trades_frames(run60: Frames) -> None:
    seen_first: set[str] = set()
    tids: dict[str, set[int]] = defaultdict(set)
    last_time: dict[str, int] = {}
    n_trades = 0
    for _, f in run60:
        if f["channel"] != "trades":
            continue
        assert list(f) == ["channel", "data"]
        data = f["data"]
        assert isinstance(data, list)
        assert 1 <= len(data) <= 120
        coin = data[0]["coin"]
        times = [t["time"] for t in data]
        assert times == sorted(times)  # oldest first
        if coin not in seen_first:
            seen_first.add(coin)
            assert len(data) == 30  # the replay of the last 30 trades
            assert times[-1] < START_MS
            assert START_MS - times[0] < 60_000
        else:
            assert len(set(times)) == 1
            assert times[0] >= START_MS
            assert times[0] >= last_time[coin]
        last_time[coin] = times[-1]
        for tr in data:
            n_trades += 1
            assert list(tr) == ["coin", "side", "px", "sz", "time", "hash", "tid", "users"]
            assert tr["coin"] == coin
            assert tr["side"] in ("B", "A")
            _px(tr["px"], coin)
            _sz(tr["sz"], coin)
            assert _is_int(tr["time"])
            assert _is_int(tr["tid"])
            assert 0 < tr["tid"] < 2**50
            assert tr["tid"] not in tids[coin], "tids are unique per coin, replay included"
            tids[coin].add(tr["tid"])
            assert HASH_RE.match(tr["hash"])
            users = tr["users"]
            assert len(users) == 2
            assert users[0] != users[1]
            assert all(ADDRESS_RE.match(u) for u in users)
    assert seen_first == {"BTC", "ETH", "SOL"}
    assert n_trades > 300


def _bbo_and_books(frames: Frames, coin: str) -> tuple[list[Any], list[Any]]:
    bbos = [f["data"] for _, f in frames if f["channel"] == "bbo" and f["data"]["coin"] == coin]
    books = [f["data"] for _, f in frames if f["channel"] == "l2Book" and f["data"]["coin"] == coin]
    return bbos, books


@pytest.mark.parametrize("coin", ["BTC", "ETH", "SOL"])
def test_books_and_bbo(run60: Frames, coin: str) -> None:
    bbos, books = _bbo_and_books(run60, coin)
    prev = None
    for b in bbos:
        assert list(b) == ["coin", "time", "bbo"]
        assert _is_int(b["time"])
        (bp, _), (ap, _) = (_level(lv, coin) for lv in b["bbo"])
        assert bp < ap
        assert b["bbo"] != prev, "bbo is sent only when it changes"
        prev = b["bbo"]
    bbo_times = [b["time"] for b in bbos]
    assert bbo_times == sorted(bbo_times)
    for book in books:
        assert list(book) == ["coin", "time", "levels"]
        assert _is_int(book["time"])
        bids = [_level(lv, coin) for lv in book["levels"][0]]
        asks = [_level(lv, coin) for lv in book["levels"][1]]
        assert len(bids) == len(asks) == 20
        assert all(a[0] > b[0] for a, b in itertools.pairwise(bids))
        assert all(a[0] < b[0] for a, b in itertools.pairwise(asks))
        assert bids[0][0] < asks[0][0]
        # The book's touch is the latest bbo at or before the book's block.
        i = int(np.searchsorted(bbo_times, book["time"], side="right")) - 1
        assert i >= 0
        assert bbos[i]["bbo"] == [book["levels"][0][0], book["levels"][1][0]]
    # Cadence: ~1 book/s, bbo on change a few times a second.
    assert 50 <= len(books) <= 62
    assert 1.0 <= len(bbos) / 60 <= 9.0


def test_books_share_one_push_clock(run60: Frames) -> None:
    times = {
        coin: [b["time"] for b in _bbo_and_books(run60, coin)[1]] for coin in ("BTC", "ETH", "SOL")
    }
    assert times["BTC"] == times["ETH"] == times["SOL"]


def test_book_interval_is_a_parameter() -> None:
    frames = list(generate(SimConfig(coins=("BTC",), seconds=30, book_interval_ms=5000)))
    books = [f["data"]["time"] for _, f in frames if f["channel"] == "l2Book"]
    assert 5 <= len(books) <= 7
    assert all(4_800 <= b - a <= 5_500 for a, b in itertools.pairwise(books))


def test_candles_match_the_trade_tape(run60: Frames) -> None:
    tape: dict[tuple[str, int], list[tuple[Decimal, Decimal]]] = defaultdict(list)
    finals: dict[tuple[str, int], dict[str, Any]] = {}
    for _, f in run60:
        if f["channel"] == "trades":
            for tr in f["data"]:
                key = (tr["coin"], tr["time"] - tr["time"] % 60_000)
                tape[key].append((Decimal(tr["px"]), Decimal(tr["sz"])))
        elif f["channel"] == "candle":
            c = f["data"]
            assert list(c) == ["t", "T", "s", "i", "o", "c", "h", "l", "v", "n"]
            coin = c["s"]
            assert _is_int(c["t"])
            assert _is_int(c["T"])
            assert _is_int(c["n"])
            assert c["T"] == c["t"] + 59_999
            assert c["t"] % 60_000 == 0
            assert c["i"] == "1m"
            o, cl, h, lo = (_px(c[k], coin) for k in "ochl")
            assert lo <= min(o, cl) <= max(o, cl) <= h
            _sz(c["v"], coin)
            key = (coin, c["t"])
            if key in finals:  # re-pushes of the open candle only grow
                assert c["n"] >= finals[key]["n"]
                assert Decimal(c["v"]) >= Decimal(finals[key]["v"])
            finals[key] = c
    live = {k for k in tape if k[1] >= START_MS}
    assert live
    assert live <= set(finals)
    for key, c in finals.items():
        prints = tape[key]
        pxs = [p for p, _ in prints]
        assert c["n"] == len(prints)
        assert Decimal(c["v"]) == sum(s for _, s in prints)
        assert (Decimal(c["o"]), Decimal(c["c"])) == (pxs[0], pxs[-1])
        assert (Decimal(c["h"]), Decimal(c["l"])) == (max(pxs), min(pxs))


def test_asset_ctx_and_all_mids(run60: Frames) -> None:
    ctx = [f["data"] for _, f in run60 if f["channel"] == "activeAssetCtx"]
    for d in ctx:
        assert list(d) == ["coin", "ctx"]  # no timestamp on the wire
        c = d["ctx"]
        assert list(c) == CTX_KEYS
        for k in CTX_KEYS:
            if k == "impactPxs":
                assert len(c[k]) == 2
                assert _dec(c[k][0]) <= _dec(c[k][1])
            else:
                _dec(c[k])
        assert _dec(c["openInterest"]) > 0
        assert _dec(c["oraclePx"]) > 0
        assert abs(_dec(c["funding"])) < Decimal("0.01")
    per_coin = {coin: sum(d["coin"] == coin for d in ctx) for coin in ("BTC", "ETH", "SOL")}
    assert all(50 <= n <= 62 for n in per_coin.values()), per_coin
    mids = [f["data"] for _, f in run60 if f["channel"] == "allMids"]
    assert 10 <= len(mids) <= 13
    for m in mids:
        assert list(m) == ["mids"]
        assert {"BTC", "ETH", "SOL"} < set(m["mids"])
        assert all(_dec(v) > 0 for v in m["mids"].values())


# ----- config, truth, CLI ----------------------------------------------------------------------


def test_truth_tiles_the_run_and_cycles_the_script() -> None:
    cfg = SimConfig(seconds=1000)
    t = truth(cfg)
    assert t["seed"] == 7
    assert t["start_ms"] == START_MS
    for coin, phases in t["coins"].items():
        assert phases[0]["start_ms"] == START_MS
        assert phases[-1]["end_ms"] == START_MS + 1_000_000
        assert all(a["end_ms"] == b["start_ms"] for a, b in itertools.pairwise(phases))
        assert {p["label"] for p in phases} == set(LABELS), coin
        assert phases[5]["label"] == phases[0]["label"]  # the 600-s script repeats
    short = truth(SimConfig(seconds=100))["coins"]["BTC"]
    only = {"label": "MEAN_REVERTING", "start_ms": START_MS, "end_ms": START_MS + 100_000}
    assert short == [{**only, "direction": 0}]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown phase label"):
        Phase("SIDEWAYS", 10)
    with pytest.raises(ValueError, match="duration"):
        Phase("TRENDING", 0)
    with pytest.raises(ValueError, match="no market spec"):
        SimConfig(coins=("DOGE",))
    with pytest.raises(ValueError, match="seconds"):
        SimConfig(seconds=0)


def test_main_writes_capture_and_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, tr = tmp_path / "x.ndjson.gz", tmp_path / "x.truth.json"
    argv = ["--out", str(out), "--seconds", "5", "--coins", "BTC", "--truth", str(tr)]
    assert main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line
    assert "bbo=" in line
    assert "trades=" in line
    assert list(orjson.loads(tr.read_bytes())["coins"]) == ["BTC"]
    assert gzip.decompress(out.read_bytes()).count(b"\n") == int(line.split()[1])


def test_market_renames_groups_and_merges_by_receive_time(tmp_path: Path) -> None:
    from tools.simulate.market import generate_market, market_coins

    frames = list(generate_market(6, 5, seed=3))
    recv = [r for r, _ in frames]
    assert recv == sorted(recv)
    coins = {c for _, f in frames if (c := _coin_of(f)) is not None}
    assert coins == set(market_coins(6)) == {"C000", "C001", "C002", "C003", "C004", "C005"}
    for _, f in frames:
        if f["channel"] == "allMids":
            assert set(f["data"]["mids"]) <= coins
    assert sum(f["channel"] == "pong" for _, f in frames) <= 1  # group 0's only
    out = tmp_path / "m.ndjson.gz"
    assert main(["--out", str(out), "--seconds", "5", "--seed", "3", "--market", "6"]) == 0
    assert gzip.decompress(out.read_bytes()).count(b"\n") == len(frames)
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--market", "0"])


# ----- regime realism --------------------------------------------------------------------------

SCRIPTS = {
    "BTC": (
        Phase("MEAN_REVERTING", 40),
        Phase("TRENDING", 40, 1),
        Phase("LIQUIDATION_RISK", 40),
        Phase("CHAOTIC", 40),
    ),
    "ETH": (
        Phase("TRENDING", 40, -1),
        Phase("MEAN_REVERTING", 40),
        Phase("CHAOTIC", 40),
        Phase("LIQUIDATION_RISK", 40),
    ),
}
SKIP_MS = 5_000  # let each phase settle before measuring


class Market:
    """Per-coin numpy views of a run: bbo quotes, trades, asset contexts."""

    def __init__(self, frames: Frames, coin: str) -> None:
        bbo = [f["data"] for _, f in frames if f["channel"] == "bbo" and f["data"]["coin"] == coin]
        self.q_t = np.array([b["time"] for b in bbo], dtype=np.int64)
        self.bid = np.array([float(b["bbo"][0]["px"]) for b in bbo])
        self.ask = np.array([float(b["bbo"][1]["px"]) for b in bbo])
        self.top_sz = np.array([float(b["bbo"][0]["sz"]) + float(b["bbo"][1]["sz"]) for b in bbo])
        trades = [
            t for _, f in frames if f["channel"] == "trades" for t in f["data"] if t["coin"] == coin
        ]
        self.tr_t = np.array([t["time"] for t in trades], dtype=np.int64)
        self.tr_sz = np.array([float(t["sz"]) for t in trades])
        self.tr_buy = np.array([t["side"] == "B" for t in trades])
        ctx = [
            (r, f["data"]["ctx"])
            for r, f in frames
            if f["channel"] == "activeAssetCtx" and f["data"]["coin"] == coin
        ]
        self.ctx_recv = np.array([r for r, _ in ctx], dtype=np.int64)
        self.oi = np.array([float(c["openInterest"]) for _, c in ctx])
        self.premium = np.array([float(c["premium"]) for _, c in ctx])

    def mids_1s(self, start: int, end: int) -> np.ndarray:
        """Mid sampled every second (last quote at or before each second)."""
        grid = np.arange(start + SKIP_MS, end, 1000)
        idx = np.searchsorted(self.q_t, grid, side="right") - 1
        mid = (self.bid + self.ask) / 2
        return np.asarray(mid[idx[idx >= 0]])

    def buy_share(self, start: int, end: int) -> float:
        m = (self.tr_t >= start + SKIP_MS) & (self.tr_t < end)
        return float(self.tr_sz[m & self.tr_buy].sum() / self.tr_sz[m].sum())

    def trade_rate(self, start: int, end: int) -> float:
        m = (self.tr_t >= start + SKIP_MS) & (self.tr_t < end)
        return float(m.sum() / ((end - start - SKIP_MS) / 1000))

    def quotes(self, start: int, end: int) -> np.ndarray:
        return np.asarray((self.q_t >= start + SKIP_MS) & (self.q_t < end))

    def spread_bps(self, start: int, end: int) -> float:
        m = self.quotes(start, end)
        return float(np.mean(1e4 * (self.ask[m] - self.bid[m]) / self.bid[m]))

    def ctx_in(self, start: int, end: int) -> np.ndarray:
        # ctx carries no time: generated 150-500 ms before receipt.
        return np.asarray((self.ctx_recv >= (start + 1000) * NS) & (self.ctx_recv < end * NS))


def efficiency_ratio(px: np.ndarray) -> float:
    """Kaufman efficiency ratio: |net move| / path length."""
    x = np.log(px)
    return float(abs(x[-1] - x[0]) / np.abs(np.diff(x)).sum())


@pytest.fixture(scope="module")
def regime_run() -> tuple[Frames, dict[str, Any]]:
    cfg = SimConfig(coins=("BTC", "ETH"), seconds=160, seed=3, scripts=SCRIPTS)
    return list(generate(cfg)), truth(cfg)


def _phases(tr: dict[str, Any], label: str) -> list[tuple[str, dict[str, Any]]]:
    return [(c, p) for c, ps in tr["coins"].items() for p in ps if p["label"] == label]


def _mr(tr: dict[str, Any], coin: str) -> tuple[int, int]:
    p = next(p for p in tr["coins"][coin] if p["label"] == "MEAN_REVERTING")
    return p["start_ms"], p["end_ms"]


def test_trending_drifts_with_skewed_flow(regime_run: tuple[Frames, dict[str, Any]]) -> None:
    frames, tr = regime_run
    phases = _phases(tr, "TRENDING")
    assert {p["direction"] for _, p in phases} == {1, -1}
    for coin, p in phases:
        mk = Market(frames, coin)
        mids = mk.mids_1s(p["start_ms"], p["end_ms"])
        move_bps = 1e4 * np.log(mids[-1] / mids[0])
        assert move_bps * p["direction"] > 10, (coin, move_bps)
        share = mk.buy_share(p["start_ms"], p["end_ms"])
        aligned = share if p["direction"] > 0 else 1 - share
        assert aligned > 0.6, (coin, share)


def test_liquidation_cascade(regime_run: tuple[Frames, dict[str, Any]]) -> None:
    frames, tr = regime_run
    for coin, p in _phases(tr, "LIQUIDATION_RISK"):
        mk = Market(frames, coin)
        s, e = p["start_ms"], p["end_ms"]
        ms, me = _mr(tr, coin)
        assert 1 - mk.buy_share(s, e) > 0.8
        mids = mk.mids_1s(s, e)
        assert 1e4 * np.log(mids[-1] / mids[0]) < -100
        assert mk.spread_bps(s, e) > 2 * mk.spread_bps(ms, me)
        assert np.median(mk.top_sz[mk.quotes(s, e)]) < 0.5 * np.median(mk.top_sz[mk.quotes(ms, me)])
        assert mk.trade_rate(s, e) > 1.5 * mk.trade_rate(ms, me)
        in_liq = mk.ctx_in(s, e)
        oi = mk.oi[in_liq]
        assert oi[-1] < 0.99 * oi[0], (coin, oi[0], oi[-1])
        assert np.mean(mk.premium[in_liq]) < 0


def test_mean_reversion_is_less_efficient_than_trend(
    regime_run: tuple[Frames, dict[str, Any]],
) -> None:
    frames, tr = regime_run
    for coin in ("BTC", "ETH"):
        mk = Market(frames, coin)
        er_mr = efficiency_ratio(mk.mids_1s(*_mr(tr, coin)))
        p = next(p for p in tr["coins"][coin] if p["label"] == "TRENDING")
        er_tr = efficiency_ratio(mk.mids_1s(p["start_ms"], p["end_ms"]))
        assert er_mr < er_tr, (coin, er_mr, er_tr)
        assert er_mr < 0.4, (coin, er_mr)
        assert er_tr > 0.25, (coin, er_tr)


def test_chaotic_is_volatile_and_wider(regime_run: tuple[Frames, dict[str, Any]]) -> None:
    frames, tr = regime_run
    for coin, p in _phases(tr, "CHAOTIC"):
        mk = Market(frames, coin)
        ms, me = _mr(tr, coin)
        vol_ch = np.std(np.diff(np.log(mk.mids_1s(p["start_ms"], p["end_ms"]))))
        vol_mr = np.std(np.diff(np.log(mk.mids_1s(ms, me))))
        assert vol_ch > 2.5 * vol_mr, (coin, vol_ch, vol_mr)
        assert mk.spread_bps(p["start_ms"], p["end_ms"]) > 1.3 * mk.spread_bps(ms, me)
