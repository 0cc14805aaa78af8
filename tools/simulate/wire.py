"""The exchange's number strings, from integer units of a decimal place.

Imports nothing else of the simulator.
"""

from __future__ import annotations


def fmt(units: int, decimals: int) -> str:
    """Exchange-style decimal string of ``units`` × 10**-decimals ("109741.0", "0.0009")."""
    sign = "-" if units < 0 else ""
    if decimals == 0:
        return f"{sign}{abs(units)}.0"
    whole, frac = divmod(abs(units), 10**decimals)
    digits = f"{frac:0{decimals}d}".rstrip("0") or "0"
    return f"{sign}{whole}.{digits}"


def fmt_float(value: float, decimals: int) -> str:
    """``value`` rounded to ``decimals`` places, as `fmt` writes it."""
    return fmt(round(value * 10**decimals), decimals)
