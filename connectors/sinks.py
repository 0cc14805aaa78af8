"""Bytewax sinks: envelopes into the in-memory `SignalStore` (and, optionally, a list, an NDJSON
log and a shared store).

Each envelope is encoded once (`connectors.stored.StoredEnvelope`: its ``orjson.dumps`` bytes plus
the typed fields freshness needs); the store keeps those bytes, ``--signals-out`` writes the same
bytes and a shared store (`connectors.redis_store.RedisWriter`) is handed the same bytes, so
nothing is encoded twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, Protocol

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from typing_extensions import override

from connectors.store import SignalStore, StoredEnvelope

Envelope = dict[str, Any]


class SharedWriter(Protocol):
    """Where the sink hands each envelope's bytes for a shared store (must not block)."""

    def submit(self, items: Iterable[tuple[str, int | None, bytes, int | None]]) -> None:
        """``(coin, timestamp_ms, bytes, source clock)`` per envelope."""


class _StorePartition(StatelessSinkPartition[tuple[str, Envelope]]):
    def __init__(
        self,
        store: SignalStore,
        collect: list[tuple[str, Envelope]] | None,
        log_file: IO[bytes] | None,
        shared: SharedWriter | None = None,
    ) -> None:
        self._store = store
        self._collect = collect
        self._log = log_file
        self._shared = shared

    @override
    def write_batch(self, items: list[tuple[str, Envelope]]) -> None:
        recs = [(coin, StoredEnvelope(env)) for coin, env in items]
        # rec.raw is orjson.dumps(env), taken before the store compacts superseded envelopes
        lines = None if self._log is None else b"".join(rec.raw + b"\n" for _, rec in recs)
        if self._shared is not None:
            now = self._store.now_ms()
            self._shared.submit([(coin, rec.timestamp_ms, rec.raw, now) for coin, rec in recs])
        self._store.put_many(recs)
        if self._collect is not None:
            self._collect.extend(items)
        if self._log is not None and lines is not None:
            self._log.write(lines)
            self._log.flush()

    @override
    def close(self) -> None:
        if self._log is not None:
            self._log.close()


class StoreSink(DynamicSink[tuple[str, Envelope]]):
    """Writes ``(coin, envelope)`` items into a `SignalStore`.

    Args:
        store: the store the API reads.
        collect: also append every item here (replay tool, tests).
        on_build: called once when the flow starts writing (e.g. to start the API server).
        log_path: append every envelope to this NDJSON file (each names its code version).
        shared: also hand every envelope's bytes to this shared-store writer.
    """

    def __init__(
        self,
        store: SignalStore,
        collect: list[tuple[str, Envelope]] | None = None,
        on_build: Callable[[], None] | None = None,
        log_path: str | Path | None = None,
        shared: SharedWriter | None = None,
    ) -> None:
        self.store = store
        self.shared = shared
        self.collect = collect
        self.on_build = on_build
        self.log_path = None if log_path is None else Path(log_path)

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StorePartition:
        if self.on_build is not None and worker_index == 0:
            self.on_build()
        log_file = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log_file = self.log_path.open("ab")  # appended: the as-of history survives restarts
        return _StorePartition(self.store, self.collect, log_file, self.shared)
