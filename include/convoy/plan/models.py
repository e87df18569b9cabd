"""Frozen step types of a plan. Pure data: no Airflow, no I/O."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, is_dataclass
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
    mappings with sorted string keys. Every DAG file parse computes the digest
    of every plan, and ``asdict`` deep-copies each leaf before the round trip
    turns the copies into JSON text and back.
    """
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    names = _FIELDS.get(type(value))
    if names is None and is_dataclass(value) and not isinstance(value, type):
        names = _FIELDS[type(value)] = tuple(f.name for f in fields(value))
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in sorted(names)}
    if isinstance(value, dict):
        items = ((k if isinstance(k, str) else json.dumps(k), v) for k, v in value.items())
        return {k: _plain(v) for k, v in sorted(items)}
    return value


_FIELDS: dict[type, tuple[str, ...]] = {}


def compute_digest(plan: Plan) -> str:
    """sha256 of the canonical JSON of the plan (sorted keys, no whitespace)."""
    canonical = json.dumps(_content(plan), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
