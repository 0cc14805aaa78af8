"""Small O(1)/O(log n) rolling statistics for per-bar features (picklable, deterministic)."""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from typing import Any

Mark = tuple[Any, ...]
"""What `mark` returns: enough to take back one update in O(1)."""


class RollingMedian:
    """Median of the last ``size`` values: a FIFO plus a sorted copy (bisect insert/remove)."""

    __slots__ = ("_fifo", "_n", "_size", "_sorted")

    def __init__(self, size: int) -> None:
        if size < 1:
            msg = f"size must be >= 1, got {size!r}"
            raise ValueError(msg)
        self._size = size
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []
        self._n = 0  # updates so far (for `undo`)

    def __len__(self) -> int:
        return len(self._fifo)

    def update(self, x: float) -> None:
        """Add a value, dropping the oldest beyond ``size``."""
        self._n += 1
        self._fifo.append(x)
        insort(self._sorted, x)
        if len(self._fifo) > self._size:
            old = self._fifo.popleft()
            del self._sorted[bisect_left(self._sorted, old)]

    def mark(self) -> Mark:
        """An O(1) mark to `undo` back to (at most one `update` may follow it)."""
        fifo = self._fifo
        return (self._n, len(fifo), fifo[0] if fifo else None)

    def undo(self, mark: Mark) -> None:
        """Revert to ``mark``: take back the one `update` made since (if any)."""
        k = _since(self._n, mark)
        if k == 0:
            return
        x = self._fifo.pop()
        _remove(self._sorted, x)
        if len(self._fifo) < mark[1]:
            head = mark[2]
            self._fifo.appendleft(head)
            insort(self._sorted, head)
        self._n = mark[0]

    def get(self) -> float | None:
        """The median (mean of the two middle values for an even count), None when empty."""
        s = self._sorted
        n = len(s)
        if n == 0:
            return None
        mid = n // 2
        return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2.0


class RollingSum:
    """Sum of the last ``size`` values, each covering a time interval (``dt_ms``).

    Kept as running totals, recomputed exactly every ``size`` removals so rounding cannot drift.
    `span_ms` is the time the values cover (the sum of their intervals), so a window of N returns
    spans N intervals.
    """

    __slots__ = ("_items", "_n", "_removed", "_size", "total", "total_ms")

    def __init__(self, size: int) -> None:
        if size < 1:
            msg = f"size must be >= 1, got {size!r}"
            raise ValueError(msg)
        self._size = size
        self._items: deque[tuple[int, float]] = deque()
        self.total = 0.0
        self.total_ms = 0
        self._removed = 0
        self._n = 0  # updates so far (for `undo`)

    def __len__(self) -> int:
        return len(self._items)

    def update(self, dt_ms: int, x: float) -> None:
        """Add a value covering ``dt_ms``, dropping the oldest beyond ``size``."""
        self._n += 1
        self._items.append((dt_ms, x))
        self.total += x
        self.total_ms += dt_ms
        if len(self._items) > self._size:
            old_dt, old = self._items.popleft()
            self.total -= old
            self.total_ms -= old_dt
            self._removed += 1
            if self._removed >= self._size:
                self.total = sum(v for _, v in self._items)
                self._removed = 0

    def mark(self) -> Mark:
        """An O(1) mark to `undo` back to (at most one `update` may follow it)."""
        items = self._items
        head = items[0] if items else None
        return (self._n, len(items), head, self.total, self.total_ms, self._removed)

    def undo(self, mark: Mark) -> None:
        """Revert to ``mark``: take back the one `update` made since (if any)."""
        if _since(self._n, mark):
            _undo_fifo(self._items, mark)
            self._n = mark[0]
        self.total, self.total_ms, self._removed = mark[3], mark[4], mark[5]

    def tail(self, n: int) -> tuple[float, int]:
        """Sum of the newest ``n`` values and the time they cover."""
        items = self._items
        if len(items) <= n:
            return self.total, self.total_ms
        s = 0.0
        dt = 0
        for i in range(len(items) - n, len(items)):
            d, x = items[i]
            s += x
            dt += d
        return s, dt

    def span_ms(self) -> int:
        """Time covered by the values in the window."""
        return self.total_ms


class RollingMoments:
    """Mean and sample standard deviation of the last ``size`` values, O(1) per update.

    Running sums of ``x − ref`` and its square (``ref`` the first value seen, re-centred at every
    exact re-sum) keep cancellation small; the sums are recomputed exactly every ``size``
    removals so rounding cannot drift.
    """

    __slots__ = ("_items", "_n", "_ref", "_removed", "_s1", "_s2", "_size")

    def __init__(self, size: int) -> None:
        if size < 2:
            msg = f"size must be >= 2, got {size!r}"
            raise ValueError(msg)
        self._size = size
        self._items: deque[float] = deque()
        self._ref = 0.0
        self._s1 = 0.0
        self._s2 = 0.0
        self._removed = 0
        self._n = 0  # updates so far (for `undo`)

    def __len__(self) -> int:
        return len(self._items)

    def update(self, x: float) -> None:
        """Add a value, dropping the oldest beyond ``size``."""
        self._n += 1
        items = self._items
        if not items:
            self._ref = x
        items.append(x)
        d = x - self._ref
        self._s1 += d
        self._s2 += d * d
        if len(items) > self._size:
            d = items.popleft() - self._ref
            self._s1 -= d
            self._s2 -= d * d
            self._removed += 1
            if self._removed >= self._size:
                self._resum()

    def mark(self) -> Mark:
        """An O(1) mark to `undo` back to (at most one `update` may follow it)."""
        items = self._items
        head = items[0] if items else None
        return (self._n, len(items), head, self._ref, self._s1, self._s2, self._removed)

    def undo(self, mark: Mark) -> None:
        """Revert to ``mark``: take back the one `update` made since (if any)."""
        if _since(self._n, mark):
            _undo_fifo(self._items, mark)
            self._n = mark[0]
        self._ref, self._s1, self._s2, self._removed = mark[3], mark[4], mark[5], mark[6]

    def _resum(self) -> None:
        items = self._items
        ref = sum(items) / len(items)
        self._ref = ref
        self._s1 = sum(x - ref for x in items)
        self._s2 = sum((x - ref) * (x - ref) for x in items)
        self._removed = 0

    def mean(self) -> float | None:
        """Mean of the window, None when empty."""
        n = len(self._items)
        return None if n == 0 else self._ref + self._s1 / n

    def std(self) -> float | None:
        """Sample standard deviation (n − 1), None with fewer than two values."""
        n = len(self._items)
        if n < 2:
            return None
        m = self._s1 / n
        return math.sqrt(max(0.0, (self._s2 - n * m * m) / (n - 1)))

    def zscore(self, x: float) -> float | None:
        """``(x − mean)/std`` of the window (x need not be in it); None if std is 0 or unknown."""
        sd = self.std()
        if sd is None or sd <= 1e-12 * (abs(self._ref) + 1.0):
            return None
        return (x - self._ref - self._s1 / len(self._items)) / sd


class RollingPair:
    """Sums of two quantities over the last ``size`` entries, each covering ``dt_ms``.

    One FIFO for both (half the cost of two `RollingSum`), re-summed exactly every ``size``
    removals.
    """

    __slots__ = ("_items", "_n", "_removed", "_size", "a", "b", "total_ms")

    def __init__(self, size: int) -> None:
        if size < 1:
            msg = f"size must be >= 1, got {size!r}"
            raise ValueError(msg)
        self._size = size
        self._items: deque[tuple[int, float, float]] = deque()
        self.a = 0.0
        self.b = 0.0
        self.total_ms = 0
        self._removed = 0
        self._n = 0  # updates so far (for `undo`)

    def __len__(self) -> int:
        return len(self._items)

    def update(self, dt_ms: int, a: float, b: float) -> None:
        """Add an entry, dropping the oldest beyond ``size``."""
        self._n += 1
        items = self._items
        items.append((dt_ms, a, b))
        self.a += a
        self.b += b
        self.total_ms += dt_ms
        if len(items) > self._size:
            old_dt, old_a, old_b = items.popleft()
            self.a -= old_a
            self.b -= old_b
            self.total_ms -= old_dt
            self._removed += 1
            if self._removed >= self._size:
                self.a = sum(x[1] for x in items)
                self.b = sum(x[2] for x in items)
                self._removed = 0

    def mark(self) -> Mark:
        """An O(1) mark to `undo` back to (at most one `update` may follow it)."""
        items = self._items
        head = items[0] if items else None
        return (self._n, len(items), head, self.a, self.b, self.total_ms, self._removed)

    def undo(self, mark: Mark) -> None:
        """Revert to ``mark``: take back the one `update` made since (if any)."""
        if _since(self._n, mark):
            _undo_fifo(self._items, mark)
            self._n = mark[0]
        self.a, self.b, self.total_ms, self._removed = mark[3], mark[4], mark[5], mark[6]


class UndoError(RuntimeError):
    """More than one update since a mark: the structure cannot be rolled back to it."""


def _since(n: int, mark: Mark) -> int:
    """Updates since ``mark`` (0 or 1; more is an `UndoError`)."""
    k: int = n - mark[0]
    if k < 0 or k > 1:
        msg = f"cannot undo {k} updates (one update per mark)"
        raise UndoError(msg)
    return k


def _undo_fifo(items: deque[Any], mark: Mark) -> None:
    """Take back one append (and the pop from the left it may have caused)."""
    items.pop()
    if len(items) < mark[1]:
        items.appendleft(mark[2])


def _remove(s: list[float], x: float) -> None:
    """Remove the value ``x`` from the sorted list ``s`` (by identity when ``x`` is NaN)."""
    i = bisect_left(s, x)
    if i < len(s) and s[i] == x:
        del s[i]
        return
    for j, v in enumerate(s):  # pragma: no cover - only a NaN gets here
        if v is x:
            del s[j]
            return
