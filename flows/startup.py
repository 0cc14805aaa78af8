"""Start-up checks shared by every entry point: fail before any work, in one line, exit 2.

- `check_output_path`: an output file (``--signals-out``, ``--record``, ``--out``) can be written.
- `check_output_dir`: an output directory (``--parquet``) can be written.
- `bind_listener`: the API's port is bound before anything is announced.
- `fetch_perps`: the exchange's ``meta``, retried with backoff while the exchange is unreachable.
- `fail`: log ``cannot start: …`` and exit 2; `start_message`: the one line an exception gives.
- `install_stop_handlers`: SIGINT/SIGTERM end the flow cleanly; `one_line`: an error in a line.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import tempfile
import threading
import time
import urllib.error
from pathlib import Path
from types import FrameType
from typing import Final, NoReturn

from connectors.errors import FeedError
from connectors.rest import InfoClient, InfoError

log = logging.getLogger(__name__)

EXIT_CANNOT_START: Final = 2
FIRST_RETRY_S: Final = 0.5
MAX_RETRY_S: Final = 10.0
REQUEST_TIMEOUT_S: Final = 10.0
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StartupError(ValueError):
    """The service cannot start; the message is one line saying why."""


def fail(message: str, logger: logging.Logger | None = None) -> NoReturn:
    """Log ``cannot start: message`` (one line on stderr) and exit with status 2."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    (logger or log).error("cannot start: %s", message)
    raise SystemExit(EXIT_CANNOT_START)


def check_output_path(path: str | Path, what: str, *, make_parents: bool = True) -> None:
    """Fail now, not after the work, if ``path`` cannot be written.

    The file is opened for appending (its content is untouched) and removed again if this check
    created it; missing parent directories are created when ``make_parents`` (as the writers do).

    Args:
        path: the output file.
        what: the flag or variable that named it (``--signals-out (HLSL_SIGNALS_OUT)``).
        make_parents: the writer creates missing directories, so the check may too.

    Raises:
        StartupError: a directory, an unwritable place, or a missing parent (one line).
    """
    p = Path(path)
    if p.is_dir():
        msg = f"{what} = {p}: is a directory; give a file name"
        raise StartupError(msg)
    try:
        if make_parents:
            p.parent.mkdir(parents=True, exist_ok=True)
        existed = p.exists()
        with p.open("ab"):
            pass
        if not existed:
            p.unlink()
    except OSError as ex:
        reason = ex.strerror or str(ex)
        msg = f"{what} = {p}: cannot write there ({reason})"
        raise StartupError(msg) from None


def check_output_dir(path: str | Path, what: str) -> None:
    """Fail now, not after the work, if files cannot be created in the directory ``path``.

    The directory is created when missing (as the writer does), and a probe file is created in
    it and removed again.

    Args:
        path: the output directory.
        what: the flag or variable that named it (``--parquet (HLSL_PARQUET)``).

    Raises:
        StartupError: a file, or a place where the directory cannot be made or written (one line).
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        msg = f"{what} = {p}: is a file; give a directory"
        raise StartupError(msg)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as ex:
        reason = ex.strerror or str(ex)
        msg = f"{what} = {p}: cannot write there ({reason})"
        raise StartupError(msg) from None


def bind_listener(
    host: str, port: int, flags: tuple[str, str] = ("--host (HLSL_HOST)", "--port (HLSL_PORT)")
) -> socket.socket:
    """A TCP socket bound to ``host:port`` (SO_REUSEADDR, as uvicorn binds), not yet listening.

    Args:
        host: the address to bind.
        port: the port (0: any free one).
        flags: how the host and the port were given, as errors name them.

    Raises:
        StartupError: the port is in use, or the address cannot be bound or resolved (one line
            naming the flag).
    """
    host_flag, port_flag = flags
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as ex:
        msg = f"{host_flag} = {host}: cannot resolve it ({ex.strerror})"
        raise StartupError(msg) from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as ex:
        sock.close()
        if ex.errno == errno.EADDRINUSE:
            msg = f"{port_flag} = {port}: port {port} on {host} is in use"
        else:
            msg = f"{host_flag} = {host}: cannot listen there on port {port} ({ex.strerror or ex})"
        raise StartupError(msg) from None
    sock.set_inheritable(True)
    return sock


def _retryable(ex: InfoError) -> bool:
    """Network trouble or a server-side status (worth retrying), not a bad answer."""
    cause = ex.__cause__
    if isinstance(cause, urllib.error.HTTPError):
        return cause.code >= 500 or cause.code == 429
    return isinstance(cause, OSError | TimeoutError)


def fetch_perps(
    info_url: str, timeout_s: float, stop: threading.Event | None = None
) -> tuple[list[str], set[str]]:
    """The exchange's listed perpetuals, retrying network errors until ``timeout_s`` has passed.

    Each failed attempt logs one warning with the next delay (0.5 s, doubling up to 10 s).

    Raises:
        StartupError: the exchange stayed unreachable for ``timeout_s`` (or ``stop`` was set).
        InfoError: an answer that retrying cannot fix (a 4xx status, a body that is not meta).
    """
    started = time.monotonic()
    deadline = started + timeout_s
    delay = FIRST_RETRY_S
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        client = InfoClient(info_url, timeout_s=max(0.5, min(REQUEST_TIMEOUT_S, remaining)))
        try:
            return client.perps()
        except InfoError as ex:
            if not _retryable(ex):
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                waited = time.monotonic() - started
                msg = (
                    f"the exchange did not answer for {waited:.1f} s ({attempt} attempt"
                    f"{'s' if attempt > 1 else ''}; "
                    f"--start-timeout-s / HLSL_START_TIMEOUT_S = {timeout_s:g}): {ex}"
                )
                raise StartupError(msg) from None
            wait = min(delay, remaining)
            log.warning(
                "exchange unreachable (attempt %d: %s); retrying in %.1f s, giving up after %g s",
                attempt,
                ex,
                wait,
                timeout_s,
            )
            if stop is not None:
                if stop.wait(wait):
                    msg = "stopped while waiting for the exchange"
                    raise StartupError(msg) from None
            else:
                time.sleep(wait)
            delay = min(delay * 2, MAX_RETRY_S)


def install_stop_handlers(stop: threading.Event) -> None:
    """On SIGINT/SIGTERM set ``stop`` (the sources end, windows flush) instead of aborting.

    Bytewax's own handling on the main thread is an abrupt abort (bytewax-0.21.md §5.4); a Python
    handler that only sets an event lets the flow reach a clean end of input. A second signal
    exits at once.
    """

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise SystemExit(128 + signum)
        log.info("signal %s: stopping the flow", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def start_message(ex: BaseException) -> str:
    """The one line a start-up failure is reported with."""
    if isinstance(ex, ValueError | OSError | FeedError):
        return str(ex)
    return f"{type(ex).__name__}: {ex}"


def one_line(ex: BaseException) -> str:
    """An exception in one line: its first line and, if it has one, its root cause's."""

    def first(e: BaseException) -> str:
        text = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
        return f"{type(e).__name__}: {text}" if text else type(e).__name__

    root = ex
    seen = {id(ex)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        root = nxt
    return first(ex) if root is ex else f"{first(ex)} (caused by {first(root)})"
