"""The Parquet history (issue #13): columns, layout, atomic files, failures, and read-back.

A replay of the shipped sample written with ``tools.replay --out --parquet`` must read back from
the Parquet files — with pyarrow, DuckDB and pandas, as they are — equal to the NDJSON envelopes,
row for row and value for value. The column names and types come from `connectors.fields`; the
replay's envelopes and the committed JSON Schema are checked against them, so neither can drift
from the other silently. Nothing here waits on a fixed sleep: timed flushes run on a fake clock,
and the one real timer is waited on with a generous bound.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bytewax.operators as op
import duckdb
import orjson
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

import connectors.parquet as parquet_mod
from connectors.fields import (
    BOOL,
    COLUMNS,
    ENVELOPE_FIELDS,
    FEATURE_NAMES,
    FLOAT,
    INT,
    NULLABLE_BLOCKS,
    SPARSE_MAPS,
    STREAM_NAMES,
    STRING,
    STRINGS,
)
from connectors.parquet import (
    FILE_COLUMNS,
    FILE_SCHEMA,
    FieldError,
    ParquetSink,
    ParquetWriter,
    dataset,
    flatten,
    new_run_id,
    partition_dir,
    unflatten,
)
from flows.history import parquet_sink
from flows.settings import Settings, SettingsError
from flows.startup import StartupError
from operators import features as operator_features
from tests.conftest import REPO, SAMPLE
from tools.replay import main as replay_main
from tools.replay import replay

Env = dict[str, Any]
GOLDEN_ENVELOPES = REPO / "tests" / "golden" / "sample_envelopes.json"
SCHEMA = REPO / "api" / "signal_envelope.schema.json"
PART_NAME = re.compile(r"part-(?P<run>[A-Za-z0-9_]+)-(?P<worker>\d+)-(?P<n>\d{6})\.parquet")
WAIT_S = 30.0
"""Generous bound for the one test that waits on a real timer."""


# -- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[bytes], Path]:
    """``tools.replay SAMPLE --out F --parquet DIR``: the NDJSON lines and the Parquet dir."""
    tmp = tmp_path_factory.mktemp("replay")
    out, root = tmp / "signals.ndjson", tmp / "history"
    rc = replay_main(
        [str(SAMPLE), "--out", str(out), "--parquet", str(root), "--log-level", "ERROR"]
    )
    assert rc == 0
    return out.read_bytes().splitlines(), root


@pytest.fixture(scope="module")
def envelopes() -> list[Env]:
    """The sample's envelopes as the flow builds them (Python values, before any encoding)."""
    _, envs, _ = replay(Settings(replay=[str(SAMPLE)], api=False))
    assert envs
    return envs


def golden() -> list[Env]:
    kept: dict[str, Env] = orjson.loads(GOLDEN_ENVELOPES.read_bytes())
    return [kept[k] for k in sorted(kept, key=int)]


def make_env(i: int, coin: str = "BTC", timestamp_ms: int = 1_767_225_600_000) -> Env:
    """A real envelope from the golden record, as the ``i``-th bar of ``coin``."""
    env = copy.deepcopy(golden()[i % 4])
    env["coin"] = coin
    env["timestamp_ms"] = timestamp_ms + 1000 * i
    return env


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def parquet_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".parquet")]


def read_rows(root: Path) -> list[Env]:
    """Every row through `connectors.parquet.dataset`, in (timestamp_ms, coin) order."""
    rows: list[Env] = dataset(root).to_table().to_pylist()
    return sorted(rows, key=lambda r: (r["timestamp_ms"], r["coin"]))


def duckdb_rows(root: Path) -> list[Env]:
    con = duckdb.connect()
    try:
        cur = con.execute(
            f"SELECT * FROM read_parquet('{root}/**/*.parquet', hive_partitioning=true) "
            "ORDER BY timestamp_ms, coin"
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def non_null(row: Env, drop: tuple[str, ...] = ()) -> Env:
    return {k: v for k, v in row.items() if v is not None and k not in drop}


def utc_date(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).strftime("%Y-%m-%d")


# -- the columns: defined once, checked against the envelopes and the schema ---------------------


def test_the_feature_names_are_the_operators_ones() -> None:
    assert FEATURE_NAMES == operator_features.FEATURE_NAMES
    assert list(ENVELOPE_FIELDS["features"]) == list(FEATURE_NAMES)


def _leaves(obj: Env, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in obj.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}_")
        else:
            yield prefix + key, value


PY_TYPES: dict[str, type] = {STRING: str, INT: int, FLOAT: float, BOOL: bool, STRINGS: list}


def test_every_key_of_every_replayed_envelope_is_a_known_column_of_its_type(
    envelopes: list[Env],
) -> None:
    """Independent of `flatten`: walk each envelope the flow built and look every leaf up."""
    order = {c: i for i, c in enumerate(COLUMNS)}
    sparse = tuple(m + "_" for m in SPARSE_MAPS)  # keys sorted, not in declared order
    seen: set[str] = set()
    for env in envelopes:
        assert list(env) == list(ENVELOPE_FIELDS), "top-level fields or their order changed"
        positions = []
        for name, value in _leaves(env):
            if value is None and name in NULLABLE_BLOCKS:
                continue
            assert name in COLUMNS, f"{name} is not a column in connectors/fields.py"
            kind = COLUMNS[name]
            if value is not None:
                assert type(value) is PY_TYPES[kind], f"{name} = {value!r} is not {kind}"
                if kind == STRINGS:
                    assert all(type(x) is str for x in value), name
                seen.add(name)
            if not name.startswith(sparse):
                positions.append(order[name])
        assert positions == sorted(positions), "fields out of the declared order"
        assert flatten(env) == {k: v for k, v in _leaves(env) if v is not None}
    assert {"forecast_vol_bps", "edge_explain", "freshness_streams_l2Book_status"} <= seen


def _schema_columns(schema: Env) -> dict[str, str]:
    defs = schema["$defs"]

    def resolve(node: Env) -> Env:
        while "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        alternatives = [a for a in node.get("anyOf", []) if a.get("type") != "null"]
        return resolve(alternatives[0]) if alternatives else node

    kinds = {"string": STRING, "integer": INT, "number": FLOAT, "boolean": BOOL}
    out: dict[str, str] = {}

    def walk(node: Env, prefix: str) -> None:
        node = resolve(node)
        if "properties" in node:
            for key, sub in node["properties"].items():
                walk(sub, prefix + key + "_")
        elif node.get("type") == "object":  # a map: its keys are named by the schema or features
            names = resolve(node["propertyNames"])["enum"] if "propertyNames" in node else None
            for key in names or FEATURE_NAMES:
                walk(node["additionalProperties"], prefix + key + "_")
        elif node.get("type") == "array":
            assert resolve(node["items"]).get("type") == "string", prefix
            out[prefix[:-1]] = STRINGS
        else:
            out[prefix[:-1]] = kinds[node.get("type", "string")]

    walk(schema, "")
    return out


def test_the_columns_are_the_committed_json_schema() -> None:
    """Every field of the API's schema, the ones the sample never fills included (``degraded``,
    ``edge.p_right``...), is a column of the same type, and nothing else is."""
    from_schema = _schema_columns(json.loads(SCHEMA.read_text(encoding="utf-8")))
    assert from_schema == COLUMNS
    freshness = ENVELOPE_FIELDS["freshness"]
    assert isinstance(freshness, dict)
    assert list(freshness["streams"]) == list(STREAM_NAMES)


def test_flatten_refuses_a_wrong_type_and_reports_an_unknown_field() -> None:
    env = make_env(0)
    env["features"]["mid_px"] = "1.0"
    with pytest.raises(FieldError, match="features_mid_px"):
        flatten(env)
    env = make_env(0)
    env["regime"]["new_field"] = 1
    with pytest.raises(FieldError, match="regime_new_field: not a known envelope field"):
        flatten(env)
    unknown: list[str] = []
    assert "regime_label" in flatten(env, unknown)
    assert unknown == ["regime_new_field"]


# -- a replay's Parquet reads back equal to its NDJSON -------------------------------------------


def test_replay_parquet_reads_back_byte_equal_with_pyarrow(
    replayed: tuple[list[bytes], Path],
) -> None:
    lines, root = replayed
    rows = read_rows(root)
    assert len(rows) == len(lines) > 1000
    for line, row in zip(lines, rows, strict=True):
        assert row["date"] == utc_date(row["timestamp_ms"])
        assert orjson.dumps(unflatten(row)) == line  # every field, value and key order
    # plain hive discovery, no schema given, reads the same rows
    plain = ds.dataset(str(root), format="parquet", partitioning="hive").to_table()
    assert plain.num_rows == len(lines)
    assert set(plain.column_names) == set(FILE_COLUMNS) | {"date", "coin"}


def test_replay_parquet_reads_back_equal_with_duckdb(replayed: tuple[list[bytes], Path]) -> None:
    lines, root = replayed
    rows = duckdb_rows(root)
    assert len(rows) == len(lines)
    for line, row in zip(lines, rows, strict=True):
        env = orjson.loads(line)
        assert str(row["date"]) == utc_date(env["timestamp_ms"])
        assert non_null(row, ("date",)) == flatten(env)


def test_replay_parquet_reads_with_pandas(replayed: tuple[list[bytes], Path]) -> None:
    lines, root = replayed
    frame = pd.read_parquet(root).sort_values(["timestamp_ms", "coin"], kind="stable")
    envs = [orjson.loads(line) for line in lines]
    assert len(frame) == len(envs)
    assert set(frame.columns) == set(FILE_COLUMNS) | {"date", "coin"}
    assert frame["timestamp_ms"].tolist() == [e["timestamp_ms"] for e in envs]
    assert frame["coin"].astype(str).tolist() == [e["coin"] for e in envs]
    mids = [e["features"]["mid_px"] for e in envs]
    assert [None if pd.isna(v) else v for v in frame["features_mid_px"]] == mids
    assert [list(v) for v in frame["edge_explain"]] == [e["edge"]["explain"] for e in envs]


def test_replay_layout(replayed: tuple[list[bytes], Path]) -> None:
    _, root = replayed
    files = parquet_files(root)
    assert files
    assert leftovers(root) == []  # no temporary file left behind
    runs = set()
    for f in files:
        rel = f.relative_to(root).parts
        assert len(rel) == 3, rel
        assert re.fullmatch(r"date=\d{4}-\d{2}-\d{2}", rel[0]), rel
        assert rel[1] in {"coin=BTC", "coin=ETH", "coin=SOL"}, rel
        m = PART_NAME.fullmatch(rel[2])
        assert m is not None, rel
        assert m["worker"] == "0"
        runs.add(m["run"])
        schema = pq.read_schema(f)
        assert "coin" not in schema.names
        assert "date" not in schema.names
        assert schema.remove_metadata().equals(FILE_SCHEMA)
    assert len(runs) == 1  # one run id per replay


def test_each_replay_has_its_own_run_id(tmp_path: Path) -> None:
    ids = {new_run_id() for _ in range(50)}
    assert len(ids) == 50
    for run_id in ids:
        assert re.fullmatch(r"\d{8}T\d{9}Z[0-9a-f]{6}", run_id), run_id
    before = new_run_id()
    later = new_run_id()
    assert before[:18] <= later[:18]  # time-sortable
    with pytest.raises(ValueError, match="run id"):
        ParquetWriter(tmp_path, "has-a-dash")


# -- partitions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coin", "directory"),
    [("@107", "coin=%40107"), ("A/B", "coin=A%2FB"), ("kPEPE", "coin=kPEPE"), ("x:y z", None)],
)
def test_coins_are_percent_encoded_and_read_back_decoded(
    tmp_path: Path, coin: str, directory: str | None
) -> None:
    envs = [make_env(i, coin) for i in range(3)] + [make_env(0, "BTC")]
    w = ParquetWriter(tmp_path, "run1")
    for env in envs:
        assert w.write(env)
    w.close()
    dirs = {p.parent.name for p in parquet_files(tmp_path)}
    if directory is not None:
        assert directory in dirs
    assert all(p.parent.parent.parent == tmp_path for p in parquet_files(tmp_path))
    assert {r["coin"] for r in read_rows(tmp_path)} == {coin, "BTC"}
    assert {r["coin"] for r in duckdb_rows(tmp_path)} == {coin, "BTC"}
    got = [unflatten(r) for r in read_rows(tmp_path) if r["coin"] == coin]
    assert got == envs[:3]


def test_rows_go_to_the_utc_date_of_their_timestamp(tmp_path: Path) -> None:
    midnight = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    w = ParquetWriter(tmp_path, "run1")
    w.write(make_env(0, timestamp_ms=midnight - 1000))
    w.write(make_env(0, timestamp_ms=midnight))
    w.close()
    dates = sorted(p.parent.parent.name for p in parquet_files(tmp_path))
    assert dates == ["date=2025-12-31", "date=2026-01-01"]
    assert partition_dir(tmp_path, midnight, "@1") == tmp_path / "date=2026-01-01" / "coin=%401"


# -- flushing -----------------------------------------------------------------------------------


def test_flush_by_rows(tmp_path: Path) -> None:
    clock = FakeClock()
    w = ParquetWriter(tmp_path, "run1", flush_rows=3, flush_s=60.0, clock=clock)
    for i in range(7):
        w.write(make_env(i))
        assert len(parquet_files(tmp_path)) == (i + 1) // 3
    assert w.stats()["rows_buffered"] == 1
    w.close()
    sizes = [pq.read_metadata(f).num_rows for f in parquet_files(tmp_path)]
    assert sizes == [3, 3, 1]
    assert w.stats() | {"last_error": None} == {
        "rows_written": 7,
        "files_written": 3,
        "write_failures": 0,
        "rows_dropped": 0,
        "rows_rejected": 0,
        "unknown_fields": 0,
        "rows_buffered": 0,
        "last_error": None,
    }
    assert [unflatten(r) for r in read_rows(tmp_path)] == [make_env(i) for i in range(7)]


def test_flush_by_time_per_partition(tmp_path: Path) -> None:
    clock = FakeClock()
    w = ParquetWriter(tmp_path, "run1", flush_rows=1000, flush_s=10.0, clock=clock)
    w.write(make_env(0, "BTC"))
    clock.t += 6
    w.write(make_env(0, "ETH"))
    w.flush_due()
    assert parquet_files(tmp_path) == []
    clock.t += 4.5  # BTC's row is 10.5 s old, ETH's 4.5 s
    w.write(make_env(1, "ETH"))  # a write checks what is due, too
    assert [p.parent.name for p in parquet_files(tmp_path)] == ["coin=BTC"]
    clock.t += 6
    w.flush_due()
    assert sorted(p.parent.name for p in parquet_files(tmp_path)) == ["coin=BTC", "coin=ETH"]
    assert w.stats()["rows_written"] == 3
    w.close()


def test_the_sink_writes_a_quiet_partition_on_time(tmp_path: Path) -> None:
    """No further rows arrive: the sink's own timer writes the partition."""
    part = ParquetSink(tmp_path, "run1", flush_s=0.2).build("parquet", 0, 1)
    part.write_batch([("BTC", make_env(0))])
    deadline = time.monotonic() + WAIT_S
    while not parquet_files(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert len(parquet_files(tmp_path)) == 1
    finally:
        part.close()


def test_the_sink_names_files_by_worker(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path, "run7", flush_s=float("inf"))
    for worker in (3, 1):
        part = sink.build("parquet", worker, 4)
        part.write_batch([("BTC", make_env(worker))])
        part.close()
    names = sorted(p.name for p in parquet_files(tmp_path))
    assert names == ["part-run7-1-000000.parquet", "part-run7-3-000000.parquet"]
    assert sink.stats()["rows_written"] == 2


# -- atomic files -------------------------------------------------------------------------------


def test_a_file_appears_whole_by_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the moment of the rename the temporary file is complete, hidden from readers (pyarrow
    discovery, DuckDB's glob) and the final name does not exist yet."""
    real_replace = os.replace
    seen: list[tuple[str, int, int, int]] = []

    def replace(src_name: str | os.PathLike[str], dst_name: str | os.PathLike[str]) -> None:
        src, dst = Path(src_name), Path(dst_name)
        assert not dst.exists()
        assert src.parent == dst.parent
        assert src.name.startswith(".")
        whole = pq.read_metadata(src).num_rows
        visible = dataset(tmp_path).count_rows()
        in_duckdb = len(duckdb_rows(tmp_path)) if parquet_files(tmp_path) else 0
        seen.append((src.name, whole, visible, in_duckdb))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    w = ParquetWriter(tmp_path, "run1", flush_rows=4)
    for i in range(10):
        w.write(make_env(i))
    w.close()
    assert seen == [
        (".part-run1-0-000000.parquet.tmp", 4, 0, 0),
        (".part-run1-0-000001.parquet.tmp", 4, 4, 4),
        (".part-run1-0-000002.parquet.tmp", 2, 8, 8),
    ]
    assert leftovers(tmp_path) == []


def test_a_reader_during_writing_never_sees_a_partial_file(tmp_path: Path) -> None:
    w = ParquetWriter(tmp_path, "run1", flush_rows=4)
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for i in range(120):
                w.write(make_env(i, coin=("BTC", "ETH")[i % 2]))
            w.close()
        except BaseException as ex:  # reported by the main thread
            errors.append(ex)
        finally:
            done.set()

    thread = threading.Thread(target=write)
    thread.start()
    reads = 0
    while not done.is_set() or reads == 0:
        for f in parquet_files(tmp_path):
            assert pq.read_table(f).num_rows == 4  # never a partial file
            reads += 1
    thread.join(WAIT_S)
    assert not errors
    assert len(parquet_files(tmp_path)) == 30
    assert leftovers(tmp_path) == []


# -- failures -----------------------------------------------------------------------------------


def test_a_failed_write_is_counted_kept_and_retried(tmp_path: Path) -> None:
    """A real failure: a file where the partition's directory must go."""
    clock = FakeClock()
    w = ParquetWriter(tmp_path, "run1", flush_rows=2, flush_s=60.0, retry_s=5.0, clock=clock)
    blocker = tmp_path / "date=2026-01-01"
    blocker.write_text("in the way")
    for i in range(3):
        assert w.write(make_env(i))
    s = w.stats()
    assert (s["write_failures"], s["rows_written"], s["rows_buffered"]) == (1, 0, 3)
    assert "FileExistsError" in s["last_error"] or "NotADirectoryError" in s["last_error"]
    w.write(make_env(3))  # full again, but waiting to retry: no new attempt
    assert w.stats()["write_failures"] == 1
    blocker.unlink()
    clock.t += 5
    w.flush_due()
    assert w.stats()["rows_written"] == 4
    w.close()
    assert [unflatten(r) for r in read_rows(tmp_path)] == [make_env(i) for i in range(4)]
    assert w.stats()["rows_dropped"] == 0


def test_a_disk_full_mid_file_leaves_nothing_and_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = parquet_mod.pq.write_table
    failures = [OSError(errno.ENOSPC, "No space left on device")]

    def write_table(table: Any, where: Any, **kwargs: Any) -> None:
        if failures:
            where.write(b"PAR1 partial")
            raise failures.pop()
        real_write(table, where, **kwargs)

    monkeypatch.setattr(parquet_mod.pq, "write_table", write_table)
    clock = FakeClock()
    w = ParquetWriter(tmp_path, "run1", flush_rows=2, retry_s=1.0, clock=clock)
    w.write(make_env(0))
    w.write(make_env(1))
    assert w.stats()["write_failures"] == 1
    assert "No space left on device" in str(w.stats()["last_error"])
    assert parquet_files(tmp_path) == []
    assert leftovers(tmp_path) == []  # the partial temporary file is gone
    clock.t += 1
    w.write(make_env(2))  # the next write finds the partition due and retries it
    assert w.stats()["rows_written"] == 3
    assert len(parquet_files(tmp_path)) == 2  # at most flush_rows rows a file
    w.close()
    assert [unflatten(r) for r in read_rows(tmp_path)] == [make_env(i) for i in range(3)]


def test_past_the_bound_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    clock = FakeClock()
    w = ParquetWriter(tmp_path, "run1", flush_rows=2, max_buffered_rows=5, clock=clock)
    blocker = tmp_path / "date=2026-01-01"
    blocker.write_text("in the way")
    kept = [w.write(make_env(i)) for i in range(8)]
    assert kept == [True] * 5 + [False] * 3
    assert w.stats()["rows_dropped"] == 3
    blocker.unlink()
    assert w.flush()
    assert w.stats()["rows_written"] == 5
    w.close()
    assert w.stats()["rows_dropped"] == 3


def test_rows_unwritable_at_close_are_counted_as_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "date=2026-01-01").write_text("in the way")
    w = ParquetWriter(tmp_path, "run1")
    for i in range(3):
        w.write(make_env(i))
    w.close()
    s = w.stats()
    assert (s["rows_written"], s["rows_dropped"], s["rows_buffered"]) == (0, 3, 0)
    assert "3 rows could not be written" in caplog.text


def test_a_bad_row_is_rejected_and_counted_not_written(tmp_path: Path) -> None:
    w = ParquetWriter(tmp_path, "run1")
    bad = make_env(0)
    bad["edge"]["explain"] = "NOT_A_LIST"
    assert not w.write(bad)
    extra = make_env(1)
    extra["something_new"] = {"a": 1}
    assert w.write(extra)
    w.close()
    s = w.stats()
    assert (s["rows_rejected"], s["unknown_fields"], s["rows_written"]) == (1, 1, 1)


def _flow(items: list[tuple[str, Env]], sink: ParquetSink) -> Dataflow:
    flow = Dataflow("parquet_test")
    up = op.input("in", flow, TestingSource(items, batch_size=3))
    op.output("parquet", up, sink)
    return flow


def test_in_a_flow_a_failing_sink_never_stops_it(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    items = [("BTC", make_env(i)) for i in range(10)]
    sink = ParquetSink(blocked / "history", "run1", flush_rows=4)
    run_main(_flow(items, sink))  # returns: the flow finished
    s = sink.stats()
    assert s["write_failures"] >= 1
    assert (s["rows_written"], s["rows_dropped"]) == (0, 10)


def test_in_a_flow_the_sink_writes_every_item(tmp_path: Path) -> None:
    items = [("BTC", make_env(i)) for i in range(10)] + [
        ("ETH", make_env(i, "ETH")) for i in range(5)
    ]
    sink = ParquetSink(tmp_path, "run1", flush_rows=4)
    run_main(_flow(items, sink))
    assert sink.stats()["rows_written"] == 15
    got = [unflatten(r) for r in read_rows(tmp_path)]
    assert sorted(got, key=lambda e: (e["coin"], e["timestamp_ms"])) == [e for _, e in items]


# -- the setting --------------------------------------------------------------------------------


def test_the_parquet_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HLSL_PARQUET", raising=False)
    assert parquet_sink(Settings.load({})) is None
    sink = parquet_sink(Settings.load({"parquet": str(tmp_path / "new" / "dir")}), "run1")
    assert isinstance(sink, ParquetSink)
    assert (sink.root, sink.run_id) == (tmp_path / "new" / "dir", "run1")
    assert (tmp_path / "new" / "dir").is_dir()
    assert os.listdir(tmp_path / "new" / "dir") == []  # the probe file is gone
    monkeypatch.setenv("HLSL_PARQUET", str(tmp_path))
    sink = parquet_sink(Settings.load({}))
    assert sink is not None
    assert re.fullmatch(r"\d{8}T\d{9}Z[0-9a-f]{6}", sink.run_id)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (lambda p: p / "a-file", "--parquet (HLSL_PARQUET) = {}: is a file; give a directory"),
        (lambda p: p / "a-file" / "x", "--parquet (HLSL_PARQUET) = {}: cannot write there (Not a"),
    ],
)
def test_an_unwritable_parquet_dir_is_a_start_up_error(
    tmp_path: Path, where: Callable[[Path], Path], message: str
) -> None:
    (tmp_path / "a-file").write_text("x")
    bad = where(tmp_path)
    with pytest.raises(StartupError) as info:
        parquet_sink(Settings.load({"parquet": str(bad)}))
    assert str(info.value).startswith(message.format(bad))
    assert "\n" not in str(info.value)


def test_a_blank_parquet_setting_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HLSL_PARQUET", " ")
    with pytest.raises(SettingsError) as info:
        Settings.load({})
    assert str(info.value) == "HLSL_PARQUET = ' ': must be a directory path (created when missing)"
    monkeypatch.delenv("HLSL_PARQUET")
    with pytest.raises(SettingsError) as info:
        Settings.load({"parquet": ""})
    assert (
        str(info.value)
        == "--parquet (HLSL_PARQUET) = '': must be a directory path (created when missing)"
    )


def test_a_replay_whose_parquet_cannot_be_written_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The directory passed the start-up check but the disk is full: every envelope is counted,
    the NDJSON is still written, and the run says so in one line and exits 1."""

    def write_table(table: Any, where: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(parquet_mod.pq, "write_table", write_table)
    out, root = tmp_path / "signals.ndjson", tmp_path / "history"
    argv = [str(SAMPLE), "--out", str(out), "--parquet", str(root), "--log-level", "CRITICAL"]
    assert replay_main(argv) == 1
    n = len(out.read_bytes().splitlines())
    err = capsys.readouterr().err
    assert (
        f"error: --parquet (HLSL_PARQUET) = {root}: {n} of {n} envelopes not written "
        "(OSError: [Errno 28] No space left on device)"
    ) in err
    assert f'"rows_dropped": {n}' in err
    assert parquet_files(root) == []
    assert leftovers(root) == []
