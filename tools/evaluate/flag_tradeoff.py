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

The scores themselves are `tools.evaluate.flag_scores`. The recomputed flag leaves out the
classifier's hold of LIQUIDATION_RISK (6 bars); the program prints how often it agrees with the
published labels at the shipped ``flag_ver``.
Nothing here is fitted or chosen: the shipped thresholds stay what DESIGN.md says.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from flows.startup import check_output_path
from operators.flag_evidence import parse
from operators.regime import RegimeConfig
from tools.evaluate.datasets import expand_paths, plan_datasets, scan_file
from tools.evaluate.flag_scores import (
    Row,
    SeriesFlags,
    agreement,
    evidence_doc,
    rows_for,
    series_flags,
    stay_rows_for,
)
from tools.evaluate.replay import Progress, replay_dataset
from tools.evaluate.science import beats_rule
from tools.evaluate.series import read_candles, resample

DEFAULT_GRID = (2.0, 2.5, 3.0, 4.0, math.inf)
"""Candidate ``flag_ver`` values (``inf``: no expansion trigger, the forecast alone)."""
DEFAULT_STAYS = (1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0)
"""Candidate stay levels of the expansion at the shipped ``flag_ver`` (3: no band)."""
DEFAULT_BOOT = 500
"""Block-bootstrap replicates behind each out-of-sample margin's interval."""


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
        if ns.write_evidence is not None:  # now, not after the replays
            check_output_path(ns.write_evidence, "--write-evidence")
    except (ValueError, OSError) as ex:
        print(f"flag_tradeoff: {ex}", file=sys.stderr)
        return 2
    scans = [scan_file(f) for f in files]
    specs = [s for s in plan_datasets(scans) if s.kind == "candle"]
    if not specs:
        print("flag_tradeoff: no candle data in the inputs", file=sys.stderr)
        return 2
    for bar_ms in ns.also_bar_ms:  # the same candles, the flow closing longer bars over them
        fit = [
            c
            for c in scans
            if c.kind == "candle"
            and c.candle_ms
            and c.candle_ms < bar_ms
            and bar_ms % c.candle_ms == 0
        ]
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
