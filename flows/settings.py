"""The one settings object: ``HLSL_*`` environment variables, mirrored by the CLI flags.

``HLSL_REPLAY`` and ``HLSL_COINS`` take comma-separated lists. `Settings.load` is how every entry
point builds its settings: an invalid value fails with one line naming the flag or variable, the
value and what is allowed (`SettingsError`, never raw pydantic text), and an ``HLSL_*`` variable
that names no setting fails naming the closest known one.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import urllib.parse
from collections.abc import Collection, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Final

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from connectors.store_url import check_store_url, is_memory, redact_url
from operators.calibration import UNCALIBRATED, Calibration, load_default
from operators.calibration import load as load_calibration

COIN_PATTERN = r"^[A-Za-z0-9:@_-]{1,32}$"
ENV_PREFIX: Final = "HLSL_"
OTHER_VARIABLES: Final = frozenset(
    {
        # HLSL_* variables read outside `Settings` (tests, the MCP proxy client); not typos.
        "HLSL_DASHBOARD_SCREENSHOT",
        "HLSL_API_CLIENT_TOKEN",
        "HLSL_API_CLIENT_TOKEN_FILE",
        "HLSL_MCP_ALLOWED_HOSTS",
        "HLSL_MCP_ALLOWED_ORIGINS",
    }
)
SECRET_FIELDS: Final = frozenset({"api_token"})
URL_FIELDS: Final = frozenset({"store"})
"""Settings shown with their password redacted (`connectors.store_url.redact_url`)."""
PREFIX_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,64}$"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(ValueError):
    """A setting is not allowed; the message is one line naming the flag or variable."""


def code_version() -> str:
    """This package's version (named in every envelope)."""
    try:
        return version("hyperliquid-signal-layer")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+source"


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Service settings (env prefix ``HLSL_``; every duration has its unit in the name)."""

    model_config = SettingsConfigDict(
        env_prefix="HLSL_", env_ignore_empty=True, extra="ignore", allow_inf_nan=False
    )

    replay: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="capture files to replay (comma-separated)"
    )
    coins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="coins to track, exact names (empty: every coin seen)"
    )
    bar_ms: int = Field(1000, ge=10, le=3_600_000, description="bar length")
    lateness_ms: int = Field(1000, ge=0, le=600_000, description="allowed lateness")
    speed: float = Field(0.0, ge=0.0, description="replay pace: 0 = as fast as possible, 1 = real")
    api: bool = Field(True, description="serve the API while the flow runs")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    history_limit: int = Field(1000, ge=1, le=1_000_000, description="envelopes kept per coin")
    window_obs: int = Field(60, ge=3, le=100_000, description="feature window (observations)")
    warmup_obs: int = Field(30, ge=2, le=100_000, description="observations before warmed up")
    depth_band_bps: float = Field(10.0, gt=0, le=10_000, description="depth band around mid")
    batch_size: int = Field(1000, ge=1, le=100_000, description="frames per source batch")
    log_level: str = "INFO"
    ws_url: str = Field("wss://api.hyperliquid.xyz/ws", description="exchange WebSocket URL")
    info_url: str = Field("https://api.hyperliquid.xyz/info", description="exchange /info URL")
    book_fast: bool = Field(False, description="l2Book fast mode: 5 levels every ~0.5 s")
    warm_start: bool = Field(True, description="prime coins from REST before subscribing")
    ping_interval_s: float = Field(20.0, gt=0, le=55, description="client ping period")
    stall_timeout_s: float = Field(30.0, gt=0, description="silence after which a socket is dead")
    record: str | None = Field(None, description="write every consumed input here (capture)")
    signals_out: str | None = Field(None, description="append every envelope here (NDJSON)")
    parquet: str | None = Field(
        None,
        description="also write every envelope as Parquet under this directory "
        "(date=YYYY-MM-DD/coin=COIN/part-*.parquet)",
    )
    taker_fee_bps: float = Field(4.5, ge=0, le=1000, description="taker fee in the edge's costs")
    edge_size_usd: float = Field(10_000.0, gt=0, description="size the slippage is measured for")
    api_token: str | None = Field(
        None, description="bearer token required on every route but /health, / and the API docs"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="allowed CORS origins (comma-separated; none: no CORS)"
    )
    rate_limit_per_s: float = Field(50.0, ge=0, description="requests/s per client (0: no limit)")
    sse_keepalive_s: float = Field(15.0, gt=0, le=300, description="SSE keep-alive period")
    sse_queue_size: int = Field(1024, ge=1, description="events a stream client may lag by")
    mcp: bool = Field(True, description="serve MCP over HTTP at /mcp/")
    calibration: str | None = Field(
        None, description="edge calibration table (default: the committed one; 'none': off)"
    )
    max_clock_skew_ms: int = Field(
        60_000, ge=0, le=86_400_000, description="how far an exchange time may run ahead of receipt"
    )
    max_price_jump: float = Field(
        10.0, gt=1.0, le=1e6, description="max ratio of a price to the coin's recent median"
    )
    trust_legacy_control: bool = Field(
        False, description="accept hlsl.* control frames inside raw (captures before 0.2)"
    )
    record_flush_s: float = Field(
        1.0, gt=0, le=3600, description="a recording flushes complete blocks this often"
    )
    max_json_depth: int = Field(
        64, ge=4, le=10_000, description="deepest JSON nesting accepted in a frame or request"
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, le=1 << 30, description="largest request body accepted (bytes)"
    )
    start_timeout_s: float = Field(
        120.0,
        ge=0,
        le=86_400,
        description="live start: how long to retry an unreachable exchange before giving up",
    )
    # -- MCP (api.mcp): who may call MCP over HTTP, and how long a tool waits for a replay --
    mcp_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host values MCP over HTTP accepts besides 127.0.0.1, localhost, [::1] "
        "and the bound --host (comma-separated host or host:port; host alone: any port)",
    )
    mcp_allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="browser Origins MCP over HTTP accepts besides the local ones "
        "(comma-separated scheme://host[:port]; no port: any port)",
    )
    mcp_wait_for_replay_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="MCP tools wait up to this long for a full-speed replay to finish "
        "(0: answer at once, saying how far the replay has got)",
    )

    # -- the shared store (connectors.redis_store): where the sinks write, what the API reads --
    store: str = Field(
        "memory",
        description="where envelopes are stored: memory (this process) or "
        "redis://[user:password@]host[:port][/db] / rediss://... (shared by every process)",
    )
    store_prefix: str | None = Field(
        None,
        description="key prefix in the shared store (default hlsl:live live, hlsl:replay for a "
        "replay, so a replay never overwrites a live run)",
    )
    store_timeout_ms: int = Field(
        1000, ge=10, le=60_000, description="every call to the shared store times out after this"
    )
    serve_only: bool = Field(
        False, description="run no flow: serve what the flows write to the shared store"
    )

    @field_validator("store")
    @classmethod
    def _valid_store(cls, value: str) -> str:
        problem = check_store_url(value.strip())
        if problem is not None:
            raise ValueError(problem)
        return "memory" if is_memory(value) else value.strip()

    @field_validator("store_prefix")
    @classmethod
    def _valid_store_prefix(cls, value: str | None) -> str | None:
        import re

        if value is not None and not re.fullmatch(PREFIX_PATTERN, value):
            msg = f"must match {PREFIX_PATTERN} (e.g. hlsl:live)"
            raise ValueError(msg)
        return value

    @property
    def shared_store(self) -> bool:
        """Whether envelopes go to a shared (Redis) store rather than this process's memory."""
        return not is_memory(self.store)

    def store_key_prefix(self) -> str:
        """The shared store's key prefix: the setting, else by mode (live or replay)."""
        if self.store_prefix:
            return self.store_prefix
        return "hlsl:replay" if self.replay else "hlsl:live"

    def check_combination(self, flags: Collection[str] = ()) -> None:
        """Raise `SettingsError` for settings that are each allowed but not together."""

        def who(field: str) -> str:
            if field in flags:
                return f"{flag_name(field)} ({env_name(field)})"
            return env_name(field)

        if self.serve_only and not self.shared_store:
            msg = (
                f"{who('serve_only')} needs a shared store: {who('store')} = memory has nothing "
                "a flow in another process wrote (give --store redis://host:port/0)"
            )
            raise SettingsError(msg)
        if self.serve_only and self.replay:
            msg = (
                f"{who('serve_only')} runs no flow, so {who('replay')} is not used: serve a "
                "replay's store with --store-prefix (default hlsl:replay for replays)"
            )
            raise SettingsError(msg)

    @field_validator("ws_url", "info_url")
    @classmethod
    def _exchange_url(cls, value: str, info: ValidationInfo) -> str:
        """The exchange's URLs: the right scheme and a host, checked before anything connects
        (a bad one otherwise retried forever as 'exchange unreachable')."""
        schemes = ("ws", "wss") if info.field_name == "ws_url" else ("http", "https")
        parts = urllib.parse.urlsplit(value.strip())
        if parts.scheme not in schemes or not parts.hostname:
            allowed = " or ".join(f"{x}://host[:port]/path" for x in schemes)
            msg = f"not an exchange URL (expected {allowed})"
            raise ValueError(msg)
        try:
            parts.port  # noqa: B018 - raises for a port that is not a number or out of range
        except ValueError as ex:
            msg = f"not an exchange URL ({ex})"
            raise ValueError(msg) from None
        return value.strip()

    @field_validator("calibration")
    @classmethod
    def _readable_calibration(cls, value: str | None) -> str | None:
        """A table that cannot be loaded is a start-up error naming the setting."""
        if value is None or value.strip().lower() in ("", "none", UNCALIBRATED):
            return value
        try:
            load_calibration(value)
        except OSError as ex:
            msg = f"cannot read the table: {ex.strerror or ex}"
            raise ValueError(msg) from None
        except ValueError as ex:
            msg = f"not a calibration table: {ex}"
            raise ValueError(msg) from None
        return value

    @field_validator("mcp_allowed_hosts", "mcp_allowed_origins", mode="before")
    @classmethod
    def _mcp_comma_list(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("mcp_allowed_hosts")
    @classmethod
    def _valid_mcp_hosts(cls, value: list[str]) -> list[str]:
        bad = [h for h in value if "/" in h or " " in h or h.startswith(":")]
        if bad:
            msg = f"not host names: {bad!r} (expected host or host:port, e.g. myhost:8000)"
            raise ValueError(msg)
        return value

    @field_validator("mcp_allowed_origins", "cors_origins")
    @classmethod
    def _valid_origins(cls, value: list[str], info: ValidationInfo) -> list[str]:
        """Browser origins (``scheme://host[:port]``; CORS also ``*``): anything else would
        never match an ``Origin`` header, so it is refused, not silently kept."""
        import re

        wild = info.field_name == "cors_origins"
        bad = [
            o for o in value if not (re.fullmatch(r"https?://[^/\s]+/?", o) or (wild and o == "*"))
        ]
        if bad:
            msg = f"not origins: {bad!r} (expected scheme://host[:port], e.g. https://myhost)"
            raise ValueError(msg)
        return [o.rstrip("/") for o in value] if wild else value  # Origin has no "/"

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        flags: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Settings from ``HLSL_*`` variables and ``overrides`` (CLI flags, which win).

        Args:
            overrides: field name → value given on the command line.
            flags: field name → the flag that set it, where it is not ``--field-name``.
            environ: the environment to check for unknown ``HLSL_*`` names (default: os.environ).

        Raises:
            SettingsError: an unknown ``HLSL_*`` variable or a value not allowed (one line).
        """
        check_environment(environ)
        given = dict(overrides or {})
        try:
            settings = cls(**given)
        except ValidationError as ex:
            raise settings_error(ex, given, flags or {}) from None
        settings.check_combination(given)
        return settings

    def calibration_table(self) -> Calibration | None:
        """The calibration table these settings name (loaded and checked; None: uncalibrated)."""
        if self.calibration is None:
            return load_default()
        if self.calibration.strip().lower() in ("", "none", UNCALIBRATED):
            return None
        return load_calibration(self.calibration)

    @field_validator("replay", "coins", "cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("log_level")
    @classmethod
    def _valid_log_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            msg = f"must be one of {', '.join(LOG_LEVELS)}"
            raise ValueError(msg)
        return value

    @field_validator("parquet")
    @classmethod
    def _valid_parquet(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "\0" in value):
            msg = "must be a directory path (created when missing)"
            raise ValueError(msg)
        return value

    @field_validator("coins")
    @classmethod
    def _valid_coins(cls, value: list[str]) -> list[str]:
        import re

        bad = [c for c in value if not re.fullmatch(COIN_PATTERN, c) and c.upper() != "ALL"]
        if bad:
            msg = f"not coin names: {bad!r} (expected {COIN_PATTERN})"
            raise ValueError(msg)
        return value


VALIDATION_FLAGS: Final = (
    "max_clock_skew_ms",
    "max_price_jump",
    "trust_legacy_control",
    "max_json_depth",
)
"""The settings of the edge's frame validation, flags of every program that parses frames."""


def add_validation_flags(ap: argparse.ArgumentParser) -> None:
    """Add the `VALIDATION_FLAGS` to a command line (values checked by `Settings.load`)."""
    ap.add_argument("--max-clock-skew-ms", help="exchange time may lead receipt by this (60000)")
    ap.add_argument("--max-price-jump", help="max price / the coin's recent median (10)")
    ap.add_argument(
        "--trust-legacy-control",
        action="store_true",
        default=None,
        help="accept hlsl.* control frames inside raw (older captures)",
    )
    ap.add_argument("--max-json-depth", help="deepest JSON nesting accepted (64)")


HISTORY_FLAGS: Final = ("parquet",)
"""The settings of the research history outputs, flags of every program that writes envelopes."""


def add_history_flags(ap: argparse.ArgumentParser) -> None:
    """Add the `HISTORY_FLAGS` to a command line (values checked by `Settings.load`)."""
    ap.add_argument(
        "--parquet",
        metavar="DIR",
        help="also write every envelope as Parquet under DIR, hive-partitioned by UTC date and "
        "coin (HLSL_PARQUET)",
    )


def env_name(field: str) -> str:
    """The ``HLSL_*`` variable of a settings field."""
    return ENV_PREFIX + field.upper()


def flag_name(field: str, flags: Mapping[str, str] | None = None) -> str:
    """The command-line flag of a settings field (``--field-name`` unless ``flags`` says)."""
    if flags and field in flags:
        return flags[field]
    return "--" + field.replace("_", "-")


def known_variables() -> list[str]:
    """Every ``HLSL_*`` variable that means something here."""
    return sorted({env_name(f) for f in Settings.model_fields} | OTHER_VARIABLES)


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Raise `SettingsError` for an ``HLSL_*`` variable that names no setting (a typo).

    The message names the closest known variable (``HLSL_STOR`` → ``HLSL_STORE``...).
    """
    env = os.environ if environ is None else environ
    known = known_variables()
    unknown = sorted(k for k in env if k.upper().startswith(ENV_PREFIX) and k.upper() not in known)
    if not unknown:
        return
    problems = []
    for name in unknown:
        near = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]}?" if near else " (no setting has that name)"
        problems.append(f"unknown variable {name}{hint}")
    raise SettingsError("; ".join(problems))


def _number(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def _shown(field: str, value: Any) -> str:
    if field in SECRET_FIELDS:
        return "(hidden)"
    if field in URL_FIELDS and isinstance(value, str):
        return redact_url(value)
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    text = str(value)
    if not text or text != text.strip() or " " in text:
        return repr(text)
    return text


_ALLOWED: Final = {
    "greater_than_equal": ("ge", "must be >= {}"),
    "greater_than": ("gt", "must be > {}"),
    "less_than_equal": ("le", "must be <= {}"),
    "less_than": ("lt", "must be < {}"),
}
_KINDS: Final = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_parsing": "must be true or false (1/0, yes/no, on/off)",
    "bool_type": "must be true or false (1/0, yes/no, on/off)",
    "string_type": "must be text",
}


def _allowed(err: Mapping[str, Any]) -> str:
    kind = str(err.get("type"))
    ctx = err.get("ctx") or {}
    if kind in _ALLOWED:
        key, template = _ALLOWED[kind]
        return template.format(_number(ctx.get(key)))
    if kind in _KINDS:
        return _KINDS[kind]
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    msg = str(err.get("msg", "not allowed"))
    return msg[:1].lower() + msg[1:]


def settings_error(
    ex: ValidationError, from_flags: Collection[str], flags: Mapping[str, str] | None = None
) -> SettingsError:
    """One line for a settings validation error: who set what, the value, what is allowed.

    ``--port (HLSL_PORT) = 99999: must be <= 65535`` for a flag (a field in ``from_flags``),
    ``HLSL_PORT = abc: must be a whole number`` for a variable; several errors joined by ``; ``.
    """
    parts = []
    for err in ex.errors():
        loc = err.get("loc") or ("?",)
        field = str(loc[0])
        if field in from_flags:
            who = f"{flag_name(field, flags)} ({env_name(field)})"
        else:
            who = env_name(field)
        parts.append(f"{who} = {_shown(field, err.get('input'))}: {_allowed(err)}")
    return SettingsError("; ".join(parts))
