"""Versioned SQL migrations: status against the history, apply, dry run, baseline, repair.

Every migration runs in its own transaction with ``SET LOCAL lock_timeout`` and
``statement_timeout``, and its history row is written in that same
transaction. A file whose first line is ``-- convoy:no-transaction`` runs
statement by statement in autocommit mode (``CREATE INDEX CONCURRENTLY``...);
if it fails, its failed row blocks further migrations until repaired.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from convoy.engines.base import HistoryEntry, MigrationRun, RunContext, stage_progress
from convoy.engines.errors import (
    ChecksumMismatch,
    FailedMigrationPresent,
    MigrationFailed,
    MigrationsUnreadable,
    OutOfOrderMigration,
)
from convoy.engines.postgres import history
from convoy.engines.postgres.config import PostgresConfig, pg_interval
from convoy.engines.postgres.sql import Conn, is_no_transaction, split_statements
from convoy.policy.migrations import MigrationFile, scan_migrations


def version_text(version: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in version)


@dataclass(frozen=True)
class MigrationSet:
    """The migration (``V``) files in version order and undo (``U``) files by version."""

    migrations: tuple[MigrationFile, ...] = ()
    undo: dict[tuple[int, ...], MigrationFile] = field(default_factory=dict)


def load_files(ctx: RunContext) -> MigrationSet:
    """The run's migration files: frozen at preflight (``ctx.migrations``), else scanned."""
    if ctx.migrations is not None:
        files = ctx.migrations
    else:
        directory = ctx.migrations_dir
        if directory is None:
            return MigrationSet()
        files, problems = scan_migrations(directory, kind="postgres", root=ctx.base_dir)
        if problems:
            raise MigrationsUnreadable([f"{p.file}: {p.message}" for p in problems])
    return MigrationSet(
        migrations=tuple(f for f in files if f.kind == "V"),
        undo={f.version: f for f in files if f.kind == "U"},
    )


@dataclass(frozen=True)
class Status:
    pending: tuple[MigrationFile, ...]
    already_applied: tuple[str, ...]


def status(files: MigrationSet, entries: list[HistoryEntry]) -> Status:
    """Pending migrations; refuses edited files, half-applied failures, out-of-order files."""
    failures = history.blocking_failures(entries)
    if failures:
        bad = failures[0]
        raise FailedMigrationPresent(bad.version, bad.description, bad.run_id)
    applied = history.applied(entries)
    base = history.baseline_version(entries)
    pending: list[MigrationFile] = []
    done: list[str] = []
    for f in files.migrations:
        entry = applied.get(f.version)
        if entry is not None:
            if entry.checksum is not None and entry.checksum != f.checksum:
                raise ChecksumMismatch(entry.version, entry.checksum, f.checksum, str(f.path))
            done.append(version_text(f.version))
        elif base is not None and f.version <= base:
            done.append(version_text(f.version))
        else:
            pending.append(f)
    latest = max([*applied, *([base] if base else [])], default=None)
    for f in pending:
        if latest is not None and f.version < latest:
            raise OutOfOrderMigration(version_text(f.version), version_text(latest))
    return Status(tuple(pending), tuple(done))


def _set_timeouts(conn: Conn, cfg: PostgresConfig, *, local: bool) -> None:
    conn.execute(
        "SELECT set_config('lock_timeout', %s, %s), set_config('statement_timeout', %s, %s)",
        [pg_interval(cfg.lock_timeout_s), local, pg_interval(cfg.statement_timeout_s), local],
    )


def _row(
    ctx: RunContext, f: MigrationFile, ms: int, success: bool, rolled_back: bool = False
) -> history.HistoryRow:
    return history.HistoryRow(
        datastore=ctx.datastore.name,
        version=version_text(f.version),
        description=f.description,
        kind=f.kind,
        script=f.path.name,
        checksum=f.checksum,
        policy=ctx.policy_name,
        run_id=ctx.run_id,
        execution_ms=ms,
        success=success,
        rolled_back=rolled_back,
    )


def _failed(f: MigrationFile, exc: psycopg.Error) -> MigrationFailed:
    message = exc.diag.message_primary or (str(exc).splitlines() or [type(exc).__name__])[0]
    return MigrationFailed(version_text(f.version), str(f.path), exc.sqlstate, message)


def read_script(f: MigrationFile) -> str:
    """The migration's SQL: the content frozen at preflight, else the file."""
    return f.read_text()


def run_transactional(
    conn: Conn, cfg: PostgresConfig, ctx: RunContext, f: MigrationFile, *, record: bool = True
) -> int:
    """Run ``f`` in its own transaction (history row included); returns milliseconds."""
    script = read_script(f)
    start = time.perf_counter()
    try:
        with conn.transaction():
            _set_timeouts(conn, cfg, local=True)
            conn.execute(script.encode())
            ms = round((time.perf_counter() - start) * 1000)
            if record:
                history.insert(conn, cfg.schema, _row(ctx, f, ms, True))
    except psycopg.Error as exc:
        ms = round((time.perf_counter() - start) * 1000)
        if record:
            with conn.transaction():
                history.insert(conn, cfg.schema, _row(ctx, f, ms, False, rolled_back=True))
        raise _failed(f, exc) from exc
    return ms


def run_autocommit(conn: Conn, cfg: PostgresConfig, ctx: RunContext, f: MigrationFile) -> int:
    """Run a no-transaction file statement by statement; a failure blocks until repaired."""
    script = read_script(f)
    start = time.perf_counter()
    try:
        _set_timeouts(conn, cfg, local=False)
        for statement in split_statements(script):
            conn.execute(statement.encode())
    except psycopg.Error as exc:
        ms = round((time.perf_counter() - start) * 1000)
        history.insert(conn, cfg.schema, _row(ctx, f, ms, False, rolled_back=False))
        raise _failed(f, exc) from exc
    finally:
        conn.execute("RESET lock_timeout")
        conn.execute("RESET statement_timeout")
    ms = round((time.perf_counter() - start) * 1000)
    history.insert(conn, cfg.schema, _row(ctx, f, ms, True))
    return ms


def apply(
    conn: Conn,
    cfg: PostgresConfig,
    ctx: RunContext,
    pending: tuple[MigrationFile, ...],
    after_each: Callable[[], None] | None = None,
) -> list[MigrationRun]:
    """Apply ``pending`` in order; ``after_each`` runs after every applied file."""
    runs: list[MigrationRun] = []
    progress = stage_progress(
        ctx, "migrate", len(pending), unit="migrations", interval_s=cfg.progress_interval_s
    )
    for f in pending:
        no_tx = is_no_transaction(read_script(f))
        ctx.log(f"{ctx.datastore.name}: applying {f.name}" + (" (no transaction)" if no_tx else ""))
        ms = run_autocommit(conn, cfg, ctx, f) if no_tx else run_transactional(conn, cfg, ctx, f)
        ctx.log(f"{ctx.datastore.name}: applied {f.name} in {ms} ms")
        runs.append(
            MigrationRun(
                version_text(f.version), f.description, f.checksum, not no_tx, ms, "applied"
            )
        )
        if after_each is not None:
            after_each()
        progress.advance()
    progress.finish()
    return runs


def dry_run(
    conn: Conn, cfg: PostgresConfig, ctx: RunContext, pending: tuple[MigrationFile, ...]
) -> list[MigrationRun]:
    """Run the pending migrations in one transaction and roll it back.

    Stops at the first no-transaction file: it and the ones after it (which may
    depend on it) are only listed.
    """
    runs: list[MigrationRun] = []
    listed_from = len(pending)
    with conn.transaction(force_rollback=True):
        for i, f in enumerate(pending):
            script = read_script(f)
            if is_no_transaction(script):
                listed_from = i
                break
            start = time.perf_counter()
            try:
                with conn.transaction():
                    _set_timeouts(conn, cfg, local=True)
                    conn.execute(script.encode())
            except psycopg.Error as exc:
                raise _failed(f, exc) from exc
            ms = round((time.perf_counter() - start) * 1000)
            ctx.log(f"{ctx.datastore.name}: dry run of {f.name} ok in {ms} ms (rolled back)")
            runs.append(
                MigrationRun(
                    version_text(f.version), f.description, f.checksum, True, ms, "rolled-back"
                )
            )
    for f in pending[listed_from:]:
        ctx.log(f"{ctx.datastore.name}: dry run lists {f.name} (not executed)")
        runs.append(
            MigrationRun(
                version_text(f.version),
                f.description,
                f.checksum,
                not is_no_transaction(read_script(f)),
                0,
                "listed",
            )
        )
    return runs
