"""MCP over stdio: `protect_stdout` keeps the process's stdout for protocol messages only, and
`run_stdio` serves a server on it until stdin closes.
"""

from __future__ import annotations

import os
import sys
from io import TextIOWrapper
from typing import Any, BinaryIO

import anyio
from mcp.server.fastmcp import FastMCP
from mcp.server.stdio import stdio_server


def protect_stdout() -> BinaryIO:
    """Keep the process's stdout for MCP messages only; everything else goes to stderr.

    File descriptor 1 is duplicated for the protocol, then pointed at stderr, and ``sys.stdout``
    becomes ``sys.stderr``: ``print``, logging, Bytewax (Rust) and C libraries writing to
    stdout all land on stderr.

    Returns:
        The binary stream of the real stdout (for `run_stdio`).
    """
    sys.stdout.flush()
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(proto_fd, "wb")


def run_stdio(server: FastMCP[Any], out: BinaryIO) -> None:
    """Serve MCP over stdin and ``out`` until stdin closes.

    Args:
        server: the server (`build_server`).
        out: where protocol messages go (`protect_stdout`).
    """

    async def serve() -> None:
        stdout = anyio.wrap_file(TextIOWrapper(out, encoding="utf-8"))
        async with stdio_server(stdout=stdout) as (read, write):
            # FastMCP.run_stdio_async always writes to sys.stdout, which is stderr by now: run
            # its low-level server on our streams instead (a private attribute, no public
            # accessor in 1.x; what run_stdio_async itself does).
            low = server._mcp_server
            await low.run(read, write, low.create_initialization_options())

    anyio.run(serve)
