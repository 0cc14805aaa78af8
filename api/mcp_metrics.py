"""MCP tool-call counts behind ``hlsl_mcp_tool_calls_total{tool,outcome}``.

Process-wide, not per app: the stdio MCP server (``python -m api.mcp``) has no app or registry.
`api.mcp` counts each call with `mcp_tool_call`; `api.metrics.ServiceCollector` exports the
counts at scrape time. Tool names become labels, so they are bounded (`MAX_TOOL_LABELS`) and
checked; anything else counts as ``other``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

MAX_TOOL_LABELS: Final = 64
"""Distinct tool names counted at most; later unknown names count as ``other``."""

_TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
OUTCOMES: Final = ("ok", "error")


class ToolCalls:
    """Thread-safe counts of MCP tool calls per ``(tool, outcome)``, with bounded labels."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._tools: set[str] = set()

    def record(self, tool: str, outcome: str) -> None:
        """Count one call of ``tool`` that ended ``ok`` or with an ``error``."""
        with self._lock:
            if tool not in self._tools:
                if len(self._tools) >= MAX_TOOL_LABELS or not _TOOL_NAME.fullmatch(tool):
                    tool = "other"
                self._tools.add(tool)
            key = (tool, outcome if outcome in OUTCOMES else "error")
            self._counts[key] = self._counts.get(key, 0) + 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        """The counts so far."""
        with self._lock:
            return dict(self._counts)

    def clear(self) -> None:
        """Forget every count (for tests)."""
        with self._lock:
            self._counts.clear()
            self._tools.clear()


MCP_TOOL_CALLS: Final = ToolCalls()
"""The process-wide MCP tool-call counts behind ``hlsl_mcp_tool_calls_total``."""


def record_mcp_tool_call(tool: str, outcome: str) -> None:
    """Count one MCP tool call (``outcome``: ``ok`` or ``error``)."""
    MCP_TOOL_CALLS.record(tool, outcome)


@contextmanager
def mcp_tool_call(tool: str) -> Iterator[None]:
    """Count the call made inside the block: ``error`` if it raises, else ``ok``.

    In `api.mcp.server.SignalServer`, around the SDK's dispatch::

        async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
            with mcp_tool_call(name):
                return await super().call_tool(name, arguments)
    """
    try:
        yield
    except BaseException:
        record_mcp_tool_call(tool, "error")
        raise
    record_mcp_tool_call(tool, "ok")


__all__ = [
    "MAX_TOOL_LABELS",
    "MCP_TOOL_CALLS",
    "OUTCOMES",
    "ToolCalls",
    "mcp_tool_call",
    "record_mcp_tool_call",
]
