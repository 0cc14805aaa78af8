"""Fit the volatility model table (`operators.forecast`) on candle data before the split date.

    python -m tools.evaluate.vol_fit CANDLE_FILE... --tick CAPTURE --out operators/vol_model.json

Every coin and interval of the candle files is pooled (no per-coin constant is fitted: the model
is scale-free by construction). Only rows whose forward window ends before
`tools.evaluate.series.CANDLE_SPLIT_MS` enter the fit, so nothing fitted lies in any candle
dataset's out-of-sample period. The state recursion is `operators.forecast.VolState` itself, so
the fitted coefficients see exactly the components the flow computes.

1. Seasonal profile: per series, the mean ``r²`` of each (weekday/weekend, UTC hour) cell over
   the series' mean ``r²``; the cells are averaged over series and scaled to mean 1.
2. Components: `VolState` over each series.
3. For each ladder horizon ``H`` (1, 2, 4, … 128 bars): OLS of
   ``y = ln max(mean r² of the next H bars / L, 1e-6)`` on ``[1, ln max(c_k/L, floor), ln s̄_H]``;
   ``smear`` = mean ``exp(residual)``, ``q10``/``q90`` = the residuals' quantiles (pooled over
   every family; the flow uses the per-family table of step 4).
4. Interval (split-conformal): per family of bar length (each candle interval; the tick
   capture's 1 s bars) and horizon ``H`` of `INTERVAL_BARS`, the 10th/90th percentiles of
   ``ln(RV_H / (H·m̂_H))`` over the family's fitting rows, ``m̂_H`` the forecast with the ladder
   entry the flow uses for ``H``. Candles: the rows of step 3. Tick capture (``--tick``): replayed
   through the flow with the fitted table, the envelopes' own forecast at their horizon against
   the realised variance on the evaluation's price grid, rows whose forward window ends within
   the first 60 % of the capture (`tools.evaluate.series.TICK_SPLIT_SHARE`).
6. Adaptive conformal step ``γ`` (`operators.interval`; a rule fixed before any out-of-sample
   figure was looked at): `ACI_RULE`. The levels run over each candle series' fitting rows as
   the flow runs them (`operators.interval.step`, `operators.forecast.shifted`), from a band
   fitted on the first half of those rows, and are scored on the second half: scored on the
   rows the band was fitted on, the fitted quantiles are optimal by construction and no step
   can win (that in-sample version of the rule chose γ = 0).
5. Risk-flag exit (a rule fixed before any out-of-sample figure was looked at): among
   `EXIT_GRID`, the exit that maximises the mean over candle series of the hysteresis flag's
   AUC minus the one-line rule's AUC at the same flag rate (AUC against "forward realised vol
   over the next hour of bars in its top decile", `tools.evaluate.vol_eval`), on the fitting rows
   only; the flag simulated here is ``ρ ≥ enter``, or ``ρ ≥ exit`` while flagged; ties go to the
   higher exit (less hysteresis).

One program past ~400 lines: the model, interval and exit-rule fits run on the same rows before
the split and write one versioned table; they read best in the order they run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from flows.startup import check_output_path
from operators.forecast import (
    ACI_TARGET,
    MODEL_FORMAT,
    MS_DAY,
    MS_HOUR,
    RISK_MIN_RETURNS,
    VolModel,
    VolState,
    flag_bars,
    parse,
    shifted,
)
from operators.interval import step
from tools.evaluate.series import (
    CANDLE_SPLIT_MS,
    F64,
    TICK_SPLIT_SHARE,
    CandleSeries,
    read_candles,
)
from tools.evaluate.vol_eval import fwd_sum, one_line_rule, score_flag

LADDER: Final = (1, 2, 4, 8, 16, 32, 64, 128)
HALF_LIVES: Final = (1.0, 3.0, 10.0, 30.0)
LONG_HALF_LIFE_MS: Final = 30 * MS_DAY
LONG_MIN_BARS: Final = 300.0
FLOOR: Final = 1e-3
Y_FLOOR: Final = 1e-6
SKIP_BARS: Final = 300
"""Rows of a series' first bars are not fitted (its norm is still settling)."""
FLAG_ENTER: Final = 1.0
"""Risk flag: enter when the next hour's forecast vol reaches the coin's norm (ρ ≥ 1.0; in the
training data of the 5m and 1h candles about the top 20 % of bars)."""
EXIT_GRID: Final = (0.70, 0.75, 0.80, 0.85, 0.90, 0.95, 1.00)
"""Candidate exits of the risk flag (step 5 chooses one on the fitting rows)."""
INTERVAL_BARS: Final = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
"""Horizons (bars) of the interval table of each candle family."""
INTERVAL_MIN_ROWS: Final = 200
"""A family × horizon with fewer fitting rows gets no interval entry."""
ACI_GAMMA_GRID: Final = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
"""Candidate steps of the adaptive conformal levels (step 6 chooses one on the fitting rows)."""
ACI_RULE: Final = (
    "gamma in 0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05 minimising the mean over candle series "
    "and interval horizons H (each series x H weighted equally) of the mean pinball loss "
    "(levels 0.1 and 0.9) of the adapted log bounds against ln(RV_H / (H m_H)), pseudo out of "
    "sample inside the fitting rows: the band refitted on the first half of each series' "
    "fitting rows, the loss on the second half, the levels run from the first fitting row, a "
    "row's miss entering them H bars later; ties (to 1e-6) to the smaller gamma"
)


def season_profile(series: Sequence[CandleSeries]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """``(2, 24)`` seasonal factors from the training rows of ``series``."""
    acc = np.zeros((2, 24))
    for s in series:
        r2 = s.returns**2
        keep = s.open_ms < CANDLE_SPLIT_MS
        keep[0] = False
        day = s.open_ms // MS_DAY
        weekend = ((day + 3) % 7 >= 5).astype(int)
        hour = (s.open_ms // MS_HOUR) % 24
        base = r2[keep].mean()
        for w in (0, 1):
            for h in range(24):
                m = keep & (weekend == w) & (hour == h)
                acc[w, h] += (r2[m].mean() if m.any() else base) / base
    acc /= len(series)
    scale = (5 * acc[0].mean() + 2 * acc[1].mean()) / 7
    out: np.ndarray[Any, np.dtype[np.float64]] = acc / scale
    return out


def components(
    model: VolModel, s: CandleSeries
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], F64]:
    """``(c, L)`` after each bar: ``c`` shape ``(n, K)`` (NaN before the state forecasts)."""
    st = VolState(model)
    k = len(model.half_lives_bars)
    comps = np.full((len(s.close), k), np.nan)
    norm = np.full(len(s.close), np.nan)
    r = s.returns
    for i in range(1, len(r)):
        open_ms = int(s.open_ms[i])
        snap = st.update(float(r[i]), open_ms, open_ms + s.bar_ms)
        if snap is not None:
            comps[i] = snap.comps
            norm[i] = snap.norm
    return comps, norm


def _season_ahead(model: VolModel, s: CandleSeries, h: int) -> F64:
    return np.array(
        [model.season_ahead(int(t) + s.bar_ms, h, s.bar_ms) for t in s.open_ms], dtype=float
    )


def design(
    model: VolModel,
    s: CandleSeries,
    comps: np.ndarray[Any, np.dtype[np.float64]],
    norm: F64,
    h: int,
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], F64, F64]:
    """``(X, y, end_ms)`` of every row (NaN where undefined); ``end_ms``: forward window end."""
    n = len(s.close)
    r2 = s.returns**2
    c = np.concatenate([[0.0], np.cumsum(r2)])
    fwd = np.full(n, np.nan)
    idx = np.arange(n - h)
    fwd[: n - h] = (c[idx + h + 1] - c[idx + 1]) / h
    ratio = np.log(np.maximum(comps / norm[:, None], FLOOR))
    x = np.column_stack([np.ones(n), ratio, np.log(_season_ahead(model, s, h))])
    y = np.log(np.maximum(fwd / norm, Y_FLOOR))
    end = np.full(n, np.inf)
    end[: n - h] = s.open_ms[h:] + s.bar_ms
    return x, y, end


def provisional(season: np.ndarray[Any, np.dtype[np.float64]]) -> VolModel:
    """A model with the season and state settings but no ladder yet (for the recursion)."""
    return parse(
        {
            "format": MODEL_FORMAT,
            "version": "provisional",
            "season": {"weekday": season[0].tolist(), "weekend": season[1].tolist()},
            "half_lives_bars": list(HALF_LIVES),
            "long_half_life_ms": LONG_HALF_LIFE_MS,
            "long_min_bars": LONG_MIN_BARS,
            "floor": FLOOR,
            "flag": {"enter": FLAG_ENTER, "exit": FLAG_ENTER},
            "intervals": {"1": {"1": {"q10": -1.0, "q90": 1.0, "n": 0}}},
            "ladder": {
                "1": {
                    "coef": [0.0] * (len(HALF_LIVES) + 2),
                    "smear": 1,
                    "q10": -1,
                    "q90": 1,
                    "n": 0,
                }
            },
        }
    )


def conformal_band(res: F64) -> tuple[float, float]:
    """Split-conformal 10 %/90 % bounds of the finite values of ``res``: the ``⌊(n+1)/10⌋``-th
    and ``⌈9(n+1)/10⌉``-th smallest (within the sample), so that a new exchangeable value falls
    below the first, or above the second, with probability about 10 % each."""
    v = np.sort(res[np.isfinite(res)])
    n = len(v)
    if n == 0:
        msg = "no residual to take quantiles of"
        raise ValueError(msg)
    lo = max(1, (n + 1) // 10)
    hi = min(n, -(-9 * (n + 1) // 10))
    return float(v[lo - 1]), float(v[hi - 1])


def log_forecast(
    model: VolModel,
    s: CandleSeries,
    comps: np.ndarray[Any, np.dtype[np.float64]],
    norm: F64,
    h: int,
) -> tuple[F64, F64, F64]:
    """``(ln(m̂_h/L), y, end_ms)`` per row with the ladder entry the flow uses for ``h`` (capped
    at 50 as `operators.forecast.mean_var` does); ``y`` and ``end_ms`` as in `design`."""
    x, y, end = design(model, s, comps, norm, h)
    z: F64 = np.minimum(x @ np.asarray(model.fit_for(h).coef), 50.0)
    return z, y, end


def candle_residuals(
    model: VolModel,
    s: CandleSeries,
    comps: np.ndarray[Any, np.dtype[np.float64]],
    norm: F64,
    h: int,
) -> F64:
    """``ln(RV_h / (h·m̂_h))`` on the series' fitting rows."""
    z, y, end = log_forecast(model, s, comps, norm, h)
    res: F64 = y - z
    ok = (end <= CANDLE_SPLIT_MS) & np.isfinite(res)
    ok[:SKIP_BARS] = False
    out: F64 = res[ok]
    return out


def hysteresis(rho: F64, enter: float, leave: float) -> npt.NDArray[np.bool_]:
    """The flag ``ρ ≥ enter``, or ``ρ ≥ leave`` while flagged (off where ρ is undefined)."""
    out = np.zeros(len(rho), dtype=bool)
    on = False
    for i, v in enumerate(rho.tolist()):
        on = math.isfinite(v) and v >= (leave if on else enter)
        out[i] = on
    return out


def choose_exit(
    model: VolModel, states: Sequence[tuple[CandleSeries, Any, F64]]
) -> tuple[float, dict[str, float]]:
    """Step 5: the exit of `EXIT_GRID` with the best mean in-sample AUC margin over the rule."""
    per = []
    for s, comps, norm in states:
        fb = flag_bars(s.bar_ms, model)
        z, _, _ = log_forecast(model, s, comps, norm, fb)
        rho: F64 = np.round(np.sqrt(np.exp(z)), 4).astype(np.float64)
        rho[np.arange(len(rho)) < max(RISK_MIN_RETURNS, MS_DAY // s.bar_ms)] = np.nan
        r = s.returns
        mask = np.isfinite(rho) & (s.open_ms + (fb + 1) * s.bar_ms <= CANDLE_SPLIT_MS)
        mask[:SKIP_BARS] = False
        per.append((rho, np.sqrt(fwd_sum(r * r, fb)), one_line_rule(r, s.bar_ms), mask))
    scores: dict[str, float] = {}
    for leave in EXIT_GRID:
        margins = []
        for rho, fwd, rule, mask in per:
            flag = hysteresis(rho, FLAG_ENTER, leave)
            f = score_flag(flag, flag.astype(float), rule, fwd, mask, None)
            margins.append(f.auc - f.rule_auc)
        scores[f"{leave:.2f}"] = round(float(np.mean(margins)), 5)
    best = max(EXIT_GRID, key=lambda e: (scores[f"{e:.2f}"], e))
    return best, scores


def aci_loss(res: F64, h: int, band: tuple[float, float], gamma: float, start: int) -> float:
    """Mean pinball loss (levels 0.1 and 0.9) of the bounds adapted with step ``gamma`` over
    the rows of ``res`` from index ``start`` on; the levels run over every row in time order
    (NaN: not a fitting row) from the fitted ``band``, row ``i``'s miss entering them at row
    ``i + h``, when its forward window has closed."""
    rows = np.flatnonzero(np.isfinite(res)).tolist()
    vals = res.tolist()
    q10, q90 = band
    levels = (ACI_TARGET, ACI_TARGET)
    waiting: list[tuple[int, float, float]] = []
    head = 0
    total = 0.0
    n = 0
    for t in rows:
        while head < len(waiting) and waiting[head][0] + h <= t:
            j, lo, hi = waiting[head]
            head += 1
            levels = (step(levels[0], gamma, vals[j] < lo), step(levels[1], gamma, vals[j] > hi))
        lo, hi = shifted(q10, q90, levels) if gamma > 0 else (q10, q90)
        if t >= start:
            e = vals[t]
            total += (ACI_TARGET - (e < lo)) * (e - lo) + (1 - ACI_TARGET - (e < hi)) * (e - hi)
            n += 1
        waiting.append((t, lo, hi))
    return total / max(1, n)


def choose_gamma(
    model: VolModel, states: Sequence[tuple[CandleSeries, Any, F64]]
) -> tuple[float, dict[str, float]]:
    """Step 6: the step of `ACI_GAMMA_GRID` with the lowest mean pseudo-out-of-sample pinball
    loss inside the fitting rows: per family and horizon the split-conformal band refitted on
    the first half of each series' fitting rows, the loss taken on the second half."""
    cases: list[tuple[F64, int, tuple[float, float], int]] = []
    for bar_ms in sorted({st[0].bar_ms for st in states}):
        for h in INTERVAL_BARS:
            fam: list[tuple[F64, int]] = []
            for s, comps, norm in (st for st in states if st[0].bar_ms == bar_ms):
                z, y, end = log_forecast(model, s, comps, norm, h)
                res: F64 = y - z
                res[~((end <= CANDLE_SPLIT_MS) & np.isfinite(res))] = np.nan
                res[:SKIP_BARS] = np.nan
                rows = np.flatnonzero(np.isfinite(res))
                if rows.size >= 2 * INTERVAL_MIN_ROWS:
                    fam.append((res, int(rows[rows.size // 2])))
            if fam:
                band = conformal_band(np.concatenate([r[:st] for r, st in fam]))
                cases.extend((r, h, band, st) for r, st in fam)
    scores = {
        f"{g:g}": round(float(np.mean([aci_loss(r, h, b, g, st) for r, h, b, st in cases])), 6)
        for g in ACI_GAMMA_GRID
    }
    best = min(ACI_GAMMA_GRID, key=lambda g: (scores[f"{g:g}"], g))
    return best, scores


@contextmanager
def serving(model: VolModel) -> Iterator[None]:
    """The flow replays with ``model`` instead of the committed table (for the tick fit)."""
    import operators.edge
    import operators.regime

    old = (operators.regime.VOL_MODEL, getattr(operators.edge, "VOL_MODEL"))  # noqa: B009
    setattr(operators.regime, "VOL_MODEL", model)  # noqa: B010 (a Final module constant)
    setattr(operators.edge, "VOL_MODEL", model)  # noqa: B010
    try:
        yield
    finally:
        setattr(operators.regime, "VOL_MODEL", old[0])  # noqa: B010
        setattr(operators.edge, "VOL_MODEL", old[1])  # noqa: B010


def tick_residuals(path: Path, model: VolModel) -> tuple[int, int, F64]:
    """``(bar_ms, H, residuals)`` of a tick capture's fitting rows (its first 60 %): the
    envelopes' own forecast at their horizon against the evaluation's realised variance."""
    from tools.evaluate import science
    from tools.evaluate.analysis import analyse
    from tools.evaluate.datasets import plan_datasets, scan_file
    from tools.evaluate.replay import Progress, replay_dataset

    scan = scan_file(path)
    specs = [sp for sp in plan_datasets([scan]) if sp.kind == "tick"]
    if not specs:
        msg = f"{path}: not a tick capture"
        raise ValueError(msg)
    spec = specs[0]
    with serving(model):
        envs, frames, _, _ = replay_dataset(spec, (), Progress(False), "")
    res = analyse(spec, [scan], envs, split=TICK_SPLIT_SHARE, n_boot=10, seed=0, frames=frames)
    ex = science.extract(envs)
    bar = spec.bar_ms
    out: list[F64] = []
    hb = 0
    for coin in sorted(set(res.rows.coin)):
        g = science.coin_grid(res, coin)
        fr = science.forecast_rows(res, ex, g) if g is not None else None
        if g is None or fr is None:
            continue
        hb = fr.bars
        hm = fr.var / model.fit_for(hb).smear  # H·m̂ (vol_bps carries the smearing factor)
        ok = fr.sel & g.have & (g.tgrid + (hb + 1) * bar <= res.split_ms)
        ok &= np.isfinite(hm) & (hm > 0) & np.isfinite(fr.rv)
        out.append(np.log(np.maximum(fr.rv[ok] / hm[ok], Y_FLOOR)))
    if not out:
        msg = f"{path}: no forecast in the fitting part"
        raise ValueError(msg)
    return bar, hb, np.concatenate(out)


def _entry(res: F64) -> dict[str, Any]:
    q10, q90 = conformal_band(res)
    return {"q10": round(q10, 6), "q90": round(q90, 6), "n": int(np.isfinite(res).sum())}


def fit(files: Sequence[Path], tick: Sequence[Path] = ()) -> dict[str, Any]:
    """The model document fitted on the training rows of every candle series in ``files`` (and
    the interval of the 1 s family on the first 60 % of each capture in ``tick``)."""
    series = [s for f in files for s in read_candles(f).values()]
    if not series:
        msg = "no candle series in the files given"
        raise ValueError(msg)
    season = season_profile(series)
    model = provisional(season)
    states = [(s, *components(model, s)) for s in series]
    ladder: dict[str, Any] = {}
    flagged = total = 0
    for h in LADDER:
        xs, ys = [], []
        for s, comps, norm in states:
            x, y, end = design(model, s, comps, norm, h)
            ok = (end <= CANDLE_SPLIT_MS) & np.isfinite(y) & np.all(np.isfinite(x), axis=1)
            ok[:SKIP_BARS] = False
            xs.append(x[ok])
            ys.append(y[ok])
        x_all = np.vstack(xs)
        y_all = np.concatenate(ys)
        beta, *_ = np.linalg.lstsq(x_all, y_all, rcond=None)
        res = y_all - x_all @ beta
        ladder[str(h)] = {
            "coef": [round(float(b), 6) for b in beta],
            "smear": round(float(np.mean(np.exp(res))), 6),
            "q10": round(float(np.quantile(res, 0.1)), 6),
            "q90": round(float(np.quantile(res, 0.9)), 6),
            "n": len(y_all),
        }
    doc: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "version": "",
        "fitted_on": {
            "files": sorted({s.path.name for s in series}),
            "series": len(series),
            "rows_before_utc": "2025-06-01T00:00:00Z",
            "rule": "rows whose forward window ends before the split; first 300 bars skipped",
            "tick_files": sorted(p.name for p in tick),
            "tick_rule": "rows whose forward window ends in the capture's first 60 %",
        },
        "season": {
            "weekday": [round(float(v), 6) for v in season[0]],
            "weekend": [round(float(v), 6) for v in season[1]],
        },
        "half_lives_bars": list(HALF_LIVES),
        "long_half_life_ms": LONG_HALF_LIFE_MS,
        "long_min_bars": LONG_MIN_BARS,
        "floor": FLOOR,
        "flag": {"enter": FLAG_ENTER, "exit": FLAG_ENTER},
        "ladder": ladder,
        "intervals": {"1": {"1": {"q10": -1.0, "q90": 1.0, "n": 0}}},
    }
    fitted = parse({**doc, "version": "tmp"})
    # 4. the interval per family and horizon
    intervals: dict[str, dict[str, Any]] = {}
    for bar_ms in sorted({s.bar_ms for s in series}):
        fam = [st for st in states if st[0].bar_ms == bar_ms]
        for h in INTERVAL_BARS:
            res = np.concatenate([candle_residuals(fitted, *st, h) for st in fam])
            if res.size >= INTERVAL_MIN_ROWS:
                intervals.setdefault(str(bar_ms), {})[str(h)] = _entry(res)
    for path in tick:
        bar_ms, h, res = tick_residuals(
            path, parse({**doc, "intervals": intervals, "version": "t"})
        )
        if res.size >= INTERVAL_MIN_ROWS:
            intervals.setdefault(str(bar_ms), {})[str(h)] = _entry(res)
    doc["intervals"] = intervals
    # 5. the risk flag's exit
    leave, scores = choose_exit(fitted, states)
    doc["flag"]["exit"] = leave
    doc["fitted_on"]["flag_exit_rule"] = (
        "exit in 0.70..1.00 (step 0.05) maximising the mean over candle series of the "
        "hysteresis flag's AUC minus the one-line rule's AUC at the same rate, fitting rows "
        "only; ties to the higher exit"
    )
    doc["fitted_on"]["flag_exit_auc_margin"] = scores
    # 6. the adaptive conformal step
    gamma, losses = choose_gamma(parse({**doc, "version": "tmp"}), states)
    doc["aci"] = {"gamma": gamma, "target": ACI_TARGET, "rule": ACI_RULE, "pinball": losses}
    # the training share of bars the flag's enter threshold selects (a documented figure)
    fitted = parse({**doc, "version": "tmp"})
    from operators.forecast import VolSnapshot, risk_ratio

    for s, comps, norm in states:
        keep = (s.open_ms < CANDLE_SPLIT_MS) & np.isfinite(norm)
        keep[:SKIP_BARS] = False
        for i in np.flatnonzero(keep)[::7]:
            snap = VolSnapshot(
                tuple(float(v) for v in comps[i]),
                float(norm[i]),
                int(s.open_ms[i]) + s.bar_ms,
                s.bar_ms,
                i,
            )
            rho = risk_ratio(fitted, snap)
            flagged += rho is not None and rho >= FLAG_ENTER
            total += 1
    doc["fitted_on"]["train_flag_share"] = round(flagged / max(1, total), 4)
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:10]
    doc["version"] = f"volhexp-{digest}-20250601"
    return doc


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m tools.evaluate.vol_fit", description=__doc__)
    ap.add_argument("files", nargs="+", type=Path, help="candle capture files")
    ap.add_argument(
        "--tick",
        type=Path,
        action="append",
        default=[],
        help="a tick capture whose first 60 %% fits the 1 s family's interval (repeatable)",
    )
    ap.add_argument("--out", type=Path, required=True, help="where to write the model table")
    ns = ap.parse_args(argv)
    try:  # one line, never a traceback; --out checked before the fit
        check_output_path(ns.out, "--out")
        doc = fit(ns.files, ns.tick)
    except (ValueError, OSError) as ex:
        print(f"vol_fit: {ex}", file=sys.stderr)
        return 2
    ns.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    share = doc["fitted_on"]["train_flag_share"]
    print(f"wrote {ns.out} ({doc['version']}); training flag share {share}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
