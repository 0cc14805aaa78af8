"""`connectors.routing`: a coin's replay partition is read on the process that keeps its state.

The speed of a partitioned replay on several processes rests on `state_worker` agreeing with how
Bytewax routes keyed state; the two-process test below runs a real Bytewax cluster to prove it
(and fails if a Bytewax upgrade changes the hash: events would then cross processes again).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from connectors.routing import (
    ROUTE_SEP,
    balanced_routes,
    coin_of,
    owned,
    route_key,
    siphash13,
    state_worker,
)

REPO = Path(__file__).resolve().parents[2]


def test_siphash_matches_the_papers_test_vectors() -> None:
    # Aumasson & Bernstein, "SipHash: a fast short-input PRF", appendix A: key 00..0f, messages
    # of 0 and 15 bytes 00, 01, ...; the same rounds with c=1, d=3 are Rust's DefaultHasher.
    k0, k1 = 0x0706050403020100, 0x0F0E0D0C0B0A0908
    assert siphash13(b"", k0, k1, c=2, d=4) == 0x726FDB47DD0E0E31
    assert siphash13(bytes(range(15)), k0, k1, c=2, d=4) == 0xA129CA6149BE45E5
    assert siphash13(b"") != siphash13(b"\x00")
    assert siphash13(b"abcdefgh") != siphash13(b"abcdefg")
    # Different keys give the 64-bit range, not a constant.
    values = {siphash13(f"C{i:03d}".encode() + b"\xff") for i in range(200)}
    assert len(values) == 200
    assert all(0 <= v < 2**64 for v in values)


def test_state_worker_spreads_coins_and_owned_partitions_every_coin_once() -> None:
    coins = [f"C{i:03d}" for i in range(180)]
    for processes, per in [(2, 1), (3, 1), (2, 2)]:
        owners = [[p for p in range(processes) if owned(c, p, per, processes)] for c in coins]
        assert all(len(o) == 1 for o in owners)  # every coin read by exactly one process
        counts = [sum(1 for o in owners if o == [p]) for p in range(processes)]
        assert min(counts) > 180 / processes * 0.6, counts  # a hash, roughly even
    assert state_worker("BTC", 1) == 0


def test_a_route_key_lands_on_the_worker_asked_for() -> None:
    for workers in (2, 3, 4):
        for coin in ["BTC", "ETH", "kPEPE", "@107", "xyz:TSLA", *(f"C{i:03d}" for i in range(40))]:
            for worker in range(workers):
                key = route_key(coin, worker, workers)
                assert state_worker(key, workers) == worker
                assert coin_of(key) == coin
                # A coin already on that worker keeps its name; otherwise the key is salted.
                assert (key == coin) == (state_worker(coin, workers) == worker)
                if key != coin:
                    assert key.startswith(coin + ROUTE_SEP)
    with pytest.raises(ValueError, match="worker 2 is not one of 2"):
        route_key("BTC", 2, 2)


def _loads(weights: dict[str, float], routes: dict[str, str], workers: int) -> list[float]:
    load = [0.0] * workers
    for coin, w in weights.items():
        load[state_worker(routes.get(coin, coin), workers)] += w
    return load


def test_balanced_routes_even_out_what_the_hash_spreads_unevenly() -> None:
    # A market like the simulated one: a few heavy coins and a long tail.
    weights = {f"C{i:03d}": 1000.0 / (i + 1) for i in range(180)}
    for workers in (2, 3, 4):
        hashed = _loads(weights, {}, workers)
        routes = balanced_routes(weights, workers)
        load = _loads(weights, routes, workers)
        assert sum(load) == pytest.approx(sum(weights.values()))
        # LPT: the busiest worker is within a third of the heaviest coin of the average (its
        # bound), and less busy than the hash alone leaves it.
        assert max(load) - sum(load) / workers <= max(weights.values()) / 3 + 1e-9, load
        assert max(load) < max(hashed)
        assert all(coin_of(key) == coin for coin, key in routes.items())
        assert balanced_routes(dict(reversed(weights.items())), workers) == routes  # deterministic


def test_balanced_routes_move_nothing_when_the_hash_is_even_already() -> None:
    # Two equal coins the hash puts on different workers: neither moves.
    coins = [f"C{i:03d}" for i in range(50)]
    a = next(c for c in coins if state_worker(c, 2) == 0)
    b = next(c for c in coins if state_worker(c, 2) == 1)
    assert balanced_routes({a: 5.0, b: 5.0}, 2) == {}
    # The same two on one worker: the lighter-named tie goes to the free worker.
    c = next(x for x in coins if state_worker(x, 2) == 0 and x != a)
    routes = balanced_routes({a: 5.0, c: 5.0}, 2)
    assert len(routes) == 1
    assert sorted(_loads({a: 5.0, c: 5.0}, routes, 2)) == [5.0, 5.0]
    assert balanced_routes({a: 1.0, b: 2.0}, 1) == {}


FLOW = """
import os
import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.routing import owned, route_key
from flows.cluster import bytewax_cluster

KEYS = [f"C{i:03d}" for i in range(60)] + ["BTC", "ETH", "SOL", "HYPE", "kPEPE", "@107"]
KEYS += [route_key(f"R{i:02d}", i % 2, 2) for i in range(10)]  # balanced route keys
CLUSTER = bytewax_cluster()


class Part(StatefulSourcePartition):
    def __init__(self, key):
        self.key, self.done = key, False

    def next_batch(self):
        if self.done:
            raise StopIteration
        self.done = True
        return [(self.key, os.getpid())]

    def snapshot(self):
        return None


class Source(FixedPartitionedSource):
    def list_parts(self):
        c = CLUSTER
        return [k for k in KEYS if owned(k, c.process_id, c.workers_per_process, c.processes)]

    def build_part(self, step_id, for_part, resume_state):
        return Part(for_part)


def keep(state, source_pid):
    return None, (source_pid, os.getpid())


def write(item):
    key, (source_pid, state_pid) = item
    with open(os.environ["ROUTING_OUT"], "a") as fh:
        fh.write(f"{key.encode().hex()} {source_pid} {state_pid}\\n")
    return item


flow = Dataflow("routing")
stream = op.input("read", flow, Source())
op.inspect("done", op.map("write", op.stateful_map("keep", stream, keep), write))
"""


def _free_port_pair() -> int:
    for base in range(23100, 23900, 7):
        ok = True
        for port in (base, base + 1):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
        if ok:
            return base
    pytest.skip("no two free ports for a two-process Bytewax run")


def test_two_processes_keep_each_coin_where_its_partition_is_read(tmp_path: Path) -> None:
    (tmp_path / "routing_flow.py").write_text(textwrap.dedent(FLOW))
    out = tmp_path / "out.txt"
    base = _free_port_pair()
    addresses = f"127.0.0.1:{base};127.0.0.1:{base + 1}"
    env = dict(os.environ, ROUTING_OUT=str(out), PYTHONPATH=f"{tmp_path}:{REPO}")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "routing_flow", "-i", str(i), "-a", addresses],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    rows = [line.split() for line in out.read_text().splitlines()]
    assert len(rows) == 76  # every key once: each process listed its own, none twice
    assert sum(1 for key, _, _ in rows if b"\x1f" in bytes.fromhex(key)) > 0  # route keys ran
    assert len({state for _, _, state in rows}) == 2  # both processes kept state
    crossed = [key for key, source, state in rows if source != state]
    assert crossed == []  # no key's events left the process that read them
