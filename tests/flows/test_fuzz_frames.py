"""Random mutations of real frames through the parser and the whole flow (issue #8).

Each example takes one frame of the real capture, mutates it (a value's type swapped, null, zero,
negative, huge or tiny numbers, NaN/Infinity literals, far-future or far-past times, deep
nesting, another coin, a control channel) and inserts it right after the original. Then:

- the flow never stops (the replay exits 0);
- a mutation the validator rejects (counted under a reason code) leaves the envelopes
  byte-identical to the run without it;
- one it accepts (a valid but different value) still yields envelopes that validate against the
  published schema, with every number finite and in its range;
- both kinds occur.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import itertools
import math
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.schemas import SignalEnvelope
from tests.conftest import LIVE_CAPTURE, real_file
from tools.replay import main as replay_main

HEAD_LINES = 900
FIRST_TARGET = 300

_FAR_FUTURE = 1_757_015_209_000 + 20 * 365 * 86_400_000
_VALUES: list[Any] = [
    None,
    0,
    "0",
    -1,
    "-1",
    "-0.5",
    "1e308",
    "1e-308",
    1e300,
    "abc",
    True,
    False,
    [],
    {},
    2**63 - 1,
    _FAR_FUTURE,
    0.5,
    "",
]
_LITERALS = [b"NaN", b"Infinity", b"-Infinity"]


def _replay(lines: list[bytes], base: Path) -> tuple[bytes, dict[str, Any]]:
    capture = base.with_suffix(".ndjson")
    out = base.with_suffix(".out.ndjson")
    capture.write_bytes(b"\n".join(lines) + b"\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = replay_main([str(capture), "--out", str(out), "--log-level", "CRITICAL"])
    text = err.getvalue()
    assert rc == 0, text[-2000:]
    summary: dict[str, Any] = orjson.loads(text[text.index("{") : text.rindex("}") + 1])
    return out.read_bytes(), summary


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[bytes], bytes, Path]:
    with gzip.open(real_file(LIVE_CAPTURE), "rb") as fh:
        lines = [line.rstrip(b"\n") for line in itertools.islice(fh, HEAD_LINES)]
    tmp = tmp_path_factory.mktemp("fuzz")
    clean, summary = _replay(lines, tmp / "clean")
    assert summary["lines_skipped"] == {}
    return lines, clean, tmp


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))] or [path]
    return [path]


def _set(root: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    node = root
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return root


@st.composite
def mutated_line(draw: st.DrawFn, lines: list[bytes]) -> tuple[int, bytes, str]:
    """(index to insert after, the mutated capture line, what was done)."""
    i = draw(st.integers(FIRST_TARGET, len(lines) - 2))
    line = orjson.loads(lines[i])
    frame = line["raw"]
    kind = draw(st.sampled_from(["leaf", "leaf", "leaf", "literal", "deep", "coin", "control"]))
    if kind == "leaf":
        leaves = [p for p in _leaves(frame["data"]) if p]
        path = draw(st.sampled_from(leaves))
        value = draw(st.sampled_from(_VALUES))
        _set(frame["data"], path, value)
        what = f"data{list(path)} = {value!r}"
        raw = orjson.dumps(frame)
    elif kind == "literal":
        leaves = [p for p in _leaves(frame["data"]) if p]
        path = draw(st.sampled_from(leaves))
        lit = draw(st.sampled_from(_LITERALS))
        _set(frame["data"], path, "__LITERAL__")
        raw = orjson.dumps(frame).replace(b'"__LITERAL__"', lit)
        what = f"data{list(path)} = {lit.decode()}"
    elif kind == "deep":
        depth = draw(st.integers(65, 3000))
        raw = b'{"channel":"bbo","data":' + b"[" * depth + b"]" * depth + b"}"
        what = f"nested {depth} deep"
    elif kind == "coin":
        coin = draw(st.sampled_from(["DOGE", "btc", "", "BTC ", "@1"]))
        data = frame["data"]
        for item in data if isinstance(data, list) else [data]:
            item["coin"] = coin
        raw = orjson.dumps(frame)
        what = f"coin = {coin!r}"
    else:
        channel = draw(st.sampled_from(["hlsl.gap", "hlsl.activate"]))
        raw = orjson.dumps({"channel": channel, "data": {"coins": ["BTC"], "down_ms": 5}})
        what = f"{channel} inside raw"
    out = b'{"time":"' + line["time"].encode() + b'","ver_num":1,"raw":' + raw + b"}"
    return i, out, what


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, float):
        assert math.isfinite(value), where
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(value, list):
        for k, v in enumerate(value):
            _check_finite(v, f"{where}[{k}]")


@pytest.mark.slow
def test_mutated_real_frames_never_stop_the_flow_nor_change_or_break_envelopes(
    head: tuple[list[bytes], bytes, Path],
) -> None:
    lines, clean, tmp = head
    outcomes: Counter[str] = Counter()

    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(st.data())
    def run(data: st.DataObject) -> None:
        i, bad, what = data.draw(mutated_line(lines))
        got, summary = _replay([*lines[: i + 1], bad, *lines[i + 1 :]], tmp / "case")
        if summary["lines_skipped"]:
            assert sum(summary["lines_skipped"].values()) == 1, (what, summary["lines_skipped"])
            assert got == clean, (
                f"rejected ({summary['lines_skipped']}) but envelopes changed: {what}"
            )
            outcomes["rejected"] += 1
            outcomes.update(summary["lines_skipped"])
            return
        outcomes["accepted"] += 1
        outcomes[f"accepted: {what}"] += 1
        for n, text in enumerate(got.splitlines()):
            env = orjson.loads(text)
            SignalEnvelope.model_validate(env)
            _check_finite(env, f"envelope {n}")

    run()
    assert outcomes["rejected"] > 0, outcomes
    assert outcomes["accepted"] > 0, outcomes
