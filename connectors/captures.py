"""Which files a ``--replay`` argument names: a capture file, or a directory of captures.

A directory replays every capture directly in it (not recursively), sorted by name: the files
whose names end in a recognised extension (`CAPTURE_SUFFIXES`, what `connectors.files.open_capture`
reads: plain NDJSON or text, gzip, LZ4). Hidden files are left out, and so are ``.json`` files (a
data directory keeps sidecars such as ``*.truth.json`` beside its captures).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

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


def expand_captures(paths: Sequence[str | Path]) -> list[str]:
    """The capture files ``paths`` name, each directory replaced by the captures in it.

    Raises:
        FileNotFoundError: a path that does not exist, or a directory with no capture in it
            (the message names it and the extensions looked for).
    """
    out: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and is_capture_name(f.name))
            if not found:
                msg = (
                    f"directory `{p}` holds no capture (looked for files ending in "
                    f"{', '.join(CAPTURE_SUFFIXES)})"
                )
                raise FileNotFoundError(msg)
            out.extend(str(f) for f in found)
        elif p.is_file():
            out.append(str(p))
        elif str(raw) in (SAMPLE_NAME, SAMPLE_PATH) and sample_capture().is_file():
            # The demo capture, also from an installed package run outside the checkout.
            out.append(str(sample_capture()))
        else:
            msg = f"capture file `{p}` does not exist"
            raise FileNotFoundError(msg)
    return out
