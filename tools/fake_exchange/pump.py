"""The feed pump: replays a feed into the market, paced by its clock, pass after pass.

Frames are paced by the feed clock (receive time, else exchange time) divided by ``speed``; with
``loop_feed`` the feed restarts when it ends (`PASS_GAP_S` later), else the last state is served
with no new data. At start the first `WARMUP_S` of feed time are applied at once, stamped in the
past, so a client connecting right away finds books, a trade history and candles.

Imports `tools.fake_exchange.feeds`, `.market` and `.stats`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Final

from tools.fake_exchange.feeds import Feed, Timed
from tools.fake_exchange.market import Market
from tools.fake_exchange.stats import ExchangeStats

log = logging.getLogger(__name__)

PASS_GAP_S: Final = 0.1
WARMUP_S: Final = 1.0
"""Feed seconds applied at once at start (stamped in the past) so a new server has state."""

Start = tuple[Iterator[Timed], Timed | None, float, int | None]
"""Where `FeedPump.run` picks up after `FeedPump.warm_up` (see there)."""


class FeedPump:
    """Feeds ``feed``'s frames to ``market`` on the server's event loop.

    Args:
        feed: the frames to serve.
        market: the state they update.
        stats: the counters to update.
        speed: replay speed (1 = real time).
        loop_feed: restart the feed when it ends.
    """

    def __init__(
        self, feed: Feed, market: Market, stats: ExchangeStats, *, speed: float, loop_feed: bool
    ) -> None:
        self.feed = feed
        self.market = market
        self.stats = stats
        self.speed = speed
        self.loop_feed = loop_feed

    def _begin_pass(self, f0_ns: int, start: float) -> None:
        """Map feed time ``f0_ns`` to loop time ``start`` (wall clock for the re-stamping)."""
        loop = asyncio.get_running_loop()
        wall_ms = time.time() * 1000.0 + (start - loop.time()) * 1000.0
        self.market.begin_pass(wall_ms, f0_ns)

    def warm_up(self) -> Start:
        """Apply the first `WARMUP_S` of feed time at once, stamped in the past.

        A client connecting right after `FakeExchange.start` then finds books, a trade history
        for the 30-trade replay, and candles, as on the real exchange.

        Returns:
            The first pass's frame iterator, its next unprocessed frame, the loop time that
            corresponds to the first frame's feed time, and that feed time (None: empty feed).
        """
        frames = self.feed.frames(0)
        start = asyncio.get_running_loop().time() - WARMUP_S / self.speed
        item = next(frames, None)
        if item is None:
            return frames, None, start, None
        f0 = item[0]
        self._begin_pass(f0, start)
        while item is not None and item[0] - f0 <= WARMUP_S * 1e9:
            self.market.process(item[1])
            item = next(frames, None)
        return frames, item, start, f0

    async def run(
        self, frames: Iterator[Timed], item: Timed | None, start: float, f0: int | None
    ) -> None:
        """Replay the feed paced by its clock, pass after pass when looping."""
        loop = asyncio.get_running_loop()
        if f0 is None:
            log.warning("the feed has no data frames")
            return
        pass_no = 0
        while True:
            due = start
            burst = 0
            while item is not None:
                feed_ns, frame = item
                if f0 is None:
                    f0 = feed_ns
                    self._begin_pass(f0, start)
                due = start + (feed_ns - f0) / 1e9 / self.speed
                delay = due - loop.time()
                if delay > 0.0005:
                    await asyncio.sleep(delay)
                    burst = 0
                else:
                    burst += 1
                    if burst >= 256:
                        await asyncio.sleep(0)
                        burst = 0
                self.market.process(frame)
                item = next(frames, None)
            self.stats.feed_passes += 1
            if not self.loop_feed:
                log.info("feed ended (%d frames); serving the last state", self.stats.feed_frames)
                return
            pass_no += 1
            start = max(loop.time(), due) + PASS_GAP_S / self.speed
            frames = self.feed.frames(pass_no)
            item = next(frames, None)
            f0 = None
            if item is None:
                log.warning("feed pass %d is empty; stopping", pass_no)
                return
