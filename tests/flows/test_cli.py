"""The command lines, as real subprocesses: ``python -m bytewax.run flows.signal`` and
``python -m api.server``, started in their own session from the repository root, on free ports,
stopped by signals, always with timeouts and never left behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from operators.envelope import SCHEMA_VERSION
from tests.conftest import LIVE_CAPTURE, REPO, real_file

STOP_WITHIN_S = 10.0
READY_WITHIN_S = 20.0
BAD_WORDS = ("Traceback", "Fatal", "panicked")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HLSL_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _default_sigint() -> None:
    # A child of a non-interactive shell may inherit SIGINT as ignored; give it the default back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Proc:
    """A started subprocess with its output in files (no pipe can fill up and block it)."""

    def __init__(self, args: list[str], env: dict[str, str], logdir: Path, name: str) -> None:
        self.out_path = logdir / f"{name}.stdout"
        self.err_path = logdir / f"{name}.stderr"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.popen = subprocess.Popen(
                [sys.executable, *args],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=_default_sigint,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def signal_and_wait(self, sig: signal.Signals, within_s: float = STOP_WITHIN_S) -> int:
        """Send ``sig`` to this process only; its exit status, or fail if it does not exit."""
        assert self.alive(), f"exited before {sig.name}:\n{self.stderr()}"
        t0 = time.monotonic()
        os.kill(self.pid, sig)
        try:
            rc = self.popen.wait(timeout=within_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {within_s:.0f} s after {sig.name}:\n{self.stderr()}")
        assert time.monotonic() - t0 < within_s
        return rc

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)  # its own session: the process and its children
        self.popen.wait(timeout=10)


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


@pytest.fixture(scope="module")
def capture() -> Path:
    return real_file(LIVE_CAPTURE)


def get_json(port: int, path: str, timeout_s: float = 2.0) -> tuple[int, Any]:
    """GET ``path`` on the local server: (status, parsed JSON body)."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as ex:
        return ex.code, json.loads(ex.read())


def wait_for(
    proc: Proc, port: int, ok: Callable[[int, Any], bool], within_s: float = READY_WITHIN_S
) -> Any:
    """Poll ``/health`` until ``ok(status, body)``; fail if the process dies or time runs out."""
    deadline = time.monotonic() + within_s
    last: Any = None
    while time.monotonic() < deadline:
        assert proc.alive(), f"exited with {proc.popen.returncode}:\n{proc.stderr()}"
        try:
            status, body = get_json(port, "/health", timeout_s=1.0)
        except (OSError, ValueError) as ex:  # not listening yet
            last = ex
        else:
            last = (status, body)
            if ok(status, body):
                return body
        time.sleep(0.1)
    pytest.fail(f"/health not ready in {within_s:.0f} s (last: {last!r}):\n{proc.stderr()}")


def assert_clean_stderr(err: str) -> None:
    for word in BAD_WORDS:
        assert word not in err, f"{word!r} on stderr:\n{err}"


# -- python -m bytewax.run flows.signal ----------------------------------------------------------


def run_flow(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m bytewax.run flows.signal`` to its end (a replay without the API)."""
    return subprocess.run(
        [sys.executable, "-m", "bytewax.run", "flows.signal"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bytewax_run_replay_without_api_exits_0(capture: Path, tmp_path: Path) -> None:
    # Without the API the signals must go somewhere (HLSL_SIGNALS_OUT), else it refuses to start.
    out = tmp_path / "signals.ndjson"
    env = clean_env(HLSL_REPLAY=str(capture), HLSL_API="0", HLSL_SIGNALS_OUT=str(out))
    proc = run_flow(env)
    assert proc.returncode == 0, proc.stderr
    assert_clean_stderr(proc.stderr)
    assert out.stat().st_size > 0
    assert re.search(r"replay finished: \d+ signals from \d+ data frames", proc.stderr)


def test_bytewax_run_replay_to_parquet_alone_is_an_output(capture: Path, tmp_path: Path) -> None:
    # The Parquet history is somewhere the signals go: a run with only it is not refused.
    out = tmp_path / "pq"
    env = clean_env(HLSL_REPLAY=str(capture), HLSL_API="0", HLSL_PARQUET=str(out))
    proc = run_flow(env)
    assert proc.returncode == 0, proc.stderr
    assert_clean_stderr(proc.stderr)
    assert sorted(p.name for p in out.glob("date=*/coin=*"))
    assert list(out.glob("date=*/coin=*/part-*.parquet"))
    # and with no output at all it is refused, naming the settings that would be one
    env = clean_env(HLSL_REPLAY=str(capture), HLSL_API="0")
    proc = run_flow(env)
    assert proc.returncode == 2, proc.stderr
    assert "nothing would receive the signals" in proc.stderr
    assert "HLSL_PARQUET" in proc.stderr
    assert_clean_stderr(proc.stderr)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_bytewax_run_serves_the_api_and_stops_cleanly(
    capture: Path, start: Callable[..., Proc], sig: signal.Signals
) -> None:
    port = free_port()
    env = clean_env(HLSL_REPLAY=str(capture), HLSL_API="1", HLSL_SPEED="1", HLSL_PORT=str(port))
    proc = start(["-m", "bytewax.run", "flows.signal"], env, "bytewax")
    health = wait_for(proc, port, lambda status, _body: status == 200)
    assert health["status"] == "running"
    assert health["ok"] is True
    status, body = get_json(port, "/v1/signals")
    assert status == 200, body
    assert body["count"] == len(body["data"])
    status, _ = get_json(port, "/v1/state")
    assert status == 200
    # real-time pacing: the 35-minute capture is far from its end
    assert proc.alive()
    rc = proc.signal_and_wait(sig)
    err = proc.stderr()
    assert rc == 0, err
    assert_clean_stderr(err)
    assert f"signal {sig.name}: stopping the flow" in err
    # stopped, not finished: it does not claim to keep serving as it shuts down
    assert "keeps serving the final state" not in err


# -- python -m api.server ------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_api_server_serves_a_finished_replay_and_stops_cleanly(
    capture: Path, start: Callable[..., Proc], sig: signal.Signals
) -> None:
    port = free_port()
    proc = start(
        ["-m", "api.server", "--replay", str(capture), "--port", str(port)],
        clean_env(),
        "server",
    )
    health = wait_for(proc, port, lambda s, b: s == 200 and b.get("status") == "finished")
    assert health["ok"] is True
    assert health["coins"] == ["BTC", "ETH", "SOL"]
    assert health["signals_emitted"] > 0
    status, env = get_json(port, "/v1/signal/BTC")
    assert status == 200, env
    assert env["coin"] == "BTC"
    assert env["schema_version"] == SCHEMA_VERSION
    # the replay ended but the API keeps serving its final state until stopped
    time.sleep(0.3)
    assert proc.alive()
    rc = proc.signal_and_wait(sig)
    err = proc.stderr()
    assert rc == 0, err
    assert_clean_stderr(err)
    assert "Application shutdown complete" in err + proc.stdout()


def test_api_server_stops_a_running_replay(capture: Path, start: Callable[..., Proc]) -> None:
    port = free_port()
    proc = start(
        ["-m", "api.server", "--replay", str(capture), "--port", str(port), "--speed", "1"],
        clean_env(),
        "server",
    )
    health = wait_for(proc, port, lambda s, _b: s == 200)
    assert health["status"] == "running"
    rc = proc.signal_and_wait(signal.SIGTERM)
    err = proc.stderr()
    assert rc == 0, err
    assert_clean_stderr(err)
    assert "signal flow ended (stopped)" in err


def test_api_server_without_input_fails_fast_with_a_message() -> None:
    """No ``--replay`` and nothing else to read from: a one-line reason naming what to set."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "api.server", "--port", str(free_port())],
        cwd=REPO,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 10
    err = proc.stderr
    assert "Traceback" not in err
    assert "ERROR" in err, err
    # names the flag and the variable that would fix it (--replay/HLSL_REPLAY, --coins/HLSL_COINS)
    assert re.search(r"--(replay|coins)\b", err), err
    assert re.search(r"HLSL_(REPLAY|COINS)\b", err), err


def test_api_server_with_a_missing_capture_fails_with_a_message() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "api.server", "--replay", "/nonexistent", "--port", "0"],
        cwd=REPO,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert proc.returncode != 0
    assert "/nonexistent" in proc.stderr, proc.stderr
    assert "--replay (HLSL_REPLAY) = /nonexistent" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
