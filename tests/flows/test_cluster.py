"""Cluster runs: ``python -m bytewax.testing flows.signal -p 2`` and ``bytewax.run -i/-a``.

The envelopes of a 2-process replay, read back from each process's own file and sorted by
(timestamp_ms, coin), have the golden hash of the one-process replay; a cluster with the API and
the in-memory store is refused at start; the processes' partitions, outputs and splits are their
own. Every process is started in its own session and killed as a group if it overruns.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import lz4.frame
import orjson
import pytest

from flows.cluster import Cluster, bytewax_cluster, check_cluster
from flows.settings import Settings
from flows.startup import StartupError
from tests.conftest import REPO, SAMPLE
from tests.flows.test_cli import BAD_WORDS, clean_env, free_port

RUN_TIMEOUT_S = 55.0
"""A cluster test takes at most 60 s (conventions); its runs take a few seconds on a quiet
machine."""
GOLDEN = orjson.loads((REPO / "tests" / "golden" / "hashes.json").read_bytes())["sample"]
SUMMARY = re.compile(
    r"replay finished: (\d+) signals from (\d+) data frames \((\d+) lines read; skipped: none\)"
)


def golden_hash(files: Sequence[Path]) -> tuple[int, str]:
    """(envelopes, sha256) of the files' envelopes sorted as ``tools.replay --out`` writes them."""
    lines = [line for f in files for line in f.read_bytes().splitlines() if line]
    envs = sorted(
        lines, key=lambda raw: (orjson.loads(raw)["timestamp_ms"], orjson.loads(raw)["coin"])
    )
    data = b"".join(raw + b"\n" for raw in envs)
    data = re.sub(rb'"code_version":"[^"]*"', b'"code_version":"*"', data)
    return len(envs), hashlib.sha256(data).hexdigest()


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def finish(procs: Sequence[subprocess.Popen[bytes]], timeout_s: float = RUN_TIMEOUT_S) -> list[int]:
    """Wait for every process within one generous bound; kill the groups of those still running."""
    deadline = time.monotonic() + timeout_s
    codes = []
    try:
        for p in procs:
            codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
    return codes


def cluster_env(tmp_path: Path, replay: Path | str, **extra: str) -> dict[str, str]:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    # TMPDIR: where the split goes, so the test sees it made and removed.
    return clean_env(HLSL_REPLAY=str(replay), TMPDIR=str(tmpdir), **extra)


def assert_golden_cluster(out: Path, log: str, tmp_path: Path) -> None:
    """Two files, one per process, whose envelopes are the golden sample's; one summary per
    process, adding up to the one-process replay; the split removed at the end."""
    files = sorted(out.parent.glob("signals*.ndjson"))
    assert [f.name for f in files] == ["signals.p0.ndjson", "signals.p1.ndjson"]
    assert all(f.stat().st_size > 0 for f in files)  # both processes read coins
    assert golden_hash(files) == (GOLDEN["envelopes"], GOLDEN["sha256"])
    summaries = SUMMARY.findall(log)
    assert len(summaries) == 2, log
    assert sum(int(signals) for signals, _, _ in summaries) == GOLDEN["envelopes"]
    assert sum(int(lines) for _, _, lines in summaries) == 19_311  # each line read once
    for word in BAD_WORDS:
        assert word not in log, log
    assert list((tmp_path / "tmp").iterdir()) == []  # the split was removed at the end


def _ports_free(*ports: int) -> bool:
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


# -- the 2-process replay ----------------------------------------------------------------------


def test_bytewax_testing_two_processes_publish_the_golden_sample(tmp_path: Path) -> None:
    if not _ports_free(2101, 2102):
        pytest.skip("bytewax.testing -p 2 binds ports 2101 and 2102, and one is in use")
    out = tmp_path / "out" / "signals.ndjson"
    env = cluster_env(tmp_path, SAMPLE.relative_to(REPO), HLSL_API="0", HLSL_SIGNALS_OUT=str(out))
    log = tmp_path / "testing.log"
    proc = start(["-m", "bytewax.testing", "flows.signal", "-p", "2"], env, log)
    assert finish([proc]) == [0], log.read_text()
    assert_golden_cluster(out, log.read_text(), tmp_path)


def test_bytewax_run_cluster_replays_an_archive_directory(tmp_path: Path) -> None:
    # The sample's BTC books as an archive hour beside the rest as a recording: the BTC
    # partition merges its archive file with its share of the split recording.
    lines = gzip.decompress(SAMPLE.read_bytes()).splitlines()
    is_book = [b'"channel":"l2Book"' in x and b'"coin":"BTC"' in x for x in lines]
    data = tmp_path / "data"
    hour = data / "market_data" / "20260101" / "0" / "l2Book" / "BTC.lz4"
    hour.parent.mkdir(parents=True)
    books = [x for x, k in zip(lines, is_book, strict=True) if k]
    hour.write_bytes(lz4.frame.compress(b"\n".join(books) + b"\n"))
    rest = [x for x, k in zip(lines, is_book, strict=True) if not k]
    (data / "recording.ndjson").write_bytes(b"\n".join(rest) + b"\n")
    out = tmp_path / "out" / "signals.ndjson"
    env = cluster_env(tmp_path, data, HLSL_API="0", HLSL_SIGNALS_OUT=str(out))
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    logs = [tmp_path / f"p{i}.log" for i in range(2)]
    procs = [
        start(["-m", "bytewax.run", "flows.signal", "-i", str(i), "-a", addresses], env, logs[i])
        for i in range(2)
    ]
    codes = finish(procs)
    text = "".join(log.read_text() for log in logs)
    assert codes == [0, 0], text
    assert_golden_cluster(out, text, tmp_path)


# -- refused or failed at start ------------------------------------------------------------------


def test_a_cluster_with_the_api_and_the_memory_store_is_refused(tmp_path: Path) -> None:
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    env = cluster_env(tmp_path, SAMPLE, HLSL_PORT=str(free_port()))
    log = tmp_path / "p0.log"
    proc = start(["-m", "bytewax.run", "flows.signal", "-i", "0", "-a", addresses], env, log)
    assert finish([proc]) == [2]
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "cannot start:" in lines[0]
    assert "2 processes" in lines[0]
    assert "HLSL_API=1" in lines[0]
    assert "HLSL_API=0" in lines[0]  # what to do instead


def test_a_directory_without_captures_is_a_one_line_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.json").write_text("{}")
    env = cluster_env(tmp_path, empty, HLSL_API="0", HLSL_SIGNALS_OUT=str(tmp_path / "s.ndjson"))
    log = tmp_path / "run.log"
    proc = start(["-m", "bytewax.run", "flows.signal"], env, log)
    assert finish([proc]) == [2]
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "HLSL_REPLAY" in lines[0]
    assert str(empty) in lines[0]
    assert "holds no capture" in lines[0]


# -- how a process learns it is one of N ---------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["flows.signal"], {}, Cluster()),
        (["flows.signal", "-w", "2"], {}, Cluster(workers_per_process=2)),
        (
            ["flows.signal", "-i", "1", "-a", "h1:2101;h2:2101"],
            {},
            Cluster(1, 2, 1, ("h1:2101", "h2:2101")),
        ),
        (
            ["flows.signal", "--process-id=0", "--addresses", "a:1;b:2;c:3", "-w", "2", "-s", "5"],
            {},
            Cluster(0, 3, 2, ("a:1", "b:2", "c:3")),
        ),
        (
            ["flows.signal"],
            {"BYTEWAX_PROCESS_ID": "1", "BYTEWAX_ADDRESSES": "a:1;b:2"},
            Cluster(1, 2, 1, ("a:1", "b:2")),
        ),
        (
            ["flows.signal"],
            {
                "BYTEWAX_POD_NAME": "hlsl-2",
                "BYTEWAX_STATEFULSET_NAME": "hlsl",
                "BYTEWAX_ADDRESSES": "a:1;b:1;c:1",
            },
            Cluster(2, 3, 1, ("a:1", "b:1", "c:1")),
        ),
        (
            ["flows.signal", "-i", "0", "-a", "localhost:2101"],
            {},
            Cluster(0, 1, 1, ("localhost:2101",)),
        ),
    ],
)
def test_a_process_reads_its_place_as_bytewax_run_does(
    argv: list[str], env: dict[str, str], expected: Cluster
) -> None:
    assert bytewax_cluster(argv, env) == expected


def test_the_hostfile_names_the_processes(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("a:2101\n\nb:2101\n")
    env = {"BYTEWAX_HOSTFILE_PATH": str(hosts)}
    assert bytewax_cluster(["flows.signal", "-i", "1"], env) == Cluster(
        1, 2, 1, ("a:2101", "b:2101")
    )


def test_outside_bytewax_run_a_process_is_alone() -> None:
    assert bytewax_cluster() == Cluster()  # pytest's argv is not bytewax.run's


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("out/signals.ndjson", "out/signals.p1.ndjson"),
        ("signals", "signals.p1"),
        ("rec.ndjson.gz", "rec.p1.ndjson.gz"),
        ("rec.lz4", "rec.p1.lz4"),
        ("run.2026.ndjson", "run.2026.p1.ndjson"),
        (".hidden", ".hidden.p1"),
    ],
)
def test_each_process_writes_its_own_file(path: str, expected: str) -> None:
    assert Cluster(1, 2).output_path(path) == expected
    assert Cluster(0, 1, 4).output_path(path) == path  # one process: the name as given
    assert Cluster(1, 2).output_path(None) is None


def test_the_refusal_depends_on_the_store_and_the_processes() -> None:
    api_on = Settings(replay=[str(SAMPLE)])
    api_off = Settings(replay=[str(SAMPLE)], api=False)
    check_cluster(api_on, Cluster(workers_per_process=2))  # one process: one store, all coins
    check_cluster(api_off, Cluster(0, 2))
    with pytest.raises(StartupError, match="HLSL_API=1"):
        check_cluster(api_on, Cluster(0, 2))
    # A store every process shares serves every coin from any process: the cluster may serve.
    check_cluster(api_on, Cluster(0, 2), store="redis")
    with pytest.raises(StartupError, match="store 'disk'"):
        check_cluster(api_on, Cluster(0, 2), store="disk")


def test_processes_on_one_host_divide_the_per_ip_budgets() -> None:
    """Live on N processes of one IP: each takes 1/N of the per-IP rate budgets (messages, new
    connections, REST weight); connections and subscriptions are the source's partitions (one
    global list spread by Bytewax), and allMids rides on the first connection only."""
    from connectors._live_config import (
        NEW_CONNECTIONS_PER_MIN,
        REST_WEIGHT_PER_MIN,
        WS_MESSAGES_PER_MIN,
        Limits,
    )
    from flows.pipeline import live_config

    local = Cluster(1, 3, 1, ("127.0.0.1:2101", "localhost:2102", "127.0.0.1:2103"))
    mixed = Cluster(0, 3, 1, ("10.0.0.1:2101", "10.0.0.1:2102", "10.0.0.2:2101"))
    assert local.processes_on_this_host() == 3
    assert mixed.processes_on_this_host() == 2
    assert Cluster().processes_on_this_host() == 1
    settings = Settings(coins=["BTC"])
    assert live_config(settings, local).ip_share == 3
    assert live_config(settings).ip_share == 1
    one, three = Limits(1), Limits(3)
    assert one.rest_weight.rate_per_s == pytest.approx(REST_WEIGHT_PER_MIN / 60)
    assert three.rest_weight.rate_per_s == pytest.approx(REST_WEIGHT_PER_MIN / 60 / 3)
    assert three.ws_messages.rate_per_s == pytest.approx(WS_MESSAGES_PER_MIN / 60 / 3)
    assert three.new_connections.rate_per_s == pytest.approx(NEW_CONNECTIONS_PER_MIN / 60 / 3)
