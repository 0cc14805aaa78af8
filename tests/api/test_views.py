"""The REST ``?view=`` and ``?features=`` (`api.views`), as the MCP tools' views."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.app import create_app
from api.views import CompactSignal, compact_envelope
from connectors.store import SignalStore


def test_rest_view_and_features(sample_store: SignalStore) -> None:
    client = TestClient(create_app(sample_store, token=None))
    full = client.get("/v1/signal/BTC").json()  # the default stays full
    assert "features_missing" in full
    compact = client.get("/v1/signal/BTC", params={"view": "compact"}).json()
    CompactSignal.model_validate(compact)
    assert compact == compact_envelope(full)
    picked = client.get("/v1/signal/btc", params={"features": "mid_px,spread_bps"}).json()
    assert picked == compact_envelope(full, ["mid_px", "spread_bps"])
    assert client.get("/v1/signal/BTC", params={"view": "full", "features": "mid_px"}).json() == (
        full
    )
    listed = client.get("/v1/signals", params={"view": "compact"}).json()
    assert listed["count"] == 3
    assert all(e["view"] == "compact" for e in listed["data"])
    assert "features_missing" in client.get("/v1/signals").json()["data"][0]
    hist = client.get("/v1/signal/SOL/history", params={"limit": 3, "view": "compact"}).json()
    for env in hist["data"]:
        CompactSignal.model_validate(env)
    assert [e["coin"] for e in hist["data"]] == ["SOL"] * 3
    bad = client.get("/v1/signal/BTC", params={"features": "mid_px,midpx"})
    assert bad.status_code == 422
    assert bad.json()["detail"].startswith("features: unknown feature 'midpx'; features: mid_px")
    assert client.get("/v1/signals", params={"view": "tiny"}).status_code == 422


def test_the_edge_score_text_states_the_shipped_tables_skill_verdicts() -> None:
    from api.views import EDGE_SCORE_MEANING
    from operators.edge import CALIBRATION

    assert CALIBRATION is not None
    assert CALIBRATION.version in EDGE_SCORE_MEANING
    skilled = [h for h, hc in CALIBRATION.horizons.items() if hc.skill]
    if skilled:
        assert all(f"{h} ms" in EDGE_SCORE_MEANING for h in skilled)
    else:
        assert "no horizon has demonstrated skill" in EDGE_SCORE_MEANING
