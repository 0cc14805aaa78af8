"""The edge calibration table: raw strength → probability that the direction is right.

The table is produced from data by the evaluation tool (``tools.evaluate``), versioned in the
repo at ``operators/calibration/edge_calibration.json`` and loaded once by `operators.edge` (a run
takes ``HLSL_CALIBRATION`` / ``--calibration`` through `flows.settings.Settings`). Its shape::

    {"format": "hlsl-edge-calibration/2",
     "version": "<id>",
     "fitted_on": {"files": [...], "span_utc": [start, end], "n": int, "splits": {...}},
     "horizons": {"<horizon_ms>": {"bins": [[score_lo, score_hi, p_right, n], ...],
                                   "mean_abs_move_bps": float,
                                   "skill": {"demonstrated": bool, "bss": float,
                                             "bss_lo": float, "max_reliability_gap": float,
                                             "n": int},
                                   "coins": {"BTC": {"mean_abs_move_bps": float}}}},  # optional
     "default_horizon_ms": int}

``skill`` is the out-of-sample verdict of the horizon (issue #9): ``demonstrated`` when the Brier
skill score against the base rate has a 95 % block-bootstrap lower bound ``bss_lo`` above 0 and
every bin with at least 50 effective observations is reliable within ±0.05. Only then does the
edge publish ``p_right``; otherwise it says ``NO_DEMONSTRATED_SKILL``. A table without
``format`` (the first format, before the verdict existed) is refused with a clear error.

``bins`` map the edge's ``raw_score`` to the observed fraction of directional calls that were
right at that horizon. The mapping used is a step function over the bins sorted by ``score_lo``,
made non-decreasing by pool-adjacent-violators (weighted by ``n``) in case the table is not
already isotonic; a raw score below the first bin uses the first, above the last uses the last.
DESIGN.md §6 defines how the edge uses it.
"""

from __future__ import annotations

import json
import os
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

ENV_VAR: Final = "HLSL_CALIBRATION"
DEFAULT_PATH: Final = Path(__file__).resolve().parent / "calibration" / "edge_calibration.json"
UNCALIBRATED: Final = "uncalibrated"
TABLE_FORMAT: Final = "hlsl-edge-calibration/2"


@dataclass(frozen=True, slots=True)
class HorizonCalibration:
    """The calibration of one horizon: isotonic bins and the typical size of a move."""

    horizon_ms: int
    lo: tuple[float, ...]
    p: tuple[float, ...]
    n: tuple[int, ...]
    mean_abs_move_bps: float
    coin_mean_abs_move_bps: dict[str, float] = field(default_factory=dict)
    skill: bool = False
    """Out-of-sample skill demonstrated (see the module doc): only then is ``p_right`` used."""
    skill_detail: dict[str, Any] = field(default_factory=dict)

    def p_right(self, raw: float) -> float:
        """Calibrated probability that a call of raw strength ``raw`` is right."""
        i = bisect_right(self.lo, raw) - 1
        return self.p[0 if i < 0 else i]

    def mean_abs_move(self, coin: str) -> float:
        """Mean |forward move| at this horizon, bps: the coin's own figure if the table has it."""
        return self.coin_mean_abs_move_bps.get(coin, self.mean_abs_move_bps)


@dataclass(frozen=True, slots=True)
class Calibration:
    """A loaded calibration table."""

    version: str
    fitted_on: dict[str, Any]
    horizons: dict[int, HorizonCalibration]
    default_horizon_ms: int
    path: str = ""
    _sorted: tuple[int, ...] = ()

    def horizon_for(self, at_least_ms: int) -> HorizonCalibration | None:
        """The shortest calibrated horizon of at least ``at_least_ms`` (None: none is that long)."""
        hs = self._sorted
        i = bisect_left(hs, at_least_ms)
        return self.horizons[hs[i]] if i < len(hs) else None


def _isotonic(p: list[float], w: list[float]) -> list[float]:
    """Pool-adjacent-violators: the non-decreasing sequence closest to ``p`` (weights ``w``)."""
    blocks: list[list[float]] = []  # [mean, weight, count]
    for x, wx in zip(p, w, strict=True):
        blocks.append([x, max(wx, 1e-12), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            b = blocks.pop()
            a = blocks[-1]
            tot = a[1] + b[1]
            a[0] = (a[0] * a[1] + b[0] * b[1]) / tot
            a[1] = tot
            a[2] += b[2]
    out: list[float] = []
    for mean, _, count in blocks:
        out.extend([mean] * int(count))
    return out


def _num(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        msg = f"calibration table: {what} must be a number, got {x!r}"
        raise ValueError(msg)
    return float(x)


def parse(doc: Any, path: str = "") -> Calibration:
    """Validate and load a calibration document (the JSON above). Raises ValueError."""
    if not isinstance(doc, dict):
        msg = "calibration table: the document must be an object"
        raise ValueError(msg)
    fmt = doc.get("format")
    if fmt != TABLE_FORMAT:
        msg = (
            f"calibration table {path or '(document)'}: format {fmt!r} is not {TABLE_FORMAT!r} "
            "(a table without a format predates the out-of-sample skill verdict); refit it with "
            "`python -m tools.evaluate PATH --fit-calibration FILE`"
        )
        raise ValueError(msg)
    version = doc.get("version")
    if not isinstance(version, str) or not version or version == UNCALIBRATED:
        msg = f"calibration table: version must be a non-empty id, got {version!r}"
        raise ValueError(msg)
    raw_h = doc.get("horizons")
    if not isinstance(raw_h, dict) or not raw_h:
        msg = "calibration table: horizons must be a non-empty object"
        raise ValueError(msg)
    horizons: dict[int, HorizonCalibration] = {}
    for key, spec in raw_h.items():
        try:
            h = int(key)
        except ValueError:
            msg = f"calibration table: horizon key {key!r} is not an integer (ms)"
            raise ValueError(msg) from None
        if h <= 0 or not isinstance(spec, dict):
            msg = f"calibration table: bad horizon {key!r}"
            raise ValueError(msg)
        bins = spec.get("bins")
        if not isinstance(bins, list) or not bins:
            msg = f"calibration table: horizon {key}: bins must be a non-empty list"
            raise ValueError(msg)
        rows: list[tuple[float, float, int]] = []
        for b in bins:
            if not isinstance(b, list | tuple) or len(b) < 4:
                msg = f"calibration table: horizon {key}: bad bin {b!r}"
                raise ValueError(msg)
            lo = _num(b[0], "score_lo")
            p = _num(b[2], "p_right")
            n = _num(b[3], "n")
            if not 0.0 <= p <= 1.0 or n < 0:
                msg = f"calibration table: horizon {key}: bad bin {b!r}"
                raise ValueError(msg)
            rows.append((lo, p, int(n)))
        rows.sort(key=lambda r: r[0])
        ps = _isotonic([r[1] for r in rows], [float(r[2]) for r in rows])
        move = _num(spec.get("mean_abs_move_bps"), f"horizon {key}: mean_abs_move_bps")
        if move < 0:
            msg = f"calibration table: horizon {key}: mean_abs_move_bps must be >= 0"
            raise ValueError(msg)
        coins: dict[str, float] = {}
        raw_coins = spec.get("coins") or {}
        if isinstance(raw_coins, dict):
            for coin, c in sorted(raw_coins.items()):
                if isinstance(c, dict) and c.get("mean_abs_move_bps") is not None:
                    coins[str(coin)] = _num(c["mean_abs_move_bps"], f"{coin} mean_abs_move_bps")
        skill = spec.get("skill")
        if not isinstance(skill, dict) or not isinstance(skill.get("demonstrated"), bool):
            msg = f"calibration table: horizon {key}: skill.demonstrated (bool) is required"
            raise ValueError(msg)
        horizons[h] = HorizonCalibration(
            horizon_ms=h,
            lo=tuple(r[0] for r in rows),
            p=tuple(ps),
            n=tuple(r[2] for r in rows),
            mean_abs_move_bps=move,
            coin_mean_abs_move_bps=coins,
            skill=skill["demonstrated"],
            skill_detail=dict(skill),
        )
    default = doc.get("default_horizon_ms")
    if isinstance(default, bool) or not isinstance(default, int) or default not in horizons:
        msg = f"calibration table: default_horizon_ms {default!r} is not one of the horizons"
        raise ValueError(msg)
    fitted = doc.get("fitted_on")
    return Calibration(
        version=version,
        fitted_on=fitted if isinstance(fitted, dict) else {},
        horizons=horizons,
        default_horizon_ms=default,
        path=path,
        _sorted=tuple(sorted(horizons)),
    )


def load(path: str | Path) -> Calibration:
    """Load a calibration table file. Raises OSError or ValueError."""
    p = Path(path)
    with p.open("rb") as fh:
        try:
            doc = json.load(fh)
        except json.JSONDecodeError as ex:
            msg = f"calibration table {p}: not JSON: {ex}"
            raise ValueError(msg) from None
    return parse(doc, str(p))


def load_committed() -> Calibration | None:
    """The committed table (`DEFAULT_PATH`), whatever ``HLSL_CALIBRATION`` says: what importing
    `operators.edge` loads, so a bad setting is the settings' one-line error at start-up, never a
    traceback at import. None when the file is not there."""
    return load(DEFAULT_PATH) if DEFAULT_PATH.is_file() else None


def load_default() -> Calibration | None:
    """The table at ``$HLSL_CALIBRATION`` (or the committed one); None when there is no file.

    A file that exists but is malformed raises: serving silently uncalibrated scores would hide
    the problem. ``HLSL_CALIBRATION=none`` (or empty) runs uncalibrated on purpose.
    """
    env = os.environ.get(ENV_VAR)
    if env is not None:
        if env.strip().lower() in ("", "none", UNCALIBRATED):
            return None
        return load(env)
    if DEFAULT_PATH.is_file():
        return load(DEFAULT_PATH)
    return None
