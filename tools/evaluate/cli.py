"""The command line, ``python -m tools.evaluate PATH... --out DIR [options]`` (usage: the package
docstring)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.pipeline import tune_gc
from tools.evaluate.isotonic import MIN_BIN_EFF
from tools.evaluate.run import EvalConfig, evaluate
from tools.evaluate.text import parse_duration_ms


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tools.evaluate``."""
    ap = argparse.ArgumentParser(
        prog="python -m tools.evaluate",
        description="Replay captures through the flow, measure the signals against what happened "
        "next, fit the edge calibration, write a report with charts.",
    )
    ap.add_argument("paths", nargs="+", type=Path, help="capture files or folders of them")
    ap.add_argument("--out", type=Path, required=True, help="report folder (report.md + PNGs)")
    ap.add_argument("--fit-calibration", type=Path, help="write the fitted calibration JSON here")
    ap.add_argument(
        "--frozen",
        action="store_true",
        help="score the shipped calibration and volatility model as they are (no refit)",
    )
    ap.add_argument(
        "--horizons", help="comma-separated, e.g. 1s,5s,1m or 5m,1h,4h (default: by data kind)"
    )
    ap.add_argument(
        "--bar-ms",
        type=int,
        help="bar length (default: 1000 for tick data, the candle interval for candle files)",
    )
    ap.add_argument(
        "--window-obs",
        type=int,
        help="feature window in observations (default: 60, the server's, at every bar length)",
    )
    ap.add_argument(
        "--warmup-obs", type=int, help="warm-up observations (default: 30, the server's)"
    )
    ap.add_argument(
        "--split",
        type=float,
        default=0.6,
        help="in-sample share of each dataset's time span (default 0.6)",
    )
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument(
        "--min-bin-eff",
        type=float,
        default=MIN_BIN_EFF,
        help="smallest calibration bin, in effective observations (rows x bar / max(h, window))",
    )
    ap.add_argument("--truth", type=Path, help="simulator truth JSON (tools.simulate --truth)")
    ap.add_argument("--coins", help="comma-separated coins to keep (default: all)")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNG charts")
    ns = ap.parse_args(argv)
    try:
        horizons = (
            tuple(parse_duration_ms(h) for h in ns.horizons.split(",") if h.strip())
            if ns.horizons
            else None
        )
        cfg = EvalConfig(
            paths=tuple(ns.paths),
            out=ns.out,
            bar_ms=ns.bar_ms,
            window_obs=ns.window_obs,
            warmup_obs=ns.warmup_obs,
            horizons_ms=horizons,
            split=ns.split,
            n_boot=ns.bootstrap,
            seed=ns.seed,
            min_bin_eff=ns.min_bin_eff,
            fit_calibration=ns.fit_calibration,
            frozen=ns.frozen,
            truth=ns.truth,
            coins=tuple(c.strip() for c in (ns.coins or "").split(",") if c.strip()),
            plots=not ns.no_plots,
            progress=sys.stderr.isatty(),
            command="python -m tools.evaluate " + " ".join(argv or sys.argv[1:]),
        )
        tune_gc()
        ev = evaluate(cfg)
    except (ValueError, FileNotFoundError) as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    print(
        f"report: {ev.report_path}; calibration {ev.calibration['version']}"
        + (f" -> {ev.calibration_path}" if ev.calibration_path else "")
        + f"; {ev.elapsed_s:.1f} s",
        file=sys.stderr,
    )
    errors = [e for r in ev.datasets for e in r.errors]
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0
