"""Every envelope of a run in ``(timestamp_ms, coin)`` order, with bounded memory.

``tools.replay`` writes its output in that order, so two runs on the same input give the same
bytes. The flow emits envelopes nearly in that order, but not exactly (each coin's bars close when
its own watermark passes; a quiet coin's last bar closes only at its next event or at the end of
the input), so the output cannot be written as it comes without holding an unbounded tail. This
sink holds at most ``run_size`` envelopes (their JSON bytes, as encoded where they were built):
each full batch is sorted and spilled to a run file, and `OrderedEnvelopes.merged` streams every
run, merged, at the end (an external merge sort; the runs hardly overlap, so the merge is cheap).
Ties keep the order of arrival, as ``sorted`` would.
"""

from __future__ import annotations

import heapq
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from typing_extensions import override

from connectors.stored import envelope_bytes

Envelope = dict[str, Any]
Record = tuple[int, str, int, bytes]
"""``(timestamp_ms, coin, arrival number, JSON bytes)``: the sort key, then the payload."""

RUN_SIZE: Final = 8192
"""Envelopes held in memory before a sorted run is spilled (~30 MB of JSON)."""
_HEAD: Final = struct.Struct("<qQHI")  # timestamp_ms, arrival, coin length, JSON length
_BUFFER: Final = 1 << 16


class OrderedEnvelopes(DynamicSink[tuple[str, Envelope]]):
    """A Bytewax sink that keeps every envelope's bytes for `merged` (see the module docstring).

    Args:
        keep: hold the envelopes (False: only count them).
        run_size: envelopes held in memory before a run is spilled (default `RUN_SIZE`).
        spill_dir: where the runs go (a temporary directory inside it; default: the system's).
    """

    def __init__(
        self, *, keep: bool = True, run_size: int | None = None, spill_dir: Path | None = None
    ) -> None:
        run_size = RUN_SIZE if run_size is None else run_size
        if run_size < 1:
            msg = f"run_size must be >= 1, got {run_size!r}"
            raise ValueError(msg)
        self.keep = keep
        self.run_size = run_size
        self.spill_dir = spill_dir
        self.count = 0
        self.peak_held = 0
        """The most envelopes held in memory at once."""
        self._held: list[Record] = []
        self._runs: list[Path] = []
        self._dir: Path | None = None

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(self)

    def add(self, coin: str, env: Envelope) -> None:
        """One envelope, in arrival order."""
        self.count += 1
        if not self.keep:
            return
        held = self._held
        held.append((env["timestamp_ms"], coin, self.count, envelope_bytes(env)))
        if len(held) > self.peak_held:
            self.peak_held = len(held)
        if len(held) >= self.run_size:
            self._spill()

    @property
    def runs(self) -> int:
        """Runs spilled so far."""
        return len(self._runs)

    def _spill(self) -> None:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="hlsl-replay-", dir=self.spill_dir))
        path = self._dir / f"run-{len(self._runs):06d}"
        self._held.sort()
        with path.open("wb", buffering=_BUFFER) as fh:
            for ts, coin, n, raw in self._held:
                name = coin.encode()
                fh.write(_HEAD.pack(ts, n, len(name), len(raw)))
                fh.write(name)
                fh.write(raw)
        self._runs.append(path)
        self._held = []

    def merged(self) -> Iterator[bytes]:
        """Every envelope's JSON bytes in ``(timestamp_ms, coin)`` order (ties by arrival); the
        runs are removed afterwards."""
        held = sorted(self._held)
        self._held = []
        try:
            if not self._runs:
                yield from (raw for *_, raw in held)
                return
            streams = [_read_run(p) for p in self._runs]
            for *_, raw in heapq.merge(*streams, iter(held)):
                yield raw
        finally:
            self.close()

    def close(self) -> None:
        """Remove the spilled runs (also done by `merged` once it is exhausted)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._runs = []


def _read_run(path: Path) -> Iterator[Record]:
    with path.open("rb", buffering=_BUFFER) as fh:
        yield from _records(fh)


def _records(fh: IO[bytes]) -> Iterator[Record]:
    size = _HEAD.size
    while True:
        head = fh.read(size)
        if len(head) < size:
            return
        ts, n, name_len, raw_len = _HEAD.unpack(head)
        coin = fh.read(name_len).decode()
        yield ts, coin, n, fh.read(raw_len)


class _Partition(StatelessSinkPartition[tuple[str, Envelope]]):
    def __init__(self, sink: OrderedEnvelopes) -> None:
        self._sink = sink

    @override
    def write_batch(self, items: list[tuple[str, Envelope]]) -> None:
        add = self._sink.add
        for coin, env in items:
            add(coin, env)


__all__ = ["RUN_SIZE", "OrderedEnvelopes"]
