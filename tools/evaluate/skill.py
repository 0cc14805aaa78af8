"""The out-of-sample skill verdict of each calibrated horizon, and the actionable calls' P&L.

A horizon has **demonstrated skill** when, on its out-of-sample directional calls (every dataset
with that horizon pooled):

- the Brier skill score against the constant in-sample base rate, ``BSS = 1 − BS/BS_ref``, has a
  95 % block-bootstrap lower bound above 0 (blocks of ``max(h, window span)`` per dataset, 1,000
  resamples, percentile interval), and
- every bin of the table holding at least 50 *effective* observations (a row weighs
  ``bar / max(h, window span)``) is reliable: ``|observed share right − p_bin| ≤ 0.05``.

The verdict goes into the table (``skill``) and the edge publishes ``p_right`` only where it holds
(`operators.calibration`). Realised net P&L of a call: ``direction × R(t, h) × 1e4 − cost_bps``
(the envelope's own cost: taker fee + half spread + slippage), in bps per call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from operators.calibration import TABLE_FORMAT
from tools.evaluate.isotonic import apply_bins, bin_index
from tools.evaluate.results import DatasetResult, direction_right
from tools.evaluate.stats import block_bootstrap_mean

MIN_EFF: Final = 50.0
MAX_GAP: Final = 0.05
N_BOOT: Final = 1000


@dataclass(frozen=True)
class Verdict:
    """One horizon's out-of-sample skill verdict."""

    horizon_ms: int
    n: int
    bss: float
    bss_lo: float
    bss_hi: float
    max_gap: float
    """Largest |observed − p| over the bins with at least 50 effective observations."""
    demonstrated: bool

    def as_json(self) -> dict[str, Any]:
        """The table's ``skill`` entry."""

        def r(x: float) -> float | None:
            return round(x, 5) if math.isfinite(x) else None

        return {
            "demonstrated": self.demonstrated,
            "bss": r(self.bss),
            "bss_lo": r(self.bss_lo),
            "bss_hi": r(self.bss_hi),
            "max_reliability_gap": r(self.max_gap),
            "n": self.n,
            "rule": "OOS BSS 95% block-bootstrap lower bound > 0 and |obs - p| <= 0.05 in "
            "every bin with >= 50 effective observations",
        }


def _bins(entry: dict[str, Any]) -> list[list[float]]:
    return [list(map(float, b)) for b in entry["bins"]]


def verdict(
    results: Sequence[DatasetResult], h: int, entry: dict[str, Any], seed: int = 0
) -> Verdict:
    """The verdict of horizon ``h`` from the out-of-sample rows of ``results``."""
    bins = _bins(entry)
    total_n = sum(b[3] for b in bins)
    base = sum(b[2] * b[3] for b in bins) / total_n if total_n else 0.5
    ps, os_, ws, blocks = [], [], [], []
    offset = 0
    for res in results:
        if h not in res.spec.horizons_ms:
            continue
        rows = res.rows
        m = res.part_mask(h, "out") & (rows.direction != 0)
        if not m.any():
            continue
        ps.append(apply_bins(bins, rows.raw[m]))
        os_.append(direction_right(rows, h)[m].astype(np.float64))
        ws.append(np.full(int(m.sum()), res.spec.bar_ms / max(h, res.spec.window_span_ms)))
        b = res.block_ids(h)[m]
        blocks.append(b + offset)
        offset += int(b.max()) + 1
    if not ps:
        return Verdict(h, 0, math.nan, math.nan, math.nan, math.nan, False)
    p = np.concatenate(ps)
    o = np.concatenate(os_)
    w = np.concatenate(ws)
    blk = np.concatenate(blocks)
    se = (p - o) ** 2
    se_ref = (base - o) ** 2
    bss = 1.0 - se.mean() / se_ref.mean() if se_ref.mean() > 0 else math.nan
    # block bootstrap of BSS
    uniq, inv = np.unique(blk, return_inverse=True)
    nb = len(uniq)
    sums = np.stack([np.bincount(inv, se, nb), np.bincount(inv, se_ref, nb)], axis=1)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(nb, np.full(nb, 1.0 / nb), size=N_BOOT).astype(np.float64)
    boot = counts @ sums
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = 1.0 - boot[:, 0] / boot[:, 1]
    reps = reps[np.isfinite(reps)]
    lo, hi = (float(x) for x in np.quantile(reps, [0.025, 0.975])) if reps.size else (math.nan,) * 2
    # each row's bin (from its raw strength, as the edge looks it up)
    k = np.concatenate(
        [
            bin_index(bins, res.rows.raw[res.part_mask(h, "out") & (res.rows.direction != 0)])
            for res in results
            if h in res.spec.horizons_ms
            and (res.part_mask(h, "out") & (res.rows.direction != 0)).any()
        ]
    )
    gap = 0.0
    for j, b in enumerate(bins):
        sel = k == j
        if w[sel].sum() >= MIN_EFF:
            gap = max(gap, abs(float(o[sel].mean()) - b[2]))
    demonstrated = bool(math.isfinite(lo) and lo > 0.0 and gap <= MAX_GAP)
    return Verdict(h, int(p.size), float(bss), lo, hi, gap, demonstrated)


def add_skill(results: Sequence[DatasetResult], table: dict[str, Any]) -> dict[str, Any]:
    """The table in format 2: every horizon with its out-of-sample ``skill`` verdict."""
    out = {"format": TABLE_FORMAT, **{k: v for k, v in table.items() if k != "format"}}
    horizons = {}
    for key, entry in table["horizons"].items():
        v = verdict(results, int(key), entry)
        horizons[key] = {**entry, "skill": v.as_json()}
    out["horizons"] = horizons
    return out


@dataclass(frozen=True)
class PnL:
    """Actionable out-of-sample calls and their realised net P&L (bps per call)."""

    n: int
    mean_bps: float
    lo_bps: float
    hi_bps: float
    total_bps: float


def actionable_pnl(res: DatasetResult, cost_bps: np.ndarray[Any, Any], seed: int = 0) -> PnL:
    """Out-of-sample actionable calls at their own horizon: net P&L with a block-bootstrap CI."""
    rows = res.rows
    nets: list[np.ndarray[Any, Any]] = []
    blocks: list[np.ndarray[Any, Any]] = []
    for h in res.spec.horizons_ms:
        m = res.part_mask(h, "out") & rows.actionable & (rows.horizon == h)
        if not m.any():
            continue
        gross = rows.direction[m] * rows.fwd[h].ret[m] * 1e4
        nets.append(gross - np.nan_to_num(cost_bps[m]))
        blocks.append(res.block_ids(h)[m])
    if not nets:
        return PnL(0, math.nan, math.nan, math.nan, 0.0)
    net = np.concatenate(nets)
    lo, hi, _ = block_bootstrap_mean(net, np.concatenate(blocks), seed=seed)
    return PnL(int(net.size), float(net.mean()), lo, hi, float(net.sum()))
