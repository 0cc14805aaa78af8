"""Bytewax sinks: envelopes into the in-memory `SignalStore` (and, optionally, a list)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from typing_extensions import override

from api.store import SignalStore

Envelope = dict[str, Any]


class _StorePartition(StatelessSinkPartition[tuple[str, Envelope]]):
    def __init__(self, store: SignalStore, collect: list[tuple[str, Envelope]] | None) -> None:
        self._store = store
        self._collect = collect

    @override
    def write_batch(self, items: list[tuple[str, Envelope]]) -> None:
        self._store.put_many(items)
        if self._collect is not None:
            self._collect.extend(items)


class StoreSink(DynamicSink[tuple[str, Envelope]]):
    """Writes ``(coin, envelope)`` items into a `SignalStore`.

    Args:
        store: the store the API reads.
        collect: also append every item here (replay tool, tests).
        on_build: called once when the flow starts writing (e.g. to start the API server).
    """

    def __init__(
        self,
        store: SignalStore,
        collect: list[tuple[str, Envelope]] | None = None,
        on_build: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.collect = collect
        self.on_build = on_build

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StorePartition:
        if self.on_build is not None and worker_index == 0:
            self.on_build()
        return _StorePartition(self.store, self.collect)
