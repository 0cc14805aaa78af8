"""The server core: builds the exchange's parts and routes client messages between them.

`Hub` runs on the server's event loop. It owns the counters and wires the parts together: the
feed pump feeds the market, the market publishes through the subscriptions, the connections hand
each client message to `Hub.handle` (ping → pong, subscribe/unsubscribe → subscriptions, then
the snapshot and the inject schedule, ``post`` → the ``/info`` handlers, anything else → the
parse error), and the fault injector acts on the connections.

Imports the other modules of `tools.fake_exchange` except `server` and `cli`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from tools.fake_exchange.connections import Conn, Connections
from tools.fake_exchange.faults import FaultInjector, Faults
from tools.fake_exchange.feeds import Feed, Universe
from tools.fake_exchange.info import InfoApi
from tools.fake_exchange.inject import Injection, send_schedule
from tools.fake_exchange.limits import WeightBudget
from tools.fake_exchange.market import Market
from tools.fake_exchange.protocol import PARSE_ERROR, PONG, Sub, error_frame, parse_request
from tools.fake_exchange.pump import FeedPump
from tools.fake_exchange.stats import ExchangeStats
from tools.fake_exchange.subscriptions import Subscriptions


class Hub:
    """The fake exchange's parts, wired together, and their lifecycle on the event loop."""

    def __init__(
        self,
        feed: Feed,
        *,
        greeting: bool,
        idle_timeout_s: float | None,
        speed: float,
        loop_feed: bool,
        extra_coins: Sequence[str],
        delisted: Sequence[str],
        rest_weight_per_min: int,
        faults: Faults,
        injections: tuple[Injection, ...] = (),
    ) -> None:
        self.info = info = feed.info
        self.universe = universe = Universe.of(info, extra_coins, delisted)
        self.injections = injections
        self.stats = stats = ExchangeStats()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.faults = FaultInjector(faults, stats, self.now)
        self.subs = Subscriptions(universe.valid, self.faults, stats)
        self.market = Market(info, universe, self.subs, stats, speed)
        self.pump = FeedPump(feed, self.market, stats, speed=speed, loop_feed=loop_feed)
        self.info_api = InfoApi(
            self.market, universe, WeightBudget(rest_weight_per_min), stats, self.now
        )
        self.sockets = Connections(
            self.faults,
            stats,
            greeting=greeting,
            idle_timeout_s=idle_timeout_s,
            handle=self.handle,
            on_close=self.subs.remove_all,
        )
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Warm the market up and start the feed pump, the tickers and the fault schedules."""
        self.loop = asyncio.get_running_loop()
        pump = self.pump.run(*self.pump.warm_up())
        self.tasks.append(asyncio.create_task(pump, name="fake-exchange-pump"))
        candles = self.market.candles.run()
        self.tasks.append(asyncio.create_task(candles, name="fake-exchange-candles"))
        if not self.info.has_all_mids:
            mids = self.market.derive_mids()
            self.tasks.append(asyncio.create_task(mids, name="fake-exchange-mids"))
        self.faults.start(self.sockets)

    async def shutdown(self) -> None:
        """Stop every task and end every connection (no close frame)."""
        self.sockets.closing = True
        tasks = self.tasks + self.faults.take_tasks()
        self.tasks = []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.sockets.close_all()

    def now(self) -> float:
        """The server loop's clock (monotonic before it runs)."""
        return self.loop.time() if self.loop is not None else time.monotonic()

    def handle(self, conn: Conn, text: str) -> None:
        """Answer one client message."""
        request = parse_request(text)
        if request is None:
            self.stats.request_errors += 1
            conn.offer(error_frame(PARSE_ERROR + text), "error")
        elif request.method == "ping":
            conn.offer(PONG, "pong")
        elif request.method == "post":
            conn.offer(self.info_api.post(request, conn.client), "post")
        elif request.sub is not None:
            if request.method == "subscribe":
                self._subscribe(conn, request.sub)
            else:
                self.subs.unsubscribe(conn, request.sub)

    def _subscribe(self, conn: Conn, sub: Sub) -> None:
        if not self.subs.subscribe(conn, sub):
            return
        if self.faults.silenced(sub.route):
            self.stats.frames_silenced += 1
        else:
            snapshot = self.market.snapshot(sub)
            if snapshot is not None:
                conn.offer(snapshot, sub.type, data=True)
        if self.injections and conn.inject_task is None:
            conn.inject_task = asyncio.create_task(
                send_schedule(conn, self.injections, self.stats),
                name=f"fake-exchange-inject-{conn.cid}",
            )
