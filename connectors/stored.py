"""What the signal store holds of one envelope: its JSON bytes, spans and packed clocks.

`StoredEnvelope` is not the envelope's dict (~9.5 KB of Python objects) but its JSON bytes as
``orjson.dumps`` writes them (~3.5-4 KB), plus the few typed fields the API needs to judge
freshness again at request time (the bar close, each stream's last exchange time, last receive
time and expected interval, packed as int64s) and the byte spans of the ``freshness`` block and of
``edge.actionable`` / ``edge.explain`` inside those bytes. The API never re-parses the JSON: it
re-judges freshness from the typed fields, encodes only the new freshness block and splices it
(and, when the inputs went stale, ``false`` and ``"STALE_INPUT"``) into the stored bytes. Once a
newer envelope of the same coin arrives, the older one keeps only its bytes compressed (an LZ4
block, ~1.8x smaller): history is served as emitted, so it is only ever decompressed, never
re-judged. The envelope is treated generically: whatever dict it is given is stored (an envelope
without a well-formed freshness block is served exactly as stored).

The store that keeps these per coin (`connectors.store.SignalStore`) re-exports this module's
public names, so ``from connectors.store import StoredEnvelope`` keeps working.

One module past ~400 lines on purpose: the encoding, the spans and the splice of a fresh
freshness block into the stored bytes are one representation and must agree byte for byte.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from typing import Any, Final, SupportsIndex

import lz4.block
import orjson

from connectors.codes import Explain
from connectors.events import Stream
from connectors.fields import ENVELOPE_FIELDS
from connectors.freshness import FreshnessStatus, judge_stream, stream_block

Envelope = dict[str, Any]

COMPRESS_LEVEL: Final = 1
"""Kept for callers that named it; superseded envelopes are LZ4 blocks now (see `compact`)."""

_STREAM_OF: Final = {s.value: s for s in Stream}
_STALE_ITEM: Final = orjson.dumps(Explain.STALE_INPUT.value)
_NONE: Final = -(2**63)  # None in the packed clocks (never a real millisecond time)
_SPANS: Final = struct.Struct("<5iB")  # freshness start/end, actionable start/end, explain's "]"
_EXPLAIN_EMPTY: Final = 1
_STALE_LISTED: Final = 2
_NAMES_CACHE: dict[tuple[str, ...], tuple[str, ...]] = {}  # stream-name tuples, shared
_NAMES_CACHE_MAX: Final = 64
_OK: Final = str(FreshnessStatus.OK)
_STALE: Final = str(FreshnessStatus.STALE)
_MISSING: Final = str(FreshnessStatus.MISSING)
_dumps = orjson.dumps


def _encode_object(d: dict[Any, Any]) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """``orjson.dumps(d)``, built member by member so the byte span of each member's value is
    known. The bytes are identical (orjson writes ``{"k":v,...}``, no spaces); a non-str key
    raises orjson's own error, as ``orjson.dumps(d)`` would."""
    parts: list[bytes] = []
    spans: dict[str, tuple[int, int]] = {}
    pos = 1
    for k, v in d.items():
        if not isinstance(k, str):
            return _dumps(d), {}  # raises (orjson refuses non-str keys)
        head = _dumps(k) + b":"
        value = _dumps(v)
        if parts:
            pos += 1
        start = pos + len(head)
        spans[k] = (start, start + len(value))
        pos = start + len(value)
        parts.append(head + value)
    return b"{" + b",".join(parts) + b"}", spans


def _value_span(raw: bytes, key: bytes, value: bytes, start: int = 0) -> tuple[int, int] | None:
    """The span of ``"key":value`` in ``raw`` (the first occurrence whose value bytes match)."""
    needle = b'"' + key + b'":'
    i = raw.find(needle, start)
    while i >= 0:
        s = i + len(needle)
        if raw.startswith(value, s):
            return s, s + len(value)
        i = raw.find(needle, i + 1)
    return None


def _encode(
    env: dict[Any, Any],
) -> tuple[bytes, tuple[int, int] | None, dict[str, tuple[int, int]]]:
    """The envelope's bytes (``orjson.dumps(env)``) and the spans `_encode_members` finds, by
    one encoding and three C-speed searches (a JSON key cannot occur inside a string, whose
    quotes are escaped; each span is checked against its value's own bytes), falling back to
    the member-by-member build when a search is ambiguous."""
    # A copy: orjson's own result keeps the ~16 KB buffer it grew into, 4x the JSON.
    raw = memoryview(_dumps(env)).tobytes()
    fresh = env.get("freshness")
    edge = env.get("edge")
    if fresh is None or not isinstance(edge, dict) or not isinstance(edge.get("explain"), list):
        return _encode_members(env)
    f = _value_span(raw, b"freshness", _dumps(fresh))
    e = _value_span(raw, b"edge", _dumps(edge))
    if f is None or e is None:
        return _encode_members(env)
    edge_raw = raw[e[0] : e[1]]
    a = _value_span(edge_raw, b"actionable", _dumps(edge.get("actionable")))
    x = _value_span(edge_raw, b"explain", _dumps(edge["explain"]))
    if a is None or x is None or "actionable" not in edge:
        return _encode_members(env)
    base = e[0]
    spans = {"actionable": (base + a[0], base + a[1]), "explain": (base + x[0], base + x[1])}
    return raw, f, spans


def _encode_members(
    env: dict[Any, Any],
) -> tuple[bytes, tuple[int, int] | None, dict[str, tuple[int, int]]]:
    """The envelope's bytes (``orjson.dumps(env)``), the span of its ``freshness`` value and the
    spans of ``edge.actionable`` and ``edge.explain`` (empty when the edge is not a dict with
    both, ``explain`` a list)."""
    parts: list[bytes] = []
    fresh: tuple[int, int] | None = None
    edge_spans: dict[str, tuple[int, int]] = {}
    pos = 1
    for k, v in env.items():
        if not isinstance(k, str):
            return _dumps(env), None, {}  # raises
        head = _dumps(k) + b":"
        inner: dict[str, tuple[int, int]] | None = None
        if k == "edge" and isinstance(v, dict) and isinstance(v.get("explain"), list):
            value, inner = _encode_object(v)
        else:
            value = _dumps(v)
        if parts:
            pos += 1
        start = pos + len(head)
        end = start + len(value)
        if k == "freshness":
            fresh = (start, end)
        elif inner is not None and "actionable" in inner:
            edge_spans = {n: (start + a, start + b) for n, (a, b) in inner.items()}
        pos = end
        parts.append(head + value)
    return b"{" + b",".join(parts) + b"}", fresh, edge_spans


def _stream_clocks(fresh: Any) -> tuple[tuple[str, ...], list[Any]] | None:
    """Stream names and ``(last_exchange_ms, last_recv_ms, expected_interval_ms)`` of each, from
    a freshness block, or None when the block cannot be judged again."""
    if not isinstance(fresh, dict):
        return None
    streams = fresh.get("streams")
    if not isinstance(streams, dict):
        return None
    names: list[str] = []
    values: list[Any] = []
    for name, s in streams.items():
        if name not in _STREAM_OF or not isinstance(s, dict):
            return None
        try:
            values += (s["last_exchange_ms"], s["last_recv_ms"], s["expected_interval_ms"])
        except KeyError:
            return None
        names.append(name)
    key = tuple(names)
    shared = _NAMES_CACHE.get(key)
    if shared is None:
        shared = key
        if len(_NAMES_CACHE) < _NAMES_CACHE_MAX:
            _NAMES_CACHE[key] = key
    return shared, values


def _pack_clocks(values: list[Any]) -> bytes | None:
    """The clocks as int64s (None as a sentinel), or None if one is not a plain int64 or None."""
    out: list[int] = []
    for v in values:
        if v is None:
            out.append(_NONE)
        elif type(v) is int and _NONE < v < 2**63:
            out.append(v)
        else:
            return None
    return struct.pack(f"<{len(out)}q", *out)


_LAYOUT: Final = tuple(ENVELOPE_FIELDS)
"""The envelope's top-level keys in `operators.envelope.build_envelope`'s order."""
_EDGE_LAYOUT: Final = tuple(ENVELOPE_FIELDS["edge"])
_FRESHNESS_KEY: Final = b',"freshness":'
_AFTER_FRESHNESS: Final = b',"' + _LAYOUT[_LAYOUT.index("freshness") + 1].encode() + b'":'
_EDGE_KEY: Final = b',"edge":'
_ACTIONABLE_KEY: Final = b'"actionable":'
_AFTER_EXPLAIN: Final = b'],"' + _EDGE_LAYOUT[_EDGE_LAYOUT.index("explain") + 1].encode() + b'":'
_STALE_CODE: Final = Explain.STALE_INPUT.value


class EncodedEnvelope(dict[str, Any]):
    """An envelope (a plain dict to every reader) that carries what its `StoredEnvelope` holds,
    encoded once, where the envelope was built (`encode_envelope`): the store then takes the
    bytes as they are instead of encoding the dict again.

    Treat it as immutable. A copy (``copy``, ``deepcopy``, ``pickle``, ``dict(env)``) is a plain
    dict without the encoding, so an edited copy is encoded afresh.
    """

    __slots__ = ("encoding",)
    encoding: tuple[Any, ...]
    """What `StoredEnvelope` holds of it (see `encode_envelope`)."""

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return (dict, (dict(self),))


def encode_envelope(env: Envelope) -> Envelope:
    """``env`` with its stored form encoded now: one ``orjson.dumps`` and a few C-speed searches
    (`EncodedEnvelope`); ``env`` itself when it does not have `build_envelope`'s layout (then the
    store encodes it generically, as before).

    The searches rely on the layout: the top-level keys and the edge's keys in their order (both
    checked here), and on JSON itself (a key pattern such as ``,"freshness":`` cannot occur
    inside a string, whose quotes are escaped; the blocks before ``freshness`` hold no key of
    that name).
    """
    edge = env.get("edge")
    fresh = env.get("freshness")
    regime = env.get("regime")
    ts = env.get("timestamp_ms")
    if (
        type(edge) is not dict
        or type(ts) is not int
        or type(regime) is not dict
        or tuple(env) != _LAYOUT
        or tuple(edge) != _EDGE_LAYOUT
    ):
        return env
    actionable = edge["actionable"]
    explain = edge["explain"]
    if type(actionable) is not bool or type(explain) is not list:
        return env
    for code in explain:
        if type(code) is not str:
            return env
    clocks = _stream_clocks(fresh)
    if clocks is None:
        return env
    names, values = clocks
    raw = memoryview(_dumps(env)).tobytes()  # a copy: see `_encode`
    fs = raw.find(_FRESHNESS_KEY) + len(_FRESHNESS_KEY)
    fe = raw.find(_AFTER_FRESHNESS, fs)
    a0 = raw.find(_ACTIONABLE_KEY, raw.find(_EDGE_KEY)) + len(_ACTIONABLE_KEY)
    a1 = a0 + (4 if actionable else 5)
    close = raw.find(_AFTER_EXPLAIN, a1)
    flags = (0 if explain else _EXPLAIN_EMPTY) | (_STALE_LISTED if _STALE_CODE in explain else 0)
    meta = _SPANS.pack(fs, fe, a0, a1, close, flags)
    packed = _pack_clocks(values)
    clock: tuple[Any, ...] | None = None
    if packed is None:
        clock = tuple(values)
        packed = b""
    out = EncodedEnvelope(env)
    out.encoding = (
        raw,
        meta + packed,
        clock,
        names,
        ts,
        regime.get("label"),
        env["direction"],
        fresh.get("status") if isinstance(fresh, dict) else None,
        actionable,
    )
    return out


def envelope_bytes(env: Envelope) -> bytes:
    """``orjson.dumps(env)``: the bytes encoded where the envelope was built, if it was."""
    if type(env) is EncodedEnvelope:
        raw: bytes = env.encoding[0]
        return raw
    return _dumps(env)


class StoredEnvelope:
    """One stored envelope: its JSON bytes plus what re-judging freshness needs (no dict).

    Build it with ``StoredEnvelope(env)`` (any dict orjson can encode; ``raw`` is then exactly
    ``orjson.dumps(env)``). `json_at` is the envelope with freshness judged as of a source-clock
    time, spliced into the bytes; `raw` the envelope as emitted.

    Attributes:
        timestamp_ms: the envelope's ``timestamp_ms`` (the bar close) if an int, else None.
        label: ``regime.label`` (None if absent).
        direction: ``direction`` (None if absent).
        status: ``freshness.status`` as emitted (None if absent).
        actionable: ``edge.actionable`` as emitted (None if absent).
    """

    __slots__ = (
        "_clock",
        "_meta",
        "_names",
        "_raw",
        "_z",
        "actionable",
        "direction",
        "label",
        "status",
        "timestamp_ms",
    )
    _raw: bytes | None
    _z: bytes | None
    _meta: bytes | None
    _clock: tuple[Any, ...] | None
    _names: tuple[str, ...]
    timestamp_ms: int | None
    label: Any
    direction: Any
    status: Any
    actionable: Any

    def __init__(self, env: Envelope) -> None:
        if type(env) is EncodedEnvelope:  # encoded where it was built
            (
                self._raw,
                self._meta,
                self._clock,
                self._names,
                self.timestamp_ms,
                self.label,
                self.direction,
                self.status,
                self.actionable,
            ) = env.encoding
            self._z = None
            return
        raw, fresh_span, edge_spans = _encode(env)
        self._raw = raw
        self._z = None
        ts = env.get("timestamp_ms")
        self.timestamp_ms = ts if type(ts) is int else None
        regime = env.get("regime")
        self.label = regime.get("label") if isinstance(regime, dict) else None
        self.direction = env.get("direction")
        fresh = env.get("freshness")
        self.status = fresh.get("status") if isinstance(fresh, dict) else None
        edge = env.get("edge")
        self.actionable = edge.get("actionable") if isinstance(edge, dict) else None
        self._meta = None  # spans (+ packed clocks): None = serve as stored
        self._clock = None  # clocks that do not pack as int64s
        self._names = ()
        clocks = _stream_clocks(fresh)
        if clocks is None or fresh_span is None or self.timestamp_ms is None:
            return
        self._names, values = clocks
        flags = 0
        act, expl = edge_spans.get("actionable"), edge_spans.get("explain")
        if act is None or expl is None or not isinstance(edge, dict):
            act, expl = (-1, -1), (0, 0)
        else:
            flags |= _EXPLAIN_EMPTY if not edge["explain"] else 0
            flags |= _STALE_LISTED if Explain.STALE_INPUT.value in edge["explain"] else 0
        spans = _SPANS.pack(fresh_span[0], fresh_span[1], act[0], act[1], expl[1] - 1, flags)
        packed = _pack_clocks(values)
        if packed is None:
            self._clock = tuple(values)
            packed = b""
        self._meta = spans + packed

    @classmethod
    def from_json(cls, raw: bytes) -> StoredEnvelope:
        """A stored envelope from the bytes another process stored (the shared store): the
        same record as ``StoredEnvelope(orjson.loads(raw))``, keeping exactly ``raw`` (bytes
        that orjson would not write the same are served as they are, never re-judged)."""
        rec = cls(orjson.loads(raw))
        if rec._raw != raw:
            rec._raw = bytes(raw)
            rec._meta = None
            rec._clock = None
        return rec

    @property
    def raw(self) -> bytes:
        """The envelope's JSON as emitted (freshness as of its bar close)."""
        raw = self._raw
        if raw is None:
            assert self._z is not None
            out: bytes = lz4.block.decompress(self._z)
            return out
        return raw

    @property
    def compressed(self) -> bool:
        """Whether only the compressed bytes are held (a superseded envelope)."""
        return self._raw is None

    def compact(self) -> None:
        """Keep only the compressed bytes (called once a newer envelope of the coin arrived)."""
        raw = self._raw
        if raw is not None:
            # LZ4, not zlib: ~7 us instead of ~44 us an envelope on the per-bar path, for
            # ~1.8x instead of ~2.5x smaller
            self._z = lz4.block.compress(raw)
            self._raw = None  # after _z is set: a reader sees one or the other

    def envelope(self) -> Envelope:
        """The envelope as a dict, as emitted (decodes the bytes: for tools and tests)."""
        out: Envelope = orjson.loads(self.raw)
        return out

    def nbytes(self) -> int:
        """Bytes this record holds (object, bytes, packed fields), for the memory budget."""
        n = sys.getsizeof(self)
        for part in (self._raw, self._z, self._meta, self._clock):
            if part is not None:
                n += sys.getsizeof(part)
        if self.timestamp_ms is not None:
            n += sys.getsizeof(self.timestamp_ms)
        return n

    def _clocks(self) -> Sequence[Any]:
        if self._clock is not None:
            return self._clock
        assert self._meta is not None
        n = (len(self._meta) - _SPANS.size) // 8
        return struct.unpack_from(f"<{n}q", self._meta, _SPANS.size)

    def freshness_at(self, now_ms: int | None) -> tuple[dict[str, Any], bool] | None:
        """The freshness block judged as of ``now_ms`` (the source clock) and whether a stream
        is stale; None when ``now_ms`` is None or the envelope carries no freshness to judge
        (then it is served as stored). The same judgement as `api.signals.refresh`."""
        if now_ms is None or self._meta is None:
            return None
        ts = self.timestamp_ms
        assert ts is not None
        as_of = now_ms if now_ms > ts else ts
        clocks = self._clocks()
        packed = self._clock is None
        streams: dict[str, Any] = {}
        present = stale = False
        for i, name in enumerate(self._names):
            last, recv, interval = clocks[3 * i : 3 * i + 3]
            if packed:
                last = None if last == _NONE else last
                recv = None if recv == _NONE else recv
                interval = None if interval == _NONE else interval
            judged = judge_stream(_STREAM_OF[name], last, recv, interval, as_of)
            streams[name] = stream_block(judged)
            present |= judged.status is not FreshnessStatus.MISSING
            stale |= judged.status is FreshnessStatus.STALE
        status = _STALE if stale else _OK if present else _MISSING
        return {"as_of_ms": as_of, "status": status, "streams": streams}, stale

    def status_at(self, now_ms: int | None) -> Any:
        """The overall freshness status as of ``now_ms`` (as stored when it cannot be judged)."""
        judged = self.freshness_at(now_ms)
        return self.status if judged is None else judged[0]["status"]

    def actionable_at(self, now_ms: int | None) -> Any:
        """``edge.actionable`` as served at ``now_ms`` (False once an input went stale)."""
        if self.actionable:
            judged = self.freshness_at(now_ms)
            meta = self._meta
            if judged is not None and judged[1] and meta and _SPANS.unpack_from(meta)[2] >= 0:
                return False
        return self.actionable

    def json_at(self, now_ms: int | None) -> bytes:
        """The envelope's JSON with freshness judged as of ``now_ms``: the new freshness block
        (and, when an input went stale, ``edge.actionable`` false and ``STALE_INPUT`` appended
        to ``edge.explain``) spliced into the stored bytes; never parsed again."""
        judged = self.freshness_at(now_ms)
        raw = self.raw
        if judged is None:
            return raw
        assert self._meta is not None
        fresh, stale = judged
        fs, fe, a0, a1, close, flags = _SPANS.unpack_from(self._meta)
        block = _dumps(fresh)
        if not (stale and a0 >= 0):
            return b"".join((raw[:fs], block, raw[fe:]))
        # Stale now: STALE_INPUT is listed whether or not the bar was actionable, and an
        # actionable bar is not any more.
        edits = [(fs, fe, block)]
        if self.actionable:
            edits.append((a0, a1, b"false"))
        if not flags & _STALE_LISTED:
            edits.append(
                (close, close, _STALE_ITEM if flags & _EXPLAIN_EMPTY else b"," + _STALE_ITEM)
            )
        edits.sort(key=lambda x: x[0])
        out: list[bytes] = []
        at = 0
        for start, end, data in edits:
            out.append(raw[at:start])
            out.append(data)
            at = end
        out.append(raw[at:])
        return b"".join(out)


__all__ = [
    "COMPRESS_LEVEL",
    "EncodedEnvelope",
    "Envelope",
    "StoredEnvelope",
    "encode_envelope",
    "envelope_bytes",
]
