"""The replay flow end to end: byte-identical output, honest counters, damaged input.

``python -m tools.replay`` runs as a subprocess where process-level differences matter (hash seed,
``HLSL_BATCH_SIZE``), in-process (`tools.replay.main`) elsewhere.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

import tools.replay
from connectors.parse import decode_line, peek_time_ms
from connectors.store import RunState
from flows.pipeline import build_pipeline, run_pipeline
from flows.settings import Settings
from tests.conftest import LIVE_CAPTURE, REPO, SAMPLE, real_file

TIMEOUT_S = 60


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HLSL_")}
    env.update(extra)
    return env


def parse_summary(stderr: str) -> dict[str, Any]:
    """The JSON summary tools.replay prints to stderr (among log and error lines)."""
    lines = stderr.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.rstrip("\n") == "{":
            text = "".join(lines[i:])
            obj, _ = json.JSONDecoder().raw_decode(text)
            assert isinstance(obj, dict)
            return obj
    pytest.fail(f"no JSON summary on stderr:\n{stderr}")


def _head_lines(path: Path, n: int) -> list[bytes]:
    with gzip.open(path, "rb") as fh:
        out = []
        for line in fh:
            out.append(line)
            if len(out) == n:
                break
    assert len(out) == n
    return out


@pytest.fixture
def no_gc_tuning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep `tools.replay.main` from freezing the test process's GC (speed only, not output)."""
    monkeypatch.setattr(tools.replay, "tune_gc", lambda: None)


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = tools.replay.main(argv)
    return rc, capsys.readouterr().err


# -- determinism ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replay_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, bytes, str]]:
    """Three subprocess replays of the real capture, run in parallel.

    ``a`` and ``b`` differ only in the hash seed; ``c`` in the batch size (7 vs 1000).
    """
    capture = real_file(LIVE_CAPTURE)
    tmp = tmp_path_factory.mktemp("determinism")
    variants = {
        "a": _env(PYTHONHASHSEED="1", HLSL_BATCH_SIZE="1000"),
        "b": _env(PYTHONHASHSEED="2", HLSL_BATCH_SIZE="1000"),
        "c": _env(PYTHONHASHSEED="3", HLSL_BATCH_SIZE="7"),
    }
    procs = {}
    for name, env in variants.items():
        out = tmp / f"{name}.ndjson"
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "tools.replay", str(capture), "--out", str(out)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    try:
        for name, proc in procs.items():
            _, err = proc.communicate(timeout=TIMEOUT_S)
            out = tmp / f"{name}.ndjson"
            results[name] = (proc.returncode, out.read_bytes() if out.exists() else b"", err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return results


def test_replay_is_byte_identical_across_runs(
    replay_runs: dict[str, tuple[int, bytes, str]],
) -> None:
    rc_a, out_a, err_a = replay_runs["a"]
    rc_b, out_b, err_b = replay_runs["b"]
    assert rc_a == 0, err_a
    assert rc_b == 0, err_b
    assert out_a, "no envelopes written"
    assert out_a == out_b, "two replays of the same capture differ"


def test_replay_is_byte_identical_across_batch_sizes(
    replay_runs: dict[str, tuple[int, bytes, str]],
) -> None:
    rc_a, out_a, _ = replay_runs["a"]
    rc_c, out_c, err_c = replay_runs["c"]
    assert rc_a == 0
    assert rc_c == 0, err_c
    assert out_c == out_a, "HLSL_BATCH_SIZE=7 and =1000 give different envelopes"


def test_replay_output_is_ordered_ndjson(replay_runs: dict[str, tuple[int, bytes, str]]) -> None:
    _, out, err = replay_runs["a"]
    lines = out.split(b"\n")
    assert lines[-1] == b"", "the file must end with a newline"
    envs = [orjson.loads(line) for line in lines[:-1]]
    keys = [(e["timestamp_ms"], e["coin"]) for e in envs]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys), "one envelope per coin and bar"
    assert {e["coin"] for e in envs} == {"BTC", "ETH", "SOL"}
    assert parse_summary(err)["signals"] == len(envs)


def test_replay_summary(replay_runs: dict[str, tuple[int, bytes, str]]) -> None:
    _, out, err = replay_runs["a"]
    s = parse_summary(err)
    assert s["frames_by_channel"] == {"trades": 6580, "bbo": 13896, "l2Book": 3785}
    assert s["frames"] == 6580 + 13896 + 3785
    assert s["lines_read"] == 24261
    assert s["lines_skipped"] == {}
    assert s["errors"] == []
    assert s["late_events"] == 0
    assert s["duplicate_trades"] >= 0
    assert s["signals"] == out.count(b"\n") > 0
    assert isinstance(s["frames_per_s"], int)
    assert s["frames_per_s"] > 0
    assert s["elapsed_s"] > 0
    assert len(s["files"]) == 1
    assert s["files"][0].endswith(Path(LIVE_CAPTURE).name)
    assert "Traceback" not in err


# -- damaged input -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def head_frames() -> list[bytes]:
    """The first 600 lines (all data frames) of the real capture."""
    return _head_lines(real_file(LIVE_CAPTURE), 600)


def test_truncated_gzip_is_a_tail_warning_and_keeps_the_good_part(
    head_frames: list[bytes],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_gc_tuning: None,
) -> None:
    data = b"".join(head_frames)
    packed = gzip.compress(data)
    truncated = tmp_path / "cut.ndjson.gz"
    truncated.write_bytes(packed[: len(packed) * 2 // 3])

    # the good part: every complete line that can still be decompressed
    recoverable = zlib.decompressobj(wbits=31).decompress(truncated.read_bytes())
    good_lines = recoverable.count(b"\n")
    assert 100 < good_lines < len(head_frames)
    good = tmp_path / "good.ndjson"
    good.write_bytes(recoverable[: recoverable.rindex(b"\n") + 1])

    out_good = tmp_path / "good.out.ndjson"
    rc, err = run_main([str(good), "--out", str(out_good)], capsys)
    assert rc == 0, err
    expected = out_good.read_bytes()
    assert expected, "the good part alone yields envelopes"

    out = tmp_path / "cut.out.ndjson"
    rc, err = run_main([str(truncated), "--out", str(out)], capsys)
    # A capture cut inside its last gzip member is what a crashed recorder leaves: a
    # truncated_tail warning (exit 0), not an error (corruption before the end stays exit 1).
    assert rc == 0, err
    s = parse_summary(err)
    assert s["errors"] == [], s
    assert s["lines_skipped"] == {"truncated_tail": 1}, s
    assert "Traceback" not in err
    # every good line before the damage is still replayed and written
    assert out.exists()
    written = out.read_bytes()
    assert written.count(b"\n") > 0, f"no envelope of the good part was written: {s}"
    assert s["lines_read"] >= good_lines, s
    assert written == expected


def test_malformed_line_and_unknown_channel_are_counted_and_skipped(
    head_frames: list[bytes],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_gc_tuning: None,
) -> None:
    clean = tmp_path / "clean.ndjson"
    clean.write_bytes(b"".join(head_frames))
    dirty = tmp_path / "dirty.ndjson"
    bad = [
        b'{"channel": "trades", "data": [\n',
        b'{"channel": "fancyNewFeed", "data": {"coin": "BTC"}}\n',
    ]
    dirty.write_bytes(b"".join([*head_frames[:300], *bad, *head_frames[300:]]))

    rc, err = run_main([str(clean), "--out", str(tmp_path / "clean.out")], capsys)
    assert rc == 0, err
    expected = (tmp_path / "clean.out").read_bytes()

    rc, err = run_main([str(dirty), "--out", str(tmp_path / "dirty.out")], capsys)
    assert rc == 0, err
    s = parse_summary(err)
    assert s["lines_skipped"] == {"invalid_json": 1, "unknown_channel": 1}
    assert s["lines_read"] == len(head_frames) + 2
    assert s["frames"] == len(head_frames)
    assert s["errors"] == []
    written = (tmp_path / "dirty.out").read_bytes()
    # the flow went on past the bad lines: same envelopes as without them
    assert written == expected
    last = orjson.loads(written.splitlines()[-1])
    bad_ms = peek_time_ms(decode_line(head_frames[300])[1])
    assert bad_ms is not None
    assert last["timestamp_ms"] > bad_ms


def test_captures_days_apart_replay_in_turn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_gc_tuning: None
) -> None:
    """Two captures 8 days apart (a directory of recordings): the later one's frames are within
    their own receive times, so none is skipped (they were all `future_time`, "after the newest
    accepted", and the replay still exited 0)."""
    from tools.simulate import SimConfig, write_capture

    day_ms = 86_400_000
    start = SimConfig().start_ms
    for i, offset in enumerate((0, 8 * day_ms)):
        cfg = SimConfig(coins=("BTC",), seconds=60, seed=3 + i, start_ms=start + offset)
        write_capture(cfg, tmp_path / f"part{i}.ndjson")
    rc, err = run_main([str(tmp_path), "--out", str(tmp_path / "out.ndjson")], capsys)
    assert rc == 0, err
    s = parse_summary(err)
    assert s["lines_skipped"] == {}, s
    stamps = [
        orjson.loads(x)["timestamp_ms"] for x in (tmp_path / "out.ndjson").read_bytes().splitlines()
    ]
    later = [t for t in stamps if t >= start + 8 * day_ms]
    assert len(later) >= 50, (len(stamps), len(later))  # the second minute has its own bars


def test_bad_lines_in_the_flow_reach_the_store_counters(
    head_frames: list[bytes], tmp_path: Path
) -> None:
    dirty = tmp_path / "dirty.ndjson"
    dirty.write_bytes(
        b"".join(
            [
                *head_frames[:200],
                b"not json at all\n",
                b"\n",
                b'{"channel": "fancyNewFeed", "data": {}}\n',
                b'{"channel": "bbo", "data": {"coin": "BTC"}}\n',
                *head_frames[200:],
            ]
        )
    )
    p = build_pipeline(Settings(replay=[str(dirty)], api=False), collect=True)
    run_pipeline(p)
    assert p.store.state is RunState.FINISHED
    assert p.store.error is None
    info = p.store.source_info()
    assert info["lines_skipped"] == {"invalid_json": 1, "unknown_channel": 1, "bad_bbo": 1}
    assert info["finished"] is True
    assert sum(info["frames_by_channel"].values()) == len(head_frames)
    assert p.collected
    assert set(p.store.coins()) == {coin for coin, _ in p.collected} == {"BTC", "ETH", "SOL"}


def test_calibration_setting_names_the_table_or_turns_it_off(tmp_path: Path) -> None:
    """HLSL_CALIBRATION / --calibration: 'none' runs uncalibrated (never actionable); a missing
    file is a start-up error, not a silently uncalibrated service."""
    from flows.pipeline import build_pipeline, run_pipeline
    from flows.settings import Settings

    p = build_pipeline(Settings(replay=[str(SAMPLE)], api=False, calibration="none"), collect=True)
    run_pipeline(p)
    edges = [env["edge"] for _, env in p.collected or []]
    assert edges
    assert {e["calibration"] for e in edges} == {"uncalibrated"}
    assert not any(e["actionable"] for e in edges)
    with pytest.raises(ValueError, match=r"calibration\n.*cannot read the table"):
        Settings(replay=[str(SAMPLE)], api=False, calibration=str(tmp_path / "nope.json"))


@pytest.mark.parametrize("content", [None, b"{}", b"not json"])
def test_a_bad_calibration_setting_is_one_line_naming_it(
    tmp_path: Path, content: bytes | None
) -> None:
    """HLSL_CALIBRATION was read when operators.edge was imported: a missing or malformed table
    was a traceback from every program. Now it is the settings' one-line error, exit 2."""
    table = tmp_path / "table.json"
    if content is not None:
        table.write_bytes(content)
    env = {**os.environ, "HLSL_CALIBRATION": str(table)}
    cmd = [sys.executable, "-m", "tools.replay", str(SAMPLE), "--out", str(tmp_path / "o")]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"cannot start: HLSL_CALIBRATION = {table}: "), lines[0]
    why = "cannot read the table" if content is None else "not a calibration table"
    assert why in lines[0], lines[0]


def test_the_flow_writes_parquet_history_beside_the_store(tmp_path: Path) -> None:
    """``--parquet`` on the server's flow: every envelope the store got is in the Parquet
    history (the replay tool's own writer is tested in tests/connectors/test_parquet.py)."""
    from connectors.parquet import dataset, unflatten

    out = tmp_path / "history"
    p = build_pipeline(Settings(replay=[str(SAMPLE)], api=False, parquet=str(out)), collect=True)
    run_pipeline(p)
    assert p.store.state is RunState.FINISHED, p.store.error
    assert p.history is not None
    rows = dataset(out).to_table().to_pylist()
    assert len(rows) == p.store.signals_emitted > 0
    got = sorted(orjson.dumps(unflatten(r)) for r in rows)
    want = sorted(orjson.dumps(env) for _coin, env in p.collected or [])
    assert got == want
    assert not list(out.rglob("*.tmp"))
