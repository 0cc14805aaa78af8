"""The risk flag's expansion trigger: crash-window capture against forward-volatility separation.

    python -m tools.evaluate.flag_tradeoff CANDLE_FILE... [--grid 2,2.5,3,4,inf]
        [--stay 1.5,2,2.5,3] [--boot 500] [--also-bar-ms 900000]
        [--write-evidence operators/flag_evidence.json]

The risk flag (DESIGN.md §5) is raised by the volatility forecast, ``ρ ≥ 1``, or by a
volatility that has multiplied, ``vol_expansion_ratio ≥ flag_ver`` (3 as shipped). On hourly
candles the 2025-04-06/07 crash is flagged less than on 5-minute candles (1h SOL 63.9 %), and
``flag_ver`` is the one threshold that moves that figure. This program shows what moving it
would cost: each candle file is replayed once through the production flow at the evaluation's
settings (`tools.evaluate.datasets`), and the flag ``ρ ≥ 1 or VER ≥ v`` is recomputed from the
envelopes' ``risk_ratio`` and ``vol_expansion_ratio`` for each ``v`` of the grid. Per series it
prints the out-of-sample flag rate, the AUC margin over the one-line rule at the same rate (AUC
against "forward realised vol over the next hour of bars in its top decile"; in-sample: forward
window before the split, as `tools.evaluate.vol_fit` step 5; out-of-sample: bars closing after
it), whether the flag beats the rule out of sample (the report's test: separation ratio and AUC
at least the rule's) and the crash-window capture.

A second table scores a *stay band* for the expansion at the shipped ``flag_ver``: once
flagged, the bar stays flagged while ``VER ≥ stay`` (the hysteresis the regime rules use
elsewhere; ``stay = flag_ver`` is no band, as shipped). Each row's out-of-sample margin carries a
95 % block-bootstrap interval (whole UTC days resampled with replacement, ``--boot`` replicates,
fixed seed): an hourly series has about 56 out-of-sample days, so its margin is a noisy figure.

``--write-evidence PATH`` writes the verdict per bar length that every envelope carries as
``regime.flag_evidence`` (`operators.flag_evidence`), from the *published* flag (the labels, with
their holds): ``demonstrated`` when on every coin of that bar length the out-of-sample margin's
95 % interval lies above 0 and the flag beats the rule (ratio and AUC), else
``not_demonstrated``.

The recomputed flag leaves out the classifier's hold of LIQUIDATION_RISK (6 bars); the program
prints how often it agrees with the published labels at the shipped ``flag_ver``.
Nothing here is fitted or chosen: the shipped thresholds stay what DESIGN.md says.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from operators.flag_evidence import TABLE_FORMAT as EVIDENCE_FORMAT
from operators.flag_evidence import FlagEvidence, parse
from operators.regime import RegimeConfig
from tools.evaluate.datasets import expand_paths, plan_datasets, scan_file
from tools.evaluate.replay import Progress, replay_dataset
from tools.evaluate.science import RISKY, beats_rule
from tools.evaluate.series import CANDLE_SPLIT_MS, CRASH_WINDOW_MS, CandleSeries, read_candles
from tools.evaluate.text import fmt_duration
from tools.evaluate.vol_eval import (
    MS_DAY,
    FlagScore,
    fwd_sum,
    hour_bars,
    one_line_rule,
    score_flag,
)

F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

DEFAULT_GRID = (2.0, 2.5, 3.0, 4.0, math.inf)
"""Candidate ``flag_ver`` values (``inf``: no expansion trigger, the forecast alone)."""
DEFAULT_STAYS = (1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0)
"""Candidate stay levels of the expansion at the shipped ``flag_ver`` (3: no band)."""
DEFAULT_BOOT = 500
"""Block-bootstrap replicates behind each out-of-sample margin's interval."""
BOOT_SEED = 0


@dataclass(frozen=True)
class SeriesFlags:
    """One coin's candles with the envelopes' risk inputs on the same bars."""

    name: str
    rho: F64
    ver: F64
    published: Bool
    """The published label was LIQUIDATION_RISK or CHAOTIC."""
    fwd: F64
    rule: F64
    ins: Bool
    oos: Bool
    crash: Bool
    day: npt.NDArray[np.int64]
    """The UTC day of each bar's close (the bootstrap's block)."""


@dataclass(frozen=True)
class Row:
    """One series at one ``flag_ver`` (and stay level of the expansion)."""

    name: str
    flag_ver: float
    rate_oos: float
    margin_ins: float
    margin_oos: float
    oos: FlagScore
    crash: float
    stay: float = math.nan
    """The expansion's stay level (NaN: no band, ``flag_ver`` alone)."""
    ci_oos: tuple[float, float] = (math.nan, math.nan)
    """95 % block-bootstrap interval of ``margin_oos`` (NaN when not computed)."""


def flag(rho: F64, ver: F64, flag_ver: float, stay: float | None = None) -> Bool:
    """The risk flag without holds: ``ρ ≥ 1`` or ``VER ≥ flag_ver`` (a NaN input never flags);
    with ``stay``, a flagged bar's successor stays flagged while ``VER ≥ stay``."""
    with np.errstate(invalid="ignore"):
        by_rho = np.isfinite(rho) & (rho >= 1.0)
        out: Bool = by_rho | (np.isfinite(ver) & (ver >= flag_ver))
    if stay is None or stay >= flag_ver:
        return out
    held = np.isfinite(ver) & (ver >= stay)
    on = False
    for i in range(len(out)):
        on = bool(out[i] or (on and held[i]))
        out[i] = on
    return out


def margin_ci(f: Bool, sf: SeriesFlags, n_boot: int, seed: int = BOOT_SEED) -> tuple[float, float]:
    """95 % percentile interval of the out-of-sample AUC margin (flag − rule at the same rate)
    by a block bootstrap over whole UTC days; NaN with fewer than two days or ``n_boot`` 0."""
    idx = np.flatnonzero(sf.oos & np.isfinite(sf.fwd) & np.isfinite(sf.rule))
    if n_boot <= 0 or idx.size == 0:
        return math.nan, math.nan
    days = sf.day[idx]
    cuts = np.flatnonzero(np.diff(days)) + 1
    blocks = np.split(idx, cuts)
    if len(blocks) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    margins = []
    for _ in range(n_boot):
        pick = np.concatenate([blocks[j] for j in rng.integers(0, len(blocks), len(blocks))])
        fp = f[pick]
        every = np.ones(pick.size, dtype=bool)
        sc = score_flag(fp, fp.astype(np.float64), sf.rule[pick], sf.fwd[pick], every, None)
        margins.append(sc.auc - sc.rule_auc)
    lo, hi = np.nanquantile(np.asarray(margins), [0.025, 0.975])
    return float(lo), float(hi)


def resample(s: CandleSeries, bar_ms: int) -> CandleSeries:
    """The series at ``bar_ms`` bars, as the flow closes them over its candles: each bar's close
    is the close of the candle ending on the bar's boundary (a bar whose last candle is missing
    is left out)."""
    if bar_ms == s.bar_ms:
        return s
    if bar_ms % s.bar_ms:
        msg = f"{bar_ms} ms bars cannot be built from {s.bar_ms} ms candles"
        raise ValueError(msg)
    ends = s.open_ms + s.bar_ms
    keep = ends % bar_ms == 0
    return CandleSeries(s.coin, bar_ms, ends[keep] - bar_ms, s.close[keep], s.path)


def series_flags(s: CandleSeries, envelopes: Sequence[dict[str, Any]]) -> SeriesFlags:
    """Line the coin's envelopes up with its candles (by bar close)."""
    bar = s.bar_ms
    close = s.open_ms + bar
    at = {int(t): i for i, t in enumerate(close.tolist())}
    n = len(close)
    rho = np.full(n, np.nan)
    ver = np.full(n, np.nan)
    published = np.zeros(n, dtype=bool)
    for env in envelopes:
        i = at.get(int(env["timestamp_ms"]))
        if i is None:
            continue
        reg = env["regime"]
        r_, v_ = reg.get("risk_ratio"), env["features"].get("vol_expansion_ratio")
        rho[i] = math.nan if r_ is None else float(r_)
        ver[i] = math.nan if v_ is None else float(v_)
        published[i] = reg["label"] in RISKY
    r = s.returns
    fb = hour_bars(bar)
    known = np.isfinite(rho)
    return SeriesFlags(
        name=f"{fmt_duration(bar).replace(' ', '')} {s.coin}",
        rho=rho,
        ver=ver,
        published=published,
        fwd=np.sqrt(fwd_sum(r * r, fb)),
        rule=one_line_rule(r, bar),
        ins=known & (s.open_ms + (fb + 1) * bar <= CANDLE_SPLIT_MS),
        oos=known & (close >= CANDLE_SPLIT_MS),
        crash=(close > CRASH_WINDOW_MS[0]) & (close <= CRASH_WINDOW_MS[1]),
        day=close // MS_DAY,
    )


def score_row(sf: SeriesFlags, flag_ver: float, stay: float | None, n_boot: int) -> Row:
    """The series' flag at ``flag_ver`` (and ``stay``) scored in and out of sample."""
    f = flag(sf.rho, sf.ver, flag_ver, stay)
    score = f.astype(np.float64)
    ins = score_flag(f, score, sf.rule, sf.fwd, sf.ins, None)
    oos = score_flag(f, score, sf.rule, sf.fwd, sf.oos, None)
    return Row(
        sf.name,
        flag_ver,
        float(f[sf.oos].mean()) if sf.oos.any() else math.nan,
        ins.auc - ins.rule_auc,
        oos.auc - oos.rule_auc,
        oos,
        float(f[sf.crash].mean()) if sf.crash.any() else math.nan,
        math.nan if stay is None else stay,
        margin_ci(f, sf, n_boot),
    )


def rows_for(sf: SeriesFlags, grid: Sequence[float], n_boot: int = 0) -> list[Row]:
    """The series scored at every ``flag_ver`` of the grid."""
    return [score_row(sf, v, None, n_boot) for v in grid]


def stay_rows_for(
    sf: SeriesFlags, flag_ver: float, stays: Sequence[float], n_boot: int = 0
) -> list[Row]:
    """The series scored at ``flag_ver`` with each stay level of the expansion."""
    return [score_row(sf, flag_ver, v, n_boot) for v in stays]


EVIDENCE_RULE: Final = (
    "per bar length, on real candles out of sample (bar close on or after 2025-06-01): the "
    "published risk flag (LIQUIDATION_RISK or CHAOTIC) against the one-line rule RV_1h / "
    "median(RV_1h over 24 h) flagging the same share of bars, AUC against next hour's realised "
    "vol in its top decile; demonstrated when on every coin the AUC margin's 95 % block-bootstrap "
    "interval (whole UTC days) lies above 0 and the flag's separation ratio and AUC are at least "
    "the rule's"
)


def evidence_entry(sf: SeriesFlags, n_boot: int) -> dict[str, Any]:
    """One coin's out-of-sample evidence for the published flag."""
    f = sf.published
    sc = score_flag(f, f.astype(np.float64), sf.rule, sf.fwd, sf.oos, None)
    lo, hi = margin_ci(f, sf, n_boot)
    days = int(np.unique(sf.day[sf.oos]).size)
    return {
        "coin": sf.name.split()[-1],
        "days": days,
        "margin": round(sc.auc - sc.rule_auc, 4),
        "margin_lo": round(lo, 4),
        "margin_hi": round(hi, 4),
        "beats": bool(beats_rule(sc)),
    }


def evidence_doc(series: Sequence[tuple[int, SeriesFlags]], n_boot: int) -> dict[str, Any]:
    """The `operators.flag_evidence` table for these ``(bar_ms, series)``."""
    bars: dict[str, Any] = {}
    for bar_ms in sorted({b for b, _ in series}):
        rows = [evidence_entry(sf, n_boot) for b, sf in series if b == bar_ms]
        ok = all(r["beats"] and r["margin_lo"] > 0.0 for r in rows)
        bars[str(bar_ms)] = {
            "verdict": FlagEvidence.DEMONSTRATED if ok else FlagEvidence.NOT_DEMONSTRATED,
            "series": rows,
        }
    doc: dict[str, Any] = {
        "format": EVIDENCE_FORMAT,
        "version": "",
        "rule": EVIDENCE_RULE,
        "boot": {"replicates": n_boot, "seed": BOOT_SEED, "block": "UTC day"},
        "bar_ms": bars,
    }
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:10]
    doc["version"] = f"flagev-{digest}-20250601"
    return doc


def agreement(sf: SeriesFlags, flag_ver: float) -> tuple[int, int]:
    """Bars (with ρ) where the recomputed flag differs from the published labels, and bars."""
    known = np.isfinite(sf.rho)
    f = flag(sf.rho, sf.ver, flag_ver)
    return int((f[known] != sf.published[known]).sum()), int(known.sum())


def _v(v: float) -> str:
    return "none (ρ only)" if math.isinf(v) else f"{v:g}"


def _margin(r: Row) -> str:
    lo, hi = r.ci_oos
    ci = "" if math.isnan(lo) else f" [{lo:+.3f}, {hi:+.3f}]"
    return f"{r.margin_ins:+.4f} / {r.margin_oos:+.4f}{ci}"


def _table(
    rows: Sequence[Row], head: str, key: Callable[[Row], float], shipped: float
) -> list[str]:
    """One line per key value and series, then the mean margins and lowest capture per key."""
    lines = [
        f"| {head} | series | out-of-sample flag rate | AUC margin over the rule, "
        "in-sample / out-of-sample [95 % CI] | beats the rule out of sample | "
        "crash window flagged |",
        "|---|---|---|---|---|---|",
    ]
    by_key: dict[float, list[Row]] = {}
    for r in rows:
        by_key.setdefault(key(r), []).append(r)
    for v, group in by_key.items():
        mark = " (shipped)" if v == shipped else ""
        for r in group:
            won = beats_rule(r.oos)
            lines.append(
                f"| {_v(v)}{mark} | {r.name} | {r.rate_oos:.1%} | {_margin(r)} | "
                f"{ {True: 'yes', False: '**no**', None: '–'}[won] } | {r.crash:.1%} |"
            )
    lines.append("")
    lines.append(
        "Mean over series, in-sample margin / out-of-sample margin / lowest crash capture:"
    )
    for v, group in by_key.items():
        lines.append(
            f"- {head} {_v(v)}: {np.mean([r.margin_ins for r in group]):+.4f} / "
            f"{np.mean([r.margin_oos for r in group]):+.4f} / "
            f"{min(r.crash for r in group):.1%}"
        )
    return lines


def render(
    rows: Sequence[Row],
    shipped: float,
    agree: Sequence[tuple[str, int, int]],
    stay_rows: Sequence[Row] = (),
) -> str:
    """The tables: one line per ``flag_ver`` and series, then (given ``stay_rows``) one per
    stay level of the expansion at the shipped ``flag_ver``."""
    lines = _table(rows, "flag_ver", lambda r: r.flag_ver, shipped)
    if stay_rows:
        lines.append("")
        lines.append(
            f"Stay band of the expansion at flag_ver {shipped:g}: once flagged, flagged while "
            f"VER ≥ stay ({shipped:g}: no band, as shipped)."
        )
        lines.append("")
        lines.extend(_table(stay_rows, "stay", lambda r: r.stay, shipped))
    lines.append("")
    off = ", ".join(f"{name} {d} of {n:,}" for name, d, n in agree)
    lines.append(
        f"Recomputed flag at the shipped flag_ver ({shipped:g}) against the published labels, "
        f"bars that differ (the LIQUIDATION_RISK hold): {off}."
    )
    return "\n".join(lines)


def parse_grid(text: str, option: str = "--grid") -> tuple[float, ...]:
    """``"2,2.5,3,inf"`` as floats (each > 1); errors name ``option``."""
    out = []
    for part in text.split(","):
        try:
            v = float(part)
        except ValueError:
            msg = f"{option}: {part.strip()!r} is not a number"
            raise ValueError(msg) from None
        if not v > 1.0:
            msg = f"{option}: {part.strip()!r} must be above 1 (a ratio to the usual volatility)"
            raise ValueError(msg)
        out.append(v)
    return tuple(out)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tools.evaluate.flag_tradeoff``."""
    ap = argparse.ArgumentParser(
        prog="python -m tools.evaluate.flag_tradeoff",
        description="The risk flag's expansion threshold: crash-window capture against the "
        "out-of-sample separation of forward volatility, on candle files.",
    )
    ap.add_argument("paths", nargs="+", type=Path, help="candle capture files or folders")
    ap.add_argument(
        "--grid",
        default=",".join("inf" if math.isinf(v) else f"{v:g}" for v in DEFAULT_GRID),
        help="flag_ver values to score (default: %(default)s)",
    )
    ap.add_argument(
        "--stay",
        default=",".join(f"{v:g}" for v in DEFAULT_STAYS),
        help="stay levels of the expansion to score at the shipped flag_ver, or 'none' "
        "(default: %(default)s)",
    )
    ap.add_argument(
        "--boot",
        type=int,
        default=DEFAULT_BOOT,
        help="block-bootstrap replicates per out-of-sample margin, 0 for none "
        "(default: %(default)s)",
    )
    ap.add_argument(
        "--also-bar-ms",
        type=int,
        action="append",
        default=[],
        metavar="MS",
        help="also replay the candle files whose interval divides MS with MS bars (e.g. 900000: "
        "15-minute bars over 5-minute candles); repeatable",
    )
    ap.add_argument(
        "--write-evidence",
        type=Path,
        metavar="PATH",
        help="write the risk flag's out-of-sample verdict per bar length (the table the "
        "envelope's regime.flag_evidence reads, operators/flag_evidence.json)",
    )
    ns = ap.parse_args(argv)
    try:
        grid = parse_grid(ns.grid)
        stays = () if ns.stay.strip() == "none" else parse_grid(ns.stay, "--stay")
        if ns.boot < 0:
            msg = f"--boot: {ns.boot} must be 0 or more"
            raise ValueError(msg)
        if ns.write_evidence is not None and ns.boot < 100:
            msg = f"--write-evidence needs --boot of at least 100 (got {ns.boot})"
            raise ValueError(msg)
        files = expand_paths(ns.paths)
    except (ValueError, OSError) as ex:
        print(f"flag_tradeoff: {ex}", file=sys.stderr)
        return 2
    scans = [scan_file(f) for f in files]
    specs = [s for s in plan_datasets(scans) if s.kind == "candle"]
    if not specs:
        print("flag_tradeoff: no candle data in the inputs", file=sys.stderr)
        return 2
    for bar_ms in ns.also_bar_ms:  # the same candles, the flow closing longer bars over them
        fit = [c for c in scans if c.kind == "candle" and c.candle_ms and bar_ms % c.candle_ms == 0]
        fit = [c for c in fit if c.candle_ms is not None and c.candle_ms < bar_ms]
        if not fit:
            msg = f"--also-bar-ms {bar_ms}: no candle interval divides it"
            print(f"flag_tradeoff: {msg}", file=sys.stderr)
            return 2
        specs += [s for s in plan_datasets(fit, bar_ms=bar_ms) if s.kind == "candle"]
    shipped = RegimeConfig().flag_ver
    progress = Progress(sys.stderr.isatty())
    rows: list[Row] = []
    stay_rows: list[Row] = []
    agree: list[tuple[str, int, int]] = []
    evidence: list[tuple[int, SeriesFlags]] = []
    for spec in specs:
        envs, _, _, _ = replay_dataset(spec, (), progress, f"{spec.name}:")
        progress.done(f"{spec.name}: {len(envs):,} envelopes")
        for path in spec.files:
            for coin, native in sorted(read_candles(path).items()):
                s = resample(native, spec.bar_ms)
                mine = [e for e in envs if e["coin"] == coin]
                sf = series_flags(s, mine)
                rows.extend(rows_for(sf, grid, ns.boot))
                stay_rows.extend(stay_rows_for(sf, shipped, stays, ns.boot))
                agree.append((sf.name, *agreement(sf, shipped)))
                evidence.append((s.bar_ms, sf))
    print(render(rows, shipped, agree, stay_rows))
    if ns.write_evidence is not None:
        doc = evidence_doc(evidence, ns.boot)
        parse(doc)  # what the flow will load
        ns.write_evidence.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {ns.write_evidence} ({doc['version']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
