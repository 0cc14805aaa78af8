"""Order-book and trade-flow building blocks: OFI, the Stoikov micro-price, VPIN, book walks.

Pure, deterministic, picklable and O(1) (amortised) per event, so `operators.features` can run
them on every quote and print of a bar. Formulas are in DESIGN.md §4 (Features); references:

- OFI: Cont, Kukanov & Stoikov (2014), "The price impact of order book events", J. Financial
  Econometrics 12(1).
- Micro-price: Stoikov (2018), "The micro-price: a high-frequency estimator of future prices",
  Quantitative Finance 18(12).
- VPIN: Easley, López de Prado & O'Hara (2012), Review of Financial Studies 25(5), here with the
  exchange's exact aggressor side (no bulk-volume classification).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Final


def ofi_step(
    pb0: float, qb0: float, pa0: float, qa0: float, pb1: float, qb1: float, pa1: float, qa1: float
) -> float:
    """Order-flow imbalance ``e_n`` of one top-of-book transition (state 0 → state 1).

    ``e = 1{Pb1 ≥ Pb0}·qb1 − 1{Pb1 ≤ Pb0}·qb0 − 1{Pa1 ≤ Pa0}·qa1 + 1{Pa1 ≥ Pa0}·qa0``, in base
    coin: positive when bids are added or asks are taken (buying pressure).
    """
    e = 0.0
    if pb1 >= pb0:
        e += qb1
    if pb1 <= pb0:
        e -= qb0
    if pa1 <= pa0:
        e -= qa1
    if pa1 >= pa0:
        e += qa0
    return e


MAX_MOVE_TICKS: Final = 1.1
"""Largest mid change (in ticks) the micro-price learns from: half a tick or a tick, Stoikov's
set ``K`` (his estimator keeps ``|ΔM| ≤ 1.1`` ticks and drops the rest)."""
SPREAD_STATES: Final = 3
"""Spread states of the micro-price: one tick, two ticks, wider (the tick is the narrowest
positive spread the coin has shown)."""


class MicroPrice:
    """Online estimate of Stoikov's micro-price adjustment ``g(I, S)`` for one coin.

    The state is the imbalance ``I = q_b/(q_b + q_a)`` discretised into ``buckets`` equal
    states, and the spread state ``j`` (Stoikov conditions on the spread too): the spread in
    ticks, 1, 2 or wider, the tick being the narrowest positive spread seen. Every top-of-book
    state ``t`` (in time order) waits for the next change of the mid, at ``τ``; then
    ``(M_τ − M_t)/S_t`` is added to its cell ``(I, j)`` and the mirror image to ``(1 − I, j)``
    (Stoikov's symmetrisation, ``g(1 − I, j) = −g(I, j)``), unclipped. Only touch-level moves
    enter, as in Stoikov's estimator (the set ``K`` of mid changes: ``|M_τ − M_t| ≤ 1.1`` ticks,
    i.e. half a tick or a tick); a larger jump between two book snapshots is the book's
    coarseness, not what the touch imbalance predicts, and is dropped with the states waiting
    for it (neither credited nor clipped). The pending states of a cell share its spread state,
    so their mean ``1/S`` is used. Sums forget exponentially: each credited mid change multiplies
    them by ``1 − 1/memory``. ``g(I, j)`` is the cell mean once the cell holds at least
    ``min_obs`` (effective) observations, shrunk towards 0 (the mid: no information) by
    ``prior_obs`` pseudo-observations, ``g = Σ credits / (Σ weights + prior_obs)``: the
    posterior mean under a prior centred on the mid worth ``prior_obs`` observations, so a cell
    that has just warmed up on a few noisy credits moves the price by a fraction of their mean
    and a well-filled cell by nearly all of it. The micro-price is ``M + S·g(I, j)``. Nothing
    bounds ``g`` at one tick wide (a tick is a whole spread there): whether the micro-price stays
    in ``[bid, ask]`` is what the data say, measured in the evaluation report.
    """

    __slots__ = (
        "_decay",
        "_den",
        "_k",
        "_last_mid",
        "_min_obs",
        "_num",
        "_pn",
        "_prior",
        "_ps",
        "_tick",
        "_touched",
    )

    def __init__(
        self,
        buckets: int = 10,
        memory: float = 5000.0,
        min_obs: float = 20.0,
        prior_obs: float = 20.0,
    ) -> None:
        if buckets < 2 or memory < 1 or min_obs <= 0 or not 0 <= prior_obs < math.inf:
            msg = "need buckets >= 2, memory >= 1, min_obs > 0 and a finite prior_obs >= 0"
            raise ValueError(msg)
        self._prior = prior_obs
        self._k = buckets
        self._decay = 1.0 - 1.0 / memory
        self._min_obs = min_obs
        n = buckets * SPREAD_STATES
        self._num = [0.0] * n  # cell = spread state · buckets + imbalance bucket
        self._den = [0.0] * n
        self._pn = [0.0] * n  # pending states per cell (since the last mid change)
        self._ps = [0.0] * n  # pending Σ 1/S per cell
        self._touched: list[int] = []
        self._last_mid: float | None = None
        self._tick = math.inf

    def bucket(self, bid_sz: float, ask_sz: float) -> int:
        """The imbalance state of sizes ``bid_sz``, ``ask_sz`` (their sum must be > 0).

        Raises ValueError for sizes that give no state (negative, not finite, zero sum).
        """
        k = self._k
        total = bid_sz + ask_sz
        x = k * bid_sz / total if total > 0.0 else math.nan
        if not -1e-9 <= x <= k + 1e-9:  # also NaN: sizes from the wire that make no imbalance
            msg = f"no imbalance state for sizes {bid_sz!r}, {ask_sz!r}"
            raise ValueError(msg)
        b = int(x) if x > 0.0 else 0
        return b if b < k else k - 1

    def spread_state(self, spread: float) -> int:
        """0, 1 or 2: the spread is about one tick, two ticks, or wider."""
        ticks = spread / self._tick
        return 0 if ticks <= 1.5 else 1 if ticks <= 2.5 else 2

    def mark(self) -> tuple[object, ...]:
        """A copy of the (small) state, for `restore`."""
        return (
            tuple(self._num),
            tuple(self._den),
            tuple(self._pn),
            tuple(self._ps),
            tuple(self._touched),
            self._last_mid,
            self._tick,
        )

    def restore(self, mark: tuple[object, ...]) -> None:
        """Back to the state `mark` copied."""
        num, den, pn, ps, touched, last, tick = mark
        self._num = list(num)  # type: ignore[call-overload]
        self._den = list(den)  # type: ignore[call-overload]
        self._pn = list(pn)  # type: ignore[call-overload]
        self._ps = list(ps)  # type: ignore[call-overload]
        self._touched = list(touched)  # type: ignore[call-overload]
        self._last_mid = last  # type: ignore[assignment]
        self._tick = tick  # type: ignore[assignment]

    def observe(self, bid: float, bid_sz: float, ask: float, ask_sz: float) -> None:
        """Fold one top-of-book state (skipped when crossed, locked or without size)."""
        spread = ask - bid
        total = bid_sz + ask_sz
        if spread <= 0.0 or total <= 0.0 or bid_sz < 0.0 or ask_sz < 0.0:
            return
        k = self._k
        x = k * bid_sz / total
        inv = 1.0 / spread
        if not (0.0 <= x <= k + 1e-9 and inv < math.inf):  # NaN/inf sizes, sub-normal spread
            return
        mid = (bid + ask) * 0.5
        last = self._last_mid
        if mid != last and last is not None:
            self._resolve(mid - last)
        self._last_mid = mid
        if spread < self._tick:
            self._tick = spread
        b = int(x)
        if b >= k:
            b = k - 1
        cell = self.spread_state(spread) * k + b
        pn = self._pn
        if pn[cell] == 0.0:
            self._touched.append(cell)
        pn[cell] += 1.0
        self._ps[cell] += inv

    def _resolve(self, d: float) -> None:
        """The mid moved by ``d``: credit it to every pending state (and its mirror image) when
        it is a touch-level move (at most `MAX_MOVE_TICKS`); drop the pending states otherwise."""
        num, den, pn, ps = self._num, self._den, self._pn, self._ps
        if abs(d) > MAX_MOVE_TICKS * self._tick:
            for cell in self._touched:
                pn[cell] = 0.0
                ps[cell] = 0.0
            self._touched.clear()
            return
        lam = self._decay
        k = self._k
        for i in range(len(num)):
            num[i] *= lam
            den[i] *= lam
        for cell in self._touched:
            w = pn[cell]
            y = d * ps[cell] / w  # the move in spreads at the cell's mean spread
            x = w * y
            j, b = divmod(cell, k)
            m = j * k + (k - 1 - b)
            num[cell] += x
            den[cell] += w
            num[m] -= x
            den[m] += w
            pn[cell] = 0.0
            ps[cell] = 0.0
        self._touched.clear()

    def reset_pending(self) -> None:
        """Forget the states waiting for a mid change (an input gap: the next move is unseen)."""
        for cell in self._touched:
            self._pn[cell] = 0.0
            self._ps[cell] = 0.0
        self._touched.clear()
        self._last_mid = None

    def g(self, bid_sz: float, ask_sz: float, spread: float | None = None) -> float | None:
        """Expected next mid change in spreads for these sizes and spread (None:
        the one-tick state); None until the cell is warm."""
        total = bid_sz + ask_sz
        if bid_sz < 0.0 or ask_sz < 0.0 or not 0.0 < total < math.inf:
            return None
        j = 0 if spread is None or not spread > 0.0 else self.spread_state(spread)
        cell = j * self._k + self.bucket(bid_sz, ask_sz)
        den = self._den[cell]
        return self._num[cell] / (den + self._prior) if den >= self._min_obs else None

    def table(self, spread_state: int = 0) -> list[float | None]:
        """``g`` per imbalance bucket of one spread state (None where not warm)."""
        k = self._k
        lo = spread_state * k
        prior = self._prior
        return [
            n / (d + prior) if d >= self._min_obs else None
            for n, d in zip(self._num[lo : lo + k], self._den[lo : lo + k], strict=True)
        ]


class Vpin:
    """Volume-synchronised probability of informed trading with exact aggressor sides.

    Prints fill equal-volume buckets in order (a print larger than the room left is split across
    buckets). Bucket ``τ`` of size ``V_τ`` has buy and sell aggressor volume ``V^B_τ + V^S_τ =
    V_τ``; ``VPIN = Σ_τ |V^S_τ − V^B_τ| / Σ_τ V_τ`` over the last ``n`` completed buckets
    (``Σ|V^S − V^B|/(n·V)`` when all have the same size). The size of each new bucket is set
    by the caller when the bucket opens (the coin's own recent volume).
    """

    __slots__ = (
        "_buckets",
        "_buy",
        "_done",
        "_n",
        "_removed",
        "_sell",
        "_size",
        "_sum_i",
        "_sum_v",
    )

    def __init__(self, n: int = 50) -> None:
        if n < 1:
            msg = f"n must be >= 1, got {n!r}"
            raise ValueError(msg)
        self._n = n
        self._buckets: deque[tuple[float, float]] = deque()  # (|sell − buy|, size)
        self._sum_i = 0.0
        self._sum_v = 0.0
        self._removed = 0
        self._size = 0.0  # size of the open bucket (0: none open)
        self._buy = 0.0
        self._sell = 0.0
        self._done = 0

    @property
    def completed(self) -> int:
        """Buckets completed so far."""
        return self._done

    def _close(self, imbalance: float, size: float) -> None:
        buckets = self._buckets
        buckets.append((imbalance, size))
        self._sum_i += imbalance
        self._sum_v += size
        self._done += 1
        if len(buckets) > self._n:
            old_i, old_v = buckets.popleft()
            self._sum_i -= old_i
            self._sum_v -= old_v
            self._removed += 1
            if self._removed >= self._n:
                self._sum_i = sum(i for i, _ in buckets)
                self._sum_v = sum(v for _, v in buckets)
                self._removed = 0

    def mark(self) -> tuple[object, ...]:
        """A copy of the state (at most ``n`` buckets), for `restore`."""
        return (
            tuple(self._buckets),
            self._sum_i,
            self._sum_v,
            self._removed,
            self._size,
            self._buy,
            self._sell,
            self._done,
        )

    def restore(self, mark: tuple[object, ...]) -> None:
        """Back to the state `mark` copied."""
        buckets, si, sv, removed, size, buy, sell, done = mark
        self._buckets = deque(buckets)  # type: ignore[call-overload]
        self._sum_i, self._sum_v = si, sv  # type: ignore[assignment]
        self._removed, self._size = removed, size  # type: ignore[assignment]
        self._buy, self._sell, self._done = buy, sell, done  # type: ignore[assignment]

    def add(self, prints: Iterable[tuple[float, float, int]], bucket_size: float) -> None:
        """Fill buckets with prints ``(px, sz, side)``; new buckets get ``bucket_size``.

        A size that is not a finite positive number (only from a bad wire value) is skipped.
        """
        if not 0.0 < bucket_size < math.inf:
            return
        for _, sz, side in prints:
            if not sz < math.inf:
                continue
            while sz > 0.0:
                size = self._size
                if size <= 0.0:
                    size = self._size = bucket_size
                room = size - self._buy - self._sell
                if sz < room:
                    if side > 0:
                        self._buy += sz
                    else:
                        self._sell += sz
                    break
                # the print fills this bucket; whole buckets beyond it are all one side
                if side > 0:
                    self._buy += room
                else:
                    self._sell += room
                sz -= room
                self._close(abs(self._sell - self._buy), size)
                self._buy = self._sell = 0.0
                self._size = 0.0
                whole = int(sz // bucket_size)
                if whole > 0:
                    for _ in range(min(whole, self._n)):
                        self._close(bucket_size, bucket_size)
                    self._done += whole - min(whole, self._n)
                    sz -= whole * bucket_size
                    if sz <= bucket_size * 1e-12:
                        break

    def value(self, min_buckets: int) -> float | None:
        """VPIN over the last ``n`` buckets, None before ``min_buckets`` have completed."""
        if self._done < min_buckets or self._sum_v <= 0.0:
            return None
        x = self._sum_i / self._sum_v
        return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def walk_book(px: Sequence[float], sz: Sequence[float], notional: float) -> float | None:
    """Average fill price of a market order for ``notional`` (quote) against one side's levels.

    Levels best first. None when the visible levels hold less than ``notional``.
    """
    remaining = notional
    base = 0.0
    for p, s in zip(px, sz, strict=False):
        if not (0.0 < p < math.inf and 0.0 < s < math.inf):
            continue
        level = p * s
        if level >= remaining:
            base += remaining / p
            remaining = 0.0
            break
        base += s
        remaining -= level
    if remaining > 0.0 or base <= 0.0:
        return None
    return notional / base
