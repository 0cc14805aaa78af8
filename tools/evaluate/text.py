"""Durations and numbers as the evaluation reads and writes them: ``5s``/``4h`` on the command
line, ``5 min``/``24 h`` and ISO-8601 UTC in the report, point estimates with their 95 % intervals,
and Markdown tables."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from tools.evaluate.stats import Interval

_UNITS_MS: Final = {"ms": 1, "s": 1_000, "m": 60_000, "min": 60_000, "h": 3_600_000}
_UNITS_MS_DAY: Final = {"d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """``"500ms"``, ``"5s"``, ``"5m"``/``"5min"``, ``"4h"``, ``"1d"`` or plain milliseconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|d)?\s*", text)
    if m is None:
        msg = f"not a duration: {text!r} (e.g. 500ms, 5s, 5m, 4h, 1d)"
        raise ValueError(msg)
    unit = m.group(2) or "ms"
    ms = round(float(m.group(1)) * {**_UNITS_MS, **_UNITS_MS_DAY}[unit])
    if ms <= 0:
        msg = f"duration must be > 0: {text!r}"
        raise ValueError(msg)
    return ms


def fmt_duration(ms: int) -> str:
    """A duration for people: ``1 s``, ``5 min``, ``24 h``, ``250 ms``."""
    for unit, size in (("h", 3_600_000), ("min", 60_000), ("s", 1_000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size} {unit}"
    if ms >= 1_000:
        return f"{ms / 1000:g} s"
    return f"{ms} ms"


def fmt_dwell(ms: float) -> str:
    """A mean duration, rounded for reading: ``42 s``, ``3.5 min``, ``2.1 h``, ``1.6 d``."""
    if not math.isfinite(ms):
        return "–"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000)):
        if ms >= 2 * size:
            return f"{ms / size:.1f} {unit}"
    return f"{ms / 1000:.0f} s"


def iso_utc(ms: int) -> str:
    """Milliseconds since the epoch as ISO-8601 UTC (``2025-04-06T21:05:00Z``)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt_num(v: float, fmt: str = ".3f") -> str:
    """A number in ``fmt``; ``–`` when not finite."""
    return "–" if not math.isfinite(v) else format(v, fmt)


def fmt_pct(v: float, digits: int = 1) -> str:
    """A share as a percentage (``51.6 %``); ``–`` when not finite."""
    return "–" if not math.isfinite(v) else f"{100 * v:.{digits}f} %"


def fmt_ci(v: Interval, fmt: str = "+.3f") -> str:
    """An estimate with its 95 % interval: ``+0.014 [-0.011, +0.040]``."""
    if not math.isfinite(v.value):
        return "–"
    if not (math.isfinite(v.lo) and math.isfinite(v.hi)):
        return format(v.value, fmt)
    return f"{v.value:{fmt}} [{v.lo:{fmt}}, {v.hi:{fmt}}]"


def fmt_ci_pct(v: Interval) -> str:
    """A share with its 95 % interval, in percent: ``51.6 % [48.3, 54.9]``."""
    if not math.isfinite(v.value):
        return "–"
    if not (math.isfinite(v.lo) and math.isfinite(v.hi)):
        return f"{100 * v.value:.1f} %"
    return f"{100 * v.value:.1f} % [{100 * v.lo:.1f}, {100 * v.hi:.1f}]"


def ci_side(v: Interval) -> str:
    """Where the 95 % interval lies: ``above 0``, ``below 0``, ``contains 0`` or ``n/a``."""
    if not (math.isfinite(v.lo) and math.isfinite(v.hi)):
        return "n/a"
    if v.lo > 0:
        return "above 0"
    if v.hi < 0:
        return "below 0"
    return "contains 0"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table, one line a row."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out
