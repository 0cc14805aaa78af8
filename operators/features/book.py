"""Book features: the mid, the top of book (spread, weighted mid, Stoikov micro-price, imbalance),
depth within the band, and spread and depth against their own history (DESIGN.md §4, Book).

`BookFeatures.update` also takes in the bar's quotes: it keeps the newest top of book (the newest
of the latest ``bbo`` and the latest book's first levels), the latest book, allMids mid and ctx
mid, and runs the quote path: every two-sided top-of-book state of the bar, in exchange-time
order, feeds the micro-price estimator and the bar's order-flow imbalance, which it hands to the
flow group (`operators.features.flow`) to window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

from connectors.events import BookSnapshot
from operators.bars import Bar
from operators.features.config import FeatureConfig
from operators.features.vector import Missing, Values, ratio_to_median
from operators.microstructure import MicroPrice, ofi_step
from operators.rolling import RollingMedian

_TOB_NAMES: Final = (
    "spread_bps",
    "weighted_mid_px",
    "microprice_px",
    "microprice_offset_bps",
    "tob_imbalance",
    "spread_ratio",
)
_BOOK_NAMES: Final = (
    "depth_band_bps",
    "depth_bid_usd",
    "depth_ask_usd",
    "depth_imbalance",
    "book_levels",
    "depth_ratio",
)

QuotePath = tuple[float, float, int]
"""What the quote path of a bar hands the flow group: ``(OFI of the bar, Σ touch depth,
top-of-book states)``."""


@dataclass(slots=True)
class BookFeatures:
    """The coin's latest quotes and book, the micro-price estimator and the spread and depth
    histories; `update` once per bar."""

    config: FeatureConfig
    tob: tuple[int, float, float, float, float] | None = None  # time, bid, bid_sz, ask, ask_sz
    snapshot: BookSnapshot | None = None
    """The latest book with a top, or an empty one (a delisted or halted coin)."""
    bad_book: str | None = None
    """Why the latest book could not be read (None once a usable book arrives)."""
    allmid_px: float | None = None
    ctx_mid_px: float | None = None
    ofi_prev: tuple[float, float, float, float] | None = None
    micro: MicroPrice = field(init=False)
    spreads: RollingMedian = field(init=False)
    depths: RollingMedian = field(init=False)
    _depth_of: tuple[BookSnapshot | None, float, float] = field(
        init=False, default=(None, 0.0, 0.0)
    )

    def __post_init__(self) -> None:
        cfg = self.config
        self.micro = MicroPrice(
            cfg.micro_buckets, cfg.micro_memory, cfg.micro_min_obs, cfg.micro_prior_obs
        )
        self.spreads = RollingMedian(cfg.long_obs)
        self.depths = RollingMedian(cfg.long_obs)

    def gap(self) -> None:
        """The input had a hole: no top-of-book transition is counted across it."""
        self.ofi_prev = None
        self.micro.reset_pending()

    def update(
        self, bar: Bar, bbo_stream: bool, values: Values, missing: Missing
    ) -> QuotePath | None:
        """Take in the bar's quotes and set ``mid_px`` and the book features.

        ``bbo_stream``: the coin has a ``bbo`` stream (else the latest book is its only
        top-of-book feed). Returns the bar's quote path for the flow group, None while the coin
        has no top of book.
        """
        tob = self.tob
        quotes: list[tuple[float, float, float, float]] = []
        for b in bar.bbos:
            bid = b.bid_px
            ask = b.ask_px
            if bid is None or ask is None:
                continue
            bq = b.bid_sz or 0.0
            aq = b.ask_sz or 0.0
            if tob is None or b.time_ms >= tob[0]:
                tob = (b.time_ms, bid, bq, ask, aq)
            quotes.append((bid, bq, ask, aq))
        if bar.books:
            book = bar.books[-1]
            if book.has_top:
                self.snapshot = book
                self.bad_book = None
                bid, bq, ask, aq = book.bid_px[0], book.bid_sz[0], book.ask_px[0], book.ask_sz[0]
                if tob is None or book.time_ms >= tob[0]:
                    tob = (book.time_ms, bid, bq, ask, aq)
                if not bbo_stream:  # the book is this coin's only top-of-book feed
                    quotes.append((bid, bq, ask, aq))
            elif book.error is not None:
                self.bad_book = book.error
            else:
                self.snapshot = book  # an empty book: a delisted or halted coin
        prev = self.ofi_prev
        micro = self.micro
        ofi = 0.0
        touch = 0.0
        for q in quotes:
            if prev is not None:
                ofi += ofi_step(*prev, *q)
            prev = q
            touch += (q[1] + q[3]) * 0.5
            micro.observe(*q)
        self.tob = tob
        self.ofi_prev = prev
        if bar.mids:
            self.allmid_px = bar.mids[-1].mid_px
        if bar.ctxs:
            self.ctx_mid_px = bar.ctxs[-1].mid_px

        # The mid: of the top of book, else the allMids mid, else the ctx mid.
        if tob is not None:
            mid: float | None = (tob[1] + tob[3]) / 2.0
        elif self.allmid_px is not None:
            mid = self.allmid_px
        else:
            mid = self.ctx_mid_px
        values["mid_px"] = mid
        if mid is None:
            missing["mid_px"] = "no_quote"
        self._top_of_book(values, missing)
        self._depth(values, missing)
        return None if tob is None else (ofi, touch, len(quotes))

    def _top_of_book(self, values: Values, missing: Missing) -> None:
        tob = self.tob
        if tob is None:
            for n in _TOB_NAMES:
                missing[n] = "no_quote"
            return
        _, bid, bid_sz, ask, ask_sz = tob
        mid = (bid + ask) / 2.0
        if not 0.0 < mid < math.inf:  # only from a bad wire value (mid_px fails its range)
            for n in _TOB_NAMES:
                missing[n] = "invalid_quote"
            return
        spread = 1e4 * (ask - bid) / mid
        values["spread_bps"] = spread
        total = bid_sz + ask_sz
        if total > 0:
            weighted = (bid * ask_sz + ask * bid_sz) / total
            values["weighted_mid_px"] = weighted
            values["tob_imbalance"] = (bid_sz - ask_sz) / total
            g = self.micro.g(bid_sz, ask_sz, ask - bid) if ask > bid else None
            if g is not None:
                micro = mid + (ask - bid) * g
                values["microprice_px"] = micro
                values["microprice_offset_bps"] = 1e4 * (micro - mid) / mid
            else:
                reason = "warming_up" if ask > bid else "crossed_or_locked"
                missing["microprice_px"] = missing["microprice_offset_bps"] = reason
        else:
            for n in ("weighted_mid_px", "microprice_px", "microprice_offset_bps", "tob_imbalance"):
                missing[n] = "empty_top_of_book"
        ratio_to_median(
            self.spreads, spread, "spread_ratio", self.config.short_obs, values, missing
        )

    def _depth(self, values: Values, missing: Missing) -> None:
        book = self.snapshot
        if book is None:
            reason = "bad_book" if self.bad_book else "no_book"
            for n in _BOOK_NAMES:
                missing[n] = reason
            return
        band = self.config.depth_band_bps
        values["depth_band_bps"] = band
        values["book_levels"] = float(len(book.bid_px) + len(book.ask_px))
        if not book.has_top:
            for n in ("depth_bid_usd", "depth_ask_usd", "depth_imbalance", "depth_ratio"):
                missing[n] = "empty_book"
            return
        cached, db, da = self._depth_of
        if cached is not book:  # a new book: sum its levels within the band once
            bid_px = book.bid_px
            ask_px = book.ask_px
            mid = (bid_px[0] + ask_px[0]) / 2.0
            lo = mid * (1 - band / 1e4)
            hi = mid * (1 + band / 1e4)
            db = 0.0
            for p, s in zip(bid_px, book.bid_sz, strict=False):
                if p < lo:
                    break
                db += p * s
            da = 0.0
            for p, s in zip(ask_px, book.ask_sz, strict=False):
                if p > hi:
                    break
                da += p * s
            self._depth_of = (book, db, da)
        values["depth_bid_usd"] = db
        values["depth_ask_usd"] = da
        total = db + da
        if total > 0:
            values["depth_imbalance"] = (db - da) / total
        else:
            missing["depth_imbalance"] = "no_depth_in_band"
        ratio_to_median(self.depths, total, "depth_ratio", self.config.short_obs, values, missing)

    def mark(self) -> tuple[Any, ...]:
        """Everything `update` may change (`restore` puts it back)."""
        return (
            self.tob,
            self.snapshot,
            self.bad_book,
            self.allmid_px,
            self.ctx_mid_px,
            self.ofi_prev,
            self.micro.mark(),
            self.spreads.mark(),
            self.depths.mark(),
            self._depth_of,
        )

    def restore(self, m: tuple[Any, ...]) -> None:
        """Back to the state `mark` saw."""
        (
            self.tob,
            self.snapshot,
            self.bad_book,
            self.allmid_px,
            self.ctx_mid_px,
            self.ofi_prev,
            micro,
            spreads,
            depths,
            self._depth_of,
        ) = m
        self.micro.restore(micro)
        self.spreads.undo(spreads)
        self.depths.undo(depths)
