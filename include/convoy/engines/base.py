"""The lifecycle every datastore kind implements, and its JSON-able results.

A run of one datastore step goes ``backup -> migrate -> partitions ->
transform(partition)... -> (validation) -> revert on failure``. Every stage
takes a :class:`RunContext`; ``plan`` describes what a run would do without
doing it. Results are frozen dataclasses whose ``to_dict()`` is JSON-able and
never contains credentials (they go to XCom and the run report).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from convoy.observe.progress import Progress
from convoy.plan.specs import MongoSpec, PostgresSpec
from convoy.policy.migrations import MigrationFile
from convoy.redaction import get_logger

LogFn = Callable[[str], None]
#: Receives the latest progress of a long stage (``convoy.observe.progress.progress_value``).
ProgressSink = Callable[[Mapping[str, Any]], None]

_logger = get_logger("convoy.engines")


def _default_log(message: str) -> None:
    _logger.info(message)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class _Result:
    """``to_dict()`` for the frozen result dataclasses below."""

    def to_dict(self) -> dict[str, Any]:
        out = _jsonable(self)
        assert isinstance(out, dict)
        return out


@dataclass(frozen=True)
class RunContext:
    """Who is running (policy, run), on which datastore, for which data interval."""

    policy_name: str
    run_id: str
    datastore: PostgresSpec | MongoSpec
    base_dir: Path
    data_interval_start: dt.datetime | None = None
    data_interval_end: dt.datetime | None = None
    log: LogFn = field(default=_default_log, compare=False, repr=False)
    #: Where every stage (backup, migrate, transform, revert) publishes its progress
    #: while it runs (``None``: only log lines).
    progress: ProgressSink | None = field(default=None, compare=False, repr=False)
    #: The migration files the run executes, with their content, as frozen at
    #: preflight (``convoy.plan.record``); ``None``: scan ``migrations_dir`` now
    #: (the CLI, tests).
    migrations: tuple[MigrationFile, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def interval_key(self) -> str:
        """Checkpoint key: the data interval, or the run when there is none."""
        if self.data_interval_start is None and self.data_interval_end is None:
            return f"run:{self.run_id}"
        start = self.data_interval_start.isoformat() if self.data_interval_start else ""
        end = self.data_interval_end.isoformat() if self.data_interval_end else ""
        return f"{start}/{end}"

    @property
    def migrations_dir(self) -> Path | None:
        if self.datastore.migrations is None:
            return None
        return (self.base_dir / self.datastore.migrations).resolve()


@dataclass(frozen=True)
class Action(_Result):
    """One thing a stage would do (dry runs and ``plan``)."""

    stage: str
    kind: str
    target: str
    detail: str = ""


@dataclass(frozen=True)
class Partition(_Result):
    """A key range ``[lower, upper)`` of a transform; ``None`` is unbounded.

    Bounds are the key values as text (the database casts them back), so a
    partition travels through XCom as plain JSON (:meth:`from_dict`).
    """

    transform: str
    index: int
    count: int
    lower: str | None
    upper: str | None

    @property
    def id(self) -> str:
        return f"{self.index + 1}of{self.count}[{self.lower or ''},{self.upper or ''})"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Partition:
        return cls(
            transform=str(data["transform"]),
            index=int(data["index"]),
            count=int(data["count"]),
            lower=None if data.get("lower") is None else str(data["lower"]),
            upper=None if data.get("upper") is None else str(data["upper"]),
        )


@dataclass(frozen=True)
class BackupResult(_Result):
    datastore: str
    mode: str
    tables: tuple[str, ...]
    location: str | None
    dry_run: bool
    skipped_existing: bool = False


@dataclass(frozen=True)
class MigrationRun(_Result):
    version: str
    description: str
    checksum: str
    transactional: bool
    execution_ms: int
    status: str  # applied | rolled-back (dry run) | listed (dry run, no-transaction)


@dataclass(frozen=True)
class MigrateResult(_Result):
    datastore: str
    dry_run: bool
    applied: tuple[MigrationRun, ...]
    pending: tuple[str, ...]
    already_applied: tuple[str, ...]


@dataclass(frozen=True)
class TransformResult(_Result):
    datastore: str
    transform: str
    partition: str | None
    interval: str
    dry_run: bool
    rows_done: int
    batches: int
    resumed_from: str | None
    done: bool
    elapsed_s: float
    paused_s: float = 0.0
    rows_matching: int | None = None


@dataclass(frozen=True)
class RevertResult(_Result):
    datastore: str
    run_id: str
    dry_run: bool
    undone: tuple[str, ...]
    restored_from_backup: tuple[str, ...]
    restored_tables: tuple[str, ...]
    dropped_tables: tuple[str, ...]
    #: Rows/documents set back to their before-image (transforms, compare-and-set).
    rows_restored: int = 0
    #: Rows/documents the application changed after convoy did: left as they are.
    rows_conflicting: int = 0
    #: Rows/documents the application deleted after convoy changed them (nothing to undo).
    rows_gone: int = 0
    #: The first conflicting keys, ``<table or collection>:<key>`` (all are kept in the
    #: datastore's undo log).
    conflicts: tuple[str, ...] = ()
    #: What was not reverted because it would discard application writes, with why.
    refused: tuple[str, ...] = ()


@dataclass(frozen=True)
class HistoryEntry(_Result):
    rank: int
    version: str
    description: str
    kind: str
    checksum: str | None
    policy: str
    run_id: str
    installed_on: dt.datetime
    execution_ms: int
    success: bool
    rolled_back: bool
    reverted_on: dt.datetime | None
    repaired_on: dt.datetime | None


@runtime_checkable
class DatastoreEngine(Protocol):
    """The lifecycle of one datastore kind (see module docstring)."""

    def plan(self, ctx: RunContext) -> list[Action]:
        """What a run would do, computed read-only."""
        ...

    def backup(self, ctx: RunContext, *, dry_run: bool = False) -> BackupResult: ...

    def migrate(self, ctx: RunContext, *, dry_run: bool = False) -> MigrateResult: ...

    def partitions(
        self, ctx: RunContext, transform_name: str, max_partitions: int
    ) -> list[Partition]: ...

    def transform(
        self,
        ctx: RunContext,
        transform_name: str,
        partition: Partition | None = None,
        *,
        dry_run: bool = False,
    ) -> TransformResult: ...

    def revert(self, ctx: RunContext, *, dry_run: bool = False) -> RevertResult: ...

    def complete(self, ctx: RunContext) -> list[str]:
        """End what a finished, not reverted run left in flight; what was removed."""
        ...

    def history(self, ctx: RunContext) -> list[HistoryEntry]: ...


def stage_progress(
    ctx: RunContext, stage: str, total: int, *, unit: str, interval_s: float, done: int = 0
) -> Progress:
    """Progress of one stage of ``ctx``'s datastore, labelled ``<datastore>/<stage>``.

    It publishes the total and what is already ``done`` at once, so that a long
    first step (one big table, one slow migration) already shows on the
    Upgrades page.
    """
    progress = Progress(
        total,
        f"{ctx.datastore.name}/{stage}",
        ctx.log,
        unit=unit,
        min_interval_s=interval_s,
        sink=ctx.progress,
    )
    progress.advance(done)
    return progress
