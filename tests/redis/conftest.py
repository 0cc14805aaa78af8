"""A private ``redis-server`` per test: loopback only, a free port, no persistence, stopped after.

Without ``redis-server`` (Debian's ``redis-server`` package; ``.ci/run`` installs it) the tests
that need it skip with that reason; under ``CI=true`` they fail instead (../shared/conventions.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.api.test_stream import sample  # noqa: F401 - the sample's envelopes, shared
from tests.flows.test_cli import free_port, start  # noqa: F401 - start: subprocesses, killed after

START_WITHIN_S = 10.0


class RedisServer:
    """One ``redis-server`` process: ``url``, and `stop` / `start` / `pause` / `resume`."""

    def __init__(self, binary: str, workdir: Path, extra: tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.workdir = workdir
        self.extra = extra
        self.port = free_port()
        self.password: str | None = None
        if "--requirepass" in extra:
            self.password = extra[extra.index("--requirepass") + 1]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_timeout=5)

    def start(self) -> None:
        """Start it (again, on the same port, empty) and wait until it answers PING."""
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            *self.extra,
        ]
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + START_WITHIN_S
        while True:
            assert self.proc.poll() is None, (self.workdir / "redis.log").read_text()
            try:
                self.client().ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not answer within {START_WITHIN_S} s")
                time.sleep(0.05)

    def pause(self) -> None:
        """Freeze it (SIGSTOP): connections hang, as with a lost network."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw it (SIGCONT)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Stop it (its data is gone: no persistence)."""
        if self.proc is None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


def redis_binary() -> str:
    """``redis-server``, or skip (fail under ``CI=true``) with the reason."""
    found = shutil.which("redis-server")
    if found is None:
        reason = "redis-server is not installed (Debian package redis-server; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private, empty Redis for one test."""
    server = RedisServer(redis_binary(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
