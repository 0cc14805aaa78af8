"""Views of a signal envelope: ``full`` (the envelope as published) or ``compact`` (what an agent
reads first), shared by the REST routes (``?view=`` and ``?features=``) and the MCP tools.

A full envelope is ~3.7 KB of JSON; a model reading a list of coins or a coin's history needs the
call, not every feature. The **compact** view keeps, per envelope:

- ``schema_version``, ``view: "compact"``, ``timestamp_ms``, ``coin``, ``direction``;
- ``regime``: ``label``, ``confidence``, ``since_ms``, ``candidate``, ``rule``;
- ``signals`` (momentum, liquidity, risk) as published;
- ``edge``: ``score``, ``actionable``, ``direction``, ``horizon_ms``, ``explain``, ``p_right``,
  ``expected_move_bps``, ``cost_bps``, ``net_edge_bps`` (those the schema has);
- ``freshness``: ``as_of_ms``, ``status`` and the streams that are ``stale`` / ``missing``;
- ``warmup`` as published, and ``degraded`` (null unless a step failed);
- ``features``: only the ones asked for by name (``features=mid_px,spread_bps``), with
  ``features_missing`` for those of them that are null.

Rules (the same everywhere): ``view`` is ``compact`` or ``full``; ``features`` without ``view``
means ``compact``; with ``view=full`` every feature is there anyway. An unknown feature name is an
error that lists the known ones. Compact sub-models are derived from `api.schemas` (field names,
types, ranges and descriptions are defined there once).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Final, Literal

import orjson
from fastapi import Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError

from api.schemas import Edge, Regime, SignalEnvelope
from connectors.events import Stream
from connectors.freshness import FreshnessStatus
from operators.calibration import Calibration
from operators.edge import CALIBRATION
from operators.features import FEATURE_NAMES

View = Literal["compact", "full"]
VIEWS: Final = ("compact", "full")
MAX_FEATURES: Final = len(FEATURE_NAMES)


def _skill_today(cal: Calibration | None) -> str:
    """What the shipped calibration table says of skill, read from the table itself (the
    evaluation writes each horizon's out-of-sample verdict there), so the text cannot drift
    from the evidence."""
    if cal is None:
        return " No calibration table is loaded: score is the heuristic raw_score."
    skilled = sorted(h for h, hc in cal.horizons.items() if hc.skill)
    if not skilled:
        return (
            f" In the shipped calibration table ({cal.version}) no horizon has demonstrated "
            "skill, so a directional call scores 0.5 (a FLAT one 0) and no call is actionable."
        )
    listed = ", ".join(f"{h} ms" for h in skilled)
    return f" In the shipped calibration table ({cal.version}) horizons with skill: {listed}."


EDGE_SCORE_MEANING: Final = (
    "edge.score is the calibrated probability that the direction is right at edge.horizon_ms "
    "(p_right), or 0.5 with explain code NO_DEMONSTRATED_SKILL where the evaluation found no "
    "out-of-sample skill; actionable requires the calibrated expected move to beat the stated "
    "costs." + _skill_today(CALIBRATION)
)
"""What ``edge.score`` means, said once (MCP tool descriptions and server instructions), with
what the shipped table's out-of-sample verdicts say today."""

COMPACT_REGIME: Final = ("label", "confidence", "since_ms", "candidate", "rule", "flag_evidence")
COMPACT_EDGE: Final = (
    "score",
    "actionable",
    "direction",
    "horizon_ms",
    "explain",
    "p_right",
    "expected_move_bps",
    "cost_bps",
    "net_edge_bps",
)

_FROZEN = ConfigDict(frozen=True, extra="forbid", use_enum_values=True, allow_inf_nan=False)


def _subset(model: type[BaseModel], names: Sequence[str], title: str, doc: str) -> Any:
    """A model with the fields of ``model`` named in ``names`` (those it has), defined as there."""
    fields: dict[str, Any] = {
        n: (f.annotation, f) for n, f in model.model_fields.items() if n in names
    }
    return create_model(title, __config__=_FROZEN, __doc__=doc, **fields)


CompactRegime = _subset(Regime, COMPACT_REGIME, "CompactRegime", "The regime call, compact.")
CompactEdge = _subset(Edge, COMPACT_EDGE, "CompactEdge", "The edge, compact (no cost breakdown).")


class CompactFreshness(BaseModel):
    """Freshness judged at ``as_of_ms``: the overall status and the streams that are not ok."""

    model_config = _FROZEN

    as_of_ms: int
    status: FreshnessStatus = Field(description="stale if any present stream is stale")
    stale: list[Stream] = Field(description="streams stale now")
    missing: list[Stream] = Field(description="streams never received")


_ENV = SignalEnvelope.model_fields


def _as_published(*names: str) -> dict[str, Any]:
    """Envelope fields kept as `api.schemas.SignalEnvelope` defines them."""
    return {n: (_ENV[n].annotation, _ENV[n]) for n in names}


_COMPACT_FIELDS: dict[str, Any] = {
    **_as_published("schema_version"),
    "view": (Literal["compact"], Field(description="this is the compact view")),
    **_as_published("timestamp_ms", "coin", "direction"),
    "regime": (CompactRegime, ...),
    **_as_published("signals"),
    "edge": (CompactEdge, ...),
    "freshness": (CompactFreshness, ...),
    **_as_published("warmup", "degraded"),
    "features": (
        dict[str, float | None] | None,
        Field(None, description="only the features asked for (features=...), by name"),
    ),
    "features_missing": (
        dict[str, str] | None,
        Field(None, description="why an asked-for feature is null"),
    ),
}
CompactSignal: Any = create_model(
    "CompactSignal",
    __config__=_FROZEN,
    __doc__="A signal envelope's compact view (view=compact): the call, not every feature.",
    **_COMPACT_FIELDS,
)


class ViewError(ValueError):
    """A ``view`` or ``features`` value that is not allowed (the message is one line)."""


def check_features(names: Iterable[str]) -> tuple[str, ...]:
    """The feature names asked for, in order without repeats.

    Raises:
        ViewError: a name that is not a feature (the message lists the known ones).
    """
    out: list[str] = []
    for name in names:
        if name not in FEATURE_NAMES:
            msg = f"unknown feature {name[:40]!r}; features: {', '.join(FEATURE_NAMES)}"
            raise ViewError(msg)
        if name not in out:
            out.append(name)
    return tuple(out)


def split_features(text: str | None) -> tuple[str, ...] | None:
    """``?features=mid_px,spread_bps`` → checked names (None when not given).

    Raises:
        ViewError: an empty item or an unknown name.
    """
    if text is None:
        return None
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        msg = "expected comma-separated feature names, e.g. mid_px,spread_bps"
        raise ViewError(msg)
    return check_features(names)


def resolve_view(view: View | None, features: Sequence[str] | None, default: View) -> View:
    """The view to render: as asked; ``compact`` when only features are asked; else default."""
    if view is not None:
        return view
    return "compact" if features is not None else default


def compact_envelope(
    env: Mapping[str, Any], features: Sequence[str] | None = None
) -> dict[str, Any]:
    """The compact view of one envelope (a published envelope as a dict)."""
    fresh = env["freshness"]
    streams = fresh.get("streams", {})
    reg = env["regime"]
    edge = env["edge"]
    out: dict[str, Any] = {
        "schema_version": env["schema_version"],
        "view": "compact",
        "timestamp_ms": env["timestamp_ms"],
        "coin": env["coin"],
        "direction": env["direction"],
        "regime": {k: reg[k] for k in CompactRegime.model_fields if k in reg},
        "signals": env["signals"],
        "edge": {k: edge[k] for k in CompactEdge.model_fields if k in edge},
        "freshness": {
            "as_of_ms": fresh["as_of_ms"],
            "status": fresh["status"],
            "stale": [n for n, s in streams.items() if s["status"] == FreshnessStatus.STALE],
            "missing": [n for n, s in streams.items() if s["status"] == FreshnessStatus.MISSING],
        },
        "warmup": env["warmup"],
        "degraded": env.get("degraded"),
    }
    if features:
        feats = env["features"]
        missing = env.get("features_missing", {})
        out["features"] = {n: feats.get(n) for n in features}
        out["features_missing"] = {n: missing[n] for n in features if n in missing}
    return out


def apply_view(doc: dict[str, Any], view: View, features: Sequence[str] | None) -> dict[str, Any]:
    """An envelope, or a ``{data: [...]}`` list / history document, in ``view``."""
    if view == "full":
        return doc
    if "data" in doc:
        data = [compact_envelope(e, features) for e in doc["data"]]
        return {**doc, "data": data}
    return compact_envelope(doc, features)


VIEW_PARAMETERS: Final[list[dict[str, Any]]] = [
    {
        "name": "view",
        "in": "query",
        "required": False,
        "schema": {"anyOf": [{"enum": ["compact", "full"], "type": "string"}, {"type": "null"}]},
        "description": "compact: regime, direction, edge, freshness, signals (and the features "
        "named in features=); full: the whole envelope. Default full here; compact when only "
        "features= is given",
    },
    {
        "name": "features",
        "in": "query",
        "required": False,
        "schema": {"anyOf": [{"type": "string", "maxLength": 2048}, {"type": "null"}]},
        "description": "comma-separated feature names to include in the compact view "
        "(e.g. mid_px,spread_bps); implies view=compact unless view=full",
    },
]
"""The ``view`` and ``features`` query parameters as OpenAPI describes them, for a route that
reads them by hand (`view_query`)."""


def view_query(params: Mapping[str, str]) -> tuple[View | None, str | None]:
    """``view`` and ``features`` from a query string, checked as `ViewQuery`/`FeaturesQuery`
    would check them (`ViewError` otherwise)."""
    view = params.get("view")
    features = params.get("features")
    if view is not None and view not in ("compact", "full"):
        msg = f"view: must be 'compact' or 'full', not {view[:40]!r}"
        raise ViewError(msg)
    if features is not None and len(features) > 2048:
        msg = "features: at most 2048 characters"
        raise ViewError(msg)
    return view, features  # type: ignore[return-value]


def render(body: bytes, view: View | None, features: str | None, default: View = "full") -> bytes:
    """A REST body (an envelope, a list or a history, as JSON bytes) in the view asked for
    (``features``: the ``?features=`` text, checked by `FeaturesQuery`).

    The full view is the body itself (no parse, no copy).
    """
    names = split_features(features)
    chosen = resolve_view(view, names, default)
    if chosen == "full":
        return body
    return orjson.dumps(apply_view(orjson.loads(body), chosen, names))


def _query_features(text: str | None) -> str | None:
    try:
        split_features(text)
    except ViewError as ex:
        # FastAPI's 422 "features: <message>" (a ValueError would add "Value error, ")
        kind = "feature_names"
        raise PydanticCustomError(kind, str(ex)) from None
    return text


ViewQuery = Annotated[
    View | None,
    Query(
        description="compact: regime, direction, edge, freshness, signals (and the features "
        "named in features=); full: the whole envelope. Default full here; compact when only "
        "features= is given"
    ),
]
FeaturesQuery = Annotated[
    str | None,
    Query(
        max_length=2048,
        description="comma-separated feature names to include in the compact view "
        "(e.g. mid_px,spread_bps); implies view=compact unless view=full",
    ),
    AfterValidator(_query_features),
]

__all__ = [
    "EDGE_SCORE_MEANING",
    "CompactSignal",
    "FeaturesQuery",
    "View",
    "ViewError",
    "ViewQuery",
    "apply_view",
    "check_features",
    "compact_envelope",
    "render",
    "resolve_view",
    "split_features",
]
