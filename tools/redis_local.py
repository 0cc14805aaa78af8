"""A private ``redis-server`` for benchmarks and tests: loopback only, a free port, no persistence.

Debian's ``redis-server`` package (``.ci/run`` installs it). `LocalRedis` starts one in a work
directory, waits until it answers ``PING``, and can freeze (SIGSTOP), thaw and stop it; its data
is gone when it stops. ``tests/redis/conftest.py`` builds its fixture on it; `tools.bench_redis`
measures against it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

START_WITHIN_S = 10.0


class RedisStartError(RuntimeError):
    """``redis-server`` is missing, or did not answer in time."""


def redis_binary() -> str | None:
    """The ``redis-server`` on PATH, or None."""
    return shutil.which("redis-server")


def free_port() -> int:
    """A free TCP port on the loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalRedis:
    """One ``redis-server`` process: ``url``, and `start` / `stop` / `pause` / `resume`."""

    def __init__(self, workdir: Path, extra: tuple[str, ...] = (), binary: str | None = None):
        found = binary or redis_binary()
        if found is None:
            msg = "redis-server is not installed (Debian package redis-server)"
            raise RedisStartError(msg)
        self.binary = found
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
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir), *self.extra]
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + START_WITHIN_S
        while True:
            if self.proc.poll() is not None:
                raise RedisStartError((self.workdir / "redis.log").read_text()[-2000:])
            try:
                self.client().ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    msg = f"redis-server did not answer within {START_WITHIN_S} s"
                    raise RedisStartError(msg) from None
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


__all__ = ["LocalRedis", "RedisStartError", "free_port", "redis_binary"]
