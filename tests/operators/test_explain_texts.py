"""`operators.explain`: the words an agent reads follow the rules the classifier applies."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from operators.explain import explain_envelope
from operators.regime import VOL_MODEL, RegimeConfig, Rule
from tests.conftest import REPO

CFG = RegimeConfig()


@pytest.fixture
def env() -> dict[str, Any]:
    """A warmed-up envelope of the sample replay (the golden record's last one)."""
    golden = json.loads((REPO / "tests" / "golden" / "sample_envelopes.json").read_text())
    out = copy.deepcopy(golden[max(golden, key=int)])
    assert not out["warmup"]["warming_up"]
    return dict(out)


def _caveats(env: dict[str, Any]) -> str:
    return " ".join(explain_envelope(env).caveats)


def test_a_pending_change_counts_by_the_rule_that_leaves_the_label(env: dict[str, Any]) -> None:
    reg = env["regime"]
    reg.update(
        label="LIQUIDATION_RISK", candidate="CHAOTIC", candidate_count=2, rule=Rule.HOLD.value
    )
    assert f"pending (2 of {CFG.liq_exit_confirm} bars without a cascade" in _caveats(env)
    reg.update(label="CHAOTIC", candidate="TRENDING", risk_ratio=None)
    assert f"pending (2 of {CFG.risk_exit_confirm} unflagged bars" in _caveats(env)
    reg.update(label="TRENDING", candidate="MEAN_REVERTING")
    text = _caveats(env)
    assert f"(2 of {CFG.confirm} bars to confirm, once the label has held {CFG.min_dwell}" in text
    assert CFG.liq_exit_confirm != CFG.confirm  # the counts differ, so the test can tell


def test_rule_meanings_say_what_raw_call_does(env: dict[str, Any]) -> None:
    env["regime"].update(rule=Rule.HOLD.value, label="TRENDING", candidate="MEAN_REVERTING")
    ex = explain_envelope(env)
    assert "a rule fired for a different label" in ex.rule_meaning
    assert "not yet confirmed by hysteresis" in ex.rule_meaning
    env["regime"].update(rule=Rule.CHAOS.value, label="CHAOTIC", candidate=None)
    ex = explain_envelope(env)
    assert f"vol_expansion_ratio >= {CFG.flag_ver:g} at any efficiency" in ex.rule_meaning
    assert f"efficiency_ratio < {CFG.chaos_max_er:g}" in ex.rule_meaning
    env["regime"].update(rule=Rule.CASCADE.value, label="LIQUIDATION_RISK")
    ex = explain_envelope(env)
    assert f"at least {CFG.liq_move_z:g} of the coin's norm standard deviations" in (
        ex.rule_meaning
    )
    assert f"(move_z - {CFG.liq_move_z:g}) / {CFG.liq_move_z:g}" in ex.margin_meaning
    env["regime"].update(rule=Rule.TREND.value, label="TRENDING")
    assert "|momentum_z|" in explain_envelope(env).margin_meaning


def test_checks_are_the_conditions_raw_call_tests(env: dict[str, Any]) -> None:
    env["regime"]["risk_ratio"] = 1.2
    checks = explain_envelope(env).checks
    conditions = [c.condition for c in checks]
    # no threshold the rules no longer read
    assert not any("no stress input" in c for c in conditions)
    # with a risk ratio the cascade needs the flag, not an expansion of 2
    assert not any(
        c.rule == Rule.CASCADE and c.condition.startswith("vol_expansion_ratio") for c in checks
    )
    move = [c for c in checks if c.condition.startswith("move_z")]
    assert len(move) == 1
    assert move[0].value is None
    assert move[0].met is None
    assert move[0].threshold == CFG.liq_move_z
    # without one, a shock of liq_ver may be a cascade
    env["regime"]["risk_ratio"] = None
    checks = explain_envelope(env).checks
    shock = [
        c for c in checks if c.rule == Rule.CASCADE and c.condition.startswith("vol_expansion")
    ]
    assert [c.threshold for c in shock] == [CFG.liq_ver]


def test_the_summary_quotes_the_risk_flag(env: dict[str, Any]) -> None:
    env["regime"]["risk_ratio"] = 0.5
    summary = explain_envelope(env).summary
    assert VOL_MODEL is not None
    assert f"the risk flag at risk_ratio {VOL_MODEL.flag_enter:g}+ or expansion " in summary
    assert f"expansion {CFG.flag_ver:g}+" in summary
    assert "risk ratio 0.5;" in summary


def test_a_risk_label_without_demonstrated_evidence_says_so(env: dict[str, Any]) -> None:
    reg = env["regime"]
    reg.update(label="CHAOTIC", rule=Rule.VOL_STATE.value, candidate=None)
    for verdict in ("untested", "not_demonstrated"):
        reg["flag_evidence"] = verdict
        ex = explain_envelope(env)
        assert ex.flag_evidence == verdict
        assert f"the risk flag is {verdict} at this bar length" in " ".join(ex.caveats)
    reg["flag_evidence"] = "demonstrated"
    assert "the risk flag is" not in _caveats(env)
    # a calm label carries no such caveat; an envelope before 1.3 has no verdict
    reg.update(label="TRENDING", rule=Rule.TREND.value, flag_evidence="untested")
    assert "the risk flag is" not in _caveats(env)
    del reg["flag_evidence"]
    assert explain_envelope(env).flag_evidence is None
