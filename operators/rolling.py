"""Small O(1)/O(log n) rolling statistics for per-bar features (picklable, deterministic)."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque


class RollingMedian:
    """Median of the last ``size`` values: a FIFO plus a sorted copy (bisect insert/remove)."""

    __slots__ = ("_fifo", "_size", "_sorted")

    def __init__(self, size: int) -> None:
        if size < 1:
            msg = f"size must be >= 1, got {size!r}"
            raise ValueError(msg)
        self._size = size
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._fifo)

    def update(self, x: float) -> None:
        """Add a value, dropping the oldest beyond ``size``."""
        self._fifo.append(x)
        insort(self._sorted, x)
        if len(self._fifo) > self._size:
            old = self._fifo.popleft()
            del self._sorted[bisect_left(self._sorted, old)]

    def get(self) -> float | None:
        """The median (mean of the two middle values for an even count), None when empty."""
        s = self._sorted
        n = len(s)
        if n == 0:
            return None
        mid = n // 2
        return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2.0


class RollingSum:
    """Sum of the values of the last ``size`` updates, each with a timestamp.

    Kept as a running total, recomputed exactly every ``size`` removals so rounding cannot drift.
    """

    __slots__ = ("_items", "_removed", "_size", "total")

    def __init__(self, size: int) -> None:
        if size < 1:
            msg = f"size must be >= 1, got {size!r}"
            raise ValueError(msg)
        self._size = size
        self._items: deque[tuple[int, float]] = deque()
        self.total = 0.0
        self._removed = 0

    def __len__(self) -> int:
        return len(self._items)

    def update(self, t_ms: int, x: float) -> None:
        """Add a timestamped value, dropping the oldest beyond ``size``."""
        self._items.append((t_ms, x))
        self.total += x
        if len(self._items) > self._size:
            _, old = self._items.popleft()
            self.total -= old
            self._removed += 1
            if self._removed >= self._size:
                self.total = sum(v for _, v in self._items)
                self._removed = 0

    def tail(self, n: int) -> tuple[float, int]:
        """Sum of the newest ``n`` values and the time they span (from the value before them)."""
        items = self._items
        if len(items) <= n:
            return self.total, (items[-1][0] - items[0][0]) if items else 0
        s = 0.0
        for i in range(len(items) - n, len(items)):
            s += items[i][1]
        return s, items[-1][0] - items[len(items) - n - 1][0]

    def span_ms(self) -> int:
        """Time from the oldest to the newest value."""
        items = self._items
        return items[-1][0] - items[0][0] if items else 0
