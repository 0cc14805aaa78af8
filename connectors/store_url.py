"""Where the signal store lives: ``memory`` (in the process) or a Redis URL, checked and redacted.

``HLSL_STORE`` is ``memory`` (the default) or ``redis://[user:password@]host[:port][/db]`` /
``rediss://…`` (TLS). `check_store_url` says in one phrase what is wrong with a value;
`redact_url` is the form every log line, error and ``/v1/state`` shows (the password replaced by
``***``), so a password never leaves the process.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote, urlsplit

MEMORY: Final = "memory"
SCHEMES: Final = ("redis", "rediss")
MAX_DB: Final = 1 << 16


def is_memory(value: str) -> bool:
    """Whether a store setting means the in-process store."""
    return value.strip().lower() == MEMORY


def check_store_url(value: str) -> str | None:
    """What is wrong with a store setting (one phrase), or None when it is usable."""
    if is_memory(value):
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as ex:
        return f"not a URL ({ex})"
    if parts.scheme not in SCHEMES:
        return "must be memory, redis://host[:port][/db] or rediss://host[:port][/db]"
    if not parts.hostname:
        return "names no host (expected redis://host[:port][/db])"
    if port is not None and not 0 < port < 65536:
        return "port must be 1-65535"
    db = parts.path.strip("/")
    if db and (not db.isdigit() or int(db) >= MAX_DB):
        return f"database {db!r} must be a number (redis://host:port/0)"
    if parts.fragment:
        return "must not have a #fragment"
    return None


def redact_url(value: str) -> str:
    """The URL with its password (and any query) hidden: safe for logs, errors and documents."""
    if is_memory(value):
        return MEMORY
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<malformed store URL>"
    if "@" not in value and "?" not in value:
        return value  # nothing to hide (and `foo` is shown as given, not as `://foo`)
    user = unquote(parts.username) if parts.username else ""
    auth = ""
    if parts.password is not None:
        auth = f"{user}:***@" if user else "***@"
    elif user:
        auth = f"{user}@"
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    query = "?…" if parts.query else ""
    return f"{parts.scheme}://{auth}{netloc}{parts.path}{query}"


__all__ = ["MEMORY", "SCHEMES", "check_store_url", "is_memory", "redact_url"]
