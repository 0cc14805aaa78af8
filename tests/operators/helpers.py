"""Event, bar and feature-vector builders for the operator tests (no Bytewax here)."""

from __future__ import annotations

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
