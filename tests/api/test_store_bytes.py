"""The store keeps each envelope as its JSON bytes plus typed freshness fields.

- the bytes are exactly ``orjson.dumps(env)`` (so ``--signals-out`` and history are unchanged);
- an envelope encoded where it was built (`EncodedEnvelope`) is stored exactly as the same dict
  encoded by the store, and any copy of it is a plain dict;
- freshness spliced into the bytes at any source-clock time equals the old dict path
  (`api.signals.refresh` then ``orjson.dumps``), stale and actionable cases included;
- history is bounded, superseded envelopes are compressed and still served as emitted;
- the envelope is treated generically (extra fields flow through; odd ones are served as stored);
- memory: bytes per stored envelope under a stated budget (tracemalloc, no timing).
"""

from __future__ import annotations

import copy
import gc
import tracemalloc
from typing import Any

import orjson
import pytest

from api.signals import history_json, list_json, refresh
from connectors.store import RunState, SignalStore, StoredEnvelope
from connectors.stored import EncodedEnvelope, encode_envelope
from flows.pipeline import Pipeline, build_pipeline, run_pipeline
from flows.settings import Settings
from tools.bench_reference import FALLBACK as SAMPLE

Envelope = dict[str, Any]

HISTORY_ENVELOPE_BUDGET = 2_600
"""Bytes a superseded (history) envelope may cost, measured: ~1.7-2.1 KB (zlib'd JSON + fields)."""

LATEST_ENVELOPE_BUDGET = 5_000
"""Bytes a coin's latest envelope may cost, measured: ~4.0-4.5 KB (JSON bytes + fields)."""


@pytest.fixture(scope="module")
def replayed() -> Pipeline:
    pipeline = build_pipeline(Settings(replay=[str(SAMPLE)], api=False), collect=True)
    run_pipeline(pipeline)
    assert pipeline.store.state is RunState.FINISHED, pipeline.store.error
    return pipeline


@pytest.fixture(scope="module")
def envelopes(replayed: Pipeline) -> list[Envelope]:
    return [env for _, env in replayed.collected or []]


def _actionable(envelopes: list[Envelope]) -> list[Envelope]:
    """Fresh, directional envelopes marked actionable (no bar of the sample is, net of costs:
    these tests are about what serving does with an actionable signal whose inputs go stale)."""
    out = []
    for env in envelopes:
        if env["edge"]["direction"] != "FLAT" and env["freshness"]["status"] == "ok":
            marked = copy.deepcopy(env)
            marked["edge"]["actionable"] = True
            out.append(marked)
    return out[::10]


def test_bytes_are_orjson_dumps(envelopes: list[Envelope]) -> None:
    assert len(envelopes) > 500
    for env in envelopes:
        rec = StoredEnvelope(env)
        assert rec.raw == orjson.dumps(env)
        assert rec.envelope() == env
        rec.compact()
        assert rec.compressed
        assert rec.raw == orjson.dumps(env)


def _fields(rec: StoredEnvelope) -> tuple[Any, ...]:
    return tuple(getattr(rec, name) for name in StoredEnvelope.__slots__)


def test_envelopes_encoded_where_built_are_stored_as_the_store_would(
    envelopes: list[Envelope],
) -> None:
    assert all(type(env) is EncodedEnvelope for env in envelopes)
    variants = [*envelopes, *_actionable(envelopes)]
    for env in variants:
        plain = dict(env) if type(env) is EncodedEnvelope else copy.deepcopy(env)
        assert type(plain) is dict
        encoded = encode_envelope(plain)
        assert type(encoded) is EncodedEnvelope
        assert encoded == plain
        assert _fields(StoredEnvelope(encoded)) == _fields(StoredEnvelope(plain))
    # copies are plain dicts (an edited copy is encoded afresh)
    env = envelopes[-1]
    for copied in (copy.copy(env), copy.deepcopy(env)):
        assert type(copied) is dict
        assert copied == env
    # another layout is left to the store's generic encoding
    odd = dict(envelopes[-1])
    odd["extra"] = 1
    assert encode_envelope(odd) is odd
    odd = dict(envelopes[-1], edge={**envelopes[-1]["edge"], "explain": [1]})
    assert encode_envelope(odd) is odd


@pytest.mark.parametrize("offset_ms", [None, 0, 400, 2_500, 12_000, 90_000, 3_600_000])
def test_spliced_freshness_equals_the_dict_path(
    envelopes: list[Envelope], offset_ms: int | None
) -> None:
    actionable = _actionable(envelopes)
    assert actionable, "the sample has actionable envelopes"
    for env in envelopes[::7] + actionable:
        now = None if offset_ms is None else env["timestamp_ms"] + offset_ms
        rec = StoredEnvelope(env)
        expected = orjson.dumps(refresh(env, now))
        assert rec.json_at(now) == expected
        rec.compact()
        assert rec.json_at(now) == expected
        view = refresh(env, now)
        assert rec.status_at(now) == view["freshness"]["status"]
        assert rec.actionable_at(now) == view["edge"]["actionable"]


def test_stale_actionable_splices_edge(envelopes: list[Envelope]) -> None:
    env = _actionable(envelopes)[0]
    late = env["timestamp_ms"] + 3_600_000
    for explain in ([], ["NET_EDGE_POSITIVE"], ["STALE_INPUT"], ["A", "STALE_INPUT", "B"]):
        variant = copy.deepcopy(env)
        variant["edge"]["explain"] = explain
        out = orjson.loads(StoredEnvelope(variant).json_at(late))
        assert out == refresh(variant, late)
        assert out["edge"]["actionable"] is False
        assert out["edge"]["explain"].count("STALE_INPUT") == 1


def test_stale_now_lists_stale_input_even_when_the_bar_was_not_actionable(
    envelopes: list[Envelope],
) -> None:
    # README: "a signal whose inputs went stale is served with actionable: false and STALE_INPUT"
    # -- whatever the bar said (before #10 the code was added only to actionable bars).
    env = next(e for e in envelopes if not e["edge"]["actionable"] and e["freshness"]["streams"])
    assert "STALE_INPUT" not in env["edge"]["explain"]
    late = env["timestamp_ms"] + 3_600_000
    rec = StoredEnvelope(env)
    out = orjson.loads(rec.json_at(late))
    assert out == refresh(env, late)
    assert out["freshness"]["status"] == "stale"
    assert out["edge"]["actionable"] is False
    assert out["edge"]["explain"][-1] == "STALE_INPUT"
    assert out["edge"]["explain"][:-1] == env["edge"]["explain"]
    fresh_now = orjson.loads(rec.json_at(env["timestamp_ms"]))
    assert "STALE_INPUT" not in fresh_now["edge"]["explain"]


def test_envelope_is_stored_generically(envelopes: list[Envelope]) -> None:
    env = copy.deepcopy(_actionable(envelopes)[0])
    env["degraded"] = {"step": "features", "reason": "ZeroDivisionError"}  # a future field
    late = env["timestamp_ms"] + 3_600_000
    rec = StoredEnvelope(env)
    assert rec.raw == orjson.dumps(env)
    assert orjson.loads(rec.json_at(late)) == refresh(env, late)

    # clocks that are not plain ints are judged from the Python values, exactly as before
    odd = copy.deepcopy(envelopes[-1])
    odd["freshness"]["streams"]["trades"]["expected_interval_ms"] = 812.5
    assert StoredEnvelope(odd).json_at(odd["timestamp_ms"] + 5000) == orjson.dumps(
        refresh(odd, odd["timestamp_ms"] + 5000)
    )

    # without a freshness block (or with one it cannot judge) it is served as stored
    for partial in (
        {"timestamp_ms": 5, "coin": "BTC"},
        {"timestamp_ms": 5, "freshness": {"streams": {"nope": {}}}},
        {"timestamp_ms": "x", "freshness": envelopes[0]["freshness"]},
    ):
        rec = StoredEnvelope(partial)
        assert rec.json_at(10**13) == orjson.dumps(partial)
    with pytest.raises(TypeError):
        StoredEnvelope({1: "non-str key"})  # type: ignore[dict-item]


def test_history_is_bounded_compacted_and_served_as_emitted(envelopes: list[Envelope]) -> None:
    btc = [e for e in envelopes if e["coin"] == "BTC"]
    store = SignalStore(history_limit=60, coins=["BTC"])
    for i in range(0, len(btc), 25):
        store.put_many(("BTC", e) for e in btc[i : i + 25])
    recs = store.record_history("BTC")
    assert len(recs) == 60
    assert [r.compressed for r in recs] == [True] * 59 + [False]  # only the latest is plain
    assert store.history("BTC") == btc[-60:]
    body = orjson.loads(history_json("BTC", recs[-5:]))
    assert body == {"coin": "BTC", "data": btc[-5:], "count": 5}
    now = btc[-1]["timestamp_ms"] + 4000
    listed = orjson.loads(list_json(store.records().values(), now))
    assert listed == {"data": [refresh(btc[-1], now)], "count": 1}
    assert store.memory()["envelopes"] == 60


def _traced_bytes(build: Any) -> tuple[Any, int]:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        gc.collect()
        return kept, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_bytes_per_stored_envelope_within_budget(envelopes: list[Envelope]) -> None:
    sample = envelopes[-300:]
    encoded = [orjson.dumps(e) for e in sample]

    # what a dict envelope costs (the old store kept these): decoded afresh, nothing shared
    dicts, dict_bytes = _traced_bytes(lambda: [orjson.loads(b) for b in encoded])
    per_dict = dict_bytes / len(dicts)

    def stored(compact: bool) -> list[StoredEnvelope]:
        recs = [StoredEnvelope(d) for d in dicts]
        if compact:
            for r in recs:
                r.compact()
        return recs

    latest, latest_bytes = _traced_bytes(lambda: stored(False))
    history, history_bytes = _traced_bytes(lambda: stored(True))
    per_latest = latest_bytes / len(latest)
    per_history = history_bytes / len(history)
    print(
        f"bytes/envelope: dict {per_dict:.0f}, latest {per_latest:.0f}, history {per_history:.0f}"
    )
    assert per_latest < LATEST_ENVELOPE_BUDGET
    assert per_history < HISTORY_ENVELOPE_BUDGET
    assert per_history < per_dict / 3
    assert abs(sum(r.nbytes() for r in history) - history_bytes) < 0.25 * history_bytes
