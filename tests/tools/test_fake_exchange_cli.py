"""``python -m tools.fake_exchange``'s refusal of bad arguments, run as a user runs it.

Every bad value is one line, ``error: --flag = value: what is allowed``, naming the flag as the
user types it, exit 2, no traceback, before anything is served (a program that starts serving
instead runs until the timeout, which fails the test).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import SAMPLE
from tests.flows.test_startup_errors import run as run_program
from tools.fake_exchange import build_parser, exchange_from_args

TIMEOUT_S = 8.0
SILENCE_FORMS = (
    "allowed: a channel (activeAssetCtx, allMids, bbo, candle, l2Book, trades), CHANNEL:COIN or "
    "candle:COIN:INTERVAL"
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_program(["-m", "tools.fake_exchange", *args], timeout_s=TIMEOUT_S)


def assert_refused(proc: subprocess.CompletedProcess[str], line: str) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines() == [line], proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""  # nothing announced: nothing served


SIM = ("--simulate", "--port", "0")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        # the fault flags name themselves, not the Faults fields (malformed_every, silence_after_s)
        (
            (*SIM, "--malformed-every", "0"),
            "error: --malformed-every = 0: must be >= 1",
        ),
        ((*SIM, "--unknown-every", "-3"), "error: --unknown-every = -3: must be >= 1"),
        (
            (*SIM, "--silence", "l2Book", "--silence-after", "-1"),
            "error: --silence-after = -1: must be >= 0",
        ),
        (
            (*SIM, "--silence", "l2Book", "--silence-after", "nan"),
            "error: --silence-after = nan: must be a finite number >= 0",
        ),
        ((*SIM, "--silence-after", "5"), "error: --silence-after = 5: needs --silence"),
        ((*SIM, "--drop-every", "0"), "error: --drop-every = 0: must be > 0"),
        ((*SIM, "--drop-every", "inf"), "error: --drop-every = inf: must be a finite number > 0"),
        ((*SIM, "--stall-every", "-1"), "error: --stall-every = -1: must be > 0"),
        ((*SIM, "--error-every", "0"), "error: --error-every = 0: must be > 0"),
        ((*SIM, "--stall-for", "2"), "error: --stall-for = 2: needs --stall-every"),
        (
            (*SIM, "--stall-every", "2", "--stall-for", "0"),
            "error: --stall-for = 0: must be > 0",
        ),
        (
            (*SIM, "--stall-every", "2", "--stall-for", "3"),
            "error: --stall-for = 3: must be < --stall-every (2)",
        ),
        ((*SIM, "--drop-code", "4000"), "error: --drop-code = 4000: needs --drop-every"),
        (
            (*SIM, "--drop-every", "9", "--drop-code", "5"),
            "error: --drop-code = 5: must be a WebSocket close code, 1000-4999",
        ),
        # the other flags
        ((*SIM, "--speed", "0"), "error: --speed = 0: must be >= 0.001"),
        ((*SIM, "--speed", "1e-300"), "error: --speed = 1e-300: must be >= 0.001"),
        (
            ("--simulate", "--port", "70000"),
            "error: --port = 70000: must be 0-65535 (0 picks a free port)",
        ),
        ((*SIM, "--idle-timeout", "-1"), "error: --idle-timeout = -1: must be >= 0"),
        (
            (*SIM, "--rest-weight-per-min", "-5"),
            "error: --rest-weight-per-min = -5: must be >= 0",
        ),
        (
            (*SIM, "--seconds", "inf"),
            "error: --seconds = inf: must be a finite number > 0 and <= 10,000,000",
        ),
        ((*SIM, "--seconds", "0"), "error: --seconds = 0: must be > 0 and <= 10,000,000"),
        ((*SIM, "--book-interval-ms", "0"), "error: --book-interval-ms = 0: must be >= 1"),
        (
            (*SIM, "--coins", "BTC,FOO"),
            "error: --coins = BTC,FOO: unknown coin FOO; allowed: BTC, ETH, SOL, HYPE",
        ),
        ((*SIM, "--coins", "BTC,BTC"), "error: --coins = BTC,BTC: names BTC twice"),
        (
            (*SIM, "--coins", ""),
            "error: --coins = '': names no coin; allowed: BTC, ETH, SOL, HYPE",
        ),
        (
            (*SIM, "--extra-coins", "BTC"),
            "error: --extra-coins = BTC: BTC has data in the feed (extra coins are coins without "
            "data)",
        ),
        (
            (*SIM, "--log-level", "bogus"),
            "error: --log-level = bogus: allowed: DEBUG, INFO, WARNING, ERROR, CRITICAL",
        ),
        (
            ("--capture", str(SAMPLE), "--port", "0", "--coins", "BTC"),
            "error: --coins = BTC: applies to --simulate only (a capture serves its own coins "
            "and times)",
        ),
        (
            ("--capture", str(SAMPLE), "--port", "0", "--seed", "3"),
            "error: --seed = 3: applies to --simulate only (a capture serves its own coins "
            "and times)",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_flag(args: tuple[str, ...], line: str) -> None:
    assert_refused(run(*args), line)


def test_a_host_that_does_not_resolve() -> None:  # with --port 0 too (no bind was tried)
    proc = run(*SIM, "--host", "no-such-host.invalid")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: --host = no-such-host.invalid: cannot resolve it (")
    assert proc.returncode == 2


@pytest.mark.parametrize(
    ("stream", "problem"),
    [
        ("bogus", f"unknown channel 'bogus'; {SILENCE_FORMS}"),
        ("l2book:BTC", f"unknown channel 'l2book'; {SILENCE_FORMS}"),
        ("l2Book:DOGE", "DOGE is not listed; listed coins: BTC, ETH, SOL"),
        ("l2Book:btc", "btc is not listed; listed coins: BTC, ETH, SOL"),
        ("l2Book:", f"no coin after l2Book:; {SILENCE_FORMS}"),
        ("trades:BTC:1m", f"only candle streams take an interval; {SILENCE_FORMS}"),
        (
            "candle:BTC:7m",
            "unknown candle interval '7m'; allowed: 1m, 3m, 5m, 15m, 30m, 1h, 2h, 4h, 8h, 12h, "
            "1d, 3d, 1w, 1M",
        ),
        ("allMids:BTC", "allMids has no coin: give it bare (allMids)"),
    ],
)
def test_silence_refuses_a_stream_it_does_not_know(stream: str, problem: str) -> None:
    proc = run(*SIM, "--silence", f"trades:BTC,{stream}")
    assert_refused(proc, f"error: --silence = {stream}: {problem}")


def test_silence_refuses_an_empty_value() -> None:
    assert_refused(
        run(*SIM, "--silence", ","), f"error: --silence = ,: names no stream; {SILENCE_FORMS}"
    )


def test_silence_takes_every_form_the_help_names() -> None:
    argv = [*SIM, "--coins", "BTC,ETH", "--extra-coins", "DOGE", "--silence-after", "3"]
    argv += ["--silence", "allMids,trades", "--silence", "l2Book:BTC,candle:ETH,candle:BTC:1M"]
    argv += ["--silence", "bbo:DOGE"]
    ex = exchange_from_args(build_parser().parse_args(argv))
    assert ex.faults.silence == (
        "allMids",
        "trades",
        "l2Book:BTC",
        "candle:ETH",
        "candle:BTC:1M",
        "bbo:DOGE",
    )
    assert ex.faults.silence_after_s == 3
    assert ex.faults.stall_for_s == 5.0  # the default, as before


def test_capture_that_is_a_directory(tmp_path: Path) -> None:
    proc = run("--capture", str(tmp_path), "--port", "0")
    give = "give a capture file (.ndjson[.gz|.lz4], .txt)"
    line = f"error: --capture = {tmp_path}: is a directory; {give}"
    assert_refused(proc, line)
    assert_refused(
        run("--capture", str(tmp_path / "none.ndjson"), "--port", "0"),
        f"error: --capture = {tmp_path / 'none.ndjson'}: no such file",
    )


def test_capture_that_cannot_be_read_or_holds_nothing(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.ndjson.lz4"
    damaged.write_bytes(b"\xfc{not an lz4 frame" * 50)
    proc = run("--capture", str(damaged), "--port", "0")
    assert_refused(
        proc,
        f"error: --capture = {damaged}: cannot read it (LZ4F_decompress failed with code: "
        "ERROR_frameType_unknown)",
    )
    empty = tmp_path / "empty.ndjson"
    empty.write_text("\n")
    assert_refused(
        run("--capture", str(empty), "--port", "0"),
        f"error: --capture = {empty}: holds no usable data frames (trades, l2Book, bbo, candle, "
        "...)",
    )


def test_inject_that_is_a_directory_or_not_text(tmp_path: Path) -> None:
    assert_refused(
        run(*SIM, "--inject", str(tmp_path)),
        f"error: --inject = {tmp_path}: is a directory; give an NDJSON file",
    )
    binary = tmp_path / "binary.ndjson"
    binary.write_bytes(b'{"offset_s": 1, "raw": "x"}\n\xfc\xfd\n')
    assert_refused(run(*SIM, "--inject", str(binary)), f"error: --inject: {binary}: not UTF-8 text")
