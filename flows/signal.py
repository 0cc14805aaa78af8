"""The Bytewax entry: ``python -m bytewax.run flows.signal`` (and ``bytewax.testing``).

Configured by ``HLSL_*`` variables (see `flows.settings.Settings`): it replays ``HLSL_REPLAY``
(files or directories of captures), or reads the exchange live, and ends cleanly on
SIGINT/SIGTERM. With ``HLSL_API=1`` (the default) the API is bound before the flow starts and
keeps serving after a replay ends, until SIGINT/SIGTERM; with ``HLSL_API=0`` a replay exits after
a summary (0, or 2 when it produced nothing). A start-up error (a setting, a capture, an output
path, the port, the exchange) is one line, ``cannot start: …``, and exit status 2; with no output
at all (no API, no ``HLSL_SIGNALS_OUT``, no ``HLSL_RECORD``) the flow refuses to start.

This is the one module allowed to import upward (from the composition root, `api.runtime`):
nothing imports it, and importing it builds the flow. The wiring is `flows.wiring.build_flow`;
the run is `flows.pipeline`.
"""

from __future__ import annotations

from api.runtime import flow_from_env

flow = flow_from_env()
