"""A dataset replayed through the production flow (`flows.pipeline`), with a one-line progress
display while it runs."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

from flows.pipeline import build_pipeline, run_pipeline
from flows.settings import Settings
from tools.evaluate.datasets import DatasetSpec
from tools.evaluate.text import iso_utc
from tools.replay import sorted_envelopes


class Progress:
    """A one-line progress display on stderr (only when it is a terminal)."""

    def __init__(self, enabled: bool, stream: TextIO = sys.stderr) -> None:
        self.enabled = enabled
        self.stream = stream
        self._width = 0

    def update(self, text: str) -> None:
        """Replace the line with ``text``."""
        if self.enabled:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
            self._width = len(text)

    def done(self, text: str) -> None:
        """Replace the line with ``text`` and end it."""
        if self.enabled:
            self.update(text)
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def replay_dataset(
    spec: DatasetSpec, coins: Sequence[str], progress: Progress, prefix: str
) -> tuple[list[dict[str, Any]], dict[str, int], list[str], float]:
    """Run the production flow over a dataset's files; envelopes, frames by channel, errors, s."""
    overrides: dict[str, Any] = {
        "replay": ",".join(str(f) for f in spec.files),
        "bar_ms": spec.bar_ms,
        "window_obs": spec.window_obs,
        "warmup_obs": spec.warmup_obs,
        "api": False,
        "history_limit": 1,
    }
    if coins:
        overrides["coins"] = ",".join(coins)
    settings = Settings(**overrides)
    pipeline = build_pipeline(settings, collect=True)
    t0 = time.perf_counter()
    if progress.enabled:
        failure: list[BaseException] = []

        def target() -> None:
            try:
                run_pipeline(pipeline)
            except BaseException as ex:  # handed to the main thread
                failure.append(ex)

        worker = threading.Thread(target=target, name="evaluate-replay", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.5)
                now = pipeline.store.source_clock()
                stamp = iso_utc(now)[:16].replace("T", " ") if now else "…"
                progress.update(
                    f"{prefix} replaying: at {stamp}, {len(pipeline.collected or [])} signals, "
                    f"{time.perf_counter() - t0:.0f} s"
                )
        except KeyboardInterrupt:
            pipeline.stop.set()
            worker.join()
            raise
        if failure:
            raise failure[0]
    else:
        run_pipeline(pipeline)
    elapsed = time.perf_counter() - t0
    info = pipeline.store.source_info()
    return (
        sorted_envelopes(pipeline),
        dict(info.get("frames_by_channel", {})),
        list(info.get("errors", [])),
        elapsed,
    )
