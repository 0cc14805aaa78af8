"""Price series read straight from capture files, for fitting and scoring outside the flow.

Candle files give one ``(open_ms, close)`` per closed candle (the flow replays them one bar per
candle, so its bar returns are the same consecutive-close log returns). The split dates of every
resolution family live here, once, so the fit and the report cannot disagree about them.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import orjson

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

CANDLE_SPLIT_MS: Final = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp() * 1000)
"""Candle datasets (every interval): rows before 2025-06-01 00:00 UTC may be fitted on (with
their forward window also before it); rows at or after it are out-of-sample."""
TICK_SPLIT_SHARE: Final = 0.6
"""Tick captures: the first 60 % of the capture's time span is in-sample, the rest out-of-sample."""
SPLIT_TEXT: Final = (
    "candles (every interval) from 2025-06-01 00:00 UTC on; tick captures their last 40 %"
)
"""The out-of-sample periods in one phrase (the report says it wherever it names them)."""
CRASH_WINDOW_MS: Final = (
    int(datetime(2025, 4, 6, 12, tzinfo=UTC).timestamp() * 1000),
    int(datetime(2025, 4, 8, tzinfo=UTC).timestamp() * 1000),
)
"""The 2025-04-06/07 crash: from 12:00 UTC on 04-06 (BTC at 82,801, the README's starting level)
to the end of 04-07. The whole two days (from 00:00 on 04-06) are reported beside it."""
CRASH_DAYS_MS: Final = (
    int(datetime(2025, 4, 6, tzinfo=UTC).timestamp() * 1000),
    CRASH_WINDOW_MS[1],
)


@dataclass(frozen=True)
class CandleSeries:
    """One coin's closed candles of one interval."""

    coin: str
    bar_ms: int
    open_ms: I64
    close: F64
    path: Path

    @property
    def returns(self) -> F64:
        """Log return of each candle's close over the previous close (0 for the first)."""
        out: F64 = np.zeros(len(self.close))
        out[1:] = np.diff(np.log(self.close))
        return out


def read_candles(path: Path) -> dict[str, CandleSeries]:
    """Every coin's candles in a capture file (archive-envelope NDJSON, gzip or not)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    rows: dict[str, list[tuple[int, int, float]]] = {}
    with opener(path, "rb") as fh:
        for line in fh:
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            raw = doc.get("raw", doc) if isinstance(doc, dict) else None
            if not isinstance(raw, dict) or raw.get("channel") != "candle":
                continue
            d = raw.get("data")
            if not isinstance(d, dict):
                continue
            try:
                rows.setdefault(str(d["s"]), []).append((int(d["t"]), int(d["T"]), float(d["c"])))
            except (KeyError, TypeError, ValueError):
                continue
    out: dict[str, CandleSeries] = {}
    for coin, items in rows.items():
        items.sort()
        dedup: dict[int, tuple[int, int, float]] = {t: (t, big_t, c) for t, big_t, c in items}
        ts = np.array(sorted(dedup), dtype=np.int64)
        if len(ts) < 2:
            continue
        closes = np.array([dedup[int(t)][2] for t in ts])
        bar = int(np.median(np.diff(ts)))
        out[coin] = CandleSeries(coin, bar, ts, closes, path)
    return out


def resample(s: CandleSeries, bar_ms: int) -> CandleSeries:
    """The series at ``bar_ms`` bars, as the flow closes them over its candles: each bar's close
    is the close of the candle ending on the bar's boundary (a bar whose last candle is missing
    is left out)."""
    if bar_ms == s.bar_ms:
        return s
    if bar_ms % s.bar_ms:
        msg = f"{bar_ms} ms bars cannot be built from {s.bar_ms} ms candles"
        raise ValueError(msg)
    ends = s.open_ms + s.bar_ms
    keep = ends % bar_ms == 0
    return CandleSeries(s.coin, bar_ms, ends[keep] - bar_ms, s.close[keep], s.path)
