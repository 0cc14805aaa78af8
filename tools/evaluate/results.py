"""What the evaluation measures, as data: a dataset's envelopes as column arrays (`Rows`), each
coin's price series, and the result of one dataset (`DatasetResult`) and of the whole run
(`Evaluation`). The analysis fills them in; the calibration fit, the charts and the report read
them."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from tools.evaluate.datasets import DatasetSpec, FileScan
from tools.evaluate.forward import Forward
from tools.evaluate.isotonic import MIN_BIN_EFF
from tools.evaluate.stats import F64, I64, Bool, Interval, ReliabilityRow

LABELS: Final = ("TRENDING", "MEAN_REVERTING", "LIQUIDATION_RISK", "CHAOTIC", "UNKNOWN")
DIRECTION_SIGN: Final = {"LONG": 1, "SHORT": -1, "FLAT": 0}
PARTS: Final = ("in", "out")
PART_NAMES: Final = {"in": "in-sample", "out": "out-of-sample"}


@dataclass
class Rows:
    """Column arrays of every envelope of a dataset, plus forward quantities."""

    coin: list[str]
    ts: I64
    label: list[str]
    direction: I64
    score: F64
    raw: F64
    p_env: F64
    actionable: Bool
    warm: Bool
    price: F64
    fwd: dict[int, Forward]
    raw_field: str  # "edge.raw_score" or "edge.score"
    horizon: I64  # the envelope's own edge.horizon_ms (-1 when null)
    calibration_versions: Counter[str]

    @property
    def signed(self) -> F64:
        """``direction × edge.score``."""
        out: F64 = self.direction.astype(np.float64) * self.score
        return out

    @property
    def signed_raw(self) -> F64:
        """``direction × raw strength`` (``edge.raw_score``, else ``edge.score``)."""
        out: F64 = self.direction.astype(np.float64) * self.raw
        return out


def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def extract_rows(envelopes: Sequence[dict[str, Any]]) -> tuple[Rows, dict[str, F64]]:
    """Column arrays from envelopes (forward quantities empty) and each row's ``mid_px``."""
    n = len(envelopes)
    coin: list[str] = []
    label: list[str] = []
    ts = np.empty(n, dtype=np.int64)
    direction = np.zeros(n, dtype=np.int64)
    score = np.zeros(n)
    raw = np.zeros(n)
    p_env = np.full(n, np.nan)
    mid = np.full(n, np.nan)
    actionable = np.zeros(n, dtype=np.bool_)
    warm = np.zeros(n, dtype=np.bool_)
    horizon = np.full(n, -1, dtype=np.int64)
    versions: Counter[str] = Counter()
    has_raw = False
    for i, env in enumerate(envelopes):
        edge = env.get("edge") or {}
        coin.append(str(env["coin"]))
        label.append(str((env.get("regime") or {}).get("label", "UNKNOWN")))
        ts[i] = int(env["timestamp_ms"])
        direction[i] = DIRECTION_SIGN.get(str(env.get("direction", "FLAT")), 0)
        score[i] = _num(edge.get("score"))
        r = _num(edge.get("raw_score"))
        has_raw |= math.isfinite(r)
        raw[i] = r if math.isfinite(r) else score[i]
        p_env[i] = _num(edge.get("p_right"))
        actionable[i] = bool(edge.get("actionable", False))
        warm[i] = not bool((env.get("warmup") or {}).get("warming_up", True))
        mid[i] = _num((env.get("features") or {}).get("mid_px"))
        hz = edge.get("horizon_ms")
        horizon[i] = int(hz) if isinstance(hz, int) else -1
        versions[str(edge.get("calibration", "none"))] += 1
    rows = Rows(
        coin,
        ts,
        label,
        direction,
        score,
        raw,
        p_env,
        actionable,
        warm,
        np.full(n, np.nan),
        {},
        "edge.raw_score" if has_raw else "edge.score",
        horizon,
        versions,
    )
    return rows, {"mid_px": mid}


def price_observations(
    coin: str, row_ts: I64, row_mid: F64, scans: Sequence[FileScan]
) -> tuple[I64, F64, str]:
    """A coin's price series: the envelopes' ``mid_px`` when the coin has quotes, else candle
    closes, else last trade prices (from the captures)."""
    have_mid = np.isfinite(row_mid)
    if row_mid.size and have_mid.mean() >= 0.5:
        return row_ts[have_mid], row_mid[have_mid], "mid_px"
    for attr, name in (("candles", "candle close"), ("trades", "last trade")):
        ts_parts = [getattr(s, attr)[coin][0] for s in scans if coin in getattr(s, attr)]
        px_parts = [getattr(s, attr)[coin][1] for s in scans if coin in getattr(s, attr)]
        if ts_parts:
            return np.concatenate(ts_parts), np.concatenate(px_parts), name
    return np.empty(0, dtype=np.int64), np.empty(0), "none"


def direction_right(rows: Rows, h: int) -> Bool:
    """Whether each row's direction matched the sign of its forward return at ``h`` (a zero
    move, FLAT or an undefined return is not right)."""
    ret = np.nan_to_num(rows.fwd[h].ret)
    out: Bool = (rows.direction * np.sign(ret)) > 0
    return out


@dataclass(frozen=True)
class DecileRow:
    """Hit rate in one score decile."""

    lo: float
    hi: float
    n: dict[str, int]  # part -> n
    hit: dict[str, float]  # part -> hit rate


@dataclass(frozen=True)
class RegimeRow:
    """Forward behaviour after bars of one label."""

    label: str
    n: int
    share: float
    spells: int
    mean_dwell_ms: float
    abs_ret_bps: dict[int, float]  # horizon -> mean |R| in bps
    rv_bps: float  # mean forward RV at the main horizon, bps
    er: float  # mean forward efficiency at the main horizon
    rv_ratio: float  # rv_bps / all rows' mean forward RV
    rv_bps_out: float  # the same, out-of-sample part only


@dataclass
class CalibrationCheck:
    """How the fitted table does on one dataset, horizon and part."""

    n: int
    brier: float
    brier_ref: float  # constant in-sample base rate
    ece: float
    rows: list[ReliabilityRow]


@dataclass
class DatasetResult:
    """Everything measured on one dataset."""

    spec: DatasetSpec
    scans: list[FileScan]
    rows: Rows
    split_ms: int
    price_source: dict[str, str]
    frames: dict[str, int]
    inputs_used: dict[str, list[str]]
    replay_s: float
    errors: list[str]
    split_frac: float = 0.6
    ic: dict[tuple[int, str], Interval] = field(default_factory=dict)
    ic_directional: dict[tuple[int, str], Interval] = field(default_factory=dict)
    ic_raw: dict[tuple[int, str], Interval] = field(default_factory=dict)
    ic_coin: dict[str, Interval] = field(default_factory=dict)  # out-of-sample, main horizon
    ic_folds: list[tuple[int, int, Interval]] = field(default_factory=list)  # start, end, IC
    hit_coin: dict[str, Interval] = field(default_factory=dict)
    hit: dict[tuple[int, str], Interval] = field(default_factory=dict)
    hit_actionable: dict[tuple[int, str], Interval] = field(default_factory=dict)
    zero_move: dict[tuple[int, str], float] = field(default_factory=dict)
    shares: dict[str, dict[str, float]] = field(default_factory=dict)  # part -> dir -> share
    deciles: dict[int, list[DecileRow]] = field(default_factory=dict)
    regimes: list[RegimeRow] = field(default_factory=list)
    truth_regimes: list[RegimeRow] = field(default_factory=list)
    confusion: dict[str, Counter[str]] = field(default_factory=dict)  # truth -> flow label count
    calibration: dict[tuple[int, str], CalibrationCheck] = field(default_factory=dict)
    envelope_p: dict[tuple[int, str], CalibrationCheck] = field(default_factory=dict)

    def part_mask(self, h: int, part: str) -> Bool:
        """Warmed-up rows with a forward return at ``h`` in the part (in-sample is purged)."""
        r = self.rows
        ok = r.warm & np.isfinite(r.fwd[h].ret)
        if part == "in":
            out: Bool = ok & (r.ts + h <= self.split_ms)
        else:
            out = ok & (r.ts >= self.split_ms)
        return out

    def block_ids(self, h: int) -> I64:
        """Time-block ids for the bootstrap: blocks of max(h, window span)."""
        block = max(h, self.spec.window_span_ms)
        t0 = int(self.rows.ts.min()) if self.rows.ts.size else 0
        out: I64 = (self.rows.ts - t0) // block
        return out


@dataclass
class Evaluation:
    """The whole run."""

    datasets: list[DatasetResult]
    calibration: dict[str, Any]
    elapsed_s: float
    command: str
    calibration_path: Path | None = None
    min_bin_eff: float = MIN_BIN_EFF
    report_path: Path | None = None
    charts: list[Path] = field(default_factory=list)
