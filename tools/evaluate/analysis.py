"""Every calibration-free measure of one dataset: forward quantities per coin, the in-/out-of-sample
split, the IC and hit rate with block-bootstrap intervals (by horizon, coin, decile and time fold),
and the forward behaviour after each regime label."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from tools.evaluate.datasets import DatasetSpec, FileScan, truth_labels
from tools.evaluate.forward import Forward, forward_metrics, spells
from tools.evaluate.results import (
    DIRECTION_SIGN,
    LABELS,
    PARTS,
    DatasetResult,
    DecileRow,
    RegimeRow,
    extract_rows,
    price_observations,
)
from tools.evaluate.series import CANDLE_SPLIT_MS
from tools.evaluate.stats import (
    Interval,
    bin_of,
    block_bootstrap_corr,
    block_bootstrap_mean,
    quantile_edges,
    rankdata,
    spearman,
)

FOLDS: Final = 5  # time folds of the walk-forward IC view


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
