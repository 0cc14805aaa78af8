"""Isotonic calibration: pool-adjacent-violators, the monotone step table ``[[lo, hi, p, n], ...]``
from raw edge strength to P(direction right), and looking scores up in it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from tools.evaluate.stats import F64, I64

MIN_BIN_EFF: Final = 50.0  # effective observations behind each calibration bin


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
