"""`tools.evaluate.flag_tradeoff` and `flag_scores`: the risk flag recomputed at other settings."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from operators.flag_evidence import FlagEvidence, parse
from tools.evaluate.flag_scores import (
    agreement,
    evidence_doc,
    flag,
    margin_ci,
    rows_for,
    series_flags,
    stay_rows_for,
)
from tools.evaluate.flag_tradeoff import main, parse_grid, render
from tools.evaluate.series import CANDLE_SPLIT_MS, CRASH_WINDOW_MS, CandleSeries, resample

HOUR = 3_600_000


def test_flag_is_rho_or_expansion_and_nan_never_flags() -> None:
    rho = np.array([0.5, 1.0, np.nan, 0.9, np.nan])
    ver = np.array([1.0, 1.0, 3.0, 2.9, np.nan])
    assert flag(rho, ver, 3.0).tolist() == [False, True, True, False, False]
    assert flag(rho, ver, 2.5).tolist() == [False, True, True, True, False]
    assert flag(rho, ver, math.inf).tolist() == [False, True, False, False, False]


def test_stay_band_holds_the_flag_while_the_expansion_stays_up() -> None:
    rho = np.array([0.5, 1.1, 0.9, 0.9, 0.9, 0.5, 0.5, 0.5, np.nan])
    ver = np.array([1.0, 1.0, 2.5, 2.0, 1.9, 3.2, 2.1, 1.0, 2.9])
    # no band: ρ ≥ 1 or VER ≥ 3 bar by bar
    plain = [False, True, False, False, False, True, False, False, False]
    assert flag(rho, ver, 3.0).tolist() == plain
    assert flag(rho, ver, 3.0, 3.0).tolist() == plain  # stay = flag_ver: no band
    assert flag(rho, ver, 3.0, 4.0).tolist() == plain  # above it: no band either
    # stay 2: a flagged bar's successor stays flagged while VER ≥ 2; once off, it needs ≥ 3
    assert flag(rho, ver, 3.0, 2.0).tolist() == [
        False,
        True,
        True,
        True,
        False,
        True,
        True,
        False,
        False,
    ]


def test_parse_grid_names_the_bad_value() -> None:
    assert parse_grid("2, 2.5,inf") == (2.0, 2.5, math.inf)
    with pytest.raises(ValueError, match="'x' is not a number"):
        parse_grid("2,x")
    with pytest.raises(ValueError, match=r"'0\.5' must be above 1"):
        parse_grid("0.5")
    with pytest.raises(ValueError, match=r"^--stay: 'y' is not a number"):
        parse_grid("2,y", "--stay")


def _series() -> tuple[CandleSeries, list[dict[str, object]]]:
    """Hourly candles over the crash and the split; a calm walk with two volatile stretches, one
    in the crash window (where only the expansion is high) and one after the split."""
    start = int(datetime(2025, 3, 20, tzinfo=UTC).timestamp() * 1000)
    end = CANDLE_SPLIT_MS + 20 * 24 * HOUR
    open_ms = np.arange(start, end, HOUR, dtype=np.int64)
    close_ms = open_ms + HOUR
    rng = np.random.default_rng(7)
    r = rng.normal(0.0, 0.005, len(open_ms))
    crash = (close_ms > CRASH_WINDOW_MS[0]) & (close_ms <= CRASH_WINDOW_MS[1])
    late = (close_ms > CANDLE_SPLIT_MS + 5 * 24 * HOUR) & (
        close_ms <= CANDLE_SPLIT_MS + 7 * 24 * HOUR
    )
    r[crash | late] *= 6
    close = 100.0 * np.exp(np.cumsum(r))
    s = CandleSeries("SOL", HOUR, open_ms, close, Path("x"))
    envs: list[dict[str, object]] = []
    for i, t in enumerate(close_ms.tolist()):
        vol = crash[i] or late[i]
        rho = 1.2 if late[i] else 0.8
        ver = 2.7 if vol else 1.0
        published = rho >= 1.0 or ver >= 3.0
        envs.append(
            {
                "timestamp_ms": t,
                "coin": "SOL",
                "regime": {"risk_ratio": rho, "label": "CHAOTIC" if published else "TRENDING"},
                "features": {"vol_expansion_ratio": ver},
            }
        )
    return s, envs


def test_rows_score_each_threshold_and_the_crash() -> None:
    s, envs = _series()
    sf = series_flags(s, envs)
    assert sf.name == "1h SOL"
    assert sf.crash.sum() == 36  # 12:00 on 04-06 to the end of 04-07
    rows = {r.flag_ver: r for r in rows_for(sf, (2.5, 3.0))}
    # the crash is flagged only when the threshold is under its expansion of 2.7
    assert rows[2.5].crash == 1.0
    assert rows[3.0].crash == 0.0
    # after the split both flag the same volatile stretch (ρ ≥ 1), and nothing else
    assert rows[2.5].rate_oos == pytest.approx(rows[3.0].rate_oos)
    assert rows[3.0].rate_oos == pytest.approx(48 / sf.oos.sum())
    assert agreement(sf, 3.0) == (0, int(np.isfinite(sf.rho).sum()))
    assert agreement(sf, 2.5)[0] == 36  # the crash bars, flagged only at 2.5, differ
    text = render(list(rows.values()), 3.0, [("1h SOL", 0, 10)])
    assert "| 3 (shipped) | 1h SOL |" in text
    assert "| 2.5 | 1h SOL |" in text
    assert "| 100.0% |" in text
    assert "| 0.0% |" in text


def test_stay_rows_and_the_bootstrap_interval() -> None:
    s, envs = _series()
    sf = series_flags(s, envs)
    rows = {r.stay: r for r in stay_rows_for(sf, 3.0, (2.0, 3.0), n_boot=200)}
    # the crash's expansion (2.7) is below 3, so no stay band can hold what never entered
    assert rows[2.0].crash == rows[3.0].crash == 0.0
    # out of sample the flag is the volatile stretch, as the rule is: the interval brackets
    # the point estimate
    r = rows[3.0]
    lo, hi = r.ci_oos
    assert lo <= r.margin_oos <= hi
    # reproducible: a fixed seed gives the same interval; another seed, another interval
    f = flag(sf.rho, sf.ver, 3.0)
    assert margin_ci(f, sf, 200) == r.ci_oos
    assert margin_ci(f, sf, 200, seed=1) != r.ci_oos
    assert all(math.isnan(v) for v in margin_ci(f, sf, 0))
    # with a rule that is noise, a flag that knows the future (forward vol in its top decile)
    # beats the rule and one that flags its complement loses to it; the intervals say so
    rng = np.random.default_rng(3)
    noisy = replace(sf, fwd=rng.lognormal(size=len(sf.fwd)), rule=rng.random(len(sf.fwd)))
    oracle = noisy.fwd >= np.quantile(noisy.fwd[noisy.oos], 0.9)
    olo, _ = margin_ci(oracle, noisy, 200)
    assert olo > 0.3
    _, whi = margin_ci(~oracle, noisy, 200)
    assert whi < -0.3
    text = render(rows_for(sf, (3.0,)), 3.0, [("1h SOL", 0, 10)], list(rows.values()))
    assert "| 2 | 1h SOL |" in text
    assert "| 3 (shipped) | 1h SOL |" in text
    assert f"[{lo:+.3f}, {hi:+.3f}]" in text
    assert "Stay band of the expansion at flag_ver 3" in text


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), "--grid", "2,zero"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "flag_tradeoff: --grid: 'zero' is not a number"
    assert main([str(tmp_path), "--stay", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flag_tradeoff: --stay: '1' must be above 1")
    assert main([str(tmp_path), "--boot", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "flag_tradeoff: --boot: -1 must be 0 or more"
    out = tmp_path / "ev.json"
    assert main([str(tmp_path), "--boot", "10", "--write-evidence", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "flag_tradeoff: --write-evidence needs --boot of at least 100 (got 10)"
    assert not out.exists()
    candles = tmp_path / "c.ndjson"
    rows = [
        {
            "channel": "candle",
            "data": {
                "t": k * 300_000,
                "T": (k + 1) * 300_000 - 1,
                "s": "BTC",
                "i": "5m",
                "o": "1.0",
                "c": "1.0",
                "h": "1.0",
                "l": "1.0",
                "v": "1.0",
                "n": 1,
            },
        }
        for k in range(3)
    ]
    candles.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main([str(candles), "--also-bar-ms", "400000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "flag_tradeoff: --also-bar-ms 400000: no candle interval divides it"
    empty = tmp_path / "none.ndjson"
    empty.write_text('{"channel": "subscriptionResponse", "data": {}}\n')
    assert main([str(empty)]) == 2
    assert capsys.readouterr().err.strip() == "flag_tradeoff: no candle data in the inputs"


def test_evidence_table_from_the_published_flag() -> None:
    s, envs = _series()
    sf = series_flags(s, envs)
    doc = evidence_doc([(HOUR, sf)], n_boot=200)
    table = parse(doc)  # what the flow loads
    entry = doc["bar_ms"][str(HOUR)]
    [row] = entry["series"]
    assert row["coin"] == "SOL"
    assert row["days"] == 21  # 20 days of bars; the last closes at midnight, on the 21st
    assert row["margin_lo"] <= row["margin"] <= row["margin_hi"]
    shown = row["beats"] and row["margin_lo"] > 0
    want = FlagEvidence.DEMONSTRATED if shown else FlagEvidence.NOT_DEMONSTRATED
    assert table.verdict(HOUR) is want
    assert table.verdict(300_000) is FlagEvidence.UNTESTED
    assert doc["version"].startswith("flagev-")
    # a flag that knows the future is demonstrated; its complement is not
    rng = np.random.default_rng(5)
    noisy = replace(sf, fwd=rng.lognormal(size=len(sf.fwd)), rule=rng.random(len(sf.fwd)))
    oracle = replace(noisy, published=noisy.fwd >= np.quantile(noisy.fwd[noisy.oos], 0.9))
    assert parse(evidence_doc([(HOUR, oracle)], 200)).verdict(HOUR) is FlagEvidence.DEMONSTRATED
    worse = replace(oracle, published=~oracle.published)
    assert parse(evidence_doc([(HOUR, worse)], 200)).verdict(HOUR) is (
        FlagEvidence.NOT_DEMONSTRATED
    )
    # one coin short of the interval is enough to withhold the verdict for the bar length
    mixed = parse(evidence_doc([(HOUR, oracle), (HOUR, worse)], 200))
    assert mixed.verdict(HOUR) is FlagEvidence.NOT_DEMONSTRATED


def test_resample_closes_longer_bars_over_the_candles() -> None:
    five = 300_000
    open_ms = np.arange(0, 12 * five, five, dtype=np.int64)
    open_ms = np.delete(open_ms, 8)  # the candle 40:00-45:00 is missing
    close = np.arange(1.0, 1.0 + len(open_ms))
    s = CandleSeries("BTC", five, open_ms, close, Path("x"))
    r = resample(s, 900_000)
    # bars 0-15, 15-30, 30-45 (its last candle missing: left out), 45-60 min
    assert (r.open_ms + r.bar_ms).tolist() == [900_000, 1_800_000, 3_600_000]
    assert r.close.tolist() == [3.0, 6.0, 11.0]
    assert r.bar_ms == 900_000
    assert resample(s, five) is s
    with pytest.raises(ValueError, match="cannot be built from"):
        resample(s, 400_000)
