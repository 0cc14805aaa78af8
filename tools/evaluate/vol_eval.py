"""Score volatility forecasts and risk flags out of sample (field-anchors §D.5).

Per coin, on a regular series of bar returns ``r`` with a forecast at each bar close:

- target ``RV_t(H) = Σ_{k=1..H} r²_{t+k}`` (realised variance of the next ``H`` bars);
- baselines, each a forecast of ``RV_t(H)`` made at ``t``:
  trailing realised variance ``Σ_{k=0..H-1} r²_{t−k}`` (the no-change forecast);
  EWMA ``H·σ̂²_t``, ``σ̂²_t = λ σ̂²_{t−1} + (1 − λ) r²_t`` with ``λ = 0.94^(bar/1 day)`` (the
  RiskMetrics half-life kept in time);
  HAR-RV (Corsi 2009) ``RV_t(H) = β0 + β_d RV^d_t + β_w RV^w_t + β_m RV^m_t``, the three terms the
  mean per-bar ``r²`` over 1 h, 6 h and 24 h of bars (at least 1, 6 and 24 bars) scaled to ``H``
  bars, OLS per coin on its in-sample rows (a negative fit is floored at 1 % of the trailing
  mean);
- losses (Patton 2011): QLIKE ``RV/σ̂² − ln(RV/σ̂²) − 1`` and MSE ``(RV − σ̂²)²``; a row with
  ``RV = 0`` (no move at all) is left out of QLIKE;
- Diebold–Mariano: ``d_t = L_model − L_base``; ``DM = mean(d) / √(HAC var / n)`` with a
  Newey–West (Bartlett) variance of lag ``H``; two-sided normal p-value;
- interval coverage: the share of ``√RV`` inside ``[p10, p90]`` (aim 0.8), and the interval's
  mean width ``ln(p90 / p10)``.

Risk flags: forward realised volatility ``√RV(F)`` over the next ``F`` bars (one hour, at least
6), flagged / unflagged mean, and the flag's AUC against "``√RV(F)`` in its top decile" (for a
0/1 flag, ``(1 + TPR − FPR)/2``); the one-line rule ``RV_1h / median(RV_1h over 24·F bars)`` is
thresholded at the same flag rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

MS_HOUR: Final = 3_600_000
MS_DAY: Final = 86_400_000


def hour_bars(bar_ms: int) -> int:
    """One hour of bars, at least 6 (the one-line rule's short window and the flag horizon)."""
    return max(6, -(-MS_HOUR // bar_ms))


def roll_sum(x: F64, n: int) -> F64:
    """Sum of the last ``n`` values at each index (NaN before ``n`` values)."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    out = np.full(len(x), np.nan)
    if len(x) >= n:
        out[n - 1 :] = c[n:] - c[:-n]
    return out


def fwd_sum(x: F64, n: int) -> F64:
    """Sum of the next ``n`` values after each index (NaN where they run past the end)."""
    c = np.concatenate([[0.0], np.cumsum(x)])
    out = np.full(len(x), np.nan)
    m = len(x) - n
    if m > 0:
        idx = np.arange(m)
        out[:m] = c[idx + n + 1] - c[idx + 1]
    return out


def roll_median(x: F64, n: int) -> F64:
    """Median of the last ``n`` values (NaN before ``n``; NaN inputs are skipped)."""
    from numpy.lib.stride_tricks import sliding_window_view

    out = np.full(len(x), np.nan)
    if len(x) >= n:
        out[n - 1 :] = np.nanmedian(sliding_window_view(x, n), axis=1)
    return out


def one_line_rule(r: F64, bar_ms: int) -> F64:
    """``RV_1h / median(RV_1h over the last 24 h)``: 12/288 bars on 5m, 6/144 on 1h candles
    (in general one hour of bars, at least 6, and 24 times that)."""
    ns = hour_bars(bar_ms)
    rv = np.sqrt(roll_sum(r * r, ns))
    med = roll_median(rv, 24 * ns)
    with np.errstate(divide="ignore", invalid="ignore"):
        out: F64 = rv / med
    return out


def ewma_var(r: F64, bar_ms: int) -> F64:
    """RiskMetrics EWMA of ``r²`` per bar, ``λ = 0.94^(bar/1 day)`` (bias-corrected start)."""
    lam = 0.94 ** (bar_ms / MS_DAY)
    out = np.empty(len(r))
    s = w = 0.0
    for i, v in enumerate(r * r):
        s = lam * s + (1 - lam) * v
        w = lam * w + (1 - lam)
        out[i] = s / w
    return out


def har_terms(r: F64, bar_ms: int) -> F64:
    """HAR regressors: mean ``r²`` per bar over 1 h, 6 h, 24 h of bars (≥ 1, 6, 24 bars)."""
    r2 = r * r
    cols = []
    for span, least in ((MS_HOUR, 1), (6 * MS_HOUR, 6), (MS_DAY, 24)):
        n = max(least, -(-span // bar_ms))
        cols.append(roll_sum(r2, n) / n)
    return np.column_stack(cols)


def har_forecast(r: F64, bar_ms: int, h: int, train: Bool) -> F64:
    """HAR-RV forecast of ``RV(h)``, OLS on the rows of ``train`` (whose target is known)."""
    x = har_terms(r, bar_ms)
    y = fwd_sum(r * r, h)
    a = np.column_stack([np.ones(len(r)), x * h])
    ok = train & np.isfinite(y) & np.all(np.isfinite(a), axis=1)
    if ok.sum() < 10:
        return np.full(len(r), np.nan)
    beta, *_ = np.linalg.lstsq(a[ok], y[ok], rcond=None)
    pred: F64 = a @ beta
    floor = 0.01 * h * float(np.nanmean(r[ok] ** 2))
    out: F64 = np.maximum(pred, floor)
    return out


def qlike(rv: F64, f: F64) -> F64:
    """QLIKE per row (NaN where ``rv`` is 0 or either is missing)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        q = rv / f
        out: F64 = q - np.log(q) - 1.0
    out[~(rv > 0) | ~(f > 0)] = np.nan
    return out


def dm_test(d: F64, lag: int) -> tuple[float, float]:
    """Diebold–Mariano statistic and two-sided p-value of mean(d) = 0 (Newey–West, ``lag``)."""
    d = d[np.isfinite(d)]
    n = len(d)
    if n < 10:
        return math.nan, math.nan
    e = d - d.mean()
    var = float(e @ e) / n
    for k in range(1, min(lag, n - 1) + 1):
        var += 2 * (1 - k / (lag + 1)) * float(e[k:] @ e[:-k]) / n
    if var <= 0:
        return math.nan, math.nan
    stat = float(d.mean()) / math.sqrt(var / n)
    p = math.erfc(abs(stat) / math.sqrt(2))
    return stat, p


@dataclass(frozen=True)
class ForecastScore:
    """Out-of-sample scores of the model and baselines on one coin (or pooled)."""

    n: int
    qlike: dict[str, float]
    mse: dict[str, float]
    dm_vs: dict[str, tuple[float, float]]
    """Per baseline: (DM statistic on QLIKE, p); negative = the model's loss is lower."""
    coverage: float
    mz: tuple[float, float]
    """Mincer–Zarnowitz ``RV = a + b σ̂²``: (a / mean RV, b)."""
    width: float = math.nan
    """Mean ``ln(p90 / p10)`` of the interval (its width in log volatility)."""


def score_forecasts(
    rv: F64, forecasts: dict[str, F64], p10: F64, p90: F64, oos: Bool, h: int
) -> ForecastScore:
    """Scores over the rows of ``oos`` where every forecast and ``rv`` are defined."""
    ok = oos & np.isfinite(rv)
    for f in forecasts.values():
        ok &= np.isfinite(f) & (f > 0)
    losses = {k: qlike(rv[ok], f[ok]) for k, f in forecasts.items()}
    q = {k: float(np.nanmean(v)) for k, v in losses.items()}
    mse = {k: float(np.mean((rv[ok] - f[ok]) ** 2)) for k, f in forecasts.items()}
    dm = {k: dm_test(losses["model"] - losses[k], h) for k in forecasts if k != "model"}
    vol = np.sqrt(rv[ok])
    inside = (vol >= p10[ok]) & (vol <= p90[ok])
    cov = float(inside.mean()) if inside.size else math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        logw = np.log(p90[ok] / p10[ok])
    width = float(np.mean(logw)) if logw.size else math.nan
    fm = forecasts["model"][ok]
    if ok.sum() > 10 and np.ptp(fm) > 0:
        b, a = np.polyfit(fm, rv[ok], 1)
        mz = (float(a / np.mean(rv[ok])), float(b))
    else:
        mz = (math.nan, math.nan)
    return ForecastScore(int(ok.sum()), q, mse, dm, cov, mz, width)


@dataclass(frozen=True)
class FlagScore:
    """A 0/1 risk flag against forward volatility, beside the one-line rule at the same rate."""

    rate: float
    ratio: float
    auc: float
    rule_ratio: float
    rule_auc: float
    n: int


def _flag_stats(flag: Bool, fwd: F64, top: Bool) -> tuple[float, float]:
    if flag.all() or not flag.any():
        return math.nan, 0.5
    ratio = float(fwd[flag].mean() / fwd[~flag].mean())
    tpr = (flag & top).sum() / max(1, top.sum())
    fpr = (flag & ~top).sum() / max(1, (~top).sum())
    return ratio, float(0.5 * (1 + tpr - fpr))


def score_flag(
    flag: Bool | None, score: F64, rule: F64, fwd: F64, mask: Bool, rate: float | None
) -> FlagScore:
    """Compare a flag (or ``score`` cut at ``rate``) with the rule cut at the same rate."""
    ok = mask & np.isfinite(fwd) & np.isfinite(rule) & np.isfinite(score)
    f = fwd[ok]
    top = f >= np.quantile(f, 0.9) if f.size else np.zeros(0, bool)
    if rate is None:
        assert flag is not None
        ours = flag[ok]
        q = float(ours.mean()) if ours.size else math.nan
    else:
        q = rate
        s = score[ok]
        ours = s >= np.quantile(s, 1 - q) if s.size else np.zeros(0, bool)
    ru = rule[ok]
    theirs = ru >= np.quantile(ru, 1 - q) if ru.size and 0 < q < 1 else np.zeros(ru.size, bool)
    a, b = _flag_stats(ours, f, top)
    c, d = _flag_stats(theirs, f, top)
    return FlagScore(q, a, b, c, d, int(ok.sum()))
