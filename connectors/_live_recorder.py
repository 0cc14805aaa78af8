"""The live source's recorder: every consumed input appended to a replayable capture.

`Recorder` writes Hyperliquid's archive envelope (``{"time": …, "ver_num": 1, "raw": …}``), with
the project's own markers beside ``raw`` in the ``"hlsl"`` key, so a recording replays through
`connectors.files` unchanged. The file formats and the crash-safe tail check are
`connectors.recording`'s; this module decides what is written and when a unit is ended.
Re-exported by `connectors.live`.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from connectors.recording import capture_kind, open_for_append, open_sink

# Logged under the public module's name, as before the split (log configs and lines name it).
log = logging.getLogger("connectors.live")


def iso_ns(ns: int) -> str:
    """Receive time as the archive writes it: ``2025-09-04T19:46:56.673877954``."""
    secs, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}"


class Recorder:
    """Appends consumed inputs to a capture in Hyperliquid's archive envelope (thread-safe).

    Each line is ``{"time": <receive time ISO ns>, "ver_num": 1, "raw": <frame bytes verbatim>}``;
    gzip when the name ends in ``.gz``, LZ4 frames when it ends in ``.lz4``, else plain text.
    A compressed capture is a series of complete gzip members / LZ4 frames, one ended every
    ``flush_s`` seconds (``HLSL_RECORD_FLUSH_S``) by a background thread, so a crash (``kill -9``)
    loses at most that much; a plain capture writes each line straight to the OS. `flush` ends the
    current unit at once and `close` ends it for good: both leave a complete file.

    ``append`` adds to an existing capture (a restarted live run) after checking its tail: a torn
    last unit (a crash) is repaired, a corrupt file is left alone and the recording goes to
    ``NAME.1.gz`` (see `connectors.recording`); `path` is the file actually written.
    """

    def __init__(self, path: str | Path, *, append: bool = True, flush_s: float = 1.0) -> None:
        if not flush_s > 0:
            msg = f"flush_s must be > 0, got {flush_s!r}"
            raise ValueError(msg)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if append:
            self.path, self._sink = open_for_append(self.path)
        else:
            self._sink = open_sink(self.path, append=False)
        self.flush_s = flush_s
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.lines = 0
        self.syncs = 0
        self._flusher: threading.Thread | None = None
        if capture_kind(self.path) != "plain":
            self._flusher = threading.Thread(
                target=self._flush_loop, name="hlsl-record-flush", daemon=True
            )
            self._flusher.start()

    def write(self, recv_ns: int, raw: bytes) -> None:
        """Record one frame (raw bytes must be one JSON value, or the greeting text)."""
        if raw[:1] not in (b"{", b"["):
            raw = orjson.dumps(raw.decode("utf-8", "replace"))
        line = b'{"time":"' + iso_ns(recv_ns).encode() + b'","ver_num":1,"raw":' + raw + b"}\n"
        with self._lock:
            if self._closed.is_set():
                return
            self._sink.write(line)
            self.lines += 1

    def write_marker(self, recv_ns: int, body: dict[str, Any]) -> None:
        """Record one of the project's own control markers outside ``raw`` (the ``"hlsl"`` key),
        where no exchange frame can forge it."""
        stamp = iso_ns(recv_ns).encode()
        line = b'{"time":"' + stamp + b'","ver_num":1,"hlsl":' + orjson.dumps(body) + b"}\n"
        with self._lock:
            if self._closed.is_set():
                return
            self._sink.write(line)
            self.lines += 1

    def _flush_loop(self) -> None:
        while not self._closed.wait(self.flush_s):
            try:
                with self._lock:
                    if not self._closed.is_set():
                        self._sink.sync(reopen=True)
                        self.syncs += 1
            except OSError:
                log.exception("recording %s: periodic flush failed", self.path)

    def flush(self) -> None:
        """End the current compressed unit now: the file is complete up to here."""
        with self._lock:
            if not self._closed.is_set():
                self._sink.sync(reopen=False)

    def close(self) -> None:
        """Flush and close (idempotent)."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            self._sink.close()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=5)
