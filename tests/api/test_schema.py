"""The envelope contract: the committed JSON Schema, the Pydantic model and real envelopes agree."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.schemas import Features, SignalEnvelope
from api.store import RunState
from flows.settings import Settings
from flows.signal import build_pipeline, run_pipeline
from operators.features import FEATURE_NAMES
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
