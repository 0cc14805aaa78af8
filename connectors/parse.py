"""Raw Hyperliquid frames and capture lines → typed events.

One parser serves every source (NDJSON replay now, the live WebSocket later), so a recorded frame
and a live frame become the same events.

Wire facts this relies on (``../shared/reference/hyperliquid-api.md`` §1):

- data frames are ``{"channel": name, "data": payload}``; prices and sizes are decimal strings;
- ``trades`` carries an array; its first frame after a (re)subscribe replays the last 30 trades, so
  trades are de-duplicated on ``(coin, tid, time)``;
- ``candle`` carries ONE object, re-pushed while the candle is open; only closed candles count;
- ``allMids`` and ``activeAssetCtx`` carry no timestamp;
- acks (``subscriptionResponse``), ``pong``, ``post`` and ``error`` frames, client requests found in
  captures (``{"method": ...}``) and the plain-text greeting are control traffic, not data.

Capture line formats (`decode_line`):

(a) a bare frame: ``{"channel": ...}``
(b) Hyperliquid's archive envelope: ``{"time": "2025-09-04T19:46:56.673877954", "ver_num": 1,
    "raw": {frame}}`` (receive time, ISO UTC, ns)
(c) ``<receive ns> <frame>`` as written by hftbacktest's collector.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec
import orjson

from connectors.errors import FrameError
from connectors.events import (
    AssetCtx,
    Bbo,
    BookSnapshot,
    Candle,
    Event,
    Gap,
    Mid,
    Trades,
    WireCoin,
    WireLevel,
    WirePx,
    WireSz,
)
from connectors.validate import (
    PriceGuard,
    TimeCheck,
    ValidationConfig,
    check_levels,
    check_order,
    check_quote,
    coin_name,
    control_coins,
    gap_marker,
    json_depth_exceeds,
    number,
    price,
    size,
)

log = logging.getLogger(__name__)

GREETING: Final = "Websocket connection established."
CONTROL_CHANNELS: Final = frozenset({"subscriptionResponse", "pong", "post"})
GAP_CHANNEL: Final = "hlsl.gap"
ACTIVATE_CHANNEL: Final = "hlsl.activate"
_LOCAL_CHANNELS: Final = frozenset({GAP_CHANNEL, ACTIVATE_CHANNEL})
_MAX_CANDLE_MS: Final = 31 * 86_400_000
"""The longest candle the exchange serves (1M)."""
DEDUPE_CAPACITY: Final = 1024
"""How many recent trade keys are remembered per coin for de-duplication (the exchange replays
the last 30 on a subscribe; a coin over capacity keeps its newest half, in a new dict so the
memory is given back)."""

_DAY_CACHE: dict[str, int] = {}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def iso_to_ns(stamp: str) -> int:
    """Parse an archive receive time (``2025-09-04T19:46:56.673877954``, UTC) to ns since epoch.

    Nanosecond precision is kept (``datetime`` stops at µs). A trailing ``Z`` or ``+00:00`` is
    accepted; anything else falls back to `datetime.fromisoformat`. Whole seconds are cached, as
    consecutive lines share them.

    >>> iso_to_ns("1970-01-01T00:00:01.5")
    1500000000
    """
    head = stamp[:19]
    base = _SECOND_CACHE.get(head)
    if base is None:
        if len(head) != 19 or head[10] != "T" or head[13] != ":" or head[16] != ":":
            return _iso_fallback(stamp)
        day = head[:10]
        day_ns = _DAY_CACHE.get(day)
        if day_ns is None:
            try:
                d = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
            except ValueError:
                return _iso_fallback(stamp)
            day_ns = int(d.timestamp()) * 1_000_000_000
            _DAY_CACHE[day] = day_ns
        digits = head[11:13] + head[14:16] + head[17:19]
        if not (digits.isascii() and digits.isdigit()):
            return _iso_fallback(stamp)
        hh, mm, ss = int(head[11:13]), int(head[14:16]), int(head[17:19])
        if hh > 23 or mm > 59 or ss > 59:
            msg = f"time of day out of range in {stamp!r}"
            raise FrameError("bad_receive_time", msg)
        secs = hh * 3600 + mm * 60 + ss
        base = day_ns + secs * 1_000_000_000
        if len(_SECOND_CACHE) > 4096:
            _SECOND_CACHE.clear()
        _SECOND_CACHE[head] = base
    rest = stamp[19:]
    if not rest:
        return base
    if rest[-1] == "Z":
        rest = rest[:-1]
    elif rest.endswith("+00:00"):
        rest = rest[:-6]
    if rest[:1] != "." or not (rest[1:].isascii() and rest[1:].isdigit()):
        return base if not rest else _iso_fallback(stamp)
    digits = rest[1:10]
    ns: int = base + int(digits) * _SCALE[len(digits)]
    return ns


_SCALE: Final = tuple(10 ** (9 - k) for k in range(10))
_SECOND_CACHE: dict[str, int] = {}


def _iso_fallback(stamp: str) -> int:
    try:
        d = datetime.fromisoformat(stamp)
    except ValueError as ex:
        msg = f"unreadable receive time {stamp!r}"
        raise FrameError("bad_receive_time", msg) from ex
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return (d - _EPOCH) // timedelta(microseconds=1) * 1000  # exact: no float rounding


def decode_line(line: bytes, max_depth: int = 64) -> tuple[int | None, Any]:
    """Split one capture line into ``(receive_ns or None, frame)``.

    The frame is the decoded JSON value (normally a dict), a `ControlMarker` for the project's own
    markers (the line's ``"hlsl"`` key), or, for the server's plain-text greeting, the string
    itself. Raises `FrameError` (``invalid_json``, ``too_deep``) for anything unreadable.
    """
    first = line[:1]
    if first == b"{":
        obj = _loads(line, max_depth)
        if type(obj) is dict and "ver_num" in obj:
            raw = obj.get("raw", _MISSING)
            marker = obj.get("hlsl", _MISSING)
            if raw is not _MISSING or marker is not _MISSING:
                stamp = obj.get("time")
                recv_ns: int | None = None
                if type(stamp) is str:
                    recv_ns = iso_to_ns(stamp)
                elif type(stamp) is int:
                    recv_ns = stamp
                if raw is _MISSING:
                    return recv_ns, ControlMarker(marker)
                return recv_ns, raw
        return None, obj
    if first.isdigit():
        head, sep, rest = line.partition(b" ")
        if not sep or not head.isdigit():
            raise FrameError("invalid_json", "expected '<receive ns> <frame>'")
        return int(head), _loads(rest, max_depth)
    text = line.decode("utf-8", "replace").strip()
    if text.strip('"') == GREETING:
        return None, GREETING
    raise FrameError("invalid_json", f"not a JSON frame: {text[:80]!r}")


def _loads(data: bytes, max_depth: int) -> Any:
    """orjson.loads after a nesting check (``too_deep``); ``invalid_json`` for bad JSON."""
    if json_depth_exceeds(data, max_depth):
        raise FrameError("too_deep", f"JSON nested deeper than {max_depth} levels")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as ex:
        raise FrameError("invalid_json", str(ex)) from ex


class ControlMarker:
    """The project's own control marker from a capture line's ``"hlsl"`` key (never from ``raw``).

    ``{"time": …, "ver_num": 1, "hlsl": {"channel": "hlsl.gap", "data": {…}}}``: recordings carry
    connection gaps and coin activations outside the exchange's frame, so no exchange frame (or
    anyone who can send one) can forge them.
    """

    __slots__ = ("body",)

    def __init__(self, body: Any) -> None:
        self.body = body


_MISSING: Final = object()


# -- typed fast path -----------------------------------------------------------------------------
# The three channels that make up almost all traffic (trades, bbo, l2Book) are decoded straight
# into typed structs by msgspec, decimal strings converted to floats in C (``strict=False``), and
# a book's levels kept as raw JSON until a bar reads them. Anything else, or anything these
# schemas reject, goes down the general path (orjson + checks), which names the exact problem.


class _Trade(msgspec.Struct):
    coin: WireCoin
    side: str
    px: WirePx
    sz: WireSz
    time: int
    tid: int


class _BboData(msgspec.Struct):
    coin: WireCoin
    time: int
    bbo: tuple[WireLevel | None, WireLevel | None]


class _BookData(msgspec.Struct):
    coin: WireCoin
    time: int
    levels: msgspec.Raw


class _TradesFrame(msgspec.Struct, tag_field="channel", tag="trades"):
    data: list[_Trade]


class _BboFrame(msgspec.Struct, tag_field="channel", tag="bbo"):
    data: _BboData


class _BookFrame(msgspec.Struct, tag_field="channel", tag="l2Book"):
    data: _BookData


_HotFrame = _TradesFrame | _BboFrame | _BookFrame


class _Envelope(msgspec.Struct):
    time: str
    ver_num: int
    raw: _HotFrame


_ENVELOPE = msgspec.json.Decoder(_Envelope, strict=False)
_BARE = msgspec.json.Decoder(_HotFrame, strict=False)
_FAST_ERRORS: Final = (msgspec.ValidationError, msgspec.DecodeError)


def peek_time_ms(frame: Any) -> int | None:
    """The exchange time of a frame without parsing it fully (for merging captures), else None."""
    if type(frame) is not dict:
        return None
    data = frame.get("data")
    if type(data) is dict:
        t = data.get("time", data.get("T"))
        return t if type(t) is int else None
    if type(data) is list and data and type(data[0]) is dict:
        t = data[0].get("time")
        return t if type(t) is int else None
    return None


class FrameParser:
    """Stateful frame → events parser: validation, de-duplication, candle closing, counters.

    Every frame is validated at this edge (`connectors.validate`): a frame is accepted only when
    it is physically possible, else it raises `FrameError` with a reason code and changes no state.

    Args:
        coins: coins to keep (exact names); ``None`` keeps every coin. ``allMids`` fans out only to
            these coins, or, without a filter, to coins already seen on another channel.
        config: the validation limits.

    Attributes:
        frames: data frames accepted, by channel.
        control: control frames seen, by kind (``subscriptionResponse``, ``pong``, ``error`` ...).
        duplicates: trades dropped by de-duplication.
        latest_ms: the latest exchange time accepted (the replay's source clock).
        on_reject: called with each rejection decided after its frame was accepted (a coin's
            first prices held until confirmed); the caller counts and logs it.
    """

    def __init__(
        self, coins: frozenset[str] | None = None, config: ValidationConfig | None = None
    ) -> None:
        self.coins = coins
        self.config = config if config is not None else ValidationConfig()
        self.frames: Counter[str] = Counter()
        self.control: Counter[str] = Counter()
        self.duplicates = 0
        self.ignored_coin = 0
        self.latest_ms: int | None = None
        self.seen_coins: set[str] = set()
        # Coins a live connection has activated (primed and subscribed); allMids fans out only
        # to them once a capture says so, so a replay sees exactly what the live run saw.
        self.active: set[str] | None = None
        self.on_reject: Callable[[FrameError], None] | None = None
        self._times = TimeCheck(self.config)
        self.guard = PriceGuard(
            self.config.max_price_jump, confirm_first=self.config.confirm_first_price
        )
        self._dedupe: dict[str, dict[tuple[int, int], None]] = {}
        # (coin, interval) -> (open t, fields) of the candle still open; closed bucket starts.
        self._open_candles: dict[tuple[str, str], Candle] = {}
        self._closed_t: dict[tuple[str, str], int] = {}
        self._handlers = {
            "trades": self._trades,
            "l2Book": self._book,
            "bbo": self._bbo,
            "candle": self._candle,
            "allMids": self._mids,
            "activeAssetCtx": self._ctx,
        }

    def parse(self, frame: Any, recv_ns: int | None = None) -> list[Event]:
        """Turn one frame into events (often one, sometimes none or several).

        Control frames return ``[]`` and are counted in `control`. Raises `FrameError` for a frame
        that cannot be used; the caller counts and logs it.
        """
        recv_ms = None if recv_ns is None else recv_ns // 1_000_000
        if type(frame) is not dict:
            if type(frame) is ControlMarker:
                return self.parse_marker(frame.body, recv_ns)
            if frame == GREETING:
                self.control["greeting"] += 1
                return []
            raise FrameError("unknown_frame", f"not a frame object: {str(frame)[:80]!r}")
        channel = frame.get("channel")
        if type(channel) is not str and channel is not None:
            msg = f"channel is not a string: {str(channel)[:40]!r}"
            raise FrameError("unknown_channel", msg)
        handler = self._handlers.get(channel)  # type: ignore[arg-type]
        if handler is None:
            if channel in _LOCAL_CHANNELS:
                if not self.config.trust_legacy_control:
                    msg = f"{channel} inside an exchange frame (set HLSL_TRUST_LEGACY_CONTROL=1 "
                    msg += "for captures written before control markers moved out of raw)"
                    raise FrameError("forged_control", msg)
                self.control["legacy_control"] += 1
                return self._local(channel, frame.get("data"), recv_ms)
            return self._control(frame, channel)
        try:
            out = handler(frame["data"], recv_ms)
        except FrameError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as ex:
            msg = f"{type(ex).__name__}: {ex}"
            raise FrameError(f"bad_{channel}", msg) from ex
        self.frames[str(channel)] += 1
        if out:
            out = self._admit(out)
        if self._open_candles:
            self._close_due_candles(recv_ms, out)
        return out

    def parse_marker(self, body: Any, recv_ns: int | None) -> list[Event]:
        """One of the project's own control markers (a capture's ``"hlsl"`` key, or the live
        source's own queue), validated as strictly as any frame."""
        if type(body) is not dict or body.get("channel") not in _LOCAL_CHANNELS:
            raise FrameError("bad_control", f"unknown control marker {str(body)[:80]!r}")
        recv_ms = None if recv_ns is None else recv_ns // 1_000_000
        return self._local(body["channel"], body.get("data"), recv_ms)

    def parse_line(self, line: bytes) -> list[Event]:
        """Decode and parse one capture line (any format); same result as `decode_line` +
        `parse`, faster for trades, bbo and l2Book. Raises `FrameError`."""
        try:
            if line[:8] == b'{"time":':
                env = _ENVELOPE.decode(line)
                recv_ns = iso_to_ns(env.time)
                frame = env.raw
            elif line[:1] == b"{":
                recv_ns = None
                frame = _BARE.decode(line)
            else:
                recv_ns, raw = decode_line(line, self.config.max_json_depth)
                return self.parse(raw, recv_ns)
        except _FAST_ERRORS:
            recv_ns, raw = decode_line(line, self.config.max_json_depth)
            return self.parse(raw, recv_ns)
        except RecursionError:
            raise FrameError("too_deep", "JSON nested too deep to decode") from None
        return self.parse_typed(frame, recv_ns)

    def parse_raw(self, raw: bytes, recv_ns: int) -> list[Event]:
        """Parse one frame's raw bytes as received live (no capture line wrapper)."""
        try:
            frame = _BARE.decode(raw)
        except _FAST_ERRORS:
            if raw[:1] not in (b"{", b"["):
                text = raw.decode("utf-8", "replace").strip()
                if text.strip('"') == GREETING:
                    return self.parse(GREETING, recv_ns)
                raise FrameError("invalid_json", f"not a JSON frame: {text[:80]!r}") from None
            return self.parse(_loads(raw, self.config.max_json_depth), recv_ns)
        except RecursionError:
            raise FrameError("too_deep", "JSON nested too deep to decode") from None
        return self.parse_typed(frame, recv_ns)

    def parse_typed(self, frame: _HotFrame, recv_ns: int | None) -> list[Event]:
        """Parse a frame the typed decoder produced (validated like any other)."""
        recv_ms = None if recv_ns is None else recv_ns // 1_000_000
        if type(frame) is _BboFrame:
            out = self._bbo_typed(frame.data, recv_ms)
            self.frames["bbo"] += 1
        elif type(frame) is _TradesFrame:
            rows = [(t.coin, t.time, t.tid, t.side, t.px, t.sz) for t in frame.data]
            out = self._trade_rows(rows, recv_ms, typed=True)
            self.frames["trades"] += 1
        else:
            assert type(frame) is _BookFrame
            d = frame.data
            out = self._book_event(d.coin, d.time, recv_ms, d.levels)
            self.frames["l2Book"] += 1
        if out:
            out = self._admit(out)
        if self._open_candles:
            self._close_due_candles(recv_ms, out)
        return out

    def _admit(self, out: list[Event]) -> list[Event]:
        """Pass events through the price-continuity guard (rejections after the fact reported)."""
        guard = self.guard
        out = guard.admit(out)
        if guard.rejected:
            rejected, guard.rejected = guard.rejected, []
            if self.on_reject is not None:
                for ex in rejected:
                    self.on_reject(ex)
        return out

    def _time(self, t: Any, recv_ms: int | None, channel: str) -> int:
        return self._times.check(t, recv_ms, self.latest_ms, channel)

    def _bbo_typed(self, d: _BboData, recv_ms: int | None) -> list[Event]:
        # Coin, prices and sizes were checked by the typed decoder's constraints.
        coin = d.coin
        t = self._times.check(d.time, recv_ms, self.latest_ms, "bbo")
        bid, ask = d.bbo
        e = Bbo(
            coin,
            t,
            recv_ms,
            None if bid is None else bid.px,
            None if bid is None else bid.sz,
            None if ask is None else ask.px,
            None if ask is None else ask.sz,
        )
        if bid is not None and ask is not None and not bid.px < ask.px:
            check_quote(bid.px, ask.px, "bbo")
        self._see(t)
        return [e] if self._keep(coin) else []

    def _local(self, channel: str, data: Any, recv_ms: int | None) -> list[Event]:
        """This project's own markers (``hlsl.gap``, ``hlsl.activate``)."""
        if channel == ACTIVATE_CHANNEL:
            coins = control_coins(data)
            self.control[channel] += 1
            if self.active is None:
                self.active = set()
            self.active.update(coins)
            return []
        coins, reason, down = gap_marker(data)
        t = self._untimed(recv_ms, channel)
        self.control[channel] += 1
        return [Gap(c, t, recv_ms, reason, down) for c in coins if self._keep(c)]

    def _control(self, frame: dict[str, Any], channel: Any) -> list[Event]:
        if channel is None:
            if "method" in frame:
                self.control["client_request"] += 1
                return []
            raise FrameError("unknown_frame", f"no channel in frame: {str(frame)[:80]!r}")
        if channel in CONTROL_CHANNELS:
            self.control[channel] += 1
            return []
        if channel == "error":
            self.control["error"] += 1
            log.warning("exchange error frame: %s", str(frame.get("data"))[:200])
            return []
        raise FrameError("unknown_channel", f"channel {str(channel)[:40]!r}")

    def _see(self, time_ms: int) -> None:
        latest = self.latest_ms
        if latest is None or time_ms > latest:
            self.latest_ms = time_ms

    def _keep(self, coin: str) -> bool:
        coins = self.coins
        if coins is not None and coin not in coins:
            self.ignored_coin += 1
            return False
        self.seen_coins.add(coin)
        return True

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

    def _book(self, data: Any, recv_ms: int | None) -> list[Event]:
        levels = data["levels"]
        if type(levels) is not list or len(levels) != 2:
            raise FrameError("bad_l2Book", "levels is not [bids, asks]")
        bids, asks = levels
        if type(bids) is not list or type(asks) is not list:
            raise FrameError("bad_l2Book", "a book side is not an array")
        for lv in (*bids, *asks):
            if type(lv) is not dict or any(type(lv.get(k)) is bool for k in ("px", "sz", "n")):
                raise FrameError("bad_l2Book", f"a level is not a number object: {lv!r:.80}")
        return self._book_event(data["coin"], data["time"], recv_ms, (bids, asks))

    def _book_event(
        self, coin: Any, t: Any, recv_ms: int | None, levels: tuple[list[Any], list[Any]] | Any
    ) -> list[Event]:
        coin = coin_name(coin, "l2Book")
        t = self._time(t, recv_ms, "l2Book")
        book = BookSnapshot(coin, t, recv_ms, levels)
        try:
            prices = book.load()
        except msgspec.ValidationError as ex:
            raise FrameError(_level_reason(str(ex)), f"l2Book level: {ex}") from None
        except msgspec.DecodeError as ex:
            raise FrameError("bad_l2Book", f"unreadable levels: {ex}") from None
        if prices is not None:
            check_order(prices[0], prices[1], "l2Book")
        else:
            sides = book.sides()
            if book.error is not None:
                raise FrameError("bad_l2Book", book.error)
            check_levels(sides, "l2Book")
        self._see(t)
        return [book] if self._keep(coin) else []

    def _bbo(self, data: Any, recv_ms: int | None) -> list[Event]:
        coin = coin_name(data["coin"], "bbo")
        t = self._time(data["time"], recv_ms, "bbo")
        bid, ask = data["bbo"]
        e = Bbo(
            coin,
            t,
            recv_ms,
            None if bid is None else price(bid["px"], "bbo"),
            None if bid is None else size(bid["sz"], "bbo"),
            None if ask is None else price(ask["px"], "bbo"),
            None if ask is None else size(ask["sz"], "bbo"),
        )
        _check_bbo(e)
        self._see(t)
        return [e] if self._keep(coin) else []

    def _untimed(self, recv_ms: int | None, channel: str) -> int:
        if recv_ms is not None:
            return recv_ms
        if self.latest_ms is not None:
            return self.latest_ms
        msg = "no receive time and no exchange time seen before it"
        raise FrameError(f"untimed_{channel}", msg)

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

    def _candle(self, data: Any, recv_ms: int | None) -> list[Event]:
        if type(data) is list:  # tolerate the documented-but-wrong array form
            out: list[Event] = []
            for item in data:
                out.extend(self._candle(item, recv_ms))
            return out
        coin = coin_name(data["s"], "candle")
        interval = data["i"]
        t = data["t"]
        if type(interval) is not str or not interval:
            raise FrameError("bad_candle", f"interval {str(interval)[:20]!r} is not a string")
        if type(t) is not int:
            raise FrameError("bad_candle", "t missing or not an integer")
        # An open candle's close time T lies ahead: the future is judged on its open time t.
        t = self._time(t, recv_ms, "candle")
        close_t = data["T"]
        if type(close_t) is not int:
            raise FrameError("bad_time", f"candle: close time {str(close_t)[:40]!r} is not an int")
        if close_t < t or close_t - t > _MAX_CANDLE_MS:
            raise FrameError("bad_candle", f"close time T {close_t} vs open time t {t}")
        n = data.get("n") or 0
        if type(n) is not int or n < 0:
            raise FrameError("bad_candle", f"trade count n {str(n)[:20]!r} is not an int >= 0")
        w = "candle"
        candle = Candle(
            coin,
            close_t,
            recv_ms,
            interval,
            t,
            price(data["o"], w),
            price(data["h"], w),
            price(data["l"], w),
            price(data["c"], w),
            size(data["v"], w),
            n,
        )
        if not (candle.low <= min(candle.o, candle.c) and candle.h >= max(candle.o, candle.c)):
            msg = f"candle o/h/l/c {candle.o}/{candle.h}/{candle.low}/{candle.c} inconsistent"
            raise FrameError("bad_candle", msg)
        if not self._keep(coin):
            return []
        key = (coin, candle.interval)
        closed_t = self._closed_t.get(key)
        if closed_t is not None and t <= closed_t:
            return []  # a re-push of a bucket already counted, or an older one
        out = []
        pending = self._open_candles.get(key)
        if pending is not None and pending.open_ms < t:
            # A new bucket started: the previous push was the final bar of its bucket.
            del self._open_candles[key]
            self._closed_t[key] = pending.open_ms
            out.append(pending)
        now = recv_ms if recv_ms is not None else self.latest_ms
        if now is not None and close_t < now:
            self._open_candles.pop(key, None)
            self._closed_t[key] = t
            self._see(close_t)
            out.append(candle)
        else:
            self._open_candles[key] = candle
        return out

    def _close_due_candles(self, recv_ms: int | None, out: list[Event]) -> None:
        """Close open candles whose close time has passed on the source's clock."""
        now = recv_ms if recv_ms is not None else self.latest_ms
        if now is None:
            return
        for key, candle in list(self._open_candles.items()):
            if candle.time_ms < now:
                del self._open_candles[key]
                self._closed_t[key] = candle.open_ms
                out.append(candle)


def _level_reason(msg: str) -> str:
    """The reason code for a book level the typed decoder's constraints refused."""
    if "Expected `float` >" in msg or "Expected `float` <=" in msg:
        return "bad_price" if msg.endswith(".px`") else "bad_size"
    return "bad_l2Book"


def _check_bbo(e: Bbo) -> None:
    """A bbo's sides: prices > 0, sizes >= 0, finite, not crossed or locked."""
    for px, sz in ((e.bid_px, e.bid_sz), (e.ask_px, e.ask_sz)):
        if px is not None:
            if not (px > 0.0 and px - px == 0.0):
                raise FrameError("bad_price", f"bbo: price {px} is not a finite number > 0")
            if not (sz is not None and sz >= 0.0 and sz - sz == 0.0):
                raise FrameError("bad_size", f"bbo: size {sz} is not a finite number >= 0")
    check_quote(e.bid_px, e.ask_px, "bbo")
