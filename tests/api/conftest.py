"""Fixtures shared by the API tests."""

from __future__ import annotations

import pytest

from connectors.store import RunState, SignalStore
from flows.pipeline import build_pipeline, run_pipeline
from flows.settings import Settings
from tests.conftest import SAMPLE


@pytest.fixture(scope="module")
def sample_store() -> SignalStore:
    """``data/sample.ndjson.gz`` replayed once per test module through the whole flow."""
    pipeline = build_pipeline(Settings(replay=[str(SAMPLE)], api=False))
    run_pipeline(pipeline)
    assert pipeline.store.state is RunState.FINISHED, pipeline.store.error
    return pipeline.store
