"""Which files a ``--replay`` argument names: a capture file, a directory of captures, or a glob.

A directory replays every capture directly in it, sorted by name: the files whose names end in a
recognised extension (`CAPTURE_SUFFIXES`, what `connectors.files.open_capture` reads: plain NDJSON
or text, gzip, LZ4). Hidden files are left out, and so are ``.json`` files (a data directory keeps
sidecars such as ``*.truth.json`` beside its captures). Below it, only Hyperliquid's archive
layout is walked (`connectors.archive.is_archive_dir`: ``market_data/YYYYMMDD/H/l2Book/COIN.lz4``,
``node_fills_by_block/hourly/YYYYMMDD/…``), so a download of the archive replays as it is, and
no other subdirectory is ever read.

A glob (``dir/**/*.lz4``; ``**`` matches any depth) replays the files it matches, sorted.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from connectors.archive import is_archive_dir

CAPTURE_SUFFIXES: Final = (".ndjson", ".jsonl", ".txt", ".gz", ".lz4")
SAMPLE_NAME: Final = "sample"
"""``--replay sample`` names the shipped demo capture, wherever the package is installed."""
SAMPLE_PATH: Final = "data/sample.ndjson.gz"
"""Where the demo capture sits in a source checkout (the README's commands name it)."""


def sample_capture() -> Path:
    """The shipped demo capture: inside the installed package (the wheel carries it as
    ``connectors/sample/sample.ndjson.gz``), else ``data/sample.ndjson.gz`` of the checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "sample" / "sample.ndjson.gz"
    if packaged.is_file():
        return packaged
    return here.parent / SAMPLE_PATH


def is_capture_name(name: str) -> bool:
    """Whether a file name looks like a capture (a recognised extension, not hidden)."""
    return not name.startswith(".") and name.lower().endswith(CAPTURE_SUFFIXES)


REPLAY_SETTING: Final = "--replay (HLSL_REPLAY)"
"""The setting that names captures, as start-up errors name it."""


def archive_files(directory: Path) -> list[Path]:
    """The captures below ``directory`` in Hyperliquid's archive layout (not those directly in
    it), sorted; only directories of that layout are entered."""
    found: list[Path] = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if is_archive_dir(d))
        if Path(root) == directory:
            continue
        found.extend(Path(root) / n for n in names if is_capture_name(n))
    return sorted(found)


def _is_glob(text: str) -> bool:
    return glob.has_magic(text)


def expand_captures(paths: Sequence[str | Path], what: str = REPLAY_SETTING) -> list[str]:
    """The capture files ``paths`` name: each directory replaced by the captures in it (and in
    the archive layout below it), each glob by the files it matches.

    Raises:
        FileNotFoundError: a path that does not exist, a glob that matches no file, or a
            directory with no capture in it (the message names the setting, the path and what
            was looked for).
    """
    out: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and is_capture_name(f.name))
            found.extend(archive_files(p))
            if not found:
                msg = (
                    f"{what} = {p}: the directory holds no capture (looked for files ending in "
                    f"{', '.join(CAPTURE_SUFFIXES)}, and for the archive layout "
                    f"market_data/YYYYMMDD/H/l2Book/COIN.lz4)"
                )
                raise FileNotFoundError(msg)
            out.extend(str(f) for f in found)
        elif not p.exists() and _is_glob(str(raw)):
            matched = sorted(
                Path(m) for m in glob.glob(str(raw), recursive=True) if Path(m).is_file()
            )
            if not matched:
                msg = f"{what} = {raw}: no file matches this pattern"
                raise FileNotFoundError(msg)
            out.extend(str(m) for m in matched)
        elif p.is_file():
            out.append(str(p))
        elif str(raw) in (SAMPLE_NAME, SAMPLE_PATH) and sample_capture().is_file():
            # The demo capture, also from an installed package run outside the checkout.
            out.append(str(sample_capture()))
        else:
            msg = f"{what} = {p}: no such file or directory"
            raise FileNotFoundError(msg)
    return out
