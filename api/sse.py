"""``GET /v1/stream`` on the wire: the Server-Sent Events contract, the ``dropped`` frame and its
reasons, the ``retry:`` prelude, and ending open streams when the server stops.

Wire contract (``text/event-stream``, FastAPI's `fastapi.sse.EventSourceResponse`)::

    retry: 3000

    event: signal
    data: <the envelope JSON, as GET /v1/signal/{coin} returns it at the time it was stored>
    id: <run>:<seq>   (opaque to clients: a run id, new for every run of the flow, and a
                       monotonic sequence number within it)

    event: dropped
    data: {"missed": n, "last_id": "<run>:<seq>", "reason": "..."}

    : ping

``dropped`` means: the client has everything up to id ``k`` and will not get the ``n`` events
after it that it would have had. It comes (a) first, when a ``Last-Event-ID`` resume reaches back
further than the store's ring (then the stream continues with the oldest event still held), or
when the id is from another run, or is no id this service issued (the stream continues with the
whole ring; ``last_id`` is the id the client sent),
and (b) last, when the client fell behind by more than its queue holds: the server closes the
stream right after it (reconnect with ``Last-Event-ID: k`` to resume from the ring), and (c)
in the middle of a stream served from a shared store, when a flow process dropped envelopes it
could not write (Redis unreachable past its buffer: they never got an id, so no resume can fetch
them; reason ``store_gap``, `connectors.redis_mirror.REASON_STORE_GAP`); the stream goes on.
A ``: ping`` comment is sent after ``keepalive_s`` (up to a quarter more) without an event.

``signal`` frames and ``: ping`` comments are written by `api.stream.Broadcaster`, which fans the
stored envelopes out (it encodes each ``signal`` frame once, inline, on the hot path); this module
is the rest of what a client sees and what the server needs to stop while streams are open.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import FrameType
from typing import Final, Protocol

import orjson
from fastapi.sse import format_sse_event

RETRY_MS: Final = 3000
"""Reconnection delay a client should use (ms), sent as ``retry:`` first on every stream."""

REASON_SLOW: Final = (
    "slow_client: the client fell more than {n} events behind; the stream is closed "
    "(reconnect with Last-Event-ID to resume from the server's history)"
)
REASON_EVICTED: Final = (
    "history_evicted: the events after Last-Event-ID are no longer held (missed counts events "
    "of every coin); continuing with the oldest event held"
)
REASON_RESTARTED: Final = (
    "restarted: Last-Event-ID is not an event of this run (the flow was restarted, or the id is "
    "not one this service issued; missed counts this run's events no longer held); continuing "
    "with the oldest event held"
)


def dropped_event(missed: int, last_id: str, reason: str) -> bytes:
    """The ``event: dropped`` frame (no ``id``: it is not part of the sequence)."""
    data = orjson.dumps({"missed": missed, "last_id": last_id, "reason": reason}).decode()
    return format_sse_event(event="dropped", data_str=data)


async def with_retry(
    events: AsyncIterator[bytes], retry_ms: int = RETRY_MS
) -> AsyncIterator[bytes]:
    """``events`` (`Broadcaster.events`) preceded by one ``retry: <ms>`` field: the delay a
    client waits before it reconnects (with ``Last-Event-ID``). Its own block, so no event is
    dispatched for it; the subscription starts after it, and ends with this generator."""
    try:
        yield b"retry: %d\n\n" % retry_ms
        async for chunk in events:
            yield chunk
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()


class _Closable(Protocol):
    """What `close_streams_on_exit` needs of the broadcaster: end every open stream."""

    def close_all(self) -> None: ...


class _ExitHandling(Protocol):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None: ...


def close_streams_on_exit(server: _ExitHandling, streams: _Closable) -> None:
    """Make a uvicorn server end every open stream when it is asked to stop.

    uvicorn's graceful shutdown waits for open responses to finish, and a stream never does:
    without this, SIGINT/SIGTERM hangs while any SSE client is connected. Call it on the
    `uvicorn.Server` instance before ``run()`` (it wraps that instance's ``handle_exit``, which
    ``capture_signals`` installs as the signal handler).

    Args:
        server: the uvicorn server (anything with ``handle_exit(sig, frame)``).
        streams: the app's broadcaster (``app.state.streams``).
    """
    original = server.handle_exit

    def handle_exit(sig: int, frame: FrameType | None) -> None:
        streams.close_all()
        original(sig, frame)

    server.handle_exit = handle_exit  # type: ignore[method-assign]


__all__ = [
    "REASON_EVICTED",
    "REASON_RESTARTED",
    "REASON_SLOW",
    "RETRY_MS",
    "close_streams_on_exit",
    "dropped_event",
    "with_retry",
]
