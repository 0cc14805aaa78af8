"""Feeds: where the served frames come from, and the coins the exchange lists.

`CaptureFeed` (any capture `connectors.files.open_capture` reads: plain, ``.gz``, ``.lz4``; every
line format of `connectors.parse.decode_line`), `SimFeed` (`tools.simulate.generate`; each loop
pass regenerates with the next seed) and `ListFeed` (frames given in code, for tests). A feed
yields data frames with a non-decreasing feed clock (receive time, else exchange time), which the
pump (`tools.fake_exchange.pump`) paces; `FeedInfo` says what a feed contains. The universe
(`Universe`: the coins ``meta`` lists and subscriptions accept) is the coins of the feed plus
``extra_coins`` and ``delisted`` coins.

Imports `tools.fake_exchange.protocol`, `connectors` and `tools.simulate`.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.errors import FrameError
from connectors.parse import decode_line
from tools.fake_exchange.protocol import (
    DATA_CHANNELS,
    DEFAULT_SZ_DECIMALS,
    KNOWN_SZ_DECIMALS,
    decimals,
)
from tools.simulate import SimConfig, generate

log = logging.getLogger(__name__)

Timed = tuple[int, dict[str, Any]]
"""A data frame with its feed clock: ``(feed_clock_ns, frame)``."""


@dataclass(frozen=True)
class FeedInfo:
    """What a feed contains (from a scan of its first pass).

    Attributes:
        coins: every coin with data, in order of first appearance.
        trade_coins: coins with ``trades`` frames (their candles are built from trades).
        book_coins: coins with ``l2Book`` frames.
        bbo_coins: coins with ``bbo`` frames (others get ``bbo`` derived from books).
        ctx_coins: coins with ``activeAssetCtx`` frames.
        candle_coins: coins with ``candle`` frames.
        has_all_mids: whether the feed has (first-dex) ``allMids`` frames.
        sz_decimals: size decimals seen per coin (max over trade and level sizes).
    """

    coins: tuple[str, ...]
    trade_coins: frozenset[str] = frozenset()
    book_coins: frozenset[str] = frozenset()
    bbo_coins: frozenset[str] = frozenset()
    ctx_coins: frozenset[str] = frozenset()
    candle_coins: frozenset[str] = frozenset()
    has_all_mids: bool = False
    sz_decimals: dict[str, int] = field(default_factory=dict)


def _frame_time_ms(frame: dict[str, Any]) -> int | None:
    """The latest exchange time in a frame (trades: the newest fill; candle: ``t``), else None."""
    data = frame.get("data")
    if type(data) is dict:
        t = data.get("t") if frame.get("channel") == "candle" else data.get("time")
        return t if type(t) is int else None
    if type(data) is list:
        times = [x["time"] for x in data if type(x) is dict and type(x.get("time")) is int]
        return max(times) if times else None
    return None


def _is_data_frame(frame: Any) -> bool:
    return type(frame) is dict and frame.get("channel") in DATA_CHANNELS and "data" in frame


def _clocked(records: Iterable[tuple[int | None, Any]]) -> Iterator[Timed]:
    """Data frames with a non-decreasing feed clock (ns).

    The clock is the receive time when the record has one, else the newest exchange time seen so
    far; untimed frames (``allMids``, ``activeAssetCtx``) take the current clock (frames before
    the first timed one take that one's).
    """
    clock: int | None = None
    pending: list[dict[str, Any]] = []
    for recv_ns, frame in records:
        if not _is_data_frame(frame):
            continue
        t: int | None = recv_ns
        if t is None:
            ex_ms = _frame_time_ms(frame)
            t = None if ex_ms is None else ex_ms * 1_000_000
        if t is not None:
            clock = t if clock is None else max(clock, t)
        if clock is None:
            pending.append(frame)
            continue
        for early in pending:
            yield clock, early
        pending.clear()
        yield clock, frame
    for early in pending:
        yield clock or 0, early


def _scan(frames: Iterable[Timed]) -> FeedInfo:
    coins: dict[str, None] = {}
    by_channel: dict[str, set[str]] = {ch: set() for ch in DATA_CHANNELS}
    sz_dec: dict[str, int] = {}
    has_mids = False

    def see(coin: Any, channel: str, sizes: Iterable[Any] = ()) -> None:
        if type(coin) is not str:
            return
        coins.setdefault(coin)
        by_channel[channel].add(coin)
        for sz in sizes:
            if type(sz) is str:
                sz_dec[coin] = max(sz_dec.get(coin, 0), decimals(sz))

    for _, frame in frames:
        channel = frame["channel"]
        data = frame["data"]
        try:
            if channel == "trades":
                for tr in data:
                    see(tr["coin"], channel, (tr.get("sz"),))
            elif channel == "l2Book":
                see(data["coin"], channel, (lv["sz"] for side in data["levels"] for lv in side))
            elif channel == "bbo":
                see(data["coin"], channel, (lv["sz"] for lv in data["bbo"] if lv))
            elif channel == "activeAssetCtx":
                see(data["coin"], channel)
            elif channel == "candle":
                for item in data if type(data) is list else (data,):
                    see(item["s"], channel)
            elif channel == "allMids" and not data.get("dex"):
                has_mids = True
        except (KeyError, TypeError, AttributeError):
            continue
    return FeedInfo(
        coins=tuple(coins),
        trade_coins=frozenset(by_channel["trades"]),
        book_coins=frozenset(by_channel["l2Book"]),
        bbo_coins=frozenset(by_channel["bbo"]),
        ctx_coins=frozenset(by_channel["activeAssetCtx"]),
        candle_coins=frozenset(by_channel["candle"]),
        has_all_mids=has_mids,
        sz_decimals=sz_dec,
    )


class Feed(abc.ABC):
    """A source of Hyperliquid WebSocket frames for the fake exchange to serve."""

    @abc.abstractmethod
    def records(self, pass_no: int) -> Iterator[tuple[int | None, Any]]:
        """Raw ``(receive_ns or None, frame)`` records of one pass, in order.

        Args:
            pass_no: 0 for the first pass, then 1, 2, … when the feed loops.
        """

    def frames(self, pass_no: int = 0) -> Iterator[Timed]:
        """Data frames of one pass as ``(feed_clock_ns, frame)`` (control frames dropped).

        Args:
            pass_no: 0 for the first pass, then 1, 2, … when the feed loops.
        """
        return _clocked(self.records(pass_no))

    @functools.cached_property
    def info(self) -> FeedInfo:
        """What the feed contains (scanned once, from the first pass)."""
        return _scan(self.frames(0))


class CaptureFeed(Feed):
    """A recorded capture: plain/``.gz``/``.lz4`` NDJSON, any line format of `decode_line`.

    Args:
        path: the capture file. Unreadable lines are skipped (logged at debug level).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        IsADirectoryError: if ``path`` is a directory.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            msg = f"capture is a directory, not a file: {self.path}"
            raise IsADirectoryError(msg)
        if not self.path.is_file():
            msg = f"capture not found: {self.path}"
            raise FileNotFoundError(msg)

    def records(self, pass_no: int) -> Iterator[tuple[int | None, Any]]:
        """Decoded lines of the capture (the same on every pass)."""
        from connectors.files import open_capture  # lazily: it imports bytewax

        with open_capture(self.path) as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    yield decode_line(line)
                except FrameError as ex:
                    log.debug("%s:%d skipped: %s", self.path, lineno, ex)


class SimFeed(Feed):
    """The seeded simulator (`tools.simulate`).

    Pass ``k`` simulates ``config`` with seed ``config.seed + k``, starting where pass ``k - 1``
    ended, so a looping feed keeps producing fresh (though not price-continuous) markets.

    Args:
        config: what to simulate; defaults to `SimConfig()` (BTC, ETH, SOL, 600 s, seed 7).
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()

    def records(self, pass_no: int) -> Iterator[tuple[int | None, Any]]:
        """The simulator's frames for one pass."""
        cfg = self.config
        if pass_no:
            span = round(cfg.seconds * 1000)
            cfg = dataclasses.replace(
                cfg, seed=cfg.seed + pass_no, start_ms=cfg.start_ms + pass_no * span
            )
        yield from generate(cfg)

    @functools.cached_property
    def info(self) -> FeedInfo:
        """Known without simulating: every coin has every channel, plus ``allMids``."""
        coins = frozenset(self.config.coins)
        return FeedInfo(
            coins=tuple(self.config.coins),
            trade_coins=coins,
            book_coins=coins,
            bbo_coins=coins,
            ctx_coins=coins,
            candle_coins=coins,
            has_all_mids=True,
            sz_decimals={c: KNOWN_SZ_DECIMALS.get(c, DEFAULT_SZ_DECIMALS) for c in coins},
        )


class ListFeed(Feed):
    """Frames given in code (handy in tests).

    Args:
        items: frames (``{"channel": ..., "data": ...}``) or ``(receive_ns or None, frame)``
            pairs, in feed order; replayed identically on every pass.
    """

    def __init__(self, items: Iterable[dict[str, Any] | tuple[int | None, dict[str, Any]]]) -> None:
        self.items: list[tuple[int | None, Any]] = [
            (None, item) if isinstance(item, dict) else (item[0], item[1]) for item in items
        ]

    def records(self, pass_no: int) -> Iterator[tuple[int | None, Any]]:
        """The given records."""
        return iter(self.items)


@dataclass(frozen=True)
class Universe:
    """The coins the exchange lists: the feed's, then ``extra`` and ``delisted`` ones.

    Attributes:
        coins: in ``meta`` order (feed coins by first appearance, then extra, then delisted).
        valid: the same as a set: subscriptions for other coins drop the socket.
        bookless: coins without any feed data (extra, delisted): they stream empty books, like a
            delisted coin.
        delisted: coins ``meta`` marks ``isDelisted``.
    """

    coins: tuple[str, ...]
    valid: frozenset[str]
    bookless: frozenset[str]
    delisted: frozenset[str]

    @classmethod
    def of(cls, info: FeedInfo, extra: Sequence[str], delisted: Sequence[str]) -> Universe:
        """The universe of a feed with ``extra`` and ``delisted`` coins added."""
        universe = dict.fromkeys(info.coins)
        universe.update(dict.fromkeys(extra))
        universe.update(dict.fromkeys(delisted))
        valid = frozenset(universe)
        return cls(tuple(universe), valid, valid - frozenset(info.coins), frozenset(delisted))
