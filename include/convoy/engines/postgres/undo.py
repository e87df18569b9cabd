"""Before-images of transforms, and reverting them by compare-and-set.

Every transform of a run gets an *undo table* in the backup schema
(``<backup_schema>."u_<run hash>_<transform hash>"``) registered in
``<backup_schema>.undo_log``. Each batch writes, **in the same statement as
its UPDATE**, the keys, old values and new values of every column the
transform sets for the rows it changed. They are kept *packed*: one undo row
per batch holding one array per column (stored uncompressed), because one row
per changed row doubled the transform's write-ahead log and cost a third of
its throughput. While the transform is in flight
(from its first batch until the run completes or is reverted), a ``BEFORE
INSERT OR UPDATE`` trigger applies the same ``set`` to rows the application
writes that match ``where`` (old clients still write the old shape), and
records those rows' before-images in the same undo table (``origin =
'trigger'``). So every row convoy changed, by batch or by trigger, can be put
back, and nothing else is touched.

Revert first unpacks the arrays into a flat table (``<undo table>_r``, one
row per key and batch, created in one transaction), then, per key, newest
entry wins: restore the before-image only where the
row still holds exactly the value convoy wrote; a row the application changed
since is a *conflict* (left alone, counted, kept in the undo table); a row the
application deleted is *gone*. Each entry's outcome is written in the flat
table in the same transaction as the restore, so a killed revert resumes and
a second revert does nothing.

convoy's own sessions set ``convoy.actor = 'convoy'``; the trigger skips them
(the batches write their own before-images).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from convoy.engines.base import RunContext
from convoy.engines.postgres.config import PostgresConfig, pg_interval
from convoy.engines.postgres.locks import lock_key, retry_lock_timeouts
from convoy.engines.postgres.sql import Conn, TableName
from convoy.observe.progress import Progress

#: Session setting that marks convoy's own writes (triggers skip them).
ACTOR_SETTING = "convoy.actor"
ACTOR = "convoy"
#: Conflicting keys listed in results and reports (all stay in the undo table).
MAX_LISTED_CONFLICTS = 100

_REGISTRY_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.undo_log (
    id            bigserial PRIMARY KEY,
    run_id        text        NOT NULL,
    datastore     text        NOT NULL,
    policy        text        NOT NULL,
    transform     text        NOT NULL,
    source_schema text        NOT NULL,
    source_table  text        NOT NULL,
    key_column    text        NOT NULL,
    columns       jsonb       NOT NULL,
    undo_table    text        NOT NULL,
    trigger_name  text        NOT NULL,
    function_name text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    data_interval_start timestamptz,
    data_interval_end   timestamptz,
    completed_at  timestamptz,
    reverted_at   timestamptz,
    UNIQUE (run_id, datastore, transform)
);
"""


@dataclass(frozen=True)
class UndoTable:
    """Where one transform of one run keeps its before-images."""

    id: int
    transform: str
    source: TableName
    key: str
    columns: tuple[str, ...]
    undo_table: str
    trigger: str
    function: str
    reverted: bool
    #: Packed as text (array-valued columns): the key, then each column.
    as_text: tuple[bool, ...] = ()

    @property
    def flat_table(self) -> str:
        """The unpacked entries a revert works through (one row per key and batch)."""
        return f"{self.undo_table}_r"

    def packed(self, i: int, value: sql.Composable) -> sql.Composable:
        """``value`` of the key (0) or the ``i``-th column (1..) as kept in the arrays."""
        return sql.SQL("{}::text").format(value) if self.as_text[i] else value


@dataclass
class UndoOutcome:
    """What reverting before-images did (summed over transforms)."""

    restored: int = 0
    conflicting: int = 0
    gone: int = 0
    conflicts: list[str] | None = None

    def add(self, other: UndoOutcome) -> None:
        self.restored += other.restored
        self.conflicting += other.conflicting
        self.gone += other.gone
        self.conflicts = (self.conflicts or []) + (other.conflicts or [])


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:10]


def names(ctx: RunContext, transform: str) -> tuple[str, str, str]:
    """(undo table, trigger, function) names of ``transform`` in this run."""
    run = _hash(ctx.run_id, ctx.datastore.name)
    tf = _hash(transform)
    return f"u_{run}_{tf}", f"convoy_tf_{run}_{tf}", f"tf_{run}_{tf}"


def _c(prefix: str, i: int) -> sql.Identifier:
    return sql.Identifier(f"convoy_{prefix}{i}")


def set_actor(conn: Conn) -> None:
    """Mark this session's writes as convoy's (for the rest of the session)."""
    conn.execute("SELECT set_config(%s, %s, false)", [ACTOR_SETTING, ACTOR])


def not_convoy() -> sql.Composable:
    """A trigger ``WHEN`` condition: the writer is not a convoy session."""
    return sql.SQL("(current_setting({}, true) IS DISTINCT FROM {})").format(
        sql.Literal(ACTOR_SETTING), sql.Literal(ACTOR)
    )


def ensure_registry(conn: Conn, cfg: PostgresConfig) -> None:
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s)", [lock_key("convoy-ddl", cfg.backup_schema)]
        )
        conn.execute(sql.SQL(_REGISTRY_DDL).format(schema=sql.Identifier(cfg.backup_schema)))


def registry_exists(conn: Conn, cfg: PostgresConfig) -> bool:
    row = conn.execute(
        "SELECT to_regclass(format('%%I.undo_log', %s::text)) IS NOT NULL", [cfg.backup_schema]
    ).fetchone()
    return bool(row and row[0])


def tables(conn: Conn, cfg: PostgresConfig, ctx: RunContext) -> list[UndoTable]:
    """This run's undo tables, newest first (the order to revert them in)."""
    if not registry_exists(conn, cfg):
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT id, transform, source_schema, source_table, key_column, columns,"
            " undo_table, trigger_name, function_name, reverted_at IS NOT NULL,"
            # which packed arrays hold text forms (key first, then before/after per column)
            " ARRAY(SELECT a.atttypid = 'text[]'::regtype FROM pg_attribute a"
            "  WHERE a.attrelid = to_regclass(format('%%I.%%I', %s::text, undo_table))"
            "  AND a.attname ~ '^convoy_(key|b[0-9]+)$' AND NOT a.attisdropped"
            "  ORDER BY a.attnum)"
            " FROM {}.undo_log WHERE run_id = %s AND datastore = %s ORDER BY id DESC"
        ).format(sql.Identifier(cfg.backup_schema)),
        [cfg.backup_schema, ctx.run_id, ctx.datastore.name],
    ).fetchall()
    return [
        UndoTable(
            int(r[0]),
            r[1],
            TableName(r[2], r[3]),
            r[4],
            tuple(r[5]),
            r[6],
            r[7],
            r[8],
            r[9],
            tuple(bool(x) for x in r[10]),
        )
        for r in rows
    ]


@dataclass(frozen=True)
class _ColumnType:
    """A column's type, and how its values are kept in the packed undo arrays."""

    name: str
    #: Array-valued columns are kept as their text form: ``array_agg`` of
    #: arrays needs equal dimensions and no NULLs; the text form round-trips.
    as_text: bool

    @property
    def element(self) -> str:
        return "text" if self.as_text else self.name

    def packed(self, value: sql.Composable) -> sql.Composable:
        return sql.SQL("{}::text").format(value) if self.as_text else value


def _column_types(conn: Conn, source: TableName, cols: Sequence[str]) -> dict[str, _ColumnType]:
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod),"
        " coalesce(b.typcategory, t.typcategory) = 'A'"
        " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
        " LEFT JOIN pg_type b ON b.oid = nullif(t.typbasetype, 0)"
        " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
        [source.ident.as_string(conn)],
    ).fetchall()
    found = {str(r[0]): _ColumnType(str(r[1]), bool(r[2])) for r in rows}
    return {c: found[c] for c in cols if c in found}


def _resolved(conn: Conn, table: TableName) -> TableName:
    row = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
        " ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
        [table.ident.as_string(conn)],
    ).fetchone()
    return TableName(str(row[0]), str(row[1])) if row else table


@dataclass(frozen=True)
class TriggerSpec:
    """What the in-flight trigger applies: the transform's ``set`` where ``where`` holds."""

    #: (column, SQL expression) in ``set`` order, as rendered for psycopg.
    set_: tuple[tuple[str, str], ...]
    #: ``where`` as rendered for psycopg (``%(data_interval_start)s``...).
    where: str
    #: The run's values of the parameters used.
    params: dict[str, Any]


def prepare(
    conn: Conn,
    cfg: PostgresConfig,
    ctx: RunContext,
    transform: str,
    table: TableName,
    key: str,
    trigger: TriggerSpec,
) -> UndoTable:
    """Create (once per run) the undo table, its registry row and the in-flight trigger."""
    ensure_registry(conn, cfg)
    source = _resolved(conn, table)
    columns = tuple(c for c, _ in trigger.set_)
    undo_table, trigger_name, function = names(ctx, transform)

    def attempt() -> UndoTable:
        with conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s), set_config('lock_timeout', %s, true)",
                [
                    lock_key("convoy-undo", cfg.backup_schema, ctx.run_id, transform),
                    pg_interval(cfg.lock_timeout_s),
                ],
            )
            found = [t for t in tables(conn, cfg, ctx) if t.transform == transform]
            if found:
                return found[0]
            as_text = _create(conn, cfg, source, key, columns, undo_table)
            row = conn.execute(
                sql.SQL(
                    "INSERT INTO {}.undo_log (run_id, datastore, policy, transform,"
                    " source_schema, source_table, key_column, columns, undo_table,"
                    " trigger_name, function_name, data_interval_start, data_interval_end)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s)"
                    " RETURNING id"
                ).format(sql.Identifier(cfg.backup_schema)),
                [
                    ctx.run_id,
                    ctx.datastore.name,
                    ctx.policy_name,
                    transform,
                    source.schema,
                    source.name,
                    key,
                    Jsonb(list(columns)),
                    undo_table,
                    trigger_name,
                    function,
                    trigger.params.get("data_interval_start"),
                    trigger.params.get("data_interval_end"),
                ],
            ).fetchone()
            assert row is not None
            _create_trigger(
                conn, cfg, source, key, _bound(cfg, int(row[0]), trigger), undo_table,
                trigger_name, function,
            )  # fmt: skip
        ctx.log(
            f"{ctx.datastore.name}: transform {transform} keeps before-images in "
            f"{cfg.backup_schema}.{undo_table}; trigger {trigger_name} on {source} "
            "transforms the application's writes while the run is in flight"
        )
        return UndoTable(
            int(row[0]), transform, source, key, columns, undo_table, trigger_name,
            function, False, as_text,
        )  # fmt: skip

    return retry_lock_timeouts(attempt)


def _create(
    conn: Conn,
    cfg: PostgresConfig,
    source: TableName,
    key: str,
    columns: tuple[str, ...],
    undo_table: str,
) -> tuple[bool, ...]:
    """Create the packed undo table; which of its arrays hold text forms."""
    types = _column_types(conn, source, (key, *columns))
    arrays = [sql.Identifier("convoy_key")] + [
        x for i in range(len(columns)) for x in (_c("b", i), _c("a", i))
    ]
    elements = [types[key]] + [types[c] for c in columns for _ in range(2)]
    parts: list[sql.Composable] = [
        sql.SQL("convoy_seq bigint GENERATED ALWAYS AS IDENTITY"),
        sql.SQL("convoy_origin text NOT NULL DEFAULT 'batch'"),
    ] + [sql.SQL("{} " + t.element + "[]").format(a) for a, t in zip(arrays, elements, strict=True)]
    table = sql.Identifier(cfg.backup_schema, undo_table)
    conn.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table, sql.SQL(", ").join(parts))
    )
    # each batch's arrays are written once and read once, by a revert:
    # compressing them cost more than the bytes it saved
    conn.execute(
        sql.SQL("ALTER TABLE {} {}").format(
            table,
            sql.SQL(", ").join(
                sql.SQL("ALTER COLUMN {} SET STORAGE EXTERNAL").format(a) for a in arrays
            ),
        )
    )
    return tuple(types[c].element == "text" for c in (key, *columns))


def _create_trigger(
    conn: Conn,
    cfg: PostgresConfig,
    source: TableName,
    key: str,
    spec: TriggerSpec,
    undo_table: str,
    trigger_name: str,
    function: str,
) -> None:
    cols = [c for c, _ in spec.set_]
    types = _column_types(conn, source, (key, *cols))
    computed = sql.SQL(", ").join(
        sql.SQL("(" + expr + ") AS {}").format(_c("a", i)) for i, (_, expr) in enumerate(spec.set_)
    )
    undo_cols = sql.SQL(", ").join(
        [sql.Identifier("convoy_origin"), sql.Identifier("convoy_key")]
        + [x for i in range(len(cols)) for x in (_c("b", i), _c("a", i))]
    )
    undo_vals = sql.SQL(", ").join(
        [sql.Literal("trigger"), _one(types[key], sql.SQL("NEW.{}").format(sql.Identifier(key)))]
        + [
            x
            for i, c in enumerate(cols)
            for x in (
                _one(types[c], sql.SQL("NEW.{}").format(sql.Identifier(c))),
                _one(types[c], sql.SQL("convoy_row.{}").format(_c("a", i))),
            )
        ]
    )
    assigns = sql.SQL(" ").join(
        sql.SQL("NEW.{} := convoy_row.{};").format(sql.Identifier(c), _c("a", i))
        for i, c in enumerate(cols)
    )
    body = sql.SQL(
        "DECLARE convoy_row record; BEGIN"
        " SELECT {computed} INTO convoy_row FROM (SELECT NEW.*) AS convoy_src WHERE ({where});"
        " IF FOUND THEN"
        " INSERT INTO {undo} ({undo_cols}) VALUES ({undo_vals});"
        " {assigns}"
        " END IF;"
        " RETURN NEW; END"
    ).format(
        computed=computed,
        where=sql.SQL(spec.where),
        undo=sql.Identifier(cfg.backup_schema, undo_table),
        undo_cols=undo_cols,
        undo_vals=undo_vals,
        assigns=assigns,
    )
    # SECURITY DEFINER: the application's role fires the trigger and has (and
    # needs) no privilege on the backup schema. The ``set`` and ``where``
    # expressions resolve names as in convoy's own batches (this session's
    # schemas), never in a schema the caller puts first.
    row = conn.execute("SELECT current_schemas(false)").fetchone()
    path = [sql.Identifier(str(s)) for s in (row[0] if row else [])] + [sql.SQL("pg_temp")]
    conn.execute(
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql"
            " SECURITY DEFINER SET search_path = {} AS {}"
        ).format(
            sql.Identifier(cfg.backup_schema, function),
            sql.SQL(", ").join(path),
            sql.Literal(body.as_string(conn)),
        )
    )
    conn.execute(
        sql.SQL(
            "CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON {} FOR EACH ROW WHEN {}"
            " EXECUTE FUNCTION {}()"
        ).format(
            sql.Identifier(trigger_name),
            source.ident,
            not_convoy(),
            sql.Identifier(cfg.backup_schema, function),
        )
    )


def _one(t: _ColumnType, value: sql.Composable) -> sql.Composable:
    """A one-element packed array of ``value``."""
    return sql.SQL("ARRAY[{}]::{}").format(t.packed(value), sql.SQL(t.element + "[]"))


def batch_update(
    t: UndoTable,
    cfg: PostgresConfig,
    *,
    table: sql.Composable,
    where: sql.Composable,
    assignments: sql.Composable,
    keys: sql.Composable,
    returning_old: bool,
) -> sql.Composed:
    """The CTEs that update one batch and append its before-images (one packed row).

    ``keys`` is the batch's key list (``ARRAY(SELECT ...)``). PostgreSQL 18
    returns old and new values from the UPDATE itself; older servers read the
    old values in a locking CTE first (the UPDATE then finds the rows locked).
    """
    key = sql.Identifier(t.key)
    n = len(t.columns)
    if returning_old:
        ret = sql.SQL(", ").join(
            [sql.SQL("convoy_new.{} AS convoy_key").format(key)]
            + [
                x
                for i, c in enumerate(t.columns)
                for x in (
                    sql.SQL("convoy_old.{} AS {}").format(sql.Identifier(c), _c("b", i)),
                    sql.SQL("convoy_new.{} AS {}").format(sql.Identifier(c), _c("a", i)),
                )
            ]
        )
        upd = sql.SQL(
            "convoy_upd AS (UPDATE {t} SET {set} WHERE {k} = ANY({keys}) AND {w}"
            " RETURNING WITH (OLD AS convoy_old, NEW AS convoy_new) {ret}),"
        ).format(t=table, set=assignments, k=key, keys=keys, w=where, ret=ret)
    else:
        olds = sql.SQL(", ").join(
            [sql.SQL("{} AS convoy_key").format(key)]
            + [
                sql.SQL("{} AS {}").format(sql.Identifier(c), _c("b", i))
                for i, c in enumerate(t.columns)
            ]
        )
        ret = sql.SQL(", ").join(
            [sql.SQL("convoy_prev.convoy_key")]
            + [
                x
                for i, c in enumerate(t.columns)
                for x in (
                    sql.SQL("convoy_prev.{}").format(_c("b", i)),
                    sql.SQL("{}.{} AS {}").format(table, sql.Identifier(c), _c("a", i)),
                )
            ]
        )
        upd = sql.SQL(
            "convoy_prev AS (SELECT {olds} FROM {t} WHERE {k} = ANY({keys}) AND {w} FOR UPDATE),"
            " convoy_upd AS (UPDATE {t} SET {set} FROM convoy_prev"
            " WHERE {t}.{k} = convoy_prev.convoy_key AND {w} RETURNING {ret}),"
        ).format(olds=olds, t=table, set=assignments, k=key, keys=keys, w=where, ret=ret)
    names = [sql.Identifier("convoy_key")] + [x for i in range(n) for x in (_c("b", i), _c("a", i))]
    aggs = sql.SQL(", ").join(
        sql.SQL("array_agg({})").format(t.packed((j + 1) // 2, name))
        for j, name in enumerate(names)
    )
    # all aggregates of one group see the rows in the same order: the arrays line up
    return upd + sql.SQL(
        " convoy_undo AS (INSERT INTO {} ({}) SELECT {} FROM convoy_upd HAVING count(*) > 0)"
    ).format(sql.Identifier(cfg.backup_schema, t.undo_table), sql.SQL(", ").join(names), aggs)


def drop_triggers(conn: Conn, cfg: PostgresConfig, ctx: RunContext) -> list[str]:
    """Remove this run's in-flight triggers (revert and run completion). Idempotent."""

    def drop(t: UndoTable) -> bool:
        with conn.transaction():
            conn.execute(
                "SELECT set_config('lock_timeout', %s, true)", [pg_interval(cfg.lock_timeout_s)]
            )
            present = conn.execute(
                "SELECT 1 FROM pg_trigger WHERE tgname = %s AND tgrelid = to_regclass(%s)",
                [t.trigger, t.source.ident.as_string(conn)],
            ).fetchone()
            if present:
                conn.execute(
                    sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                        sql.Identifier(t.trigger), t.source.ident
                    )
                )
            conn.execute(
                sql.SQL("DROP FUNCTION IF EXISTS {}()").format(
                    sql.Identifier(cfg.backup_schema, t.function)
                )
            )
            conn.execute(
                sql.SQL(
                    "UPDATE {}.undo_log SET completed_at = coalesce(completed_at, now())"
                    " WHERE id = %s"
                ).format(sql.Identifier(cfg.backup_schema)),
                [t.id],
            )
        return present is not None

    return [
        f"{t.trigger} on {t.source}"
        for t in tables(conn, cfg, ctx)
        if retry_lock_timeouts(functools.partial(drop, t))
    ]


def pending(conn: Conn, cfg: PostgresConfig, t: UndoTable) -> int:
    """Keys with before-images not yet reverted."""
    if _exists(conn, cfg, t.flat_table):
        query = sql.SQL("SELECT count(DISTINCT convoy_key) FROM {} WHERE convoy_state IS NULL")
        table = t.flat_table
    else:
        query = sql.SQL("SELECT count(DISTINCT k) FROM {}, unnest(convoy_key) AS k")
        table = t.undo_table
    row = conn.execute(query.format(sql.Identifier(cfg.backup_schema, table))).fetchone()
    return int(row[0]) if row else 0


def _exists(conn: Conn, cfg: PostgresConfig, table: str) -> bool:
    row = conn.execute(
        "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
        [cfg.backup_schema, table],
    ).fetchone()
    return bool(row and row[0])


def unpack(conn: Conn, cfg: PostgresConfig, t: UndoTable) -> None:
    """Unpack the batches' arrays into the flat table the revert works through.

    Idempotent and atomic: entries already unpacked (by ``convoy_seq``) are
    skipped, so a revert killed after unpacking resumes with its outcomes.
    Values are cast back to the source column's current type (array-valued
    columns were packed as text).
    """
    types = _column_types(conn, t.source, (t.key, *t.columns))
    packed = [sql.Identifier("convoy_key")] + [
        x for i in range(len(t.columns)) for x in (_c("b", i), _c("a", i))
    ]
    kinds = [types[t.key]] + [types[c] for c in t.columns for _ in range(2)]
    values = sql.SQL(", ").join(
        sql.SQL("x.{}::" + k.name + " AS {}").format(p, p)
        for p, k in zip(packed, kinds, strict=True)
    )
    flat = sql.Identifier(cfg.backup_schema, t.flat_table)
    source = sql.SQL(
        "SELECT u.convoy_seq, x.convoy_ord, u.convoy_origin, NULL::text AS convoy_state, {values}"
        " FROM {undo} AS u CROSS JOIN LATERAL unnest({arrays}) WITH ORDINALITY"
        " AS x({names}, convoy_ord)"
    ).format(
        values=values,
        undo=sql.Identifier(cfg.backup_schema, t.undo_table),
        arrays=sql.SQL(", ").join(sql.SQL("u.{}").format(p) for p in packed),
        names=sql.SQL(", ").join(packed),
    )
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s)",
            [lock_key("convoy-undo-unpack", cfg.backup_schema, t.undo_table)],
        )
        if not _exists(conn, cfg, t.flat_table):
            conn.execute(sql.SQL("CREATE TABLE {} AS {} WITH NO DATA").format(flat, source))
        conn.execute(
            sql.SQL(
                "INSERT INTO {flat} {source} WHERE u.convoy_seq >"
                " (SELECT coalesce(max(convoy_seq), 0) FROM {flat})"
            ).format(flat=flat, source=source)
        )
        conn.execute(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} (convoy_key, convoy_seq DESC, convoy_ord DESC)"
            ).format(sql.Identifier(f"{t.flat_table}_key"), flat)
        )


def _revert_batch_sql(t: UndoTable, cfg: PostgresConfig) -> sql.Composed:
    undo = sql.Identifier(cfg.backup_schema, t.flat_table)
    key = sql.Identifier(t.key)
    src = t.source.ident
    latest_cols = sql.SQL(", ").join(
        [sql.SQL("convoy_key")]
        + [x for i in range(len(t.columns)) for x in (_c("b", i), _c("a", i))]
    )
    restore = sql.SQL(", ").join(
        sql.SQL("{} = convoy_latest.{}").format(sql.Identifier(c), _c("b", i))
        for i, c in enumerate(t.columns)
    )
    unchanged = sql.SQL(" AND ").join(
        sql.SQL("{}.{} IS NOT DISTINCT FROM convoy_latest.{}").format(
            src, sql.Identifier(c), _c("a", i)
        )
        for i, c in enumerate(t.columns)
    )
    return sql.SQL(
        "WITH convoy_latest AS ("
        " SELECT DISTINCT ON (convoy_key) {latest_cols} FROM {undo} WHERE convoy_state IS NULL"
        " ORDER BY convoy_key, convoy_seq DESC, convoy_ord DESC LIMIT %(n)s),"
        # locked first: a row the application deletes meanwhile is "gone", not a conflict
        " convoy_present AS (SELECT {src}.{k} AS convoy_key FROM {src}"
        " WHERE {src}.{k} IN (SELECT convoy_key FROM convoy_latest) FOR UPDATE),"
        " convoy_restored AS (UPDATE {src} SET {restore} FROM convoy_latest"
        " JOIN convoy_present USING (convoy_key)"
        " WHERE {src}.{k} = convoy_latest.convoy_key AND {unchanged}"
        " RETURNING convoy_latest.convoy_key),"
        " convoy_mark AS (UPDATE {undo} AS u SET convoy_state = CASE"
        " WHEN u.convoy_key IN (SELECT convoy_key FROM convoy_restored) THEN 'restored'"
        " WHEN u.convoy_key IN (SELECT convoy_key FROM convoy_present) THEN 'conflict'"
        " ELSE 'gone' END"
        " WHERE u.convoy_state IS NULL AND u.convoy_key IN (SELECT convoy_key FROM convoy_latest)"
        " RETURNING 1)"
        " SELECT (SELECT count(*) FROM convoy_latest), (SELECT count(*) FROM convoy_restored),"
        " (SELECT count(*) FROM convoy_present), (SELECT count(*) FROM convoy_mark)"
    ).format(
        latest_cols=latest_cols,
        undo=undo,
        src=src,
        restore=restore,
        k=key,
        unchanged=unchanged,
    )


def revert(
    conn: Conn,
    cfg: PostgresConfig,
    ctx: RunContext,
    t: UndoTable,
    batch_size: int,
    progress: Progress | None = None,
) -> UndoOutcome:
    """Put this transform's before-images back, batch by batch (compare-and-set)."""
    unpack(conn, cfg, t)
    # without statistics the planner joins the batch CTEs by nested loops
    # (seconds per batch); the flat table was only just filled
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(cfg.backup_schema, t.flat_table)))
    query = _revert_batch_sql(t, cfg)
    while True:
        with conn.transaction():
            conn.execute(
                "SELECT set_config('lock_timeout', %s, true),"
                " set_config('statement_timeout', %s, true)",
                [pg_interval(cfg.lock_timeout_s), pg_interval(cfg.statement_timeout_s)],
            )
            row = conn.execute(query, {"n": batch_size}).fetchone()
        keys = int(row[0]) if row else 0
        if keys == 0:
            break
        if progress is not None:
            progress.advance(keys)
    # totals over the whole undo table, so a resumed revert reports everything
    out = outcome_counts(conn, cfg, t)
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "UPDATE {}.undo_log SET reverted_at = coalesce(reverted_at, now()) WHERE id = %s"
            ).format(sql.Identifier(cfg.backup_schema)),
            [t.id],
        )
    ctx.log(
        f"{ctx.datastore.name}/{t.transform}: {out.restored} rows of {t.source} set back to "
        f"their before-image; {out.conflicting} changed by the application since (kept, "
        f"listed as conflicts); {out.gone} deleted by the application"
    )
    return out


def outcome_counts(conn: Conn, cfg: PostgresConfig, t: UndoTable) -> UndoOutcome:
    """What reverting ``t`` did so far: restored, conflicting and gone keys."""
    if not _exists(conn, cfg, t.flat_table):
        return UndoOutcome(conflicts=[])
    rows = conn.execute(
        sql.SQL(
            "SELECT convoy_state, count(DISTINCT convoy_key) FROM {}"
            " WHERE convoy_state IS NOT NULL GROUP BY convoy_state"
        ).format(sql.Identifier(cfg.backup_schema, t.flat_table))
    ).fetchall()
    counts = {str(r[0]): int(r[1]) for r in rows}
    return UndoOutcome(
        counts.get("restored", 0),
        counts.get("conflict", 0),
        counts.get("gone", 0),
        [f"{t.source}:{k}" for k in _listed(conn, cfg, t, "conflict", MAX_LISTED_CONFLICTS)],
    )


def _listed(conn: Conn, cfg: PostgresConfig, t: UndoTable, state: str, limit: int) -> list[str]:
    rows = conn.execute(
        sql.SQL(
            "SELECT DISTINCT convoy_key FROM {} WHERE convoy_state = %s ORDER BY 1 LIMIT %s"
        ).format(sql.Identifier(cfg.backup_schema, t.flat_table)),
        [state, limit],
    ).fetchall()
    return [str(r[0]) for r in rows]


_PARAM = re.compile(r"%\((data_interval_start|data_interval_end)\)s")


def _bound(cfg: PostgresConfig, registry_id: int, spec: TriggerSpec) -> TriggerSpec:
    """``spec`` for a trigger body: parameters read from the registry row, ``%%`` unescaped.

    A trigger function is fixed when it is created and has no bind
    parameters; its values come from the run's registry row, so they are
    still never pasted into SQL text.
    """

    def text(author: str) -> str:
        def lookup(m: re.Match[str]) -> str:
            return (
                sql.SQL("(SELECT {} FROM {}.undo_log WHERE id = {})")
                .format(
                    sql.Identifier(m.group(1)),
                    sql.Identifier(cfg.backup_schema),
                    sql.Literal(registry_id),
                )
                .as_string(None)
            )

        return "%".join(_PARAM.sub(lookup, part) for part in author.split("%%"))

    return TriggerSpec(
        set_=tuple((c, text(e)) for c, e in spec.set_), where=text(spec.where), params={}
    )
