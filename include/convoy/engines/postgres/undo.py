"""Before-images of transforms, and reverting them by compare-and-set.

Every transform of a run gets an *undo table* in the backup schema
(``<backup_schema>."u_<run hash>_<transform hash>"``) registered in
``<backup_schema>.undo_log``. Each batch writes, **in the same statement as
its UPDATE**, the keys, old values and new values of every column the
transform sets for the rows it changed. They are kept *packed*: one undo row
per batch holding one array per column (stored uncompressed), because one row
per changed row doubled the transform's write-ahead log and cost a third of
its throughput. While the transform is in flight (from its first batch until
the run completes or is reverted), triggers apply the same ``set`` to rows the
application writes that match ``where`` (old clients still write the old
shape): ``BEFORE INSERT`` on new rows, ``AFTER UPDATE`` on updated ones. They
record those rows' before-images in the same undo table (``origin =
'trigger'``). So every row convoy changed, by batch or by trigger, can be put
back, and nothing else is touched.

Revert (:mod:`convoy.engines.postgres.undo_revert`) first unpacks the arrays
into a flat table (``<undo table>_r``, one row per key and batch, created in
one transaction), then, per key, newest entry wins: restore the before-image
only where the row still holds exactly the value convoy wrote; a row the
application changed
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
from convoy.engines.postgres.sql import Conn, TableName, relation_exists

#: Session setting that marks convoy's own writes (triggers skip them).
ACTOR_SETTING = "convoy.actor"
ACTOR = "convoy"

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


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:10]


def names(ctx: RunContext, transform: str) -> tuple[str, str, str]:
    """(undo table, trigger, function) names of ``transform`` in this run."""
    run = _hash(ctx.run_id, ctx.datastore.name)
    tf = _hash(transform)
    return f"u_{run}_{tf}", f"convoy_tf_{run}_{tf}", f"tf_{run}_{tf}"


def undo_column(prefix: str, i: int) -> sql.Identifier:
    """Column ``i`` of the undo tables: ``b`` before, ``a`` after (``o`` old, pre-18 CTE)."""
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
    return relation_exists(conn, cfg.backup_schema, "undo_log")


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
class ColumnType:
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


def column_types(conn: Conn, source: TableName, cols: Sequence[str]) -> dict[str, ColumnType]:
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod),"
        " coalesce(b.typcategory, t.typcategory) = 'A'"
        " FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
        " LEFT JOIN pg_type b ON b.oid = nullif(t.typbasetype, 0)"
        " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
        [source.ident.as_string(conn)],
    ).fetchall()
    found = {str(r[0]): ColumnType(str(r[1]), bool(r[2])) for r in rows}
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
    types = column_types(conn, source, (key, *columns))
    arrays = [sql.Identifier("convoy_key")] + [
        x for i in range(len(columns)) for x in (undo_column("b", i), undo_column("a", i))
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
    types = column_types(conn, source, (key, *cols))
    computed = sql.SQL(", ").join(
        sql.SQL("(" + expr + ") AS {}").format(undo_column("a", i))
        for i, (_, expr) in enumerate(spec.set_)
    )
    undo_cols = sql.SQL(", ").join(
        [sql.Identifier("convoy_origin"), sql.Identifier("convoy_key")]
        + [x for i in range(len(cols)) for x in (undo_column("b", i), undo_column("a", i))]
    )
    undo_vals = sql.SQL(", ").join(
        [sql.Literal("trigger"), _one(types[key], sql.SQL("NEW.{}").format(sql.Identifier(key)))]
        + [
            x
            for i, c in enumerate(cols)
            for x in (
                _one(types[c], sql.SQL("NEW.{}").format(sql.Identifier(c))),
                _one(types[c], sql.SQL("convoy_row.{}").format(undo_column("a", i))),
            )
        ]
    )
    assigns = sql.SQL(" ").join(
        sql.SQL("NEW.{} := convoy_row.{};").format(sql.Identifier(c), undo_column("a", i))
        for i, c in enumerate(cols)
    )
    updated_vals = sql.SQL(", ").join(
        [sql.Literal("trigger"), _one(types[key], sql.SQL("NEW.{}").format(sql.Identifier(key)))]
        + [
            x
            for i, c in enumerate(cols)
            for x in (
                _one(types[c], sql.SQL("NEW.{}").format(sql.Identifier(c))),
                _one(types[c], sql.SQL("convoy_upd.{}").format(sql.Identifier(c))),
            )
        ]
    )
    set_sql = sql.SQL(", ").join(
        sql.SQL("{} = (" + expr + ")").format(sql.Identifier(c)) for c, expr in spec.set_
    )
    # INSERT: a BEFORE trigger sets the new values on the row being inserted.
    # UPDATE: an AFTER trigger updates the row the application just wrote, in
    # its transaction, as convoy (so neither this trigger nor the write capture
    # fires again). A BEFORE UPDATE trigger would make PostgreSQL lock every
    # row convoy's own batches update before evaluating WHEN (a WAL record per
    # row, a fifth of the transform's time); an AFTER trigger's WHEN is checked
    # without a lock.
    body = sql.SQL(
        "DECLARE convoy_row record; convoy_prev text; BEGIN"
        " IF TG_OP = 'INSERT' THEN"
        " SELECT {computed} INTO convoy_row FROM (SELECT NEW.*) AS convoy_src WHERE ({where});"
        " IF FOUND THEN"
        " INSERT INTO {undo} ({undo_cols}) VALUES ({undo_vals});"
        " {assigns}"
        " END IF;"
        " RETURN NEW;"
        " END IF;"
        " convoy_prev := current_setting({actor}, true);"
        " PERFORM set_config({actor}, {me}, true);"
        " WITH convoy_upd AS (UPDATE {src} SET {set_sql} WHERE {k} = NEW.{k} AND ({where})"
        " RETURNING {returned})"
        " INSERT INTO {undo} ({undo_cols}) SELECT {updated_vals} FROM convoy_upd;"
        " PERFORM set_config({actor}, coalesce(convoy_prev, ''), true);"
        " RETURN NULL; END"
    ).format(
        computed=computed,
        where=sql.SQL(spec.where),
        undo=sql.Identifier(cfg.backup_schema, undo_table),
        undo_cols=undo_cols,
        undo_vals=undo_vals,
        assigns=assigns,
        actor=sql.Literal(ACTOR_SETTING),
        me=sql.Literal(ACTOR),
        src=source.ident,
        set_sql=set_sql,
        k=sql.Identifier(key),
        returned=sql.SQL(", ").join(sql.Identifier(c) for c in cols),
        updated_vals=updated_vals,
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
    for name, when in (
        (trigger_name, "BEFORE INSERT"),
        (update_trigger(trigger_name), "AFTER UPDATE"),
    ):
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER {} " + when + " ON {} FOR EACH ROW WHEN {} EXECUTE FUNCTION {}()"
            ).format(
                sql.Identifier(name),
                source.ident,
                not_convoy(),
                sql.Identifier(cfg.backup_schema, function),
            )
        )


def update_trigger(trigger_name: str) -> str:
    """The name of the in-flight trigger for UPDATEs (``trigger_name`` is for INSERTs)."""
    return f"{trigger_name}_u"


def _one(t: ColumnType, value: sql.Composable) -> sql.Composable:
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
                    sql.SQL("convoy_old.{} AS {}").format(sql.Identifier(c), undo_column("b", i)),
                    sql.SQL("convoy_new.{} AS {}").format(sql.Identifier(c), undo_column("a", i)),
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
                sql.SQL("{} AS {}").format(sql.Identifier(c), undo_column("b", i))
                for i, c in enumerate(t.columns)
            ]
        )
        ret = sql.SQL(", ").join(
            [sql.SQL("convoy_prev.convoy_key")]
            + [
                x
                for i, c in enumerate(t.columns)
                for x in (
                    sql.SQL("convoy_prev.{}").format(undo_column("b", i)),
                    sql.SQL("{}.{} AS {}").format(table, sql.Identifier(c), undo_column("a", i)),
                )
            ]
        )
        upd = sql.SQL(
            "convoy_prev AS (SELECT {olds} FROM {t} WHERE {k} = ANY({keys}) AND {w} FOR UPDATE),"
            " convoy_upd AS (UPDATE {t} SET {set} FROM convoy_prev"
            " WHERE {t}.{k} = convoy_prev.convoy_key AND {w} RETURNING {ret}),"
        ).format(olds=olds, t=table, set=assignments, k=key, keys=keys, w=where, ret=ret)
    packed = [sql.Identifier("convoy_key")] + [
        x for i in range(n) for x in (undo_column("b", i), undo_column("a", i))
    ]
    aggs = sql.SQL(", ").join(
        sql.SQL("array_agg({})").format(t.packed((j + 1) // 2, name))
        for j, name in enumerate(packed)
    )
    # all aggregates of one group see the rows in the same order: the arrays line up
    return upd + sql.SQL(
        " convoy_undo AS (INSERT INTO {} ({}) SELECT {} FROM convoy_upd HAVING count(*) > 0)"
    ).format(sql.Identifier(cfg.backup_schema, t.undo_table), sql.SQL(", ").join(packed), aggs)


def drop_triggers(conn: Conn, cfg: PostgresConfig, ctx: RunContext) -> list[str]:
    """Remove this run's in-flight triggers (revert and run completion). Idempotent."""

    def drop(t: UndoTable) -> bool:
        with conn.transaction():
            conn.execute(
                "SELECT set_config('lock_timeout', %s, true)", [pg_interval(cfg.lock_timeout_s)]
            )
            present = conn.execute(
                "SELECT 1 FROM pg_trigger WHERE tgname = ANY(%s) AND tgrelid = to_regclass(%s)",
                [[t.trigger, update_trigger(t.trigger)], t.source.ident.as_string(conn)],
            ).fetchone()
            if present:
                for name in (t.trigger, update_trigger(t.trigger)):
                    conn.execute(
                        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                            sql.Identifier(name), t.source.ident
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
