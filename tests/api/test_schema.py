"""The envelope contract: the committed JSON Schema, the Pydantic model and real envelopes agree."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from pydantic import ValidationError

from api.schemas import Features, SignalEnvelope
from connectors.store import RunState
from flows.pipeline import build_pipeline, run_pipeline
from flows.settings import Settings
from operators.envelope import ENVELOPE_BOUNDS, SCHEMA_VERSION
from operators.failures import FLOAT_MAX, Bound
from operators.features import FEATURE_BOUNDS, FEATURE_NAMES
from tests.conftest import LIVE_CAPTURE, REPO, real_file

SCHEMA_PATH = REPO / "api" / "signal_envelope.schema.json"
REGENERATE = "python -m api.schemas > api/signal_envelope.schema.json"


@pytest.fixture(scope="module")
def envelopes() -> list[dict[str, Any]]:
    """Every envelope a replay of the real capture emits."""
    path = real_file(LIVE_CAPTURE)
    pipeline = build_pipeline(Settings(replay=[str(path)], api=False), collect=True)
    run_pipeline(pipeline)
    assert pipeline.store.state is RunState.FINISHED, pipeline.store.error
    envs = [env for _, env in pipeline.collected or []]
    assert len(envs) > 1000
    return envs


def _committed_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


def test_committed_schema_matches_the_model() -> None:
    assert SCHEMA_PATH.is_file(), f"{SCHEMA_PATH} is missing; generate it with `{REGENERATE}`"
    committed = _committed_schema()
    current = SignalEnvelope.model_json_schema()
    assert committed == current, (
        f"{SCHEMA_PATH.name} has drifted from api.schemas.SignalEnvelope; "
        f"regenerate it with `{REGENERATE}` and commit the result"
    )


def test_every_real_envelope_validates_against_the_model(envelopes: list[dict[str, Any]]) -> None:
    for env in envelopes:
        model = SignalEnvelope.model_validate(env)
        # the model adds nothing and drops nothing: the dict is already in its exact shape
        assert model.model_dump(mode="json") == env


def test_every_real_envelope_validates_against_the_committed_schema(
    envelopes: list[dict[str, Any]],
) -> None:
    jsonschema = pytest.importorskip(
        "jsonschema", reason="the jsonschema package is not installed (not a project dependency)"
    )
    schema = _committed_schema()
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    for env in envelopes:
        errors = list(validator.iter_errors(env))
        assert not errors, (env["coin"], env["timestamp_ms"], [e.message for e in errors[:3]])


def test_features_model_follows_feature_names_in_order() -> None:
    assert list(Features.model_fields) == list(FEATURE_NAMES)


def test_envelope_features_are_in_feature_names_order(envelopes: list[dict[str, Any]]) -> None:
    for env in envelopes:
        assert list(env["features"]) == list(FEATURE_NAMES)


def test_features_missing_names_real_null_features(envelopes: list[dict[str, Any]]) -> None:
    """A reason in ``features_missing`` is only given for a feature that is null."""
    for env in envelopes:
        for name, reason in env["features_missing"].items():
            assert name in FEATURE_NAMES, name
            assert isinstance(reason, str), (name, reason)
            assert reason, name
            assert env["features"][name] is None, (env["coin"], env["timestamp_ms"], name)


def test_every_null_feature_has_a_reason(envelopes: list[dict[str, Any]]) -> None:
    """A null feature is never silent: ``features_missing`` says why (api/schemas.py Features)."""
    silent: dict[str, int] = {}
    example: dict[str, tuple[str, int]] = {}
    for env in envelopes:
        for name, value in env["features"].items():
            if value is None and name not in env["features_missing"]:
                silent[name] = silent.get(name, 0) + 1
                example.setdefault(name, (env["coin"], env["timestamp_ms"]))
    assert not silent, f"null features without a reason (count, first coin/bar): {silent} {example}"


# -- ranges (issue #8): defined once in the operators, carried by the schema ----------------------


def _prop(schema: dict[str, Any], path: list[str]) -> dict[str, Any]:
    """The JSON-schema node of a dotted path (``*``: the values of a map)."""
    defs = schema["$defs"]
    node: dict[str, Any] = schema
    for part in path:
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    return node


def _limits(node: dict[str, Any]) -> dict[str, float]:
    numeric = [n for n in node.get("anyOf", [node]) if n.get("type") in ("number", "integer")]
    assert len(numeric) == 1, node
    keys = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
    return {k: numeric[0][k] for k in keys if k in numeric[0]}


def _expected(b: Bound) -> dict[str, float]:
    out: dict[str, float] = {}
    if b.lo != -FLOAT_MAX:
        out["exclusiveMinimum" if b.strict else "minimum"] = b.lo
    if b.hi != FLOAT_MAX:
        out["maximum"] = b.hi
    return out


def test_the_schema_carries_every_documented_range() -> None:
    schema = _committed_schema()
    paths = {f"features.{n}": b for n, b in FEATURE_BOUNDS.items()} | dict(ENVELOPE_BOUNDS)
    ranged = 0
    for path, bound in paths.items():
        limits = _limits(_prop(schema, path.split(".")))
        assert limits == _expected(bound), (path, limits, bound)
        ranged += bool(limits)
    assert ranged >= 50
    # the conventions' examples
    assert _limits(_prop(schema, ["features", "mid_px"])) == {"exclusiveMinimum": 0.0}
    assert _limits(_prop(schema, ["features", "tob_imbalance"])) == {"minimum": -1, "maximum": 1}
    assert _limits(_prop(schema, ["features", "vpin"])) == {"minimum": 0, "maximum": 1}
    assert _limits(_prop(schema, ["edge", "p_right"])) == {"minimum": 0, "maximum": 1}


def test_schema_1_1_adds_the_degraded_block_and_step_error() -> None:
    schema = _committed_schema()
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert "degraded" in schema["required"]
    degraded = schema["$defs"]["Degraded"]
    assert set(degraded["properties"]) == {"step", "reason"}
    assert "STEP_ERROR" in schema["$defs"]["Explain"]["enum"]
    assert "step_error" in schema["$defs"]["Rule"]["enum"]


def test_the_model_refuses_non_finite_and_out_of_range_numbers(
    envelopes: list[dict[str, Any]],
) -> None:
    env = copy.deepcopy(envelopes[-1])
    SignalEnvelope.model_validate(env)
    for path, bad in (
        (("features", "momentum_bps"), math.nan),
        (("features", "spread_bps"), -1.0),
        (("features", "mid_px"), 0.0),
        (("edge", "raw_score"), math.inf),
        (("signals", "risk"), 1.5),
    ):
        broken = copy.deepcopy(env)
        broken[path[0]][path[1]] = bad
        with pytest.raises(ValidationError):
            SignalEnvelope.model_validate(broken)


def test_schema_1_2_adds_the_forecast_and_the_honest_regime() -> None:
    """#9: additive only: the forecast block with ranges, regime.risk_ratio/stale, new rules and
    explain codes; RegimeLabel keeps exactly its five values."""
    schema = _committed_schema()
    assert SCHEMA_VERSION in ("1.2", "1.3")
    assert "forecast" in schema["required"]
    fc = schema["$defs"]["VolForecast"]
    assert set(fc["properties"]) == {"horizon_ms", "vol_bps", "vol_p10_bps", "vol_p90_bps", "model"}
    for name in ("vol_bps", "vol_p10_bps", "vol_p90_bps"):
        assert _limits(fc["properties"][name]) == {"minimum": 0}
    assert _limits(fc["properties"]["horizon_ms"]) == {"exclusiveMinimum": 0}
    assert _limits(_prop(schema, ["regime", "risk_ratio"])) == {"minimum": 0}
    rules = set(schema["$defs"]["Rule"]["enum"])
    assert {"no_rule_fired", "forecast_vol_high", "no_new_data", "between_thresholds"} <= rules
    codes = set(schema["$defs"]["Explain"]["enum"])
    assert {"NO_DEMONSTRATED_SKILL", "NO_RULE_FIRED", "NO_NEW_DATA", "VOL_FORECAST_HIGH"} <= codes
    assert schema["$defs"]["RegimeLabel"]["enum"] == [
        "TRENDING",
        "MEAN_REVERTING",
        "LIQUIDATION_RISK",
        "CHAOTIC",
        "UNKNOWN",
    ]


def test_the_risk_ratio_description_is_the_shipped_models() -> None:
    """`regime.risk_ratio`'s description states the flag's thresholds as the shipped volatility
    model holds them, and when rho is null, as `operators.forecast.risk_ratio` decides it."""
    from dataclasses import replace

    from api.signal_envelope import _risk_ratio_meaning
    from operators.forecast import RISK_MIN_RETURNS
    from operators.regime import VOL_MODEL, RegimeConfig

    assert VOL_MODEL is not None
    schema = SignalEnvelope.model_json_schema()
    text = schema["$defs"]["Regime"]["properties"]["risk_ratio"]["description"]
    assert text == _risk_ratio_meaning(VOL_MODEL)
    assert f"raised at rho >= {VOL_MODEL.flag_enter:g}" in text
    assert VOL_MODEL.version in text
    assert f"{RISK_MIN_RETURNS} returns and a day of bars" in text
    assert f"vol_expansion_ratio >= {RegimeConfig().flag_ver:g}; null until" in text
    # no band in the shipped model (exit = enter), so no stay level is claimed
    assert VOL_MODEL.flag_exit == VOL_MODEL.flag_enter
    assert "kept while rho" not in text
    banded = _risk_ratio_meaning(replace(VOL_MODEL, flag_exit=0.8))
    assert "raised at rho >= 1, kept while rho >= 0.8" in banded
    assert "always null (no volatility model)" in _risk_ratio_meaning(None)
    # the flag without rho, as operators.regime.raw_call applies it
    cfg = RegimeConfig()
    assert (
        f"vol_expansion_ratio >= {cfg.chaos_enter_ver:g} (kept while >= {cfg.chaos_exit_ver:g}) "
        f"with efficiency_ratio < {cfg.chaos_max_er:g}" in text
    )


def test_schema_1_3_adds_the_risk_flags_evidence() -> None:
    """#9: regime.flag_evidence, required, one of three stable values, its description naming
    the shipped table and the bar lengths it demonstrates."""
    from operators.flag_evidence import EVIDENCE

    schema = _committed_schema()
    assert SCHEMA_VERSION == "1.3"
    regime = schema["$defs"]["Regime"]
    assert "flag_evidence" in regime["required"]
    assert schema["$defs"]["FlagEvidence"]["enum"] == [
        "demonstrated",
        "not_demonstrated",
        "untested",
    ]
    text = regime["properties"]["flag_evidence"]["description"]
    assert EVIDENCE.version in text
    assert "Demonstrated bar lengths in the shipped table" in text
    assert "300,000 ms" in text
    assert "3,600,000 ms" not in text
