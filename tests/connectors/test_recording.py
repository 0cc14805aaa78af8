"""Recordings survive a crash: periodic complete blocks, real LZ4, torn tails, append, --force.

What a ``kill -9`` leaves is exactly the file's bytes at that moment (the recorder keeps no
user-space buffer), so most tests copy the file while a recording is open; two tests kill a real
``tools.recorder`` process with SIGKILL while it records from the local exchange.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import lz4.frame
import orjson
import pytest

from connectors.files import CHUNK_BYTES, ReplayStats, open_capture, read_events
from connectors.live import Recorder
from connectors.recording import check_tail, numbered, open_sink
from tests.conftest import REPO
from tools.fake_exchange import FakeExchange
from tools.simulate import SimConfig

SUFFIXES = [".ndjson.gz", ".ndjson.lz4"]
T0_NS = 1_757_015_216_673_877_954


def _frame(k: int) -> bytes:
    return orjson.dumps({"channel": "pong", "k": k, "pad": "x" * (k % 37)})


def _lines(path: Path) -> list[bytes]:
    """Every complete line of a capture, however it ends (a torn tail is tolerated)."""
    out = bytearray()
    with open_capture(path) as fh:
        try:
            while chunk := fh.read1(1 << 16):
                out += chunk
        except EOFError:
            pass
    return bytes(out[: out.rfind(b"\n") + 1]).splitlines()


def _read(path: Path) -> ReplayStats:
    stats = ReplayStats()
    read_events([path], stats)
    return stats


def _wait(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def _crash_copy(path: Path, tmp: Path) -> Path:
    """What ``kill -9`` would leave now: the file's bytes, copied aside."""
    dst = tmp / f"crash-{path.name}"
    dst.write_bytes(path.read_bytes())
    return dst


def _record(rec: Recorder, frames: range) -> None:
    for k in frames:
        rec.write(T0_NS + k, _frame(k))


# --------------------------------------------------------------------------------------------
# the writer: complete blocks, periodically
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_periodic_flush_makes_everything_before_it_readable(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"rec{suffix}"
    rec = Recorder(path, append=False, flush_s=0.1)
    try:
        _record(rec, range(2000))
        syncs = rec.syncs
        _wait(lambda: rec.syncs > syncs, 30, "a periodic flush after the last write")
        crash = _crash_copy(path, tmp_path)
        got = _lines(crash)
        assert [orjson.loads(x)["raw"]["k"] for x in got] == list(range(2000))
        stats = _read(crash)
        assert stats.errors == []
        assert stats.lines == 2000
        assert stats.skipped == {"truncated_tail": 1}  # the next block was opened at once
        assert stats.parser.control["pong"] == 2000
    finally:
        rec.close()
    stats = _read(path)  # closed: complete
    assert stats.errors == []
    assert stats.skipped == {}
    assert stats.lines == 2000


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_kill_between_flushes_loses_only_the_open_block(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"rec{suffix}"
    sink = open_sink(path, append=False)
    sink.write(b"".join(_frame(k) + b"\n" for k in range(1000)))
    sink.sync(reopen=True)
    sink.write(b"".join(_frame(k) + b"\n" for k in range(1000, 1010)))  # still in the compressor
    crash = _crash_copy(path, tmp_path)
    sink.close()
    stats = _read(crash)
    assert stats.errors == []
    assert stats.skipped == {"truncated_tail": 1}
    assert stats.lines == 1000
    assert _read(path).lines == 1010
    tail = check_tail(crash)
    assert tail.torn
    assert tail.error is None


def test_lz4_recording_is_real_lz4_in_several_frames(tmp_path: Path) -> None:
    path = tmp_path / "rec.ndjson.lz4"
    sink = open_sink(path, append=False)
    for block in range(3):
        sink.write(b"".join(_frame(k) + b"\n" for k in range(block * 100, block * 100 + 100)))
        sink.sync(reopen=False)
    sink.close()
    blob = path.read_bytes()
    assert blob.count(b"\x04\x22\x4d\x18") >= 3  # three LZ4 frame magics
    assert lz4.frame.LZ4FrameFile(path).read().count(b"\n") == 300
    assert _read(path).lines == 300


def test_gzip_recording_is_standard_multi_member_gzip(tmp_path: Path) -> None:
    path = tmp_path / "rec.ndjson.gz"
    rec = Recorder(path, append=False)
    _record(rec, range(50))
    rec.flush()
    _record(rec, range(50, 80))
    rec.close()
    body = gzip.decompress(path.read_bytes())
    assert body.count(b"\n") == 80
    assert b'"raw":{"channel":"pong","k":79' in body


# --------------------------------------------------------------------------------------------
# the reader: a crash tail is a warning, damage before it an error
# --------------------------------------------------------------------------------------------


def _three_blocks(path: Path) -> list[int]:
    """A capture of three complete blocks of 1000 lines; returns each block's start offset."""
    starts = []
    sink = open_sink(path, append=False)
    for block in range(3):
        starts.append(path.stat().st_size)
        sink.write(b"".join(_frame(k) + b"\n" for k in range(block * 1000, block * 1000 + 1000)))
        sink.sync(reopen=False)
    sink.close()
    return starts


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("where", ["first", "middle"])
def test_corruption_before_the_last_block_is_an_error(
    tmp_path: Path, suffix: str, where: str
) -> None:
    path = tmp_path / f"rec{suffix}"
    starts = _three_blocks(path)
    blob = bytearray(path.read_bytes())
    block = 0 if where == "first" else 1
    mid = (starts[block] + starts[block + 1]) // 2
    blob[mid] ^= 0x5A
    path.write_bytes(bytes(blob))
    stats = _read(path)
    assert len(stats.errors) == 1, stats.skipped
    assert f"capture {path} is truncated or corrupt" in stats.errors[0]
    assert "truncated_tail" not in stats.skipped
    assert stats.lines <= 1000 * (block + 1)
    tail = check_tail(path)
    assert tail.error is not None


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_replay_cli_exit_codes_tail_versus_corruption(tmp_path: Path, suffix: str) -> None:
    torn = tmp_path / f"torn{suffix}"
    _three_blocks(torn)
    torn.write_bytes(torn.read_bytes()[:-7])
    bad = tmp_path / f"bad{suffix}"
    starts = _three_blocks(bad)
    blob = bytearray(bad.read_bytes())
    blob[(starts[0] + starts[1]) // 2] ^= 0x5A
    bad.write_bytes(bytes(blob))

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tools.replay", str(path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    ok = run(torn)
    # The blocks hold no market data (pong frames), so the replay produces nothing: exit 2 with
    # the counts; the tail is still only a warning, not the corruption error (exit 1).
    assert ok.returncode == 2, ok.stderr
    assert "truncated_tail" in ok.stderr
    assert f"{torn}:" in ok.stderr
    err = run(bad)
    assert err.returncode == 1, err.stderr
    assert f"error: capture {bad} is truncated or corrupt" in err.stderr


@pytest.mark.parametrize("suffix", [".ndjson", ".ndjson.gz"])
@pytest.mark.parametrize("merged", [False, True])
def test_skip_names_the_true_line_beyond_the_first_read_chunk(
    tmp_path: Path, suffix: str, merged: bool, caplog: pytest.LogCaptureFixture
) -> None:
    filler = b'{"channel":"pong"}' + b" " * 400
    lines = [filler] * 1500
    lines[999] = b"{bad json"  # line 1000
    lines[1399] = b"{also bad"  # line 1400
    body = b"\n".join(lines) + b"\n"
    assert body.index(b"{bad json") > CHUNK_BYTES  # beyond the first 256 KiB read
    path = tmp_path / f"big{suffix}"
    path.write_bytes(gzip.compress(body) if suffix.endswith(".gz") else body)
    paths = [path]
    if merged:
        other = tmp_path / "other.ndjson"
        other.write_bytes(b'{"channel":"pong"}\n')
        paths.append(other)
    stats = ReplayStats()
    with caplog.at_level(logging.WARNING):
        read_events(paths, stats)
    assert stats.skipped == {"invalid_json": 2}
    where = [
        m.group(1)
        for r in caplog.records
        if (m := re.search(r"skipped invalid_json at (\S+) ", r.getMessage()))
    ]
    assert where == [f"{path}:1000", f"{path}:1400"]


# --------------------------------------------------------------------------------------------
# appending: never after a torn tail
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [*SUFFIXES, ".ndjson"])
def test_append_to_a_torn_capture_repairs_it_first(
    tmp_path: Path, suffix: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / f"rec{suffix}"
    first = Recorder(path, append=False)
    _record(first, range(300))
    first.flush()
    # A block whose compressed output partly reached the file, then the crash (for a plain file:
    # a partial last line).
    _record(first, range(300, 20_300))
    crash = path.read_bytes()
    if suffix == ".ndjson":
        crash = crash[: crash.rfind(b"\n") + 1] + b'{"time":"2025-09-04T19:4'
    first.close()
    path.write_bytes(crash)
    before = _lines(path)
    assert 300 <= len(before) <= 20_300
    assert check_tail(path).torn

    with caplog.at_level(logging.WARNING, logger="connectors.recording"):
        second = Recorder(path)  # append (a restarted live run)
    assert second.path == path
    assert any(str(path) in r.getMessage() for r in caplog.records)
    _record(second, range(50_000, 50_010))
    second.close()

    stats = _read(path)
    assert stats.errors == []
    assert stats.skipped == {}  # readable to the end: nothing after a torn block
    assert stats.lines == len(before) + 10
    assert _lines(path)[: len(before)] == before
    assert not check_tail(path).torn


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_append_to_a_corrupt_capture_starts_a_numbered_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"rec{suffix}"
    starts = _three_blocks(path)
    blob = bytearray(path.read_bytes())
    blob[(starts[0] + starts[1]) // 2] ^= 0x5A
    path.write_bytes(bytes(blob))
    rec = Recorder(path)
    _record(rec, range(5))
    rec.close()
    assert path.read_bytes() == bytes(blob)  # left as it was
    assert rec.path == numbered(path, 1) == tmp_path / f"rec.ndjson.1{path.suffix}"
    assert _read(rec.path).lines == 5
    again = Recorder(path)  # the next restart appends to NAME.1 (still good)
    again.close()
    assert again.path == rec.path


def test_lz4_name_holding_plain_text_is_not_appended_to(tmp_path: Path) -> None:
    # What `--record x.lz4` wrote before it wrote real LZ4.
    path = tmp_path / "old.ndjson.lz4"
    path.write_bytes(b'{"channel":"pong"}\n')
    rec = Recorder(path)
    rec.close()
    assert rec.path == tmp_path / "old.ndjson.1.lz4"
    assert path.read_bytes() == b'{"channel":"pong"}\n'


def test_append_to_a_complete_capture_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "rec.ndjson.gz"
    for run in range(3):
        rec = Recorder(path)
        _record(rec, range(run * 10, run * 10 + 10))
        rec.close()
    stats = _read(path)
    assert (stats.lines, stats.errors, stats.skipped) == (30, [], {})


def test_flush_period_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flush_s must be > 0"):
        Recorder(tmp_path / "x.ndjson.gz", flush_s=0)


# --------------------------------------------------------------------------------------------
# tools.recorder: --force, and SIGKILL while recording from the local exchange
# --------------------------------------------------------------------------------------------


@pytest.fixture
def exchange() -> Iterator[FakeExchange]:
    from tools.fake_exchange import SimFeed

    feed = SimFeed(SimConfig(coins=("BTC", "ETH"), seconds=120, seed=5))
    with FakeExchange(feed) as ex:
        yield ex


def _recorder_cmd(ex: FakeExchange, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tools.recorder",
        "--coins",
        "BTC,ETH",
        "--out",
        str(out),
        "--ws-url",
        ex.ws_url,
        "--info-url",
        ex.info_url,
        *extra,
    ]


def test_recorder_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "keep.ndjson.gz"
    out.write_bytes(b"precious")
    cmd = [sys.executable, "-m", "tools.recorder", "--coins", "BTC", "--out", str(out)]
    # No exchange at this URL: the refusal comes before any connection.
    cmd += ["--info-url", "http://127.0.0.1:9/info", "--ws-url", "ws://127.0.0.1:9/ws"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {out} already exists; pass --force to overwrite it"
    ]
    assert out.read_bytes() == b"precious"


def test_recorder_bad_flush_period_is_one_line_error(tmp_path: Path) -> None:
    out = tmp_path / "x.ndjson.gz"
    cmd = [sys.executable, "-m", "tools.recorder", "--coins", "BTC", "--out", str(out)]
    proc = subprocess.run(
        [*cmd, "--flush-s", "0"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --flush-s=0.0 is out of range; allowed: seconds in (0, 3600]"
    ]
    env = {**os.environ, "HLSL_RECORD_FLUSH_S": "soon"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2
    assert "HLSL_RECORD_FLUSH_S='soon' is not a number" in proc.stderr
    assert not out.exists()


def test_recorder_force_overwrites(exchange: FakeExchange, tmp_path: Path) -> None:
    out = tmp_path / "rec.ndjson.gz"
    out.write_bytes(b"old junk, not even gzip")
    proc = subprocess.run(
        [*_recorder_cmd(exchange, out, "--force", "--seconds", "2", "--quiet")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "recorded" in proc.stderr
    stats = _read(out)
    assert stats.errors == []
    assert stats.skipped == {}
    assert stats.lines > 0


class _Progress:
    """Reads the recorder's progress line (``\\r  t s  N frames ...``) from its stderr."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.reports: list[tuple[float, int]] = []  # (when seen, frames written by then)
        self.text = bytearray()
        assert proc.stderr is not None
        self._fh = proc.stderr
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """After the process ended: read to EOF, then close the pipe."""
        self._thread.join(timeout=30)
        self._fh.close()

    def _run(self) -> None:
        while chunk := self._fh.read1(4096):  # type: ignore[attr-defined]
            self.text += chunk
            for m in re.finditer(rb"\r\s*[\d.]+ s\s+([\d,]+) frames", bytes(chunk)):
                self.reports.append((time.monotonic(), int(m.group(1).replace(b",", b""))))


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_sigkilled_recording_replays_up_to_its_last_flush(
    exchange: FakeExchange, tmp_path: Path, suffix: str
) -> None:
    flush_s, slack_s = 0.5, 2.5
    out = tmp_path / f"rec{suffix}"
    proc = subprocess.Popen(
        _recorder_cmd(exchange, out, "--flush-s", str(flush_s)),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    progress = _Progress(proc)
    try:
        # A report of at least 200 frames written, seen long enough ago that a flush has
        # certainly come since (the flush period plus generous slack for a busy machine).
        _wait(
            lambda: any(n >= 200 for _, n in progress.reports) or proc.poll() is not None,
            45,
            "the recorder to write 200 frames",
        )
        assert proc.poll() is None, bytes(progress.text).decode(errors="replace")
        seen_at, written = next((t, n) for t, n in progress.reports if n >= 200)
        _wait(lambda: time.monotonic() >= seen_at + flush_s + slack_s, 30, "the slack")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        progress.close()
    assert proc.returncode == -signal.SIGKILL

    stats = _read(out)
    assert stats.errors == []
    assert stats.skipped == {"truncated_tail": 1}
    # Everything written a flush period (and slack) before the kill is there; nothing invented
    # (the recording also holds the source's own markers: coin activation, gaps).
    markers = stats.parser.control["hlsl.activate"] + stats.parser.control["hlsl.gap"]
    assert written <= stats.lines <= sum(exchange.stats.frames_sent.values()) + markers
    assert stats.parser.control["subscriptionResponse"] == 11

    replay = subprocess.run(
        [sys.executable, "-m", "tools.replay", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    assert "truncated_tail" in replay.stderr
    summary = orjson.loads(replay.stderr[replay.stderr.index("{") : replay.stderr.rindex("}") + 1])
    assert summary["lines_skipped"].get("truncated_tail") == 1
    assert summary["errors"] == []

    # Restarting on the same file appends after the repaired tail: readable to the end.
    rec = Recorder(out)
    rec.write(T0_NS, _frame(0))
    rec.close()
    after = _read(out)
    assert (after.errors, after.skipped) == ([], {})
    assert after.lines >= stats.lines + 1


def test_decompressed_crash_copy_is_valid_zlib_prefix(tmp_path: Path) -> None:
    # The file up to the last flush is a complete gzip stream: zlib reads it without error.
    path = tmp_path / "rec.ndjson.gz"
    sink = open_sink(path, append=False)
    sink.write(b"".join(_frame(k) + b"\n" for k in range(100)))
    sink.sync(reopen=True)
    good_end = check_tail(path).good_end
    body = path.read_bytes()[:good_end]
    d = zlib.decompressobj(zlib.MAX_WBITS | 16)
    assert d.decompress(body).count(b"\n") == 100
    assert d.eof
    assert not d.unused_data
    sink.close()
