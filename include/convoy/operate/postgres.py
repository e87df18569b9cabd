"""Operating state of a PostgreSQL datastore: versions, lock, checkpoints, backups; pruning.

:func:`inspect` only reads, in a ``READ ONLY`` session (the server refuses
any write). :func:`prune` drops what was kept for a run (snapshot copies,
``pg_dump`` file, undo and audit tables, and their registry rows) while
holding the datastore's advisory lock, like every engine stage that writes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from convoy.engines.base import RunContext
from convoy.engines.postgres import audit as audit_mod
from convoy.engines.postgres import backup as backup_mod
from convoy.engines.postgres import undo as undo_mod
from convoy.engines.postgres.config import PostgresConfig
from convoy.engines.postgres.locks import AdvisoryLock, lock_holders, lock_key
from convoy.engines.postgres.migrate import load_files
from convoy.engines.postgres.sql import Conn, relation_exists
from convoy.operate.model import BackupItem, BackupRun, Checkpoint, DatastoreState
from convoy.operate.versions import Attempt, AttemptState, judge_datastore, version_rows

Connect = Callable[[str, str], Conn]


def connect_read_only(conninfo: str, application_name: str) -> Conn:
    conn = psycopg.connect(conninfo, autocommit=True, application_name=application_name[:63])
    conn.execute("SET default_transaction_read_only = on")
    return conn


def _connect_rw(conninfo: str, application_name: str) -> Conn:
    conn = psycopg.connect(conninfo, autocommit=True, application_name=application_name[:63])
    undo_mod.set_actor(conn)
    return conn


def lock_name(cfg: PostgresConfig, datastore: str) -> str:
    return f"convoy:{cfg.schema}:datastore:{datastore}"


def attempts(conn: Conn, cfg: PostgresConfig, datastore: str) -> list[Attempt]:
    """The history of ``datastore`` as attempts, oldest first (repaired ones left out)."""
    if not relation_exists(conn, cfg.schema, "schema_history"):
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT version, description, kind, checksum, run_id, installed_on, success,"
            " rolled_back, reverted_on, reverted_by, repaired_on"
            " FROM {}.schema_history WHERE datastore = %s ORDER BY rank"
        ).format(sql.Identifier(cfg.schema)),
        [datastore],
    ).fetchall()
    out: list[Attempt] = []
    for (
        version,
        desc,
        kind,
        checksum,
        run_id,
        on,
        success,
        rolled_back,
        rev_on,
        rev_by,
        rep,
    ) in rows:
        if kind == "U" or rep is not None:
            continue
        if kind == "B":
            if rev_on is None:
                out.append(Attempt(version, desc, "baseline", None, run_id, on))
            continue
        state: AttemptState
        if success:
            state = "applied" if rev_on is None else "reverted"
        else:
            state = "rolled-back" if rolled_back else "failed"
        out.append(Attempt(version, desc, state, checksum, run_id, on, rev_by if rev_on else None))
    return out


def lock_holder(conn: Conn, cfg: PostgresConfig, datastore: str) -> str | None:
    holders = lock_holders(conn, lock_key(lock_name(cfg, datastore)))
    return ", ".join(h.describe() for h in holders) or None


def unfinished(conn: Conn, cfg: PostgresConfig, datastore: str) -> list[Checkpoint]:
    if not relation_exists(conn, cfg.schema, "transform_checkpoints"):
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT transform, partition, interval_key, run_id, rows_done, updated_at"
            " FROM {}.transform_checkpoints WHERE datastore = %s AND NOT done"
            " ORDER BY transform, partition"
        ).format(sql.Identifier(cfg.schema)),
        [datastore],
    ).fetchall()
    return [Checkpoint(r[0], r[1], r[2], r[3], int(r[4]), r[5]) for r in rows]


def _relation_size(conn: Conn, schema: str, table: str) -> int | None:
    row = conn.execute(
        "SELECT pg_total_relation_size(to_regclass(format('%%I.%%I', %s::text, %s::text)))",
        [schema, table],
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def _total(sizes: Iterable[int | None]) -> int | None:
    known = [s for s in sizes if s is not None]
    return sum(known) if known else None


def _file_size(location: str) -> int | None:
    try:
        return os.stat(location).st_size
    except OSError:
        return None


def audit_table(run_id: str, datastore: str) -> str:
    import hashlib

    return "a_" + hashlib.sha256(f"{run_id}\x1f{datastore}".encode()).hexdigest()[:10]


def backups(conn: Conn, cfg: PostgresConfig, datastore: str) -> list[BackupRun]:
    """What is kept per run of ``datastore``, oldest run first."""
    bs = cfg.backup_schema
    runs: dict[str, dict[str, Any]] = {}

    def run(run_id: str, policy: str, created: Any) -> dict[str, Any]:
        entry = runs.setdefault(
            run_id, {"policy": policy, "created": created, "items": [], "dumps": set()}
        )
        if created is not None and (entry["created"] is None or created < entry["created"]):
            entry["created"] = created
        return entry

    if relation_exists(conn, bs, "manifest"):
        for (
            run_id,
            policy,
            _mode,
            src_schema,
            src_table,
            table,
            location,
            created,
            restored,
        ) in conn.execute(
            sql.SQL(
                "SELECT run_id, policy, mode, source_schema, source_table, backup_table,"
                " location, created_at, restored_at IS NOT NULL FROM {}.manifest"
                " WHERE datastore = %s ORDER BY id"
            ).format(sql.Identifier(bs)),
            [datastore],
        ).fetchall():
            entry = run(run_id, policy, created)
            source = f"{src_schema}.{src_table}"
            if table:
                entry["items"].append(
                    BackupItem(
                        "snapshot",
                        f"{bs}.{table}",
                        source,
                        _relation_size(conn, bs, table),
                        restored,
                    )
                )
            elif location and location not in entry["dumps"]:
                entry["dumps"].add(location)
                entry["items"].append(
                    BackupItem("pg_dump", location, None, _file_size(location), restored)
                )
    if relation_exists(conn, bs, "undo_log"):
        for (
            run_id,
            policy,
            transform,
            src_schema,
            src_table,
            table,
            created,
            reverted,
        ) in conn.execute(
            sql.SQL(
                "SELECT run_id, policy, transform, source_schema, source_table, undo_table,"
                " created_at, reverted_at IS NOT NULL FROM {}.undo_log"
                " WHERE datastore = %s ORDER BY id"
            ).format(sql.Identifier(bs)),
            [datastore],
        ).fetchall():
            entry = run(run_id, policy, created)
            entry["items"].append(
                BackupItem(
                    "undo",
                    f"{bs}.{table}",
                    f"{src_schema}.{src_table} ({transform})",
                    _total(_relation_size(conn, bs, t) for t in (table, f"{table}_r")),
                    reverted,
                )
            )
    out = []
    for run_id, entry in runs.items():
        audit = audit_table(run_id, datastore)
        items = list(entry["items"])
        if relation_exists(conn, bs, audit):
            items.append(
                BackupItem("audit", f"{bs}.{audit}", None, _relation_size(conn, bs, audit))
            )
        out.append(BackupRun(datastore, run_id, entry["policy"], entry["created"], tuple(items)))
    return sorted(out, key=lambda b: (b.created is None, b.created, b.run_id))


def in_flight(conn: Conn, cfg: PostgresConfig, datastore: str) -> dict[str, str]:
    """Runs that left work in flight here (transform triggers, unfinished checkpoints)."""
    out: dict[str, str] = {}
    if relation_exists(conn, cfg.backup_schema, "undo_log"):
        for (run_id,) in conn.execute(
            sql.SQL(
                "SELECT DISTINCT run_id FROM {}.undo_log WHERE datastore = %s"
                " AND completed_at IS NULL AND reverted_at IS NULL"
            ).format(sql.Identifier(cfg.backup_schema)),
            [datastore],
        ).fetchall():
            out[run_id] = "transform triggers still installed (run not finished)"
    for cp in unfinished(conn, cfg, datastore):
        out.setdefault(cp.run_id, "unfinished transform checkpoint")
    return out


def inspect(
    conninfo: str,
    ctx: RunContext,
    cfg: PostgresConfig | None = None,
    *,
    connect: Connect = connect_read_only,
) -> DatastoreState:
    """The datastore's state, read-only (``ctx.run_id`` is not used)."""
    cfg = cfg or PostgresConfig()
    ds = ctx.datastore
    files = load_files(ctx).migrations
    conn = connect(conninfo, f"convoy:{ctx.policy_name}/{ds.name}:status")
    try:
        with conn.transaction():
            state = DatastoreState(
                name=ds.name,
                type="postgres",
                verdict="in sync",
                reasons=(),
                versions=tuple(version_rows(files, attempts(conn, cfg, ds.name))),
                lock=lock_holder(conn, cfg, ds.name),
                unfinished=tuple(unfinished(conn, cfg, ds.name)),
                backups=tuple(backups(conn, cfg, ds.name)),
            )
    finally:
        conn.close()
    return judge_datastore(state)


def protected_runs(conninfo: str, cfg: PostgresConfig, datastore: str) -> dict[str, str]:
    conn = connect_read_only(conninfo, f"convoy:{datastore}:backups")
    try:
        return in_flight(conn, cfg, datastore)
    finally:
        conn.close()


def prune(
    conninfo: str,
    ctx: RunContext,
    runs: list[BackupRun],
    cfg: PostgresConfig | None = None,
    *,
    lock_timeout_s: float | None = None,
) -> list[str]:
    """Drop everything kept for ``runs`` (of ``ctx.datastore``), under the datastore lock."""
    cfg = cfg or PostgresConfig()
    ds = ctx.datastore
    done: list[str] = []
    conn = _connect_rw(conninfo, f"convoy:{ctx.policy_name}/{ds.name}:prune")
    try:
        with AdvisoryLock(
            conn,
            lock_name(cfg, ds.name),
            timeout_s=cfg.advisory_lock_timeout_s if lock_timeout_s is None else lock_timeout_s,
            poll_s=cfg.advisory_lock_poll_s,
            log=ctx.log,
        ):
            for run in runs:
                run_ctx = dataclasses.replace(ctx, run_id=run.run_id)
                # nothing of the run may stay in flight once its undo tables are gone
                undo_mod.drop_triggers(conn, cfg, run_ctx)
                sources = [r.source for r in backup_mod.manifest(conn, cfg, run_ctx)]
                audit_mod.remove(conn, cfg, run_ctx, sources)
                with conn.transaction():
                    for item in run.items:
                        if item.kind in ("snapshot", "undo", "audit"):
                            schema, _, table = item.name.partition(".")
                            # an undo table's unpacked entries (left by a revert) go with it
                            extra = [f"{table}_r"] if item.kind == "undo" else []
                            for name in (table, *extra):
                                conn.execute(
                                    sql.SQL("DROP TABLE IF EXISTS {}").format(
                                        sql.Identifier(schema, name)
                                    )
                                )
                    for registry in ("manifest", "undo_log"):
                        if relation_exists(conn, cfg.backup_schema, registry):
                            conn.execute(
                                sql.SQL(
                                    "DELETE FROM {} WHERE run_id = %s AND datastore = %s"
                                ).format(sql.Identifier(cfg.backup_schema, registry)),
                                [run.run_id, ds.name],
                            )
                for item in run.items:
                    if item.kind == "pg_dump":
                        Path(item.name).unlink(missing_ok=True)
                done.append(f"{ds.name}: pruned run {run.run_id} ({len(run.items)} items)")
    finally:
        conn.close()
    return done
