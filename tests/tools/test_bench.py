"""`python -m tools.bench --json`: the keys it promises (figures are not checked: no timing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.bench import main
from tools.bench_reference import FALLBACK, frame_path

KEYS = {
    "capture",
    "frames",
    "signals",
    "rounds",
    "reference_orjson_frames_per_s",
    "flow_frames_per_s",
    "frame_path_frames_per_s",
    "ratio_frame_path_to_reference",
    "ratio_flow_to_reference",
    "us_per_bar",
    "bar_to_line_ratio",
    "load_avg_1m",
}


def test_json_keys_on_the_sample(capsys: pytest.CaptureFixture[str]) -> None:
    import orjson

    assert main([str(FALLBACK), "--repeat", "1", "--json"]) == 0
    r = orjson.loads(capsys.readouterr().out)
    assert set(r) >= KEYS
    assert r["bars"] == r["signals"] > 0
    for key in ("us_per_bar", "bar_to_line_ratio", "ratio_flow_to_reference"):
        assert set(r[key]) == {"best", "median"}
    assert isinstance(r["load_avg_1m"], float)


def test_whole_market_takes_no_path() -> None:
    with pytest.raises(SystemExit):
        main(["--whole-market", str(FALLBACK)])


def test_stages_split_the_bars_the_flow_closes(capsys: pytest.CaptureFixture[str]) -> None:
    """``--stages``: every stage over the same bars as the flow, and the sum is their sum."""
    import orjson

    from tools.bench_stages import FRAME_STAGES, STAGES, closed_bars, one_round

    bars = closed_bars(FALLBACK)
    assert len(bars) == frame_path(FALLBACK)[1] > 0
    assert set(one_round(bars[:50])) == set(STAGES)

    assert main(["--stages", str(FALLBACK), "--repeat", "1", "--json"]) == 0
    r = orjson.loads(capsys.readouterr().out)
    assert r["bars"] == len(bars)
    us = r["us_per_bar"]
    assert set(us) == {*STAGES, "sum"}
    assert all(us[s]["best"] > 0 for s in STAGES)
    assert us["sum"]["best"] == pytest.approx(sum(us[s]["best"] for s in STAGES), abs=0.1)
    frame = r["us_per_frame"]
    assert set(frame) == {*FRAME_STAGES, "sum"}
    assert r["frames"] > r["bars"]
    assert frame["read"]["best"] > 0
    assert frame["parse"]["best"] > 0
    assert isinstance(r["load_avg_1m"], float)


def test_stages_names_a_missing_capture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--stages", f"{tmp_path}/none.ndjson"]) == 2
    assert "not found" in capsys.readouterr().err
