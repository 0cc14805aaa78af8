"""Shared fixtures: paths to the real captures (skipped with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"
SAMPLE = REPO / "data" / "sample.ndjson.gz"
LIVE_CAPTURE = "frames/hl_live_20250904_btc-eth-sol.ndjson.gz"


def real_file(rel: str) -> Path:
    """A file under ../shared/data/real, or skip the test with a clear reason."""
    path = REAL / rel
    if not path.is_file():
        pytest.skip(f"real capture {path} not present (the shared data sits beside the checkout)")
    return path


@pytest.fixture
def live_capture() -> Path:
    """The real 35-minute BTC/ETH/SOL capture (trades, bbo, 20-level books)."""
    return real_file(LIVE_CAPTURE)
