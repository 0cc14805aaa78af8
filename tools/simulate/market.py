"""A whole market at once: ``n`` synthetic coins in one receive-ordered stream of frames.

The simulator models four coins (BTC, ETH, SOL, HYPE). A whole-market run (``--market N``) runs
``⌈N/4⌉`` of those four-coin simulations, each with its own seed (``seed + k``), renames their
coins ``C000``, ``C001``, … and merges their frames by receive time, streaming (memory does not
grow with the length of the run). Each group's ``allMids`` keeps only its own renamed coins; the
``pong`` frames are group 0's; the acks of every group come first, as in a real capture.

Imports `tools.simulate.config` and `.simulator`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any, Final

from tools.simulate.config import SimConfig
from tools.simulate.simulator import generate

BASE: Final = ("BTC", "ETH", "SOL", "HYPE")
"""The simulated coins each group renames (in this order)."""


def market_coins(n_coins: int) -> list[str]:
    """The names of a whole-market run's coins: ``C000`` … (``n_coins`` of them)."""
    return [f"C{i:03d}" for i in range(n_coins)]


def rename(obj: Any, names: dict[str, str]) -> Any:
    """A frame with its coin names replaced (``coin``, ``s`` and the keys of ``mids``; a mid of
    a coin not in ``names`` is dropped)."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if k in ("coin", "s") and isinstance(v, str):
                out[k] = names.get(v, v)
            elif k == "mids" and isinstance(v, dict):
                out[k] = {names[c]: p for c, p in v.items() if c in names}
            else:
                out[k] = rename(v, names)
        return out
    if isinstance(obj, list):
        return [rename(x, names) for x in obj]
    return obj


def _group(k: int, config: SimConfig, names: dict[str, str]) -> Iterator[tuple[int, int, Any]]:
    for recv, frame in generate(config):
        if k and frame.get("channel") == "pong":
            continue
        yield recv, k, rename(frame, names)


def generate_market(
    n_coins: int,
    seconds: float,
    seed: int = 7,
    *,
    start_ms: int = SimConfig.start_ms,
    book_interval_ms: int = 1000,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Simulate ``n_coins`` coins: ``(receive_time_ns, frame)`` in non-decreasing receive time.

    Deterministic: the output depends only on the arguments.
    """
    if n_coins < 1:
        msg = f"n_coins must be >= 1, got {n_coins!r}"
        raise ValueError(msg)
    coins = market_coins(n_coins)
    groups = []
    for k in range(-(-n_coins // len(BASE))):
        names = dict(zip(BASE, coins[k * len(BASE) : (k + 1) * len(BASE)], strict=False))
        config = SimConfig(
            coins=tuple(names),
            seconds=seconds,
            seed=seed + k,
            start_ms=start_ms,
            book_interval_ms=book_interval_ms,
        )
        groups.append(_group(k, config, names))
    for recv, _k, frame in heapq.merge(*groups, key=_merge_key):
        yield recv, frame


def _merge_key(item: tuple[int, int, Any]) -> tuple[int, int]:
    return item[0], item[1]


__all__ = ["BASE", "generate_market", "market_coins", "rename"]
