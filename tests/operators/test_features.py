"""FeatureState.update on hand-made bars (exact numbers), properties, and the Bytewax step."""

from __future__ import annotations

import copy
import math
import pickle
import random
import statistics

import bytewax.operators as op
import numpy as np
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.events import BookSnapshot, Candle, Event, Gap, Stream
from operators import steps
from operators.bars import Bar
from operators.features import (
    FEATURE_NAMES,
    MS_PER_YEAR,
    FeatureConfig,
    FeatureState,
    FeatureVector,
)
from tests.operators.helpers import bar, bbo, book, candle, ctx, mid, quote_bar, trades

SMALL = FeatureConfig(window_obs=4, short_obs=2, long_obs=8, warmup_obs=3)  # trend window R = 2
QUOTE_NAMES = (
    "spread_bps",
    "weighted_mid_px",
    "microprice_px",
    "microprice_offset_bps",
    "tob_imbalance",
    "ofi",
    "ofi_norm",
    "ofi_zscore",
)
BOOK_NAMES = (
    "depth_band_bps",
    "depth_bid_usd",
    "depth_ask_usd",
    "depth_imbalance",
    "book_levels",
    "depth_ratio",
)
PERP_NAMES = (
    "funding_rate_1h",
    "premium_bps",
    "mark_oracle_bps",
    "open_interest",
    "oi_change_pct",
    "mark_px",
    "oracle_px",
)


# -- top of book and depth ------------------------------------------------------------------------


def test_top_of_book_features_from_a_known_bbo() -> None:
    s = FeatureState(SMALL)
    v = s.update(bar("BTC", 0, [bbo("BTC", 400, 100.0, 3.0, 100.2, 1.0)]))
    m = 100.1
    assert v.get("mid_px") == pytest.approx(m)
    assert v.get("spread_bps") == pytest.approx(1e4 * 0.2 / m)
    assert v.get("weighted_mid_px") == pytest.approx((100.0 * 1.0 + 100.2 * 3.0) / 4.0)  # 100.15
    assert v.get("tob_imbalance") == pytest.approx(0.5)  # (3 - 1) / 4
    # the Stoikov micro-price needs mid changes to learn from: not yet, and said so
    assert v.get("microprice_px") is None
    assert v.missing["microprice_px"] == v.missing["microprice_offset_bps"] == "warming_up"
    assert v.get("ofi") == 0.0  # one state, no transition yet
    assert v.missing["ofi_zscore"] == "warming_up"
    assert v.price_source == "mid"
    for n in BOOK_NAMES:
        assert v.get(n) is None
        assert v.missing[n] == "no_book"
    assert v.missing["spread_ratio"] == "warming_up"
    # a second bar: the spread median has short_obs=2 values now
    v2 = s.update(bar("BTC", 1000, [bbo("BTC", 1400, 100.0, 1.0, 100.4, 1.0)]))
    sp1, sp2 = 1e4 * 0.2 / 100.1, 1e4 * 0.4 / 100.2
    assert v2.get("spread_ratio") == pytest.approx(sp2 / ((sp1 + sp2) / 2))


def test_mid_comes_from_the_newest_of_bbo_and_book() -> None:
    s = FeatureState(SMALL)
    # book newer than bbo in bar 0
    v = s.update(
        bar(
            "BTC",
            0,
            [
                bbo("BTC", 100, 99.0, 1.0, 101.0, 1.0),
                book("BTC", 200, [(100.0, 4.0)], [(102.0, 1.0)]),
            ],
        )
    )
    assert v.get("mid_px") == pytest.approx(101.0)
    assert v.get("spread_bps") == pytest.approx(1e4 * 2.0 / 101.0)
    assert v.get("tob_imbalance") == pytest.approx(3.0 / 5.0)  # the book's top sizes
    # bbo newer than book in bar 1
    v = s.update(
        bar(
            "BTC",
            1000,
            [
                book("BTC", 1100, [(100.0, 1.0)], [(102.0, 1.0)]),
                bbo("BTC", 1300, 99.0, 1.0, 101.0, 3.0),
            ],
        )
    )
    assert v.get("mid_px") == pytest.approx(100.0)
    assert v.get("tob_imbalance") == pytest.approx(-0.5)
    # a bar with only an older-than-current bbo? bars are in order, so the next bbo is newer;
    # a one-sided bbo is ignored and the last top of book stays
    v = s.update(bar("BTC", 2000, [bbo("BTC", 2100, None, None, 105.0, 1.0)]))
    assert v.get("mid_px") == pytest.approx(100.0)
    # allMids only when there is no top of book at all
    s2 = FeatureState(SMALL)
    v = s2.update(bar("ETH", 0, [mid("ETH", 10, 55.5)]))
    assert v.get("mid_px") == 55.5
    assert v.price_source == "mid"
    assert v.missing["spread_bps"] == "no_quote"


def test_depth_within_band_on_a_known_book() -> None:
    cfg = FeatureConfig(window_obs=4, short_obs=2, long_obs=8, warmup_obs=3, depth_band_bps=10.0)
    s = FeatureState(cfg)
    bids = [(100.0, 2.0), (99.95, 3.0), (99.8, 10.0), (99.0, 100.0)]
    asks = [(100.1, 1.0), (100.15, 4.0), (100.3, 5.0)]
    v = s.update(bar("BTC", 0, [book("BTC", 500, bids, asks)]))
    # mid 100.05; band [99.94995, 100.15005]
    db = 100.0 * 2.0 + 99.95 * 3.0
    da = 100.1 * 1.0 + 100.15 * 4.0
    assert v.get("depth_band_bps") == 10.0
    assert v.get("depth_bid_usd") == pytest.approx(db)
    assert v.get("depth_ask_usd") == pytest.approx(da)
    assert v.get("depth_imbalance") == pytest.approx((db - da) / (db + da))
    assert v.get("book_levels") == 7.0
    assert v.get("mid_px") == pytest.approx(100.05)
    assert v.missing["depth_ratio"] == "warming_up"
    # second book: half the size everywhere -> ratio to the median of (D, D/2)
    half = [(p, q / 2) for p, q in bids], [(p, q / 2) for p, q in asks]
    v2 = s.update(bar("BTC", 1000, [book("BTC", 1500, *half)]))
    total = db + da
    assert v2.get("depth_ratio") == pytest.approx((total / 2) / ((total + total / 2) / 2))


def test_empty_and_unreadable_books_are_reported_not_zero() -> None:
    s = FeatureState(SMALL)
    v = s.update(bar("X", 0, [book("X", 10, [], [])]))
    assert v.get("book_levels") == 0.0
    for n in ("depth_bid_usd", "depth_ask_usd", "depth_imbalance", "depth_ratio"):
        assert v.get(n) is None
        assert v.missing[n] == "empty_book"
    s2 = FeatureState(SMALL)
    bad = BookSnapshot("X", 10, None, ([{"px": "abc", "sz": "1"}], [{"px": "2", "sz": "1"}]))
    v = s2.update(bar("X", 0, [bad]))
    for n in BOOK_NAMES:
        assert v.get(n) is None
        assert v.missing[n] == "bad_book"


# -- trade flow -----------------------------------------------------------------------------------


def flow_bar(k: int, prints: list[tuple[float, float, str]]) -> Bar:
    t = k * 1000
    return bar(
        "BTC", t, [bbo("BTC", t + 100, 99.95, 1.0, 100.05, 1.0), trades("BTC", t + 500, prints)]
    )


FLOW3 = FeatureConfig(window_obs=3, trend_obs=3, short_obs=2, long_obs=6, warmup_obs=3)


def test_trade_flow_over_the_window_and_per_bar() -> None:
    s = FeatureState(FLOW3)
    v0 = s.update(flow_bar(0, [(100.0, 1.0, "B"), (100.0, 2.0, "A")]))
    # first bar: the window is this bar, over its own 1 s
    assert v0.get("trade_flow_imbalance") == pytest.approx(-1.0 / 3.0)
    assert v0.get("trade_flow_imbalance_bar") == pytest.approx(-1.0 / 3.0)
    assert v0.get("signed_notional_usd") == pytest.approx(-100.0)
    assert v0.get("trade_rate_per_s") == pytest.approx(2.0)
    assert (v0.get("trade_count"), v0.get("buy_volume"), v0.get("sell_volume")) == (2.0, 1.0, 2.0)
    assert v0.get("vwap_px") == pytest.approx(100.0)
    s.update(flow_bar(1, [(101.0, 3.0, "B")]))
    v2 = s.update(flow_bar(2, [(99.0, 1.0, "A")]))
    # obs at closes 1000, 2000, 3000: the window's returns start after 1000 -> bars 1 and 2
    assert v2.get("trade_flow_imbalance") == pytest.approx((3.0 - 1.0) / 4.0)
    assert v2.get("signed_notional_usd") == pytest.approx(303.0 - 99.0)
    assert v2.get("trade_rate_per_s") == pytest.approx(2 / 2.0)
    s.update(flow_bar(3, [(100.0, 2.0, "B"), (100.0, 1.0, "B")]))
    v4 = s.update(flow_bar(4, [(102.0, 4.0, "A")]))
    # trend window R = 3 returns: obs at 2000..5000 -> bars 2, 3, 4
    assert v4.get("trade_flow_imbalance") == pytest.approx((3.0 - 5.0) / 8.0)
    assert v4.get("signed_notional_usd") == pytest.approx(300.0 - 99.0 - 408.0)
    assert v4.get("trade_rate_per_s") == pytest.approx(4 / 3.0)
    assert v4.get("trade_flow_imbalance_bar") == pytest.approx(-1.0)
    assert (v4.get("trade_count"), v4.get("buy_volume"), v4.get("sell_volume")) == (1.0, 0.0, 4.0)
    assert v4.get("vwap_px") == pytest.approx(102.0)


def test_trade_flow_window_is_the_trend_window() -> None:
    """R = 2 < W = 3: the flow window holds the last two returns' bars only."""
    s = FeatureState(FeatureConfig(window_obs=3, trend_obs=2, short_obs=2, long_obs=6))
    for k, prints in enumerate(
        [
            [(100.0, 1.0, "B"), (100.0, 2.0, "A")],
            [(101.0, 3.0, "B")],
            [(99.0, 1.0, "A")],
            [(100.0, 2.0, "B"), (100.0, 1.0, "B")],
        ]
    ):
        v = s.update(flow_bar(k, prints))
    # obs at closes 1000..4000: R = 2 returns start after 2000 -> bars 2 and 3
    assert v.get("trade_flow_imbalance") == pytest.approx((3.0 - 1.0) / 4.0)
    assert v.get("signed_notional_usd") == pytest.approx(300.0 - 99.0)
    assert v.get("trade_rate_per_s") == pytest.approx(3 / 2.0)


def test_bar_without_trades_after_trades_keeps_window_flow() -> None:
    s = FeatureState(FLOW3)
    s.update(flow_bar(0, [(100.0, 2.0, "B")]))
    v = s.update(quote_bar("BTC", 1, 100.0))
    # two prices: the window holds one return (bar 1), which had no trades
    assert v.get("trade_flow_imbalance") is None
    assert v.missing["trade_flow_imbalance"] == "no_trades_in_window"
    assert v.get("signed_notional_usd") == 0.0
    assert v.get("trade_rate_per_s") == 0.0
    assert v.missing["trade_flow_imbalance_bar"] == "no_trades_in_bar"
    assert v.missing["vwap_px"] == "no_trades_in_bar"
    assert v.get("trade_count") == 0.0  # the trades stream exists: zero prints is a fact
    s.update(flow_bar(2, [(100.0, 1.0, "A"), (100.0, 3.0, "B")]))
    v = s.update(quote_bar("BTC", 3, 100.0))
    # window: bars 1..3 (returns after the price at 1000); only bar 2 traded
    assert v.get("trade_flow_imbalance") == pytest.approx(0.5)
    assert v.get("signed_notional_usd") == pytest.approx(200.0)
    assert v.get("trade_rate_per_s") == pytest.approx(2 / 3.0)


def test_no_trades_stream_is_reported() -> None:
    v = FeatureState(SMALL).update(quote_bar("BTC", 0, 100.0))
    for n in (
        "trade_flow_imbalance",
        "signed_notional_usd",
        "trade_rate_per_s",
        "trade_rate_burst",
        "vpin",
    ):
        assert v.get(n) is None
        assert v.missing[n] == "no_trades_stream"


def test_trade_only_coin_prices_from_last_trade() -> None:
    s = FeatureState(SMALL)
    v = s.update(bar("SOL", 0, [trades("SOL", 10, [(20.0, 1.0, "B"), (20.5, 1.0, "A")])]))
    assert v.price_source == "last_trade"
    assert v.observations == 1
    assert v.get("mid_px") is None
    assert v.missing["mid_px"] == "no_quote"


# -- price path statistics ------------------------------------------------------------------------


def brute_window(
    prices: list[float], window_obs: int, trend_obs: int, q: int = 2
) -> dict[str, float]:
    """The window statistics straight from their definitions (DESIGN.md §4), with numpy."""
    p = np.array(prices[-(window_obs + 1) :], dtype=float)
    r = np.diff(np.log(p))
    pr = np.array(prices[-(trend_obs + 1) :], dtype=float)
    rr = np.diff(np.log(pr))
    move = math.log(pr[-1] / pr[0])
    ss = float(np.sum(r * r))
    out = {
        "realized_vol_bps": 1e4 * math.sqrt(ss),
        "momentum_bps": 1e4 * move,
        "momentum_z": move / math.sqrt(ss * len(rr) / len(r)),
        "efficiency_ratio": min(1.0, abs(move) / float(np.sum(np.abs(rr)))),
        "price_zscore": float((p[-1] - p.mean()) / p.std(ddof=1)),
        "sum_r2": ss,
    }
    if len(r) >= 2 * q:
        qr = np.array([np.sum(r[i : i + q]) for i in range(len(r) - q + 1)])
        out["variance_ratio"] = float(np.mean(qr * qr) / (q * np.mean(r * r)))
    return out


PATH_NAMES = ("realized_vol_bps", "momentum_bps", "momentum_z", "efficiency_ratio", "price_zscore")


def test_price_path_statistics_match_numpy() -> None:
    path = [100.0, 101.0, 100.0, 102.0, 101.0, 103.0, 104.0, 99.0]
    s = FeatureState(SMALL)  # window 4 returns = 5 prices; trend window 2 returns
    for k, px in enumerate(path):
        v = s.update(quote_bar("BTC", k, px))
        assert v.get("mid_px") == pytest.approx(px)
        if k < 2:
            for n in PATH_NAMES:
                assert v.get(n) is None
                assert v.missing[n] == "warming_up"
            continue
        want = brute_window(path[: k + 1], SMALL.window_obs, SMALL.r)
        for n in PATH_NAMES:
            assert v.get(n) == pytest.approx(want[n], rel=1e-9, abs=1e-12), (k, n)
        n_prices = min(k + 1, SMALL.window_obs + 1)
        span = (n_prices - 1) * 1000
        assert v.window_span_ms == span
        assert v.get("realized_vol_ann") == pytest.approx(
            math.sqrt(want["sum_r2"] * MS_PER_YEAR / span), rel=1e-9
        )
    # hand-check the last trend window: prices 103, 104, 99
    assert v.get("momentum_bps") == pytest.approx(1e4 * math.log(99 / 103))
    path_len = abs(math.log(104 / 103)) + abs(math.log(99 / 104))
    assert v.get("efficiency_ratio") == pytest.approx(abs(math.log(99 / 103)) / path_len)
    # variance ratio VR(2) over the W window: 4 returns, 3 overlapping 2-period returns
    r = [math.log(b / a) for a, b in [(102, 101), (101, 103), (103, 104), (104, 99)]]
    q2 = [r[0] + r[1], r[1] + r[2], r[2] + r[3]]
    want_vr = (sum(x * x for x in q2) / 3) / (2 * sum(x * x for x in r) / 4)
    assert v.get("variance_ratio") == pytest.approx(want_vr, rel=1e-9)


def test_flat_prices_give_zero_vol_and_zero_zscore() -> None:
    s = FeatureState(SMALL)
    for k in range(6):
        v = s.update(quote_bar("BTC", k, 50.0))
    assert v.get("realized_vol_bps") == 0.0
    assert v.get("momentum_bps") == 0.0
    assert v.get("momentum_z") == 0.0
    assert v.get("efficiency_ratio") == 0.0
    assert v.get("price_zscore") == 0.0
    assert v.get("variance_ratio") is None
    assert v.missing["variance_ratio"] == "flat_prices"


def returns_path(returns: list[float], p0: float = 100.0) -> list[float]:
    x = np.concatenate([[0.0], np.cumsum(returns)])
    return [float(p0 * math.exp(v)) for v in x]


def test_vol_expansion_ratio_needs_window_obs_returns() -> None:
    cfg = FeatureConfig(window_obs=20, short_obs=5, long_obs=40, warmup_obs=5)
    s = FeatureState(cfg)
    prices = returns_path([0.001 * (-1) ** i for i in range(25)])
    for k, px in enumerate(prices):
        v = s.update(quote_bar("BTC", k, px))
        if k < cfg.window_obs:  # k returns so far
            assert v.get("vol_expansion_ratio") is None
            assert v.missing["vol_expansion_ratio"] == "warming_up"
        else:
            assert v.get("vol_expansion_ratio") is not None
            assert "vol_expansion_ratio" not in v.missing


def brute_ver(returns: list[float], short: int, long: int, dt_ms: int = 1000) -> float:
    """VER from its definition: the newest short-window variance rate over the rolling median of
    the short-window rates (one per observation once S returns exist, the last L of them)."""
    rates = [
        sum(x * x for x in returns[i + 1 - short : i + 1]) / (short * dt_ms)
        for i in range(short - 1, len(returns))
    ]
    base = statistics.median(rates[-long:])
    return math.sqrt(rates[-1] / base)


@pytest.mark.parametrize(
    ("returns", "expected"),
    [
        # constant |r| on a regular 1 s clock: every short-window rate equals the baseline
        ([0.002 * (-1) ** i for i in range(30)], 1.0),
        # 25 returns of 0.001 then 5 of 0.002: the median rate is still the calm one (21 of the
        # 26 rates), the newest is 4x it
        ([0.001 * (-1) ** i for i in range(25)] + [0.002 * (-1) ** i for i in range(5)], 2.0),
        # a calm stretch after a wild one: the median ignores the wild minority
        ([0.004 * (-1) ** i for i in range(8)] + [0.001 * (-1) ** i for i in range(22)], None),
    ],
)
def test_vol_expansion_ratio_matches_the_formula(
    returns: list[float], expected: float | None
) -> None:
    """VER = sqrt(rate_S / median of past rate_S) (DESIGN.md §4), rates per ms."""
    cfg = FeatureConfig(window_obs=20, short_obs=5, long_obs=40, warmup_obs=5)
    s = FeatureState(cfg)
    for k, px in enumerate(returns_path(returns)):
        v = s.update(quote_bar("BTC", k, px))
    want = brute_ver(returns, 5, 40)
    if expected is not None:
        assert want == pytest.approx(expected)
    assert v.get("vol_expansion_ratio") == pytest.approx(want, rel=1e-6)


# -- candles --------------------------------------------------------------------------------------


def candle_bar(k: int, o: float, h: float, low: float, c: float, v: float) -> Bar:
    """Minute candle ``k`` (open k·60 s, close T = open + 59 999 ms) in the 1 s bar holding T."""
    open_ms = k * 60_000
    close = open_ms + 59_999
    return bar("BTC", close // 1000 * 1000, [candle("BTC", open_ms, close, o, h, low, c, v=v)])


def test_candle_only_input() -> None:
    s = FeatureState(SMALL)
    c = [
        (100.0, 102.0, 99.0, 101.0, 10.0),
        (101.0, 104.0, 100.0, 103.0, 30.0),
        (103.0, 103.5, 101.0, 102.0, 20.0),
    ]
    vs = [s.update(candle_bar(k, *x)) for k, x in enumerate(c)]
    v = vs[-1]
    assert [x.price_source for x in vs] == ["candle_close"] * 3
    assert v.observations == 3
    terms = [math.log(h / low) ** 2 / (4 * math.log(2)) for _, h, low, _, _ in c]
    assert vs[0].get("parkinson_vol_ann") == pytest.approx(
        math.sqrt(terms[0] * MS_PER_YEAR / 60_000)
    )
    assert v.get("parkinson_vol_ann") == pytest.approx(
        math.sqrt(sum(terms) * MS_PER_YEAR / 180_000)
    )
    gk = [
        0.5 * math.log(h / low) ** 2 - (2 * math.log(2) - 1) * math.log(c / o) ** 2
        for o, h, low, c, _ in c
    ]
    assert v.get("garman_klass_vol_ann") == pytest.approx(
        math.sqrt(sum(gk) * MS_PER_YEAR / 180_000)
    )
    assert v.get("momentum_bps") == pytest.approx(1e4 * math.log(102.0 / 101.0))
    assert v.candle_interval_ms == 60_000
    assert v.streams[Stream.CANDLE].interval_ms == 60_000.0
    assert set(v.streams) == {Stream.CANDLE}
    # volume from the candles (no sides): ratio to the median of 10, 30, 20
    assert v.get("volume_ratio") == pytest.approx(20.0 / 20.0)
    assert vs[1].get("volume_ratio") == pytest.approx(30.0 / 20.0)
    # quotes, book, trades-stream and perp features: null with a reason, never a silent 0
    assert v.missing["mid_px"] == "no_quote"
    for n in QUOTE_NAMES:
        assert v.get(n) is None
        assert v.missing[n] == "no_quote"
    for n in BOOK_NAMES:
        assert v.get(n) is None
        assert v.missing[n] == "no_book"
    for n in ("trade_flow_imbalance", "signed_notional_usd", "trade_rate_per_s"):
        assert v.get(n) is None
        assert v.missing[n] == "no_trades_stream"
    for n in PERP_NAMES:
        assert v.get(n) is None
        assert v.missing[n] == "no_asset_ctx"
    assert v.missing["vwap_px"] == "no_trades_stream"


def test_candle_only_trade_counts_are_null_not_zero() -> None:
    """Without a trades stream the bar's prints are unknown (the candle says n=7): not 0."""
    v = FeatureState(SMALL).update(candle_bar(0, 100.0, 102.0, 99.0, 101.0, 10.0))
    for n in ("trade_count", "buy_volume", "sell_volume"):
        assert v.get(n) is None, n
        assert v.missing.get(n) == "no_trades_stream", n


def test_no_candles_reason() -> None:
    v = FeatureState(SMALL).update(quote_bar("BTC", 0, 10.0))
    for n in ("parkinson_vol_ann", "garman_klass_vol_ann"):
        assert v.get(n) is None
        assert v.missing[n] == "no_candles"


# -- perp context ---------------------------------------------------------------------------------


def test_perp_context_features() -> None:
    s = FeatureState(FeatureConfig(window_obs=3, short_obs=2, long_obs=6, warmup_obs=3))
    oi = [1000.0, 990.0, 980.0]
    for k, x in enumerate(oi):
        v = s.update(
            bar(
                "BTC",
                k * 1000,
                [
                    ctx(
                        "BTC",
                        k * 1000 + 500,
                        funding=1.25e-5,
                        oi=x,
                        mark=100.5,
                        oracle=100.2,
                        mid_px=100.4,
                        premium=0.0003,
                    )
                ],
            )
        )
        if k == 0:
            assert v.missing["oi_change_pct"] == "warming_up"
    assert v.get("funding_rate_1h") == 1.25e-5
    assert v.get("premium_bps") == pytest.approx(3.0)
    assert v.get("open_interest") == 980.0
    assert v.get("oi_change_pct") == pytest.approx(-2.0)
    assert v.get("mark_px") == 100.5
    assert v.get("oracle_px") == 100.2
    assert v.get("mark_oracle_bps") == pytest.approx(1e4 * 0.3 / 100.2)
    # the ctx mid is the price when nothing better exists
    assert v.get("mid_px") == 100.4
    assert v.price_source == "mid"
    v = s.update(bar("BTC", 3000, [ctx("BTC", 3500, premium=None)]))
    assert v.get("premium_bps") is None
    assert v.missing["premium_bps"] == "no_premium"


def test_no_asset_ctx_reason() -> None:
    v = FeatureState(SMALL).update(quote_bar("BTC", 0, 10.0))
    for n in PERP_NAMES:
        assert v.missing[n] == "no_asset_ctx"


# -- order flow, micro-price, VPIN, burst ---------------------------------------------------------


def bbo_bar(k: int, states: list[tuple[float, float, float, float]], coin: str = "BTC") -> Bar:
    """Bar ``k`` holding one bbo per state, 100 ms apart, in order."""
    t = k * 1000
    return bar(coin, t, [bbo(coin, t + 100 * (i + 1), *st) for i, st in enumerate(states)])


OFI_STATES = [
    (100.0, 5.0, 101.0, 3.0),
    (100.0, 7.0, 101.0, 3.0),  # e = +2
    (100.5, 2.0, 101.0, 1.0),  # e = +4
    (100.5, 2.0, 100.8, 4.0),  # e = -4
]


def test_ofi_over_a_bar_of_bbo_updates() -> None:
    s = FeatureState(SMALL)
    v = s.update(bbo_bar(0, OFI_STATES))
    assert v.get("ofi") == pytest.approx(2.0 + 4.0 - 4.0)
    # touch depth (q_b + q_a)/2 of the four states: 4, 5, 1.5, 3 -> mean 3.375
    assert v.get("ofi_norm") == pytest.approx(2.0 / 3.375)
    assert v.missing["ofi_zscore"] == "warming_up"
    # the first state of the next bar is a transition from the last state of this one
    v = s.update(bbo_bar(1, [(100.5, 2.0, 100.8, 1.0)]))  # ask queue 4 -> 1: e = +3
    assert v.get("ofi") == pytest.approx(3.0)
    # like the trade flow, the window holds the bars after its first price: bar 1 only
    assert v.get("ofi_norm") == pytest.approx(3.0 / 1.5)
    # a bar without quote updates: no order flow (the coin has a quote stream: a fact, 0)
    v = s.update(bar("BTC", 2000, [trades("BTC", 2500, [(100.6, 1.0, "B")])]))
    assert v.get("ofi") == 0.0
    # z-score against the previous bars' OFI (2, 3, 0) once S = 2 values exist
    v = s.update(bbo_bar(3, [(100.5, 2.0, 100.8, 2.0)]))  # ask queue 1 -> 2: e = −1
    assert v.get("ofi") == pytest.approx(-1.0)
    hist = [2.0, 3.0, 0.0]
    mu, sd = statistics.mean(hist), statistics.stdev(hist)
    assert v.get("ofi_zscore") == pytest.approx((-1.0 - mu) / sd)


def test_ofi_from_books_when_the_coin_has_no_bbo_stream() -> None:
    s = FeatureState(SMALL)
    s.update(bar("X", 0, [book("X", 500, [(100.0, 5.0)], [(101.0, 3.0)])]))
    v = s.update(bar("X", 1000, [book("X", 1500, [(100.0, 7.0)], [(101.0, 3.0)])]))
    assert v.get("ofi") == pytest.approx(2.0)
    # with a bbo stream the books are not used for order flow (bbo is the exact top of book)
    s2 = FeatureState(SMALL)
    s2.update(bbo_bar(0, [(100.0, 5.0, 101.0, 3.0)], coin="X"))
    v = s2.update(bar("X", 1000, [book("X", 1500, [(100.0, 7.0)], [(101.0, 3.0)])]))
    assert v.get("ofi") == 0.0


def test_gap_breaks_the_order_flow_chain() -> None:
    s = FeatureState(SMALL)
    s.update(bbo_bar(0, [(100.0, 5.0, 101.0, 3.0)]))
    b = bbo_bar(1, [(100.0, 9.0, 101.0, 3.0)])
    b.gaps.append(Gap("BTC", 1050, None, "reconnect", 5000))
    v = s.update(b)
    assert v.get("ofi") == 0.0  # no transition across the hole
    assert v.gaps == 1


def test_stoikov_micro_price_from_the_coins_own_mid_changes() -> None:
    cfg = FeatureConfig(
        window_obs=4,
        short_obs=2,
        long_obs=8,
        warmup_obs=3,
        micro_buckets=4,
        micro_min_obs=1.0,
        micro_prior_obs=0.0,  # the credits themselves (the shrinkage: test_microstructure)
    )
    s = FeatureState(cfg)
    # states (mid, bucket of I): (100.5, 3) -> (101.5, 2): bucket 3 saw +1 tick = +1 spread,
    # credited unclipped (mirror: bucket 0 −1), all in the one-tick spread state
    v = s.update(bbo_bar(0, [(100.0, 3.0, 101.0, 1.0), (101.0, 1.0, 102.0, 1.0)]))
    assert s.book.micro.table() == pytest.approx([-1.0, None, None, 1.0])
    assert v.get("microprice_px") is None  # the current state, bucket 2, has no history yet
    assert v.missing["microprice_px"] == "warming_up"
    # (101.5, 3) -> (102.5, 2): bucket 2 (the state at 101.5 with I = .5) and bucket 3 saw +1
    v = s.update(bbo_bar(1, [(101.0, 3.0, 102.0, 1.0), (102.0, 1.0, 103.0, 1.0)]))
    assert s.book.micro.table() == pytest.approx([-1.0, -1.0, 1.0, 1.0])
    # bucket 2: g = +1: a tick past the mid, half a tick beyond the ask (nothing clamps it)
    assert v.get("microprice_px") == pytest.approx(102.5 + 1.0 * 1.0)
    v = s.update(bbo_bar(2, [(102.0, 2.0, 103.0, 6.0)]))  # I = 0.25 -> bucket 1: g = −1
    assert v.get("microprice_px") == pytest.approx(102.5 - 1.0 * 1.0)
    assert v.get("microprice_offset_bps") == pytest.approx(-1e4 * 1.0 / 102.5)
    assert v.get("weighted_mid_px") == pytest.approx((102.0 * 6.0 + 103.0 * 2.0) / 8.0)


def trade_bar(k: int, prints: list[tuple[float, float, str]], coin: str = "BTC") -> Bar:
    t = k * 1000
    return bar(coin, t, [trades(coin, t + 500, prints)])


def test_vpin_buckets_from_the_coins_mean_bar_volume() -> None:
    cfg = FeatureConfig(
        window_obs=4,
        short_obs=2,
        long_obs=8,
        warmup_obs=3,
        vpin_buckets=2,
        vpin_min_buckets=1,
        vpin_bucket_obs=1.0,
    )
    s = FeatureState(cfg)
    v = s.update(trade_bar(0, [(100.0, 4.0, "B")]))
    assert v.missing["vpin"] == "warming_up"  # no volume history yet: no bucket size
    s.update(trade_bar(1, [(100.0, 4.0, "A")]))
    # bucket size = 1 x mean bar volume (4) of the bars before; buy 3 + sell 1 closes the
    # first bucket (|1 - 3| = 2), the remaining sell 4 fills a second one (4)
    v = s.update(trade_bar(2, [(100.0, 3.0, "B"), (100.0, 5.0, "A")]))
    assert v.get("vpin") == pytest.approx((2.0 + 4.0) / (4.0 + 4.0))


def test_trade_rate_burst_is_short_rate_over_long_rate() -> None:
    cfg = FeatureConfig(window_obs=4, short_obs=2, long_obs=8, warmup_obs=3)
    s = FeatureState(cfg)
    counts = [1, 1, 1, 1, 4]
    for k, n in enumerate(counts):
        v = s.update(trade_bar(k, [(100.0, 1.0, "B")] * n))
        if k < 3:  # needs 2·S bars of history
            assert v.missing["trade_rate_burst"] == "warming_up"
    # short: 5 prints over the last 2 s; long: 8 prints over 5 s
    assert v.get("trade_rate_burst") == pytest.approx((5 / 2000) / (8 / 5000))


def test_book_walk_book_is_passed_on() -> None:
    s = FeatureState(SMALL)
    b = book("BTC", 500, [(100.0, 1.0)], [(101.0, 1.0)])
    v = s.update(bar("BTC", 0, [b]))
    assert v.book is b
    v = s.update(quote_bar("BTC", 1, 100.0))
    assert v.book is b  # the latest usable book stays
    v = s.update(bar("BTC", 2000, [book("BTC", 2500, [], [])]))
    assert v.book is None  # an empty book cannot be walked


# -- warm-up and stream clocks --------------------------------------------------------------------


def test_warming_up_until_warmup_obs() -> None:
    cfg = FeatureConfig(window_obs=6, short_obs=2, long_obs=8, warmup_obs=4)
    s = FeatureState(cfg)
    flags = []
    for k in range(6):
        v = s.update(quote_bar("BTC", k, 100.0 + k))
        flags.append((v.observations, v.warming_up, v.warmup_obs))
    assert flags == [
        (1, True, 4),
        (2, True, 4),
        (3, True, 4),
        (4, False, 4),
        (5, False, 4),
        (6, False, 4),
    ]
    # a bar without a price is not an observation
    s2 = FeatureState(cfg)
    v = s2.update(bar("BTC", 0, [book("BTC", 1, [], [])]))
    assert v.observations == 0
    assert v.warming_up


def test_stream_clocks_are_per_stream_and_copied() -> None:
    s = FeatureState(SMALL)
    v1 = s.update(
        bar(
            "BTC",
            0,
            [
                bbo("BTC", 100, 1.0, 1.0, 1.1, 1.0, recv_ms=150),
                bbo("BTC", 400, 1.0, 1.0, 1.1, 1.0, recv_ms=460),
                trades("BTC", 300, [(1.05, 1.0, "B")]),
            ],
        )
    )
    assert set(v1.streams) == {Stream.BBO, Stream.TRADES}
    c = v1.streams[Stream.BBO]
    assert (c.last_ms, c.last_recv_ms, c.count, c.interval_ms) == (400, 460, 2, None)
    v2 = s.update(
        bar(
            "BTC",
            1000,
            [
                bbo("BTC", 1000, 1.0, 1.0, 1.1, 1.0),
                bbo("BTC", 1200, 1.0, 1.0, 1.1, 1.0),
                bbo("BTC", 1600, 1.0, 1.0, 1.1, 1.0),
            ],
        )
    )
    c2 = v2.streams[Stream.BBO]
    assert (c2.last_ms, c2.count) == (1600, 5)
    assert c2.interval_ms == pytest.approx((1600 - 400) / 3)
    assert v2.streams[Stream.TRADES].count == 1
    # the earlier vector's clocks did not move
    assert (c.last_ms, c.last_recv_ms, c.count, c.interval_ms) == (400, 460, 2, None)
    assert v1.streams[Stream.BBO] is not v2.streams[Stream.BBO]
    v3 = s.update(bar("BTC", 2000, [bbo("BTC", 2600, 1.0, 1.0, 1.1, 1.0)]))
    assert v3.streams[Stream.BBO].interval_ms == pytest.approx(400 + 0.1 * (1000 - 400))
    assert c2.interval_ms == pytest.approx(400)
    assert v3.event_count == 1
    assert v1.event_count == 3


# -- every null has a reason ----------------------------------------------------------------------


def test_every_null_feature_has_a_reason_and_no_value_is_both() -> None:
    """DESIGN.md §4: a feature that cannot be computed is null *and* `missing` says why."""
    s = FeatureState()  # default windows: short_obs=10
    problems = []
    for k in range(15):
        t = k * 1000
        v = s.update(
            bar(
                "BTC",
                t,
                [
                    bbo("BTC", t + 100, 99.9, 1.0, 100.1, 1.0),
                    trades("BTC", t + 200, [(100.0, 1.0, "B")]),
                ],
            )
        )
        for n in FEATURE_NAMES:
            if (v.values[n] is None) != (n in v.missing):
                problems.append((k, n, v.values[n], v.missing.get(n)))
    assert problems == []


# -- properties -----------------------------------------------------------------------------------

prices = st.floats(min_value=0.01, max_value=1e5, allow_nan=False, allow_infinity=False)
sizes = st.one_of(st.just(0.0), st.floats(min_value=1e-4, max_value=1e4))
rel = st.floats(min_value=0.0, max_value=0.05)


@st.composite
def bar_specs(draw: st.DrawFn) -> list[Event]:
    """One bar's events, timed within [0, 1000) ms (the test shifts them to bar k)."""
    px = draw(prices)
    events: list[Event] = []
    if draw(st.booleans()):
        half = px * draw(rel) / 2
        events.append(bbo("X", 100, px - half, draw(sizes), px + half, draw(sizes)))
    if draw(st.booleans()):
        n_b = draw(st.integers(0, 4))
        n_a = draw(st.integers(0, 4))
        step = px * draw(st.floats(min_value=1e-5, max_value=0.01))
        bids = [(px - (i + 0.5) * step, draw(sizes)) for i in range(n_b)]
        asks = [(px + (i + 0.5) * step, draw(sizes)) for i in range(n_a)]
        if all(p > 0 for p, _ in bids):
            events.append(book("X", 200, bids, asks))
    if draw(st.booleans()):
        n = draw(st.integers(1, 4))
        events.append(
            trades(
                "X",
                300,
                [
                    (px * (1 + draw(rel) - 0.025), draw(sizes), draw(st.sampled_from("AB")))
                    for _ in range(n)
                ],
            )
        )
    if draw(st.booleans()):
        lo = px * (1 - draw(rel))
        hi = px * (1 + draw(rel))
        events.append(candle("X", -59_000, 999, px, hi, lo, px, v=draw(sizes)))
    if draw(st.booleans()):
        events.append(mid("X", 400, px))
    if draw(st.booleans()):
        events.append(
            ctx(
                "X",
                500,
                oi=draw(st.one_of(st.just(0.0), st.floats(min_value=1e-3, max_value=1e7))),
                mid_px=draw(st.one_of(st.none(), prices)),
                premium=draw(st.one_of(st.none(), st.floats(-0.01, 0.01))),
            )
        )
    return events


def shift(e: Event, dt: int) -> Event:
    e = copy.copy(e)
    e.time_ms += dt
    if isinstance(e, Candle):
        e.open_ms += dt
    return e


BOUNDED = {
    "tob_imbalance": (-1.0, 1.0),
    "depth_imbalance": (-1.0, 1.0),
    "trade_flow_imbalance": (-1.0, 1.0),
    "trade_flow_imbalance_bar": (-1.0, 1.0),
    "efficiency_ratio": (0.0, 1.0),
    "spread_bps": (0.0, math.inf),
    "realized_vol_bps": (0.0, math.inf),
    "parkinson_vol_ann": (0.0, math.inf),
    "vol_expansion_ratio": (0.0, math.inf),
    "trade_rate_per_s": (0.0, math.inf),
    "depth_bid_usd": (0.0, math.inf),
    "depth_ask_usd": (0.0, math.inf),
    "spread_ratio": (0.0, math.inf),
    "depth_ratio": (0.0, math.inf),
    "volume_ratio": (0.0, math.inf),
    "trade_rate_burst": (0.0, math.inf),
    "vpin": (0.0, 1.0),
    "variance_ratio": (0.0, math.inf),
    "garman_klass_vol_ann": (0.0, math.inf),
    "book_levels": (0.0, math.inf),
    "trade_count": (0.0, math.inf),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(bar_specs(), min_size=1, max_size=30))
def test_features_are_finite_and_bounded_on_arbitrary_bars(specs: list[list[Event]]) -> None:
    s = FeatureState(FeatureConfig(window_obs=5, short_obs=2, long_obs=8, warmup_obs=3))
    for k, events in enumerate(specs):
        b = bar("X", k * 1000, [shift(e, k * 1000) for e in events])
        v = s.update(b)
        for n in FEATURE_NAMES:
            x = v.values[n]
            if x is None:
                continue
            assert math.isfinite(x), (k, n, x)
            if n in BOUNDED:
                lo, hi = BOUNDED[n]
                assert lo - 1e-12 <= x <= hi + 1e-12, (k, n, x)
        weighted, mid, spread = v.get("weighted_mid_px"), v.get("mid_px"), v.get("spread_bps")
        if weighted is not None and mid is not None and spread is not None:
            # the size-weighted mid lies between bid and ask
            assert abs(1e4 * (weighted - mid) / mid) <= spread / 2 * (1 + 1e-9) + 1e-9, k
        for n in FEATURE_NAMES:  # never both a value and a reason, never neither
            assert (v.values[n] is None) == (n in v.missing), (k, n)


# -- running sums vs brute force (drift guard) ----------------------------------------------------


def test_window_sums_match_brute_force_over_many_windows() -> None:
    cfg = FeatureConfig(window_obs=20, short_obs=5, long_obs=50, warmup_obs=5)
    s = FeatureState(cfg)
    rng = random.Random(42)
    px = 2000.0
    prices: list[float] = []
    flows: list[tuple[int, float, float, float, int]] = []  # close, buy, sell, signed ntl, count
    for k in range(7 * cfg.window_obs + 3):  # > 2 windows, several exact re-sums
        px *= math.exp(rng.gauss(0.0, 2e-3) + (0.01 if k == 77 else 0.0))
        prints = [
            (px * (1 + rng.uniform(-1e-4, 1e-4)), rng.uniform(0.001, 5.0), rng.choice("AB"))
            for _ in range(rng.randint(0, 5))
        ]
        events: list[Event] = [bbo("ETH", k * 1000 + 10, px - 0.05, 1.0, px + 0.05, 1.0)]
        if prints:
            events.append(trades("ETH", k * 1000 + 20, prints))
        b = bar("ETH", k * 1000, events)
        v = s.update(b)
        prices.append(px)
        flows.append((b.close_ms, b.buy_sz, b.sell_sz, b.buy_ntl - b.sell_ntl, b.trade_count))
        if k < 2:
            continue
        want = brute_window(prices, cfg.window_obs, cfg.r, cfg.q)
        for n in ("realized_vol_bps", "momentum_bps", "momentum_z", "efficiency_ratio"):
            assert v.get(n) == pytest.approx(want[n], rel=1e-9, abs=1e-9), (k, n)
        assert v.get("price_zscore") == pytest.approx(want["price_zscore"], rel=1e-6, abs=1e-9), k
        if "variance_ratio" in want:
            assert v.get("variance_ratio") == pytest.approx(want["variance_ratio"], rel=1e-9), k
        else:
            assert v.missing["variance_ratio"] == "warming_up", k
        # the flow windows cover the trend window: bars after the price R observations back
        start = (k + 1 - min(k, cfg.r)) * 1000
        win = [f for f in flows if f[0] > start]
        buy = sum(f[1] for f in win)
        sell = sum(f[2] for f in win)
        if buy + sell > 0:
            assert v.get("trade_flow_imbalance") == pytest.approx(
                (buy - sell) / (buy + sell), rel=1e-9, abs=1e-12
            ), k
        assert v.get("signed_notional_usd") == pytest.approx(
            sum(f[3] for f in win), rel=1e-9, abs=1e-6
        ), k
        assert v.get("trade_rate_per_s") == pytest.approx(
            1000.0 * sum(f[4] for f in win) / (b.close_ms - start), rel=1e-12
        ), k


# -- the Bytewax step -----------------------------------------------------------------------------


def test_features_step_keeps_state_per_coin() -> None:
    inp: list[tuple[str, Bar]] = [
        ("BTC", quote_bar("BTC", 0, 100.0)),
        ("ETH", quote_bar("ETH", 0, 10.0)),
        ("BTC", quote_bar("BTC", 1, 101.0)),
        ("ETH", quote_bar("ETH", 1, 9.0)),
        ("BTC", quote_bar("BTC", 2, 102.0)),
    ]
    flow = Dataflow("features_test")
    up = op.input("in", flow, TestingSource(inp))
    out: list[tuple[str, FeatureVector]] = []
    op.output("out", steps.features("features", up, SMALL), TestingSink(out))
    run_main(flow)
    assert [(c, x.coin, x.close_ms, x.observations) for c, x in out] == [
        ("BTC", "BTC", 1000, 1),
        ("ETH", "ETH", 1000, 1),
        ("BTC", "BTC", 2000, 2),
        ("ETH", "ETH", 2000, 2),
        ("BTC", "BTC", 3000, 3),
    ]
    last = out[-1][1]
    assert last.get("momentum_bps") == pytest.approx(1e4 * math.log(102.0 / 100.0))
    assert last.get("efficiency_ratio") == pytest.approx(1.0)
    eth = out[3][1]
    assert eth.get("mid_px") == pytest.approx(9.0)
    assert eth.missing["momentum_bps"] == "warming_up"


# -- state snapshots (Bytewax recovery) ------------------------------------------------------------


def test_state_pickles_mid_stream_and_resumes_identically() -> None:
    """A restored state (Bytewax snapshots it) continues exactly like the original."""
    rng = random.Random(3)
    bars: list[Bar] = []
    px = 100.0
    for k in range(120):
        t = k * 1000
        px *= math.exp(rng.gauss(0.0, 1e-3))
        prints = [(px, rng.uniform(0.1, 2.0), rng.choice("AB")) for _ in range(rng.randint(0, 4))]
        events: list[Event] = [
            bbo("BTC", t + 50, px - 0.01, rng.uniform(1, 5), px + 0.01, rng.uniform(1, 5)),
            bbo("BTC", t + 60, px - 0.02, rng.uniform(1, 5), px + 0.01, rng.uniform(1, 5)),
            book("BTC", t + 70, [(px - 0.01, 3.0), (px - 0.02, 4.0)], [(px + 0.01, 2.0)]),
        ]
        if prints:
            events.append(trades("BTC", t + 80, prints))
        bars.append(bar("BTC", t, events))
    cfg = FeatureConfig(window_obs=20, short_obs=5, long_obs=40, warmup_obs=5, vpin_min_buckets=2)
    a = FeatureState(cfg)
    for b in bars[:70]:
        a.update(b)
    b_state = pickle.loads(pickle.dumps(a))
    for b in bars[70:]:
        va, vb = a.update(b), b_state.update(b)
        assert va.values == vb.values
        assert va.missing == vb.missing
    assert va.get("vpin") is not None
    assert va.get("microprice_px") is not None


def test_a_coin_that_stops_quoting_grows_nothing_once_its_windows_are_full() -> None:
    """Per-coin state is bounded: after a priced start, bars that carry only a book-less asset
    context (no price) fill the windows once, then the state stops growing (issue #12)."""
    from operators.regime import RegimeClassifier

    def run(n: int) -> tuple[int, int]:
        fs, rc = FeatureState(FeatureConfig()), RegimeClassifier()
        for k in range(100):
            rc.update(fs.update(quote_bar("X", k, 100.0 + (k % 3))))
        for k in range(100, 100 + n):
            rc.update(fs.update(bar("X", k * 1000, [ctx("X", k * 1000 + 10, mid_px=None)])))
        return len(pickle.dumps(fs)), len(pickle.dumps(rc))

    assert run(2_000) == run(5_000)  # (counters of the same width: 2-byte ints)
