"""Fit the volatility model table (`operators.forecast`) on candle data before the split date.

    python -m tools.evaluate.vol_fit FILE... --out operators/vol_model.json

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
   ``smear`` = mean ``exp(residual)``, ``q10``/``q90`` = the residuals' quantiles.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from operators.forecast import MODEL_FORMAT, MS_DAY, MS_HOUR, VolModel, VolState, parse
from tools.evaluate.series import CANDLE_SPLIT_MS, F64, CandleSeries, read_candles

LADDER: Final = (1, 2, 4, 8, 16, 32, 64, 128)
HALF_LIVES: Final = (1.0, 3.0, 10.0, 30.0)
LONG_HALF_LIFE_MS: Final = 30 * MS_DAY
LONG_MIN_BARS: Final = 300.0
FLOOR: Final = 1e-3
Y_FLOOR: Final = 1e-6
SKIP_BARS: Final = 300
"""Rows of a series' first bars are not fitted (its norm is still settling)."""
FLAG_ENTER: Final = 1.0
FLAG_EXIT: Final = 0.95
"""Risk flag: enter when the next hour's forecast vol reaches the coin's norm (ρ ≥ 1.0; in the
training data of the 5m and 1h candles about the top 20 % of bars), leave below 0.95."""


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
            "flag": {"enter": FLAG_ENTER, "exit": FLAG_EXIT},
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


def fit(files: Sequence[Path]) -> dict[str, Any]:
    """The model document fitted on the training rows of every candle series in ``files``."""
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
        },
        "season": {
            "weekday": [round(float(v), 6) for v in season[0]],
            "weekend": [round(float(v), 6) for v in season[1]],
        },
        "half_lives_bars": list(HALF_LIVES),
        "long_half_life_ms": LONG_HALF_LIFE_MS,
        "long_min_bars": LONG_MIN_BARS,
        "floor": FLOOR,
        "flag": {"enter": FLAG_ENTER, "exit": FLAG_EXIT},
        "ladder": ladder,
    }
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
    ap.add_argument("--out", type=Path, required=True, help="where to write the model table")
    ns = ap.parse_args(argv)
    doc = fit(ns.files)
    ns.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    share = doc["fitted_on"]["train_flag_share"]
    print(f"wrote {ns.out} ({doc['version']}); training flag share {share}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
