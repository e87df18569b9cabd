"""The migration history and transform checkpoint tables (schema ``convoy`` by default).

``schema_history`` has one row per attempt: ``V`` (migration), ``U`` (undo
run by a revert) or ``B`` (baseline). A row is *active* while it is neither
reverted nor repaired. A version is applied when an active successful ``V``
row exists, or an active ``B`` row has a version at least as high. A failed
``V`` row that was not rolled back (no-transaction file) blocks migrating
until :func:`mark_repaired`.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from convoy.engines.base import HistoryEntry
from convoy.engines.postgres.locks import lock_key
from convoy.engines.postgres.sql import Conn
from convoy.policy.migrations import parse_version

_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.schema_history (
    rank          bigserial PRIMARY KEY,
    datastore     text        NOT NULL,
    version       text        NOT NULL,
    description   text        NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('V', 'U', 'B')),
    script        text,
    checksum      text,
    policy        text        NOT NULL,
    run_id        text        NOT NULL,
    installed_by  text        NOT NULL DEFAULT current_user,
    installed_on  timestamptz NOT NULL DEFAULT now(),
    execution_ms  integer     NOT NULL DEFAULT 0,
    success       boolean     NOT NULL,
    rolled_back   boolean     NOT NULL DEFAULT false,
    reverted_on   timestamptz,
    reverted_by   text,
    repaired_on   timestamptz
);
CREATE INDEX IF NOT EXISTS schema_history_datastore ON {schema}.schema_history (datastore);
CREATE TABLE IF NOT EXISTS {schema}.transform_checkpoints (
    policy        text        NOT NULL,
    datastore     text        NOT NULL,
    transform     text        NOT NULL,
    partition     text        NOT NULL,
    interval_key  text        NOT NULL,
    run_id        text        NOT NULL,
    last_key      text,
    rows_done     bigint      NOT NULL DEFAULT 0,
    batches       bigint      NOT NULL DEFAULT 0,
    done          boolean     NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (policy, datastore, transform, partition, interval_key)
);
"""


def ensure(conn: Conn, schema: str) -> None:
    """Create the schema and tables if missing (safe when run concurrently)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key("convoy-ddl", schema)])
        conn.execute(sql.SQL(_DDL).format(schema=sql.Identifier(schema)))


def exists(conn: Conn, schema: str) -> bool:
    row = conn.execute(
        "SELECT to_regclass(format('%%I.schema_history', %s::text)) IS NOT NULL", [schema]
    ).fetchone()
    return bool(row and row[0])


def load(conn: Conn, schema: str, datastore: str) -> list[HistoryEntry]:
    if not exists(conn, schema):
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT rank, version, description, kind, checksum, policy, run_id, installed_on,"
            " execution_ms, success, rolled_back, reverted_on, repaired_on"
            " FROM {}.schema_history WHERE datastore = %s ORDER BY rank"
        ).format(sql.Identifier(schema)),
        [datastore],
    ).fetchall()
    return [
        HistoryEntry(
            rank=r[0],
            version=r[1],
            description=r[2],
            kind=r[3],
            checksum=r[4],
            policy=r[5],
            run_id=r[6],
            installed_on=r[7],
            execution_ms=r[8],
            success=r[9],
            rolled_back=r[10],
            reverted_on=r[11],
            repaired_on=r[12],
        )
        for r in rows
    ]


@dataclass(frozen=True)
class HistoryRow:
    datastore: str
    version: str
    description: str
    kind: str
    script: str | None
    checksum: str | None
    policy: str
    run_id: str
    execution_ms: int
    success: bool
    rolled_back: bool = False


def insert(conn: Conn, schema: str, row: HistoryRow) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.schema_history (datastore, version, description, kind, script,"
            " checksum, policy, run_id, execution_ms, success, rolled_back)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        ).format(sql.Identifier(schema)),
        [
            row.datastore,
            row.version,
            row.description,
            row.kind,
            row.script,
            row.checksum,
            row.policy,
            row.run_id,
            row.execution_ms,
            row.success,
            row.rolled_back,
        ],
    )


def mark_reverted(conn: Conn, schema: str, ranks: list[int], run_id: str) -> None:
    conn.execute(
        sql.SQL(
            "UPDATE {}.schema_history SET reverted_on = now(), reverted_by = %s"
            " WHERE rank = ANY(%s)"
        ).format(sql.Identifier(schema)),
        [run_id, ranks],
    )


def mark_repaired(conn: Conn, schema: str, ranks: list[int]) -> None:
    conn.execute(
        sql.SQL("UPDATE {}.schema_history SET repaired_on = now() WHERE rank = ANY(%s)").format(
            sql.Identifier(schema)
        ),
        [ranks],
    )


def set_checksum(conn: Conn, schema: str, rank: int, checksum: str) -> None:
    conn.execute(
        sql.SQL("UPDATE {}.schema_history SET checksum = %s WHERE rank = %s").format(
            sql.Identifier(schema)
        ),
        [checksum, rank],
    )


def is_active(entry: HistoryEntry) -> bool:
    return entry.reverted_on is None and entry.repaired_on is None


def applied(entries: list[HistoryEntry]) -> dict[tuple[int, ...], HistoryEntry]:
    """Active successful ``V`` rows by version."""
    return {
        parse_version(e.version): e for e in entries if e.kind == "V" and e.success and is_active(e)
    }


def baseline_version(entries: list[HistoryEntry]) -> tuple[int, ...] | None:
    versions = [parse_version(e.version) for e in entries if e.kind == "B" and is_active(e)]
    return max(versions) if versions else None


def blocking_failures(entries: list[HistoryEntry]) -> list[HistoryEntry]:
    """Active failed ``V`` rows that were not rolled back (possibly half-applied)."""
    return [
        e for e in entries if e.kind == "V" and not e.success and not e.rolled_back and is_active(e)
    ]
