"""Errors raised at the edge, and rate-limited reporting of skipped input.

Hierarchy::

    FeedError                 any problem with market-data input
    ├── FrameError            one frame or line cannot become events (counted, logged, skipped)
    └── ReplayFileError       a capture file cannot be read on (truncated or corrupt compression)

A `FrameError` never stops a flow: the caller counts it by ``reason``, logs where it happened and
moves on. A `ReplayFileError` ends that file after every good line before it was delivered.
"""

from __future__ import annotations

import logging
from collections import Counter


class FeedError(Exception):
    """Base class for market-data input problems."""


class FrameError(FeedError):
    """A frame that cannot be turned into events.

    Args:
        reason: a stable, machine-readable code (``invalid_json``, ``bad_trades`` ...), used as the
            key of the skipped-lines counters.
        detail: a human-readable explanation.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ReplayFileError(FeedError):
    """A capture file ended early or is corrupt; names the file and the last good line."""


class SkipLog:
    """Logs skipped input without flooding: the first ``first`` per reason, then every ``every``.

    Every skip is still counted exactly; only the log lines are thinned.
    """

    def __init__(self, logger: logging.Logger, first: int = 20, every: int = 1000) -> None:
        self._log = logger
        self._first = first
        self._every = every
        self.counts: Counter[str] = Counter()

    def skip(self, reason: str, where: str, detail: str) -> None:
        """Count one skipped frame or line and maybe log it with its location."""
        self.counts[reason] += 1
        n = self.counts[reason]
        if n <= self._first or n % self._every == 0:
            self._log.warning("skipped %s at %s (%s so far): %s", reason, where, n, detail)
