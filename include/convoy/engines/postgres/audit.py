"""Capture of the application's writes to backed-up tables, from the backup on.

A table restore (for a migration without an undo file) puts back the copy
taken at backup time; every write the application committed after that copy
would be lost. So before the copy is taken, each backed-up table gets an
``AFTER INSERT OR UPDATE OR DELETE`` row trigger (and a ``TRUNCATE``
statement trigger) that appends the operation, the writing transaction's id
and the row image to the run's audit table
``<backup_schema>."a_<run hash>"``. convoy's own sessions
(``convoy.actor = 'convoy'``) are not captured.

The copy records the MVCC snapshot it was taken in. At revert, a write whose
transaction is *not visible* in that snapshot is one the copy does not hold:
if there is any, the restore is refused (see ``docs/decisions.md``), and the
audit table lists those writes for whoever finishes by hand. The triggers are
removed when the run completes or is reverted; after that no table restore is
attempted, because writes can no longer be ruled out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from psycopg import sql

from convoy.engines.base import RunContext
from convoy.engines.postgres.config import PostgresConfig, pg_interval
from convoy.engines.postgres.locks import lock_key, retry_lock_timeouts
from convoy.engines.postgres.sql import Conn, TableName
from convoy.engines.postgres.undo import not_convoy

# SECURITY DEFINER: the application's role writes the rows and fires the
# trigger, but has (and needs) no privilege on convoy's backup schema.
_FUNCTION = """
CREATE OR REPLACE FUNCTION {schema}.convoy_capture() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $convoy$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    EXECUTE format('INSERT INTO %s (source_schema, source_table, op, xid) VALUES ($1, $2, $3, $4)',
                   TG_ARGV[0]) USING TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP, pg_current_xact_id();
  ELSE
    EXECUTE format('INSERT INTO %s (source_schema, source_table, op, xid, row_image)'
                   ' VALUES ($1, $2, $3, $4, $5)', TG_ARGV[0])
      USING TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP, pg_current_xact_id(),
            CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END;
  END IF;
  RETURN NULL;
END
$convoy$;
"""


def _run_hash(ctx: RunContext) -> str:
    return hashlib.sha256(f"{ctx.run_id}\x1f{ctx.datastore.name}".encode()).hexdigest()[:10]


def audit_table(ctx: RunContext) -> str:
    return f"a_{_run_hash(ctx)}"


def trigger_names(ctx: RunContext) -> tuple[str, str]:
    """(row trigger, truncate trigger) names of this run."""
    h = _run_hash(ctx)
    return f"convoy_capture_{h}", f"convoy_capture_t_{h}"


def install(conn: Conn, cfg: PostgresConfig, ctx: RunContext, tables: Sequence[TableName]) -> str:
    """Start capturing the application's writes to ``tables`` (committed before returning)."""
    schema = sql.Identifier(cfg.backup_schema)
    target = sql.Identifier(cfg.backup_schema, audit_table(ctx))
    row_trigger, truncate_trigger = trigger_names(ctx)

    def attempt() -> str:
        with conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s), set_config('lock_timeout', %s, true)",
                [lock_key("convoy-ddl", cfg.backup_schema), pg_interval(cfg.lock_timeout_s)],
            )
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            conn.execute(sql.SQL(_FUNCTION).format(schema=schema))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (id bigint GENERATED ALWAYS AS IDENTITY,"
                    " source_schema text NOT NULL, source_table text NOT NULL,"
                    " op text NOT NULL, xid xid8 NOT NULL, row_image jsonb,"
                    " at timestamptz NOT NULL DEFAULT clock_timestamp())"
                ).format(target)
            )
            arg = sql.Literal(target.as_string(conn))
            function = sql.Identifier(cfg.backup_schema, "convoy_capture")
            for table in tables:
                if _has_trigger(conn, table, row_trigger):
                    continue
                conn.execute(
                    sql.SQL(
                        "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {}"
                        " FOR EACH ROW WHEN {} EXECUTE FUNCTION {}({})"
                    ).format(sql.Identifier(row_trigger), table.ident, not_convoy(), function, arg)
                )
                conn.execute(
                    sql.SQL(
                        "CREATE TRIGGER {} AFTER TRUNCATE ON {}"
                        " FOR EACH STATEMENT WHEN {} EXECUTE FUNCTION {}({})"
                    ).format(
                        sql.Identifier(truncate_trigger),
                        table.ident,
                        not_convoy(),
                        function,
                        arg,
                    )
                )
        return audit_table(ctx)

    return retry_lock_timeouts(attempt)


def _has_trigger(conn: Conn, table: TableName, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_trigger WHERE tgname = %s AND tgrelid = to_regclass(%s)",
        [name, table.ident.as_string(conn)],
    ).fetchone()
    return row is not None


def capturing(conn: Conn, ctx: RunContext, table: TableName) -> bool:
    """Whether the application's writes to ``table`` are still being captured."""
    exists = conn.execute("SELECT to_regclass(%s)", [table.ident.as_string(conn)]).fetchone()
    return bool(exists and exists[0]) and _has_trigger(conn, table, trigger_names(ctx)[0])


def writes_after(
    conn: Conn, cfg: PostgresConfig, ctx: RunContext, table: TableName, snapshot: str | None
) -> int:
    """Application writes to ``table`` that the copy taken in ``snapshot`` does not hold.

    ``snapshot=None``: every captured write (a table the run created has no copy).
    """
    exists = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL",
        [sql.Identifier(cfg.backup_schema, audit_table(ctx)).as_string(conn)],
    ).fetchone()
    if not (exists and exists[0]):
        return 0
    row = conn.execute(
        sql.SQL(
            "SELECT count(*) FROM {} WHERE source_schema = %s AND source_table = %s"
            " AND (%s::pg_snapshot IS NULL OR NOT pg_visible_in_snapshot(xid, %s::pg_snapshot))"
        ).format(sql.Identifier(cfg.backup_schema, audit_table(ctx))),
        [table.schema, table.name, snapshot, snapshot],
    ).fetchone()
    return int(row[0]) if row else 0


def remove(conn: Conn, cfg: PostgresConfig, ctx: RunContext, tables: Sequence[TableName]) -> None:
    """Stop capturing (the audit table stays, as the record). Idempotent."""

    def attempt() -> None:
        with conn.transaction():
            conn.execute(
                "SELECT set_config('lock_timeout', %s, true)", [pg_interval(cfg.lock_timeout_s)]
            )
            for table in tables:
                if conn.execute(
                    "SELECT to_regclass(%s)", [table.ident.as_string(conn)]
                ).fetchone() == (None,):
                    continue
                for name in trigger_names(ctx):
                    conn.execute(
                        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                            sql.Identifier(name), table.ident
                        )
                    )

    retry_lock_timeouts(attempt)
