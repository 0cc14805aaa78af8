"""`python -m tools.bench --json`: the keys it promises (figures are not checked: no timing)."""

from __future__ import annotations

import pytest

from tools.bench import FALLBACK, main

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
