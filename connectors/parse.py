"""Raw Hyperliquid frames and capture lines → typed events: the public parser.

One parser serves every source (NDJSON replay, the live WebSocket), so a recorded frame and a live
frame become the same events.

Wire facts this relies on (``../shared/reference/hyperliquid-api.md`` §1):

- data frames are ``{"channel": name, "data": payload}``; prices and sizes are decimal strings;
- ``trades`` carries an array; its first frame after a (re)subscribe replays the last 30 trades, so
  trades are de-duplicated on ``(coin, tid, time)``;
- ``candle`` carries ONE object, re-pushed while the candle is open; only closed candles count;
- ``allMids`` and ``activeAssetCtx`` carry no timestamp;
- acks (``subscriptionResponse``), ``pong``, ``post`` and ``error`` frames, client requests found in
  captures (``{"method": ...}``) and the plain-text greeting are control traffic, not data.

This module is the public one: `FrameParser` (the frame dispatcher: data channels, control traffic,
the project's own markers, and the typed fast path's entry points) and every name callers import
from ``connectors.parse``. The concepts behind it live in private modules, re-exported here:

- `connectors._parse_lines`: capture lines → ``(receive ns, frame)`` (`decode_line`, `iso_to_ns`,
  `peek_time_ms`, `ControlMarker`, `GREETING`);
- `connectors._parse_wire`: the msgspec schemas of the typed fast path (trades, bbo, l2Book);
- `connectors._parse_core`: the state every channel's parser shares;
- one module per channel family: `connectors._parse_trades` (`DEDUPE_CAPACITY`),
  `connectors._parse_book` (l2Book, bbo), `connectors._parse_candle`,
  `connectors._parse_mids_ctx` (allMids, activeAssetCtx).

The channel parsers are mixins of `FrameParser`, not separate objects, so the split adds no call on
the per-frame path. A module-level setting is read where it is defined: patch
``connectors._parse_trades.DEDUPE_CAPACITY``, not the re-export here.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from connectors._parse_book import BookParser
from connectors._parse_candle import CandleParser
from connectors._parse_lines import (
    GREETING,
    ControlMarker,
    decode_line,
    iso_to_ns,
    loads_frame,
    peek_time_ms,
)
from connectors._parse_mids_ctx import MidsCtxParser
from connectors._parse_trades import DEDUPE_CAPACITY, TradesParser
from connectors._parse_wire import (
    BARE,
    ENVELOPE,
    FAST_ERRORS,
    BboFrame,
    BookFrame,
    HotFrame,
    TradesFrame,
)
from connectors.errors import FrameError
from connectors.events import Event, Gap
from connectors.validate import ValidationConfig, control_coins, gap_marker

__all__ = [
    "ACTIVATE_CHANNEL",
    "CONTROL_CHANNELS",
    "DEDUPE_CAPACITY",
    "GAP_CHANNEL",
    "GREETING",
    "ControlMarker",
    "FrameParser",
    "decode_line",
    "iso_to_ns",
    "peek_time_ms",
]

log = logging.getLogger(__name__)

CONTROL_CHANNELS: Final = frozenset({"subscriptionResponse", "pong", "post"})
GAP_CHANNEL: Final = "hlsl.gap"
ACTIVATE_CHANNEL: Final = "hlsl.activate"
_LOCAL_CHANNELS: Final = frozenset({GAP_CHANNEL, ACTIVATE_CHANNEL})


class FrameParser(TradesParser, BookParser, CandleParser, MidsCtxParser):
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
        super().__init__(coins, config)
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
                env = ENVELOPE.decode(line)
                recv_ns = iso_to_ns(env.time)
                frame = env.raw
            elif line[:1] == b"{":
                recv_ns = None
                frame = BARE.decode(line)
            else:
                recv_ns, raw = decode_line(line, self.config.max_json_depth)
                return self.parse(raw, recv_ns)
        except FAST_ERRORS:
            recv_ns, raw = decode_line(line, self.config.max_json_depth)
            return self.parse(raw, recv_ns)
        except RecursionError:
            raise FrameError("too_deep", "JSON nested too deep to decode") from None
        return self.parse_typed(frame, recv_ns)

    def parse_raw(self, raw: bytes, recv_ns: int) -> list[Event]:
        """Parse one frame's raw bytes as received live (no capture line wrapper)."""
        try:
            frame = BARE.decode(raw)
        except FAST_ERRORS:
            if raw[:1] not in (b"{", b"["):
                text = raw.decode("utf-8", "replace").strip()
                if text.strip('"') == GREETING:
                    return self.parse(GREETING, recv_ns)
                raise FrameError("invalid_json", f"not a JSON frame: {text[:80]!r}") from None
            return self.parse(loads_frame(raw, self.config.max_json_depth), recv_ns)
        except RecursionError:
            raise FrameError("too_deep", "JSON nested too deep to decode") from None
        return self.parse_typed(frame, recv_ns)

    def parse_typed(self, frame: HotFrame, recv_ns: int | None) -> list[Event]:
        """Parse a frame the typed decoder produced (validated like any other)."""
        recv_ms = None if recv_ns is None else recv_ns // 1_000_000
        if type(frame) is BboFrame:
            out = self._bbo_typed(frame.data, recv_ms)
            self.frames["bbo"] += 1
        elif type(frame) is TradesFrame:
            rows = [(t.coin, t.time, t.tid, t.side, t.px, t.sz) for t in frame.data]
            out = self._trade_rows(rows, recv_ms, typed=True)
            self.frames["trades"] += 1
        else:
            assert type(frame) is BookFrame
            d = frame.data
            out = self._book_event(d.coin, d.time, recv_ms, d.levels)
            self.frames["l2Book"] += 1
        if out:
            out = self._admit(out)
        if self._open_candles:
            self._close_due_candles(recv_ms, out)
        return out

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
