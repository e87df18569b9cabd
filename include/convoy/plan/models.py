"""Frozen step types of a plan. Pure data: no Airflow, no I/O."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass, field, fields, is_dataclass
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any, Final, Literal

DatastoreStage = Literal["backup", "migrate", "transform", "validate"]
STAGES: tuple[DatastoreStage, ...] = ("backup", "migrate", "transform", "validate")

BEFORE_ROLLOUT: Final = "before-rollout"
#: Where a datastore phase runs: before any rollout, or right after wave ``n``.
Position = Literal["before-rollout"] | int


@dataclass(frozen=True)
class RolloutStep:
    """Apply new container images to one workload (one service)."""

    service: str
    namespace: str
    kind: str
    workload: str
    containers: tuple[tuple[str, str], ...]
    depends_on: tuple[str, ...]
    wave: int


@dataclass(frozen=True)
class Wave:
    """One ``dependsOn`` level: services whose longest dependency chain has ``index`` links."""

    index: int
    steps: tuple[RolloutStep, ...]

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(s.service for s in self.steps)


@dataclass(frozen=True)
class DatastoreStep:
    """One stage of bringing a datastore to the new specification."""

    datastore: str
    type: str
    conn_id: str
    stage: DatastoreStage
    detail: str
    position: Position


@dataclass(frozen=True)
class DatastorePhase:
    """The stages of one datastore (backup -> migrate -> transform -> validate), in order."""

    datastore: str
    type: str
    conn_id: str
    position: Position
    after: tuple[str, ...] | None
    steps: tuple[DatastoreStep, ...]


@dataclass(frozen=True)
class RevertDataStep:
    """Undo a datastore phase (undo migrations or restore the backup)."""

    datastore: str
    type: str
    conn_id: str
    position: Position
    action: Literal["revert-data"] = "revert-data"


@dataclass(frozen=True)
class RevertImagesStep:
    """Put the previous images of one rollout step back."""

    service: str
    namespace: str
    kind: str
    workload: str
    wave: int
    action: Literal["revert-images"] = "revert-images"


RollbackStep = RevertDataStep | RevertImagesStep


@dataclass(frozen=True)
class ApprovalGate:
    """A human must approve the run after preflight, before any change (``approval``)."""

    approvers: tuple[str, ...]
    timeout_minutes: int


@dataclass(frozen=True)
class Plan:
    """Everything a run of a policy will do, in order. ``digest`` identifies it byte for byte."""

    policy_name: str
    namespace: str
    execution: str
    max_parallel: int
    deadline_seconds: int
    services: tuple[str, ...]
    waves: tuple[Wave, ...]
    datastore_phases: tuple[DatastorePhase, ...]
    rollback: tuple[RollbackStep, ...]
    rollback_automatic: bool
    approval: ApprovalGate | None = None
    digest: str = field(default="", compare=False)

    @property
    def steps(self) -> tuple[RolloutStep, ...]:
        return tuple(s for w in self.waves for s in w.steps)

    def step(self, service: str) -> RolloutStep:
        for s in self.steps:
            if s.service == service:
                return s
        raise KeyError(service)

    def phases_at(self, position: Position) -> tuple[DatastorePhase, ...]:
        return tuple(p for p in self.datastore_phases if p.position == position)

    def to_dict(self) -> dict[str, Any]:
        data = _content(self)
        data["digest"] = self.digest
        return data

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)


def _content(plan: Plan) -> dict[str, Any]:
    data: dict[str, Any] = _plain(plan)
    data.pop("digest")
    if data.get("approval") is None:
        # Plans without an approval keep the digest they had before the gate existed.
        data.pop("approval", None)
    return data


def _plain(value: Any) -> Any:
    """What ``json.loads(json.dumps(asdict(value), sort_keys=True))`` gives, in one walk.

    JSON has no tuples, so the shape is explicit and stable: lists, and
    mappings with sorted string keys. ``asdict`` would deep-copy each leaf
    before the round trip turns the copies into JSON text and back.
    """
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    names = _field_names(value)
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in names}
    if isinstance(value, dict):
        items = ((k if isinstance(k, str) else json.dumps(k), v) for k, v in value.items())
        return {k: _plain(v) for k, v in sorted(items)}
    return value


def _field_names(value: Any) -> tuple[str, ...] | None:
    """The field names of a dataclass instance, sorted as JSON's ``sort_keys`` sorts them."""
    names = _SORTED_FIELDS.get(type(value))
    if names is None and is_dataclass(value) and not isinstance(value, type):
        names = _SORTED_FIELDS[type(value)] = tuple(sorted(f.name for f in fields(value)))
    return names


_SORTED_FIELDS: dict[type, tuple[str, ...]] = {}


def compute_digest(plan: Plan) -> str:
    """sha256 of the canonical JSON of the plan (sorted keys, no whitespace).

    The text is ``json.dumps(_content(plan), sort_keys=True, separators=(",", ":"))``
    (``canonical_json``), written in one walk: every parse of the DAG file
    computes the digest of every policy's plan.
    """
    return hashlib.sha256(canonical_json(plan).encode("utf-8")).hexdigest()


def canonical_json(plan: Plan) -> str:
    """The plan's content (no digest; no approval key without a gate) as canonical JSON."""
    out: list[str] = []
    skip = {"digest"} if plan.approval is not None else {"digest", "approval"}
    _write_fields(plan, out, skip)
    return "".join(out)


def _write_fields(value: Any, out: list[str], skip: Collection[str] = ()) -> None:
    out.append("{")
    first = True
    for name in _field_names(value) or ():
        if name in skip:
            continue
        if not first:
            out.append(",")
        first = False
        out.append(_json_str(name))
        out.append(":")
        _write(getattr(value, name), out)
    out.append("}")


def _write(value: Any, out: list[str]) -> None:
    """``value`` as ``json.dumps`` writes ``_plain(value)`` (sorted keys, no whitespace)."""
    kind = type(value)
    # Exact types first: they are almost every value of a plan.
    if kind is str:
        out.append(_json_str(value))
    elif kind is int:
        out.append(int.__repr__(value))
    elif kind is tuple or isinstance(value, tuple | list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif _field_names(value) is not None:
        _write_fields(value, out)
    elif isinstance(value, str):
        out.append(_json_str(value))
    elif value is None or isinstance(value, bool | int | float):
        out.append(json.dumps(value))
    elif isinstance(value, dict):
        out.append(json.dumps(_plain(value), sort_keys=True, separators=(",", ":")))
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
