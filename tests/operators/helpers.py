"""Event, bar and feature-vector builders for the operator tests (no Bytewax here)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from connectors.events import (
    AssetCtx,
    Bbo,
    BookSnapshot,
    Candle,
    Event,
    Mid,
    Stream,
    Trades,
)
from connectors.freshness import StreamClock
from operators.bars import Bar
from operators.features import FEATURE_NAMES, FeatureVector

SIDE = {"B": 1, "A": -1}


def trades(coin: str, t: int, prints: Sequence[tuple[float, float, str]]) -> Trades:
    """Prints ``(px, sz, wire side "B"|"A")`` with the aggregates the parser computes."""
    buy_sz = sell_sz = buy_ntl = sell_ntl = 0.0
    out: list[tuple[float, float, int]] = []
    for px, sz, side in prints:
        s = SIDE[side]
        out.append((px, sz, s))
        if s > 0:
            buy_sz += sz
            buy_ntl += px * sz
        else:
            sell_sz += sz
            sell_ntl += px * sz
    pxs = [p[0] for p in prints]
    return Trades(coin, t, None, tuple(out), buy_sz, sell_sz, buy_ntl, sell_ntl, max(pxs), min(pxs))


def bbo(
    coin: str,
    t: int,
    bid: float | None,
    bid_sz: float | None,
    ask: float | None,
    ask_sz: float | None,
    recv_ms: int | None = None,
) -> Bbo:
    return Bbo(coin, t, recv_ms, bid, bid_sz, ask, ask_sz)


def book(
    coin: str,
    t: int,
    bids: list[tuple[float, float]],
    asks: list[tuple[float, float]],
) -> BookSnapshot:
    return BookSnapshot.from_levels(coin, t, None, bids, asks)


def candle(
    coin: str,
    open_ms: int,
    close_ms: int,
    o: float,
    h: float,
    low: float,
    c: float,
    v: float = 1.0,
    n: int = 1,
    interval: str = "1m",
) -> Candle:
    """A closed candle stamped at its (inclusive) close ``T`` = ``close_ms``."""
    return Candle(coin, close_ms, None, interval, open_ms, o, h, low, c, v, n)


def mid(coin: str, t: int, px: float) -> Mid:
    return Mid(coin, t, None, px)


def ctx(
    coin: str,
    t: int,
    *,
    funding: float = 1e-5,
    oi: float = 1000.0,
    mark: float = 100.0,
    oracle: float = 100.0,
    mid_px: float | None = 100.0,
    premium: float | None = 0.0,
) -> AssetCtx:
    return AssetCtx(coin, t, None, funding, oi, mark, oracle, mid_px, premium, None, None, 0.0, 0.0)


def bar(coin: str, open_ms: int, events: Iterable[Event], bar_ms: int = 1000) -> Bar:
    return Bar.from_events(coin, open_ms, bar_ms, list(events))


def quote_bar(coin: str, k: int, px: float, bar_ms: int = 1000, half_spread: float = 0.0) -> Bar:
    """Bar ``k`` holding one bbo whose mid is ``px`` (sizes 1/1)."""
    t = k * bar_ms + bar_ms // 2
    return bar(
        coin, k * bar_ms, [bbo(coin, t, px - half_spread, 1.0, px + half_spread, 1.0)], bar_ms
    )


def fv(
    values: Mapping[str, float | None] | None = None,
    *,
    coin: str = "BTC",
    close_ms: int = 1000,
    observations: int = 100,
    warmup_obs: int = 30,
    price_source: str | None = "mid",
    streams: Iterable[Stream] = (
        Stream.TRADES,
        Stream.L2BOOK,
        Stream.BBO,
        Stream.CANDLE,
        Stream.ACTIVE_ASSET_CTX,
    ),
    window_span_ms: int | None = 60_000,
    **kw: Any,
) -> FeatureVector:
    """A hand-built feature vector: every feature None unless given; ``mid_px`` defaults to 100."""
    vals: dict[str, float | None] = dict.fromkeys(FEATURE_NAMES)
    vals["mid_px"] = 100.0
    vals.update(values or {})
    vals.update(kw)
    return FeatureVector(
        coin=coin,
        open_ms=close_ms - 1000,
        close_ms=close_ms,
        values=vals,
        missing={},
        observations=observations,
        window_span_ms=window_span_ms,
        price_source=price_source,
        streams={s: StreamClock(close_ms - 100, None, 1, 1000.0) for s in streams},
        candle_interval_ms=None,
        event_count=1,
        warmup_obs=warmup_obs,
    )


def coin_bars(coin: str, n: int = 70, base: float = 100.0, seed: int = 1) -> list[Bar]:
    """Bars with every input kind: bbo, book, context, trades, candles; a trend then chop."""
    out: list[Bar] = []
    px = base
    for k in range(n):
        t = k * 1000
        step = 0.002 if k < 30 else (-0.003 if (k * seed) % 3 else 0.004)
        px *= math.exp(step)
        sz = 1.0 + ((k * 7 + seed) % 5)
        events: list[Event] = [
            bbo(coin, t + 100, px - 0.01, sz, px + 0.01, 6.0 - sz),
            bbo(coin, t + 150, px - 0.02, sz + 1, px + 0.01, 2.0),
            book(coin, t + 200, [(px - 0.01, 2.0), (px - 0.02, 50.0)], [(px + 0.01, 40.0)]),
            ctx(coin, t + 300, oi=1000.0 - k, mid_px=px, mark=px, oracle=px * 1.0001),
        ]
        if k % 2 == 0:
            events.append(trades(coin, t + 400, [(px, sz, "B"), (px, 0.3, "A")]))
        if k % 10 == 9:
            events.append(candle(coin, t - 9000, t + 999, px * 0.99, px * 1.01, px * 0.98, px))
        out.append(bar(coin, t, events))
    return out
