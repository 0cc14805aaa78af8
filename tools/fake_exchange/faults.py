"""Fault injection: the `Faults` settings and the `FaultInjector` that applies them.

All faults are off by default; periodic ones count from the moment they are set (server start
for the constructor's faults, the call for `FakeExchange.set_faults`):

- ``drop_every_s``: every N s drop every client socket (no close frame → 1006; or a close frame
  with ``drop_code``);
- ``stall_every_s``/``stall_for_s``: every N s, for S s, send nothing at all to any client (data,
  acks, pongs, errors are discarded); sockets stay open and requests are still processed;
- ``silence`` (``"l2Book:BTC"``, ``"candle:BTC:1m"``, ``"allMids"``, or a bare channel) after
  ``silence_after_s``: those streams stop (snapshots included) while everything else continues;
- ``malformed_every``/``unknown_every``: after every N-th data frame sent to a client, also send a
  truncated (invalid JSON) copy of it / a frame on an unknown channel;
- ``error_every_s``: every N s send ``{"channel":"error","data":...}`` to every client.

The injector acts on the sockets through the `Sockets` interface (the connections implement it),
so this module knows no connection.

Imports `tools.fake_exchange.protocol` and `tools.fake_exchange.stats`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson

from tools.fake_exchange.protocol import error_frame
from tools.fake_exchange.stats import ExchangeStats

log = logging.getLogger(__name__)

INJECTED_ERROR: Final = "Internal error (injected by the fake exchange)"
UNKNOWN_CHANNEL: Final = "fakeExchangeUnknown"
MALFORMED_CHANNEL: Final = "malformed"
_UNKNOWN_FRAME: Final = orjson.dumps(
    {"channel": UNKNOWN_CHANNEL, "data": {"injected": True}}
).decode()


@dataclass(frozen=True)
class Faults:
    """Fault injection settings (all off by default).

    Periodic faults count from the moment the faults are set (server start for the constructor's
    faults, the call for `FakeExchange.set_faults`).

    Attributes:
        drop_every_s: drop every client socket every N seconds.
        drop_code: ``None`` drops the TCP connection without a close frame (the client sees 1006,
            as with the real server); a code sends a close frame with that code instead.
        stall_every_s: every N seconds start a stall of ``stall_for_s`` seconds during which
            nothing at all (data, acks, pongs, errors) is sent to any client; requests are still
            processed and sockets stay open. Discarded frames are lost, not delayed.
        stall_for_s: stall length (must be < ``stall_every_s``).
        silence: streams to stop: ``"channel"`` (all coins), ``"channel:COIN"`` or
            ``"candle:COIN:interval"``; other streams, acks and pongs continue.
        silence_after_s: delay before ``silence`` takes effect.
        malformed_every: after every N-th data frame sent to a client, also send a truncated
            (invalid JSON) copy of it.
        unknown_every: after every N-th data frame sent to a client, also send
            ``{"channel":"fakeExchangeUnknown","data":{"injected":true}}``.
        error_every_s: send ``{"channel":"error","data":...}`` to every client every N seconds.
    """

    drop_every_s: float | None = None
    drop_code: int | None = None
    stall_every_s: float | None = None
    stall_for_s: float = 5.0
    silence: tuple[str, ...] = ()
    silence_after_s: float = 0.0
    malformed_every: int | None = None
    unknown_every: int | None = None
    error_every_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("drop_every_s", "stall_every_s", "error_every_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                msg = f"{name} must be > 0 or None, got {value!r}"
                raise ValueError(msg)
        for name in ("malformed_every", "unknown_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                msg = f"{name} must be >= 1 or None, got {value!r}"
                raise ValueError(msg)
        if not self.stall_for_s > 0:
            msg = f"stall_for_s must be > 0, got {self.stall_for_s!r}"
            raise ValueError(msg)
        if self.stall_every_s is not None and self.stall_for_s >= self.stall_every_s:
            msg = f"stall_for_s ({self.stall_for_s}) must be < stall_every_s"
            raise ValueError(msg)
        if self.silence_after_s < 0:
            msg = f"silence_after_s must be >= 0, got {self.silence_after_s!r}"
            raise ValueError(msg)
        if self.drop_code is not None and not 1000 <= self.drop_code <= 4999:
            msg = f"drop_code must be a WebSocket close code (1000-4999), got {self.drop_code!r}"
            raise ValueError(msg)


class Sockets(Protocol):
    """What the periodic faults do to the open sockets."""

    def drop_all(self, code: int | None = None) -> int:
        """Drop every open socket (``code`` None: no close frame); returns how many."""

    def broadcast(self, text: str, channel: str) -> int:
        """Offer ``text`` to every open socket; returns to how many."""


class FaultInjector:
    """The faults in effect, their schedules and timers (runs on the server's event loop).

    Args:
        faults: the initial settings (scheduled by `start`).
        stats: the counters to update.
        now: the server loop's clock (s).
    """

    def __init__(self, faults: Faults, stats: ExchangeStats, now: Callable[[], float]) -> None:
        self.settings = faults
        self.stats = stats
        self.now = now
        self.sockets: Sockets | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.stall_until = 0.0
        self.silence_from = 0.0

    def start(self, sockets: Sockets) -> None:
        """Begin the schedules of the current settings, acting on ``sockets``."""
        self.sockets = sockets
        self.apply(self.settings)

    def apply(self, faults: Faults) -> None:
        """Put ``faults`` in effect; once started, their schedules restart from now."""
        self.settings = faults
        sockets = self.sockets
        if sockets is None:
            return
        for task in self.tasks:
            task.cancel()
        self.tasks = []
        self.stall_until = 0.0
        self.silence_from = self.now() + faults.silence_after_s
        if faults.drop_every_s:
            self._every(faults.drop_every_s, lambda: sockets.drop_all(faults.drop_code))
        if faults.stall_every_s:
            self._every(faults.stall_every_s, lambda: self.stall(faults.stall_for_s))
        if faults.error_every_s:
            self._every(faults.error_every_s, lambda: self._inject_error(sockets))

    def take_tasks(self) -> list[asyncio.Task[None]]:
        """The schedule tasks, handed over for cancelling at shutdown."""
        tasks, self.tasks = self.tasks, []
        return tasks

    def _every(self, period: float, action: Callable[[], Any]) -> None:
        async def run() -> None:
            while True:
                await asyncio.sleep(period)
                action()

        self.tasks.append(asyncio.create_task(run(), name="fake-exchange-fault"))

    def stall(self, seconds: float) -> None:
        """Send nothing at all to any client for ``seconds`` from now."""
        self.stall_until = max(self.stall_until, self.now() + seconds)
        self.stats.stalls_injected += 1
        log.info("stalling every socket for %.3g s", seconds)

    def stalled(self) -> bool:
        """Whether a stall is on (every message is discarded)."""
        return self.stall_until > 0.0 and self.now() < self.stall_until

    def _inject_error(self, sockets: Sockets) -> None:
        self.stats.errors_injected += sockets.broadcast(error_frame(INJECTED_ERROR), "error")

    def silenced(self, route: tuple[str, str, str]) -> bool:
        """Whether the ``(type, coin, interval)`` stream is silenced now."""
        silence = self.settings.silence
        if not silence or self.now() < self.silence_from:
            return False
        kind, coin, interval = route
        return (
            kind in silence or f"{kind}:{coin}" in silence or f"{kind}:{coin}:{interval}" in silence
        )

    def extras(self, text: str, data_sent: int) -> list[tuple[str, str]]:
        """The messages to send after a client's ``data_sent``-th data frame ``text``.

        Returns:
            ``(text, channel)`` pairs: a truncated copy (``malformed_every``), then an
            unknown-channel frame (``unknown_every``); usually none.
        """
        faults = self.settings
        out: list[tuple[str, str]] = []
        if faults.malformed_every and data_sent % faults.malformed_every == 0:
            self.stats.malformed_injected += 1
            out.append((text[: max(1, len(text) // 2)], MALFORMED_CHANNEL))
        if faults.unknown_every and data_sent % faults.unknown_every == 0:
            self.stats.unknown_injected += 1
            out.append((_UNKNOWN_FRAME, UNKNOWN_CHANNEL))
        return out
