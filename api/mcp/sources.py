"""Where the MCP tools' signals come from: a `SignalSource` answers with the REST API's documents.

- `StoreSource` reads an in-process `SignalStore` with the REST API's rules (`api.app`: the same
  coin resolution, freshness judged at call time, 404/422/503), and waits (bounded) for a running
  replay;
- `ApiSource` reads a running REST API (``--api-url``) over stdlib ``urllib``, with the bearer
  token `client_token` finds.

A query the REST API would refuse is a `SignalQueryError` carrying its HTTP status.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, Protocol

import anyio
import orjson

from api.signals import (
    ApiError,
    check_coin_name,
    history_json,
    history_page,
    latest_record,
    list_json,
)
from api.signals import resolve as app_resolve
from connectors.store import RunState, SignalStore
from operators.explain import utc_text

API_TIMEOUT_S = 10.0
TOKEN_ENV = "HLSL_API_CLIENT_TOKEN"
TOKEN_FILE_ENV = "HLSL_API_CLIENT_TOKEN_FILE"
REPLAY_POLL_S = 0.05

Envelope = dict[str, Any]


class SignalQueryError(Exception):
    """A query the REST API would answer with an error status (404, 422, 503; 502: unreachable).

    Args:
        status: the HTTP status the REST API gives (or would give).
        detail: the reason.
        coins: the coins served (unknown or ambiguous coin).
    """

    def __init__(self, status: int, detail: str, coins: list[str] | None = None) -> None:
        text = detail
        if coins is not None:
            text = f"{detail}; coins served: {', '.join(coins) if coins else 'none yet'}"
        super().__init__(text)
        self.status = status
        self.detail = detail
        self.coins = coins


class SignalSource(Protocol):
    """What the MCP tools read: the REST API's documents as dicts (blocking calls)."""

    def signal(self, coin: str) -> Envelope:
        """A coin's latest envelope, freshness judged now (``GET /v1/signal/{coin}``)."""
        ...

    def signals(self) -> dict[str, Any]:
        """Every coin's latest envelope (``GET /v1/signals``)."""
        ...

    def history(
        self, coin: str, since_ms: int | None, limit: int, until_ms: int | None = None
    ) -> dict[str, Any]:
        """A coin's stored envelopes, oldest first (``GET /v1/signal/{coin}/history``); with
        ``until_ms`` a time range that says ``next_since_ms``."""
        ...

    def coins_with_signal(self) -> list[str]:
        """Coins that have a signal (for the resource listing)."""
        ...

    async def wait_ready(self) -> None:
        """Wait (bounded) until answers are worth giving, e.g. for an in-process replay."""
        ...


class StoreSource:
    """Signals from an in-process `SignalStore`, with the REST API's rules.

    While a replay runs (the store's mode is ``replay`` and the flow is starting or running), a
    tool first waits up to ``wait_for_replay_s`` for it to finish (`wait_ready`, on the event
    loop: no thread is held), then answers from where the replay has got to; an error then says
    so (``replay in progress (...)``), and an unknown coin is a 503 (it may still appear).

    Args:
        store: the store the flow writes.
        wait_for_replay_s: how long a call waits for a running replay (0: not at all).
    """

    def __init__(self, store: SignalStore, wait_for_replay_s: float = 0.0) -> None:
        self.store = store
        self.wait_for_replay_s = wait_for_replay_s

    def replaying(self) -> bool:
        """Whether a replay is still feeding the store."""
        s = self.store
        return s.mode == "replay" and s.state in (RunState.STARTING, RunState.RUNNING)

    async def wait_ready(self) -> None:
        """Wait up to ``wait_for_replay_s`` for a running replay to finish."""
        if self.wait_for_replay_s <= 0 or not self.replaying():
            return
        deadline = time.monotonic() + self.wait_for_replay_s
        # The flow's thread sets the store's state; there is no event to await across threads.
        while self.replaying() and time.monotonic() < deadline:  # noqa: ASYNC110
            await anyio.sleep(REPLAY_POLL_S)

    def progress(self) -> str:
        """How far a running replay has got, in words."""
        info = self.store.source_info() or {}
        parts = [f"{int(info.get('lines_read') or 0):,} lines read"]
        files = info.get("files") or []
        if len(files) > 1:
            parts.append(f"{len(files)} captures")
        latest = info.get("latest_event_ms")
        if isinstance(latest, int):
            parts.append(f"events up to {utc_text(latest)}")
        parts.append(f"{self.store.signals_emitted:,} signals so far")
        return f"replay in progress ({', '.join(parts)})"

    def _during_replay(self, ex: SignalQueryError) -> SignalQueryError:
        if not self.replaying():
            return ex
        # An unknown coin or no signal yet may just be early: 503, "ask again shortly".
        status = 503 if ex.status in (404, 503) else ex.status
        detail = f"{self.progress()}: {ex.detail}; ask again shortly"
        return SignalQueryError(status, detail, ex.coins)

    def resolve(self, name: str) -> str:
        """The served coin ``name`` designates, as ``GET /v1/signal/{coin}`` resolves it.

        Raises:
            SignalQueryError: 422 not a coin name; 404 unknown or ambiguous (with the coins);
                during a replay, 503 with its progress for a coin not seen yet.
        """
        try:
            return app_resolve(self.store, name)
        except ApiError as ex:
            raise self._during_replay(SignalQueryError(ex.status, ex.detail, ex.coins)) from None

    def signal(self, coin: str) -> Envelope:
        """A coin's latest envelope, freshness judged now.

        Raises:
            SignalQueryError: as `resolve`, or 503 when the coin has no signal yet.
        """
        try:
            _name, rec = latest_record(self.store, coin)
        except ApiError as ex:
            raise self._during_replay(SignalQueryError(ex.status, ex.detail, ex.coins)) from None
        out: Envelope = orjson.loads(rec.json_at(self.store.now_ms()))
        return out

    def signals(self) -> dict[str, Any]:
        """Every coin's latest envelope, freshness judged now."""
        now = self.store.now_ms()
        latest = self.store.records()
        body = list_json((latest[c] for c in self.store.coins() if c in latest), now)
        out: dict[str, Any] = orjson.loads(body)
        return out

    def history(
        self, coin: str, since_ms: int | None, limit: int, until_ms: int | None = None
    ) -> dict[str, Any]:
        """A coin's stored envelopes, oldest first, as emitted; with ``until_ms`` the range
        ``since_ms < timestamp_ms <= until_ms`` and ``next_since_ms`` (as the REST route).

        Raises:
            SignalQueryError: as `resolve`; 404 when a range reaches before what is held.
        """
        name = self.resolve(coin)
        try:
            recs, next_since = history_page(self.store, name, limit, since_ms, until_ms)
        except ApiError as ex:
            earliest = f" (earliest_ms {ex.earliest_ms})" if ex.earliest_ms is not None else ""
            raise SignalQueryError(ex.status, ex.detail + earliest) from None
        out: dict[str, Any] = orjson.loads(history_json(name, recs, next_since))
        return out

    def coins_with_signal(self) -> list[str]:
        """Coins that have a signal, in the store's order."""
        latest = self.store.records()
        return [c for c in self.store.coins() if c in latest]


class ApiSource:
    """Signals from a running REST API (``python -m api.server``), over stdlib ``urllib``.

    Args:
        base_url: the API's root, e.g. ``http://127.0.0.1:8000``.
        timeout_s: per-request timeout.
        token: bearer token the API requires (``HLSL_API_TOKEN`` there; here see
            `client_token`), sent as ``Authorization: Bearer ...``.

    Raises:
        ValueError: the URL is not http(s).
    """

    def __init__(
        self, base_url: str, timeout_s: float = API_TIMEOUT_S, token: str | None = None
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            msg = f"--api-url must be an http(s) URL, got {base_url!r}"
            raise ValueError(msg)
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    async def wait_ready(self) -> None:
        """Nothing to wait for: the server answers for itself."""

    def _get(self, path: str, query: dict[str, int] | None = None) -> Any:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        req = urllib.request.Request(url, headers=self._headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as ex:
            try:
                body = json.loads(ex.read() or b"{}")
            except ValueError:
                body = {}
            finally:
                ex.close()
            detail = body.get("detail") if isinstance(body, dict) else None
            coins = body.get("coins") if isinstance(body, dict) else None
            text = str(detail or f"HTTP {ex.code} from {url}")
            if ex.code == 401:
                text += f" (the API needs a token: set {TOKEN_ENV} or {TOKEN_FILE_ENV})"
            raise SignalQueryError(ex.code, text, coins) from None
        except (urllib.error.URLError, OSError, ValueError) as ex:
            reason = getattr(ex, "reason", ex)
            msg = f"cannot read the signal API at {self.base_url}: {reason}"
            raise SignalQueryError(502, msg) from None

    @staticmethod
    def _coin_path(coin: str) -> str:
        _check_coin_name(coin)  # as the API would (a "/" in it would not even reach the route)
        return "/v1/signal/" + urllib.parse.quote(coin, safe="")

    def signal(self, coin: str) -> Envelope:
        """``GET /v1/signal/{coin}``."""
        out: Envelope = self._get(self._coin_path(coin))
        return out

    def signals(self) -> dict[str, Any]:
        """``GET /v1/signals``."""
        out: dict[str, Any] = self._get("/v1/signals")
        return out

    def history(
        self, coin: str, since_ms: int | None, limit: int, until_ms: int | None = None
    ) -> dict[str, Any]:
        """``GET /v1/signal/{coin}/history``."""
        query: dict[str, Any] = {"limit": limit}
        if since_ms is not None:
            query["since_ms"] = since_ms
        if until_ms is not None:
            query["until_ms"] = until_ms
        out: dict[str, Any] = self._get(self._coin_path(coin) + "/history", query)
        return out

    def coins_with_signal(self) -> list[str]:
        """Coins with a signal, from ``GET /v1/state``."""
        state = self._get("/v1/state")
        return [c["coin"] for c in state.get("coins", []) if c.get("has_signal")]


def _check_coin_name(name: str) -> None:
    """Raise the REST API's 422 for a string that cannot be a coin name."""
    try:
        check_coin_name(name)
    except ApiError as ex:
        raise SignalQueryError(ex.status, ex.detail) from None


def client_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The bearer token for ``--api-url``: ``HLSL_API_CLIENT_TOKEN``, or the first line of the
    file ``HLSL_API_CLIENT_TOKEN_FILE`` names (never a command-line flag: a flag is visible to
    every user in the process list).

    Raises:
        ValueError: both are set, or the file cannot be read or is empty (one line).
    """
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV, "").strip()
    path = env.get(TOKEN_FILE_ENV, "").strip()
    if token and path:
        msg = f"{TOKEN_ENV} and {TOKEN_FILE_ENV} are both set: set one of them"
        raise ValueError(msg)
    if not path:
        return token or None
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.readline().strip()
    except (OSError, UnicodeDecodeError) as ex:
        reason = ex.strerror if isinstance(ex, OSError) else "not UTF-8 text"
        msg = f"{TOKEN_FILE_ENV} = {path}: cannot read it ({reason})"
        raise ValueError(msg) from None
    if not token:
        msg = f"{TOKEN_FILE_ENV} = {path}: the file is empty (expected the token on line 1)"
        raise ValueError(msg)
    return token
