"""The one settings object: ``HLSL_*`` environment variables, mirrored by the CLI flags.

``HLSL_REPLAY`` and ``HLSL_COINS`` take comma-separated lists. Invalid values fail at start with a
message naming the variable.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from operators.calibration import UNCALIBRATED, Calibration, load_default
from operators.calibration import load as load_calibration

COIN_PATTERN = r"^[A-Za-z0-9:@_-]{1,32}$"


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

    model_config = SettingsConfigDict(env_prefix="HLSL_", env_ignore_empty=True, extra="ignore")

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
    taker_fee_bps: float = Field(4.5, ge=0, le=1000, description="taker fee in the edge's costs")
    edge_size_usd: float = Field(10_000.0, gt=0, description="size the slippage is measured for")
    api_token: str | None = Field(
        None, description="bearer token required on every route but /health"
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

    @field_validator("coins")
    @classmethod
    def _valid_coins(cls, value: list[str]) -> list[str]:
        import re

        bad = [c for c in value if not re.fullmatch(COIN_PATTERN, c) and c.upper() != "ALL"]
        if bad:
            msg = f"not coin names: {bad!r} (expected {COIN_PATTERN})"
            raise ValueError(msg)
        return value
