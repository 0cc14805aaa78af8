"""The evaluation's statistics, in plain numpy: rank correlation, the block bootstrap behind every
95 % interval, the Brier score and reliability tables, quantile bins."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]


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


@dataclass(frozen=True)
class Interval:
    """A point estimate with a 95 % CI and its sample size."""

    value: float
    lo: float
    hi: float
    n: int
    blocks: int


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
