"""The report's sentences, read off the numbers and regenerated with them: the README's summary
paragraph, the findings, and what the data can and cannot show."""

from __future__ import annotations

import math

from tools.evaluate.results import Evaluation
from tools.evaluate.series import SPLIT_TEXT
from tools.evaluate.text import (
    ci_side,
    fmt_ci,
    fmt_ci_pct,
    fmt_duration,
    fmt_num,
    fmt_pct,
    iso_utc,
)


def summary_paragraph(ev: Evaluation) -> str:
    """The README paragraph: key figures, plainly."""
    parts: list[str] = []
    for res in ev.datasets:
        hm = res.spec.main_horizon_ms
        ic = res.ic[(hm, "out")]
        hit = res.hit[(hm, "out")]
        cal = res.calibration.get((hm, "out"))
        coins = ", ".join(sorted(set(res.rows.coin)))
        span = f"{iso_utc(int(res.rows.ts.min()))[:10]} → {iso_utc(int(res.rows.ts.max()))[:10]}"
        ics = [res.ic[(h, "out")].value for h in res.spec.horizons_ms]
        text = (
            f"**{res.spec.name}** ({coins}; {span}; {len(res.rows.ts):,} envelopes): IC at "
            f"{fmt_duration(hm)} {fmt_ci(ic, '+.3f')} (from {min(ics):+.3f} to {max(ics):+.3f} "
            f"over {', '.join(fmt_duration(h) for h in res.spec.horizons_ms)}), directional hit "
            f"rate {fmt_ci_pct(hit)} with {fmt_pct(res.shares['out'].get('FLAT', math.nan), 0)} "
            "of bars FLAT"
        )
        if cal is not None:
            text += (
                f", Brier of the fitted calibration {fmt_num(cal.brier)} vs "
                f"{fmt_num(cal.brier_ref)} for a constant base rate"
            )
        reg = {r.label: r for r in res.regimes}
        hot = [reg[k] for k in ("LIQUIDATION_RISK", "CHAOTIC") if k in reg]
        calm = reg.get("MEAN_REVERTING")
        if hot and calm is not None and calm.rv_bps > 0:
            ratios = " and ".join(
                f"{r.label} ({r.spells:,} spells) {r.rv_bps / calm.rv_bps:.1f}×"
                for r in hot
                if math.isfinite(r.rv_bps)
            )
            text += (
                f"; forward {fmt_duration(hm)} realised vol after {ratios} that after "
                "MEAN_REVERTING"
            )
        parts.append(text + ".")
    groups: list[str] = []
    n_sig = 0
    for res in ev.datasets:
        for side in ("above 0", "below 0"):
            hs = [h for h in res.spec.horizons_ms if ci_side(res.ic[(h, "out")]) == side]
            if hs:
                n_sig += len(hs)
                groups.append(
                    f"{res.spec.name} at {', '.join(fmt_duration(h) for h in hs)} ({side})"
                )
    total = sum(len(r.spec.horizons_ms) for r in ev.datasets)
    verdict = (
        f"Out of sample the IC's 95 % CI excludes zero in {n_sig} of {total} "
        "dataset × horizon cases: " + "; ".join(groups) + "."
        if groups
        else "Out of sample no horizon's IC has a 95 % CI that excludes zero: no reliable "
        "directional edge is shown."
    )
    head = (
        "Replaying the data through the production flow and scoring every envelope against the "
        "coin's own later price (`python -m tools.evaluate`; IC = Spearman of direction × score "
        "vs the forward log return, 95 % CIs by block bootstrap; all figures out-of-sample: "
        f"{SPLIT_TEXT}, which no fit ever saw): "
    )
    tail = (
        f" {verdict} Calibration table `operators/calibration/edge_calibration.json` version "
        f"`{ev.calibration.get('version', '–')}`. {data_limits(ev)} Details: "
        "docs/evaluation/report.md."
    )
    return head + " ".join(parts) + tail


def findings(ev: Evaluation) -> list[str]:
    """Plain statements read off the numbers (regenerated with them)."""
    out: list[str] = []
    for res in ev.datasets:
        name = f"**{res.spec.name}**"
        hs = res.spec.horizons_ms
        best = max(hs, key=lambda h: abs(res.ic[(h, "out")].value) if res.ic[(h, "out")].n else 0)
        ivb = res.ic[(best, "out")]
        out.append(
            f"{name}: the largest out-of-sample |IC| is {fmt_ci(ivb)} at {fmt_duration(best)} "
            f"({ci_side(ivb)}); its square, {100 * ivb.value**2:.2f} %, is the share of the "
            "forward-return rank variance it accounts for."
        )
        lost = [
            fmt_duration(h)
            for h in hs
            if ci_side(res.ic[(h, "in")]) == "above 0" and ci_side(res.ic[(h, "out")]) != "above 0"
        ]
        if lost:
            out.append(
                f"{name}: the in-sample IC was above zero at {', '.join(lost)} but is not out of "
                "sample: do not read the in-sample figures as skill."
            )
        n_act = int((res.rows.actionable & res.rows.warm).sum())
        if n_act == 0:
            out.append(
                f"{name}: no envelope was `actionable` (the expected move never cleared the "
                "costs, or the costs were unknown), so the hit rate of actionable calls cannot be "
                "measured here."
            )
        else:
            out.append(f"{name}: {n_act:,} warmed-up envelopes were `actionable`.")
        zero = [fmt_duration(h) for h in hs if res.zero_move.get((h, "out"), 0.0) > 0.2]
        if zero:
            out.append(
                f"{name}: at {', '.join(zero)} more than 20 % of forward moves are exactly zero "
                "(the price did not change), so the hit rate there is far below 50 % for any "
                "direction; read those horizons through the IC."
            )
        single = [
            fmt_duration(h)
            for h in hs
            if len(ev.calibration["horizons"].get(str(h), {}).get("bins", [])) == 1
        ]
        if single:
            out.append(
                f"{name}: the calibration at {', '.join(single)} is a single bin: the in-sample "
                "data could not tell strong calls from weak ones, so `p_right` is the base rate "
                "for every call."
            )
        bss = [
            1 - c.brier / c.brier_ref
            for (h, part), c in res.calibration.items()
            if part == "out" and c.brier_ref > 0
        ]
        if bss:
            out.append(
                f"{name}: out-of-sample Brier skill of the fitted table against a constant base "
                f"rate ranges {min(bss):+.3f} … {max(bss):+.3f} (0 = no better than the base "
                "rate)."
            )
        reg = {r.label: r for r in res.regimes}
        calm = reg.get("MEAN_REVERTING")
        trend = reg.get("TRENDING")
        hm = fmt_duration(res.spec.main_horizon_ms)
        if calm is not None:
            for lab in ("LIQUIDATION_RISK", "CHAOTIC"):
                r = reg.get(lab)
                if r is None or not (calm.rv_bps > 0):
                    continue
                ratio = r.rv_bps / calm.rv_bps
                verdict = "more" if ratio > 1.1 else "less" if ratio < 0.9 else "about as"
                out.append(
                    f"{name}: bars labelled {lab} ({r.spells:,} spells, {fmt_pct(r.share)} of "
                    f"bars) are followed by {ratio:.1f}× the {hm} realised vol of MEAN_REVERTING "
                    f"bars ({verdict} volatile{' than' if verdict != 'about as' else ' as'} the "
                    "calm label)."
                )
            if trend is not None and math.isfinite(trend.er) and math.isfinite(calm.er):
                better = trend.er > calm.er
                out.append(
                    f"{name}: forward path efficiency over {hm} is {trend.er:.2f} after TRENDING "
                    f"vs {calm.er:.2f} after MEAN_REVERTING: "
                    + (
                        "the trend label does foretell straighter paths."
                        if better
                        else "the trend label does not foretell straighter paths."
                    )
                )
    return out


def data_limits(ev: Evaluation) -> str:
    """One sentence: what the inputs lack."""
    bits: list[str] = []
    if any(r.spec.kind == "candle" for r in ev.datasets):
        bits.append(
            "the candle data has no book, trade flow or asset context (stress windows such as "
            "2025-04-06/07 are seen only through candle closes, with degraded regime inputs)"
        )
    for res in ev.datasets:
        if res.spec.kind != "tick":
            continue
        books = [c for c, u in res.inputs_used.items() if "book" in u]
        minutes = (int(res.rows.ts.max()) - int(res.rows.ts.min())) / 60_000
        bits.append(
            f"books and quotes exist only for {', '.join(books) or 'no coin'} in "
            f"{minutes:.0f} minutes of tick data"
        )
    if not any("asset_ctx" in u for r in ev.datasets for u in r.inputs_used.values()):
        bits.append("no input carries the asset context (funding, open interest)")
    if not bits:
        return ""
    text = "; ".join(bits)
    return text[0].upper() + text[1:] + "."


def data_caveats(ev: Evaluation) -> list[str]:
    """What the data can and cannot show, derived from what the inputs actually held."""
    out: list[str] = []
    any_ctx = any("asset_ctx" in used for r in ev.datasets for used in r.inputs_used.values())
    for res in ev.datasets:
        coins = sorted(res.inputs_used)
        span_s = (int(res.rows.ts.max()) - int(res.rows.ts.min())) / 1000 if res.rows.ts.size else 0
        span = (
            f"{span_s / 60:.0f} minutes" if span_s < 3 * 86_400 else f"{span_s / 86_400:.0f} days"
        )
        used = "; ".join(f"{c}: {', '.join(res.inputs_used[c]) or 'none'}" for c in coins)
        src = ", ".join(f"{c} {res.price_source.get(c, '?')}" for c in coins)
        chans = ", ".join(f"{k} {v:,}" for k, v in sorted(res.frames.items()))
        out.append(
            f"**{res.spec.name}** — {len(res.spec.files)} file(s), {span}; frames: {chans}. "
            f"Inputs the regime saw per coin: {used}. Forward returns from: {src}."
        )
    kinds = {r.spec.kind for r in ev.datasets}
    if "candle" in kinds:
        out.append(
            "Candle-only data carries no book, no trade flow and no asset context: the "
            "cascade rule runs in its degraded form (vol expansion ≥ 3 with a one-way path), "
            "liquidity falls back to volume, and every call is marked `DEGRADED_INPUTS` with "
            "lower confidence. Any crash in these files (e.g. 2025-04-06/07) is seen only "
            "through 5-minute or hourly closes."
        )
    if "tick" in kinds:
        res = next(r for r in ev.datasets if r.spec.kind == "tick")
        with_book = [c for c, u in res.inputs_used.items() if "book" in u]
        without = [c for c in res.inputs_used if c not in with_book]
        if with_book and without:
            out.append(
                f"In the tick data only {', '.join(with_book)} has quotes and books; "
                f"{', '.join(without)} have trades only, so their price is the last trade "
                "(bid-ask bounce adds noise and negative autocorrelation at the shortest horizons)."
            )
        span_s = (int(res.rows.ts.max()) - int(res.rows.ts.min())) / 1000
        if span_s < 6 * 3600:
            out.append(
                f"The tick data spans only {span_s / 60:.0f} minutes: horizons of a minute or more "
                "leave few independent windows (see the block counts), so their CIs are wide."
            )
    if not any_ctx:
        out.append(
            "No input has `activeAssetCtx`: the open-interest-drop stress, funding and premium are "
            "untested by this evaluation."
        )
    return out
