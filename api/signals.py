"""What the routes answer, read from the store: coin lookup, the error they raise, the bodies.

Shared by REST (`api.app`) and MCP (`api.mcp`) so both resolve coins, refuse and render the
same way. Coin names are case-sensitive on Hyperliquid: an exact match wins, else a unique
case-insensitive one. Unknown coin: 404 with the coins served; a string that cannot be a coin
name: 422; a tracked coin without a signal yet: 503 with the reason. Bodies are spliced from the
stored bytes (`connectors.stored.StoredEnvelope.json_at`), never re-validated per request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

import orjson

from api.schemas import SignalEnvelope
from connectors.codes import Explain
from connectors.events import Stream
from connectors.freshness import FreshnessStatus, judge_stream, stream_block
from connectors.store import RunState, SignalStore, StoredEnvelope
from flows.settings import COIN_PATTERN
from operators.explain import RegimeExplanation, explain_envelope
from operators.regime import RegimeConfig

_COIN_RE = re.compile(COIN_PATTERN)
_STREAM_OF = {s.value: s for s in Stream}


class ApiError(Exception):
    """An error with an HTTP status, a reason and optionally the coins served."""

    def __init__(
        self,
        status: int,
        detail: str,
        coins: list[str] | None = None,
        *,
        earliest_ms: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.coins = coins
        self.earliest_ms = earliest_ms


def refresh(env: dict[str, Any], now_ms: int | None) -> dict[str, Any]:
    """A copy of ``env`` with freshness judged as of ``now_ms`` (the source clock).

    If the inputs are stale now, the signal is not actionable any more (``STALE_INPUT``).
    """
    if now_ms is None:
        return env
    old = env["freshness"]
    streams: dict[str, Any] = {}
    any_present = False
    any_stale = False
    for name, s in old["streams"].items():
        judged = judge_stream(
            _STREAM_OF[name],
            s["last_exchange_ms"],
            s["last_recv_ms"],
            s["expected_interval_ms"],
            max(now_ms, env["timestamp_ms"]),
        )
        streams[name] = stream_block(judged)
        any_present |= judged.status is not FreshnessStatus.MISSING
        any_stale |= judged.status is FreshnessStatus.STALE
    status = (
        FreshnessStatus.STALE
        if any_stale
        else FreshnessStatus.OK
        if any_present
        else FreshnessStatus.MISSING
    )
    out = dict(env)
    out["freshness"] = {
        "as_of_ms": max(now_ms, env["timestamp_ms"]),
        "status": str(status),
        "streams": streams,
    }
    if any_stale and (
        env["edge"]["actionable"] or Explain.STALE_INPUT.value not in env["edge"]["explain"]
    ):
        edge = dict(env["edge"])
        edge["actionable"] = False
        if Explain.STALE_INPUT.value not in edge["explain"]:
            edge["explain"] = [*edge["explain"], Explain.STALE_INPUT.value]
        out["edge"] = edge
    return out


def envelope_json(env: StoredEnvelope | dict[str, Any], now_ms: int | None) -> bytes:
    """The JSON of an envelope with freshness judged as of ``now_ms``: the body of
    ``GET /v1/signal/{coin}`` and the data of a ``/v1/stream`` ``signal`` event.

    A stored envelope gets the new freshness block spliced into its bytes
    (`connectors.store.StoredEnvelope.json_at`, never parsed again); a dict is re-judged by
    `refresh` and encoded (the same bytes)."""
    if isinstance(env, StoredEnvelope):
        return env.json_at(now_ms)
    return orjson.dumps(refresh(env, now_ms))


def list_json(recs: Iterable[StoredEnvelope], now_ms: int | None) -> bytes:
    """The body of ``GET /v1/signals`` (`api.schemas.SignalList`) from stored envelopes."""
    parts = [rec.json_at(now_ms) for rec in recs]
    return b'{"data":[' + b",".join(parts) + b'],"count":' + str(len(parts)).encode() + b"}"


_NO_NEXT: Final = object()


def history_json(
    coin: str, recs: Sequence[StoredEnvelope], next_since_ms: int | object | None = _NO_NEXT
) -> bytes:
    """The body of ``GET /v1/signal/{coin}/history`` (`api.schemas.SignalHistory`): the stored
    envelopes as emitted (freshness as of their bar close), oldest first; a range request
    (``until_ms``) also says ``next_since_ms``."""
    tail = b"}"
    if next_since_ms is not _NO_NEXT:
        tail = b',"next_since_ms":' + orjson.dumps(next_since_ms) + b"}"
    return b"".join(
        (
            b'{"coin":',
            orjson.dumps(coin),
            b',"data":[',
            b",".join(rec.raw for rec in recs),
            b'],"count":',
            str(len(recs)).encode(),
            tail,
        )
    )


def history_page(
    s: SignalStore, coin: str, limit: int, since_ms: int | None, until_ms: int | None
) -> tuple[list[StoredEnvelope], int | object | None]:
    """The envelopes a history request gets and, for a range (``until_ms``), where the next
    page starts (None: this is the last).

    Raises `ApiError` 422 for a reversed range (REST and every MCP source answer it alike), and
    404 (with ``earliest_ms``) when a range reaches before what is still held.
    """
    if until_ms is not None and since_ms is not None and until_ms < since_ms:
        raise ApiError(422, "until_ms: must be >= since_ms")
    if until_ms is None:
        return s.record_history(coin, limit=limit, since_ms=since_ms), _NO_NEXT
    earliest, evicted = s.retention(coin)
    if evicted is not None and (
        (since_ms is not None and since_ms < evicted) or (since_ms is None and until_ms <= evicted)
    ):
        asked = f"from since_ms={since_ms}" if since_ms is not None else f"to until_ms={until_ms}"
        msg = (
            f"history of {coin} {asked} is no longer held (the store keeps the newest "
            f"HLSL_HISTORY_LIMIT envelopes per coin; the oldest held closed at {earliest})"
        )
        raise ApiError(404, msg, earliest_ms=earliest)
    recs = s.record_history(coin, limit=limit + 1, since_ms=since_ms, until_ms=until_ms)
    if len(recs) > limit:
        recs = recs[:limit]
        return recs, recs[-1].timestamp_ms
    return recs, None


def vouch(s: SignalStore) -> None:
    """Raise the 503 for data this server cannot vouch for (a mirror cut off from its store)."""
    reason = s.unavailable
    if reason is not None:
        raise ApiError(503, reason)


def check_coin_name(name: str) -> None:
    """Raise the 422 for a string that cannot be a Hyperliquid coin name."""
    if not _COIN_RE.fullmatch(name):
        msg = f"{name[:40]!r} is not a coin name (expected {COIN_PATTERN})"
        raise ApiError(422, msg)


def resolve(s: SignalStore, name: str) -> str:
    """The served coin ``name`` designates: exact, else a unique case-insensitive match.

    Raises `ApiError`: 422 not a coin name; 404 unknown or ambiguous (with the coins served).
    """
    check_coin_name(name)
    coin = s.resolve(name)
    if coin is None:
        coins = s.coins()
        ambiguous = [c for c in coins if c.lower() == name.lower()]
        if ambiguous:
            msg = f"coin {name!r} is ambiguous: {', '.join(ambiguous)} (names are case-sensitive)"
            raise ApiError(404, msg, coins)
        raise ApiError(404, f"unknown coin {name!r}", coins)
    return coin


def latest_record(s: SignalStore, name: str) -> tuple[str, StoredEnvelope]:
    """The served coin ``name`` designates and its latest stored envelope.

    Raises `ApiError`: as `resolve` (422, 404); 503 when the coin has no signal yet (with the
    reason, `no_signal_reason`), or when this server cannot vouch for its data (a mirror cut off
    from the shared store, `vouch`).
    """
    coin = resolve(s, name)
    rec = s.record(coin)
    if rec is None or s.unavailable is not None:
        raise ApiError(503, s.unavailable or no_signal_reason(s, coin))
    return coin, rec


def explain_signal(env: dict[str, Any], config: RegimeConfig | None = None) -> RegimeExplanation:
    """Why a coin's regime is what it is, from its latest envelope as served (freshness judged
    now): the body of ``GET /v1/signal/{coin}/explain`` and of the MCP tool ``explain_regime``.

    The envelope is checked by `SignalEnvelope` first, then explained by
    `operators.explain.explain_envelope` with ``config`` (default: the flow's thresholds).
    """
    doc = SignalEnvelope.model_validate(env).model_dump(mode="json")
    return explain_envelope(doc, config)


def no_signal_reason(s: SignalStore, coin: str) -> str:
    """Why a tracked coin has no signal yet (the 503's detail)."""
    if s.state is RunState.FAILED:
        return f"the signal flow failed: {s.error}"
    if s.state is RunState.STARTING:
        return "the signal flow is starting"
    if s.state in (RunState.FINISHED, RunState.STOPPED):
        return f"the input ended before any bar of {coin} closed"
    return f"no bar of {coin} has closed yet (first signal after the first bar plus lateness)"
