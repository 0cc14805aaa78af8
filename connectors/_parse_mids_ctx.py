"""``allMids`` and ``activeAssetCtx`` frames → `Mid` and `AssetCtx` events.

Neither carries a timestamp: their events are stamped with the receive time, or without one the
latest exchange time seen. ``allMids`` fans out only to the coins wanted (activated, filtered, or
seen on another channel), in coin order.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from connectors._parse_core import ParserCore
from connectors.errors import FrameError
from connectors.events import AssetCtx, Event, Mid
from connectors.validate import coin_name, number, price, size


class MidsCtxParser(ParserCore):
    """The untimed ``allMids`` and ``activeAssetCtx`` channels."""

    def _mids(self, data: Any, recv_ms: int | None) -> list[Event]:
        mids = data["mids"]
        if type(mids) is not dict:
            raise FrameError("bad_allMids", "mids is not an object")
        t = self._untimed(recv_ms, "allMids")
        if self.active is not None:
            wanted: Collection[str] = self.active
        elif self.coins is not None:
            wanted = self.coins
        else:
            wanted = self.seen_coins
        out: list[Event] = []
        for coin in wanted:
            px = mids.get(coin)
            if px is not None:
                out.append(Mid(coin, t, recv_ms, price(px, f"allMids {coin}")))
        out.sort(key=lambda m: m.coin)
        return out

    def _ctx(self, data: Any, recv_ms: int | None) -> list[Event]:
        coin = coin_name(data["coin"], "activeAssetCtx")
        ctx = data["ctx"]
        t = self._untimed(recv_ms, "activeAssetCtx")
        impact = ctx.get("impactPxs")
        if impact is not None and (type(impact) is not list or len(impact) not in (0, 2)):
            raise FrameError("bad_activeAssetCtx", f"impactPxs {impact!r:.60} is not [bid, ask]")
        mid = ctx.get("midPx")
        premium = ctx.get("premium")
        w = "activeAssetCtx"
        e = AssetCtx(
            coin,
            t,
            recv_ms,
            number(ctx["funding"]),
            size(ctx["openInterest"], w),
            price(ctx["markPx"], w),
            price(ctx["oraclePx"], w),
            None if mid is None else price(mid, w),
            None if premium is None else number(premium),
            None if not impact else price(impact[0], w),
            None if not impact else price(impact[1], w),
            size(ctx.get("dayNtlVlm") or 0.0, w),
            size(ctx.get("prevDayPx") or 0.0, w),
        )
        return [e] if self._keep(coin) else []
