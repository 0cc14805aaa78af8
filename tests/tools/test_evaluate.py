"""Tests for the evaluation tool (`tools.evaluate`): metric functions against hand values, forward
returns on a gappy series, the calibration document's shape, and an end-to-end run on a small
simulated capture whose regimes are scripted (the truth file)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from operators.calibration import TABLE_FORMAT
from tools.evaluate.analysis import analyse
from tools.evaluate.calibration_fit import dump_calibration, fit_calibration, validate_calibration
from tools.evaluate.cli import main
from tools.evaluate.datasets import DatasetSpec
from tools.evaluate.forward import forward_metrics, spells
from tools.evaluate.isotonic import apply_bins, isotonic_bins, pav
from tools.evaluate.run import EvalConfig, evaluate
from tools.evaluate.skill import add_skill
from tools.evaluate.stats import (
    block_bootstrap_corr,
    block_bootstrap_mean,
    brier,
    rankdata,
    reliability_table,
    spearman,
)
from tools.evaluate.text import parse_duration_ms
from tools.simulate import CHAOTIC, LIQUIDATION_RISK, MEAN_REVERTING, Phase, SimConfig, truth
from tools.simulate import write_capture as write_sim

# ------------------------------------------------------------------------------------ metrics


def test_rankdata_averages_ties() -> None:
    assert rankdata([10, 20, 20, 30]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert rankdata([3, 1, 2]).tolist() == [3.0, 1.0, 2.0]
    assert rankdata([]).size == 0


def test_spearman_matches_the_textbook_formula() -> None:
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    y = [2.0, 1.0, 4.0, 3.0, 6.0, 5.0]
    # no ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1)); here every d = ±1
    n = 6
    expected = 1 - 6 * 6 / (n * (n * n - 1))
    assert spearman(x, y) == pytest.approx(expected)
    # ties: Pearson of the average ranks, computed by hand
    xt = [1.0, 1.0, 2.0, 3.0]
    yt = [1.0, 2.0, 2.0, 4.0]
    rx = np.array([1.5, 1.5, 3.0, 4.0])
    ry = np.array([1.0, 2.5, 2.5, 4.0])
    assert spearman(xt, yt) == pytest.approx(float(np.corrcoef(rx, ry)[0, 1]))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_pav_on_a_known_sequence() -> None:
    assert pav([1, 3, 2, 4, 3, 5]).tolist() == [1, 2.5, 2.5, 3.5, 3.5, 5]
    assert pav([3.0, 1.0], [1.0, 3.0]).tolist() == [1.5, 1.5]
    assert pav([1, 2, 3]).tolist() == [1, 2, 3]
    assert pav([3, 2, 1]).tolist() == [2, 2, 2]


def test_isotonic_bins_are_monotone_contiguous_and_pooled() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 2000)
    o = (rng.uniform(0, 1, 2000) < 0.3 + 0.4 * x).astype(float)
    bins = isotonic_bins(x, o, min_n=100)
    assert bins[0][0] == 0.0
    assert bins[-1][1] == 1.0
    for a, b in itertools.pairwise(bins):
        assert a[1] == b[0]  # contiguous
        assert a[2] <= b[2]  # monotone
    assert all(b[3] >= 100 for b in bins)
    assert sum(b[3] for b in bins) == 2000
    # the step function applies (and clamps outside the range)
    p = apply_bins(bins, [-1.0, 0.0, 0.5, 2.0])
    assert p[0] == bins[0][2] == p[1]
    assert p[3] == bins[-1][2]
    # exact values on a tiny case: PAV pools (0.2: 1, 0.4: 0) into 0.5, min_n 1
    small = isotonic_bins([0.1, 0.2, 0.4, 0.8], [0, 1, 0, 1], min_n=1)
    assert [b[2] for b in small] == [0.0, 0.5, 1.0]
    assert [b[3] for b in small] == [1, 2, 1]
    assert [(b[0], b[1]) for b in small] == [(0.0, 0.2), (0.2, 0.8), (0.8, 1.0)]
    # weights: the floor counts weight, not rows; n stays the row count
    weighted = isotonic_bins(x, o, weights=np.full(2000, 0.01), min_n=5)
    assert all(b[3] >= 500 for b in weighted)


def test_brier_and_reliability_on_known_probabilities() -> None:
    assert brier([0.9, 0.2, 0.5], [1, 0, 1]) == pytest.approx((0.01 + 0.04 + 0.25) / 3)
    rows, ece = reliability_table([0.15, 0.15, 0.85, 0.85], [0, 1, 1, 1])
    assert [(r.n, r.observed) for r in rows] == [(2, 0.5), (2, 1.0)]
    assert ece == pytest.approx((2 * 0.35 + 2 * 0.15) / 4)


def test_block_bootstrap_intervals_contain_the_point_estimate() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=3000)
    y = 0.3 * x + rng.normal(size=3000)
    blocks = np.arange(3000) // 30
    rho = spearman(x, y)
    lo, hi, nb = block_bootstrap_corr(rankdata(x), rankdata(y), blocks, n_boot=400, seed=1)
    assert nb == 100
    assert lo < rho < hi
    assert hi - lo < 0.2
    hits = (np.sign(x) == np.sign(y)).astype(float)
    mlo, mhi, _ = block_bootstrap_mean(hits, blocks, n_boot=400, seed=1)
    assert mlo < hits.mean() < mhi
    # too few blocks: no interval
    assert math.isnan(block_bootstrap_corr([1, 2, 3], [1, 2, 3], [0, 0, 0])[0])


def test_forward_returns_align_at_t_plus_h_across_gaps() -> None:
    ts = np.array([1000, 2000, 3000, 5000, 6000, 20000])
    px = np.array([100.0, 101.0, 102.0, 104.0, 105.0, 110.0])
    price, fwd = forward_metrics(ts, ts, px, bar_ms=1000, horizons_ms=[2000], max_gap_ms=1000)
    r = fwd[2000].ret
    assert price.tolist() == pytest.approx(px.tolist())
    assert r[0] == pytest.approx(math.log(102 / 100))
    assert r[1] == pytest.approx(math.log(102 / 101))  # t+h = 4000 missing: 3000 carried
    assert r[2] == pytest.approx(math.log(104 / 102))
    assert r[3] == pytest.approx(math.log(105 / 104))
    assert math.isnan(r[4])  # 8000: the last price is 2 s old > max gap
    assert math.isnan(r[5])  # beyond the data
    assert fwd[2000].rv[2] == pytest.approx(abs(math.log(104 / 102)))
    assert fwd[2000].er[2] == pytest.approx(1.0)
    _, strict = forward_metrics(ts, ts, px, bar_ms=1000, horizons_ms=[2000], max_gap_ms=0)
    assert math.isnan(strict[2000].ret[1])
    assert strict[2000].ret[0] == pytest.approx(math.log(102 / 100))
    with pytest.raises(ValueError, match="multiples"):
        forward_metrics(ts, ts, px, bar_ms=1000, horizons_ms=[1500], max_gap_ms=0)


def test_spells_and_durations() -> None:
    sp = spells(["A", "A", "A", "B"], [1000, 2000, 3000, 1000], ["X", "X", "Y", "X"], 1000)
    assert [(s.coin, s.label, s.end_ms - s.start_ms) for s in sp] == [
        ("A", "X", 2000),
        ("A", "Y", 1000),
        ("B", "X", 1000),
    ]


def test_parse_duration() -> None:
    assert parse_duration_ms("5s") == 5000
    assert parse_duration_ms("5m") == parse_duration_ms("5min") == 300_000
    assert parse_duration_ms("4h") == 14_400_000
    assert parse_duration_ms("250") == 250
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ms("soon")


# ------------------------------------------------------------ metrics on hand-made envelopes


def _envelope(coin: str, ts: int, direction: str, score: float, px: float) -> dict[str, Any]:
    return {
        "timestamp_ms": ts,
        "coin": coin,
        "direction": direction,
        "regime": {"label": "TRENDING", "inputs_used": ["quotes"]},
        "edge": {"score": score, "actionable": False, "horizon_ms": 60_000},
        "features": {"mid_px": px},
        "warmup": {"warming_up": False},
    }


def test_ic_and_hit_rate_on_hand_made_envelopes() -> None:
    rng = np.random.default_rng(5)
    n = 400
    ts = 1_000_000 + 1000 * np.arange(1, n + 1)
    px = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    dirs = rng.choice(["LONG", "SHORT", "FLAT"], n)
    scores = np.where(dirs == "FLAT", 0.0, rng.uniform(0.1, 0.9, n))
    envs = [
        _envelope("BTC", int(t), str(d), float(s), float(p))
        for t, d, s, p in zip(ts, dirs, scores, px, strict=True)
    ]
    spec = DatasetSpec("hand", "tick", (), 1000, 10, 5, (1000, 5000))
    res = analyse(spec, [], envs, split=0.5, n_boot=200, seed=0)
    sign = np.array([{"LONG": 1, "SHORT": -1, "FLAT": 0}[d] for d in dirs])
    for h in (1000, 5000):
        k = h // 1000
        ret = np.full(n, np.nan)
        ret[: n - k] = np.log(px[k:] / px[: n - k])
        for part in ("in", "out"):
            ok = np.isfinite(ret)
            m = ok & (ts + h <= res.split_ms) if part == "in" else ok & (ts >= res.split_ms)
            x, y = sign[m] * scores[m], ret[m]
            ic = res.ic[(h, part)]
            assert ic.n == int(m.sum())
            assert ic.value == pytest.approx(spearman(x, y))
            assert ic.lo <= ic.value <= ic.hi
            md = m & (sign != 0)
            expected_hit = float(np.mean(np.sign(ret[md]) == sign[md]))
            assert res.hit[(h, part)].value == pytest.approx(expected_hit)
            assert res.hit[(h, part)].n == int(md.sum())
            flat = float(np.mean(sign[m] == 0)) if h == 1000 else None
            if flat is not None:
                assert res.shares[part]["FLAT"] == pytest.approx(flat)
    # the split is purged: no in-sample row's window reaches past it
    assert res.split_ms == ts[0] + round((ts[-1] - ts[0]) * 0.5 / 1000) * 1000
    cal = add_skill([res], fit_calibration([res], min_bin_eff=5))
    assert validate_calibration(cal) == []
    assert all(isinstance(h["skill"]["demonstrated"], bool) for h in cal["horizons"].values())
    assert cal["fitted_on"]["n"] == int(((ts + 1000 <= res.split_ms) & (sign != 0)).sum())


# ------------------------------------------------------------------- calibration document


def _doc() -> dict[str, Any]:
    return {
        "format": TABLE_FORMAT,
        "version": "abc-20250101-20250102",
        "fitted_on": {
            "files": ["a.ndjson.gz"],
            "span_utc": ["2025-01-01T00:00:00Z", "2025-01-02T00:00:00Z"],
            "n": 10,
        },
        "horizons": {
            "60000": {
                "bins": [[0.0, 0.5, 0.45, 4], [0.5, 1.0, 0.6, 6]],
                "mean_abs_move_bps": 3.2,
                "skill": {"demonstrated": False, "bss": 0.0, "bss_lo": -0.01},
            }
        },
        "default_horizon_ms": 60000,
    }


def test_validate_calibration_shape() -> None:
    assert validate_calibration(_doc()) == []
    assert validate_calibration(orjson.loads(dump_calibration(_doc()))) == []
    bad = _doc()
    bad["default_horizon_ms"] = 5
    assert validate_calibration(bad)
    bad = _doc()
    bad["horizons"]["60000"]["bins"][1][2] = 0.3  # not monotone
    assert validate_calibration(bad)
    bad = _doc()
    bad["horizons"]["60000"]["bins"][1][0] = 0.6  # gap between bins
    assert validate_calibration(bad)
    bad = _doc()
    bad["extra"] = 1
    assert validate_calibration(bad)
    bad = _doc()
    del bad["fitted_on"]["n"]
    assert validate_calibration(bad)
    # #9: a table without the format (and skill verdicts) is refused
    bad = _doc()
    del bad["format"]
    assert validate_calibration(bad)
    bad = _doc()
    del bad["horizons"]["60000"]["skill"]
    assert validate_calibration(bad)


# ------------------------------------------------------------------ end to end, simulated

SCRIPT = (
    Phase(MEAN_REVERTING, 60),
    Phase(CHAOTIC, 60),
    Phase(MEAN_REVERTING, 60),
    Phase(LIQUIDATION_RISK, 60),
    Phase(MEAN_REVERTING, 60),
)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("sim")
    cfg = SimConfig(
        coins=("BTC", "ETH"), seconds=300, seed=11, scripts={"BTC": SCRIPT, "ETH": SCRIPT}
    )
    capture = d / "sim.ndjson.gz"
    write_sim(cfg, capture)
    truth_path = d / "truth.json"
    truth_path.write_bytes(orjson.dumps(truth(cfg)))
    return capture, truth_path


def test_end_to_end_on_a_simulated_capture(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    capture, truth_path = simulated
    out = tmp_path / "report"
    cal_path = tmp_path / "calibration" / "edge_calibration.json"
    ev = evaluate(
        EvalConfig(
            paths=(capture,),
            out=out,
            window_obs=30,
            warmup_obs=15,
            horizons_ms=(1000, 5000, 15000),
            n_boot=200,
            min_bin_eff=2,
            fit_calibration=cal_path,
            truth=truth_path,
        )
    )
    report = (out / "report.md").read_text(encoding="utf-8")
    assert report.startswith("# Signal evaluation")
    assert "## Summary for the README" in report
    assert "## What this data can and cannot show" in report
    for name in (
        "price_regimes.png",
        "ic_by_horizon.png",
        "reliability.png",
        "hit_rate_deciles.png",
        "regime_forward_vol.png",
    ):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert 5_000 < len(data) < 400_000
        assert f"]({name})" in report

    (res,) = ev.datasets
    assert res.spec.bar_ms == 1000
    assert set(res.price_source.values()) == {"mid_px"}
    # by the scripted phases, the stressed markets move more over the next seconds
    by_truth = {r.label: r for r in res.truth_regimes}
    calm = by_truth[MEAN_REVERTING]
    for hot in (by_truth[LIQUIDATION_RISK], by_truth[CHAOTIC]):
        assert hot.rv_bps > 1.5 * calm.rv_bps
        for h in res.spec.horizons_ms:
            assert hot.abs_ret_bps[h] > calm.abs_ret_bps[h]
    assert sum(res.confusion[LIQUIDATION_RISK].values()) > 0

    doc = orjson.loads(cal_path.read_bytes())
    assert validate_calibration(doc) == []
    assert set(doc["horizons"]) == {"1000", "5000", "15000"}
    assert doc["fitted_on"]["files"] == ["sim.ndjson.gz"]
    assert doc["default_horizon_ms"] == 15000  # the fitted horizon nearest 60 s
    from operators.calibration import parse  # the server's loader reads what we write

    assert parse(doc).version == doc["version"]
    # out-of-sample reliability of that table is reported
    assert (15000, "out") in res.calibration
    assert "Brier out-of-sample" in report


def test_cli(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    capture, _ = simulated
    out = tmp_path / "cli"
    rc = main(
        [str(capture), "--out", str(out), "--horizons", "1s,5s", "--no-plots", "--bootstrap", "50"]
    )
    assert rc == 0
    assert (out / "report.md").is_file()
    assert not list(out.glob("*.png"))
    assert main([str(tmp_path / "missing.ndjson"), "--out", str(out)]) == 2


def test_the_package_reexports_its_public_names() -> None:
    """``from tools.evaluate import X`` keeps working for every name the package lists."""
    import tools.evaluate

    assert tools.evaluate.main is main
    for name in tools.evaluate.__all__:
        assert getattr(tools.evaluate, name) is not None, name


# ------------------------------------------------------------------ #9: forecast and flag scoring


def test_qlike_and_dm_by_hand() -> None:
    from tools.evaluate.vol_eval import dm_test, hour_bars, qlike, roll_sum

    rv = np.array([1.0, 2.0, 0.0])
    f = np.array([1.0, 1.0, 1.0])
    q = qlike(rv, f)
    assert q[0] == pytest.approx(0.0)
    assert q[1] == pytest.approx(2.0 - math.log(2.0) - 1.0)
    assert math.isnan(q[2])  # no move at all: left out
    d = np.array([-1.0, -0.5, -1.5, -1.0] * 10)
    stat, p = dm_test(d, 1)
    assert stat < 0
    assert p < 0.01
    assert (hour_bars(300_000), hour_bars(3_600_000), hour_bars(1000)) == (12, 6, 3600)
    assert list(roll_sum(np.arange(5.0), 2)[1:]) == [1.0, 3.0, 5.0, 7.0]


def test_one_line_rule_windows() -> None:
    from tools.evaluate.vol_eval import one_line_rule

    r = np.full(400, 0.001)
    r[-1] = 0.01
    rule = one_line_rule(r, 3_600_000)  # 6 and 144 bars on hourly candles
    assert np.isnan(rule[:143]).all()  # the median needs 144 bars (NaN RVs are skipped)
    assert np.isfinite(rule[143])
    assert rule[-2] == pytest.approx(1.0)
    expected = math.sqrt(5 * 1e-6 + 1e-4) / math.sqrt(6 * 1e-6)
    assert rule[-1] == pytest.approx(expected)


def test_flag_score_at_equal_rate() -> None:
    from tools.evaluate.vol_eval import score_flag

    rng = np.random.default_rng(1)
    fwd = rng.gamma(2.0, 1.0, 2000)
    good = fwd + rng.normal(0, 0.3, 2000)  # informative score
    rule = rng.normal(0, 1, 2000)  # uninformative rule
    mask = np.ones(2000, dtype=bool)
    s = score_flag(None, good, rule, fwd, mask, 0.10)
    assert s.rate == 0.10
    assert s.ratio > s.rule_ratio
    assert s.auc > s.rule_auc


def test_conformal_band_by_hand() -> None:
    """n = 19: the ⌊20/10⌋ = 2nd and ⌈9·20/10⌉ = 18th smallest; n = 9: the extremes."""
    from tools.evaluate.vol_fit import conformal_band

    v = np.array(
        [5.0, 1.0, 19.0, 3.0, 2.0, 4.0, 18.0, 6.0, 7.0, 8.0] + [float(i) for i in range(9, 18)]
    )
    assert conformal_band(v) == (2.0, 18.0)
    assert conformal_band(np.array([3.0, 1.0, 2.0, 9.0, 5.0, 4.0, 8.0, 7.0, 6.0])) == (1.0, 9.0)
    assert conformal_band(np.array([np.nan, 1.0, np.inf, 2.0])) == (1.0, 2.0)  # finite only
    with pytest.raises(ValueError, match="no residual"):
        conformal_band(np.array([np.nan]))


def test_hysteresis_flag() -> None:
    from tools.evaluate.vol_fit import hysteresis

    rho = np.array([0.5, 1.0, 0.96, 0.94, 0.97, 1.2, np.nan, 0.99, 1.0])
    assert hysteresis(rho, 1.0, 0.95).tolist() == [
        False, True, True, False, False, True, False, False, True,
    ]  # fmt: skip
    assert hysteresis(rho, 1.0, 1.0).tolist() == [
        False, True, False, False, False, True, False, False, True,
    ]  # fmt: skip


def test_exit_rule_prefers_the_exit_with_the_larger_auc_margin() -> None:
    """A series whose volatility comes in long bursts: the forecast ratio stays above the norm
    through a burst, and the rule picks an exit from the grid by its in-sample AUC margin."""
    from operators.forecast import parse
    from tools.evaluate.series import CANDLE_SPLIT_MS, CandleSeries
    from tools.evaluate.vol_fit import EXIT_GRID, choose_exit, components, provisional

    rng = np.random.default_rng(3)
    n = 3000
    sig = np.where((np.arange(n) // 150) % 4 == 0, 0.02, 0.005)
    close = 100 * np.exp(np.cumsum(rng.normal(0, sig)))
    bar = 3_600_000
    t0 = CANDLE_SPLIT_MS - (n + 10) * bar
    s = CandleSeries("X", bar, t0 + bar * np.arange(n, dtype=np.int64), close, Path("x"))
    doc_model = provisional(np.ones((2, 24)))
    m = parse(
        {
            "format": "hlsl-vol-model/2",
            "version": "t",
            "season": {"weekday": [1.0] * 24, "weekend": [1.0] * 24},
            "half_lives_bars": [1.0, 3.0, 10.0, 30.0],
            "long_half_life_ms": 30 * 86_400_000,
            "long_min_bars": 300.0,
            "floor": 1e-3,
            "flag": {"enter": 1.0, "exit": 1.0},
            "ladder": {
                "8": {"coef": [0, 0.2, 0.3, 0.3, 0.2, 0], "smear": 1, "q10": -1, "q90": 1, "n": 1}
            },
            "intervals": {"1": {"1": {"q10": -1.0, "q90": 1.0, "n": 0}}},
        }
    )
    comps, norm = components(doc_model, s)
    best, scores = choose_exit(m, [(s, comps, norm)])
    assert best in EXIT_GRID
    assert set(scores) == {f"{e:.2f}" for e in EXIT_GRID}
    assert scores[f"{best:.2f}"] == max(scores.values())


def test_aci_loss_by_hand_and_causal() -> None:
    """`vol_fit.aci_loss`: with γ = 0 the mean pinball loss of the fixed band; a miss moves the
    levels only ``h`` rows later."""
    from tools.evaluate.vol_fit import aci_loss

    res = np.array([np.nan, 0.0, 1.0, -1.0])
    # e = 0: 0.1·0.5 + 0.1·0.5; e = 1: 0.1·1.5 + 0.9·0.5; e = −1: 0.9·0.5 + 0.1·1.5
    assert aci_loss(res, 1, (-0.5, 0.5), 0.0, 0) == pytest.approx(1.3 / 3)
    # the first row's miss (none) is known only after h = 5 rows: nothing adapts before
    assert aci_loss(res, 5, (-0.5, 0.5), 0.05, 0) == pytest.approx(1.3 / 3)
    assert aci_loss(res, 1, (-0.5, 0.5), 0.05, 0) != pytest.approx(1.3 / 3)
    assert aci_loss(res, 1, (-0.5, 0.5), 0.0, 3) == pytest.approx(0.6)
