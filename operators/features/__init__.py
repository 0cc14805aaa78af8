"""Rolling market-structure features per coin, updated once per closed bar.

`FeatureState.update(bar)` turns each closed `Bar` into a `FeatureVector`: named values with units
in their names, plus the reason for every value that could not be computed (never a silent 0).
Formulas, units, windows and source streams are in DESIGN.md §4 (Features); keep the two in step.

What lives where:

- `vector`: the contract: `FEATURE_NAMES` (defined in `connectors.fields`), their ranges
  (`FEATURE_BOUNDS`, `check_features`), `STEP_ERROR_REASON` and `FeatureVector`;
- `config`: `FeatureConfig`, the windows and bands;
- the feature groups, each a small class with its own state and one `update` per bar:
  `book` (mid, top of book, micro-price, depth), `volatility` (price observations: volatility
  and trend), `flow` (OFI and trades) and `context` (perp context);
- `state`: `FeatureState`, the per-coin state that composes the groups and puts each bar's
  vector together.

Modules here import only `connectors`, the other `operators` modules they build on (bars,
rolling windows, microstructure estimators, freshness, failures), the standard library and
third-party packages; never `flows`, `api` or `tools`. Everything the rest of the code uses is
re-exported here: import it from ``operators.features``.
"""

from connectors.fields import FEATURE_NAMES
from operators.features.config import FeatureConfig
from operators.features.state import MAX_PX_DECIMALS, FeatureState, price_decimals
from operators.features.vector import (
    FEATURE_BOUNDS,
    STEP_ERROR_REASON,
    FeatureVector,
    check_features,
)
from operators.features.volatility import GK_C, LN2_4, MS_PER_YEAR

__all__ = [
    "FEATURE_BOUNDS",
    "FEATURE_NAMES",
    "GK_C",
    "LN2_4",
    "MAX_PX_DECIMALS",
    "MS_PER_YEAR",
    "STEP_ERROR_REASON",
    "FeatureConfig",
    "FeatureState",
    "FeatureVector",
    "check_features",
    "price_decimals",
]
