"""Versioned Python migrations: ``V<version>__<desc>.py`` with ``up(db)`` and optional ``down(db)``.

Each file is executed from the exact bytes whose checksum is compared with the
changelog (read once, checksum verified, compiled), as a fresh module named
``convoy_mongo_migration_<checksum prefix>`` that is not kept in
``sys.modules``. Migrations run one at a time in version order under the
database lock; each attempt is recorded *before* ``up`` runs (``running``) and
finished as ``applied`` or ``failed``.

With ``backup: snapshot``, each migration is bracketed by digests of the
snapshotted collections in its scope (:func:`backup.before_migration`,
:func:`backup.after_migration`), so a revert can tell whether anyone else
wrote to a collection before restoring its snapshot over it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from pymongo.database import Database
from pymongo.errors import PyMongoError

from convoy.engines.base import MigrationRun, RunContext, stage_progress
from convoy.engines.errors import (
    ChecksumMismatch,
    FailedMigrationPresent,
    MigrationFailed,
    MigrationsUnreadable,
    OutOfOrderMigration,
)
from convoy.engines.mongo import backup, changelog
from convoy.engines.mongo.config import FaultHook, MongoConfig
from convoy.engines.mongo.locks import MongoLock, utcnow
from convoy.policy.migrations import MigrationFile, scan_migrations

Doc = dict[str, Any]


def load_files(ctx: RunContext) -> tuple[MigrationFile, ...]:
    """The run's migration files: frozen at preflight (``ctx.migrations``), else scanned."""
    if ctx.migrations is not None:
        return tuple(f for f in ctx.migrations if f.kind == "V")
    directory = ctx.migrations_dir
    if directory is None:
        return ()
    files, problems = scan_migrations(directory, "mongo", root=ctx.base_dir)
    if problems:
        raise MigrationsUnreadable([str(p) for p in problems])
    return tuple(f for f in files if f.kind == "V")


@dataclass(frozen=True)
class Status:
    pending: tuple[MigrationFile, ...]
    already_applied: tuple[str, ...]


def status(
    files: Sequence[MigrationFile], entries: Sequence[Doc], *, lock_live: bool = False
) -> Status:
    """Pending files; refuses edited, out-of-order and blocked (half-applied) states.

    ``lock_live``: another run holds the database lock right now (read-only
    callers), so a ``running`` attempt is in progress, not abandoned.
    """
    for e in changelog.blocking(entries):
        if lock_live and e["state"] == "running":
            continue
        raise FailedMigrationPresent(str(e["version"]), str(e["description"]), str(e["run_id"]))
    done = changelog.applied(entries)
    for f in files:
        entry = done.get(f.version)
        if entry is not None and entry["checksum"] != f.checksum:
            raise ChecksumMismatch(f.version_text, str(entry["checksum"]), f.checksum, str(f.path))
    pending = tuple(f for f in files if f.version not in done)
    if pending and done:
        top = max(done)
        for f in pending:
            if f.version < top:
                raise OutOfOrderMigration(f.version_text, changelog.version_text(top))
    applied_names = tuple(changelog.version_text(v) for v in sorted(done))
    return Status(pending, applied_names)


def load_module(f: MigrationFile) -> ModuleType:
    """Execute the file's verified bytes as a fresh module."""
    source = f.read_bytes()
    checksum = hashlib.sha256(source).hexdigest()
    if checksum != f.checksum:
        raise ChecksumMismatch(f.version_text, f.checksum, checksum, str(f.path))
    spec = importlib.util.spec_from_file_location(f"convoy_mongo_migration_{checksum[:16]}", f.path)
    if spec is None:
        raise MigrationFailed(f.version_text, str(f.path), None, "cannot load the file")
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, str(f.path), "exec"), module.__dict__)  # noqa: S102 - reviewed migration
    return module


def function(module: ModuleType, f: MigrationFile, name: str) -> Callable[[Any], Any]:
    fn = getattr(module, name, None)
    if not callable(fn):
        raise MigrationFailed(f.version_text, str(f.path), None, f"defines no {name}(db)")
    return fn  # type: ignore[no-any-return]


def _error_code(exc: BaseException) -> str | None:
    if isinstance(exc, PyMongoError):
        code = getattr(exc, "code", None)
        return None if code is None else str(code)
    return type(exc).__name__


def apply(
    db: Database[Doc],
    cfg: MongoConfig,
    ctx: RunContext,
    pending: Sequence[MigrationFile],
    lock: MongoLock,
    fault: FaultHook | None = None,
) -> list[MigrationRun]:
    log = db[cfg.changelog_collection]
    runs: list[MigrationRun] = []
    progress = stage_progress(
        ctx, "migrate", len(pending), unit="migrations", interval_s=cfg.progress_interval_s
    )
    for f in pending:
        lock.check()
        module = load_module(f)
        up = function(module, f, "up")
        backup.before_migration(db, cfg, ctx, f)
        started = utcnow()
        entry_id = log.insert_one(
            {
                "datastore": ctx.datastore.name,
                "version": f.version_text,
                "version_key": list(f.version),
                "description": f.description,
                "name": f.name,
                "checksum": f.checksum,
                "has_down": f.has_down,
                "policy": ctx.policy_name,
                "run_id": ctx.run_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": started,
                "finished": None,
                "duration_ms": None,
                "state": "running",
                "error": None,
                "reverted_on": None,
                "repaired_on": None,
            }
        ).inserted_id
        t0 = time.monotonic()
        ctx.log(f"{ctx.datastore.name}: applying {f.name} (checksum {f.checksum[:12]})")
        try:
            up(db)
            if fault is not None:
                fault("migrate.after_up", {"version": f.version_text})
        except Exception as exc:
            ms = int((time.monotonic() - t0) * 1000)
            backup.after_migration(db, cfg, ctx, f, "failed")
            log.update_one(
                {"_id": entry_id},
                {
                    "$set": {
                        "state": "failed",
                        "finished": utcnow(),
                        "duration_ms": ms,
                        "error": f"{type(exc).__name__}: {exc}"[:2000],
                    }
                },
            )
            raise MigrationFailed(f.version_text, str(f.path), _error_code(exc), str(exc)) from exc
        ms = int((time.monotonic() - t0) * 1000)
        backup.after_migration(db, cfg, ctx, f, "applied")
        log.update_one(
            {"_id": entry_id},
            {"$set": {"state": "applied", "finished": utcnow(), "duration_ms": ms}},
        )
        ctx.log(f"{ctx.datastore.name}: applied {f.name} in {ms} ms")
        runs.append(MigrationRun(f.version_text, f.description, f.checksum, False, ms, "applied"))
        progress.advance()
    progress.finish()
    return runs
