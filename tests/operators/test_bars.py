"""Bars: `fold_bars` under `run_main` (windows, lateness, batching), `Bar.from_events`."""

from __future__ import annotations

import random
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.dataflow import Stream as BxStream
from bytewax.testing import TestingSink, TestingSource, run_main

from connectors.events import BookSnapshot, Event, Gap, Kind, Stream
from operators.bars import Bar, fold_bars
from tests.operators.helpers import bbo, book, candle, ctx, mid, trades

T0 = 1_700_000_000_000  # a multiple of every bar length used here


def run_bars(
    events: list[Event], *, bar_ms: int = 1000, lateness_ms: int = 1000, batch_size: int = 1
) -> tuple[list[tuple[str, Bar]], list[tuple[str, Event]]]:
    flow = Dataflow("bars_test")
    up: BxStream[Event] = op.input("in", flow, TestingSource(events, batch_size=batch_size))
    bars, late = fold_bars("bars", up, bar_ms=bar_ms, lateness_ms=lateness_ms)
    out: list[tuple[str, Bar]] = []
    late_out: list[tuple[str, Event]] = []
    op.output("bars_out", bars, TestingSink(out))
    op.output("late_out", late, TestingSink(late_out))
    run_main(flow)
    return out, late_out


def ev_key(e: Event) -> tuple[Any, ...]:
    """A value identity for an event (items may be copied between steps)."""
    if isinstance(e, BookSnapshot):
        return ("book", e.coin, e.time_ms, e.bid_px, e.bid_sz, e.ask_px, e.ask_sz)
    return (type(e).__name__, e.coin, e.time_ms, repr(e))


def bar_key(b: Bar) -> tuple[Any, ...]:
    return (
        b.coin,
        b.open_ms,
        b.close_ms,
        b.trade_count,
        b.buy_sz,
        b.sell_sz,
        b.buy_ntl,
        b.sell_ntl,
        b.high_px,
        b.low_px,
        b.first_trade_px,
        b.last_trade_px,
        tuple(ev_key(e) for e in all_events(b)),
    )


def all_events(b: Bar) -> list[Event]:
    out: list[Event] = [*b.trades, *b.books, *b.bbos]
    out += [*b.mids, *b.ctxs, *b.candles]
    return out


def by_coin(out: list[tuple[str, Bar]]) -> dict[str, list[Bar]]:
    res: dict[str, list[Bar]] = {}
    for coin, b in out:
        assert b.coin == coin
        res.setdefault(coin, []).append(b)
    return res


# -- the main bar flow ----------------------------------------------------------------------------


def two_coin_events() -> list[Event]:
    """BTC over bars 0, 1 and 3 (out of order inside bar 0), ETH over bars 0 and 2."""
    return [
        trades("BTC", T0 + 100, [(100.0, 1.0, "B"), (101.0, 2.0, "A")]),
        bbo("BTC", T0 + 300, 99.9, 1.0, 100.1, 2.0),
        trades("ETH", T0 + 600, [(10.0, 3.0, "A"), (10.5, 1.0, "B")]),
        trades("BTC", T0 + 500, [(102.0, 0.5, "B")]),
        bbo("BTC", T0 + 200, 99.0, 5.0, 100.0, 5.0),  # older than the bbo above: not the latest
        book("BTC", T0 + 400, [(99.95, 1.0)], [(100.05, 1.0)]),
        book("BTC", T0 + 350, [(98.0, 1.0)], [(102.0, 1.0)]),  # older book, arrives later
        trades("BTC", T0 + 50, [(99.5, 4.0, "A")]),  # the bar's first trade, arrives last
        trades("BTC", T0 + 1200, [(103.0, 1.0, "A")]),
        bbo("BTC", T0 + 1300, 102.9, 1.0, 103.1, 1.0),
        trades("ETH", T0 + 2500, [(11.0, 2.0, "B")]),
        trades("BTC", T0 + 3100, [(104.0, 1.0, "B")]),
    ]


def test_fold_bars_two_coins_exact_bars() -> None:
    out, late = run_bars(two_coin_events(), bar_ms=1000, lateness_ms=1000)
    assert late == []
    bars = by_coin(out)
    assert [(b.open_ms, b.close_ms) for b in bars["BTC"]] == [
        (T0, T0 + 1000),
        (T0 + 1000, T0 + 2000),
        (T0 + 3000, T0 + 4000),  # no bar for the empty window 2
    ]
    assert [(b.open_ms, b.close_ms) for b in bars["ETH"]] == [
        (T0, T0 + 1000),
        (T0 + 2000, T0 + 3000),
    ]

    b0 = bars["BTC"][0]
    assert b0.trade_count == 4
    assert b0.buy_sz == pytest.approx(1.5)  # 1.0 @ 100 + 0.5 @ 102
    assert b0.sell_sz == pytest.approx(6.0)  # 2.0 @ 101 + 4.0 @ 99.5
    assert b0.buy_ntl == pytest.approx(100.0 + 51.0)
    assert b0.sell_ntl == pytest.approx(202.0 + 398.0)
    assert b0.vwap_px == pytest.approx((100.0 + 202.0 + 51.0 + 398.0) / 7.5)
    assert b0.volume == pytest.approx(7.5)
    assert b0.notional == pytest.approx(751.0)
    assert b0.high_px == 102.0
    assert b0.low_px == 99.5
    assert b0.first_trade_px == 99.5  # the trade at +50 ms, though it arrived last
    assert b0.last_trade_px == 102.0  # the trade at +500 ms
    assert [t.time_ms for t in b0.trades] == [T0 + 50, T0 + 100, T0 + 500]
    assert b0.bbo is not None
    assert (b0.bbo.time_ms, b0.bbo.bid_px, b0.bbo.ask_px) == (T0 + 300, 99.9, 100.1)
    assert b0.book is not None
    assert (b0.book.time_ms, b0.book.bid_px, b0.book.ask_px) == (T0 + 400, (99.95,), (100.05,))
    assert [x.time_ms for x in b0.bbos] == [T0 + 200, T0 + 300]
    assert [x.time_ms for x in b0.books] == [T0 + 350, T0 + 400]

    b1 = bars["BTC"][1]
    assert (b1.trade_count, b1.buy_sz, b1.sell_sz) == (1, 0.0, 1.0)
    assert (b1.high_px, b1.low_px, b1.first_trade_px, b1.last_trade_px) == (103.0,) * 4
    assert b1.vwap_px == 103.0
    assert b1.bbo is not None
    assert b1.bbo.time_ms == T0 + 1300
    assert b1.book is None

    b3 = bars["BTC"][2]  # flushed by the end of input
    assert (b3.trade_count, b3.buy_sz, b3.sell_sz, b3.vwap_px) == (1, 1.0, 0.0, 104.0)

    e0, e2 = bars["ETH"]
    assert e0.trade_count == 2
    assert e0.buy_sz == 1.0  # "B" is the buying aggressor
    assert e0.sell_sz == 3.0  # "A" is the selling aggressor
    assert e0.vwap_px == pytest.approx((30.0 + 10.5) / 4.0)
    assert (e0.high_px, e0.low_px, e0.first_trade_px, e0.last_trade_px) == (10.5, 10.0, 10.0, 10.5)
    assert e0.bbo is None
    assert (e2.trade_count, e2.buy_sz, e2.vwap_px) == (1, 2.0, 11.0)


@pytest.mark.parametrize("bar_ms", [250, 1000, 60_000])
def test_bars_are_aligned_to_the_epoch(bar_ms: int) -> None:
    t = T0 + 12_345
    out, _ = run_bars([mid("BTC", t, 1.0)], bar_ms=bar_ms, lateness_ms=0)
    [(coin, b)] = out
    assert coin == "BTC"
    assert b.open_ms == (t // bar_ms) * bar_ms
    assert b.open_ms % bar_ms == 0
    assert b.close_ms == b.open_ms + bar_ms
    assert b.open_ms <= t < b.close_ms


def test_end_of_input_flushes_last_open_bars() -> None:
    events: list[Event] = [
        trades("BTC", T0 + 10, [(1.0, 1.0, "B")]),
        trades("ETH", T0 + 20, [(2.0, 1.0, "A")]),
        trades("SOL", T0 + 999, [(3.0, 1.0, "B")]),
    ]
    # A huge lateness: no event ever closes a bar, only the end of input does.
    out, late = run_bars(events, bar_ms=1000, lateness_ms=3_600_000)
    assert late == []
    assert sorted((c, b.open_ms, b.trade_count) for c, b in out) == [
        ("BTC", T0, 1),
        ("ETH", T0, 1),
        ("SOL", T0, 1),
    ]


# -- lateness -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lateness_ms", "is_late"), [(0, True), (599, True), (600, False), (1000, False)]
)
def test_event_600ms_behind_its_coin_is_late_only_beyond_lateness(
    lateness_ms: int, is_late: bool
) -> None:
    old = trades("BTC", T0 + 100, [(1.0, 2.0, "A")])
    events: list[Event] = [trades("BTC", T0 + 700, [(1.0, 1.0, "B")]), old]
    out, late = run_bars(events, bar_ms=1000, lateness_ms=lateness_ms)
    [(_, b)] = out
    if is_late:
        assert [(c, e.time_ms) for c, e in late] == [("BTC", T0 + 100)]
        assert late[0][1] == old
        assert (b.trade_count, b.sell_sz) == (1, 0.0)
    else:
        assert late == []
        assert (b.trade_count, b.sell_sz) == (2, 2.0)


def test_event_behind_a_closed_bar_is_late() -> None:
    events: list[Event] = [
        mid("BTC", T0 + 500, 1.0),
        mid("BTC", T0 + 2600, 2.0),  # watermark T0+1600: bar 0 closes
        mid("BTC", T0 + 900, 3.0),  # bar 0 is closed: late
        mid("BTC", T0 + 1700, 4.0),  # 900 ms behind but within lateness, bar 1 still open
    ]
    out, late = run_bars(events, bar_ms=1000, lateness_ms=1000)
    assert [(c, e.time_ms) for c, e in late] == [("BTC", T0 + 900)]
    bars = sorted(by_coin(out)["BTC"], key=lambda b: b.open_ms)  # order: see the tests below
    assert [(b.open_ms, [m.mid_px for m in b.mids]) for b in bars] == [
        (T0, [1.0]),
        (T0 + 1000, [4.0]),
        (T0 + 2000, [2.0]),
    ]


def test_watermark_is_per_coin() -> None:
    events: list[Event] = [
        mid("BTC", T0 + 700, 1.0),
        mid("ETH", T0 + 50_000, 2.0),  # much newer, other coin
        mid("BTC", T0 + 800, 3.0),  # behind ETH, not behind BTC: on time
        mid("BTC", T0 + 750, 4.0),  # behind BTC's newest (800) with lateness 0: late
    ]
    out, late = run_bars(events, bar_ms=1000, lateness_ms=0)
    assert [(c, e.time_ms) for c, e in late] == [("BTC", T0 + 750)]
    bars = by_coin(out)
    assert [m.mid_px for m in bars["BTC"][0].mids] == [1.0, 3.0]
    assert len(bars["BTC"]) == 1
    assert [b.open_ms for b in bars["ETH"]] == [T0 + 50_000]


# -- batch independence ---------------------------------------------------------------------------


def random_events(seed: int, n: int = 400) -> list[Event]:
    rng = random.Random(seed)
    clock = {"BTC": T0, "ETH": T0, "SOL": T0}
    out: list[Event] = []
    for _ in range(n):
        coin = rng.choice(("BTC", "ETH", "SOL"))
        # Mostly forward, sometimes back (up to 1.5 s): some events late at 250 ms lateness.
        clock[coin] += rng.choice((0, 10, 50, 120, 300, 900, -200, -700, -1500))
        t = clock[coin]
        kind = rng.randrange(4)
        px = round(rng.uniform(90.0, 110.0), 2)
        if kind == 0:
            side = rng.choice("AB")
            out.append(trades(coin, t, [(px, round(rng.uniform(0.1, 3.0), 3), side)]))
        elif kind == 1:
            out.append(bbo(coin, t, px - 0.05, 1.0, px + 0.05, 2.0))
        elif kind == 2:
            out.append(book(coin, t, [(px - 0.1, 1.0), (px - 0.2, 2.0)], [(px + 0.1, 3.0)]))
        else:
            out.append(mid(coin, t, px))
    return out


@pytest.mark.parametrize(("seed", "lateness_ms"), [(1, 0), (2, 250), (3, 1000)])
def test_bars_and_late_events_do_not_depend_on_batch_size(seed: int, lateness_ms: int) -> None:
    """The same bars (content) and the same late events for any batch size."""
    events = random_events(seed)
    results = {}
    for batch_size in (1, 3, 1000):
        out, late = run_bars(events, bar_ms=500, lateness_ms=lateness_ms, batch_size=batch_size)
        per_coin = {c: sorted(bar_key(b) for b in bs) for c, bs in by_coin(out).items()}
        late_keys = sorted((c, ev_key(e)) for c, e in late)
        results[batch_size] = (per_coin, late_keys)
        # every event ends up exactly once: in a bar or on the late stream
        in_bars = sum(len(k[-1]) for bs in per_coin.values() for k in bs)
        assert in_bars + len(late) == len(events)
    assert results[1] == results[3] == results[1000]
    if lateness_ms == 0:
        assert results[1][1], "the input should produce late events at lateness 0"


@pytest.mark.parametrize("batch_size", [1, 3, 1000])
def test_each_coin_bars_come_out_in_time_order_minimal(batch_size: int) -> None:
    """`FeatureState.update` needs each coin's bars in bar order ("in bar order").

    An on-time event of bar 0 that arrives after bar 1 was opened, then a 2 s jump that closes
    both bars at once: bar 0 must still come out first.
    """
    events: list[Event] = [
        mid("BTC", T0 + 1050, 1.0),
        mid("BTC", T0 + 990, 2.0),  # 60 ms behind, well within the 1000 ms lateness
        mid("BTC", T0 + 3100, 3.0),  # watermark T0+2100: bars 0 and 1 close together
    ]
    out, late = run_bars(events, bar_ms=1000, lateness_ms=1000, batch_size=batch_size)
    assert late == []
    assert [b.open_ms - T0 for _, b in out] == [0, 1000, 3000]


@pytest.mark.parametrize(("seed", "lateness_ms"), [(2, 250), (3, 1000)])
def test_each_coin_bars_come_out_in_time_order_for_any_batch_size(
    seed: int, lateness_ms: int
) -> None:
    """The per-coin bar *sequence* (what the feature state sees) is batch independent."""
    events = random_events(seed)
    seqs = {}
    for batch_size in (1, 3, 1000):
        out, _ = run_bars(events, bar_ms=500, lateness_ms=lateness_ms, batch_size=batch_size)
        seqs[batch_size] = {c: [b.open_ms for b in bs] for c, bs in by_coin(out).items()}
        for coin, opens in seqs[batch_size].items():
            assert opens == sorted(opens), (batch_size, coin)
    assert seqs[1] == seqs[3] == seqs[1000]


def test_grouped_batch_keeps_lateness_per_event() -> None:
    """Inside one batch an event still counts against the newest event before it, not after."""
    events: list[Event] = [
        mid("BTC", T0 + 100, 1.0),  # arrives before the newer event: on time
        mid("BTC", T0 + 1500, 2.0),
        mid("BTC", T0 + 900, 3.0),  # 600 ms behind 1500: late at lateness 0
    ]
    for batch_size in (1, 3):
        out, late = run_bars(events, bar_ms=1000, lateness_ms=0, batch_size=batch_size)
        assert [(c, e.time_ms) for c, e in late] == [("BTC", T0 + 900)]
        assert [(b.open_ms, [m.mid_px for m in b.mids]) for _, b in out] == [
            (T0, [1.0]),
            (T0 + 1000, [2.0]),
        ]


@pytest.mark.parametrize(("bar_ms", "lateness_ms"), [(0, 0), (-1, 0), (1000, -1)])
def test_fold_bars_rejects_bad_settings(bar_ms: int, lateness_ms: int) -> None:
    flow = Dataflow("bad")
    up: BxStream[Event] = op.input("in", flow, TestingSource([]))
    with pytest.raises(ValueError, match="must be"):
        fold_bars("bars", up, bar_ms=bar_ms, lateness_ms=lateness_ms)


# -- Bar.from_events ------------------------------------------------------------------------------


def test_bar_from_events_sorts_and_aggregates() -> None:
    c1 = candle("BTC", T0 - 60_000, T0 - 1, 99.0, 101.0, 98.0, 100.0, v=12.0)
    events: list[Event] = [
        mid("BTC", T0 + 900, 100.4),
        trades("BTC", T0 + 700, [(100.5, 1.0, "A"), (100.2, 3.0, "A")]),
        ctx("BTC", T0 + 800, oi=900.0),
        bbo("BTC", T0 + 600, 100.0, 1.0, 100.2, 1.0),
        trades("BTC", T0 + 200, [(99.8, 2.0, "B"), (100.9, 1.0, "B")]),
        ctx("BTC", T0 + 100, oi=1000.0),
        mid("BTC", T0 + 50, 99.0),
        bbo("BTC", T0 + 650, 100.1, 2.0, 100.3, 2.0),
        book("BTC", T0 + 10, [(99.0, 1.0)], [(99.2, 1.0)]),
        c1,
        Gap("BTC", T0 + 300, T0 + 300, "reconnect", 5_000),
    ]
    b = Bar.from_events("BTC", T0, 1000, events)
    lists = (b.trades, b.books, b.bbos, b.candles, b.mids, b.ctxs, b.gaps)
    assert [k for k in Kind for e in lists[k]] == [k for k in Kind for e in events if e.KIND is k]
    for k in Kind:
        assert all(e.KIND is k for e in lists[k])
    assert [g.time_ms for g in b.gaps] == [T0 + 300]
    assert (b.coin, b.open_ms, b.close_ms) == ("BTC", T0, T0 + 1000)
    assert [t.time_ms for t in b.trades] == [T0 + 200, T0 + 700]
    assert b.trade_count == 4
    assert b.buy_sz == pytest.approx(3.0)
    assert b.sell_sz == pytest.approx(4.0)
    assert b.buy_ntl == pytest.approx(199.6 + 100.9)
    assert b.sell_ntl == pytest.approx(100.5 + 300.6)
    assert b.vwap_px == pytest.approx((199.6 + 100.9 + 100.5 + 300.6) / 7.0)
    assert b.high_px == 100.9
    assert b.low_px == 99.8
    assert b.first_trade_px == 99.8  # first print of the earliest block
    assert b.last_trade_px == 100.2  # last print of the latest block
    assert b.bbo is not None
    assert b.bbo.bid_px == 100.1  # latest by time (650), not by position
    assert b.mid is not None
    assert b.mid.mid_px == 100.4
    assert b.ctx is not None
    assert b.ctx.open_interest == 900.0
    assert b.book is not None
    assert b.book.time_ms == T0 + 10
    assert b.candles == [c1]
    assert b.stream_stats() == {
        Stream.TRADES: (2, T0 + 700),
        Stream.L2BOOK: (1, T0 + 10),
        Stream.BBO: (2, T0 + 650),
        Stream.ALL_MIDS: (2, T0 + 900),
        Stream.ACTIVE_ASSET_CTX: (2, T0 + 800),
        Stream.CANDLE: (1, T0 - 1),
    }


def test_bar_without_trades_has_no_trade_aggregates() -> None:
    b = Bar.from_events("ETH", T0, 1000, [bbo("ETH", T0 + 1, 1.0, 1.0, 2.0, 1.0)])
    assert b.trade_count == 0
    assert (b.buy_sz, b.sell_sz, b.volume, b.notional) == (0.0, 0.0, 0.0, 0.0)
    assert b.vwap_px is None
    assert (b.high_px, b.low_px, b.first_trade_px, b.last_trade_px) == (None,) * 4
    assert b.book is None
    assert b.mid is None
    assert b.ctx is None
    assert b.stream_stats() == {Stream.BBO: (1, T0 + 1)}


def test_bar_with_zero_size_trades_has_no_vwap() -> None:
    b = Bar.from_events("ETH", T0, 1000, [trades("ETH", T0 + 5, [(10.0, 0.0, "B")])])
    assert b.trade_count == 1
    assert b.vwap_px is None
    assert (b.high_px, b.low_px) == (10.0, 10.0)
