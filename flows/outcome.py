"""How a replay went: the source's counters, and why a finished replay gave nothing useful.

`replay_info` is what ``/health``, ``/v1/state`` and the summaries show of a replay source;
`replay_problems` names what went wrong (no data frames, no signals, a requested coin absent
from the captures, with the coins they do hold and near misses).

In a partitioned replay (several workers) the counters are this process's: the partitions it
read. A process judges only what it can know: a requested coin that no partition of the run holds,
and partitions of its own that gave no data frame; no signals from its share of the coins is not
a failure of the run.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors.files import ReplayStats, open_capture
from connectors.parse import FrameParser
from connectors.partitions import COIN_PREFIX
from flows.settings import Settings

if TYPE_CHECKING:
    from connectors.store import SignalStore


def replay_coins(settings: Settings) -> list[str]:
    """The coins a replay keeps (empty: every coin; ``ALL`` means every coin too)."""
    if [c.upper() for c in settings.coins] == ["ALL"]:
        return []
    return list(settings.coins)


SCAN_LINES = 200_000
"""Lines read at most to learn which coins a capture holds (only when a requested one is absent)."""


def capture_coins(paths: Sequence[str], max_lines: int = SCAN_LINES) -> set[str]:
    """The coins the first ``max_lines`` lines of some captures carry (best effort)."""
    parser = FrameParser()
    n = 0
    for path in paths:
        try:
            fh = open_capture(Path(path))
        except OSError:
            continue
        with fh:
            try:
                for line in fh:
                    n += 1
                    if n > max_lines:
                        return parser.seen_coins
                    try:
                        parser.parse_line(line.rstrip(b"\r\n"))
                    except Exception:  # any bad line: skipped, as the replay did
                        continue
            except (EOFError, OSError, ValueError, RuntimeError):
                continue
    return parser.seen_coins


def _coin_problems(requested: Iterable[str], seen: set[str], paths: Sequence[str]) -> list[str]:
    missing = [c for c in requested if c not in seen]
    if not missing:
        return []
    present = capture_coins(paths)
    out = []
    for coin in missing:
        folded = sorted(c for c in present if c.lower() == coin.lower())
        near = folded or difflib.get_close_matches(coin, sorted(present), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in near)}?" if near else ""
        listed = ", ".join(sorted(present)[:20]) or "none"
        out.append(
            f"unknown coin {coin!r} in this capture{hint} (coin names are case-sensitive; "
            f"coins in it: {listed})"
        )
    return out


def skip_counts(stats: ReplayStats) -> str:
    """Lines skipped by reason, as ``reason=n, ...`` (or ``none``)."""
    return ", ".join(f"{k}={v}" for k, v in sorted(stats.skipped.items())) or "none"


def replay_problems(settings: Settings, stats: ReplayStats, store: SignalStore) -> list[str]:
    """Why a finished replay gave nothing useful: no frames, no signals, requested coins absent."""
    if stats.partitioned:
        return _partition_problems(settings, stats)
    files = ", ".join(stats.files)
    problems = _coin_problems(replay_coins(settings), stats.seen_coins, stats.files)
    if stats.frames == 0:
        problems.append(
            f"no data frames accepted from {files} ({stats.lines} lines read; "
            f"skipped: {skip_counts(stats)})"
        )
    elif store.signals_emitted == 0:
        problems.append(
            f"no signals produced from {stats.frames} data frames of {files} "
            f"(skipped: {skip_counts(stats)})"
        )
    return problems


def _partition_problems(settings: Settings, stats: ReplayStats) -> list[str]:
    """`replay_problems` of one process of a partitioned replay."""
    plan_coins = set(stats.plan_coins or ())
    problems = _coin_problems(replay_coins(settings), plan_coins, stats.files)
    mine = [p for p in stats.partitions if p.startswith(COIN_PREFIX)]
    if mine and stats.frames == 0:
        problems.append(
            f"no data frames accepted from the {len(mine)} coin partition(s) this process read "
            f"({stats.lines} lines read; skipped: {skip_counts(stats)})"
        )
    return problems


def replay_info(stats: ReplayStats) -> dict[str, Any]:
    """What a replay source has done so far (for /health, /v1/state and summaries)."""
    return {
        "kind": "replay",
        "files": list(stats.files),
        "lines_read": stats.lines,
        "frames_by_channel": dict(sorted(stats.frames_by_channel().items())),
        "control_frames": dict(sorted(stats.control_frames().items())),
        "lines_skipped": dict(sorted(stats.skipped.items())),
        "duplicate_trades": stats.duplicates,
        "ignored_coin_events": stats.ignored_coin,
        "errors": list(stats.errors),
        "finished": stats.finished,
        "latest_event_ms": stats.latest_ms,
    }
