"""The inputs: capture files found and scanned once (kind, coins, candle closes, trade prices),
grouped into datasets (tick data; candles of one interval) with the flow settings each replays
with, and the simulator's truth file."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import orjson

from connectors.events import Candle, Kind, Trades
from connectors.files import read_events
from tools.evaluate.stats import F64, I64
from tools.evaluate.text import fmt_duration, parse_duration_ms

CAPTURE_SUFFIXES: Final = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz", ".lz4", ".txt")
TICK_HORIZONS_MS: Final = (1_000, 5_000, 15_000, 30_000, 60_000, 120_000)
CANDLE_LADDER_MS: Final = (60_000, 300_000, 900_000, 3_600_000, 14_400_000, 86_400_000)
TICK_WINDOW_OBS: Final = 60
TICK_WARMUP_OBS: Final = 30
CANDLE_WINDOW_OBS: Final = 60  # #9: one window rule at every bar length, the server's default
CANDLE_WARMUP_OBS: Final = 30


@dataclass
class FileScan:
    """What one capture holds, and the non-mid price observations read from it."""

    path: Path
    kind: str  # "tick", "candle" or "none"
    candle_ms: int | None
    coins: tuple[str, ...]
    candles: dict[str, tuple[I64, F64]]
    trades: dict[str, tuple[I64, F64]]
    first_ms: int | None
    last_ms: int | None


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Capture files named, or found (not recursively) in folders named, in a stable order."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(
                sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(CAPTURE_SUFFIXES))
            )
        elif p.is_file():
            out.append(p)
        else:
            msg = f"no such capture file or folder: {p}"
            raise FileNotFoundError(msg)
    seen: set[Path] = set()
    unique: list[Path] = []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    if not unique:
        msg = f"no capture files in {[str(p) for p in paths]}"
        raise FileNotFoundError(msg)
    return unique


def _candle_interval_ms(intervals: Counter[str], closes: dict[str, list[int]]) -> int | None:
    if intervals:
        name = intervals.most_common(1)[0][0]
        try:
            return parse_duration_ms(name)
        except ValueError:
            pass
    diffs = [d for ts in closes.values() for d in np.diff(np.asarray(sorted(ts))).tolist() if d]
    return int(np.median(diffs)) if diffs else None


def scan_file(path: Path) -> FileScan:
    """Read a capture once with the project's parser: kind, coins, candle closes, trade prices."""
    candles: dict[str, list[tuple[int, float]]] = {}
    trades: dict[str, list[tuple[int, float]]] = {}
    intervals: Counter[str] = Counter()
    coins: set[str] = set()
    tick = False
    first: int | None = None
    last: int | None = None
    for ev in read_events([path]):
        if ev.KIND is Kind.GAP:
            continue
        coins.add(ev.coin)
        first = ev.time_ms if first is None else min(first, ev.time_ms)
        last = ev.time_ms if last is None else max(last, ev.time_ms)
        if isinstance(ev, Candle):
            candles.setdefault(ev.coin, []).append((ev.time_ms + 1, ev.c))
            intervals[ev.interval] += 1
        elif isinstance(ev, Trades):
            trades.setdefault(ev.coin, []).append((ev.time_ms + 1, ev.last_px))
            tick = True
        elif ev.KIND in (Kind.BOOK, Kind.BBO, Kind.MID):
            tick = True
    candle_ms = _candle_interval_ms(intervals, {c: [t for t, _ in v] for c, v in candles.items()})
    kind = "tick" if tick else "candle" if candle_ms else "none"

    def arrays(d: dict[str, list[tuple[int, float]]]) -> dict[str, tuple[I64, F64]]:
        return {
            c: (
                np.asarray([t for t, _ in v], dtype=np.int64),
                np.asarray([p for _, p in v], dtype=np.float64),
            )
            for c, v in d.items()
        }

    return FileScan(
        path, kind, candle_ms, tuple(sorted(coins)), arrays(candles), arrays(trades), first, last
    )


@dataclass(frozen=True)
class DatasetSpec:
    """One replay: files of one kind and the flow settings they run with."""

    name: str
    kind: str
    files: tuple[Path, ...]
    bar_ms: int
    window_obs: int
    warmup_obs: int
    horizons_ms: tuple[int, ...]

    @property
    def window_span_ms(self) -> int:
        """Time the feature window spans (= the edge's own horizon)."""
        return self.window_obs * self.bar_ms

    @property
    def max_gap_ms(self) -> int:
        """How long a price may be carried forward over a hole in the data."""
        return max(12 * self.bar_ms, 60_000)

    @property
    def main_horizon_ms(self) -> int:
        """The horizon nearest (in log) to the window span; ties go to the shorter."""
        return min(self.horizons_ms, key=lambda h: (abs(math.log(h / self.window_span_ms)), h))

    @property
    def slug(self) -> str:
        """A file-name friendly name."""
        return re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")


def default_horizons(kind: str, bar_ms: int) -> tuple[int, ...]:
    """Horizons suited to the data: seconds for tick data, 5 min .. 4 h for 5m candles (a ladder
    from one bar to 48 bars)."""
    if kind == "tick":
        hs = tuple(h for h in TICK_HORIZONS_MS if h % bar_ms == 0)
        return hs or (bar_ms,)
    hs = tuple(h for h in CANDLE_LADDER_MS if bar_ms <= h <= 48 * bar_ms and h % bar_ms == 0)
    return hs or (bar_ms, 4 * bar_ms)


def plan_datasets(
    scans: Sequence[FileScan],
    *,
    bar_ms: int | None = None,
    window_obs: int | None = None,
    warmup_obs: int | None = None,
    horizons_ms: Sequence[int] | None = None,
) -> list[DatasetSpec]:
    """Group files by kind (tick data; candles of one interval) with their flow settings."""
    groups: dict[tuple[str, int], list[Path]] = {}
    for s in scans:
        if s.kind == "none":
            continue
        native = 1000 if s.kind == "tick" else int(s.candle_ms or 0)
        groups.setdefault((s.kind, native), []).append(s.path)
    out: list[DatasetSpec] = []
    for (kind, native), files in sorted(groups.items(), key=lambda kv: (kv[0][0] != "tick", kv[0])):
        bar = bar_ms or native
        if kind == "tick":
            name = f"tick data, {fmt_duration(bar)} bars"
            win, warm = TICK_WINDOW_OBS, TICK_WARMUP_OBS
        else:
            name = f"{fmt_duration(native).replace(' ', '')} candles"
            win, warm = CANDLE_WINDOW_OBS, CANDLE_WARMUP_OBS
        hs = tuple(horizons_ms) if horizons_ms else default_horizons(kind, bar)
        hs = tuple(sorted({h for h in hs if h >= bar and h % bar == 0}))
        if not hs:
            msg = f"{name}: no horizon is a positive multiple of the bar ({bar} ms)"
            raise ValueError(msg)
        out.append(
            DatasetSpec(
                name,
                kind,
                tuple(files),
                bar,
                window_obs or win,
                warmup_obs or warm,
                hs,
            )
        )
    return out


def load_truth(path: Path) -> dict[str, list[tuple[int, int, str]]]:
    """A simulator truth file (`tools.simulate.truth`) as per-coin ``(start, end, label)``."""
    doc = orjson.loads(path.read_bytes())
    return {
        coin: [(int(p["start_ms"]), int(p["end_ms"]), str(p["label"])) for p in phases]
        for coin, phases in doc["coins"].items()
    }


def truth_labels(
    truth: dict[str, list[tuple[int, int, str]]], coins: Sequence[str], ts: npt.ArrayLike
) -> list[str]:
    """The scripted label in force at each row's bar close (``UNKNOWN`` outside the script)."""
    ta = np.asarray(ts, dtype=np.int64)
    out: list[str] = []
    for coin, t in zip(coins, ta.tolist(), strict=True):
        label = "UNKNOWN"
        for start, end, lab in truth.get(coin, []):
            if start <= t < end:
                label = lab
                break
        out.append(label)
    return out
