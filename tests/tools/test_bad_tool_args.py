"""Bad arguments to the research tools, as a user meets them: one stderr line naming the flag, the
value and what is allowed, exit status 2, no traceback, and nothing simulated, replayed or
written first (``tools.simulate``, ``tools.evaluate``, ``tools.evaluate.flag_tradeoff``,
``tools.evaluate.vol_fit``).

Every program runs as a real subprocess from the checkout with a clean ``HLSL_*`` environment;
the evaluation's input is a two-minute simulated capture written here.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.flows.test_startup_errors import run as run_program
from tools.simulate import SimConfig, write_capture

RUN_TIMEOUT_S = 60.0
BAD_WORDS = ("Traceback", "pydantic.dev", "validation error", "zero-size array")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m ARGS`` as a user runs it (no HLSL_* settings of the test's own)."""
    return run_program(["-m", *args], timeout_s=RUN_TIMEOUT_S)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """Exit 2, no traceback, exactly one line on stderr (returned) and nothing on stdout."""
    err = proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}:\n{err}"
    for word in BAD_WORDS:
        assert word not in err, f"{word!r} on stderr:\n{err}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"not one line:\n{err}"
    assert proc.stdout == ""
    return lines[0]


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-minute simulated BTC capture."""
    path = tmp_path_factory.mktemp("capture") / "btc.ndjson.gz"
    write_capture(SimConfig(coins=("BTC",), seconds=120), path)
    return path


# -- python -m tools.simulate ---------------------------------------------------------------------


def test_simulate_refuses_a_directory_as_out(tmp_path: Path) -> None:
    line = one_error_line(run("tools.simulate", "--out", str(tmp_path), "--seconds", "5"))
    assert line == f"error: --out = {tmp_path}: is a directory; give a file name"
    assert list(tmp_path.iterdir()) == []


def test_simulate_refuses_a_directory_as_truth_before_simulating(tmp_path: Path) -> None:
    out = tmp_path / "x.ndjson"
    truth = tmp_path / "truth"
    truth.mkdir()
    line = one_error_line(
        run("tools.simulate", "--out", str(out), "--truth", str(truth), "--seconds", "5")
    )
    assert line == f"error: --truth = {truth}: is a directory; give a file name"
    assert not out.exists()  # checked before the capture was written


def test_simulate_refuses_an_out_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "x.ndjson.gz"
    line = one_error_line(run("tools.simulate", "--out", str(out), "--seconds", "5"))
    assert line.startswith(f"error: --out = {out}: cannot write there (")
    assert blocker.read_text() == "x"


def test_simulate_market_refuses_a_directory_as_out(tmp_path: Path) -> None:
    proc = run("tools.simulate", "--out", str(tmp_path), "--market", "2", "--seconds", "5")
    line = one_error_line(proc)
    assert line == f"error: --out = {tmp_path}: is a directory; give a file name"


@pytest.mark.parametrize("market", [(), ("--market", "2")], ids=["coins", "market"])
def test_simulate_refuses_infinite_seconds_before_writing(
    tmp_path: Path, market: tuple[str, ...]
) -> None:
    out = tmp_path / "x.ndjson"
    proc = run("tools.simulate", "--out", str(out), "--seconds", "inf", *market)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.endswith("error: seconds must be a finite number > 0, got inf")
    assert not out.exists()


# -- python -m tools.evaluate ---------------------------------------------------------------------


def evaluate(capture: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run("tools.evaluate", str(capture), "--out", str(out), "--no-plots", *args)


def test_evaluate_refuses_a_file_as_out(capture: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.txt"
    out.write_text("keep me")
    line = one_error_line(evaluate(capture, out))
    assert line == f"error: --out = {out}: is a file; give a directory"
    assert out.read_text() == "keep me"


@pytest.mark.parametrize("where", ["directory", "unmakeable"])
def test_evaluate_checks_fit_calibration_before_evaluating(
    capture: Path, tmp_path: Path, where: str
) -> None:
    if where == "directory":
        target = tmp_path / "cal"
        target.mkdir()
        expected = f"error: --fit-calibration = {target}: is a directory; give a file name"
    else:
        (tmp_path / "a-file").write_text("x")
        target = tmp_path / "a-file" / "cal.json"
        expected = f"error: --fit-calibration = {target}: cannot write there ("
    out = tmp_path / "report"
    line = one_error_line(evaluate(capture, out, "--fit-calibration", str(target)))
    assert line.startswith(expected)
    assert not (out / "report.md").exists()  # refused before the evaluation ran


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--bar-ms", "-1"), "error: --bar-ms (HLSL_BAR_MS) = -1: must be >= 10"),
        (("--window-obs", "1"), "error: --window-obs (HLSL_WINDOW_OBS) = 1: must be >= 3"),
        (("--warmup-obs", "0"), "error: --warmup-obs (HLSL_WARMUP_OBS) = 0: must be >= 2"),
        (("--split", "1.5"), "error: --split = 1.5: must be > 0 and < 1 (the in-sample share)"),
        (("--bootstrap", "-5"), "error: --bootstrap = -5: must be >= 0"),
        (("--seed", "-1"), "error: --seed = -1: must be >= 0"),
        (("--min-bin-eff", "nan"), "error: --min-bin-eff = nan: must be a finite number >= 0"),
        (("--horizons", "1s,abc"), "error: --horizons = 1s,abc: not a duration: 'abc'"),
    ],
    ids=[
        "bar-ms",
        "window-obs",
        "warmup-obs",
        "split",
        "bootstrap",
        "seed",
        "min-bin-eff",
        "horizons",
    ],
)
def test_evaluate_refuses_a_bad_value_in_one_line(
    capture: Path, tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    out = tmp_path / "report"
    line = one_error_line(evaluate(capture, out, *args))
    assert line.startswith(expected)
    assert not out.exists()  # nothing made before the arguments were checked


@pytest.mark.parametrize(
    ("coins", "expected"),
    [
        ("DOGE", "error: --coins = DOGE: no such coin in the data (coins present: BTC;"),
        ("btc", "error: --coins = btc: no such coin in the data (coins present: BTC;"),
        ("BTC,DOGE,XRP", "error: --coins = BTC,DOGE,XRP: DOGE, XRP not in the data (coins"),
    ],
    ids=["absent", "case", "several"],
)
def test_evaluate_refuses_a_coin_the_data_does_not_hold(
    capture: Path, tmp_path: Path, coins: str, expected: str
) -> None:
    out = tmp_path / "report"
    line = one_error_line(evaluate(capture, out, "--coins", coins))
    assert line.startswith(expected)
    assert not (out / "report.md").exists()


def test_evaluate_names_a_truth_file_it_cannot_read(capture: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.truth.json"
    line = one_error_line(evaluate(capture, tmp_path / "report", "--truth", str(missing)))
    assert line == f"error: --truth = {missing}: cannot read it (No such file or directory)"
    line = one_error_line(evaluate(capture, tmp_path / "report", "--truth", str(capture)))
    assert line.startswith(f"error: --truth = {capture}: not a simulator truth file")


# -- python -m tools.evaluate.flag_tradeoff and tools.evaluate.vol_fit ----------------------------


def test_flag_tradeoff_checks_write_evidence_before_replaying(
    capture: Path, tmp_path: Path
) -> None:
    proc = run(
        "tools.evaluate.flag_tradeoff",
        str(capture),
        "--boot",
        "100",
        "--write-evidence",
        str(tmp_path),
    )
    line = one_error_line(proc)
    assert line == f"flag_tradeoff: --write-evidence = {tmp_path}: is a directory; give a file name"


def test_vol_fit_checks_out_before_fitting(capture: Path, tmp_path: Path) -> None:
    line = one_error_line(run("tools.evaluate.vol_fit", str(capture), "--out", str(tmp_path)))
    assert line == f"vol_fit: --out = {tmp_path}: is a directory; give a file name"
