"""The report's PNG charts. matplotlib is imported only when a chart is drawn (the ``eval``
extra: ``pip install -e '.[eval]'``), so everything else runs without it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from tools.evaluate.results import LABELS, PART_NAMES, DatasetResult
from tools.evaluate.stats import F64, Interval
from tools.evaluate.text import fmt_duration, fmt_dwell, fmt_pct, iso_utc

LABEL_COLORS: Final = {
    "TRENDING": "#2b8cbe",
    "MEAN_REVERTING": "#41ab5d",
    "LIQUIDATION_RISK": "#e31a1c",
    "CHAOTIC": "#fd8d3c",
    "UNKNOWN": "#bdbdbd",
}


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
                f"{fmt_pct(r.share, 0 if r.share >= 0.01 else 1)} of bars\n"
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
