"""A private ``redis-server`` per test: loopback only, a free port, no persistence, stopped after.

Without ``redis-server`` (Debian's ``redis-server`` package; ``.ci/run`` installs it) the tests
that need it skip with that reason; under ``CI=true`` they fail instead (../shared/conventions.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.test_stream import sample  # noqa: F401 - the sample's envelopes, shared
from tests.flows.test_cli import free_port, start  # noqa: F401 - start: subprocesses, killed after
from tools.redis_local import LocalRedis, RedisStartError
from tools.redis_local import redis_binary as local_binary


class RedisServer(LocalRedis):
    """`tools.redis_local.LocalRedis` whose start problems fail the test."""

    def __init__(self, binary: str, workdir: Path, extra: tuple[str, ...] = ()) -> None:
        super().__init__(workdir, extra, binary)

    def start(self) -> None:
        try:
            super().start()
        except RedisStartError as ex:
            pytest.fail(str(ex))


def redis_binary() -> str:
    """``redis-server``, or skip (fail under ``CI=true``) with the reason."""
    found = local_binary()
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
