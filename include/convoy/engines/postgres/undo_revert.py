"""Reverting a transform from its before-images, by compare-and-set.

The batches' packed undo rows (:mod:`convoy.engines.postgres.undo`) are first
unpacked, atomically and idempotently, into a flat table with one row per key
and batch; then, per key, the newest entry's before-image is put back only
where the row still holds the value convoy wrote. Each entry's outcome
(``restored``, ``conflict``, ``gone``) is written in the same transaction as
the restore, so a killed revert resumes and a second revert does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from convoy.engines.base import RunContext
from convoy.engines.postgres.config import PostgresConfig, pg_interval
from convoy.engines.postgres.locks import lock_key
from convoy.engines.postgres.sql import Conn, relation_exists
from convoy.engines.postgres.undo import UndoTable, column_types, undo_column
from convoy.observe.progress import Progress

#: Conflicting keys listed in results and reports (all stay in the undo table).
MAX_LISTED_CONFLICTS = 100


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


def pending(conn: Conn, cfg: PostgresConfig, t: UndoTable) -> int:
    """Keys with before-images not yet reverted."""
    if relation_exists(conn, cfg.backup_schema, t.flat_table):
        query = sql.SQL("SELECT count(DISTINCT convoy_key) FROM {} WHERE convoy_state IS NULL")
        table = t.flat_table
    else:
        query = sql.SQL("SELECT count(DISTINCT k) FROM {}, unnest(convoy_key) AS k")
        table = t.undo_table
    row = conn.execute(query.format(sql.Identifier(cfg.backup_schema, table))).fetchone()
    return int(row[0]) if row else 0


def refusal(conn: Conn, cfg: PostgresConfig, t: UndoTable) -> str | None:
    """Why ``t``'s before-images cannot be put back (their table or columns are gone), or None.

    Checked before anything of ``t`` is unpacked or restored: a value has
    nowhere to go, and putting back the other columns alone would leave rows
    half reverted.
    """
    wanted = (t.key, *t.columns)
    have = column_types(conn, t.source, wanted)
    missing = [c for c in wanted if c not in have]
    if not missing:
        return None
    row = conn.execute("SELECT to_regclass(%s)", [t.source.ident.as_string(conn)]).fetchone()
    gone = row is None or row[0] is None
    why = (
        "the table no longer exists"
        if gone
        else f"column(s) {', '.join(missing)} no longer exist in it"
    )
    # re-created empty, the columns would make every row a conflict (compare-and-set)
    return (
        f"{t.source} not set back to its before-images ({t.transform}): {why}. Nothing of "
        f"this transform was reverted; the run's older transforms, undo files and backup "
        f"restore wait for it (they assume it is reverted first). The before-images are kept "
        f"in {cfg.backup_schema}.{t.undo_table}. Finish by hand: bring "
        f"{'the table' if gone else 'the column(s)'} back with the values the run left "
        f"(e.g. from the backup) and run the rollback again, or put the rows back by hand "
        f"from the before-images"
    )


def unpack(conn: Conn, cfg: PostgresConfig, t: UndoTable) -> None:
    """Unpack the batches' arrays into the flat table the revert works through.

    Idempotent and atomic: entries already unpacked (by ``convoy_seq``) are
    skipped, so a revert killed after unpacking resumes with its outcomes.
    Values are cast back to the source column's current type (array-valued
    columns were packed as text).
    """
    types = column_types(conn, t.source, (t.key, *t.columns))
    packed = [sql.Identifier("convoy_key")] + [
        x for i in range(len(t.columns)) for x in (undo_column("b", i), undo_column("a", i))
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
        if not relation_exists(conn, cfg.backup_schema, t.flat_table):
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
        + [x for i in range(len(t.columns)) for x in (undo_column("b", i), undo_column("a", i))]
    )
    restore = sql.SQL(", ").join(
        sql.SQL("{} = convoy_latest.{}").format(sql.Identifier(c), undo_column("b", i))
        for i, c in enumerate(t.columns)
    )
    unchanged = sql.SQL(" AND ").join(
        sql.SQL("{}.{} IS NOT DISTINCT FROM convoy_latest.{}").format(
            src, sql.Identifier(c), undo_column("a", i)
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
    if not relation_exists(conn, cfg.backup_schema, t.flat_table):
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
