"""The service's own health: ``/health`` and ``/v1/state`` documents, read from the store.

``/health`` is 503 when the flow failed, or when every coin with a signal is stale now
(freshness judged on the source's clock at request time); ``/v1/state`` adds the source's
counters (frames by channel, skipped lines by reason) and each coin's latest call.
"""

from __future__ import annotations

import time
from typing import Any

from api.schemas import CoinState, Health, SourceState, State
from connectors.freshness import FreshnessStatus
from connectors.store import RunState, SignalStore


def stale_coins(s: SignalStore) -> tuple[list[str], int]:
    """Coins whose latest signal is stale now, and how many coins have a signal."""
    now = s.now_ms()
    latest = s.records()
    stale = [c for c, rec in sorted(latest.items()) if rec.status_at(now) == FreshnessStatus.STALE]
    return stale, len(latest)


def store_problem(s: SignalStore, shared: dict[str, Any] | None) -> str | None:
    """Why the shared store's data cannot be vouched for now (None: it can, or memory)."""
    if s.unavailable is not None:
        return s.unavailable
    if shared is None:
        return None
    if shared.get("writers_disconnected"):
        names = ", ".join(shared["writers_disconnected"])
        return (
            f"flow process {names} cannot write to the shared store ({shared['buffered']} "
            f"envelopes buffered, {shared['dropped']} dropped)"
        )
    if shared.get("silent_processes"):
        names = ", ".join(shared["silent_processes"])
        return f"flow process {names} has stopped reporting to the shared store"
    return None


def unhealthy(s: SignalStore, shared: dict[str, Any] | None = None) -> tuple[bool, bool, list[str]]:
    """Whether ``/health`` is a 503; whether every coin is stale; the stale coins. ``shared``
    is the shared store's status (`connectors.redis_mirror.RedisMirror.status`; None: memory)."""
    stale, with_signal = stale_coins(s)
    all_stale = with_signal > 0 and len(stale) == with_signal
    cut_off = store_problem(s, shared) is not None
    return s.state is RunState.FAILED or all_stale or cut_off, all_stale, stale


def judge_health(s: SignalStore, shared: dict[str, Any] | None = None) -> tuple[Health, bool]:
    """The health document and whether it is a 503 (flow failed, every coin stale, or the shared
    store's data cannot be vouched for)."""
    flow_ok = s.state in (RunState.STARTING, RunState.RUNNING, RunState.FINISHED)
    is_503, all_stale, stale = unhealthy(s, shared)
    failed = s.state is RunState.FAILED
    cut_off = store_problem(s, shared)
    reason = None
    if cut_off is not None:
        reason = cut_off
    elif failed:
        reason = "the signal flow failed"
    elif all_stale:
        reason = "every coin's latest signal is stale"
    elif s.error:
        reason = "the source reported errors"
    elif not flow_ok:
        reason = f"the signal flow is {s.state}"
    health = Health(
        ok=flow_ok and not s.error and not all_stale and cut_off is None,
        status=str(s.state),
        mode=s.mode,
        error=s.error,
        coins=s.coins(),
        signals_emitted=s.signals_emitted,
        source_clock_ms=s.now_ms(),
        uptime_s=round(time.time() - s.started_wall_s, 3),
        connections=(s.source_info() or {}).get("connections", []),
        stale_coins=stale,
        reason=reason,
        store=shared,
    )
    return health, is_503


def health_of(s: SignalStore, shared: dict[str, Any] | None = None) -> Health:
    """The health document alone."""
    return judge_health(s, shared)[0]


def state_of(s: SignalStore, shared: dict[str, Any] | None = None) -> State:
    """The ``/v1/state`` document."""
    latest = s.records()
    now = s.now_ms()
    coins = []
    for coin in s.coins():
        rec = latest.get(coin)
        fresh = rec.status_at(now) if rec else None
        coins.append(
            CoinState(
                coin=coin,
                has_signal=rec is not None,
                timestamp_ms=rec.timestamp_ms if rec else None,
                regime=rec.label if rec else None,
                freshness=fresh,
                late_events=s.late_events.get(coin, 0),
            )
        )
    info = s.source_info() or {
        "kind": "none",
        "files": [],
        "lines_read": 0,
        "frames_by_channel": {},
        "control_frames": {},
        "lines_skipped": {},
        "duplicate_trades": 0,
        "ignored_coin_events": 0,
        "errors": [],
        "finished": False,
        "latest_event_ms": None,
    }
    return State(
        health=health_of(s, shared),
        source=SourceState(**info),
        coins=coins,
        late_events=sum(s.late_events.values()),
    )
