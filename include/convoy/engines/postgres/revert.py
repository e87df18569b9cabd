"""Revert a run: undo what convoy did, keep everything the application did.

Order: (1) the run's in-flight transform triggers are removed; (2) every
transform's before-images are put back, newest transform first, by
compare-and-set (:mod:`convoy.engines.postgres.undo`): a row the application
changed since keeps the application's value and is reported as a conflict;
(3) undo files run newest first; (4) only where a migration has no undo file
(or failed half-way) is a table restored from the backup, and only when the
application wrote nothing to it since the copy (:mod:`convoy.engines.postgres.audit`);
otherwise the restore is refused and the revert ends *incomplete*
(:class:`~convoy.engines.errors.RevertIncomplete`) after doing (1)-(3).
A transform whose table, key or set columns are gone is refused the same
way in (2), and nothing after it in this order runs.

Guarantees without a concurrent writer (tested by comparing a normalised
``pg_dump --schema-only`` and per-table row hashes before the run and after
apply + revert), and with one (every committed application write survives):

- Undo path: each ``U<version>`` file of a version applied by this run runs
  in its own transaction (with the migration timeouts), newest first, recorded
  as a ``U`` history row; the ``V`` row is marked reverted in that transaction.
  The undo file's correctness is its author's.
- Snapshot path (``backup: snapshot``), one transaction for all tables:
  tables created by the run are dropped; each backed-up table is brought back
  to its recorded shape (extra constraints/indexes/columns dropped, missing
  ones re-created, column types/defaults/NOT NULL reset, a dropped table
  re-created), its rows replaced by the copy (``TRUNCATE`` of all the tables
  together, then ``INSERT ... SELECT``), and owned sequences reset.
  Not restored: triggers, policies, grants and comments changed by the run,
  column *order* of a column that the run dropped (re-added at the end), and
  objects outside the backed-up tables (views, functions, other tables).
  Tables referencing a restored table with a foreign key must be backed up
  too (``snapshotTables``), else ``TRUNCATE`` refuses and nothing changes.
- pg_dump path: tables created by the run are dropped, then ``pg_restore
  --clean --if-exists --single-transaction`` reloads the archive.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import psycopg
from psycopg import sql

from convoy.engines.base import HistoryEntry, RevertResult, RunContext, stage_progress
from convoy.engines.errors import BackupFailed, MigrationFailed, NoBackup, RevertIncomplete
from convoy.engines.postgres import audit, history, undo, undo_revert
from convoy.engines.postgres.backup import (
    ManifestRow,
    find_pg_tool,
    manifest,
    resolve,
    shape,
    tool_env_and_dsn,
)
from convoy.engines.postgres.config import PostgresConfig, pg_interval
from convoy.engines.postgres.migrate import MigrationSet, read_script, version_text
from convoy.engines.postgres.sql import Conn, TableName
from convoy.observe.progress import Progress
from convoy.policy.migrations import MigrationFile, parse_version


def _timeouts(conn: Conn, cfg: PostgresConfig) -> None:
    conn.execute(
        "SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
        [pg_interval(cfg.lock_timeout_s), pg_interval(cfg.statement_timeout_s)],
    )


def run_undo(
    conn: Conn, cfg: PostgresConfig, ctx: RunContext, entry: HistoryEntry, undo: MigrationFile
) -> None:
    start = time.perf_counter()
    try:
        with conn.transaction():
            _timeouts(conn, cfg)
            conn.execute(read_script(undo).encode())
            ms = round((time.perf_counter() - start) * 1000)
            history.insert(
                conn,
                cfg.schema,
                history.HistoryRow(
                    datastore=ctx.datastore.name,
                    version=entry.version,
                    description=undo.description,
                    kind="U",
                    script=undo.path.name,
                    checksum=undo.checksum,
                    policy=ctx.policy_name,
                    run_id=ctx.run_id,
                    execution_ms=ms,
                    success=True,
                ),
            )
            history.mark_reverted(conn, cfg.schema, [entry.rank], ctx.run_id)
    except psycopg.Error as exc:
        message = exc.diag.message_primary or type(exc).__name__
        raise MigrationFailed(entry.version, str(undo.path), exc.sqlstate, message) from exc
    ctx.log(f"{ctx.datastore.name}: undid {entry.version} with {undo.path.name}")


def _current_columns(conn: Conn, oid: int) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in shape(conn, oid)["columns"]}


def _column_def(col: dict[str, Any]) -> sql.Composed:
    parts: list[sql.Composable] = [sql.Identifier(col["name"]), sql.SQL(" " + col["type"])]
    if col.get("default") is not None and not col.get("generated"):
        parts.append(sql.SQL(" DEFAULT " + col["default"]))
    if col.get("not_null"):
        parts.append(sql.SQL(" NOT NULL"))
    return sql.Composed(parts)


def _reconcile_before_load(conn: Conn, table: TableName, oid: int, want: dict[str, Any]) -> None:
    """Drop constraints/indexes the run added or changed, and every foreign key.

    Foreign keys are re-added (and so validated) after all tables are loaded,
    so the load order of the tables does not matter.
    """
    have = shape(conn, oid)
    wanted_cons = {c["name"]: c["definition"] for c in want["constraints"]}
    cons = sorted(have["constraints"], key=lambda c: not c["definition"].startswith("FOREIGN"))
    for c in cons:
        fk = c["definition"].startswith("FOREIGN KEY")
        if fk or wanted_cons.get(c["name"]) != c["definition"]:
            conn.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    table.ident, sql.Identifier(c["name"])
                )
            )
    wanted_idx = {i["name"]: i["definition"] for i in want["indexes"]}
    for i in shape(conn, oid)["indexes"]:
        if wanted_idx.get(i["name"]) != i["definition"]:
            conn.execute(
                sql.SQL("DROP INDEX {}").format(sql.Identifier(table.schema or "public", i["name"]))
            )


def _reconcile_columns(conn: Conn, table: TableName, oid: int, want: dict[str, Any]) -> None:
    """On the (already emptied) table: columns back to the recorded shape."""
    have = _current_columns(conn, oid)
    wanted = {c["name"]: c for c in want["columns"]}
    alter = sql.SQL("ALTER TABLE {} ").format(table.ident)
    for name in have:
        if name not in wanted:
            conn.execute(alter + sql.SQL("DROP COLUMN {}").format(sql.Identifier(name)))
    for col in want["columns"]:
        name, ident = col["name"], sql.Identifier(col["name"])
        cur = have.get(name)
        if cur is None:
            conn.execute(alter + sql.SQL("ADD COLUMN ") + _column_def(col))
            continue
        if cur["type"] != col["type"]:
            conn.execute(alter + sql.SQL("ALTER COLUMN {} DROP DEFAULT").format(ident))
            conn.execute(
                alter + sql.SQL("ALTER COLUMN {} TYPE " + col["type"] + " USING NULL").format(ident)
            )
            cur = {**cur, "default": None}
        if cur["default"] != col["default"] and not col.get("generated"):
            if col["default"] is None:
                conn.execute(alter + sql.SQL("ALTER COLUMN {} DROP DEFAULT").format(ident))
            else:
                conn.execute(
                    alter + sql.SQL("ALTER COLUMN {} SET DEFAULT " + col["default"]).format(ident)
                )
        if cur["not_null"] != col["not_null"]:
            verb = "SET" if col["not_null"] else "DROP"
            conn.execute(alter + sql.SQL("ALTER COLUMN {} " + verb + " NOT NULL").format(ident))


def _recreate(conn: Conn, table: TableName, want: dict[str, Any]) -> None:
    cols = sql.SQL(", ").join(_column_def(c) for c in want["columns"])
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table.ident, cols))


def _add_missing(conn: Conn, table: TableName, oid: int, want: dict[str, Any]) -> None:
    have = shape(conn, oid)
    have_cons = {c["name"] for c in have["constraints"]}
    wanted = sorted(want["constraints"], key=lambda c: c["definition"].startswith("FOREIGN"))
    for c in wanted:
        if c["name"] not in have_cons:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} " + c["definition"]).format(
                    table.ident, sql.Identifier(c["name"])
                )
            )
    have_idx = {i["name"] for i in have["indexes"]}
    for i in want["indexes"]:
        if i["name"] not in have_idx:
            conn.execute(sql.SQL(i["definition"]))
    for s in want["sequences"]:
        conn.execute(
            "SELECT setval(to_regclass(%s), %s, %s)",
            [
                sql.Identifier(s["schema"], s["name"]).as_string(conn),
                s["last_value"],
                s["is_called"],
            ],
        )


def restore_snapshot(
    conn: Conn,
    cfg: PostgresConfig,
    ctx: RunContext,
    rows: list[ManifestRow],
    progress: Progress | None = None,
) -> tuple[list[str], list[str]]:
    """Bring every backed-up table back, in one transaction. Returns (restored, dropped)."""
    restored: list[str] = []
    dropped: list[str] = []
    with conn.transaction():
        _timeouts(conn, cfg)
        # writers wait from here to the commit; a write that slipped in since the
        # caller's check is seen now, and the restore is called off
        for r in rows:
            if resolve(conn, r.source)[1] is not None:
                conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(r.source.ident))
        late = _restore_refusals(conn, cfg, ctx, rows)
        if late:
            raise _WritesDuringRestore(late)
        for r in rows:
            if not r.existed:
                _, oid = resolve(conn, r.source)
                if oid is not None:
                    conn.execute(sql.SQL("DROP TABLE {}").format(r.source.ident))
                    dropped.append(str(r.source))
        present = [r for r in rows if r.existed]
        if progress is not None:
            progress.advance(len(rows) - len(present))
        oids: dict[int, int] = {}
        for r in present:
            _, oid = resolve(conn, r.source)
            if oid is None:
                _recreate(conn, r.source, r.shape)
                _, oid = resolve(conn, r.source)
                assert oid is not None
            else:
                _reconcile_before_load(conn, r.source, oid, r.shape)
            oids[r.id] = oid
        if present:
            conn.execute(
                sql.SQL("TRUNCATE TABLE {}").format(
                    sql.SQL(", ").join(r.source.ident for r in present)
                )
            )
        for r in present:
            assert r.backup_table is not None
            _reconcile_columns(conn, r.source, oids[r.id], r.shape)
            cols = sql.SQL(", ").join(
                sql.Identifier(c["name"]) for c in r.shape["columns"] if not c.get("generated")
            )
            conn.execute(
                sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {}").format(
                    r.source.ident, cols, cols, sql.Identifier(cfg.backup_schema, r.backup_table)
                )
            )
            if progress is not None:
                progress.advance()
        for r in present:
            _add_missing(conn, r.source, oids[r.id], r.shape)
            restored.append(str(r.source))
        _mark_restored(conn, cfg, rows)
    return restored, dropped


def restore_pg_dump(
    conn: Conn,
    cfg: PostgresConfig,
    ctx: RunContext,
    conninfo: str,
    rows: list[ManifestRow],
    progress: Progress | None = None,
) -> tuple[list[str], list[str]]:
    dropped: list[str] = []
    with conn.transaction():
        _timeouts(conn, cfg)
        for r in rows:
            if not r.existed and resolve(conn, r.source)[1] is not None:
                conn.execute(sql.SQL("DROP TABLE {}").format(r.source.ident))
                dropped.append(str(r.source))
    if progress is not None:
        progress.advance(sum(1 for r in rows if not r.existed))
    locations = sorted({r.location for r in rows if r.existed and r.location})
    for location in locations:
        env, dsn = tool_env_and_dsn(conninfo)
        proc = subprocess.run(
            [
                find_pg_tool(cfg, "pg_restore"),
                "--clean",
                "--if-exists",
                "--single-transaction",
                "--dbname",
                dsn,
                location,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise BackupFailed(
                f"pg_restore failed ({proc.returncode}): {proc.stderr.strip()[:500]}"
            )
        if progress is not None:
            # one archive per backup: its tables are back when pg_restore returns
            progress.advance(sum(1 for r in rows if r.existed and r.location == location))
    with conn.transaction():
        _mark_restored(conn, cfg, rows)
    return [str(r.source) for r in rows if r.existed], dropped


def _mark_restored(conn: Conn, cfg: PostgresConfig, rows: list[ManifestRow]) -> None:
    conn.execute(
        sql.SQL("UPDATE {}.manifest SET restored_at = now() WHERE id = ANY(%s)").format(
            sql.Identifier(cfg.backup_schema)
        ),
        [[r.id for r in rows]],
    )


def _has_rows(conn: Conn, table: TableName) -> bool:
    row = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(table.ident)).fetchone()
    return bool(row and row[0])


class _WritesDuringRestore(Exception):
    """The application wrote between the check and the restore's locks."""

    def __init__(self, found: list[tuple[ManifestRow, str]]) -> None:
        self.found = found
        super().__init__(f"{len(found)} tables written during the restore")


def _restore_refusals(
    conn: Conn, cfg: PostgresConfig, ctx: RunContext, rows: list[ManifestRow]
) -> list[tuple[ManifestRow, str]]:
    """Backed-up tables a restore would lose application writes in, with why."""
    refused: list[tuple[ManifestRow, str]] = []
    for r in rows:
        if not r.existed:
            # created by the run: a restore drops it, with whatever the application put in it
            if resolve(conn, r.source)[1] is None:
                continue
            if audit.capturing(conn, ctx, r.source):
                n = audit.writes_after(conn, cfg, ctx, r.source, None)
                if n:
                    refused.append(
                        (r, f"the application wrote {n} rows to it since the run created it")
                    )
            elif _has_rows(conn, r.source):
                refused.append(
                    (r, "it was created by the run and holds rows whose origin is unknown")
                )
            continue
        if r.snapshot is None:
            refused.append((r, "its backup predates write capture"))
        elif not audit.capturing(conn, ctx, r.source):
            refused.append(
                (r, "the application's writes are no longer captured (the run completed)")
            )
        else:
            n = audit.writes_after(conn, cfg, ctx, r.source, r.snapshot)
            if n:
                refused.append((r, f"the application wrote {n} rows since the backup"))
    return refused


def _refusal_line(
    cfg: PostgresConfig, ctx: RunContext, r: ManifestRow, why: str, versions: list[str]
) -> str:
    copy = (
        f"{cfg.backup_schema}.{r.backup_table}" if r.backup_table else (r.location or "the backup")
    )
    return (
        f"{r.source} not restored: {why}; restoring it would discard them "
        f"(needed for {', '.join(versions)}: no undo file or failed half-way). "
        f"The writes are listed in {cfg.backup_schema}.{audit.audit_table(ctx)}. Finish by "
        f"hand: add undo files (U<version>__<desc>.sql) and run the rollback again, or "
        f"reconcile {r.source} with {copy}"
    )


def revert(
    conn: Conn,
    cfg: PostgresConfig,
    ctx: RunContext,
    files: MigrationSet,
    conninfo: str,
    *,
    dry_run: bool,
    batch_size: int = 5000,
) -> RevertResult:
    entries = history.load(conn, cfg.schema, ctx.datastore.name)
    mine = [e for e in entries if e.run_id == ctx.run_id and e.kind == "V" and history.is_active(e)]
    applied = sorted(
        (e for e in mine if e.success),
        key=lambda e: (parse_version(e.version), e.rank),
        reverse=True,
    )
    half_applied = [e for e in mine if not e.success and not e.rolled_back]
    all_backups = manifest(conn, cfg, ctx)
    backups = [r for r in all_backups if not r.restored]
    all_undo_tables = undo.tables(conn, cfg, ctx)
    undo_tables = [t for t in all_undo_tables if not t.reverted]

    undo_plan: list[tuple[HistoryEntry, MigrationFile]] = []
    needs_backup: list[HistoryEntry] = list(half_applied)
    for e in applied:
        undo_file = files.undo.get(parse_version(e.version))
        if undo_file is not None and not needs_backup:
            undo_plan.append((e, undo_file))
        else:
            needs_backup.append(e)
    if needs_backup and not backups:
        raise NoBackup(
            ctx.run_id,
            [e.version for e in needs_backup],
            "no undo file and no backup of this run (backup: snapshot or pg_dump)",
        )
    undone = [version_text(parse_version(e.version)) for e, _ in undo_plan]
    from_backup = [e.version for e in needs_backup]
    if dry_run:
        # as the revert would: it stops at the first transform it cannot put back
        waits: list[str] = []
        for t in undo_tables:
            if (why := undo_revert.refusal(conn, cfg, t)) is not None:
                waits.append(why)
                break
        for t in undo_tables:
            ctx.log(
                f"{ctx.datastore.name}: dry run would set "
                f"{undo_revert.pending(conn, cfg, t)} rows of "
                f"{t.source} back to their before-image ({t.transform}), where unchanged since"
            )
        for e, u in undo_plan:
            ctx.log(f"{ctx.datastore.name}: dry run would undo {e.version} with {u.path.name}")
        refusals = _restore_refusals(conn, cfg, ctx, backups) if needs_backup else []
        if needs_backup:
            ctx.log(
                f"{ctx.datastore.name}: dry run would restore "
                f"{', '.join(str(r.source) for r in backups)} from the backup"
                + (
                    f" (refused: {len(refusals)} tables have application writes)"
                    if refusals
                    else ""
                )
            )
        return RevertResult(
            ctx.datastore.name,
            ctx.run_id,
            True,
            tuple(undone),
            tuple(from_backup),
            tuple(str(r.source) for r in backups if r.existed and needs_backup),
            (),
            refused=tuple(
                waits + [_refusal_line(cfg, ctx, r, why, from_backup) for r, why in refusals]
            ),
        )
    # One step per transform's before-images, undo file and backed-up table.
    progress = stage_progress(
        ctx,
        "revert",
        len(undo_tables) + len(undo_plan) + (len(backups) if needs_backup else 0),
        unit="steps",
        interval_s=cfg.progress_interval_s,
    )
    undo.drop_triggers(conn, cfg, ctx)
    outcome = undo_revert.UndoOutcome()
    refused: list[str] = []
    for t in all_undo_tables:
        if t.reverted:
            outcome.add(undo_revert.outcome_counts(conn, cfg, t))
            continue
        why = undo_revert.refusal(conn, cfg, t)
        if why is not None:
            refused.append(why)
            break
        outcome.add(undo_revert.revert(conn, cfg, ctx, t, batch_size))
        progress.advance()
    # older transforms compare against what this one wrote, and undo files or the
    # backup may reshape its table: all wait until it can be reverted
    waiting = bool(refused)
    if undo_tables and not waiting:
        _forget_checkpoints(conn, cfg, ctx)
    if not waiting:
        for e, u in undo_plan:
            run_undo(conn, cfg, ctx, e, u)
            progress.advance()
    restored: list[str] = []
    dropped: list[str] = []
    if needs_backup and not waiting:
        refusals = _restore_refusals(conn, cfg, ctx, backups)
        if refusals:
            refused = [_refusal_line(cfg, ctx, r, why, from_backup) for r, why in refusals]
        elif backups[0].mode == "pg_dump":
            restored, dropped = restore_pg_dump(conn, cfg, ctx, conninfo, backups, progress)
        else:
            try:
                restored, dropped = restore_snapshot(conn, cfg, ctx, backups, progress)
            except _WritesDuringRestore as late:
                refused = [_refusal_line(cfg, ctx, r, why, from_backup) for r, why in late.found]
        if not refused:
            with conn.transaction():
                ranks = [e.rank for e in needs_backup if e.success]
                if ranks:
                    history.mark_reverted(conn, cfg.schema, ranks, ctx.run_id)
                failed = [e.rank for e in needs_backup if not e.success]
                if failed:
                    history.mark_repaired(conn, cfg.schema, failed)
            ctx.log(
                f"{ctx.datastore.name}: restored {', '.join(restored) or 'no tables'} from the "
                f"{backups[0].mode} backup" + (f"; dropped {', '.join(dropped)}" if dropped else "")
            )
    # capture ends with the revert: what it recorded stays in the audit table; a
    # revert still waiting keeps it, so the backup restore can be checked later
    if not waiting:
        audit.remove(conn, cfg, ctx, [r.source for r in all_backups])
    progress.finish()
    result = RevertResult(
        ctx.datastore.name,
        ctx.run_id,
        False,
        tuple(undone) if not waiting else (),
        tuple(from_backup) if not refused else (),
        tuple(restored),
        tuple(dropped),
        rows_restored=outcome.restored,
        rows_conflicting=outcome.conflicting,
        rows_gone=outcome.gone,
        conflicts=tuple((outcome.conflicts or [])[: undo_revert.MAX_LISTED_CONFLICTS]),
        refused=tuple(refused),
    )
    if refused:
        for line in refused:
            ctx.log(f"{ctx.datastore.name}: REFUSED: {line}")
        raise RevertIncomplete(ctx.datastore.name, result, refused)
    return result


def _forget_checkpoints(conn: Conn, cfg: PostgresConfig, ctx: RunContext) -> None:
    """The run's transform checkpoints go with its reverted rows (a rerun starts over)."""
    if history.exists(conn, cfg.schema):
        with conn.transaction():
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE datastore = %s AND run_id = %s").format(
                    sql.Identifier(cfg.schema, "transform_checkpoints")
                ),
                [ctx.datastore.name, ctx.run_id],
            )
