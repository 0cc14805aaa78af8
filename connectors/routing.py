"""Which Bytewax worker keeps a key's state, so a replay partition can be read where its coin lives.

Bytewax 0.21 sends every item of a keyed stateful step (``fold_window``, ``stateful_map``) to
worker ``SipHash-1-3(key bytes + 0xFF, keys 0, 0) mod workers``: Rust's ``DefaultHasher`` over a
``String`` (its bytes, then the ``0xFF`` terminator ``str``'s ``Hash`` writes). A source partition,
on the other hand, is read by whichever worker Bytewax makes its primary among the workers that
list it. If a coin's partition were read on one process and its state kept on another, every
event of that coin would be pickled and sent across (on a whole market: half of all events, most
of the cost of a second process). So a partitioned replay lists a coin's partition only on the
process whose worker keeps that coin's state (`owned`).

This is knowledge of Bytewax's internals, used for speed only: were the hash to change, every
event would still reach its coin's state (Bytewax routes by key, whatever reads it), only through
the exchange again. ``tests/test_routing.py`` runs a two-process flow to prove the two agree.

The hash alone spreads a few heavy coins unevenly (on a simulated 180-coin market, one of two
processes got 56 % of the bytes), and a cluster is as slow as its busiest process. So a
partitioned replay, which knows every coin's input size before it starts, *balances*
(`balanced_routes`): it assigns coins to workers heaviest first, each to the least-loaded worker
(longest-processing-time-first, within 4/3 of the best assignment), and gives a coin that must
move a *route key*, ``coin + ROUTE_SEP + n`` with the smallest ``n`` whose hash lands on the
chosen worker. The flow keys its state by the route key and gives every envelope its coin back
before the sinks (`flows.wiring`); nothing a user sees carries a route key.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Final

_MASK: Final = 0xFFFF_FFFF_FFFF_FFFF


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def siphash13(data: bytes, k0: int = 0, k1: int = 0, *, c: int = 1, d: int = 3) -> int:
    """SipHash-c-d of ``data``; the defaults are Rust's ``DefaultHasher`` (SipHash-1-3, keys
    0, 0). ``c=2, d=4`` is the paper's SipHash-2-4 (its test vectors check this code)."""
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _MASK
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _MASK
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _MASK
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _MASK
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    size = len(data)
    end = size - size % 8
    for i in range(0, end, 8):
        (m,) = struct.unpack_from("<Q", data, i)
        v3 ^= m
        rounds(c)
        v0 ^= m
    last = (size & 0xFF) << 56
    for i, byte in enumerate(data[end:]):
        last |= byte << (8 * i)
    v3 ^= last
    rounds(c)
    v0 ^= last
    v2 ^= 0xFF
    rounds(d)
    return v0 ^ v1 ^ v2 ^ v3


def state_worker(key: str, workers: int) -> int:
    """The worker (0-based, of ``workers`` in the whole run) that keeps ``key``'s state."""
    if workers <= 1:
        return 0
    return siphash13(key.encode() + b"\xff") % workers


def owned(key: str, process_id: int, workers_per_process: int, processes: int) -> bool:
    """Whether ``key``'s state is kept by a worker of process ``process_id`` (workers are numbered
    process by process: process ``p`` runs workers ``p*w`` to ``p*w + w - 1``)."""
    worker = state_worker(key, processes * workers_per_process)
    return worker // workers_per_process == process_id


ROUTE_SEP: Final = "\x1f"
"""Between a coin and the salt of its route key (a control character no coin name holds)."""


def route_key(coin: str, worker: int, workers: int) -> str:
    """The key whose state lives on ``worker``: the coin itself if it hashes there, else
    ``coin + ROUTE_SEP + n`` for the smallest ``n >= 1`` that does (about ``workers`` tries)."""
    if not 0 <= worker < workers:
        msg = f"worker {worker} is not one of {workers}"
        raise ValueError(msg)
    if state_worker(coin, workers) == worker:
        return coin
    n = 1
    while state_worker(f"{coin}{ROUTE_SEP}{n}", workers) != worker:
        n += 1
    return f"{coin}{ROUTE_SEP}{n}"


def balanced_routes(weights: Mapping[str, float], workers: int) -> dict[str, str]:
    """Route keys that spread the coins' ``weights`` evenly over ``workers``.

    Longest processing time first: coins by weight, heaviest first (ties by name), each to the
    least-loaded worker, its own hash worker when that one is among the least loaded (so an
    already even spread moves nothing). Returns ``{coin: route key}`` for the coins that move;
    a coin not in it keeps its name as its key. Deterministic: every process of a cluster
    computes the same routes from the same weights.
    """
    if workers <= 1:
        return {}
    load = [0.0] * workers
    routes: dict[str, str] = {}
    for coin in sorted(weights, key=lambda c: (-weights[c], c)):
        least = min(load)
        home = state_worker(coin, workers)
        worker = home if load[home] == least else load.index(least)
        load[worker] += weights[coin]
        if worker != home:
            routes[coin] = route_key(coin, worker, workers)
    return routes


def coin_of(key: str) -> str:
    """The coin of a key (a route key or the coin itself)."""
    return key.split(ROUTE_SEP, 1)[0]


__all__ = [
    "ROUTE_SEP",
    "balanced_routes",
    "coin_of",
    "owned",
    "route_key",
    "siphash13",
    "state_worker",
]
