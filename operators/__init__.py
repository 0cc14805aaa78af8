"""Operators: the science, as plain typed classes with state and ``update()``.

What lives here: the bar window (`bars`, the one Bytewax window), the features (`features/`:
book, volatility, flow and context groups behind one `FeatureState`), microstructure helpers,
the volatility forecast (`forecast`, with its fitted `vol_model.json`), the regime rules and
their explanation (`regime`, `explain`), the edge and its calibration (`edge`, `calibration`),
the envelope (`envelope`: ranges, rounding) and the thin Bytewax steps with per-coin failure
isolation (`steps`, `failures`). Everything is testable without Bytewax but `bars` and `steps`.

What it may import: `connectors` (events, names, freshness) and third-party packages; nothing
from `flows`, `api` or `tools` (`tests/test_layers.py` checks it).
"""
