"""Start-up errors, as a user meets them: one line, no traceback, exit status 2 (issue #10).

Every entry point runs as a real subprocess (``bytewax.run flows.signal``, ``api.server``,
``tools.replay``, ``tools.recorder``, ``tools.fake_exchange``) with a clean ``HLSL_*``
environment. Nothing touches the network: an "unreachable exchange" is a closed port on
127.0.0.1, and the retry-then-fail path runs with a short ``--start-timeout-s``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flows.settings import Settings, SettingsError, check_environment
from tests.conftest import REPO, SAMPLE
from tests.flows.test_cli import Proc, clean_env, free_port, get_json, wait_for
from tools.fake_exchange import FakeExchange, SimFeed
from tools.simulate import SimConfig

RUN_TIMEOUT_S = 120.0
BAD_WORDS = ("Traceback", "panicked", "pydantic.dev", "SystemExit")
RETRY_LINE = re.compile(r"exchange unreachable \(attempt (\d+): .*\); retrying in [\d.]+ s")


def run(
    args: list[str], env: dict[str, str] | None = None, timeout_s: float = RUN_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` from the checkout, without the caller's HLSL_* settings (by default)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=clean_env() if env is None else env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_no_traceback(err: str) -> None:
    for word in BAD_WORDS:
        assert word not in err, f"{word!r} on stderr:\n{err}"


def assert_cannot_start(proc: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Exit 2, no traceback, and exactly one stderr line (besides retry warnings) saying why."""
    err = proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}:\n{err}"
    assert_no_traceback(err)
    rest = [line for line in lines(err) if not RETRY_LINE.search(line)]
    assert len(rest) == 1, f"not one line:\n{err}"
    for text in expected:
        assert text in rest[0], f"{text!r} not in {rest[0]!r}"
    return rest[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port with a listening socket on 127.0.0.1 (in use for everyone else)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.fixture
def closed_url() -> str:
    """An /info URL on a local port nobody listens on: connection refused, at once."""
    return f"http://127.0.0.1:{free_port()}/info"


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start subprocesses; any still running at the end of the test is killed."""
    procs: list[Proc] = []

    def _start(args: list[str], env: dict[str, str], name: str = "proc") -> Proc:
        p = Proc(args, env, tmp_path, f"{name}{len(procs)}")
        procs.append(p)
        return p

    yield _start
    for p in procs:
        p.kill()


BYTEWAX = ["-m", "bytewax.run", "flows.signal"]
SERVER = ["-m", "api.server"]


# -- Settings.load: the one formatter ------------------------------------------------------------


def test_settings_errors_name_the_flag_the_value_and_what_is_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in [k for k in os.environ if k.startswith("HLSL_")]:
        monkeypatch.delenv(key)
    with pytest.raises(SettingsError) as ex:
        Settings.load({"port": "99999"})
    assert str(ex.value) == "--port (HLSL_PORT) = 99999: must be <= 65535"
    with pytest.raises(SettingsError) as ex:
        Settings.load({"speed": "-1"})
    assert str(ex.value) == "--speed (HLSL_SPEED) = -1: must be >= 0"
    monkeypatch.setenv("HLSL_PORT", "abc")
    with pytest.raises(SettingsError) as ex:
        Settings.load()
    assert str(ex.value) == "HLSL_PORT = abc: must be a whole number"
    monkeypatch.delenv("HLSL_PORT")
    monkeypatch.setenv("HLSL_API_TOKEN", "s3cret")
    with pytest.raises(SettingsError) as ex:
        Settings.load({"bar_ms": "5", "api_token": ""}, {"bar_ms": "--bar"})
    assert "s3cret" not in str(ex.value)
    assert "--bar (HLSL_BAR_MS) = 5: must be >= 10" in str(ex.value)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            {"ws_url": "notaurl"},
            "--ws-url (HLSL_WS_URL) = notaurl: not an exchange URL (expected ws",
        ),
        ({"info_url": "ftp://y"}, "--info-url (HLSL_INFO_URL) = ftp://y: not an exchange URL"),
        ({"info_url": "not a url"}, "--info-url (HLSL_INFO_URL) = 'not a url': not an exchange"),
        (
            {"ws_url": "ws://h:99999/ws"},
            "HLSL_WS_URL) = ws://h:99999/ws: not an exchange URL (Port",
        ),
        ({"taker_fee_bps": "nan"}, "--taker-fee-bps (HLSL_TAKER_FEE_BPS) = nan: must be a finite"),
        ({"max_price_jump": "inf"}, "(HLSL_MAX_PRICE_JUMP) = inf: must be a finite number"),
        ({"store": "foo"}, "--store (HLSL_STORE) = foo: must be memory, redis://"),
        ({"cors_origins": "notaurl"}, "--cors-origins (HLSL_CORS_ORIGINS) = notaurl: not origins"),
    ],
    ids=[
        "ws-scheme",
        "info-scheme",
        "info-words",
        "ws-port",
        "fee-nan",
        "jump-inf",
        "store-word",
        "cors-word",
    ],
)
def test_urls_and_numbers_are_checked_at_start(
    monkeypatch: pytest.MonkeyPatch, given: dict[str, str], expected: str
) -> None:
    """A bad exchange URL was retried forever as 'unreachable'; NaN said 'must be <= 1000'; a
    store of ``foo`` was shown as ``://foo``."""
    for key in [k for k in os.environ if k.startswith("HLSL_")]:
        monkeypatch.delenv(key)
    with pytest.raises(SettingsError) as ex:
        Settings.load(given)
    assert str(ex.value).startswith(expected) or expected in str(ex.value), str(ex.value)
    good = Settings.load({"ws_url": "ws://127.0.0.1:8765/ws", "info_url": "http://h/info"})
    assert (good.ws_url, good.info_url) == ("ws://127.0.0.1:8765/ws", "http://h/info")
    cors = Settings.load({"cors_origins": "https://a.example/,*"}).cors_origins
    assert cors == ["https://a.example", "*"]  # as the browser's Origin header spells it


def test_an_unknown_variable_names_the_closest_known_one() -> None:
    with pytest.raises(SettingsError) as ex:
        check_environment({"HLSL_SIGNAL_OUT": "x.ndjson", "PATH": "/bin"})
    assert str(ex.value) == "unknown variable HLSL_SIGNAL_OUT; did you mean HLSL_SIGNALS_OUT?"
    with pytest.raises(SettingsError) as ex:
        check_environment({"HLSL_ZZZZZZZZZZZZ": "1"})
    assert "unknown variable HLSL_ZZZZZZZZZZZZ" in str(ex.value)
    check_environment({"HLSL_START_TIMEOUT_S": "5", "HLSL_DASHBOARD_SCREENSHOT": "/tmp/x.png"})


# -- python -m bytewax.run flows.signal ----------------------------------------------------------


def test_bytewax_run_without_coins(tmp_path: Path) -> None:
    out = str(tmp_path / "s.ndjson")
    proc = run(BYTEWAX, clean_env(HLSL_API="0", HLSL_SIGNALS_OUT=out))
    assert_cannot_start(proc, "cannot start:", "HLSL_COINS")


def test_bytewax_run_missing_capture() -> None:
    proc = run(BYTEWAX, clean_env(HLSL_REPLAY="/nonexistent/x.ndjson", HLSL_PORT=str(free_port())))
    assert_cannot_start(
        proc, "cannot start:", "--replay (HLSL_REPLAY) = /nonexistent/x.ndjson: no such file"
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HLSL_PORT": "abc"}, "HLSL_PORT = abc: must be a whole number"),
        ({"HLSL_STOR": "x"}, "unknown variable HLSL_STOR; did you mean"),
        ({"HLSL_SPEED": "-1"}, "HLSL_SPEED = -1: must be >= 0"),
        ({"HLSL_COINS": "btc!"}, "HLSL_COINS = btc!: not coin names"),
    ],
    ids=["port-abc", "typo", "speed", "coin-pattern"],
)
def test_bytewax_run_bad_settings(env: dict[str, str], expected: str) -> None:
    proc = run(BYTEWAX, clean_env(HLSL_REPLAY=str(SAMPLE), **env))
    assert_cannot_start(proc, "cannot start:", expected)


def test_bytewax_run_without_any_output_refuses_to_start() -> None:
    proc = run(BYTEWAX, clean_env(HLSL_REPLAY=str(SAMPLE), HLSL_API="0"))
    assert_cannot_start(proc, "cannot start:", "HLSL_API=0", "HLSL_SIGNALS_OUT")


def test_bytewax_run_port_in_use_fails_as_a_whole(busy_port: int) -> None:
    proc = run(BYTEWAX, clean_env(HLSL_REPLAY=str(SAMPLE), HLSL_PORT=str(busy_port)))
    assert_cannot_start(
        proc,
        f"cannot start: --port (HLSL_PORT) = {busy_port}: port {busy_port} on 127.0.0.1 is in use",
    )


def test_bytewax_run_unwritable_signals_out(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    bad = tmp_path / "a-file" / "signals.ndjson"  # a file where a directory should be
    proc = run(BYTEWAX, clean_env(HLSL_REPLAY=str(SAMPLE), HLSL_API="0", HLSL_SIGNALS_OUT=str(bad)))
    assert_cannot_start(proc, "cannot start:", "HLSL_SIGNALS_OUT", str(bad), "cannot write")
    proc = run(
        BYTEWAX, clean_env(HLSL_REPLAY=str(SAMPLE), HLSL_API="0", HLSL_SIGNALS_OUT=str(tmp_path))
    )
    assert_cannot_start(proc, "cannot start:", "HLSL_SIGNALS_OUT", "is a directory")


def test_bytewax_run_retries_an_unreachable_exchange_then_fails(
    closed_url: str, tmp_path: Path
) -> None:
    env = clean_env(
        HLSL_COINS="BTC",
        HLSL_INFO_URL=closed_url,
        HLSL_START_TIMEOUT_S="1.5",
        HLSL_API="0",
        HLSL_SIGNALS_OUT=str(tmp_path / "s.ndjson"),
    )
    proc = run(BYTEWAX, env)
    line = assert_cannot_start(proc, "cannot start: the exchange did not answer", closed_url)
    assert "HLSL_START_TIMEOUT_S" in line
    attempts = [int(m.group(1)) for m in map(RETRY_LINE.search, lines(proc.stderr)) if m]
    assert len(attempts) >= 2, proc.stderr
    assert attempts == list(range(1, len(attempts) + 1))


def test_bytewax_run_live_unknown_coin_fails_at_once(tmp_path: Path) -> None:
    """A mis-cased coin is not retried: the exchange answered, the name is wrong."""
    with FakeExchange(SimFeed(SimConfig(coins=("BTC", "ETH"), seconds=60, seed=3))) as ex:
        env = clean_env(
            HLSL_COINS="btc",
            HLSL_WS_URL=ex.ws_url,
            HLSL_INFO_URL=ex.info_url,
            HLSL_API="0",
            HLSL_SIGNALS_OUT=str(tmp_path / "s.ndjson"),
        )
        proc = run(BYTEWAX, env)
        assert ex.stats.connections_opened == 0
    line = assert_cannot_start(proc, "cannot start:", "'btc'", "did you mean 'BTC'")
    assert not RETRY_LINE.search(proc.stderr)
    assert "case-sensitive" in line


def test_bytewax_run_replay_of_an_absent_coin_exits_2_with_a_hint(tmp_path: Path) -> None:
    out = tmp_path / "s.ndjson"
    env = clean_env(
        HLSL_REPLAY=str(SAMPLE), HLSL_COINS="btc", HLSL_API="0", HLSL_SIGNALS_OUT=str(out)
    )
    proc = run(BYTEWAX, env)
    assert proc.returncode == 2, proc.stderr
    assert_no_traceback(proc.stderr)
    assert "unknown coin 'btc' in this capture; did you mean 'BTC'?" in proc.stderr
    assert "no signals produced" in proc.stderr


def test_bytewax_run_replay_without_api_summarises_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "s.ndjson"
    env = clean_env(HLSL_REPLAY=str(SAMPLE), HLSL_API="0", HLSL_SIGNALS_OUT=str(out))
    proc = run(BYTEWAX, env)
    assert proc.returncode == 0, proc.stderr
    assert_no_traceback(proc.stderr)
    assert re.search(r"replay finished: [1-9]\d* signals from [1-9]\d* data frames", proc.stderr)
    assert "skipped: none" in proc.stderr
    assert out.stat().st_size > 0


def test_bytewax_run_keeps_serving_a_finished_replay_until_sigterm(
    start: Callable[..., Proc],
) -> None:
    port = free_port()
    env = clean_env(HLSL_REPLAY=str(SAMPLE), HLSL_API="1", HLSL_PORT=str(port))
    proc = start(BYTEWAX, env, "bytewax")
    health = wait_for(proc, port, lambda s, b: s == 200 and b.get("status") == "finished", 60)
    assert health["ok"] is True, health
    assert health["signals_emitted"] > 0
    status, body = get_json(port, "/v1/signal/BTC")
    assert status == 200, body
    assert proc.alive()
    rc = proc.signal_and_wait(signal.SIGTERM, within_s=30)
    err = proc.stderr()
    assert rc == 0, err
    assert_no_traceback(err)
    assert "the API keeps serving" in err


# -- python -m api.server ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--port", "99999"], "cannot start: --port (HLSL_PORT) = 99999: must be <= 65535"),
        (["--speed", "-1"], "cannot start: --speed (HLSL_SPEED) = -1: must be >= 0"),
        (["--bar-ms", "x"], "cannot start: --bar-ms (HLSL_BAR_MS) = x: must be a whole number"),
        (["--log-level", "LOUD"], "--log-level (HLSL_LOG_LEVEL) = LOUD: must be one of DEBUG"),
        (["--start-timeout-s", "-1"], "--start-timeout-s (HLSL_START_TIMEOUT_S) = -1: must be"),
        (["--host", "192.0.2.1"], "--host (HLSL_HOST) = 192.0.2.1: cannot listen there on port"),
    ],
    ids=["port", "speed", "bar-ms", "log-level", "start-timeout", "host-not-here"],
)
def test_api_server_bad_flags(args: list[str], expected: str) -> None:
    proc = run([*SERVER, "--replay", str(SAMPLE), *args])
    assert_cannot_start(proc, expected)


def test_api_server_unknown_variable() -> None:
    proc = run([*SERVER, "--replay", str(SAMPLE)], clean_env(HLSL_SIGNAL_OUT="x"))
    assert_cannot_start(proc, "unknown variable HLSL_SIGNAL_OUT; did you mean HLSL_SIGNALS_OUT?")


def test_api_server_port_in_use_fails_before_announcing(busy_port: int) -> None:
    proc = run([*SERVER, "--replay", str(SAMPLE), "--port", str(busy_port)])
    assert_cannot_start(
        proc,
        f"cannot start: --port (HLSL_PORT) = {busy_port}: port {busy_port} on 127.0.0.1 is in use",
    )
    assert "serving on" not in proc.stderr
    assert "Application startup complete" not in proc.stderr + proc.stdout


def test_api_server_unwritable_signals_out(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    bad = tmp_path / "a-file" / "x.ndjson"
    proc = run([*SERVER, "--replay", str(SAMPLE), "--port", "0", "--signals-out", str(bad)])
    assert_cannot_start(proc, "--signals-out (HLSL_SIGNALS_OUT)", str(bad), "cannot write")
    assert not bad.exists()
    proc = run([*SERVER, "--replay", str(SAMPLE), "--port", "0", "--record", str(tmp_path)])
    assert_cannot_start(proc, "--record (HLSL_RECORD)", "is a directory")


def test_api_server_directory_without_captures(tmp_path: Path) -> None:
    (tmp_path / "notes.json").write_text("{}")
    proc = run([*SERVER, "--replay", str(tmp_path), "--port", "0"])
    assert_cannot_start(proc, "cannot start:", str(tmp_path), "holds no capture")


def test_api_server_retries_an_unreachable_exchange_then_fails(closed_url: str) -> None:
    t0 = time.monotonic()
    proc = run(
        [
            *SERVER,
            "--coins",
            "BTC",
            "--info-url",
            closed_url,
            "--start-timeout-s",
            "1",
            "--port",
            "0",
        ]
    )
    assert_cannot_start(proc, "cannot start: the exchange did not answer", "--start-timeout-s")
    assert RETRY_LINE.search(proc.stderr), proc.stderr
    assert time.monotonic() - t0 < RUN_TIMEOUT_S


def test_api_server_replays_a_directory(start: Callable[..., Proc], tmp_path: Path) -> None:
    shutil.copy(SAMPLE, tmp_path / "b.ndjson.gz")
    (tmp_path / "a.txt").write_bytes(b"")  # a capture too (empty): replayed first, harmlessly
    (tmp_path / "sample.truth.json").write_text("{}")  # a sidecar, not a capture
    port = free_port()
    proc = start([*SERVER, "--replay", str(tmp_path), "--port", str(port)], clean_env(), "server")
    health = wait_for(proc, port, lambda s, b: s == 200 and b.get("status") == "finished", 60)
    assert health["ok"] is True, health
    assert health["signals_emitted"] > 0
    status, state = get_json(port, "/v1/state")
    assert status == 200
    text = str(state)
    assert str(tmp_path / "b.ndjson.gz") in text
    assert "truth.json" not in text
    assert proc.signal_and_wait(signal.SIGTERM, within_s=30) == 0


def test_api_server_replay_that_produces_nothing_says_so(
    start: Callable[..., Proc], tmp_path: Path
) -> None:
    empty = tmp_path / "empty.ndjson"
    empty.write_bytes(b"")
    port = free_port()
    proc = start([*SERVER, "--replay", str(empty), "--port", str(port)], clean_env(), "server")
    health = wait_for(proc, port, lambda s, b: b.get("status") == "finished", 60)
    assert health["ok"] is False, health
    assert "no data frames accepted" in health["error"], health
    assert proc.alive()  # it keeps serving
    rc = proc.signal_and_wait(signal.SIGTERM, within_s=30)
    err = proc.stderr()
    assert_no_traceback(err)
    assert "no data frames accepted" in err
    assert rc in (0, 1), err


# -- python -m tools.replay ----------------------------------------------------------------------


def test_replay_of_a_non_capture_exits_2_with_the_skip_counts() -> None:
    proc = run(["-m", "tools.replay", "README.md", "--log-level", "ERROR"])
    assert proc.returncode == 2, proc.stderr
    assert_no_traceback(proc.stderr)
    assert re.search(
        r"error: no data frames accepted from README.md .*invalid_json=\d+", proc.stderr
    )


def test_replay_of_an_empty_capture_exits_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty.ndjson.gz"
    empty.write_bytes(b"")
    proc = run(["-m", "tools.replay", str(empty)])
    assert proc.returncode == 2, proc.stderr
    assert_no_traceback(proc.stderr)
    assert "no data frames accepted" in proc.stderr


def test_replay_of_a_mis_cased_coin_names_the_right_one() -> None:
    proc = run(["-m", "tools.replay", str(SAMPLE), "--coins", "btc"])
    assert proc.returncode == 2, proc.stderr
    assert_no_traceback(proc.stderr)
    assert "unknown coin 'btc' in this capture; did you mean 'BTC'?" in proc.stderr


def test_replay_checks_out_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    bad = tmp_path / "a-file" / "out.ndjson"
    proc = run(["-m", "tools.replay", str(SAMPLE), "--out", str(bad)])
    assert_cannot_start(proc, "cannot start: --out", str(bad), "cannot write")
    proc = run(["-m", "tools.replay", str(SAMPLE), "--out", str(tmp_path)])
    assert_cannot_start(proc, "cannot start: --out", "is a directory")


def test_replay_checks_parquet_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    bad = tmp_path / "a-file" / "history"
    proc = run(["-m", "tools.replay", str(SAMPLE), "--parquet", str(bad)])
    assert_cannot_start(proc, f"cannot start: --parquet (HLSL_PARQUET) = {bad}", "cannot write")
    proc = run(["-m", "tools.replay", str(SAMPLE), "--parquet", str(tmp_path / "a-file")])
    assert_cannot_start(proc, "cannot start: --parquet (HLSL_PARQUET)", "is a file")
    proc = run(["-m", "tools.replay", str(SAMPLE)], clean_env(HLSL_PARQUET=str(bad)))
    assert_cannot_start(proc, "cannot start: --parquet (HLSL_PARQUET)", "cannot write")


def test_replay_bad_flag_value() -> None:
    proc = run(["-m", "tools.replay", str(SAMPLE), "--bar-ms", "5"])
    assert_cannot_start(proc, "cannot start: --bar-ms (HLSL_BAR_MS) = 5: must be >= 10")


def test_replay_of_a_directory_replays_every_capture_in_it(tmp_path: Path) -> None:
    shutil.copy(SAMPLE, tmp_path / "sample.ndjson.gz")
    (tmp_path / "sample.truth.json").write_text("{}")
    (tmp_path / ".hidden.ndjson").write_text("junk\n")
    out_dir = tmp_path / "out-dir.ndjson"
    out_file = tmp_path / "out-file.ndjson"
    by_dir = run(["-m", "tools.replay", str(tmp_path), "--out", str(out_dir)])
    assert by_dir.returncode == 0, by_dir.stderr
    by_file = run(["-m", "tools.replay", str(SAMPLE), "--out", str(out_file)])
    assert by_file.returncode == 0, by_file.stderr
    assert out_dir.read_bytes() == out_file.read_bytes()
    assert str(tmp_path / "sample.ndjson.gz") in by_dir.stderr
    assert "truth.json" not in by_dir.stderr


def test_replay_of_a_directory_without_captures(tmp_path: Path) -> None:
    proc = run(["-m", "tools.replay", str(tmp_path)])
    assert_cannot_start(proc, "cannot start:", str(tmp_path), "holds no capture")


# -- python -m tools.recorder and tools.fake_exchange --------------------------------------------


def test_recorder_refuses_a_negative_duration(tmp_path: Path) -> None:
    out = tmp_path / "x.ndjson"
    proc = run(["-m", "tools.recorder", "--coins", "BTC", "--out", str(out), "--seconds", "-1"])
    assert proc.returncode == 2
    assert lines(proc.stderr) == ["error: --seconds = -1: must be > 0"]
    assert not out.exists()


def test_recorder_refuses_a_directory_or_unwritable_out(tmp_path: Path) -> None:
    cmd = ["-m", "tools.recorder", "--coins", "BTC", "--info-url", "http://127.0.0.1:9/info"]
    proc = run([*cmd, "--out", str(tmp_path), "--force"])
    assert proc.returncode == 2
    assert lines(proc.stderr) == [f"error: --out = {tmp_path}: is a directory; give a file name"]
    (tmp_path / "a-file").write_text("x")
    proc = run([*cmd, "--out", str(tmp_path / "a-file" / "x.ndjson")])
    assert proc.returncode == 2
    assert len(lines(proc.stderr)) == 1, proc.stderr
    assert "cannot write there" in proc.stderr


def test_recorder_retries_an_unreachable_exchange_then_fails(
    closed_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "x.ndjson"
    proc = run(
        [
            "-m",
            "tools.recorder",
            "--coins",
            "BTC",
            "--out",
            str(out),
            "--info-url",
            closed_url,
            "--start-timeout-s",
            "1",
        ]
    )
    assert proc.returncode == 2, proc.stderr
    assert_no_traceback(proc.stderr)
    assert RETRY_LINE.search(proc.stderr), proc.stderr
    assert lines(proc.stderr)[-1].startswith("error: the exchange did not answer")
    assert not out.exists()


def test_fake_exchange_on_a_used_port(busy_port: int) -> None:
    proc = run(["-m", "tools.fake_exchange", "--simulate", "--port", str(busy_port)])
    assert proc.returncode == 2, proc.stderr
    assert lines(proc.stderr) == [
        f"error: --port = {busy_port}: port {busy_port} on 127.0.0.1 is in use"
    ]
