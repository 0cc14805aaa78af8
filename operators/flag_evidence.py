"""Whether the risk flag has been shown to mean what it says, per bar length.

The regime's risk flag (LIQUIDATION_RISK or CHAOTIC) claims that forward volatility is high. It is
worth that claim only where it separates the next hour's realised volatility better than the
obvious baseline, the one-line rule "trailing 1 h realised vol / its 24 h median" flagging the same
share of bars, out of sample on real data. The evaluation measures this per bar length
(`tools.evaluate.flag_tradeoff --write-evidence`) and writes the verdicts to a versioned table,
``operators/flag_evidence.json``::

    {"format": "hlsl-flag-evidence/1",
     "version": "<digest>-<split date>",
     "rule": "<the verdict's rule, in words>",
     "bar_ms": {"<bar_ms>": {"verdict": "demonstrated" | "not_demonstrated",
                             "series": [{"coin", "days", "margin", "margin_lo",
                                         "margin_hi", "beats"}, ...]}}}

Every envelope carries the verdict for its bar length as ``regime.flag_evidence``
(`FlagEvidence`): ``demonstrated``, ``not_demonstrated`` (measured, and the interval of the
margin over the rule reaches 0 on some coin), or ``untested`` (no real data of that bar length was
evaluated, e.g. 1 s bars: a 35-minute capture cannot score a flag over the next hour). A table of
another format is refused with a clear error, never read silently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

TABLE_FORMAT: Final = "hlsl-flag-evidence/1"
DEFAULT_PATH: Final = Path(__file__).resolve().parent / "flag_evidence.json"


class FlagEvidence(StrEnum):
    """The out-of-sample verdict on the risk flag at the envelope's bar length."""

    DEMONSTRATED = "demonstrated"
    """Every coin evaluated at this bar length: the flag's AUC margin over the one-line rule at
    the same flag rate has a 95 % block-bootstrap lower bound above 0."""
    NOT_DEMONSTRATED = "not_demonstrated"
    """Evaluated, but on some coin the margin's interval reaches 0 (or the flag lost)."""
    UNTESTED = "untested"
    """No real data of this bar length was evaluated."""


@dataclass(frozen=True, slots=True)
class EvidenceTable:
    """The verdicts by bar length, with the table's version and rule."""

    version: str
    rule: str
    verdicts: Mapping[int, FlagEvidence]

    def verdict(self, bar_ms: int) -> FlagEvidence:
        """The verdict for envelopes of ``bar_ms`` bars (`UNTESTED` when not evaluated)."""
        return self.verdicts.get(bar_ms, FlagEvidence.UNTESTED)

    def demonstrated_bar_ms(self) -> tuple[int, ...]:
        """The bar lengths with a demonstrated flag, shortest first."""
        return tuple(sorted(b for b, v in self.verdicts.items() if v is FlagEvidence.DEMONSTRATED))


def parse(doc: Any, path: Path | None = None) -> EvidenceTable:
    """Validate and load a table document. Raises ValueError (also for another format)."""
    where = f"flag evidence table {path or '(document)'}"
    if not isinstance(doc, dict):
        msg = f"{where}: expected a JSON object"
        raise ValueError(msg)
    fmt = doc.get("format")
    if fmt != TABLE_FORMAT:
        msg = (
            f"{where}: format {fmt!r} is not {TABLE_FORMAT!r}; regenerate it with python -m "
            "tools.evaluate.flag_tradeoff CANDLE_FILES --write-evidence PATH"
        )
        raise ValueError(msg)
    version, rule, bars = doc.get("version"), doc.get("rule"), doc.get("bar_ms")
    if not isinstance(version, str) or not version:
        msg = f"{where}: version must be a non-empty string"
        raise ValueError(msg)
    if not isinstance(rule, str) or not rule:
        msg = f"{where}: rule must be a non-empty string"
        raise ValueError(msg)
    if not isinstance(bars, dict):
        msg = f"{where}: bar_ms must be an object of bar lengths"
        raise ValueError(msg)
    verdicts: dict[int, FlagEvidence] = {}
    for key, entry in bars.items():
        if not (isinstance(key, str) and key.isdigit() and int(key) > 0):
            msg = f"{where}: bar_ms key {key!r} is not a positive number of milliseconds"
            raise ValueError(msg)
        verdict = entry.get("verdict") if isinstance(entry, dict) else None
        allowed = (FlagEvidence.DEMONSTRATED.value, FlagEvidence.NOT_DEMONSTRATED.value)
        if verdict not in allowed:
            msg = f"{where}: bar_ms {key}: verdict {verdict!r} is not one of {allowed}"
            raise ValueError(msg)
        verdicts[int(key)] = FlagEvidence(verdict)
    return EvidenceTable(version, rule, verdicts)


def load(path: Path = DEFAULT_PATH) -> EvidenceTable:
    """The table at ``path`` (a missing or malformed file raises: the table ships with the code)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as ex:
        msg = f"flag evidence table {path}: {ex}"
        raise ValueError(msg) from ex
    return parse(doc, path)


EVIDENCE: Final = load()
"""The shipped table, loaded once."""
