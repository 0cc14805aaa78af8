"""Replay captures through the signal flow as fast as possible and write every envelope.

    python -m tools.replay data/sample.ndjson.gz --out signals.ndjson [--parquet DIR]

Output: one JSON envelope per line, ordered by (timestamp_ms, coin), so two runs on the same input
are byte-identical. ``--parquet DIR`` (also, or instead) writes them as Parquet history under DIR
(`connectors.parquet`: ``date=…/coin=…/part-<run>-0-<n>.parquet``, a new run id per run, the
same rows in the same order). A path may be a directory: every capture in it is replayed (sorted
by name). A summary goes to stderr: frames read, lines skipped by reason, late events, signals
emitted, frames per second and the Parquet files written.

Memory stays bounded however long the input: the envelopes go to `tools.ordered` (their bytes as
encoded where each was built, in sorted runs of 8,192 spilled next to ``--out`` and merged at the
end), and the run's store keeps only each coin's latest envelope.

Exit status: 0 when signals were produced; 1 if a capture was truncated or corrupt (every good
line before the damage is still replayed and written) or envelopes could not be written to
``--parquet``; 2 when it cannot start (a setting, a missing capture, an ``--out`` or ``--parquet``
that cannot be written: one line, before any work) or when the replay produced nothing useful (no
data frame accepted, no signal, or a requested coin absent from the captures: one line each,
after the summary).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from flows.pipeline import Pipeline, build_pipeline, run_pipeline, tune_gc
from flows.settings import (
    HISTORY_FLAGS,
    LOG_LEVELS,
    VALIDATION_FLAGS,
    Settings,
    SettingsError,
    add_history_flags,
    add_validation_flags,
)
from flows.startup import check_output_dir, check_output_path, start_message
from tools.ordered import OrderedEnvelopes

PARQUET_FLAG = "--parquet (HLSL_PARQUET)"


def sorted_envelopes(pipeline: Pipeline) -> list[dict[str, Any]]:
    """Every envelope the run emitted, in the deterministic (timestamp_ms, coin) order."""
    items = pipeline.collected or []
    return [env for _, env in sorted(items, key=lambda kv: (kv[1]["timestamp_ms"], kv[0]))]


def write_ndjson(envelopes: list[dict[str, Any]], out: Path) -> None:
    """Write envelopes as NDJSON (orjson; keys in model order, so byte-stable)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh:
        for env in envelopes:
            fh.write(orjson.dumps(env))
            fh.write(b"\n")


def write_parquet(envelopes: list[dict[str, Any]], root: str | Path) -> dict[str, Any]:
    """Write envelopes as Parquet history under ``root`` with a new run id (files split by
    rows only, so a replay's layout does not depend on how fast it ran); returns the writer's
    counters and the run id."""
    from connectors.parquet import ParquetWriter, new_run_id  # pyarrow: only when asked

    writer = ParquetWriter(root, new_run_id(), flush_s=math.inf)
    for env in envelopes:
        writer.write(env)
    writer.close()
    return {"dir": str(root), "run_id": writer.run_id, **writer.stats()}


def write_outputs(
    out: OrderedEnvelopes, path: Path | None, parquet: str | Path | None
) -> dict[str, Any] | None:
    """Stream the run's envelopes, in order, to ``path`` (NDJSON) and/or the Parquet history
    under ``parquet`` (decoded from the same bytes); returns the Parquet writer's counters."""
    if path is None and parquet is None:
        return None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    if parquet is not None:
        from connectors.parquet import ParquetWriter, new_run_id  # pyarrow: only when asked

        writer = ParquetWriter(parquet, new_run_id(), flush_s=math.inf)
    fh = None if path is None else path.open("wb")
    try:
        for raw in out.merged():
            if fh is not None:
                fh.write(raw)
                fh.write(b"\n")
            if writer is not None:
                writer.write(orjson.loads(raw))
    finally:
        if fh is not None:
            fh.close()
        if writer is not None:
            writer.close()
    if writer is None:
        return None
    return {"dir": str(parquet), "run_id": writer.run_id, **writer.stats()}


def summary(pipeline: Pipeline, elapsed_s: float, n_signals: int) -> dict[str, Any]:
    """The run's counters as a dict (also printed)."""
    info = pipeline.store.source_info()
    frames = sum(info["frames_by_channel"].values())
    return {
        "files": info["files"],
        "lines_read": info["lines_read"],
        "frames": frames,
        "frames_by_channel": info["frames_by_channel"],
        "control_frames": info["control_frames"],
        "lines_skipped": info["lines_skipped"],
        "duplicate_trades": info["duplicate_trades"],
        "late_events": sum(pipeline.store.late_events.values()),
        "signals": n_signals,
        "elapsed_s": round(elapsed_s, 3),
        "frames_per_s": round(info["lines_read"] / elapsed_s) if elapsed_s > 0 else None,
        "errors": info["errors"],
    }


def replay(settings: Settings) -> tuple[Pipeline, list[dict[str, Any]], float]:
    """Run the flow over ``settings.replay`` to the end; returns pipeline, envelopes, seconds."""
    return run_replay(build_pipeline(settings.model_copy(update={"parquet": None}), collect=True))


def run_replay(pipeline: Pipeline) -> tuple[Pipeline, list[dict[str, Any]], float]:
    """Run a built replay pipeline to the end; returns pipeline, envelopes, seconds."""
    tune_gc()
    t0 = time.perf_counter()
    run_pipeline(pipeline)
    elapsed = time.perf_counter() - t0
    return pipeline, sorted_envelopes(pipeline), elapsed


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tools.replay``."""
    ap = argparse.ArgumentParser(prog="python -m tools.replay", description=__doc__.split("\n")[0])
    ap.add_argument(
        "paths",
        nargs="+",
        help="capture files (.ndjson, .gz, .lz4, .txt), directories of captures, or quoted "
        "globs such as 'data/*.gz' or 'archive/**/*.lz4'",
    )
    ap.add_argument("--out", type=Path, help="write envelopes here (NDJSON)")
    add_history_flags(ap)
    ap.add_argument("--coins", help="comma-separated coins to keep (default: all)")
    # Values are checked by `Settings.load` (one line naming the flag, value and what is allowed).
    ap.add_argument("--bar-ms", help="bar length in ms (default 1000)")
    ap.add_argument("--lateness-ms", help="allowed lateness in ms (default 1000)")
    add_validation_flags(ap)
    ap.add_argument("--log-level", default="WARNING")
    ns = ap.parse_args(argv)
    level = str(ns.log_level).upper()
    if level not in LOG_LEVELS:
        print(
            f"cannot start: --log-level = {ns.log_level}: must be one of {', '.join(LOG_LEVELS)}",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {"replay": ",".join(ns.paths), "api": False}
    for key in (
        "coins",
        "bar_ms",
        "lateness_ms",
        *VALIDATION_FLAGS,
        *HISTORY_FLAGS,
    ):
        if getattr(ns, key) is not None:
            overrides[key] = getattr(ns, key)
    try:
        settings = Settings.load(overrides, {"replay": "PATHS"})
        if ns.out is not None:
            check_output_path(ns.out, "--out")
        if settings.parquet is not None:
            check_output_dir(settings.parquet, PARQUET_FLAG)
        out = OrderedEnvelopes(
            keep=ns.out is not None or settings.parquet is not None,
            spill_dir=None if ns.out is None else ns.out.parent,
        )
        pipeline = build_pipeline(
            settings.model_copy(update={"parquet": None, "history_limit": 1}), tap=out
        )
    except SettingsError as ex:
        print(f"cannot start: {ex}", file=sys.stderr)
        return 2
    except Exception as ex:  # no traceback at start: one line, details at DEBUG
        logging.getLogger(__name__).debug("start-up failed", exc_info=True)
        print(f"cannot start: {start_message(ex)}", file=sys.stderr)
        return 2
    tune_gc()
    t0 = time.perf_counter()
    try:
        run_pipeline(pipeline)
        elapsed = time.perf_counter() - t0
        parquet = write_outputs(out, ns.out, settings.parquet)
    finally:
        out.close()
    s = summary(pipeline, elapsed, out.count)
    lost = 0
    if parquet is not None:
        s["parquet"] = pq = parquet
        lost = pq["rows_dropped"] + pq["rows_rejected"]
    print(orjson.dumps(s, option=orjson.OPT_INDENT_2).decode(), file=sys.stderr)
    for err in s["errors"]:
        print(f"error: {err}", file=sys.stderr)
    if lost:
        print(
            f"error: {PARQUET_FLAG} = {settings.parquet}: {lost} of {out.count} envelopes "
            f"not written ({s['parquet']['last_error']})",
            file=sys.stderr,
        )
    for problem in pipeline.problems:
        print(f"error: {problem}", file=sys.stderr)
    if s["errors"] or lost:  # a corrupt capture or a lost output wins over "nothing"
        return 1
    return 2 if pipeline.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
