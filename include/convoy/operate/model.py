"""What ``convoy status`` and ``convoy db`` report: verdicts, services, versions, backups.

Plain frozen dataclasses; ``to_dict()`` is the ``--json`` output (times as
ISO 8601, never a credential). No I/O and no Airflow here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["in sync", "pending", "drift", "degraded", "unknown"]

#: From best to worst; the overall verdict is the worst item's.
VERDICTS: tuple[Verdict, ...] = ("in sync", "pending", "drift", "degraded", "unknown")

#: ``convoy status`` exit code of each overall verdict (1: bad input, 2: usage error).
EXIT_CODES: dict[Verdict, int] = {
    "in sync": 0,
    "pending": 3,
    "drift": 4,
    "degraded": 5,
    "unknown": 6,
}


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """The worst of ``verdicts`` (``in sync`` when there are none)."""
    return max(verdicts, key=VERDICTS.index, default="in sync")


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class _Json:
    def to_dict(self) -> dict[str, Any]:
        out = _jsonable(self)
        assert isinstance(out, dict)
        return out


# --------------------------------------------------------------------------- services


@dataclass(frozen=True)
class ContainerState(_Json):
    name: str
    live: str | None
    target: str
    #: What convoy last set (``convoy.dev/images``), ``None`` when unknown.
    last_applied: str | None


@dataclass(frozen=True)
class ServiceState(_Json):
    name: str
    kind: str
    workload: str
    namespace: str
    verdict: Verdict
    reasons: tuple[str, ...]
    #: complete | progressing | failed | missing
    condition: str
    message: str
    containers: tuple[ContainerState, ...] = ()
    replicas: Mapping[str, int] = field(default_factory=dict)
    #: The run that last changed the workload (``convoy.dev/run-id``).
    run_id: str | None = None
    #: Images the last revert replaced (``convoy.dev/reverted-from``), if any.
    reverted_from: Mapping[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- datastores

VersionState = Literal[
    "applied",
    "pending",
    "failed",
    "running",
    "reverted",
    "baseline",
    "below baseline",
    "edited",
    "missing",
    "out of order",
]


@dataclass(frozen=True)
class VersionRow(_Json):
    """One version, Flyway ``info`` style."""

    version: str
    description: str
    state: VersionState
    #: Checksum recorded when applied (``None``: not applied, or a baseline).
    checksum: str | None
    #: Checksum of the file on disk (``None``: no file).
    file_checksum: str | None
    file: str | None
    run_id: str | None
    installed_on: dt.datetime | None
    #: The run whose revert undid it (state ``reverted``).
    reverted_by: str | None = None
    note: str = ""


@dataclass(frozen=True)
class BackupItem(_Json):
    """One stored artefact of a run: a copy, a dump file, an undo or audit table."""

    kind: str  # snapshot | pg_dump | undo | audit
    name: str
    source: str | None
    size_bytes: int | None
    restored: bool = False


@dataclass(frozen=True)
class BackupRun(_Json):
    """Everything kept for one run of one datastore (what a later rollback uses)."""

    datastore: str
    run_id: str
    policy: str
    created: dt.datetime | None
    items: tuple[BackupItem, ...]
    #: Why it must be kept (``None``: it may be pruned).
    protected: str | None = None

    @property
    def size_bytes(self) -> int:
        return sum(i.size_bytes or 0 for i in self.items)


@dataclass(frozen=True)
class Checkpoint(_Json):
    transform: str
    partition: str
    interval: str
    run_id: str
    rows_done: int
    updated: dt.datetime | None


@dataclass(frozen=True)
class DatastoreState(_Json):
    name: str
    type: str
    verdict: Verdict
    reasons: tuple[str, ...]
    versions: tuple[VersionRow, ...] = ()
    #: Who holds the datastore's one-writer lock (``None``: free).
    lock: str | None = None
    unfinished: tuple[Checkpoint, ...] = ()
    backups: tuple[BackupRun, ...] = ()
    error: str | None = None

    def versions_in(self, *states: str) -> list[str]:
        return [v.version for v in self.versions if v.state in states]

    def summary(self) -> dict[str, Any]:
        return {
            "applied": self.versions_in("applied", "edited", "missing", "baseline"),
            "pending": self.versions_in("pending", "reverted", "out of order"),
            "failed": self.versions_in("failed"),
            "reverted": self.versions_in("reverted"),
            "edited": self.versions_in("edited"),
            "missing": self.versions_in("missing"),
        }

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update(self.summary())
        out["backups_size_bytes"] = sum(b.size_bytes for b in self.backups)
        return out


@dataclass(frozen=True)
class StatusReport(_Json):
    policy: str
    services: tuple[ServiceState, ...]
    datastores: tuple[DatastoreState, ...]

    @property
    def verdict(self) -> Verdict:
        return worst([*(s.verdict for s in self.services), *(d.verdict for d in self.datastores)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "verdict": self.verdict,
            "exit_code": EXIT_CODES[self.verdict],
            "services": [s.to_dict() for s in self.services],
            "datastores": [d.to_dict() for d in self.datastores],
        }
