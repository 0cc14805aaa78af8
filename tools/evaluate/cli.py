"""The command line, ``python -m tools.evaluate PATH... --out DIR [options]`` (usage: the package
docstring).

Every option is checked before any capture is read: a value not allowed (the flow's settings
through `flows.settings.Settings.load`), an ``--out`` folder or ``--fit-calibration`` file that
cannot be written fails in one line naming the flag, exit status 2; so does a ``--coins`` name
the inputs do not hold (`tools.evaluate.run.evaluate`, once the captures are scanned).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from flows.pipeline import tune_gc
from flows.settings import Settings
from flows.startup import check_output_dir, check_output_path
from tools.evaluate.datasets import expand_paths
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
        horizons = check_arguments(ns)
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
    except (ValueError, OSError) as ex:  # one line, never a traceback
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


def check_arguments(ns: argparse.Namespace) -> tuple[int, ...] | None:
    """Check the options before any work; returns the ``--horizons`` in ms (None: by data kind).

    Raises:
        ValueError: one line naming the flag, its value and what is allowed (`SettingsError` for
            the flow's settings, `StartupError` for an output that cannot be written).
        FileNotFoundError: a capture path that does not exist.
    """
    horizons = None
    if ns.horizons:
        try:
            horizons = tuple(parse_duration_ms(h) for h in ns.horizons.split(",") if h.strip())
        except ValueError as ex:
            msg = f"--horizons = {ns.horizons}: {ex}"
            raise ValueError(msg) from None
    flow: dict[str, Any] = {  # the replay's own settings, checked the way every entry point does
        key: value
        for key in ("bar_ms", "window_obs", "warmup_obs", "coins")
        if (value := getattr(ns, key)) is not None
    }
    Settings.load(flow)
    if not 0.0 < ns.split < 1.0:
        msg = f"--split = {ns.split:g}: must be > 0 and < 1 (the in-sample share)"
        raise ValueError(msg)
    if ns.bootstrap < 0:
        msg = f"--bootstrap = {ns.bootstrap}: must be >= 0"
        raise ValueError(msg)
    if ns.seed < 0:
        msg = f"--seed = {ns.seed}: must be >= 0"
        raise ValueError(msg)
    if not (math.isfinite(ns.min_bin_eff) and ns.min_bin_eff >= 0):
        msg = f"--min-bin-eff = {ns.min_bin_eff:g}: must be a finite number >= 0"
        raise ValueError(msg)
    expand_paths(ns.paths)  # a missing input fails before any output folder is made
    if ns.fit_calibration is not None and not ns.frozen:
        check_output_path(ns.fit_calibration, "--fit-calibration")
    check_output_dir(ns.out, "--out")
    return horizons
