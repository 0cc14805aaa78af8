"""Where this process stands in a Bytewax run, and what a run of several processes may do.

`bytewax_cluster` reads how ``python -m bytewax.run`` (or ``bytewax.testing -p N``) runs this
process; `Cluster` answers the questions the pipeline asks of it (per-process output names, the
run key a partitioned replay shares, the processes sharing this host's IP); `check_cluster`
refuses at start what the store cannot serve.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from flows.settings import Settings
from flows.startup import StartupError

STORE_KINDS: Final = ("memory", "redis")
"""Where envelopes are kept: ``memory`` (each process its own `SignalStore`) or ``redis`` (one
store every process writes and every API reads, `connectors.redis_store`)."""
_COMPRESSED: Final = (".gz", ".lz4")


@dataclass(frozen=True)
class Cluster:
    """Where this process stands in a Bytewax run: its id, the processes, workers in each.

    One process with one worker is the default (``api.server``, ``tools.replay``); `bytewax_cluster`
    reads what ``python -m bytewax.run`` was given.
    """

    process_id: int = 0
    processes: int = 1
    workers_per_process: int = 1
    addresses: tuple[str, ...] = ()

    @property
    def workers(self) -> int:
        """Workers of the whole run (the partitioned replay takes over above one)."""
        return self.processes * self.workers_per_process

    def output_path(self, path: str | None) -> str | None:
        """An output file of this process: with several processes, ``signals.ndjson`` becomes
        ``signals.p0.ndjson`` (the suffix goes before the extension, a ``.gz``/``.lz4`` kept at
        the end: ``rec.p1.ndjson.gz``) so processes never interleave in one file."""
        if path is None or self.processes <= 1:
            return path
        p = Path(path)
        name = p.name
        tail = next((c for c in _COMPRESSED if name.lower().endswith(c)), "")
        stem = name[: len(name) - len(tail)]
        base, dot, ext = stem.rpartition(".")
        if not dot or not base:
            base, ext = stem, ""
        suffixed = f"{base}.p{self.process_id}" + (f".{ext}" if ext else "") + tail
        return str(p.with_name(suffixed))

    def processes_on_this_host(self) -> int:
        """Processes of the run whose address names this process's host (they share its IP;
        ``localhost`` and ``127.*`` count as one host). One outside a cluster."""
        if self.processes <= 1 or not self.addresses:
            return 1

        def host(address: str) -> str:
            h = address.rsplit(":", 1)[0].strip("[]").lower()
            return "loopback" if h == "localhost" or h.startswith("127.") or h == "::1" else h

        mine = host(self.addresses[self.process_id])
        return sum(1 for a in self.addresses if host(a) == mine)

    def run_key(self) -> str:
        """What the processes of this run share and no concurrent run does (the addresses of a
        cluster; this process otherwise)."""
        if self.processes > 1:
            return "cluster " + ";".join(self.addresses)
        return f"process {os.getpid()}"


def bytewax_cluster(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Cluster:
    """How ``python -m bytewax.run`` runs this process (one process when it does not).

    Reads the command line as ``bytewax.run`` does (bytewax-0.21.md §5.1): ``-i/--process-id``,
    ``-a/--addresses`` (``"h1:p;h2:p"``: one address per process) and
    ``-w/--workers-per-process``, with the same environment fallbacks (``BYTEWAX_PROCESS_ID``,
    ``BYTEWAX_ADDRESSES``, ``BYTEWAX_WORKERS_PER_PROCESS``, and a Kubernetes pod's
    ``BYTEWAX_POD_NAME``/``BYTEWAX_STATEFULSET_NAME`` and ``BYTEWAX_HOSTFILE_PATH``).
    ``python -m bytewax.testing flows.signal -p N`` starts N such processes.

    Args:
        argv: the arguments after the program (default: ``sys.argv[1:]``, read only when this
            process is ``python -m bytewax.run``).
        environ: the environment (default: ``os.environ``).
    """
    env = os.environ if environ is None else environ
    if argv is None:
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is None or spec.name != "bytewax.run":
            return Cluster()
        argv = sys.argv[1:]
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("-w", "--workers-per-process", type=int)
    ap.add_argument("-i", "--process-id", type=int)
    ap.add_argument("-a", "--addresses")
    ns, _ = ap.parse_known_args(list(argv))
    workers = ns.workers_per_process or int(env.get("BYTEWAX_WORKERS_PER_PROCESS") or 1)
    pid = ns.process_id
    if pid is None and env.get("BYTEWAX_PROCESS_ID"):
        pid = int(env["BYTEWAX_PROCESS_ID"])
    if pid is None and "BYTEWAX_POD_NAME" in env and "BYTEWAX_STATEFULSET_NAME" in env:
        pid = int(env["BYTEWAX_POD_NAME"].replace(env["BYTEWAX_STATEFULSET_NAME"] + "-", ""))
    addresses = ns.addresses or env.get("BYTEWAX_ADDRESSES")
    if pid is not None and addresses is None and "BYTEWAX_HOSTFILE_PATH" in env:
        with open(env["BYTEWAX_HOSTFILE_PATH"]) as fh:
            addresses = ";".join(line.strip() for line in fh if line.strip())
    if pid is None or not addresses:
        return Cluster(workers_per_process=max(1, workers))
    hosts = tuple(a for a in addresses.split(";") if a)
    return Cluster(pid, max(1, len(hosts)), max(1, workers), hosts)


def check_cluster(settings: Settings, cluster: Cluster, store: str = "memory") -> None:
    """Refuse at start a run the store cannot serve (`StartupError`, one line).

    With the in-memory store each process keeps the envelopes of the coins keyed to it, so with
    several processes an API would answer for a subset of the coins: ``-p N`` (or ``-i/-a`` with
    several addresses) and ``HLSL_API=1`` are refused. A store that every process shares lifts
    this; ``store`` names the kind (`STORE_KINDS`).
    """
    if store not in STORE_KINDS:
        msg = f"store {store!r}: one of {', '.join(STORE_KINDS)}"
        raise StartupError(msg)
    if cluster.processes > 1 and settings.api and store == "memory":
        msg = (
            f"a cluster of {cluster.processes} processes with the API on (HLSL_API=1) and the "
            "in-memory store: each process holds only the coins keyed to it, so the API would "
            "serve a subset of them; run it with HLSL_API=0 and HLSL_SIGNALS_OUT (one file per "
            "process), or as one process"
        )
        raise StartupError(msg)
