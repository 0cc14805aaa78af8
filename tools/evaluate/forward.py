"""What happened next: each row's forward return, realised volatility and path efficiency on a
regular grid of bars (a price is carried over short holes only), and the spells of one regime
label."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tools.evaluate.stats import F64


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
