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


class MicroPrice:
    """Online estimate of Stoikov's micro-price adjustment ``g(I)`` for one coin.

    ``I = q_b/(q_b + q_a)`` is discretised into ``buckets`` equal states. Every top-of-book state
    ``t`` (in time order) waits for the next change of the mid, at ``τ``; then
    ``(M_τ − M_t)/S_t`` (the mid change in units of the spread at ``t``) is added to the state's
    bucket, and its mirror image ``−(M_τ − M_t)/S_t`` to the bucket of ``1 − I`` (Stoikov's
    symmetrisation, so ``g(1 − I) = −g(I)``). Sums forget exponentially: each mid change
    multiplies them by ``1 − 1/memory``. ``g(I)`` is the bucket mean once the bucket holds at
    least ``min_obs`` (effective) observations. This is the first term ``g¹`` of Stoikov's
    series; the micro-price is ``M + S·g(I)``.
    """

    __slots__ = ("_decay", "_den", "_k", "_last_mid", "_min_obs", "_num", "_pn", "_ps", "_touched")

    def __init__(self, buckets: int = 10, memory: float = 5000.0, min_obs: float = 20.0) -> None:
        if buckets < 2 or memory < 1 or min_obs <= 0:
            msg = "need buckets >= 2, memory >= 1 and min_obs > 0"
            raise ValueError(msg)
        self._k = buckets
        self._decay = 1.0 - 1.0 / memory
        self._min_obs = min_obs
        self._num = [0.0] * buckets
        self._den = [0.0] * buckets
        self._pn = [0.0] * buckets  # pending states per bucket (since the last mid change)
        self._ps = [0.0] * buckets  # pending Σ 1/S per bucket
        self._touched: list[int] = []
        self._last_mid: float | None = None

    def bucket(self, bid_sz: float, ask_sz: float) -> int:
        """The imbalance state of sizes ``bid_sz``, ``ask_sz`` (their sum must be > 0).

        Raises ValueError for sizes that give no state (negative, not finite, zero sum).
        """
        k = self._k
        total = bid_sz + ask_sz
        x = k * bid_sz / total if total > 0.0 else math.nan
        if not 0.0 <= x <= k:  # also NaN: sizes from the wire that make no imbalance
            msg = f"no imbalance state for sizes {bid_sz!r}, {ask_sz!r}"
            raise ValueError(msg)
        b = int(x)
        return b if b < k else k - 1

    def mark(self) -> tuple[object, ...]:
        """A copy of the (small) state, for `restore`."""
        return (
            tuple(self._num),
            tuple(self._den),
            tuple(self._pn),
            tuple(self._ps),
            tuple(self._touched),
            self._last_mid,
        )

    def restore(self, mark: tuple[object, ...]) -> None:
        """Back to the state `mark` copied."""
        num, den, pn, ps, touched, last = mark
        self._num = list(num)  # type: ignore[call-overload]
        self._den = list(den)  # type: ignore[call-overload]
        self._pn = list(pn)  # type: ignore[call-overload]
        self._ps = list(ps)  # type: ignore[call-overload]
        self._touched = list(touched)  # type: ignore[call-overload]
        self._last_mid = last  # type: ignore[assignment]

    def observe(self, bid: float, bid_sz: float, ask: float, ask_sz: float) -> None:
        """Fold one top-of-book state (skipped when crossed, locked or without size)."""
        spread = ask - bid
        total = bid_sz + ask_sz
        if spread <= 0.0 or total <= 0.0 or bid_sz < 0.0 or ask_sz < 0.0:
            return
        k = self._k
        x = k * bid_sz / total
        inv = 1.0 / spread
        if not (0.0 <= x <= k and inv < math.inf):  # NaN/inf sizes, a sub-normal spread
            return
        mid = (bid + ask) * 0.5
        last = self._last_mid
        if mid != last and last is not None:
            self._resolve(mid - last)
        self._last_mid = mid
        b = int(x)
        if b >= k:
            b = k - 1
        pn = self._pn
        if pn[b] == 0.0:
            self._touched.append(b)
        pn[b] += 1.0
        self._ps[b] += inv

    def _resolve(self, d: float) -> None:
        """The mid moved by ``d``: credit it to every pending state (and its mirror image)."""
        lam = self._decay
        num, den, pn, ps = self._num, self._den, self._pn, self._ps
        k = self._k
        for i in range(k):
            num[i] *= lam
            den[i] *= lam
        for b in self._touched:
            w = pn[b]
            x = d * ps[b]
            m = k - 1 - b
            num[b] += x
            den[b] += w
            num[m] -= x
            den[m] += w
            pn[b] = 0.0
            ps[b] = 0.0
        self._touched.clear()

    def reset_pending(self) -> None:
        """Forget the states waiting for a mid change (an input gap: the next move is unseen)."""
        for b in self._touched:
            self._pn[b] = 0.0
            self._ps[b] = 0.0
        self._touched.clear()
        self._last_mid = None

    def g(self, bid_sz: float, ask_sz: float) -> float | None:
        """Expected next mid change in spreads for these sizes; None until the bucket is warm."""
        total = bid_sz + ask_sz
        if bid_sz < 0.0 or ask_sz < 0.0 or not 0.0 < total < math.inf:
            return None
        b = self.bucket(bid_sz, ask_sz)
        den = self._den[b]
        return self._num[b] / den if den >= self._min_obs else None

    def table(self) -> list[float | None]:
        """``g`` per bucket (None where not warm), lowest imbalance first."""
        return [
            n / d if d >= self._min_obs else None for n, d in zip(self._num, self._den, strict=True)
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
