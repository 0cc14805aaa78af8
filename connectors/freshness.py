"""Per-stream freshness: when each stream last spoke, and whether that is normal for it.

A stream is judged against its own cadence, learnt online per coin: ``stale`` when its age exceeds
``max(floor, STALE_FACTOR × typical interval)``; ``missing`` when it never appeared (a candle-only
replay has no book: that is missing, not stale). Ages are measured on the source's clock: the
latest event time in a replay, the wall clock live. The same judgement runs when a bar closes
(as of the bar's close) and again in the API at request time (as of the source's clock then).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from connectors.events import STREAMS, Stream


class FreshnessStatus(StrEnum):
    """Status of one stream (or of all of them, for the overall status)."""

    OK = "ok"
    STALE = "stale"
    MISSING = "missing"


STALE_FACTOR: Final = 5.0
"""A stream is stale after this many of its typical intervals without an event."""

FLOOR_MS: Final[dict[Stream, int]] = {
    Stream.TRADES: 60_000,
    Stream.L2BOOK: 15_000,
    Stream.BBO: 10_000,
    Stream.CANDLE: 90_000,
    Stream.ALL_MIDS: 20_000,
    Stream.ACTIVE_ASSET_CTX: 10_000,
}
"""Minimum age before a stream can be called stale, in ms (trades are bursty, books slow)."""

EWMA_ALPHA: Final = 0.1


@dataclass(slots=True)
class StreamClock:
    """What one coin's stream has done so far (updated once per bar)."""

    last_ms: int
    last_recv_ms: int | None
    count: int
    interval_ms: float | None = None

    def observe(self, count: int, last_ms: int, last_recv_ms: int | None) -> None:
        """Account for ``count`` new events, the newest at ``last_ms``."""
        if last_ms > self.last_ms and count > 0:
            sample = (last_ms - self.last_ms) / count
            iv = self.interval_ms
            self.interval_ms = sample if iv is None else iv + EWMA_ALPHA * (sample - iv)
            self.last_ms = last_ms
            self.last_recv_ms = last_recv_ms
        self.count += count


@dataclass(slots=True)
class StreamFreshness:
    """One stream's freshness as of some time on the source's clock."""

    status: FreshnessStatus
    last_exchange_ms: int | None
    last_recv_ms: int | None
    age_ms: int | None
    expected_interval_ms: int | None
    reason: str | None


def stale_after_ms(stream: Stream, interval_ms: float | None) -> int:
    """Age in ms after which ``stream`` counts as stale, given its typical interval."""
    floor = FLOOR_MS[stream]
    if interval_ms is None or not interval_ms < math.inf:  # (NaN/inf: never from a real clock)
        return floor
    return max(floor, int(STALE_FACTOR * interval_ms))


def judge_stream(
    stream: Stream,
    last_ms: int | None,
    last_recv_ms: int | None,
    interval_ms: float | None,
    as_of_ms: int,
) -> StreamFreshness:
    """Judge one stream's freshness as of ``as_of_ms``."""
    if last_ms is None:
        return StreamFreshness(
            FreshnessStatus.MISSING, None, None, None, None, f"no {stream} data received"
        )
    age = max(0, as_of_ms - last_ms)
    expected = None if interval_ms is None or not interval_ms < math.inf else round(interval_ms)
    limit = stale_after_ms(stream, interval_ms)
    if age > limit:
        reason = f"no {stream} for {age / 1000:.1f} s (stale after {limit / 1000:.1f} s" + (
            f"; usually every {interval_ms / 1000:.2f} s)" if interval_ms else ")"
        )
        return StreamFreshness(FreshnessStatus.STALE, last_ms, last_recv_ms, age, expected, reason)
    return StreamFreshness(FreshnessStatus.OK, last_ms, last_recv_ms, age, expected, None)


def judge_all(clocks: dict[Stream, StreamClock], as_of_ms: int) -> dict[Stream, StreamFreshness]:
    """Judge every stream (missing ones included), in the canonical stream order."""
    out: dict[Stream, StreamFreshness] = {}
    for stream in STREAMS:
        c = clocks.get(stream)
        if c is None:
            out[stream] = judge_stream(stream, None, None, None, as_of_ms)
        else:
            out[stream] = judge_stream(stream, c.last_ms, c.last_recv_ms, c.interval_ms, as_of_ms)
    return out


def overall(streams: dict[Stream, StreamFreshness]) -> FreshnessStatus:
    """``stale`` if any present stream is stale, ``missing`` if none is present, else ``ok``."""
    statuses = [s.status for s in streams.values()]
    if all(s is FreshnessStatus.MISSING for s in statuses):
        return FreshnessStatus.MISSING
    if any(s is FreshnessStatus.STALE for s in statuses):
        return FreshnessStatus.STALE
    return FreshnessStatus.OK


def stream_block(f: StreamFreshness) -> dict[str, Any]:
    """One stream's freshness as a dict."""
    return {
        "status": f.status.value,
        "last_exchange_ms": f.last_exchange_ms,
        "last_recv_ms": f.last_recv_ms,
        "age_ms": f.age_ms,
        "expected_interval_ms": f.expected_interval_ms,
        "reason": f.reason,
    }
