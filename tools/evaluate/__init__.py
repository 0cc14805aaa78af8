"""Evaluate signal envelopes against what happened next, and fit the edge calibration table.

    python -m tools.evaluate PATH... --out DIR [--fit-calibration FILE]
        [--horizons 1s,5s,1m] [--bar-ms MS] [--window-obs N] [--warmup-obs N]
        [--split 0.6] [--bootstrap 1000] [--min-bin-eff 50] [--truth TRUTH.json]
        [--coins BTC,ETH] [--no-plots]

PATH is a capture file or a folder of them. Files are grouped into datasets by what they hold:
tick data (trades/bbo/books/mids) replays with 1 s bars; candle-only files replay with one bar per
candle (``bar_ms`` = the candle interval). Each dataset goes through the production flow
(`flows.pipeline.build_pipeline`), and every envelope is then scored offline against the coin's own
price series (``features.mid_px``; else the candle close, else the last trade, read from the same
capture): nothing after the bar close is used inside the flow.

Definitions (DESIGN of the evaluation; the report repeats them):

- forward return ``R(t, h) = ln P(t+h) − ln P(t)`` on a regular grid of bars; ``P`` at a grid time
  is the latest observation at or before it, carried forward at most ``max_gap`` (12 bars, at
  least 60 s): a longer hole makes every window that crosses it undefined. Forward realised
  volatility ``sqrt(Σ r²)`` and forward efficiency ``|R| / Σ|r|`` use the bar returns ``r``
  inside ``(t, t+h]``.
- IC = Spearman rank correlation of ``direction × edge.score`` (LONG +1, SHORT −1, FLAT 0) with
  ``R(t, h)`` over warmed-up envelopes (all coins of a dataset pooled). 95 % CI: non-overlapping
  block bootstrap on time blocks of ``max(h, window span)`` (all coins of a block move together),
  1,000 replicates, percentile interval; replicate statistic = Pearson of the full-sample ranks.
- "direction right" = ``sign(R) == direction`` for LONG/SHORT; a zero move is not right; FLAT is
  excluded from hit rates and Brier and reported as a share.
- calibration: for each horizon, isotonic (pool-adjacent-violators) map from the raw edge strength
  (``edge.raw_score`` if present, else ``edge.score``) to P(direction right), fitted only on the
  in-sample part (the first ``split`` of each dataset's time span; an in-sample envelope also
  needs ``t + h`` before the split: purged); adjacent blocks are pooled until each holds at least
  ``min_bin_eff`` effective observations, a row weighing ``bar / max(h, window span)``.
- Brier = mean (p − o)²; the reference is the constant in-sample base rate (Brier skill score
  = 1 − BS/BS_ref); ECE = Σ_b (n_b/N)·|observed_b − p_b| over the calibration bins.

The package, by concept (each module imports only those listed before it):

- `stats`: rank correlation, the block bootstrap, Brier and reliability, quantile bins;
  `isotonic`: pool-adjacent-violators and the step table; `forward`: forward returns, volatility
  and efficiency, spells; `text`: durations and numbers as read and written; `series`: price
  series read straight from captures, and the in-/out-of-sample split dates; `vol_eval`: scoring
  volatility forecasts and risk flags (QLIKE, Diebold–Mariano, the one-line rule).
- `datasets`: capture files scanned and grouped into datasets; `results`: the column arrays of
  the envelopes and what is measured on them; `replay`: a dataset through the production flow.
- `analysis`: IC, hit rates and regimes of one dataset; `calibration_fit`: the edge calibration
  table fitted, written, validated and scored; `skill`: each horizon's out-of-sample skill
  verdict and the actionable calls' P&L; `science`: issue #9's evidence per coin (risk flag,
  crash window, forecast, micro-price); `vol_fit`: the volatility model fit, run on its own
  (``python -m tools.evaluate.vol_fit``); `flag_tradeoff`: the risk flag's expansion threshold,
  crash-window capture against separation (``python -m tools.evaluate.flag_tradeoff``).
- `charts`, `prose` (the report's sentences), `report` (the Markdown): the output.
- `run`: one whole run (`EvalConfig`, `evaluate`); `cli` and `__main__`: the command line.

Imports: like all of ``tools`` this is the top layer; it may import ``connectors``, ``operators``,
``flows``, ``api`` and the rest of ``tools``, and nothing imports it but ``tests``. The names
below are re-exported for callers of ``tools.evaluate``; code inside the package imports from the
concrete module.
"""

from tools.evaluate.analysis import analyse
from tools.evaluate.calibration_fit import dump_calibration, fit_calibration, validate_calibration
from tools.evaluate.cli import main
from tools.evaluate.datasets import DatasetSpec
from tools.evaluate.forward import forward_metrics, spells
from tools.evaluate.isotonic import apply_bins, isotonic_bins, pav
from tools.evaluate.results import DatasetResult, Evaluation
from tools.evaluate.run import EvalConfig, evaluate
from tools.evaluate.stats import (
    block_bootstrap_corr,
    block_bootstrap_mean,
    brier,
    rankdata,
    reliability_table,
    spearman,
)
from tools.evaluate.text import parse_duration_ms

__all__ = [
    "DatasetResult",
    "DatasetSpec",
    "EvalConfig",
    "Evaluation",
    "analyse",
    "apply_bins",
    "block_bootstrap_corr",
    "block_bootstrap_mean",
    "brier",
    "dump_calibration",
    "evaluate",
    "fit_calibration",
    "forward_metrics",
    "isotonic_bins",
    "main",
    "parse_duration_ms",
    "pav",
    "rankdata",
    "reliability_table",
    "spearman",
    "spells",
    "validate_calibration",
]
