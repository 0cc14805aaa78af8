"""The spool of a partitioned replay: per-coin streams of records on disk, made once per run.

A stream is a file of LZ4 frames (appended as its records are flushed) holding one record per line:

    <merge key> <capture index> <line number> <clock ms> <latest ms> <flags> <payload>

- the merge key (receive ns) and the capture index order the record among a partition's inputs;
  the capture and line number name where a skip happened;
- the two clocks are what the one-partition parser would have from the other coins at that point
  (the receive time that closes candles, the source clock `latest_ms`), -1 when unknown;
- the flags say how the record counts (`COUNTED`, `DERIVED`, `BLANK`) or what it reports
  (`SKIP`, `ERROR`); the payload is a capture line (empty for a clock tick or a blank line).

`make_once` makes a spool directory once per run: the first caller takes the spool's lock, writes
it into a temporary directory and renames it when complete (with a manifest), every other caller
finds it there. Each caller registers as a user; the last one to `Spool.release` it removes it.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import lz4.frame
import orjson

log = logging.getLogger(__name__)

SPOOL_VERSION: Final = 1
"""The version of the record format and the manifest (a spool of another version is remade)."""
MANIFEST: Final = "manifest.json"
OTHER: Final = ""
"""The stream key of the lines no coin partition takes."""

COUNTED: Final = 1
"""The record counts as a line read (each capture line counts once, wherever its copies went)."""
DERIVED: Final = 2
"""A per-coin copy of a multi-coin line: the frame and control counts it adds are undone."""
BLANK: Final = 4
"""A blank capture line."""
SKIP: Final = 8
"""A skip the split pass met (a torn tail); payload ``[reason, where, detail]``."""
ERROR: Final = 16
"""A capture error the split pass met (a corrupt file); payload is the message."""


# -- records ------------------------------------------------------------------------------------
# One line per record: b"<key> <capture index> <line> <clock ms> <latest ms> <flags> <payload>".

Record = tuple[int, int, int, int, int, int, bytes]
"""``(key, capture index, line number, clock ms, latest ms, flags, payload)``; the two clocks
are -1 when unknown."""


def record(
    key: int, idx: int, lineno: int, clock: int, latest: int, flags: int, payload: bytes
) -> bytes:
    """One spool record (a line, with its newline)."""
    return b"%d %d %d %d %d %d %s\n" % (key, idx, lineno, clock, latest, flags, payload)


def parse_record(line: bytes) -> Record:
    """The fields of a spool line."""
    key, idx, lineno, clock, latest, flags, payload = line.split(b" ", 6)
    return int(key), int(idx), int(lineno), int(clock), int(latest), int(flags), payload


# -- streams -------------------------------------------------------------------------------------


@dataclass
class Manifest:
    """What a spool holds: its digest, and the file of each stream (by coin; `OTHER`)."""

    digest: str
    streams: dict[str, str]
    version: int = SPOOL_VERSION

    def coins(self) -> set[str]:
        """The coins with a stream."""
        return {c for c in self.streams if c != OTHER}


class Stream:
    """One output stream: records buffered, flushed as LZ4 frames appended to its file."""

    __slots__ = ("buf", "path", "size")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.buf: list[bytes] = []
        self.size = 0
        path.touch()

    def flush(self) -> None:
        if self.buf:
            append_frame(self.path, self.take())

    def take(self) -> bytes:
        """The records buffered, as one block, and the buffer emptied (to flush elsewhere)."""
        data = b"".join(self.buf)
        self.buf.clear()
        self.size = 0
        return data


def append_frame(path: Path, data: bytes) -> None:
    """Append ``data`` to a stream file as one LZ4 frame."""
    with path.open("ab") as fh:
        fh.write(lz4.frame.compress(data))


# -- once per run -------------------------------------------------------------------------------


def load_manifest(spool: Path, digest: str) -> Manifest | None:
    """The manifest of a complete spool made for ``digest``, else None."""
    try:
        raw = orjson.loads((spool / MANIFEST).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if type(raw) is not dict or raw.get("digest") != digest:
        return None
    if raw.get("version") != SPOOL_VERSION or type(raw.get("streams")) is not dict:
        return None
    streams = {str(k): str(v) for k, v in raw["streams"].items()}
    if not all((spool / name).is_file() for name in streams.values()):
        return None
    return Manifest(digest=digest, streams=streams)


@dataclass(frozen=True)
class Spool:
    """A split, as one process uses it: where it is, what it holds, and this use of it."""

    path: Path
    manifest: Manifest
    user: str
    """This process's registration: the last user to `release` it removes the spool."""

    def release(self) -> None:
        """This use is over (the run has ended): remove the spool if no other user is left."""
        release_spool(self.path, self.user)


_USERS = itertools.count()


def _users(spool: Path) -> Path:
    return spool.with_name(spool.name + ".users")


def _lock(spool: Path) -> Path:
    return spool.with_name(spool.name + ".lock")


def make_once(
    spool: Path, digest: str, make: Callable[[Path], dict[str, str]]
) -> tuple[Spool, float | None]:
    """The spool at ``spool`` for ``digest``: made by the first caller, found by the rest.

    ``make(directory)`` writes the streams into an empty directory and returns their file names
    by stream key. Returns the spool and the seconds making it took (None: it was found made).
    """
    spool.parent.mkdir(parents=True, exist_ok=True)
    user = f"{socket.gethostname()}-{os.getpid()}-{next(_USERS)}"
    with _lock(spool).open("a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _users(spool).mkdir(exist_ok=True)
            (_users(spool) / user).touch()
            manifest = load_manifest(spool, digest)
            if manifest is not None:
                return Spool(spool, manifest, user), None
            started = time.monotonic()
            tmp = spool.with_name(f"{spool.name}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                manifest = Manifest(digest=digest, streams=make(tmp))
                body = {"version": SPOOL_VERSION, "digest": digest, "streams": manifest.streams}
                (tmp / MANIFEST).write_bytes(orjson.dumps(body))
                shutil.rmtree(spool, ignore_errors=True)
                tmp.rename(spool)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                (_users(spool) / user).unlink(missing_ok=True)
                raise
            return Spool(spool, manifest, user), time.monotonic() - started
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _forget_the_dead(users: Path) -> None:
    """Drop the registrations of processes of this host that are gone (a crashed run), so they
    do not keep a spool forever."""
    host = socket.gethostname() + "-"
    for entry in users.iterdir() if users.is_dir() else ():
        if not entry.name.startswith(host):
            continue
        pid = entry.name[len(host) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release_spool(spool: Path, user: str) -> None:
    """``user`` is done with ``spool``: the last user removes it (and its lock and registry)."""
    lock_path = _lock(spool)
    if not lock_path.exists():
        return
    with lock_path.open("a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            users = _users(spool)
            (users / user).unlink(missing_ok=True)
            _forget_the_dead(users)
            if users.is_dir() and any(users.iterdir()):
                return
            shutil.rmtree(spool, ignore_errors=True)
            shutil.rmtree(users, ignore_errors=True)
            lock_path.unlink(missing_ok=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


__all__ = [
    "BLANK",
    "COUNTED",
    "DERIVED",
    "ERROR",
    "MANIFEST",
    "OTHER",
    "SKIP",
    "Manifest",
    "Record",
    "Spool",
    "Stream",
    "append_frame",
    "load_manifest",
    "make_once",
    "parse_record",
    "record",
    "release_spool",
]
