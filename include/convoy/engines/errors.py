"""Typed errors of the datastore engines; each carries the objects involved.

Messages quote the objects and never contain credentials.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from convoy.engines.base import RevertResult


class EngineError(Exception):
    """Base class of every datastore engine error.

    ``retriable`` says what the Airflow task does with it
    (:func:`convoy.airflow.retries.is_retriable`): ``True`` leaves it to the task's
    retries (another writer holds the datastore, the database throttles us: a
    later try can succeed); ``False``, the default, fails the task at once, because
    a retry would fail the same way (checksums, unsafe input, a failed migration...)
    and the rollback should not wait for it.
    """

    retriable: ClassVar[bool] = False


class UnsafeIdentifier(EngineError):
    """An identifier (table, column, key, schema) that convoy refuses to quote."""

    def __init__(self, value: str, field: str) -> None:
        self.value = value
        self.field = field
        super().__init__(
            f"{field}: {value!r} is not a safe identifier "
            "(letters, digits, _ and $, starting with a letter or _, at most 63 characters, "
            "optionally schema-qualified as schema.name)"
        )


class UnsafeExpression(EngineError):
    """A ``where``/``set`` text that is not exactly one SQL expression (see the policy check)."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class ChecksumMismatch(EngineError):
    """A migration was edited after it was applied."""

    def __init__(self, version: str, applied: str, current: str, path: str) -> None:
        self.version = version
        self.applied = applied
        self.current = current
        self.path = path
        super().__init__(
            f"migration {version} ({path}) was edited after it was applied: "
            f"checksum applied {applied}, file now {current}. Restore the file, or add a new "
            "migration; after review, repair(version, accept_checksum=True) accepts the new file"
        )


class FailedMigrationPresent(EngineError):
    """A migration failed part-way outside a transaction; a human must repair it."""

    def __init__(self, version: str, description: str, run_id: str) -> None:
        self.version = version
        self.description = description
        self.run_id = run_id
        super().__init__(
            f"migration {version} ({description}) failed in run {run_id!r} outside a "
            "transaction and may be half-applied; fix the database by hand, then call "
            f"repair({version!r}) before migrating again"
        )


class MigrationFailed(EngineError):
    """A migration raised an error; transactional ones were rolled back."""

    def __init__(self, version: str, path: str, sqlstate: str | None, message: str) -> None:
        self.version = version
        self.path = path
        self.sqlstate = sqlstate
        self.message = message
        super().__init__(f"migration {version} ({path}) failed [{sqlstate}]: {message}")


class OutOfOrderMigration(EngineError):
    """A pending migration has a lower version than one already applied."""

    def __init__(self, version: str, latest_applied: str) -> None:
        self.version = version
        self.latest_applied = latest_applied
        super().__init__(
            f"migration {version} is pending but {latest_applied} is already applied; "
            "give it a higher version"
        )


@dataclass(frozen=True)
class LockHolder:
    """A session holding the lock convoy waits for."""

    pid: int
    application_name: str
    user: str
    state: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.application_name or 'no application_name'}, {self.user})"


class LockTimeout(EngineError):
    """The datastore's advisory lock stayed taken for longer than the timeout."""

    retriable = True

    def __init__(self, lock: str, waited_s: float, holders: Sequence[LockHolder]) -> None:
        self.lock = lock
        self.waited_s = waited_s
        self.holders = tuple(holders)
        who = ", ".join(h.describe() for h in self.holders) or "a session that has since ended"
        super().__init__(
            f"lock {lock!r} is held by {who}; gave up after {waited_s:.1f}s "
            "(another run is working on this datastore)"
        )


class NothingToRevert(EngineError):
    """The run changed nothing that convoy could revert."""

    def __init__(self, run_id: str, datastore: str) -> None:
        self.run_id = run_id
        self.datastore = datastore
        super().__init__(f"run {run_id!r} changed nothing in datastore {datastore!r}")


class NoBackup(EngineError):
    """Revert needs a backup that does not exist."""

    def __init__(self, run_id: str, versions: Sequence[str], reason: str) -> None:
        self.run_id = run_id
        self.versions = tuple(versions)
        super().__init__(
            f"cannot revert versions {', '.join(self.versions) or '-'} of run {run_id!r}: {reason}"
        )


class UnknownTransform(EngineError):
    """A transform name that the datastore does not declare."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = tuple(known)
        super().__init__(f"unknown transform {name!r}; declared: {', '.join(known) or 'none'}")


class UnknownVersion(EngineError):
    """A version given to repair/baseline that is not known."""

    def __init__(self, version: str, reason: str) -> None:
        self.version = version
        super().__init__(f"version {version}: {reason}")


class BackupFailed(EngineError):
    """Taking or restoring a backup failed."""


class MigrationsUnreadable(EngineError):
    """The migrations directory has problems (bad names, duplicates)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("migrations have problems: " + "; ".join(self.problems))


class Throttled(EngineError):
    """A transform stayed paused (replication lag or lock waits) for too long."""

    retriable = True

    def __init__(self, transform: str, paused_s: float, reason: str) -> None:
        self.transform = transform
        self.paused_s = paused_s
        self.reason = reason
        super().__init__(f"transform {transform!r} paused for {paused_s:.0f}s: {reason}")


class MissingDataInterval(EngineError):
    """A transform's ``where`` uses the data interval but the run has none."""

    def __init__(self, transform: str, parameter: str) -> None:
        self.transform = transform
        self.parameter = parameter
        super().__init__(
            f"transform {transform!r}: where uses {{{{ {parameter} }}}} "
            "but the run has no data interval"
        )


class HistoryNotEmpty(EngineError):
    """Baseline refused: convoy already manages this datastore."""

    def __init__(self, datastore: str, versions: Sequence[str]) -> None:
        self.datastore = datastore
        self.versions = tuple(versions)
        super().__init__(
            f"cannot baseline {datastore!r}: history already has versions "
            f"{', '.join(self.versions)}"
        )


class RevertIncomplete(EngineError):
    """A revert did what it safely could and refused the rest (it would lose writes).

    ``result`` says what was reverted (before-images restored, conflicts, undo
    files run) and ``refused`` what was not and why; the caller still reports
    both, and the rollback ends failed so a human decides.
    """

    def __init__(self, datastore: str, result: RevertResult, refused: Sequence[str]) -> None:
        self.datastore = datastore
        self.result = result
        self.refused = tuple(refused)
        super().__init__(f"revert of {datastore!r} is incomplete: " + "; ".join(self.refused))
