"""The feature windows and bands (`FeatureConfig`), shared by every feature group."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Feature windows and bands.

    Attributes:
        window_obs: rolling window W, in price observations (bars with a price): volatility,
            variance ratio, price z-score.
        trend_obs: trend window R for the direction and flow features (momentum, efficiency
            ratio, flow imbalances, trade rate, OFI, open-interest change); 0: ``W // 2``, and
            never below ``short_obs``.
        short_obs: short window S (volatility expansion, trade-rate burst, first baselines).
        long_obs: long (baseline) window L for volatility, spread, depth, volume, OFI and trade
            rate baselines.
        warmup_obs: observations needed before signals count as warmed up.
        depth_band_bps: half-width B of the band around mid for depth features, in bps.
        vr_q: horizon q of the variance ratio, in observations (capped at W/3, at least 2).
        micro_buckets: imbalance states of the micro-price estimator.
        micro_memory: forgetting of the micro-price estimator, in mid changes.
        micro_min_obs: (effective) observations a state needs before its adjustment is used.
        micro_prior_obs: pseudo-observations at zero adjustment (the mid) that each state's
            estimate is shrunk with (`operators.microstructure.MicroPrice`).
        vpin_buckets: volume buckets VPIN averages over.
        vpin_min_buckets: completed buckets before VPIN is reported.
        vpin_bucket_obs: a bucket holds the coin's mean volume of this many bars.
    """

    window_obs: int = 60
    trend_obs: int = 0
    short_obs: int = 10
    long_obs: int = 600
    warmup_obs: int = 30
    depth_band_bps: float = 10.0
    vr_q: int = 5
    micro_buckets: int = 10
    micro_memory: float = 5000.0
    micro_min_obs: float = 20.0
    micro_prior_obs: float = 20.0
    vpin_buckets: int = 50
    vpin_min_buckets: int = 10
    vpin_bucket_obs: float = 5.0

    def __post_init__(self) -> None:
        if not 2 <= self.short_obs < self.window_obs <= self.long_obs:
            msg = (
                "need 2 <= short_obs < window_obs <= long_obs, got "
                f"{self.short_obs}, {self.window_obs}, {self.long_obs}"
            )
            raise ValueError(msg)
        if self.warmup_obs < 2 or self.depth_band_bps <= 0:
            msg = "warmup_obs must be >= 2 and depth_band_bps > 0"
            raise ValueError(msg)
        if self.trend_obs < 0 or self.trend_obs > self.window_obs:
            msg = f"trend_obs must be in 0..window_obs, got {self.trend_obs}"
            raise ValueError(msg)
        if self.vr_q < 2 or self.micro_buckets < 2 or self.vpin_buckets < 1:
            msg = "need vr_q >= 2, micro_buckets >= 2 and vpin_buckets >= 1"
            raise ValueError(msg)
        if (
            self.vpin_bucket_obs <= 0
            or self.micro_memory < 1
            or self.micro_min_obs <= 0
            or not 0 <= self.micro_prior_obs < float("inf")
        ):
            msg = (
                "need vpin_bucket_obs > 0, micro_memory >= 1, micro_min_obs > 0 and a finite "
                "micro_prior_obs >= 0"
            )
            raise ValueError(msg)

    @property
    def r(self) -> int:
        """The trend window actually used (``trend_obs``, else ``W // 2``; at least S)."""
        return max(self.short_obs, self.trend_obs or self.window_obs // 2)

    @property
    def q(self) -> int:
        """The variance-ratio horizon actually used: ``min(vr_q, W // 3)``, at least 2."""
        return max(2, min(self.vr_q, self.window_obs // 3))
