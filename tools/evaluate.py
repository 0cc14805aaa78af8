"""Evaluate signal envelopes against what happened next, and fit the edge calibration table.

    python -m tools.evaluate PATH... --out DIR [--fit-calibration FILE]
        [--horizons 1s,5s,1m] [--bar-ms MS] [--window-obs N] [--warmup-obs N]
        [--split 0.6] [--bootstrap 1000] [--min-bin-eff 50] [--truth TRUTH.json]
        [--coins BTC,ETH] [--no-plots]

PATH is a capture file or a folder of them. Files are grouped into datasets by what they hold:
tick data (trades/bbo/books/mids) replays with 1 s bars; candle-only files replay with one bar per
candle (``bar_ms`` = the candle interval). Each dataset goes through the production flow
(`flows.signal.build_pipeline`), and every envelope is then scored offline against the coin's own
price series (``features.mid_px``; else the candle close, else the last trade, read from the same
capture): nothing after the bar close is used inside the flow.

Definitions (DESIGN of the evaluation; the report repeats them):

- forward return ``R(t, h) = ln P(t+h) − ln P(t)`` on a regular grid of bars; ``P`` at a grid time
  is the latest observation at or before it, carried forward at most ``max_gap`` (12 bars, at
  least 60 s): a longer hole makes every window that crosses it undefined. Forward realised
  volatility ``sqrt(Σ r²)`` and forward efficiency ``|R| / Σ|r|`` use the bar returns ``r``
  inside ``(t, t+h]``.
- IC = Spearman rank correlation of ``direction × edge.score`` (LONG +1, SHORT −1, FLAT 0) with
  ``R(t, h)`` over warmed-up envelopes (all coins of a dataset pooled). 95 % CI: non-overlapping
  block bootstrap on time blocks of ``max(h, window span)`` (all coins of a block move together),
  1,000 replicates, percentile interval; replicate statistic = Pearson of the full-sample ranks.
- "direction right" = ``sign(R) == direction`` for LONG/SHORT; a zero move is not right; FLAT is
  excluded from hit rates and Brier and reported as a share.
- calibration: for each horizon, isotonic (pool-adjacent-violators) map from the raw edge strength
  (``edge.raw_score`` if present, else ``edge.score``) to P(direction right), fitted only on the
  in-sample part (the first ``split`` of each dataset's time span; an in-sample envelope also
  needs ``t + h`` before the split: purged); adjacent blocks are pooled until each holds at least
  ``min_bin_eff`` effective observations, a row weighing ``bar / max(h, window span)``.
- Brier = mean (p − o)²; the reference is the constant in-sample base rate (Brier skill score
  = 1 − BS/BS_ref); ECE = Σ_b (n_b/N)·|observed_b − p_b| over the calibration bins.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import math
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np
import numpy.typing as npt
import orjson

from connectors.events import Candle, Kind, Trades
from connectors.files import read_events
from flows.settings import Settings, code_version
from flows.signal import build_pipeline, run_pipeline, tune_gc
from operators.calibration import TABLE_FORMAT
from tools.evaluation import science
from tools.evaluation.series import CANDLE_SPLIT_MS, SPLIT_TEXT
from tools.evaluation.skill import add_skill
from tools.replay import sorted_envelopes

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

LABELS: Final = ("TRENDING", "MEAN_REVERTING", "LIQUIDATION_RISK", "CHAOTIC", "UNKNOWN")
LABEL_COLORS: Final = {
    "TRENDING": "#2b8cbe",
    "MEAN_REVERTING": "#41ab5d",
    "LIQUIDATION_RISK": "#e31a1c",
    "CHAOTIC": "#fd8d3c",
    "UNKNOWN": "#bdbdbd",
}
DIRECTION_SIGN: Final = {"LONG": 1, "SHORT": -1, "FLAT": 0}
CAPTURE_SUFFIXES: Final = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz", ".lz4", ".txt")
TICK_HORIZONS_MS: Final = (1_000, 5_000, 15_000, 30_000, 60_000, 120_000)
CANDLE_LADDER_MS: Final = (60_000, 300_000, 900_000, 3_600_000, 14_400_000, 86_400_000)
TICK_WINDOW_OBS: Final = 60
TICK_WARMUP_OBS: Final = 30
CANDLE_WINDOW_OBS: Final = 60  # #9: one window rule at every bar length, the server's default
CANDLE_WARMUP_OBS: Final = 30
SERVER_WINDOW_SPAN_MS: Final = 60_000  # the server's default: 60 observations of 1 s bars
FOLDS: Final = 5  # time folds of the walk-forward IC view
MIN_BIN_EFF: Final = 50.0  # effective observations behind each calibration bin
PARTS: Final = ("in", "out")
PART_NAMES: Final = {"in": "in-sample", "out": "out-of-sample"}


# ---------------------------------------------------------------------------------------------
# durations


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


# ---------------------------------------------------------------------------------------------
# metrics (pure numpy)


def rankdata(values: npt.ArrayLike) -> F64:
    """Ranks 1..n, ties sharing their average rank (as ``scipy.stats.rankdata``)."""
    a = np.asarray(values, dtype=np.float64)
    n = a.size
    if n == 0:
        return np.empty(0, dtype=np.float64)
    order = np.argsort(a, kind="mergesort")
    sa = a[order]
    starts = np.flatnonzero(np.concatenate(([True], sa[1:] != sa[:-1], [True])))
    avg = (starts[:-1] + starts[1:] - 1) / 2.0 + 1.0
    out = np.empty(n, dtype=np.float64)
    out[order] = np.repeat(avg, np.diff(starts))
    return out


def pearson(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Pearson correlation; NaN for fewer than 3 points or a constant input."""
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if xa.size < 3:
        return math.nan
    dx = xa - xa.mean()
    dy = ya - ya.mean()
    den = math.sqrt(float(np.dot(dx, dx)) * float(np.dot(dy, dy)))
    return float(np.dot(dx, dy)) / den if den > 0 else math.nan


def spearman(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Spearman rank correlation (Pearson of average ranks)."""
    return pearson(rankdata(x), rankdata(y))


def _block_index(blocks: npt.ArrayLike) -> tuple[I64, int]:
    _, inv = np.unique(np.asarray(blocks), return_inverse=True)
    inv64 = np.asarray(inv, dtype=np.int64).ravel()
    return inv64, int(inv64.max()) + 1 if inv64.size else 0


def _block_counts(n_blocks: int, n_boot: int, seed: int) -> F64:
    """Bootstrap multiplicities: each replicate draws ``n_blocks`` blocks with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_blocks, np.full(n_blocks, 1.0 / n_blocks), size=n_boot).astype(
        np.float64
    )


def block_bootstrap_corr(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    blocks: npt.ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, int]:
    """Percentile CI of Pearson(x, y) by a block bootstrap; returns (lo, hi, number of blocks).

    Whole blocks are resampled with replacement (observations sharing a block id stay together),
    so the serial dependence that overlapping forward windows create stays inside a replicate.
    Each replicate is computed from per-block sums (exact for the resampled set).
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    inv, nb = _block_index(blocks)
    if xa.size < 3 or nb < 2:
        return math.nan, math.nan, nb
    cols = (np.ones_like(xa), xa, ya, xa * xa, ya * ya, xa * ya)
    stats = np.stack([np.bincount(inv, weights=c, minlength=nb) for c in cols], axis=1)
    sums = _block_counts(nb, n_boot, seed) @ stats
    n, sx, sy, sxx, syy, sxy = (sums[:, i] for i in range(6))
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = sxy / n - (sx / n) * (sy / n)
        vx = sxx / n - (sx / n) ** 2
        vy = syy / n - (sy / n) ** 2
        r = cov / np.sqrt(vx * vy)
    r = r[np.isfinite(r) & (vx > 0) & (vy > 0)]
    if r.size == 0:
        return math.nan, math.nan, nb
    lo, hi = np.quantile(r, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi), nb


def block_bootstrap_mean(
    values: npt.ArrayLike,
    blocks: npt.ArrayLike,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, int]:
    """Percentile CI of a mean (e.g. a hit rate) by the same block bootstrap."""
    va = np.asarray(values, dtype=np.float64)
    inv, nb = _block_index(blocks)
    if va.size == 0 or nb < 2:
        return math.nan, math.nan, nb
    stats = np.stack(
        [np.bincount(inv, minlength=nb).astype(np.float64), np.bincount(inv, va, nb)], axis=1
    )
    sums = _block_counts(nb, n_boot, seed) @ stats
    with np.errstate(divide="ignore", invalid="ignore"):
        m = sums[:, 1] / sums[:, 0]
    m = m[np.isfinite(m)]
    lo, hi = np.quantile(m, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi), nb


def pav(y: npt.ArrayLike, w: npt.ArrayLike | None = None) -> F64:
    """Isotonic (non-decreasing) least-squares fit of ``y`` in its given order: pool adjacent
    violators. ``w`` are weights (default 1)."""
    ya = np.asarray(y, dtype=np.float64)
    wa = np.ones_like(ya) if w is None else np.asarray(w, dtype=np.float64)
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for yi, wi in zip(ya.tolist(), wa.tolist(), strict=True):
        means.append(yi)
        weights.append(wi)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            wsum = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / wsum
            weights[-2] = wsum
            sizes[-2] += sizes[-1]
            del means[-1], weights[-1], sizes[-1]
    return np.repeat(np.asarray(means, dtype=np.float64), sizes)


def isotonic_bins(
    scores: npt.ArrayLike,
    outcomes: npt.ArrayLike,
    *,
    weights: npt.ArrayLike | None = None,
    min_n: float = 100,
) -> list[list[float]]:
    """Fit P(outcome | score) as a monotone step function; ``[[lo, hi, p, n], ...]``.

    Pool-adjacent-violators on the score-sorted outcomes (tied scores share one value, each
    observation weighted by ``weights``, default 1), then any block whose total weight is below
    ``min_n`` is pooled with a neighbour (pooling adjacent blocks of an isotonic fit keeps it
    monotone). With weights = effective observations per row, ``min_n`` is a floor on the
    information behind each bin rather than on the row count. ``p`` is the weighted share;
    ``n`` the number of rows. Bins are contiguous and half-open ``[lo, hi)`` (the last one
    closed); they cover ``[min(0, min score), max(1, max score)]``.
    """
    x = np.asarray(scores, dtype=np.float64)
    o = np.asarray(outcomes, dtype=np.float64)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(o) & np.isfinite(w) & (w > 0)
    x, o, w = x[keep], o[keep], w[keep]
    if x.size == 0:
        return []
    ux, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    wsum = np.bincount(inv, weights=w, minlength=ux.size)
    osum = np.bincount(inv, weights=w * o, minlength=ux.size)
    fitted = pav(osum / wsum, wsum)
    # blocks of equal fitted value: [first score, weighted successes, weight, rows]
    starts = np.flatnonzero(np.concatenate(([True], fitted[1:] != fitted[:-1])))
    ends = np.concatenate((starts[1:], [ux.size]))
    blocks: list[list[float]] = [
        [
            float(ux[a]),
            float(osum[a:b].sum()),
            float(wsum[a:b].sum()),
            float(counts[a:b].sum()),
        ]
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True)
    ]
    while len(blocks) > 1:
        small = [i for i, blk in enumerate(blocks) if blk[2] < min_n]
        if not small:
            break
        i = min(small, key=lambda j: blocks[j][2])
        if i == 0:
            j = 1
        elif i == len(blocks) - 1:
            j = i - 1
        else:  # pool with the neighbour whose rate is closer (the lighter one on a tie)
            p = blocks[i][1] / blocks[i][2]
            left = abs(p - blocks[i - 1][1] / blocks[i - 1][2])
            right = abs(blocks[i + 1][1] / blocks[i + 1][2] - p)
            j = i - 1 if (left, blocks[i - 1][2]) <= (right, blocks[i + 1][2]) else i + 1
        a, b = min(i, j), max(i, j)
        blocks[a] = [blocks[a][0], *(blocks[a][k] + blocks[b][k] for k in (1, 2, 3))]
        del blocks[b]
    lo_all = min(0.0, float(ux[0]))
    hi_all = max(1.0, float(ux[-1]))
    edges = [lo_all] + [blk[0] for blk in blocks[1:]] + [hi_all]
    return [
        [round(edges[k], 6), round(edges[k + 1], 6), round(blk[1] / blk[2], 4), int(blk[3])]
        for k, blk in enumerate(blocks)
    ]


def apply_bins(bins: Sequence[Sequence[float]], scores: npt.ArrayLike) -> F64:
    """P(direction right) for each score from a calibration table (clamped to its range)."""
    x = np.asarray(scores, dtype=np.float64)
    if not bins:
        return np.full(x.shape, np.nan)
    lows = np.asarray([b[0] for b in bins], dtype=np.float64)
    ps = np.asarray([b[2] for b in bins], dtype=np.float64)
    idx = np.clip(np.searchsorted(lows, x, side="right") - 1, 0, len(bins) - 1)
    out: F64 = ps[idx]
    return out


def bin_index(bins: Sequence[Sequence[float]], scores: npt.ArrayLike) -> I64:
    """Which calibration bin each score falls in."""
    lows = np.asarray([b[0] for b in bins], dtype=np.float64)
    idx = np.searchsorted(lows, np.asarray(scores, dtype=np.float64), side="right") - 1
    return np.asarray(np.clip(idx, 0, len(bins) - 1), dtype=np.int64)


def brier(p: npt.ArrayLike, outcome: npt.ArrayLike) -> float:
    """Brier score ``mean((p - o)^2)``; NaN when empty."""
    pa = np.asarray(p, dtype=np.float64)
    oa = np.asarray(outcome, dtype=np.float64)
    return float(np.mean((pa - oa) ** 2)) if pa.size else math.nan


@dataclass(frozen=True)
class ReliabilityRow:
    """One bin of a reliability table."""

    lo: float
    hi: float
    p_mean: float
    observed: float
    n: int


def reliability_table(
    p: npt.ArrayLike, outcome: npt.ArrayLike, edges: Sequence[float] | None = None
) -> tuple[list[ReliabilityRow], float]:
    """Reliability by bins of predicted probability (default 10 equal-width); rows and ECE."""
    pa = np.asarray(p, dtype=np.float64)
    oa = np.asarray(outcome, dtype=np.float64)
    e = np.asarray(edges if edges is not None else np.linspace(0.0, 1.0, 11), dtype=np.float64)
    idx = np.clip(np.searchsorted(e, pa, side="right") - 1, 0, e.size - 2)
    rows: list[ReliabilityRow] = []
    ece = 0.0
    for k in range(e.size - 1):
        m = idx == k
        n = int(m.sum())
        if n == 0:
            continue
        pm, ob = float(pa[m].mean()), float(oa[m].mean())
        rows.append(ReliabilityRow(float(e[k]), float(e[k + 1]), pm, ob, n))
        ece += n * abs(ob - pm)
    return rows, (ece / pa.size if pa.size else math.nan)


def quantile_edges(values: npt.ArrayLike, n: int = 10) -> F64:
    """Edges of ``n`` quantile bins (duplicates removed, so ties may give fewer bins)."""
    va = np.asarray(values, dtype=np.float64)
    va = va[np.isfinite(va)]
    if va.size == 0:
        return np.asarray([0.0, 1.0])
    edges: F64 = np.unique(np.quantile(va, np.linspace(0.0, 1.0, n + 1)))
    if edges.size < 2:
        edges = np.asarray([edges[0], edges[0]])
    return edges


def bin_of(values: npt.ArrayLike, edges: F64) -> I64:
    """Bin index of each value for the edges of `quantile_edges` (last bin closed)."""
    va = np.asarray(values, dtype=np.float64)
    idx = np.searchsorted(edges, va, side="right") - 1
    return np.asarray(np.clip(idx, 0, max(edges.size - 2, 0)), dtype=np.int64)


@dataclass(frozen=True)
class Forward:
    """Forward quantities of each row at one horizon (NaN where undefined)."""

    ret: F64  # log return
    rv: F64  # sqrt(sum of squared bar log returns)
    er: F64  # |ret| / sum |bar returns|


def forward_metrics(
    row_ts: npt.ArrayLike,
    obs_ts: npt.ArrayLike,
    obs_px: npt.ArrayLike,
    *,
    bar_ms: int,
    horizons_ms: Sequence[int],
    max_gap_ms: int,
) -> tuple[F64, dict[int, Forward]]:
    """Price at each row and its forward return, realised vol and efficiency at each horizon.

    ``row_ts`` are bar closes (multiples of ``bar_ms`` apart); ``obs_ts``/``obs_px`` the price
    observations, an observation being valid at grid time ``g`` when ``obs_ts <= g``. On the
    grid ``t0 + k·bar_ms`` the price is the latest observation, carried forward while it is at
    most ``max_gap_ms`` old and never past the last observation; a forward window containing an
    undefined grid price is NaN.
    """
    ts = np.asarray(row_ts, dtype=np.int64)
    ot = np.asarray(obs_ts, dtype=np.int64)
    op_ = np.asarray(obs_px, dtype=np.float64)
    order = np.argsort(ot, kind="mergesort")
    ot, op_ = ot[order], op_[order]
    good = np.isfinite(op_) & (op_ > 0)
    ot, op_ = ot[good], op_[good]
    if ts.size == 0:
        return np.empty(0), {h: Forward(np.empty(0), np.empty(0), np.empty(0)) for h in horizons_ms}
    t0 = int(ts.min())
    steps = [h // bar_ms for h in horizons_ms]
    if any(h % bar_ms or k < 1 for h, k in zip(horizons_ms, steps, strict=True)):
        msg = f"horizons {list(horizons_ms)} must be positive multiples of bar_ms={bar_ms}"
        raise ValueError(msg)
    n_grid = (int(ts.max()) - t0) // bar_ms + max(steps) + 1
    grid = t0 + np.arange(n_grid, dtype=np.int64) * bar_ms
    idx = np.searchsorted(ot, grid, side="right") - 1
    # carried forward only inside the observed span: after the last observation nothing says
    # the price stayed put
    ok = (idx >= 0) & (grid <= (ot[-1] if ot.size else t0 - 1))
    ok[ok] &= (grid[ok] - ot[idx[ok]]) <= max_gap_ms
    lp = np.full(n_grid, np.nan)
    lp[ok] = np.log(op_[idx[ok]])
    step = np.diff(lp)
    step_ok = np.isfinite(step)
    s0 = np.where(step_ok, step, 0.0)
    cs2 = np.concatenate(([0.0], np.cumsum(s0 * s0)))
    csa = np.concatenate(([0.0], np.cumsum(np.abs(s0))))
    bad = np.concatenate(([0], np.cumsum(~step_ok)))
    j = (ts - t0) // bar_ms
    price = np.exp(lp[j])
    out: dict[int, Forward] = {}
    for h, k in zip(horizons_ms, steps, strict=True):
        end = j + k
        valid = (end < n_grid) & np.isfinite(lp[j])
        end_c = np.minimum(end, n_grid - 1)
        valid &= bad[end_c] - bad[j] == 0
        ret = np.where(valid, lp[end_c] - lp[j], np.nan)
        rv = np.where(valid, np.sqrt(np.maximum(cs2[end_c] - cs2[j], 0.0)), np.nan)
        path = csa[end_c] - csa[j]
        with np.errstate(divide="ignore", invalid="ignore"):
            er = np.where(valid & (path > 0), np.abs(ret) / path, np.nan)
        out[h] = Forward(ret, rv, er)
    return price, out


@dataclass(frozen=True)
class Spell:
    """A run of one regime label on one coin."""

    coin: str
    label: str
    start_ms: int
    end_ms: int  # next spell's start, or the last bar's close + one bar


def spells(
    coins: Sequence[str], ts: npt.ArrayLike, labels: Sequence[str], bar_ms: int
) -> list[Spell]:
    """Consecutive runs of the same label per coin (rows need not be sorted)."""
    ta = np.asarray(ts, dtype=np.int64)
    out: list[Spell] = []
    for coin in sorted(set(coins)):
        idx = [i for i, c in enumerate(coins) if c == coin]
        idx.sort(key=lambda i: int(ta[i]))
        start = 0
        for k in range(1, len(idx) + 1):
            if k == len(idx) or labels[idx[k]] != labels[idx[start]]:
                end = int(ta[idx[k]]) if k < len(idx) else int(ta[idx[k - 1]]) + bar_ms
                out.append(Spell(coin, labels[idx[start]], int(ta[idx[start]]), end))
                start = k
    return out


# ---------------------------------------------------------------------------------------------
# inputs


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


# ---------------------------------------------------------------------------------------------
# progress


class Progress:
    """A one-line progress display on stderr (only when it is a terminal)."""

    def __init__(self, enabled: bool, stream: TextIO = sys.stderr) -> None:
        self.enabled = enabled
        self.stream = stream
        self._width = 0

    def update(self, text: str) -> None:
        """Replace the line with ``text``."""
        if self.enabled:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
            self._width = len(text)

    def done(self, text: str) -> None:
        """Replace the line with ``text`` and end it."""
        if self.enabled:
            self.update(text)
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


# ---------------------------------------------------------------------------------------------
# replay and per-dataset analysis


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


@dataclass(frozen=True)
class Interval:
    """A point estimate with a 95 % CI and its sample size."""

    value: float
    lo: float
    hi: float
    n: int
    blocks: int


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


def replay_dataset(
    spec: DatasetSpec, coins: Sequence[str], progress: Progress, prefix: str
) -> tuple[list[dict[str, Any]], dict[str, int], list[str], float]:
    """Run the production flow over a dataset's files; envelopes, frames by channel, errors, s."""
    overrides: dict[str, Any] = {
        "replay": ",".join(str(f) for f in spec.files),
        "bar_ms": spec.bar_ms,
        "window_obs": spec.window_obs,
        "warmup_obs": spec.warmup_obs,
        "api": False,
        "history_limit": 1,
    }
    if coins:
        overrides["coins"] = ",".join(coins)
    settings = Settings(**overrides)
    pipeline = build_pipeline(settings, collect=True)
    t0 = time.perf_counter()
    if progress.enabled:
        failure: list[BaseException] = []

        def target() -> None:
            try:
                run_pipeline(pipeline)
            except BaseException as ex:  # handed to the main thread
                failure.append(ex)

        worker = threading.Thread(target=target, name="evaluate-replay", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.5)
                now = pipeline.store.source_clock()
                stamp = iso_utc(now)[:16].replace("T", " ") if now else "…"
                progress.update(
                    f"{prefix} replaying: at {stamp}, {len(pipeline.collected or [])} signals, "
                    f"{time.perf_counter() - t0:.0f} s"
                )
        except KeyboardInterrupt:
            pipeline.stop.set()
            worker.join()
            raise
        if failure:
            raise failure[0]
    else:
        run_pipeline(pipeline)
    elapsed = time.perf_counter() - t0
    info = pipeline.store.source_info()
    return (
        sorted_envelopes(pipeline),
        dict(info.get("frames_by_channel", {})),
        list(info.get("errors", [])),
        elapsed,
    )


def _interval(value: float, ci: tuple[float, float, int], n: int) -> Interval:
    return Interval(value, ci[0], ci[1], n, ci[2])


def regime_rows(
    res: DatasetResult, labels: Sequence[str], *, order: Sequence[str] = LABELS
) -> list[RegimeRow]:
    """Per label: share of warmed-up bars, spells and mean dwell, and the forward behaviour."""
    r = res.rows
    spec = res.spec
    hm = spec.main_horizon_ms
    warm_idx = np.flatnonzero(r.warm).tolist()
    sp = spells(
        [r.coin[i] for i in warm_idx], r.ts[warm_idx], [labels[i] for i in warm_idx], spec.bar_ms
    )
    lab = np.asarray(labels, dtype=object)
    all_rv = r.fwd[hm].rv[r.warm & np.isfinite(r.fwd[hm].rv)]
    base_rv = float(all_rv.mean()) if all_rv.size else math.nan
    out: list[RegimeRow] = []
    n_warm = int(r.warm.sum())
    for label in order:
        m = r.warm & (lab == label)
        n = int(m.sum())
        if n == 0:
            continue
        mine = [s for s in sp if s.label == label]
        abs_ret: dict[int, float] = {}
        for h in spec.horizons_ms:
            v = np.abs(r.fwd[h].ret[m & np.isfinite(r.fwd[h].ret)])
            abs_ret[h] = float(v.mean()) * 1e4 if v.size else math.nan
        rv = r.fwd[hm].rv[m & np.isfinite(r.fwd[hm].rv)]
        er = r.fwd[hm].er[m & np.isfinite(r.fwd[hm].er)]
        rv_out = r.fwd[hm].rv[m & res.part_mask(hm, "out")]
        rv_bps = float(rv.mean()) * 1e4 if rv.size else math.nan
        out.append(
            RegimeRow(
                label,
                n,
                n / n_warm if n_warm else math.nan,
                len(mine),
                float(np.mean([s.end_ms - s.start_ms for s in mine])) if mine else math.nan,
                abs_ret,
                rv_bps,
                float(er.mean()) if er.size else math.nan,
                rv_bps / (base_rv * 1e4) if base_rv > 0 else math.nan,
                float(rv_out.mean()) * 1e4 if rv_out.size else math.nan,
            )
        )
    return out


def analyse(
    spec: DatasetSpec,
    scans: list[FileScan],
    envelopes: list[dict[str, Any]],
    *,
    split: float,
    n_boot: int,
    seed: int,
    frames: dict[str, int] | None = None,
    errors: list[str] | None = None,
    replay_s: float = 0.0,
    truth: dict[str, list[tuple[int, int, str]]] | None = None,
) -> DatasetResult:
    """Forward quantities and every calibration-free metric of one dataset."""
    rows, extra = extract_rows(envelopes)
    mid = extra["mid_px"]
    price_source: dict[str, str] = {}
    coins = np.asarray(rows.coin, dtype=object)
    fwd: dict[int, Forward] = {
        h: Forward(*(np.full(rows.ts.size, np.nan) for _ in range(3))) for h in spec.horizons_ms
    }
    for coin in sorted(set(rows.coin)):
        m = coins == coin
        ot, opx, source = price_observations(coin, rows.ts[m], mid[m], scans)
        price_source[coin] = source
        price, per_h = forward_metrics(
            rows.ts[m],
            ot,
            opx,
            bar_ms=spec.bar_ms,
            horizons_ms=spec.horizons_ms,
            max_gap_ms=spec.max_gap_ms,
        )
        rows.price[m] = price
        for h, f in per_h.items():
            fwd[h].ret[m] = f.ret
            fwd[h].rv[m] = f.rv
            fwd[h].er[m] = f.er
    rows.fwd = fwd
    inputs: dict[str, set[str]] = {}
    for env in envelopes:
        inputs.setdefault(str(env["coin"]), set()).update(env["regime"].get("inputs_used", []))
    warm_ts = rows.ts[rows.warm]
    if spec.kind != "tick":
        split_ms = CANDLE_SPLIT_MS  # #9: one split date for every candle dataset
    elif warm_ts.size:
        lo, hi = int(warm_ts.min()), int(warm_ts.max())
        split_ms = lo + round((hi - lo) * split / spec.bar_ms) * spec.bar_ms
    else:
        split_ms = 0
    res = DatasetResult(
        spec,
        scans,
        rows,
        split_ms,
        price_source,
        frames or {},
        {c: sorted(v) for c, v in sorted(inputs.items())},
        replay_s,
        errors or [],
        split,
    )
    signed = rows.signed
    signed_raw = rows.signed_raw
    directional = rows.direction != 0
    for part in PARTS:
        m = res.part_mask(spec.horizons_ms[0], part)
        n = int(m.sum())
        res.shares[part] = {
            d: (float((rows.direction[m] == s).sum()) / n if n else math.nan)
            for d, s in DIRECTION_SIGN.items()
        }
    dir_scores = rows.raw[rows.warm & directional]
    edges = quantile_edges(dir_scores, 10)
    for h in spec.horizons_ms:
        blocks = res.block_ids(h)
        ret = rows.fwd[h].ret
        right = (rows.direction * np.sign(np.nan_to_num(ret))) > 0
        dec_n: dict[str, list[int]] = {}
        dec_hit: dict[str, list[float]] = {}
        for part in PARTS:
            m = res.part_mask(h, part)
            x, y = signed[m], ret[m]
            ci = block_bootstrap_corr(rankdata(x), rankdata(y), blocks[m], n_boot=n_boot, seed=seed)
            res.ic[(h, part)] = _interval(spearman(x, y), ci, int(m.sum()))
            xr = signed_raw[m]
            ci = block_bootstrap_corr(
                rankdata(xr), rankdata(y), blocks[m], n_boot=n_boot, seed=seed
            )
            res.ic_raw[(h, part)] = _interval(spearman(xr, y), ci, int(m.sum()))
            md = m & directional
            ci = block_bootstrap_corr(
                rankdata(signed[md]), rankdata(ret[md]), blocks[md], n_boot=n_boot, seed=seed
            )
            res.ic_directional[(h, part)] = _interval(
                spearman(signed[md], ret[md]), ci, int(md.sum())
            )
            hits = right[md].astype(np.float64)
            ci = block_bootstrap_mean(hits, blocks[md], n_boot=n_boot, seed=seed)
            res.hit[(h, part)] = _interval(
                float(hits.mean()) if hits.size else math.nan, ci, hits.size
            )
            ma = md & rows.actionable
            hits_a = right[ma].astype(np.float64)
            ci = block_bootstrap_mean(hits_a, blocks[ma], n_boot=n_boot, seed=seed)
            res.hit_actionable[(h, part)] = _interval(
                float(hits_a.mean()) if hits_a.size else math.nan, ci, hits_a.size
            )
            res.zero_move[(h, part)] = float((ret[md] == 0).mean()) if md.any() else math.nan
            b = bin_of(rows.raw, edges)
            dec_n[part] = [int((md & (b == k)).sum()) for k in range(edges.size - 1)]
            dec_hit[part] = [
                float(right[md & (b == k)].mean()) if dec_n[part][k] else math.nan
                for k in range(edges.size - 1)
            ]
        res.deciles[h] = [
            DecileRow(
                float(edges[k]),
                float(edges[k + 1]),
                {p: dec_n[p][k] for p in PARTS},
                {p: dec_hit[p][k] for p in PARTS},
            )
            for k in range(edges.size - 1)
        ]
    hm = spec.main_horizon_ms
    coin_arr = np.asarray(rows.coin, dtype=object)
    blocks = res.block_ids(hm)
    ret = rows.fwd[hm].ret
    right = (rows.direction * np.sign(np.nan_to_num(ret))) > 0
    for coin in sorted(set(rows.coin)):
        m = res.part_mask(hm, "out") & (coin_arr == coin)
        ci = block_bootstrap_corr(
            rankdata(signed[m]), rankdata(ret[m]), blocks[m], n_boot=n_boot, seed=seed
        )
        res.ic_coin[coin] = _interval(spearman(signed[m], ret[m]), ci, int(m.sum()))
        md = m & directional
        hits = right[md].astype(np.float64)
        ci = block_bootstrap_mean(hits, blocks[md], n_boot=n_boot, seed=seed)
        res.hit_coin[coin] = _interval(float(hits.mean()) if hits.size else math.nan, ci, hits.size)
    # walk-forward view: the IC in consecutive time folds (no fitting involved)
    warm_ts = rows.ts[rows.warm]
    if warm_ts.size:
        edges_t = np.linspace(float(warm_ts.min()), float(warm_ts.max()) + 1, FOLDS + 1)
        for a, b in itertools.pairwise(edges_t.tolist()):
            m = rows.warm & np.isfinite(ret) & (rows.ts >= a) & (rows.ts < b)
            ci = block_bootstrap_corr(
                rankdata(signed[m]), rankdata(ret[m]), blocks[m], n_boot=n_boot, seed=seed
            )
            res.ic_folds.append(
                (int(a), int(b), _interval(spearman(signed[m], ret[m]), ci, int(m.sum())))
            )
    res.regimes = regime_rows(res, rows.label)
    if truth is not None:
        tl = truth_labels(truth, rows.coin, rows.ts)
        res.truth_regimes = regime_rows(res, tl)
        for t_label, f_label, w in zip(tl, rows.label, rows.warm.tolist(), strict=True):
            if w:
                res.confusion.setdefault(t_label, Counter())[f_label] += 1
    return res


# ---------------------------------------------------------------------------------------------
# calibration


def _right(rows: Rows, h: int) -> Bool:
    ret = np.nan_to_num(rows.fwd[h].ret)
    out: Bool = (rows.direction * np.sign(ret)) > 0
    return out


def fit_calibration(
    results: Sequence[DatasetResult], *, min_bin_eff: float = MIN_BIN_EFF
) -> dict[str, Any]:
    """Fit the calibration table on the in-sample part of every dataset (shape: module doc).

    Each row weighs ``bar_ms / max(h, window span)`` effective observations (the bootstrap's
    block length: rows closer than that share most of their signal and outcome), so a bin
    needs at least ``min_bin_eff`` effective observations.
    """
    horizons = sorted({h for r in results for h in r.spec.horizons_ms})
    table: dict[str, Any] = {}
    files: set[str] = set()
    t_lo: int | None = None
    t_hi: int | None = None
    n_used = 0
    for res in results:
        files.update(f.name for f in res.spec.files)
        used = np.zeros(res.rows.ts.size, dtype=np.bool_)
        for h in res.spec.horizons_ms:
            used |= res.part_mask(h, "in") & (res.rows.direction != 0)
        n_used += int(used.sum())
        if used.any():
            lo, hi = int(res.rows.ts[used].min()), int(res.rows.ts[used].max())
            t_lo = lo if t_lo is None else min(t_lo, lo)
            t_hi = hi if t_hi is None else max(t_hi, hi)
    for h in horizons:
        xs: list[F64] = []
        os_: list[F64] = []
        ws: list[F64] = []
        moves: list[F64] = []
        coin_moves: dict[str, list[F64]] = {}
        for res in results:
            if h not in res.spec.horizons_ms:
                continue
            m = res.part_mask(h, "in")
            md = m & (res.rows.direction != 0)
            xs.append(res.rows.raw[md])
            os_.append(_right(res.rows, h)[md].astype(np.float64))
            ws.append(np.full(int(md.sum()), res.spec.bar_ms / max(h, res.spec.window_span_ms)))
            moves.append(np.abs(res.rows.fwd[h].ret[m]) * 1e4)
            coins = np.asarray(res.rows.coin, dtype=object)
            for coin in sorted(set(res.rows.coin)):
                mc = m & (coins == coin)
                coin_moves.setdefault(coin, []).append(np.abs(res.rows.fwd[h].ret[mc]) * 1e4)
        x = np.concatenate(xs) if xs else np.empty(0)
        bins = isotonic_bins(
            x,
            np.concatenate(os_) if os_ else np.empty(0),
            weights=np.concatenate(ws) if ws else np.empty(0),
            min_n=min_bin_eff,
        )
        if not bins:
            continue
        mv = np.concatenate(moves)
        per_coin = {c: np.concatenate(v) for c, v in sorted(coin_moves.items())}
        table[str(h)] = {
            "bins": bins,
            "mean_abs_move_bps": round(float(mv.mean()), 4) if mv.size else 0.0,
            "coins": {
                c: {"mean_abs_move_bps": round(float(v.mean()), 4)}
                for c, v in per_coin.items()
                if v.size
            },
        }
    fitted = [int(h) for h in table]
    default = (
        min(fitted, key=lambda h: (abs(math.log(h / SERVER_WINDOW_SPAN_MS)), h)) if fitted else 0
    )
    descriptor = {
        "files": sorted(
            (f.name, f.stat().st_size) for r in results for f in r.spec.files if f.exists()
        ),
        "specs": [
            [r.spec.name, r.spec.bar_ms, r.spec.window_obs, r.spec.warmup_obs, r.split_ms]
            for r in results
        ],
        "horizons": table,
    }
    digest = hashlib.sha256(orjson.dumps(descriptor, option=orjson.OPT_SORT_KEYS)).hexdigest()
    span = [iso_utc(t_lo), iso_utc(t_hi)] if t_lo is not None and t_hi is not None else ["", ""]
    days = "-".join(s[:10].replace("-", "") for s in span) if t_lo is not None else "empty"
    return {
        "version": f"{digest[:10]}-{days}",
        "fitted_on": {"files": sorted(files), "span_utc": span, "n": n_used},
        "horizons": table,
        "default_horizon_ms": default,
    }


def dump_calibration(doc: dict[str, Any]) -> str:
    """The calibration document as indented JSON with one bin a line (diff-friendly)."""
    text = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
    # collapse each innermost [lo, hi, p, n] list onto one line
    text = re.sub(
        r"\[\s*([-0-9.eE+]+),\s*([-0-9.eE+]+),\s*([-0-9.eE+]+),\s*([0-9]+)\s*\]",
        r"[\1, \2, \3, \4]",
        text,
    )
    text = re.sub(r"\{\s*(\"mean_abs_move_bps\": [-0-9.eE+]+)\s*\}", r"{\1}", text)
    return text + "\n"


def validate_calibration(doc: Any) -> list[str]:
    """Problems with a calibration document's shape (empty list: valid)."""
    errs: list[str] = []
    if not isinstance(doc, dict):
        return ["not an object"]
    if set(doc) != {"format", "version", "fitted_on", "horizons", "default_horizon_ms"}:
        errs.append(f"top-level keys {sorted(doc)}")
    if doc.get("format") != TABLE_FORMAT:  # #9: format 2 carries the skill verdicts
        errs.append(f"format must be {TABLE_FORMAT!r}")
    if not isinstance(doc.get("version"), str) or not doc.get("version"):
        errs.append("version must be a non-empty string")
    fo = doc.get("fitted_on")
    if not isinstance(fo, dict) or set(fo) != {"files", "span_utc", "n"}:
        errs.append("fitted_on must have exactly files, span_utc, n")
    else:
        if not isinstance(fo["files"], list) or not all(isinstance(f, str) for f in fo["files"]):
            errs.append("fitted_on.files must be a list of strings")
        span = fo["span_utc"]
        if not (
            isinstance(span, list) and len(span) == 2 and all(isinstance(s, str) for s in span)
        ):
            errs.append("fitted_on.span_utc must be [start_iso, end_iso]")
        else:
            for s in span:
                try:
                    datetime.fromisoformat(s)
                except ValueError:
                    errs.append(f"fitted_on.span_utc: not ISO-8601: {s!r}")
        if not isinstance(fo["n"], int) or isinstance(fo["n"], bool) or fo["n"] < 0:
            errs.append("fitted_on.n must be a non-negative int")
    hz = doc.get("horizons")
    if not isinstance(hz, dict) or not hz:
        errs.append("horizons must be a non-empty object")
        hz = {}
    for key, val in hz.items():
        if not key.isdigit() or int(key) <= 0:
            errs.append(f"horizon key {key!r} is not a positive integer (ms)")
        if not isinstance(val, dict) or not (
            {"bins", "mean_abs_move_bps", "skill"}
            <= set(val)
            <= {"bins", "mean_abs_move_bps", "coins", "skill"}
        ):
            errs.append(
                f"horizons[{key}] must have bins, mean_abs_move_bps, skill (and optional coins)"
            )
            continue
        if not isinstance(val["skill"], dict) or not isinstance(
            val["skill"].get("demonstrated"), bool
        ):
            errs.append(f"horizons[{key}].skill must be an object with demonstrated (bool)")
        coins = val.get("coins", {})
        if not isinstance(coins, dict) or not all(
            isinstance(c, dict)
            and set(c) == {"mean_abs_move_bps"}
            and isinstance(c["mean_abs_move_bps"], int | float)
            for c in coins.values()
        ):
            errs.append(f"horizons[{key}].coins must map coin -> {{mean_abs_move_bps: number}}")
        if not isinstance(val["mean_abs_move_bps"], int | float):
            errs.append(f"horizons[{key}].mean_abs_move_bps must be a number")
        bins = val["bins"]
        if not isinstance(bins, list) or not bins:
            errs.append(f"horizons[{key}].bins must be a non-empty list")
            continue
        prev_hi: float | None = None
        prev_p = -1.0
        for b in bins:
            if not (
                isinstance(b, list)
                and len(b) == 4
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in b)
                and isinstance(b[3], int)
            ):
                errs.append(f"horizons[{key}]: bin {b!r} is not [lo, hi, p_right, n]")
                break
            lo, hi, p, _n = b
            if not (lo <= hi and 0.0 <= p <= 1.0 and b[3] > 0):
                errs.append(f"horizons[{key}]: bad bin {b!r}")
            if prev_hi is not None and lo != prev_hi:
                errs.append(f"horizons[{key}]: bins not contiguous at {lo}")
            if p < prev_p:
                errs.append(f"horizons[{key}]: p_right not monotone at {lo}")
            prev_hi, prev_p = hi, p
    d = doc.get("default_horizon_ms")
    if not isinstance(d, int) or isinstance(d, bool) or str(d) not in hz:
        errs.append("default_horizon_ms must be an int naming one of the horizons")
    return errs


def check_calibration(res: DatasetResult, calibration: dict[str, Any]) -> None:
    """Brier, ECE and the reliability table of the fitted calibration on each part."""
    rows = res.rows
    directional = rows.direction != 0
    for h in res.spec.horizons_ms:
        entry = calibration["horizons"].get(str(h))
        right = _right(rows, h).astype(np.float64)
        for part in PARTS:
            md = res.part_mask(h, part) & directional
            o = right[md]
            if entry is not None:
                bins = entry["bins"]
                p = apply_bins(bins, rows.raw[md])
                total_n = sum(int(b[3]) for b in bins)
                base = sum(b[2] * b[3] for b in bins) / total_n
                k = bin_index(bins, rows.raw[md])
                rel: list[ReliabilityRow] = []
                ece = 0.0
                for j, b in enumerate(bins):
                    sel = k == j
                    nj = int(sel.sum())
                    if nj:
                        obs = float(o[sel].mean())
                        rel.append(ReliabilityRow(b[0], b[1], b[2], obs, nj))
                        ece += nj * abs(obs - b[2])
                res.calibration[(h, part)] = CalibrationCheck(
                    int(md.sum()),
                    brier(p, o),
                    brier(np.full(o.shape, base), o),
                    ece / o.size if o.size else math.nan,
                    rel,
                )
            pe = rows.p_env[md]
            fin = np.isfinite(pe) & (rows.horizon[md] == h)  # judged at its own horizon
            if fin.any():
                rel_rows, ece_e = reliability_table(pe[fin], o[fin])
                base_e = float(o[fin].mean())
                res.envelope_p[(h, part)] = CalibrationCheck(
                    int(fin.sum()),
                    brier(pe[fin], o[fin]),
                    brier(np.full(int(fin.sum()), base_e), o[fin]),
                    ece_e,
                    rel_rows,
                )


# ---------------------------------------------------------------------------------------------
# charts


def _mpl() -> Any:
    try:
        import matplotlib
    except ImportError as ex:  # pragma: no cover - depends on the environment
        msg = "charts need matplotlib: pip install -e '.[eval]' (or pass --no-plots)"
        raise SystemExit(msg) from ex
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


CHART_CAPTIONS: Final = {
    "price_regimes.png": "Price with the flow's regime label shaded, one row a dataset: the whole "
    "tick capture; for candles, the week (5m) or month (1h) around the largest 24 h fall.",
    "ic_by_horizon.png": "IC by forward horizon with 95 % block-bootstrap intervals, in-sample "
    "(light) and out-of-sample (dark).",
    "reliability.png": "Reliability of the fitted calibration on held-out data: each point is a "
    "bin of the table (x: its p_right, fitted in-sample; y: share right out of sample; size: n). "
    "On the diagonal = calibrated; a flat cloud near 0.5 = no resolution.",
    "hit_rate_deciles.png": "Out-of-sample hit rate by decile of raw edge strength, one line a "
    "horizon (a zero move counts as wrong, which sinks the shortest tick horizons).",
    "regime_forward_vol.png": "Forward realised volatility after bars of each label, relative to "
    "all bars, at the main horizon; with share of bars and mean dwell.",
}


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _ci_err(values: list[Interval]) -> F64:
    lo = [max(0.0, v.value - v.lo) if math.isfinite(v.lo) else 0.0 for v in values]
    hi = [max(0.0, v.hi - v.value) if math.isfinite(v.hi) else 0.0 for v in values]
    return np.asarray([lo, hi], dtype=np.float64)


def _panels(plt: Any, n: int, height: float) -> tuple[Any, Any]:
    """One row of ``n`` dataset panels: the figure and its 1×n axes."""
    return plt.subplots(  # type: ignore[no-any-return]
        1, n, figsize=(4.2 * n + 0.6, height), squeeze=False, layout="constrained"
    )


def plot_ic(results: Sequence[DatasetResult], path: Path) -> None:
    """IC by horizon with 95 % block-bootstrap CIs, in- and out-of-sample, one panel a dataset."""
    plt = _mpl()
    fig, axes = _panels(plt, len(results), 4.0)
    for ax, res in zip(axes[0], results, strict=True):
        hs = list(res.spec.horizons_ms)
        xs = np.arange(len(hs), dtype=np.float64)
        for off, part, color in ((-0.12, "in", "#9e9ac8"), (0.12, "out", "#54278f")):
            vals = [res.ic[(h, part)] for h in hs]
            y = np.asarray([v.value for v in vals])
            ax.errorbar(
                xs + off,
                y,
                yerr=_ci_err(vals),
                fmt="o",
                color=color,
                capsize=3,
                ms=5,
                label=PART_NAMES[part],
            )
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_xticks(xs, [fmt_duration(h) for h in hs])
        ax.set_xlabel("forward horizon")
        ax.set_title(res.spec.name, fontsize=11)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("IC: Spearman(direction × score, fwd return)")
    axes[0][0].legend(loc="best", fontsize=9)
    fig.suptitle("Information coefficient by horizon (95% block-bootstrap CI)", fontsize=12)
    _save(plt, fig, path)


def plot_reliability(results: Sequence[DatasetResult], path: Path) -> None:
    """Out-of-sample reliability of the fitted calibration, one panel a dataset."""
    plt = _mpl()
    fig, axes = _panels(plt, len(results), 4.4)
    cmap = plt.get_cmap("viridis")
    for ax, res in zip(axes[0], results, strict=True):
        hs = list(res.spec.horizons_ms)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        lo_all, hi_all = 1.0, 0.0
        for i, h in enumerate(hs):
            chk = res.calibration.get((h, "out"))
            if chk is None or not chk.rows:
                continue
            px = np.asarray([r.p_mean for r in chk.rows])
            oy = np.asarray([r.observed for r in chk.rows])
            size = np.asarray([r.n for r in chk.rows], dtype=np.float64)
            color = cmap(i / max(1, len(hs) - 1))
            ax.plot(px, oy, "-", color=color, lw=1.2, alpha=0.8)
            ax.scatter(
                px,
                oy,
                s=12 + 120 * np.sqrt(size / size.max()),
                color=color,
                alpha=0.8,
                label=f"{fmt_duration(h)}  Brier {chk.brier:.3f}",
            )
            lo_all = min(lo_all, float(px.min()), float(oy.min()))
            hi_all = max(hi_all, float(px.max()), float(oy.max()))
        pad = 0.05
        lo_v, hi_v = max(0.0, lo_all - pad), min(1.0, hi_all + pad)
        if hi_v > lo_v:
            ax.set_xlim(lo_v, hi_v)
            ax.set_ylim(lo_v, hi_v)
        ax.set_xlabel("predicted P(direction right) (fitted in-sample)")
        ax.set_title(res.spec.name, fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    axes[0][0].set_ylabel("observed share right, out-of-sample")
    fig.suptitle("Reliability of the fitted calibration on held-out data", fontsize=12)
    _save(plt, fig, path)


def plot_deciles(results: Sequence[DatasetResult], path: Path) -> None:
    """Out-of-sample hit rate by score decile, one line a horizon."""
    plt = _mpl()
    fig, axes = _panels(plt, len(results), 4.0)
    cmap = plt.get_cmap("viridis")
    for ax, res in zip(axes[0], results, strict=True):
        hs = list(res.spec.horizons_ms)
        for i, h in enumerate(hs):
            dec = res.deciles[h]
            y = [d.hit["out"] for d in dec]
            ax.plot(
                np.arange(1, len(dec) + 1),
                y,
                "o-",
                ms=3.5,
                color=cmap(i / max(1, len(hs) - 1)),
                label=fmt_duration(h),
            )
        ax.axhline(0.5, color="black", lw=0.8)
        ax.set_xlabel(f"decile of {res.rows.raw_field} (LONG/SHORT)")
        ax.set_title(res.spec.name, fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
    axes[0][0].set_ylabel("hit rate, out-of-sample")
    fig.suptitle("Hit rate by decile of edge strength (a zero move counts as wrong)", fontsize=12)
    _save(plt, fig, path)


def plot_regimes(results: Sequence[DatasetResult], path: Path) -> None:
    """Forward realised volatility after each label relative to all bars, one panel a dataset."""
    plt = _mpl()
    fig, axes = _panels(plt, len(results), 4.0)
    for ax, res in zip(axes[0], results, strict=True):
        rr = [r for r in res.regimes if r.label != "UNKNOWN"]
        names = [r.label.replace("_", "\n") for r in rr]
        vals = [r.rv_ratio for r in rr]
        bars = ax.bar(names, vals, color=[LABEL_COLORS[r.label] for r in rr], alpha=0.85)
        for b, r in zip(bars, rr, strict=True):
            ax.annotate(
                f"{_pct(r.share, 0 if r.share >= 0.01 else 1)} of bars\n"
                f"dwell {fmt_dwell(r.mean_dwell_ms)}",
                (b.get_x() + b.get_width() / 2, b.get_height()),
                ha="center",
                va="bottom",
                fontsize=7.5,
            )
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_ylim(0, max([*vals, 1.0]) * 1.3)
        ax.tick_params(axis="x", labelsize=8)
        hm = fmt_duration(res.spec.main_horizon_ms)
        ax.set_title(f"{res.spec.name} (next {hm})", fontsize=11)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("forward realised vol ÷ all bars")
    fig.suptitle("Do the regime labels separate markets that behave differently?", fontsize=12)
    _save(plt, fig, path)


def _price_window(res: DatasetResult, coin: str) -> tuple[int, int]:
    """The whole span for short data; else the week around the largest 24 h fall."""
    r = res.rows
    m = np.asarray(r.coin, dtype=object) == coin
    ts, px = r.ts[m], r.price[m]
    span = int(ts.max() - ts.min()) if ts.size else 0
    if span <= 3 * 86_400_000:
        return int(ts.min()), int(ts.max())
    width = 7 * 86_400_000 if res.spec.bar_ms < 3_600_000 else 30 * 86_400_000
    day = max(1, 86_400_000 // res.spec.bar_ms)
    lp = np.log(px)
    drops = lp[day:] - lp[:-day]
    k = int(np.nanargmin(drops)) + day if np.isfinite(drops).any() else len(ts) // 2
    centre = int(ts[k])
    return centre - width // 2, centre + width // 2


def plot_prices(results: Sequence[DatasetResult], path: Path) -> None:
    """Price with regime shading: one row a dataset (its first coin with quotes, else BTC)."""
    plt = _mpl()
    import matplotlib.dates as mdates

    fig, axes = plt.subplots(
        len(results),
        1,
        figsize=(11, 2.9 * len(results) + 0.5),
        squeeze=False,
        layout="constrained",
    )
    for ax, res in zip(axes[:, 0], results, strict=True):
        r = res.rows
        coins = sorted(set(r.coin))
        mids = [c for c in coins if res.price_source.get(c) == "mid_px"]
        coin = (mids or (["BTC"] if "BTC" in coins else coins))[0]
        lo, hi = _price_window(res, coin)
        m = (np.asarray(r.coin, dtype=object) == coin) & (r.ts >= lo) & (r.ts <= hi)
        ts = r.ts[m]
        t = ts.astype("datetime64[ms]")
        px = r.price[m]
        labels = np.asarray(r.label, dtype=object)[m]
        ax.plot(t, px, color="black", lw=0.8)
        for lab in LABELS:
            sel = labels == lab
            if sel.any():
                ax.fill_between(
                    t,
                    0,
                    1,
                    where=sel,
                    step="post",
                    color=LABEL_COLORS[lab],
                    alpha=0.3,
                    transform=ax.get_xaxis_transform(),
                    lw=0,
                    label=lab,
                )
        ax.set_ylabel(f"{coin} ({res.price_source.get(coin, '?')})")
        ax.set_title(
            f"{res.spec.name}: {coin}, {iso_utc(lo)[:16]} → {iso_utc(hi)[:16]} UTC", fontsize=10
        )
        locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        ax.margins(x=0)
        ax.grid(alpha=0.25)
    axes[0][0].legend(loc="upper center", bbox_to_anchor=(0.5, 1.32), ncol=5, fontsize=8)
    _save(plt, fig, path)


# ---------------------------------------------------------------------------------------------
# report


def _f(v: float, fmt: str = ".3f") -> str:
    return "–" if not math.isfinite(v) else format(v, fmt)


def _pct(v: float, digits: int = 1) -> str:
    return "–" if not math.isfinite(v) else f"{100 * v:.{digits}f} %"


def _ci(v: Interval, fmt: str = "+.3f") -> str:
    if not math.isfinite(v.value):
        return "–"
    if not (math.isfinite(v.lo) and math.isfinite(v.hi)):
        return format(v.value, fmt)
    return f"{v.value:{fmt}} [{v.lo:{fmt}}, {v.hi:{fmt}}]"


def _ci_pct(v: Interval) -> str:
    if not math.isfinite(v.value):
        return "–"
    if not (math.isfinite(v.lo) and math.isfinite(v.hi)):
        return f"{100 * v.value:.1f} %"
    return f"{100 * v.value:.1f} % [{100 * v.lo:.1f}, {100 * v.hi:.1f}]"


def _sig(v: Interval) -> str:
    if not (math.isfinite(v.lo) and math.isfinite(v.hi)):
        return "n/a"
    if v.lo > 0:
        return "above 0"
    if v.hi < 0:
        return "below 0"
    return "contains 0"


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


def summary_paragraph(ev: Evaluation) -> str:
    """The README paragraph: key figures, plainly."""
    parts: list[str] = []
    for res in ev.datasets:
        hm = res.spec.main_horizon_ms
        ic = res.ic[(hm, "out")]
        hit = res.hit[(hm, "out")]
        cal = res.calibration.get((hm, "out"))
        coins = ", ".join(sorted(set(res.rows.coin)))
        span = f"{iso_utc(int(res.rows.ts.min()))[:10]} → {iso_utc(int(res.rows.ts.max()))[:10]}"
        ics = [res.ic[(h, "out")].value for h in res.spec.horizons_ms]
        text = (
            f"**{res.spec.name}** ({coins}; {span}; {len(res.rows.ts):,} envelopes): IC at "
            f"{fmt_duration(hm)} {_ci(ic, '+.3f')} (from {min(ics):+.3f} to {max(ics):+.3f} over "
            f"{', '.join(fmt_duration(h) for h in res.spec.horizons_ms)}), directional hit rate "
            f"{_ci_pct(hit)} with {_pct(res.shares['out'].get('FLAT', math.nan), 0)} of bars FLAT"
        )
        if cal is not None:
            text += (
                f", Brier of the fitted calibration {_f(cal.brier)} vs {_f(cal.brier_ref)} for "
                "a constant base rate"
            )
        reg = {r.label: r for r in res.regimes}
        hot = [reg[k] for k in ("LIQUIDATION_RISK", "CHAOTIC") if k in reg]
        calm = reg.get("MEAN_REVERTING")
        if hot and calm is not None and calm.rv_bps > 0:
            ratios = " and ".join(
                f"{r.label} ({r.spells:,} spells) {r.rv_bps / calm.rv_bps:.1f}×"
                for r in hot
                if math.isfinite(r.rv_bps)
            )
            text += (
                f"; forward {fmt_duration(hm)} realised vol after {ratios} that after "
                "MEAN_REVERTING"
            )
        parts.append(text + ".")
    groups: list[str] = []
    n_sig = 0
    for res in ev.datasets:
        for side in ("above 0", "below 0"):
            hs = [h for h in res.spec.horizons_ms if _sig(res.ic[(h, "out")]) == side]
            if hs:
                n_sig += len(hs)
                groups.append(
                    f"{res.spec.name} at {', '.join(fmt_duration(h) for h in hs)} ({side})"
                )
    total = sum(len(r.spec.horizons_ms) for r in ev.datasets)
    verdict = (
        f"Out of sample the IC's 95 % CI excludes zero in {n_sig} of {total} "
        "dataset × horizon cases: " + "; ".join(groups) + "."
        if groups
        else "Out of sample no horizon's IC has a 95 % CI that excludes zero: no reliable "
        "directional edge is shown."
    )
    head = (
        "Replaying the data through the production flow and scoring every envelope against the "
        "coin's own later price (`python -m tools.evaluate`; IC = Spearman of direction × score "
        "vs the forward log return, 95 % CIs by block bootstrap; all figures out-of-sample: "
        f"{SPLIT_TEXT}, which no fit ever saw): "
    )
    tail = (
        f" {verdict} Calibration table `operators/calibration/edge_calibration.json` version "
        f"`{ev.calibration.get('version', '–')}`. {data_limits(ev)} Details: "
        "docs/evaluation/report.md."
    )
    return head + " ".join(parts) + tail


def findings(ev: Evaluation) -> list[str]:
    """Plain statements read off the numbers (regenerated with them)."""
    out: list[str] = []
    for res in ev.datasets:
        name = f"**{res.spec.name}**"
        hs = res.spec.horizons_ms
        best = max(hs, key=lambda h: abs(res.ic[(h, "out")].value) if res.ic[(h, "out")].n else 0)
        ivb = res.ic[(best, "out")]
        out.append(
            f"{name}: the largest out-of-sample |IC| is {_ci(ivb)} at {fmt_duration(best)} "
            f"({_sig(ivb)}); its square, {100 * ivb.value**2:.2f} %, is the share of the "
            "forward-return rank variance it accounts for."
        )
        lost = [
            fmt_duration(h)
            for h in hs
            if _sig(res.ic[(h, "in")]) == "above 0" and _sig(res.ic[(h, "out")]) != "above 0"
        ]
        if lost:
            out.append(
                f"{name}: the in-sample IC was above zero at {', '.join(lost)} but is not out of "
                "sample: do not read the in-sample figures as skill."
            )
        n_act = int((res.rows.actionable & res.rows.warm).sum())
        if n_act == 0:
            out.append(
                f"{name}: no envelope was `actionable` (the expected move never cleared the "
                "costs, or the costs were unknown), so the hit rate of actionable calls cannot be "
                "measured here."
            )
        else:
            out.append(f"{name}: {n_act:,} warmed-up envelopes were `actionable`.")
        zero = [fmt_duration(h) for h in hs if res.zero_move.get((h, "out"), 0.0) > 0.2]
        if zero:
            out.append(
                f"{name}: at {', '.join(zero)} more than 20 % of forward moves are exactly zero "
                "(the price did not change), so the hit rate there is far below 50 % for any "
                "direction; read those horizons through the IC."
            )
        single = [
            fmt_duration(h)
            for h in hs
            if len(ev.calibration["horizons"].get(str(h), {}).get("bins", [])) == 1
        ]
        if single:
            out.append(
                f"{name}: the calibration at {', '.join(single)} is a single bin: the in-sample "
                "data could not tell strong calls from weak ones, so `p_right` is the base rate "
                "for every call."
            )
        bss = [
            1 - c.brier / c.brier_ref
            for (h, part), c in res.calibration.items()
            if part == "out" and c.brier_ref > 0
        ]
        if bss:
            out.append(
                f"{name}: out-of-sample Brier skill of the fitted table against a constant base "
                f"rate ranges {min(bss):+.3f} … {max(bss):+.3f} (0 = no better than the base "
                "rate)."
            )
        reg = {r.label: r for r in res.regimes}
        calm = reg.get("MEAN_REVERTING")
        trend = reg.get("TRENDING")
        hm = fmt_duration(res.spec.main_horizon_ms)
        if calm is not None:
            for lab in ("LIQUIDATION_RISK", "CHAOTIC"):
                r = reg.get(lab)
                if r is None or not (calm.rv_bps > 0):
                    continue
                ratio = r.rv_bps / calm.rv_bps
                verdict = "more" if ratio > 1.1 else "less" if ratio < 0.9 else "about as"
                out.append(
                    f"{name}: bars labelled {lab} ({r.spells:,} spells, {_pct(r.share)} of bars) "
                    f"are followed by {ratio:.1f}× the {hm} realised vol of MEAN_REVERTING bars "
                    f"({verdict} volatile{' than' if verdict != 'about as' else ' as'} the calm "
                    "label)."
                )
            if trend is not None and math.isfinite(trend.er) and math.isfinite(calm.er):
                better = trend.er > calm.er
                out.append(
                    f"{name}: forward path efficiency over {hm} is {trend.er:.2f} after TRENDING "
                    f"vs {calm.er:.2f} after MEAN_REVERTING: "
                    + (
                        "the trend label does foretell straighter paths."
                        if better
                        else "the trend label does not foretell straighter paths."
                    )
                )
    return out


def data_limits(ev: Evaluation) -> str:
    """One sentence: what the inputs lack."""
    bits: list[str] = []
    if any(r.spec.kind == "candle" for r in ev.datasets):
        bits.append(
            "the candle data has no book, trade flow or asset context (stress windows such as "
            "2025-04-06/07 are seen only through candle closes, with degraded regime inputs)"
        )
    for res in ev.datasets:
        if res.spec.kind != "tick":
            continue
        books = [c for c, u in res.inputs_used.items() if "book" in u]
        minutes = (int(res.rows.ts.max()) - int(res.rows.ts.min())) / 60_000
        bits.append(
            f"books and quotes exist only for {', '.join(books) or 'no coin'} in "
            f"{minutes:.0f} minutes of tick data"
        )
    if not any("asset_ctx" in u for r in ev.datasets for u in r.inputs_used.values()):
        bits.append("no input carries the asset context (funding, open interest)")
    if not bits:
        return ""
    text = "; ".join(bits)
    return text[0].upper() + text[1:] + "."


def data_caveats(ev: Evaluation) -> list[str]:
    """What the data can and cannot show, derived from what the inputs actually held."""
    out: list[str] = []
    any_ctx = any("asset_ctx" in used for r in ev.datasets for used in r.inputs_used.values())
    for res in ev.datasets:
        coins = sorted(res.inputs_used)
        span_s = (int(res.rows.ts.max()) - int(res.rows.ts.min())) / 1000 if res.rows.ts.size else 0
        span = (
            f"{span_s / 60:.0f} minutes" if span_s < 3 * 86_400 else f"{span_s / 86_400:.0f} days"
        )
        used = "; ".join(f"{c}: {', '.join(res.inputs_used[c]) or 'none'}" for c in coins)
        src = ", ".join(f"{c} {res.price_source.get(c, '?')}" for c in coins)
        chans = ", ".join(f"{k} {v:,}" for k, v in sorted(res.frames.items()))
        out.append(
            f"**{res.spec.name}** — {len(res.spec.files)} file(s), {span}; frames: {chans}. "
            f"Inputs the regime saw per coin: {used}. Forward returns from: {src}."
        )
    kinds = {r.spec.kind for r in ev.datasets}
    if "candle" in kinds:
        out.append(
            "Candle-only data carries no book, no trade flow and no asset context: the "
            "cascade rule runs in its degraded form (vol expansion ≥ 3 with a one-way path), "
            "liquidity falls back to volume, and every call is marked `DEGRADED_INPUTS` with "
            "lower confidence. Any crash in these files (e.g. 2025-04-06/07) is seen only "
            "through 5-minute or hourly closes."
        )
    if "tick" in kinds:
        res = next(r for r in ev.datasets if r.spec.kind == "tick")
        with_book = [c for c, u in res.inputs_used.items() if "book" in u]
        without = [c for c in res.inputs_used if c not in with_book]
        if with_book and without:
            out.append(
                f"In the tick data only {', '.join(with_book)} has quotes and books; "
                f"{', '.join(without)} have trades only, so their price is the last trade "
                "(bid-ask bounce adds noise and negative autocorrelation at the shortest horizons)."
            )
        span_s = (int(res.rows.ts.max()) - int(res.rows.ts.min())) / 1000
        if span_s < 6 * 3600:
            out.append(
                f"The tick data spans only {span_s / 60:.0f} minutes: horizons of a minute or more "
                "leave few independent windows (see the block counts), so their CIs are wide."
            )
    if not any_ctx:
        out.append(
            "No input has `activeAssetCtx`: the open-interest-drop stress, funding and premium are "
            "untested by this evaluation."
        )
    return out


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def render_report(ev: Evaluation) -> str:
    """The Markdown report."""
    L: list[str] = []
    L += ["# Signal evaluation", ""]
    L += [
        f"_Generated by `{ev.command}` (code version {code_version()}); run time "
        f"{ev.elapsed_s:.0f} s. Every figure below is recomputed by that command._",
        "",
        "## Summary for the README",
        "",
        summary_paragraph(ev),
        "",
        "## What this data can and cannot show",
        "",
    ]
    L += [f"- {c}" for c in data_caveats(ev)]
    L += ["", "## Reading the results", ""]
    L += [f"- {c}" for c in findings(ev)]
    L += ["", "## Method", ""]
    L += _table(
        [
            "dataset",
            "files",
            "coins",
            "span (UTC)",
            "bar_ms",
            "window_obs",
            "warmup_obs",
            "horizons",
            "split at",
            "envelopes",
            "replay",
        ],
        [
            [
                r.spec.name,
                "<br>".join(f.name for f in r.spec.files),
                ", ".join(sorted(set(r.rows.coin))),
                f"{iso_utc(int(r.rows.ts.min()))[:16]} → {iso_utc(int(r.rows.ts.max()))[:16]}",
                f"{r.spec.bar_ms:,}",
                str(r.spec.window_obs),
                str(r.spec.warmup_obs),
                ", ".join(fmt_duration(h) for h in r.spec.horizons_ms),
                iso_utc(r.split_ms)[:16],
                f"{len(r.rows.ts):,}",
                f"{r.replay_s:.1f} s",
            ]
            for r in ev.datasets
        ],
    )
    L += [
        "",
        "Everything else is the flow's default (lateness 1 s, depth band 10 bps, regime and edge "
        "thresholds as in DESIGN.md). Candle files replay with one bar per candle; the window is "
        f"{CANDLE_WINDOW_OBS} candles (5 h of 5m candles, 60 h of 1h candles), the server's "
        "default window at every bar length.",
        "",
        "- **Forward return** `R(t,h) = ln P(t+h) − ln P(t)`, computed offline per coin from the "
        "envelopes' own `features.mid_px` (the candle close or last trade for coins without "
        "quotes, read from the same capture) on a grid of bar closes; a price is carried forward "
        "over missing bars for at most max(12 bars, 60 s); a window crossing a longer hole is "
        "dropped. Only envelopes past warm-up count.",
        "- **IC** = Spearman rank correlation between `direction × edge.score` (LONG +1, SHORT −1, "
        "FLAT 0) and `R(t,h)`, all coins of a dataset pooled; also shown out of sample with the "
        "raw strength (`edge.raw_score`) in place of the (calibrated) score, and over LONG/SHORT "
        "envelopes only. Overlapping horizons and a slowly moving signal make "
        "neighbouring observations dependent, so the **95 % CI is a block bootstrap**: time is cut "
        "into non-overlapping blocks of `max(h, window span)` (all coins of a block together), "
        "1,000 resamples of whole blocks, percentile interval (replicate statistic: Pearson of the "
        "full-sample ranks). The number of blocks is roughly the number of independent "
        "observations; it is shown beside n. With fewer than ~30 blocks (a short capture) "
        "the percentile interval is rough and tends to be too narrow.",
        "- **Hit rate** = share of LONG/SHORT envelopes whose direction matches `sign(R(t,h))`; a "
        "zero move counts as wrong (its share is shown). FLAT is excluded and reported as a share. "
        "CIs by the same block bootstrap.",
        "- **Calibration** (`--fit-calibration`): per horizon, an isotonic (pool-adjacent-"
        f"violators) step function from the raw edge strength (`{ev.datasets[0].rows.raw_field}` "
        "here) to P(direction right), fitted on the **in-sample** part only (everything "
        f"before the out-of-sample part: {SPLIT_TEXT}), purged so that `t + h` also "
        "lies before the split. A block of the fit is pooled with a neighbour until it holds at "
        f"least {ev.min_bin_eff:g} *effective* observations (a row "
        "weighs `bar / max(h, window span)`: rows closer than that share their signal and most "
        "of their outcome, as in the bootstrap). Datasets sharing a horizon are pooled for that "
        "horizon. **Out-of-sample** "
        "figures use only envelopes at or after the split.",
        "- **Brier** = mean (p − o)², o = 1 if right; the reference forecast is the constant "
        "in-sample base rate (BSS = 1 − Brier/Brier_ref, > 0 means the table beats it). **ECE** "
        "= Σ (n_b/N)·|observed_b − p_b| over the table's bins.",
        "- **Regimes**: for each label (warmed-up bars), its share, spells (runs of one label per "
        "coin) and mean dwell, the mean forward |R| at each horizon, and the mean forward "
        "realised volatility `sqrt(Σ r²)` and efficiency `|R|/Σ|r|` of the bar returns over the "
        "main horizon (the horizon nearest the window span).",
        "",
    ]
    for res in ev.datasets:
        L += _dataset_section(res)
    L += _calibration_section(ev)
    L += ["## Charts", ""]
    for c in ev.charts:
        L += [f"![{c.stem}]({c.name})", "", f"*{CHART_CAPTIONS.get(c.name, c.stem)}*", ""]
    L += ["## Appendix: reliability tables (fitted calibration)", ""]
    for res in ev.datasets:
        for h in res.spec.horizons_ms:
            chk_in = res.calibration.get((h, "in"))
            chk_out = res.calibration.get((h, "out"))
            if chk_in is None or chk_out is None:
                continue
            L += [f"**{res.spec.name}, {fmt_duration(h)}**", ""]
            obs_in = {(r.lo, r.hi): r for r in chk_in.rows}
            obs_out = {(r.lo, r.hi): r for r in chk_out.rows}
            keys = sorted(set(obs_in) | set(obs_out))
            L += _table(
                ["score range", "p_right (table)", "n in", "observed in", "n out", "observed out"],
                [
                    [
                        f"[{lo:.3f}, {hi:.3f})",
                        _f((obs_in.get((lo, hi)) or obs_out[(lo, hi)]).p_mean),
                        str(obs_in[(lo, hi)].n) if (lo, hi) in obs_in else "0",
                        _f(obs_in[(lo, hi)].observed) if (lo, hi) in obs_in else "–",
                        str(obs_out[(lo, hi)].n) if (lo, hi) in obs_out else "0",
                        _f(obs_out[(lo, hi)].observed) if (lo, hi) in obs_out else "–",
                    ]
                    for lo, hi in keys
                ],
            )
            L += [""]
    return "\n".join(L).rstrip() + "\n"


def _dataset_section(res: DatasetResult) -> list[str]:
    L: list[str] = [f"## Results: {res.spec.name}", ""]
    hs = res.spec.horizons_ms
    sh_in, sh_out = res.shares["in"], res.shares["out"]
    L += [
        f"Split at {iso_utc(res.split_ms)}. Direction shares (warmed-up bars), in-sample: "
        f"LONG {_pct(sh_in['LONG'])}, SHORT {_pct(sh_in['SHORT'])}, FLAT {_pct(sh_in['FLAT'])}; "
        f"out-of-sample: LONG {_pct(sh_out['LONG'])}, SHORT {_pct(sh_out['SHORT'])}, FLAT "
        f"{_pct(sh_out['FLAT'])}.",
        "",
        "### Information coefficient",
        "",
    ]
    L += _table(
        [
            "horizon",
            "IC in-sample [95% CI]",
            "n / blocks",
            "IC out-of-sample [95% CI]",
            "n / blocks",
            "IC out, raw strength",
            "IC out, LONG/SHORT only",
        ],
        [
            [
                fmt_duration(h),
                _ci(res.ic[(h, "in")]),
                f"{res.ic[(h, 'in')].n:,} / {res.ic[(h, 'in')].blocks}",
                _ci(res.ic[(h, "out")]),
                f"{res.ic[(h, 'out')].n:,} / {res.ic[(h, 'out')].blocks}",
                _ci(res.ic_raw[(h, "out")]),
                _ci(res.ic_directional[(h, "out")]),
            ]
            for h in hs
        ],
    )
    L += ["", "### Hit rate (LONG/SHORT only)", ""]
    L += _table(
        [
            "horizon",
            "in-sample [95% CI]",
            "n in",
            "out-of-sample [95% CI]",
            "n out",
            "actionable only, out (n)",
            "zero moves, out",
        ],
        [
            [
                fmt_duration(h),
                _ci_pct(res.hit[(h, "in")]),
                f"{res.hit[(h, 'in')].n:,}",
                _ci_pct(res.hit[(h, "out")]),
                f"{res.hit[(h, 'out')].n:,}",
                f"{_pct(res.hit_actionable[(h, 'out')].value)} "
                f"({res.hit_actionable[(h, 'out')].n:,})",
                _pct(res.zero_move[(h, "out")]),
            ]
            for h in hs
        ],
    )
    hm = res.spec.main_horizon_ms
    L += ["", f"By coin, out-of-sample, at {fmt_duration(hm)}:", ""]
    L += _table(
        ["coin", "price from", "n", "IC [95% CI]", "hit rate [95% CI]", "n directional"],
        [
            [
                c,
                res.price_source.get(c, "?"),
                f"{res.ic_coin[c].n:,}",
                _ci(res.ic_coin[c]),
                _ci_pct(res.hit_coin[c]),
                f"{res.hit_coin[c].n:,}",
            ]
            for c in sorted(res.ic_coin)
        ],
    )
    folds = res.ic_folds
    vals = np.asarray([f[2].value for f in folds], dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    icir = float(vals.mean() / vals.std(ddof=1)) if vals.size > 2 and vals.std() > 0 else math.nan
    L += [
        "",
        f"IC at {fmt_duration(hm)} in {len(folds)} consecutive time folds (walk-forward view; "
        f"mean {_f(float(vals.mean()) if vals.size else math.nan, '+.3f')}, "
        f"ICIR = mean/std {_f(icir, '+.2f')}):",
        "",
    ]
    L += _table(
        ["fold", "from (UTC)", "to (UTC)", "n / blocks", "IC [95% CI]"],
        [
            [
                str(i + 1),
                iso_utc(a)[:16],
                iso_utc(b)[:16],
                f"{iv.n:,} / {iv.blocks}",
                _ci(iv),
            ]
            for i, (a, b, iv) in enumerate(folds)
        ],
    )
    L += [
        "",
        f"### Hit rate by decile of raw strength (`{res.rows.raw_field}`; in-sample / "
        "out-of-sample)",
        "",
    ]
    dec0 = res.deciles[hs[0]]
    L += _table(
        ["decile", "raw strength range", "n in / out"] + [fmt_duration(h) for h in hs],
        [
            [
                str(k + 1),
                f"{d.lo:.3f} – {d.hi:.3f}",
                f"{d.n['in']:,} / {d.n['out']:,}",
            ]
            + [
                f"{_pct(res.deciles[h][k].hit['in'], 0)} / {_pct(res.deciles[h][k].hit['out'], 0)}"
                for h in hs
            ]
            for k, d in enumerate(dec0)
        ],
    )
    L += ["", "### Calibration: Brier score and reliability", ""]
    rows_b: list[list[str]] = []
    for h in hs:
        ci_, co = res.calibration.get((h, "in")), res.calibration.get((h, "out"))
        if ci_ is None or co is None:
            continue
        bss = 1 - co.brier / co.brier_ref if co.brier_ref > 0 else math.nan
        env = res.envelope_p.get((h, "out"))
        rows_b.append(
            [
                fmt_duration(h),
                f"{_f(ci_.brier)} (ref {_f(ci_.brier_ref)})",
                f"{_f(co.brier)} (ref {_f(co.brier_ref)})",
                _f(bss, "+.3f"),
                _f(co.ece),
                f"{co.n:,}",
                f"{_f(env.brier)} ({env.n:,})" if env is not None else "–",
            ]
        )
    L += _table(
        [
            "horizon",
            "Brier in-sample",
            "Brier out-of-sample",
            "BSS out",
            "ECE out",
            "n out",
            "envelopes' own `p_right`: Brier out (n)",
        ],
        rows_b,
    )
    versions = ", ".join(f"`{v}` ({n:,})" for v, n in res.rows.calibration_versions.most_common())
    L += [
        "",
        "The reference (ref) is a constant forecast equal to the in-sample base rate. The last "
        "column scores the `edge.p_right` the flow itself put in the envelopes, only where the "
        "envelope's `edge.horizon_ms` is that horizon; the replay ran with calibration "
        f"{versions} (`edge.calibration`). The full reliability tables (per bin: p from the "
        "table, observed share in and out of sample) are in the appendix.",
        "",
        f"### Regimes (forward behaviour; main horizon {fmt_duration(res.spec.main_horizon_ms)})",
        "",
    ]
    L += _regime_table(res, res.regimes)
    if res.truth_regimes:
        L += ["", "#### By the simulator's scripted phases (truth file)", ""]
        L += _regime_table(res, res.truth_regimes)
        flow_labels = [x for x in LABELS if any(x in c for c in res.confusion.values())]
        L += ["", "Confusion (rows: scripted phase, columns: flow label; warmed-up bars):", ""]
        L += _table(
            ["phase", *flow_labels],
            [
                [t, *(str(res.confusion[t][f]) for f in flow_labels)]
                for t in LABELS
                if t in res.confusion
            ],
        )
    if res.errors:
        L += ["", "Replay errors: " + "; ".join(res.errors)]
    return [*L, ""]


def _regime_table(res: DatasetResult, rows: Sequence[RegimeRow]) -> list[str]:
    hs = res.spec.horizons_ms
    return _table(
        ["label", "share", "spells", "mean dwell"]
        + [f"fwd abs R {fmt_duration(h)} (bps)" for h in hs]
        + ["fwd RV (bps)", "RV ÷ all", "fwd efficiency", "fwd RV out-of-sample"],
        [
            [
                r.label,
                _pct(r.share),
                f"{r.spells:,}",
                fmt_dwell(r.mean_dwell_ms),
            ]
            + [_f(r.abs_ret_bps[h], ".1f") for h in hs]
            + [_f(r.rv_bps, ".1f"), _f(r.rv_ratio, ".2f"), _f(r.er, ".2f"), _f(r.rv_bps_out, ".1f")]
            for r in rows
        ],
    )


def _calibration_section(ev: Evaluation) -> list[str]:
    cal = ev.calibration
    L = ["## The fitted calibration table", ""]
    where = f"`{ev.calibration_path}`" if ev.calibration_path else "(not written: no path given)"
    fo = cal["fitted_on"]
    L += [
        f"Written to {where}: version `{cal['version']}`, fitted on {fo['n']:,} in-sample "
        f"directional envelopes from {len(fo['files'])} file(s), {fo['span_utc'][0]} → "
        f"{fo['span_utc'][1]}; default horizon {fmt_duration(int(cal['default_horizon_ms']))} "
        "(the fitted horizon nearest the server's default window span, 60 × 1 s).",
        "",
    ]
    L += _table(
        ["horizon (ms)", "bins", "p_right range", "n", "mean abs move (bps)"],
        [
            [
                k,
                str(len(v["bins"])),
                f"{min(b[2] for b in v['bins']):.3f} – {max(b[2] for b in v['bins']):.3f}",
                f"{sum(int(b[3]) for b in v['bins']):,}",
                f"{v['mean_abs_move_bps']:.2f}",
            ]
            for k, v in sorted(cal["horizons"].items(), key=lambda kv: int(kv[0]))
        ],
    )
    return [*L, ""]


# ---------------------------------------------------------------------------------------------
# driver


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how."""

    paths: tuple[Path, ...]
    out: Path
    bar_ms: int | None = None
    window_obs: int | None = None
    warmup_obs: int | None = None
    horizons_ms: tuple[int, ...] | None = None
    split: float = 0.6
    n_boot: int = 1000
    seed: int = 0
    min_bin_eff: float = MIN_BIN_EFF
    fit_calibration: Path | None = None
    frozen: bool = False
    truth: Path | None = None
    coins: tuple[str, ...] = ()
    plots: bool = True
    progress: bool = False
    command: str = "python -m tools.evaluate"


def evaluate(cfg: EvalConfig) -> Evaluation:
    """Replay, measure, fit, write the report (and charts, and the calibration file)."""
    if not 0.0 < cfg.split < 1.0:
        msg = f"split must be in (0, 1), got {cfg.split}"
        raise ValueError(msg)
    t_start = time.perf_counter()
    progress = Progress(cfg.progress)
    files = expand_paths(cfg.paths)
    scans: list[FileScan] = []
    for i, f in enumerate(files, 1):
        progress.update(f"reading {i}/{len(files)}: {f.name}")
        scans.append(scan_file(f))
    progress.done(f"read {len(files)} file(s)")
    specs = plan_datasets(
        scans,
        bar_ms=cfg.bar_ms,
        window_obs=cfg.window_obs,
        warmup_obs=cfg.warmup_obs,
        horizons_ms=cfg.horizons_ms,
    )
    if not specs:
        msg = "no price data (trades, quotes, books, mids or candles) in the inputs"
        raise ValueError(msg)
    truth = load_truth(cfg.truth) if cfg.truth is not None else None
    results: list[DatasetResult] = []
    extras: list[science.Extra] = []
    for i, spec in enumerate(specs, 1):
        prefix = f"[{i}/{len(specs)}] {spec.name}:"
        envs, frames, errors, replay_s = replay_dataset(spec, cfg.coins, progress, prefix)
        progress.update(f"{prefix} {len(envs):,} envelopes, measuring")
        extras.append(science.extract(envs))
        mine = [s for s in scans if s.path in spec.files]
        res = analyse(
            spec,
            mine,
            envs,
            split=cfg.split,
            n_boot=cfg.n_boot,
            seed=cfg.seed,
            frames=frames,
            errors=errors,
            replay_s=replay_s,
            truth=truth,
        )
        del envs
        results.append(res)
        progress.done(f"{prefix} {len(res.rows.ts):,} envelopes, replay {replay_s:.1f} s")
    if cfg.frozen:  # #9: score the shipped table as it is, no refit
        progress.update("scoring the shipped calibration (frozen)")
        from operators.calibration import DEFAULT_PATH

        calibration = orjson.loads(DEFAULT_PATH.read_bytes())
    else:
        progress.update("fitting the calibration")
        calibration = add_skill(results, fit_calibration(results, min_bin_eff=cfg.min_bin_eff))
    for res in results:
        check_calibration(res, calibration)
    ev = Evaluation(results, calibration, 0.0, cfg.command, min_bin_eff=cfg.min_bin_eff)
    cfg.out.mkdir(parents=True, exist_ok=True)
    if cfg.fit_calibration is not None and not cfg.frozen:
        from operators.calibration import parse as parse_calibration

        try:  # the loader the server uses is the validator (#9: format 2 with skill verdicts)
            parse_calibration(calibration)
        except ValueError as ex:
            msg = f"fitted calibration is malformed: {ex}"
            raise ValueError(msg) from None
        cfg.fit_calibration.parent.mkdir(parents=True, exist_ok=True)
        cfg.fit_calibration.write_text(dump_calibration(calibration), encoding="utf-8")
        ev.calibration_path = cfg.fit_calibration
    if cfg.plots:
        progress.update("drawing charts")
        charts = [
            (plot_prices, "price_regimes.png"),
            (plot_ic, "ic_by_horizon.png"),
            (plot_reliability, "reliability.png"),
            (plot_deciles, "hit_rate_deciles.png"),
            (plot_regimes, "regime_forward_vol.png"),
        ]
        for fn, name in charts:
            fn(results, cfg.out / name)
            ev.charts.append(cfg.out / name)
    ev.elapsed_s = time.perf_counter() - t_start
    ev.report_path = cfg.out / "report.md"
    sciences = [science.dataset_science(r, x) for r, x in zip(results, extras, strict=True)]
    ev.report_path.write_text(
        render_report(ev) + science.render(sciences, calibration, cfg.frozen), encoding="utf-8"
    )
    progress.done(f"wrote {ev.report_path} in {ev.elapsed_s:.0f} s")
    return ev


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tools.evaluate``."""
    ap = argparse.ArgumentParser(
        prog="python -m tools.evaluate",
        description="Replay captures through the flow, measure the signals against what happened "
        "next, fit the edge calibration, write a report with charts.",
    )
    ap.add_argument("paths", nargs="+", type=Path, help="capture files or folders of them")
    ap.add_argument("--out", type=Path, required=True, help="report folder (report.md + PNGs)")
    ap.add_argument("--fit-calibration", type=Path, help="write the fitted calibration JSON here")
    ap.add_argument(
        "--frozen",
        action="store_true",
        help="score the shipped calibration and volatility model as they are (no refit)",
    )
    ap.add_argument(
        "--horizons", help="comma-separated, e.g. 1s,5s,1m or 5m,1h,4h (default: by data kind)"
    )
    ap.add_argument(
        "--bar-ms",
        type=int,
        help="bar length (default: 1000 for tick data, the candle interval for candle files)",
    )
    ap.add_argument(
        "--window-obs",
        type=int,
        help="feature window in observations (default: 60, the server's, at every bar length)",
    )
    ap.add_argument(
        "--warmup-obs", type=int, help="warm-up observations (default: 30, the server's)"
    )
    ap.add_argument(
        "--split",
        type=float,
        default=0.6,
        help="in-sample share of each dataset's time span (default 0.6)",
    )
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument(
        "--min-bin-eff",
        type=float,
        default=MIN_BIN_EFF,
        help="smallest calibration bin, in effective observations (rows x bar / max(h, window))",
    )
    ap.add_argument("--truth", type=Path, help="simulator truth JSON (tools.simulate --truth)")
    ap.add_argument("--coins", help="comma-separated coins to keep (default: all)")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNG charts")
    ns = ap.parse_args(argv)
    try:
        horizons = (
            tuple(parse_duration_ms(h) for h in ns.horizons.split(",") if h.strip())
            if ns.horizons
            else None
        )
        cfg = EvalConfig(
            paths=tuple(ns.paths),
            out=ns.out,
            bar_ms=ns.bar_ms,
            window_obs=ns.window_obs,
            warmup_obs=ns.warmup_obs,
            horizons_ms=horizons,
            split=ns.split,
            n_boot=ns.bootstrap,
            seed=ns.seed,
            min_bin_eff=ns.min_bin_eff,
            fit_calibration=ns.fit_calibration,
            frozen=ns.frozen,
            truth=ns.truth,
            coins=tuple(c.strip() for c in (ns.coins or "").split(",") if c.strip()),
            plots=not ns.no_plots,
            progress=sys.stderr.isatty(),
            command="python -m tools.evaluate " + " ".join(argv or sys.argv[1:]),
        )
        tune_gc()
        ev = evaluate(cfg)
    except (ValueError, FileNotFoundError) as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    print(
        f"report: {ev.report_path}; calibration {ev.calibration['version']}"
        + (f" -> {ev.calibration_path}" if ev.calibration_path else "")
        + f"; {ev.elapsed_s:.1f} s",
        file=sys.stderr,
    )
    errors = [e for r in ev.datasets for e in r.errors]
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
