"""Per-coin volatility state and forecast: HAR-style exponential components, seasonally adjusted.

The one thing about the next move that is forecastable is its size. Per coin, from the bar
returns ``r_t`` only (causal: nothing after the bar), with ``B`` the bar length:

- **Seasonal profile** ``s(d, h)``: the usual share of variance of the UTC hour ``h`` of a weekday
  (``d = 0``) or weekend day (``d = 1``), mean 1 (Andersen & Bollerslev 1997, intraday
  periodicity), fitted once on the training data of every coin pooled. ``u_t = r_t² / s(bar)``
  is the deseasonalised squared return.
- **Components** ``c_k`` = bias-corrected EWMAs of ``u`` with half-lives of 1, 3, 10 and 30 bars
  (a HAR-RV cascade of short to long memory in exponential form, the "HExp" of Bollerslev, Hood,
  Huss & Pedersen 2018), and the coin's **norm** ``L`` = an EWMA of ``u`` with a 30-day half-life
  (at least 300 bars). An EWMA started from nothing is the plain mean of what it saw
  (``c = Σ λ^j u / Σ λ^j``), so it is usable from the first bars.
- **Forecast** of the mean per-bar variance over the next ``H`` bars, log-linear in the ratios
  (scale-free: no per-coin constant)::

      ln m̂_H = ln L + a_H + Σ_k b_{H,k} ln max(c_k / L, floor) + b_{H,s} ln s̄_H

  with ``s̄_H`` the mean seasonal factor of the ``H`` bars ahead. The forecast variance over the
  horizon is ``V̂ = H · m̂_H · κ_H`` (``κ_H`` = smearing factor, Duan 1983: the mean of
  ``exp(residual)`` on the training data, so that ``V̂`` estimates the mean and not the median),
  ``vol_bps = 1e4·√V̂``. Coefficients come from the nearest (in log) ``H`` of a ladder of
  1 … 128 bars, fitted by OLS on the training data before the split date.
- **Interval** (split-conformal, per bar-length family and horizon): the 10th–90th percentile
  interval is ``1e4·√(H·m̂_H·e^{q10})`` … ``e^{q90}``, ``q10``/``q90`` the empirical quantiles of
  the log ratio ``ln(RV_H / (H·m̂_H))`` of realised to forecast variance over the fitting rows of
  one family of bar lengths (the 5 m candles, the 1 h candles, the 1 s bars of the tick capture)
  at that ``H``. A bar length uses the family nearest it in log, and the horizon nearest ``H``
  in log within it (ties to the shorter, both) if that is within a factor 2 of ``H``; else the
  ladder entry's own quantiles (all families pooled) serve. Residuals differ by family: the
  same ``H`` covers minutes on 5 m bars and a day on 1 h bars, and one set of quantiles for
  all undercovered.
- **Adaptive levels** (Gibbs & Candès 2021, `operators.interval`): per coin and horizon each
  tail's level ``α`` (0.1 to start) moves by ``γ·(0.1 − miss)`` once a published interval's
  horizon has passed; `shifted` moves ``q10``/``q90`` to the levels along the normal through
  them. ``γ`` is the table's ``aci.gamma`` (0 in a table without it: the fitted quantiles).
- **Risk ratio** ``ρ = √(m̂_F / L)`` at ``F`` = one hour of bars (at least 6, at most the ladder's
  longest): the next hour's forecast volatility against the coin's norm, the regime's risk flag;
  published once the state has folded a day of bars (and at least 100).

The table (`VolModel`) is produced by ``python -m tools.evaluate.vol_fit`` and committed at
``operators/vol_model.json``; a table of another ``format`` is refused, never read silently
(format 1, without the interval table, is read as fitted: the ladder's pooled quantiles).

One module past ~400 lines on purpose: the volatility state, its forecast and the interval
lookup in the shipped table are one model (DESIGN.md §5), read together.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Final

import msgspec

from operators.rounding import fround

MODEL_FORMAT: Final = "hlsl-vol-model/2"
"""2: the interval has its own table, per bar-length family and horizon (`IntervalFit`)."""
OLD_FORMATS: Final = ("hlsl-vol-model/1",)
"""Read as they were fitted (migrated): no interval table, the ladder's pooled quantiles."""
DEFAULT_PATH: Final = Path(__file__).resolve().parent / "vol_model.json"
MS_HOUR: Final = 3_600_000
MS_DAY: Final = 86_400_000
INTERVAL_REACH: Final = math.log(2.0)
"""An interval entry serves horizons within this (log) distance of its own."""
FLAG_MIN_BARS: Final = 6
ACI_TARGET: Final = 0.1
"""Each tail's aimed miss rate (the 10th and 90th percentiles)."""
ACI_CLIP: Final = (0.001, 0.5)
"""Bounds of an adapted tail level: the interval never becomes infinite or inverted."""
_Z = NormalDist().inv_cdf
_Z_TARGET: Final = _Z(ACI_TARGET)
_KNOWN_MAX: Final = 4096
"""The risk flag looks one hour of bars ahead, at least this many."""


@dataclass(frozen=True, slots=True)
class LadderFit:
    """Coefficients of one forecast horizon of ``bars`` bars."""

    bars: int
    coef: tuple[float, ...]
    """``(a, b_1 … b_K, b_s)``."""
    smear: float
    q10: float
    q90: float
    n: int


@dataclass(frozen=True, slots=True)
class IntervalFit:
    """The 10th/90th percentile of ``ln(RV_H / (H·m̂_H))`` of one family and horizon."""

    bar_ms: int
    bars: int
    q10: float
    q90: float
    n: int


@dataclass(frozen=True)
class VolModel:
    """A loaded volatility model table.

    `fit_for` and `interval_for` remember their answers (a handful of horizons and bar lengths:
    a lookup instead of a search per bar), in tables that are not fields (no slots, so that they
    can be attached to the frozen instance).
    """

    version: str
    season: tuple[tuple[float, ...], tuple[float, ...]]
    half_lives_bars: tuple[float, ...]
    long_half_life_ms: int
    long_min_bars: float
    floor: float
    flag_enter: float
    flag_exit: float
    ladder: tuple[LadderFit, ...]
    intervals: tuple[IntervalFit, ...] = ()
    """Per family (bar length) and horizon; empty: the ladder's pooled ``q10``/``q90``."""
    aci_gamma: float = 0.0
    """Step ``γ`` of the adaptive conformal levels (`operators.interval`); 0: the fitted
    quantiles, unadapted (a table without an ``aci`` block)."""
    fitted_on: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_fits", {})
        object.__setattr__(self, "_intervals", {})

    def fit_for(self, bars: int) -> LadderFit:
        """The ladder entry nearest ``bars`` in log (ties to the shorter)."""
        known: dict[int, LadderFit] = self.__dict__["_fits"]
        fit = known.get(bars)
        if fit is None:
            lb = math.log(max(1, bars))
            fit = min(self.ladder, key=lambda f: (abs(math.log(f.bars) - lb), f.bars))
            if len(known) < _KNOWN_MAX:
                known[bars] = fit
        return fit

    def interval_for(self, bar_ms: int, bars: int) -> tuple[float, float]:
        """``(q10, q90)`` of the family nearest ``bar_ms`` in log, at its horizon nearest
        ``bars`` in log (ties to the shorter, both) when that is within a factor 2 of ``bars``;
        otherwise (or with no table) the ladder's pooled quantiles for ``bars``."""
        known: dict[tuple[int, int], tuple[float, float]] = self.__dict__["_intervals"]
        key = (bar_ms, bars)
        q = known.get(key)
        if q is None:
            q = self._interval_for(bar_ms, bars)
            if len(known) < _KNOWN_MAX:
                known[key] = q
        return q

    def _interval_for(self, bar_ms: int, bars: int) -> tuple[float, float]:
        lh = math.log(max(1, bars))
        if self.intervals:
            lb = math.log(max(1, bar_ms))
            fam = min(self.intervals, key=lambda i: (abs(math.log(i.bar_ms) - lb), i.bar_ms))
            best = min(
                (i for i in self.intervals if i.bar_ms == fam.bar_ms),
                key=lambda i: (abs(math.log(i.bars) - lh), i.bars),
            )
            if abs(math.log(best.bars) - lh) <= INTERVAL_REACH:
                return best.q10, best.q90
        f = self.fit_for(bars)
        return f.q10, f.q90

    def season_at(self, t_ms: int) -> float:
        """Seasonal factor of the bar that opens at ``t_ms`` (UTC hour; weekend or not)."""
        day = t_ms // MS_DAY
        weekend = 1 if (day + 3) % 7 >= 5 else 0  # 1970-01-01 was a Thursday
        return self.season[weekend][(t_ms // MS_HOUR) % 24]

    def season_ahead(self, t_ms: int, bars: int, bar_ms: int) -> float:
        """Mean seasonal factor of the ``bars`` bars opening at ``t_ms``, ``t_ms + bar_ms``, …

        Summed hour by hour (a run of bars inside one UTC hour shares its factor), so the cost is
        the number of hours covered, not of bars.
        """
        total = 0.0
        j = 0
        while j < bars:
            t = t_ms + j * bar_ms
            hour_end = (t // MS_HOUR + 1) * MS_HOUR
            k = min(bars - j, max(1, -(-(hour_end - t) // bar_ms)))
            total += k * self.season_at(t)
            j += k
        return total / bars

    def long_lambda(self, bar_ms: int) -> float:
        """Decay per bar of the norm ``L`` (half-life 30 days, at least ``long_min_bars``)."""
        hl = max(self.long_min_bars, self.long_half_life_ms / max(1, bar_ms))
        return math.pow(0.5, 1.0 / hl)


class VolSnapshot(msgspec.Struct, frozen=True):
    """The volatility state of one coin as of one bar close (immutable; safe to keep)."""

    comps: tuple[float, ...]
    """``c_k``: deseasonalised per-bar variance at each half-life."""
    norm: float
    """``L``: the coin's deseasonalised per-bar variance norm."""
    close_ms: int
    bar_ms: int
    n: int
    """Returns folded in so far."""


class Forecast(msgspec.Struct, frozen=True):
    """Forecast realised volatility of the bar returns over ``horizon_ms``, bps."""

    horizon_ms: int
    vol_bps: float
    vol_p10_bps: float
    vol_p90_bps: float
    model: str
    ratio: float
    """Forecast volatility over the coin's norm for the same hours: ``√(m̂_H / (L·s̄_H))``."""


MIN_RETURNS: Final = 3
"""Returns a state needs before it forecasts."""
RISK_MIN_RETURNS: Final = 100
"""Returns a state needs before its risk ratio is used: this many, and at least a day of bars
(the norm must have seen a day of the coin; a 35-minute tick capture never gets there, and its
regime then flags on the volatility expansion alone)."""


@dataclass(slots=True)
class VolState:
    """Per-coin EWMA sums (numerator, weight) of the components and the norm."""

    model: VolModel
    sums: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    n: int = 0
    last: VolSnapshot | None = None
    _lams: tuple[float, ...] = ()
    _long: tuple[int, float] = (0, 0.0)

    def __post_init__(self) -> None:
        k = len(self.model.half_lives_bars) + 1
        self.sums = [0.0] * k
        self.weights = [0.0] * k
        self._lams = tuple(math.pow(0.5, 1.0 / h) for h in self.model.half_lives_bars)

    def mark(self) -> tuple[object, ...]:
        """A copy of the (small) state, for `restore`."""
        return (tuple(self.sums), tuple(self.weights), self.n, self.last)

    def restore(self, m: tuple[object, ...]) -> None:
        """Back to the state `mark` copied."""
        sums, weights, self.n, self.last = m  # type: ignore[assignment]
        self.sums = list(sums)  # type: ignore[call-overload]
        self.weights = list(weights)  # type: ignore[call-overload]

    def update(self, r: float, open_ms: int, close_ms: int) -> VolSnapshot | None:
        """Fold one bar return ``r`` (log) of the bar ``[open_ms, close_ms)``."""
        model = self.model
        bar_ms = max(1, close_ms - open_ms)
        u = r * r / model.season_at(open_ms)
        sums = self.sums
        weights = self.weights
        lams = self._lams
        k = len(lams)
        for i in range(k):
            lam = lams[i]
            sums[i] = lam * sums[i] + (1.0 - lam) * u
            weights[i] = lam * weights[i] + (1.0 - lam)
        if self._long[0] != bar_ms:
            self._long = (bar_ms, model.long_lambda(bar_ms))
        lam = self._long[1]
        sums[k] = lam * sums[k] + (1.0 - lam) * u
        weights[k] = lam * weights[k] + (1.0 - lam)
        self.n += 1
        norm = sums[k] / weights[k]
        if self.n < MIN_RETURNS or not norm > 0.0:
            self.last = None
            return None
        self.last = VolSnapshot(
            tuple(sums[i] / weights[i] for i in range(k)), norm, close_ms, bar_ms, self.n
        )
        return self.last


def mean_var(model: VolModel, snap: VolSnapshot, bars: int) -> tuple[float, LadderFit, float]:
    """``(m̂_H, the ladder entry used, s̄_H)``: forecast mean per-bar variance over ``bars``."""
    fit = model.fit_for(bars)
    coef = fit.coef
    norm = snap.norm
    floor = model.floor
    x = coef[0]
    for i, c in enumerate(snap.comps):
        ratio = c / norm
        x += coef[1 + i] * math.log(ratio if ratio > floor else floor)
    s_ahead = model.season_ahead(snap.close_ms, bars, snap.bar_ms)
    x += coef[-1] * math.log(s_ahead)
    if x > 50.0:  # a ratio of e^50 is no forecast; keep the value finite
        x = 50.0
    return norm * math.exp(x), fit, s_ahead


def shifted(q10: float, q90: float, levels: tuple[float, float] | None) -> tuple[float, float]:
    """The fitted log bounds moved to the adapted tail levels ``(α_lo, α_hi)``.

    ``q_lo = q10 + σ·(z(α_lo) − z(0.1))``, ``q_hi = q90 − σ·(z(α_hi) − z(0.1))`` with ``z`` the
    standard normal quantile and ``σ = (q90 − q10) / (2·z(0.9))``: the normal through the two
    fitted quantiles, exact at the fitted levels (a level of 0.1 leaves its bound unchanged).
    """
    if levels is None:
        return q10, q90
    a_lo, a_hi = levels
    sigma = (q90 - q10) / (-2.0 * _Z_TARGET)
    lo = q10 if a_lo == ACI_TARGET else q10 + sigma * (_Z(a_lo) - _Z_TARGET)
    hi = q90 if a_hi == ACI_TARGET else q90 - sigma * (_Z(a_hi) - _Z_TARGET)
    return lo, hi


def forecast(
    model: VolModel,
    snap: VolSnapshot,
    horizon_ms: int,
    levels: tuple[float, float] | None = None,
) -> Forecast:
    """The forecast over ``horizon_ms`` (at least one bar) from a snapshot; ``levels``: the
    adapted tail levels of the interval (`shifted`; None: the fitted quantiles)."""
    bars = max(1, round(horizon_ms / snap.bar_ms))
    m, fit, s_ahead = mean_var(model, snap, bars)
    var = bars * m
    q10, q90 = shifted(*model.interval_for(snap.bar_ms, bars), levels)
    return Forecast(
        horizon_ms=horizon_ms,
        vol_bps=fround(1e4 * math.sqrt(var * fit.smear), 4),
        vol_p10_bps=fround(1e4 * math.sqrt(var * math.exp(q10)), 4),
        vol_p90_bps=fround(1e4 * math.sqrt(var * math.exp(q90)), 4),
        model=model.version,
        ratio=fround(math.sqrt(m / (snap.norm * s_ahead)), 4),
    )


def flag_bars(bar_ms: int, model: VolModel) -> int:
    """The risk flag's horizon in bars: one hour of bars, at least 6, at most the ladder's top."""
    top = max(f.bars for f in model.ladder)
    return min(top, max(FLAG_MIN_BARS, -(-MS_HOUR // max(1, bar_ms))))


def risk_ratio(model: VolModel, snap: VolSnapshot) -> float | None:
    """``ρ = √(m̂_F / L)``: the next hour's forecast volatility over the coin's norm (None
    before `RISK_MIN_RETURNS` returns)."""
    if snap.n < max(RISK_MIN_RETURNS, MS_DAY // max(1, snap.bar_ms)):
        return None
    m, _, _ = mean_var(model, snap, flag_bars(snap.bar_ms, model))
    return fround(math.sqrt(m / snap.norm), 4)


# -- the table -------------------------------------------------------------------------------


def _num(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        msg = f"volatility model: {what} must be a finite number, got {x!r}"
        raise ValueError(msg)
    return float(x)


def parse(doc: Any, path: str = "") -> VolModel:
    """Validate and load a model document. Raises ValueError (also for another format)."""
    if not isinstance(doc, dict):
        msg = "volatility model: the document must be an object"
        raise ValueError(msg)
    fmt = doc.get("format")
    if fmt not in (MODEL_FORMAT, *OLD_FORMATS):
        msg = (
            f"volatility model {path or '(document)'}: format {fmt!r} is not {MODEL_FORMAT!r}; "
            "refit it with `python -m tools.evaluate.vol_fit`"
        )
        raise ValueError(msg)
    version = doc.get("version")
    if not isinstance(version, str) or not version:
        msg = "volatility model: version must be a non-empty id"
        raise ValueError(msg)
    season = doc.get("season")
    if not isinstance(season, dict):
        msg = "volatility model: season must be an object with weekday and weekend lists"
        raise ValueError(msg)
    rows: list[tuple[float, ...]] = []
    for key in ("weekday", "weekend"):
        vals = season.get(key)
        if not isinstance(vals, list) or len(vals) != 24:
            msg = f"volatility model: season.{key} must list 24 hourly factors"
            raise ValueError(msg)
        row = tuple(_num(v, f"season.{key}") for v in vals)
        if min(row) <= 0:
            msg = f"volatility model: season.{key} factors must be > 0"
            raise ValueError(msg)
        rows.append(row)
    hls_raw = doc.get("half_lives_bars")
    if not isinstance(hls_raw, list) or not hls_raw:
        msg = "volatility model: half_lives_bars must be a non-empty list"
        raise ValueError(msg)
    hls = tuple(_num(h, "half_lives_bars") for h in hls_raw)
    if min(hls) <= 0:
        msg = "volatility model: half_lives_bars must be > 0"
        raise ValueError(msg)
    ladder: list[LadderFit] = []
    raw_ladder = doc.get("ladder")
    if not isinstance(raw_ladder, dict) or not raw_ladder:
        msg = "volatility model: ladder must be a non-empty object"
        raise ValueError(msg)
    for key, spec in sorted(raw_ladder.items(), key=lambda kv: int(kv[0])):
        if not isinstance(spec, dict):
            msg = f"volatility model: ladder {key!r} must be an object"
            raise ValueError(msg)
        coef = spec.get("coef")
        if not isinstance(coef, list) or len(coef) != len(hls) + 2:
            msg = f"volatility model: ladder {key}: coef needs {len(hls) + 2} numbers"
            raise ValueError(msg)
        fit = LadderFit(
            bars=int(key),
            coef=tuple(_num(c, f"ladder {key} coef") for c in coef),
            smear=_num(spec.get("smear"), f"ladder {key} smear"),
            q10=_num(spec.get("q10"), f"ladder {key} q10"),
            q90=_num(spec.get("q90"), f"ladder {key} q90"),
            n=int(_num(spec.get("n"), f"ladder {key} n")),
        )
        if fit.bars < 1 or fit.smear <= 0 or not fit.q10 < fit.q90:
            msg = f"volatility model: ladder {key}: need bars >= 1, smear > 0, q10 < q90"
            raise ValueError(msg)
        ladder.append(fit)
    flag = doc.get("flag")
    if not isinstance(flag, dict):
        msg = "volatility model: flag must be an object with enter and exit"
        raise ValueError(msg)
    enter = _num(flag.get("enter"), "flag.enter")
    leave = _num(flag.get("exit"), "flag.exit")
    if not 0 < leave <= enter:
        msg = "volatility model: need 0 < flag.exit <= flag.enter"
        raise ValueError(msg)
    intervals: list[IntervalFit] = []
    raw_iv = doc.get("intervals") if fmt == MODEL_FORMAT else {}
    if not isinstance(raw_iv, dict) or (fmt == MODEL_FORMAT and not raw_iv):
        msg = "volatility model: intervals must be a non-empty object {bar_ms: {bars: {...}}}"
        raise ValueError(msg)
    for fam, hs in raw_iv.items():
        if not isinstance(hs, dict) or not hs:
            msg = f"volatility model: intervals {fam!r} must be a non-empty object"
            raise ValueError(msg)
        for key, spec in hs.items():
            if not isinstance(spec, dict):
                msg = f"volatility model: intervals {fam}/{key} must be an object"
                raise ValueError(msg)
            what = f"intervals {fam}/{key}"
            try:
                bar_ms, bars = int(fam), int(key)
            except ValueError:
                msg = f"volatility model: {what}: keys must be integers (bar_ms, then bars)"
                raise ValueError(msg) from None
            iv = IntervalFit(
                bar_ms=bar_ms,
                bars=bars,
                q10=_num(spec.get("q10"), f"{what} q10"),
                q90=_num(spec.get("q90"), f"{what} q90"),
                n=int(_num(spec.get("n"), f"{what} n")),
            )
            if iv.bar_ms < 1 or iv.bars < 1 or not iv.q10 < iv.q90:
                msg = f"volatility model: {what}: need bar_ms >= 1, bars >= 1, q10 < q90"
                raise ValueError(msg)
            intervals.append(iv)
    gamma = 0.0
    aci = doc.get("aci")
    if aci is not None:
        gamma = _num(aci.get("gamma") if isinstance(aci, dict) else aci, "aci.gamma")
        if not 0.0 <= gamma < 1.0:
            msg = f"volatility model: aci.gamma must be in [0, 1), got {gamma}"
            raise ValueError(msg)
    fitted = doc.get("fitted_on")
    return VolModel(
        version=version,
        season=(rows[0], rows[1]),
        half_lives_bars=hls,
        long_half_life_ms=int(_num(doc.get("long_half_life_ms"), "long_half_life_ms")),
        long_min_bars=_num(doc.get("long_min_bars"), "long_min_bars"),
        floor=_num(doc.get("floor"), "floor"),
        flag_enter=enter,
        flag_exit=leave,
        ladder=tuple(ladder),
        intervals=tuple(sorted(intervals, key=lambda i: (i.bar_ms, i.bars))),
        aci_gamma=gamma,
        fitted_on=fitted if isinstance(fitted, dict) else {},
        path=path,
    )


def load(path: str | Path) -> VolModel:
    """Load a model table file. Raises OSError or ValueError."""
    p = Path(path)
    try:
        doc = json.loads(p.read_bytes())
    except json.JSONDecodeError as ex:
        msg = f"volatility model {p}: not JSON: {ex}"
        raise ValueError(msg) from None
    return parse(doc, str(p))


def load_default() -> VolModel | None:
    """The committed table; None when there is none (the regime then has no risk ratio and
    flags on volatility expansion alone). A malformed or old-format table raises."""
    if DEFAULT_PATH.is_file():
        return load(DEFAULT_PATH)
    return None
