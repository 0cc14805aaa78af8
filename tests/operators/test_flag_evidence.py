"""`operators.flag_evidence`: the risk flag's out-of-sample verdict per bar length."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from api.schemas import SignalEnvelope
from operators import steps
from operators.edge import EdgeScorer
from operators.envelope import Producer, build_envelope
from operators.flag_evidence import (
    DEFAULT_PATH,
    EVIDENCE,
    TABLE_FORMAT,
    FlagEvidence,
    load,
    parse,
)
from operators.interval import IntervalTracker
from tests.operators.helpers import coin_bars

DOC: dict[str, Any] = {
    "format": TABLE_FORMAT,
    "version": "flagev-test",
    "rule": "a rule",
    "bar_ms": {
        "300000": {"verdict": "demonstrated", "series": []},
        "3600000": {"verdict": "not_demonstrated", "series": []},
    },
}


def test_verdicts_by_bar_length_and_untested_elsewhere() -> None:
    t = parse(DOC)
    assert t.verdict(300_000) is FlagEvidence.DEMONSTRATED
    assert t.verdict(3_600_000) is FlagEvidence.NOT_DEMONSTRATED
    assert t.verdict(1_000) is FlagEvidence.UNTESTED
    assert t.verdict(900_000) is FlagEvidence.UNTESTED
    assert t.demonstrated_bar_ms() == (300_000,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": None}, "format None is not 'hlsl-flag-evidence/1'; regenerate it"),
        ({"format": "hlsl-flag-evidence/0"}, "is not 'hlsl-flag-evidence/1'"),
        ({"version": ""}, "version must be a non-empty string"),
        ({"bar_ms": {"5m": {"verdict": "demonstrated"}}}, "bar_ms key '5m' is not a positive"),
        ({"bar_ms": {"60000": {"verdict": "untested"}}}, "verdict 'untested' is not one of"),
        ({"bar_ms": {"60000": {"verdict": True}}}, "verdict True is not one of"),
    ],
)
def test_a_table_of_another_format_or_shape_is_refused(
    change: dict[str, Any], message: str
) -> None:
    doc = {**copy.deepcopy(DOC), **change}
    with pytest.raises(ValueError, match="flag evidence table") as info:
        parse(doc)
    assert message in str(info.value)


def test_a_missing_or_broken_file_names_itself(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"flag evidence table .*nope\.json"):
        load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json"):
        load(bad)


def test_the_shipped_table_is_the_evaluations_verdicts() -> None:
    """5-minute candles: shown on every coin; hourly: measured, not shown (56 days straddle 0);
    1 s bars (the live default): never evaluated."""
    doc = json.loads(DEFAULT_PATH.read_text())
    assert doc["version"] == EVIDENCE.version
    assert EVIDENCE.verdict(300_000) is FlagEvidence.DEMONSTRATED
    assert EVIDENCE.verdict(3_600_000) is FlagEvidence.NOT_DEMONSTRATED
    assert EVIDENCE.verdict(900_000) is FlagEvidence.NOT_DEMONSTRATED
    assert EVIDENCE.verdict(1_000) is FlagEvidence.UNTESTED
    for bar, entry in doc["bar_ms"].items():
        shown = all(s["beats"] and s["margin_lo"] > 0 for s in entry["series"])
        assert entry["verdict"] == ("demonstrated" if shown else "not_demonstrated"), bar
        for s in entry["series"]:
            assert s["margin_lo"] <= s["margin"] <= s["margin_hi"]


def test_the_envelope_carries_the_verdict_for_its_bar_length() -> None:
    cfg = steps.SignalConfig()
    scorer = EdgeScorer(cfg.edge, cfg.calibration)
    fstate = rstate = None
    tracker = IntervalTracker.for_model(scorer.vol_model)
    for b in coin_bars("BTC", n=40):
        fstate, fv = steps.update_features("f", cfg.features, fstate, b)
        rstate, item = steps.classify("r", cfg.regime, rstate, fv)
        scored = steps.score_bar("s", scorer, item, tracker)
    cases = ((1_000, "untested"), (300_000, "demonstrated"), (3_600_000, "not_demonstrated"))
    for bar_ms, want in cases:
        env = build_envelope(
            scored.features,
            scored.regime,
            scored.signals,
            scored.edge,
            scored.freshness,
            Producer("t", bar_ms, 1_000),
        )
        assert env["regime"]["flag_evidence"] == want
        SignalEnvelope.model_validate(env)
