"""A step error in the real pipeline: the flow finishes, the bar is published degraded, and the
error is counted in ``/metrics`` (``hlsl_step_errors_total{step,coin}``) and ``/v1/state``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.schemas import SignalEnvelope
from connectors.store import RunState
from flows.pipeline import build_pipeline, run_pipeline
from flows.settings import Settings
from operators.failures import STEP_ERRORS
from operators.features import FeatureState
from tests.api.test_metrics import labelled, scrape
from tests.conftest import SAMPLE

NTH = 100
"""The BTC bar (counting from 1) whose features fail."""


@pytest.fixture(autouse=True)
def _fresh_counters() -> Iterator[None]:
    STEP_ERRORS.reset()
    yield
    STEP_ERRORS.reset()


def test_a_failing_bar_is_counted_and_the_replay_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    update = FeatureState.update
    seen = {"n": 0}

    def failing(self: FeatureState, bar: Any) -> Any:
        fv = update(self, bar)
        if bar.coin == "BTC":
            seen["n"] += 1
            if seen["n"] == NTH:
                msg = "injected"
                raise RuntimeError(msg)
        return fv

    monkeypatch.setattr(FeatureState, "update", failing)
    pipeline = build_pipeline(Settings(replay=[str(SAMPLE)], api=False), collect=True)
    run_pipeline(pipeline)
    store = pipeline.store
    assert store.state is RunState.FINISHED, store.error
    btc = [env for coin, env in pipeline.collected or [] if coin == "BTC"]
    assert len(btc) >= NTH + 1
    degraded = [env for env in btc if env["degraded"] is not None]
    assert len(degraded) == 1
    bad = degraded[0]
    assert bad is btc[NTH - 1]
    SignalEnvelope.model_validate(bad)
    assert bad["degraded"] == {"step": "compute_features", "reason": "RuntimeError: injected"}
    assert bad["edge"]["actionable"] is False
    assert bad["regime"] == btc[NTH - 2]["regime"]

    client = TestClient(create_app(store, token=None))
    m = scrape(client)
    assert labelled(m, "hlsl_step_errors_total", "coin") == {"BTC": 1.0}
    assert labelled(m, "hlsl_step_errors_total", "step") == {"compute_features": 1.0}
    state = client.get("/v1/state")
    assert state.status_code == 200, state.text
    assert state.json()["step_errors"] == {"compute_features": {"BTC": 1}}


def test_no_step_errors_no_samples() -> None:
    pipeline = build_pipeline(Settings(replay=[str(SAMPLE)], api=False))
    run_pipeline(pipeline)
    client = TestClient(create_app(pipeline.store, token=None))
    assert labelled(scrape(client), "hlsl_step_errors_total", "coin") == {}
    assert client.get("/v1/state").json()["step_errors"] == {}
