"""Failure isolation inside the flow: what a step error is, how it is counted, logged and bounded.

A per-coin exception in a step (or a value outside its documented range) must not stop the flow
or the other coins. The steps in `operators.steps` catch it, roll the coin's state back to before
the bar, and publish that bar's envelope degraded: the regime held, ``actionable: false``, the
explain code ``STEP_ERROR`` and a ``degraded: {step, reason}`` block. This module holds the pieces
they share:

- `Degraded`: the ``{step, reason}`` a degraded bar carries down the flow and into the envelope;
- `RangeError`: a value outside its documented range (or not finite), raised by the checks;
- `STEP_ERRORS`: the process-wide per-``(step, coin)`` counter behind the Prometheus counter
  ``hlsl_step_errors_total{step,coin}`` and ``/v1/state``, which also logs the first error of
  each ``(step, coin)`` with its traceback and then only every power of ten;
- `in_range`: the one range test every check uses (finite, within ``[lo, hi]``, ``lo`` excluded
  when the bound is strict).
"""

from __future__ import annotations

import logging
import math
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

log = logging.getLogger("hlsl.step_errors")

FLOAT_MAX: Final = sys.float_info.max
REASON_MAX: Final = 200
"""A reason is cut to this many characters (it is published)."""


@dataclass(frozen=True, slots=True)
class Degraded:
    """Why a bar's envelope is degraded: the step that failed and a short reason."""

    step: str
    reason: str


@dataclass(frozen=True, slots=True)
class Bound:
    """A documented range: ``lo ≤ x ≤ hi`` (``lo < x`` when ``strict``); always finite."""

    lo: float = -FLOAT_MAX
    hi: float = FLOAT_MAX
    strict: bool = False

    @property
    def low(self) -> float:
        """The smallest allowed value (``lo`` itself, or the next float above it if strict)."""
        return math.nextafter(self.lo, math.inf) if self.strict else self.lo

    def describe(self) -> str:
        """The range in words, e.g. ``> 0`` or ``in [-1, 1]``."""
        lo = "" if self.lo == -FLOAT_MAX else f"{'>' if self.strict else '>='} {self.lo:g}"
        hi = "" if self.hi == FLOAT_MAX else f"<= {self.hi:g}"
        return " and ".join(x for x in (lo, hi) if x) or "finite"


FINITE: Final = Bound()
POSITIVE: Final = Bound(0.0, strict=True)
NON_NEGATIVE: Final = Bound(0.0)
UNIT: Final = Bound(0.0, 1.0)
SIGNED_UNIT: Final = Bound(-1.0, 1.0)


class RangeError(ValueError):
    """A value that is not finite or is outside its documented range."""

    def __init__(self, where: str, value: object, bound: Bound) -> None:
        super().__init__(f"{where} = {value!r} is not {bound.describe()}")
        self.where = where
        self.value = value
        self.bound = bound


def in_range(x: float, lo: float, hi: float) -> bool:
    """``lo ≤ x ≤ hi`` with ``lo``/``hi`` from `Bound.low`/`Bound.hi` (False for NaN and ±inf)."""
    return lo <= x <= hi


def fail(where: str, value: object, bound: Bound) -> None:
    """Raise the `RangeError` for ``where`` (what the compiled checkers call)."""
    raise RangeError(where, value, bound)


def compile_checker(
    name: str, checks: list[tuple[str, str, Bound]], loops: dict[str, list[tuple[str, str, Bound]]]
) -> Callable[[Any], None]:
    """A function ``name(x)`` raising `RangeError` for the first value out of its range.

    ``checks`` are ``(path, expression on x, bound)``; ``loops`` maps an iterable expression on
    ``x`` to checks on each of its items (``it``). The tests are unrolled into straight code once,
    at import (a loop over a table costs twice as much per bar); a None value is not checked.
    """
    lines = [f"def {name}(x):"]

    def emit(indent: str, path: str, expr: str, b: Bound) -> None:
        lines.append(f"{indent}v = {expr}")
        lines.append(f"{indent}if v is not None and not {b.low!r} <= v <= {b.hi!r}:")
        lines.append(f"{indent}    fail({path!r}, v, bounds[{path!r}])")

    for path, expr, b in checks:
        emit("    ", path, expr, b)
    for iterable, inner in loops.items():
        lines.append(f"    for it in {iterable}:")
        for path, expr, b in inner:
            emit("        ", path, expr, b)
    lines.append("    return None")
    bounds = {path: b for path, _, b in checks} | {
        path: b for inner in loops.values() for path, _, b in inner
    }
    namespace: dict[str, Any] = {"fail": fail, "bounds": bounds}
    exec("\n".join(lines), namespace)  # the source is built above from constants only
    fn: Callable[[Any], None] = namespace[name]
    return fn


def reason_of(ex: BaseException) -> str:
    """A short published reason for an exception: ``out_of_range: …`` or ``Type: message``."""
    if isinstance(ex, RangeError):
        text = f"out_of_range: {ex}"
    else:
        msg = str(ex)
        text = f"{type(ex).__name__}: {msg}" if msg else type(ex).__name__
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"


class StepErrors:
    """Step errors per ``(step, coin)``: counted, logged once with the traceback, then thinned.

    Process-wide (the flow's steps have no handle on the store): `snapshot` is what
    ``/metrics`` and ``/v1/state`` read. Thread-safe; the lock is only taken on the error path
    and by readers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def record(self, step: str, coin: str, ex: BaseException) -> Degraded:
        """Count one error of ``step`` for ``coin``, log it (thinned) and return its `Degraded`."""
        reason = reason_of(ex)
        key = (step, str(coin))
        with self._lock:
            n = self._counts.get(key, 0) + 1
            self._counts[key] = n
        if n == 1:
            log.error(
                "step %s failed for coin %s (the bar is published degraded; the flow goes on): %s",
                step,
                coin,
                reason,
                exc_info=(type(ex), ex, ex.__traceback__),
            )
        elif _power_of_ten(n):
            log.error("step %s failed for coin %s %d times; latest: %s", step, coin, n, reason)
        return Degraded(step, reason)

    def snapshot(self) -> dict[tuple[str, str], int]:
        """A copy of the counters, keyed by ``(step, coin)``."""
        with self._lock:
            return dict(self._counts)

    def by_step(self) -> dict[str, dict[str, int]]:
        """The counters as ``{step: {coin: count}}``, sorted (for ``/v1/state``)."""
        out: dict[str, dict[str, int]] = {}
        for (step, coin), n in sorted(self.snapshot().items()):
            out.setdefault(step, {})[coin] = n
        return out

    def count(self, step: str, coin: str) -> int:
        """Errors of ``step`` for ``coin`` so far."""
        with self._lock:
            return self._counts.get((step, coin), 0)

    def reset(self) -> None:
        """Forget every count (tests)."""
        with self._lock:
            self._counts.clear()


def _power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1


STEP_ERRORS: Final = StepErrors()
"""The process-wide step-error counters (``hlsl_step_errors_total{step,coin}``)."""


__all__ = [
    "FINITE",
    "NON_NEGATIVE",
    "POSITIVE",
    "SIGNED_UNIT",
    "STEP_ERRORS",
    "UNIT",
    "Bound",
    "Degraded",
    "RangeError",
    "StepErrors",
    "compile_checker",
    "fail",
    "in_range",
    "reason_of",
]
