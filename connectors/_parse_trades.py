"""``trades`` frames → `Trades` events: validation, de-duplication and grouping by time.

A ``trades`` frame carries an array; its first frame after a (re)subscribe replays the last 30
trades, so trades are de-duplicated per coin on ``(tid, time)``. The prints of one coin at one
exchange time become one `Trades` event.
"""

from __future__ import annotations

from typing import Any, Final

from connectors._parse_core import ParserCore
from connectors.errors import FrameError
from connectors.events import Event, Trades
from connectors.validate import coin_name, price, size

DEDUPE_CAPACITY: Final = 1024
"""How many recent trade keys are remembered per coin for de-duplication (the exchange replays
the last 30 on a subscribe; a coin over capacity keeps its newest half, in a new dict so the
memory is given back)."""


class TradesParser(ParserCore):
    """The ``trades`` channel (general and typed paths)."""

    def _trades(self, data: Any, recv_ms: int | None) -> list[Event]:
        if type(data) is not list:
            raise FrameError("bad_trades", "trades data is not an array")
        rows = []
        for tr in data:
            if type(tr) is not dict:
                raise FrameError("bad_trades", f"a trade is not an object: {str(tr)[:80]!r}")
            rows.append((tr["coin"], tr["time"], tr["tid"], tr["side"], tr["px"], tr["sz"]))
        return self._trade_rows(rows, recv_ms)

    def _trade_rows(
        self,
        rows: list[tuple[Any, Any, Any, Any, Any, Any]],
        recv_ms: int | None,
        *,
        typed: bool = False,
    ) -> list[Event]:
        """Validate every row, then de-duplicate and group ``(coin, time, tid, side, px, sz)``.

        ``typed``: coin, price and size were already checked by the typed decoder's constraints.
        """
        checked: list[tuple[str, int, int, int, float, float]] = []
        last_t = None
        for coin, t, tid, side, px, sz in rows:
            if not typed:
                coin = coin_name(coin, "trades")
                px = price(px, "trade")
                sz = size(sz, "trade")
                if type(tid) is not int:
                    raise FrameError("bad_trades", f"trade id {str(tid)[:40]!r} is not an int")
            if t != last_t:
                self._times.check(t, recv_ms, self.latest_ms, "trades")
                last_t = t
            if side == "B":
                s = 1
            elif side == "A":
                s = -1
            else:
                raise FrameError("bad_trades", f"unknown side {side!r} (expected 'B' or 'A')")
            checked.append((coin, t, tid, s, px, sz))
        groups: dict[tuple[str, int], list[tuple[float, float, int]]] = {}
        for coin, t, tid, s, px, sz in checked:
            dedupe = self._dedupe.get(coin)
            if dedupe is None:
                dedupe = self._dedupe[coin] = {}
            key = (tid, t)
            if key in dedupe:
                self.duplicates += 1
                continue
            dedupe[key] = None
            if len(dedupe) > DEDUPE_CAPACITY:
                keep = list(dedupe)[len(dedupe) - DEDUPE_CAPACITY // 2 :]
                dedupe = self._dedupe[coin] = dict.fromkeys(keep)
            g = groups.get((coin, t))
            if g is None:
                groups[(coin, t)] = [(px, sz, s)]
            else:
                g.append((px, sz, s))
        out: list[Event] = []
        for (coin, t), prints in groups.items():
            self._see(t)
            if not self._keep(coin):
                continue
            buy_sz = sell_sz = buy_ntl = sell_ntl = 0.0
            hi = lo = prints[0][0]
            for px, sz, s in prints:
                if s > 0:
                    buy_sz += sz
                    buy_ntl += px * sz
                else:
                    sell_sz += sz
                    sell_ntl += px * sz
                if px > hi:
                    hi = px
                elif px < lo:
                    lo = px
            out.append(
                Trades(coin, t, recv_ms, tuple(prints), buy_sz, sell_sz, buy_ntl, sell_ntl, hi, lo)
            )
        return out
