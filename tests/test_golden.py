"""The project-wide golden record: what the layer publishes for fixed inputs, as hashes.

``tests/golden/hashes.json`` holds the sha256 of ``python -m tools.replay --out`` for the shipped
sample and for the real 35-minute capture (that case skips when ``../shared`` is absent), and
``tests/golden/sample_envelopes.json`` a few whole envelopes from the sample, with
``producer.code_version`` normalised so a version bump does not change them.

The record changes only for a deliberate change of what the layer computes or publishes, in its own
``golden: <issue> — <the change>`` commit (``../shared/conventions.md``). Regenerate it with
``python -m tests.test_golden``.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import LIVE_CAPTURE, REAL, SAMPLE, real_file
from tools.replay import main as replay_main

GOLDEN = Path(__file__).resolve().parent / "golden"
HASHES = GOLDEN / "hashes.json"
ENVELOPES = GOLDEN / "sample_envelopes.json"
SAMPLE_PICKS = (0, 1, 900, 1803)
"""Which sample envelopes (in output order) are kept whole."""

_VERSION = re.compile(rb'"code_version":"[^"]*"')


def normalised_output(capture: Path, out: Path) -> bytes:
    """``tools.replay --out`` bytes for ``capture`` with ``producer.code_version`` normalised."""
    rc = replay_main([str(capture), "--out", str(out), "--log-level", "ERROR"])
    assert rc == 0, f"tools.replay exited {rc} on {capture}"
    return _VERSION.sub(b'"code_version":"*"', out.read_bytes())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _record() -> dict[str, Any]:
    return orjson.loads(HASHES.read_bytes())  # type: ignore[no-any-return]


def test_sample_output_is_the_golden_one(tmp_path: Path) -> None:
    data = normalised_output(SAMPLE, tmp_path / "sample.ndjson")
    assert sha256(data) == _record()["sample"]["sha256"]
    lines = data.splitlines()
    assert len(lines) == _record()["sample"]["envelopes"]
    kept = orjson.loads(ENVELOPES.read_bytes())
    for i in SAMPLE_PICKS:
        assert orjson.loads(lines[i]) == kept[str(i)], f"sample envelope {i} changed"


@pytest.mark.slow
def test_real_capture_output_is_the_golden_one(tmp_path: Path) -> None:
    capture = real_file(LIVE_CAPTURE)
    data = normalised_output(capture, tmp_path / "real.ndjson")
    assert len(data.splitlines()) == _record()["real_capture"]["envelopes"]
    assert sha256(data) == _record()["real_capture"]["sha256"]


def regenerate(tmp: Path) -> None:
    """Rewrite the golden record from the current code (for a deliberate ``golden:`` commit)."""
    GOLDEN.mkdir(exist_ok=True)
    sample = normalised_output(SAMPLE, tmp / "sample.ndjson")
    record: dict[str, Any] = {
        "sample": {
            "capture": "data/sample.ndjson.gz",
            "sha256": sha256(sample),
            "envelopes": len(sample.splitlines()),
        }
    }
    real = REAL / LIVE_CAPTURE
    if real.is_file():
        data = normalised_output(real, tmp / "real.ndjson")
        record["real_capture"] = {
            "capture": f"../shared/data/real/{LIVE_CAPTURE}",
            "sha256": sha256(data),
            "envelopes": len(data.splitlines()),
        }
    elif HASHES.is_file():
        record["real_capture"] = _record()["real_capture"]
        print("warning: real capture absent; its hash was kept as it was", file=sys.stderr)
    HASHES.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n")
    lines = sample.splitlines()
    kept = {str(i): orjson.loads(lines[i]) for i in SAMPLE_PICKS}
    ENVELOPES.write_bytes(orjson.dumps(kept, option=orjson.OPT_INDENT_2) + b"\n")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        regenerate(Path(d))
    print(HASHES.read_text())
