"""``/v1/stream`` tells clients how long to wait before reconnecting (``retry:``, #10)."""

from __future__ import annotations

import httpx2

from api.app import create_app
from api.stream import RETRY_MS
from connectors.store import SignalStore
from tests.api.test_stream import serve, subscribers, wait_for


def test_every_stream_starts_with_one_retry_field() -> None:
    app = create_app(SignalStore(), token=None, sse_keepalive_s=0.2)
    with serve(app) as base, httpx2.Client(base_url=base, timeout=5) as client:
        for _ in range(2):  # each stream, not only the first
            with client.stream("GET", "/v1/stream") as r:
                assert r.status_code == 200
                lines = r.iter_lines()
                assert next(lines) == f"retry: {RETRY_MS}"
                assert next(lines) == ""  # its own block: no event is dispatched for it
                rest = [next(lines) for _ in range(4)]
                assert "retry" not in " ".join(rest), rest
                assert ": ping" in rest
                assert subscribers(app) == 1
            wait_for("the stream to end with its client", lambda: subscribers(app) == 0, 10)
    assert 1000 <= RETRY_MS <= 30_000
