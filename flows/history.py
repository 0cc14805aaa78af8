"""History for research: the outputs that keep every envelope for later analysis (issue #13).

`parquet_sink` turns the ``parquet`` setting (``--parquet DIR``, ``HLSL_PARQUET``) into the
Bytewax sink that writes the Parquet history (`connectors.parquet`), after checking the directory
can be written. The flow that wants it adds it beside the store sink on the envelope stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flows.settings import Settings, env_name, flag_name
from flows.startup import check_output_dir

if TYPE_CHECKING:  # pyarrow (and pandas with it) costs ~100 MB and ~0.6 s: only when asked
    from connectors.parquet import ParquetSink


def parquet_sink(settings: Settings, run_id: str | None = None) -> ParquetSink | None:
    """The Parquet history sink the settings ask for (None: ``parquet`` is not set).

    Args:
        settings: the run's settings.
        run_id: names the run's files (``[A-Za-z0-9_]``; default: a new time-sortable id).

    Raises:
        StartupError: the directory cannot be made or written (one line naming the flag and
            variable).
    """
    if settings.parquet is None:
        return None
    check_output_dir(settings.parquet, f"{flag_name('parquet')} ({env_name('parquet')})")
    from connectors.parquet import ParquetSink, new_run_id  # pyarrow: only when asked

    return ParquetSink(settings.parquet, run_id or new_run_id())
