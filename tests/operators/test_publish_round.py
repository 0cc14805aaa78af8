"""Published numbers are rounded at publish time only, deterministically (issue #10)."""

from __future__ import annotations

import re

import pytest

from operators.envelope import publish_features, round_feature
from operators.features import price_decimals
from tests.conftest import SAMPLE
from tools.replay import main as replay_main


@pytest.mark.parametrize(
    ("x", "decimals"),
    [(109741.0, 0), (3469.8, 1), (0.004411, 6), (1e-07, 7), (2.5e-05, 6), (1e20, 0)],
)
def test_price_decimals_reads_the_wire_precision(x: float, decimals: int) -> None:
    assert price_decimals(x) == decimals


def test_each_kind_of_number_has_its_rounding() -> None:
    assert round_feature("mid_px", 3469.8500000000004, 1) == 3469.85  # wire decimals + 1
    assert round_feature("spread_bps", 0.28821925746281934, 1) == 0.2882
    assert round_feature("depth_bid_usd", 1234567.891234, 1) == 1234567.89
    assert round_feature("tob_imbalance", -0.123456789, 1) == -0.1235
    assert round_feature("vol_expansion_ratio", 1.234567, 1) == 1.2346
    assert round_feature("funding_rate_1h", 0.0000125000000001, 1) == 0.0000125
    assert round_feature("buy_volume", 0.1 + 0.2, 1) == 0.3
    assert str(round_feature("momentum_bps", -0.00001, 1)) == "0.0"  # no "-0.0"
    assert round_feature("microprice_px", 0.0000012345, 2) == 0.0000012345  # never to 0


def test_rounding_never_touches_the_state() -> None:
    values: dict[str, float | None] = {"mid_px": 3469.8500000000004, "vpin": None}
    out = publish_features(values, 1)
    assert out == {"mid_px": 3469.85, "vpin": None}
    assert values["mid_px"] == 3469.8500000000004


def test_the_demo_publishes_no_float_noise(tmp_path: object) -> None:
    from pathlib import Path

    out = Path(str(tmp_path)) / "signals.ndjson"
    assert replay_main([str(SAMPLE), "--out", str(out), "--log-level", "ERROR"]) == 0
    data = out.read_bytes()
    # float noise shows as 12+ significant digits after the point (0.30000000000000004)
    noisy = re.findall(rb'":-?\d+\.\d{12,}', data)
    assert noisy == [], noisy[:5]
