"""Batched, resumable, throttled transforms (``UPDATE`` in keyset batches).

One batch = one short transaction that takes the next ``batch_size`` keys
(``ORDER BY key LIMIT n``), updates those rows and writes the
checkpoint row (last key, rows done) **in the same transaction**: a killed
process loses at most the uncommitted batch, and a rerun continues after the
last committed key, so no batch is ever applied twice. Only one batch of keys
is in flight at a time and nothing is fetched to the client, so memory does
not grow with the table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from convoy.engines.base import Partition, RunContext, TransformResult
from convoy.engines.errors import (
    MissingDataInterval,
    Throttled,
    UnknownTransform,
    UnsafeIdentifier,
)
from convoy.engines.postgres import undo
from convoy.engines.postgres.config import PostgresConfig, pg_interval
from convoy.engines.postgres.dry_run import rolled_back
from convoy.engines.postgres.locks import retry_lock_timeouts
from convoy.engines.postgres.sql import (
    Conn,
    TableName,
    author_expression,
    identifier,
    table_name,
)
from convoy.observe.progress import Progress
from convoy.plan.specs import PostgresSpec, SqlTransformSpec

_INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})
_LOCK_NOT_AVAILABLE = "55P03"

#: Server version whose UPDATE can return old values (``RETURNING WITH (OLD, NEW)``).
RETURNING_OLD_SINCE = 180000


@dataclass(frozen=True)
class TransformSpec:
    """A transform with validated identifiers and its ``where`` ready for binding."""

    name: str
    table: TableName
    key: str
    batch_size: int
    where: str
    set_: tuple[tuple[str, str], ...]
    params: tuple[str, ...]


def find(datastore: PostgresSpec, name: str) -> SqlTransformSpec:
    for t in datastore.transforms:
        if t.name == name:
            return t
    raise UnknownTransform(name, [t.name for t in datastore.transforms])


def compile_spec(t: SqlTransformSpec) -> TransformSpec:
    """Validate identifiers (refusing unsafe ones) and prepare the author SQL."""
    field = f"transforms[{t.name}]"
    where, used = author_expression(t.where or "TRUE", "where", f"{field}.where")
    set_: list[tuple[str, str]] = []
    key = identifier(t.key, f"{field}.key")
    for column, expr in t.set_.items():
        text, more = author_expression(expr, "value", f"{field}.set.{column}")
        used |= more
        set_.append((identifier(column, f"{field}.set"), text))
        if column == key:
            # before-images are keyed by it: a transform may not move rows
            raise UnsafeIdentifier(column, f"{field}.set (the key column cannot be set)")
    return TransformSpec(
        name=t.name,
        table=table_name(t.table, f"{field}.table"),
        key=identifier(t.key, f"{field}.key"),
        batch_size=t.batch_size,
        where=where,
        set_=tuple(set_),
        params=tuple(sorted(used)),
    )


def bind_params(spec: TransformSpec, ctx: RunContext) -> dict[str, Any]:
    values = {
        "data_interval_start": ctx.data_interval_start,
        "data_interval_end": ctx.data_interval_end,
    }
    for p in spec.params:
        if values[p] is None:
            raise MissingDataInterval(spec.name, p)
    return {p: values[p] for p in spec.params}


def _range(
    spec: TransformSpec, partition: Partition | None
) -> tuple[sql.Composable, dict[str, Any]]:
    parts: list[sql.Composable] = []
    params: dict[str, Any] = {}
    key = sql.Identifier(spec.key)
    if partition is not None and partition.lower is not None:
        parts.append(sql.SQL(" AND {} >= %(convoy_lower)s").format(key))
        params["convoy_lower"] = partition.lower
    if partition is not None and partition.upper is not None:
        parts.append(sql.SQL(" AND {} < %(convoy_upper)s").format(key))
        params["convoy_upper"] = partition.upper
    return sql.Composed(parts), params


def _where(spec: TransformSpec) -> sql.Composed:
    return sql.SQL("(") + sql.SQL(spec.where) + sql.SQL(")")


def partitions(
    conn: Conn, ctx: RunContext, spec: TransformSpec, max_partitions: int
) -> list[Partition]:
    """Key ranges with about the same number of matching rows each.

    Integer keys: ``min``/``max`` split into equal ranges. Other keys:
    ``percentile_disc`` boundaries (computed in the server). The first and last
    ranges are open-ended so rows inserted later are still covered.
    """
    n = max(1, max_partitions)
    params = bind_params(spec, ctx)
    key = sql.Identifier(spec.key)
    bounds: list[str] = []
    if n > 1:
        key_type = _key_type(conn, spec)
        if key_type in _INTEGER_TYPES:
            row = conn.execute(
                sql.SQL("SELECT min({k}), max({k}) FROM {t} WHERE {w}").format(
                    k=key, t=spec.table.ident, w=_where(spec)
                ),
                params,
            ).fetchone()
            if row and row[0] is not None:
                low, high = int(row[0]), int(row[1])
                step = (high - low + 1) / n
                bounds = [str(low + round(step * i)) for i in range(1, n)]
        else:
            fractions = [i / n for i in range(1, n)]
            row = conn.execute(
                sql.SQL(
                    "SELECT (percentile_disc(%(convoy_f)s::float8[]) WITHIN GROUP"
                    " (ORDER BY {k}))::text[] FROM {t} WHERE {w}"
                ).format(k=key, t=spec.table.ident, w=_where(spec)),
                {**params, "convoy_f": fractions},
            ).fetchone()
            bounds = [b for b in (row[0] if row and row[0] else []) if b is not None]
    unique: list[str] = []
    for b in bounds:
        if not unique or unique[-1] != b:
            unique.append(b)
    edges: list[str | None] = [None, *unique, None]
    count = len(edges) - 1
    return [Partition(spec.name, i, count, edges[i], edges[i + 1]) for i in range(count)]


def _key_type(conn: Conn, spec: TransformSpec) -> str:
    row = conn.execute(
        "SELECT format_type(a.atttypid, NULL) FROM pg_attribute a"
        " WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped",
        [spec.table.ident.as_string(conn), spec.key],
    ).fetchone()
    return str(row[0]) if row else ""


@dataclass
class _Checkpoint:
    last_key: str | None = None
    rows_done: int = 0
    batches: int = 0
    done: bool = False


class TransformRunner:
    """Runs one transform over one partition (or the whole table) for one interval."""

    def __init__(
        self,
        conn: Conn,
        cfg: PostgresConfig,
        ctx: RunContext,
        spec: TransformSpec,
        partition: Partition | None,
    ) -> None:
        self.conn = conn
        self.cfg = cfg
        self.ctx = ctx
        self.spec = spec
        self.partition = partition
        self.partition_id = partition.id if partition is not None else "all"
        self.params = bind_params(spec, ctx)
        range_sql, range_params = _range(spec, partition)
        self.range_sql = range_sql
        self.params.update(range_params)
        self.paused_s = 0.0
        self._last_check = float("-inf")  # first check after the first batch
        #: Where batches write their before-images (set by ``run``; dry runs have none).
        self.undo: undo.UndoTable | None = None
        self._cp_key = [
            ctx.policy_name,
            ctx.datastore.name,
            spec.name,
            self.partition_id,
            ctx.interval_key,
        ]

    # -- checkpoint -------------------------------------------------------
    def _cp_table(self) -> sql.Composable:
        return sql.Identifier(self.cfg.schema, "transform_checkpoints")

    def load_checkpoint(self) -> _Checkpoint:
        row = self.conn.execute(
            sql.SQL(
                "SELECT last_key, rows_done, batches, done FROM {} WHERE policy = %s"
                " AND datastore = %s AND transform = %s AND partition = %s AND interval_key = %s"
            ).format(self._cp_table()),
            self._cp_key,
        ).fetchone()
        if row is None:
            return _Checkpoint()
        return _Checkpoint(row[0], int(row[1]), int(row[2]), bool(row[3]))

    def _save_checkpoint(self, last_key: str | None, rows: int, done: bool) -> None:
        self.conn.execute(
            sql.SQL(
                "INSERT INTO {t} AS cp (policy, datastore, transform, partition, interval_key,"
                " run_id, last_key, rows_done, batches, done)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (policy, datastore, transform, partition, interval_key) DO UPDATE"
                " SET run_id = EXCLUDED.run_id,"
                " last_key = coalesce(EXCLUDED.last_key, cp.last_key),"
                " rows_done = cp.rows_done + EXCLUDED.rows_done,"
                " batches = cp.batches + EXCLUDED.batches, done = EXCLUDED.done,"
                " updated_at = now()"
            ).format(t=self._cp_table()),
            [*self._cp_key, self.ctx.run_id, last_key, rows, 0 if done else 1, done],
        )

    # -- statements -------------------------------------------------------
    def _after(self, last_key: str | None) -> tuple[sql.Composable, dict[str, Any]]:
        if last_key is None:
            return sql.SQL(""), {}
        return sql.SQL(" AND {} > %(convoy_last)s").format(sql.Identifier(self.spec.key)), {
            "convoy_last": last_key
        }

    def count_remaining(self, last_key: str | None) -> int:
        after, params = self._after(last_key)
        row = self.conn.execute(
            sql.SQL("SELECT count(*) FROM {t} WHERE {w}{r}{a}").format(
                t=self.spec.table.ident, w=_where(self.spec), r=self.range_sql, a=after
            ),
            {**self.params, **params},
        ).fetchone()
        return int(row[0]) if row else 0

    def _batch_sql(self, after: sql.Composable) -> sql.Composed:
        t = self.spec.table.ident
        key = sql.Identifier(self.spec.key)
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = ({})").format(sql.Identifier(col), sql.SQL(expr))
            for col, expr in self.spec.set_
        )
        return sql.SQL(
            "WITH convoy_batch AS ("
            " SELECT {k} AS convoy_key FROM {t} WHERE {w}{r}{a}"
            # no FOR UPDATE: the UPDATE locks the rows and re-checks `where` on rows
            # changed meanwhile; locking them twice cost ~25 % per batch
            " ORDER BY {k} LIMIT %(convoy_limit)s),"
            # = ANY(ARRAY(...)): an index scan on the key; a join here may pick a
            # hash join over a sequential scan of the whole table for every batch
            "{upd}"
            " SELECT (SELECT count(*) FROM convoy_batch),"
            " (SELECT max(convoy_key)::text FROM convoy_batch),"
            " (SELECT count(*) FROM convoy_upd)"
        ).format(
            k=key,
            t=t,
            w=_where(self.spec),
            r=self.range_sql,
            a=after,
            upd=self._update(assignments),
        )

    def _update(self, assignments: sql.Composable) -> sql.Composable:
        """The batch's UPDATE, appending before-images when the run keeps them."""
        keys = sql.SQL("ARRAY(SELECT convoy_key FROM convoy_batch)")
        if self.undo is None:
            return sql.SQL(
                " convoy_upd AS (UPDATE {t} SET {set} WHERE {k} = ANY({keys}) AND {w} RETURNING 1)"
            ).format(
                t=self.spec.table.ident,
                set=assignments,
                k=sql.Identifier(self.spec.key),
                keys=keys,
                w=_where(self.spec),
            )
        return sql.SQL(" ") + undo.batch_update(
            self.undo,
            self.cfg,
            table=self.spec.table.ident,
            where=_where(self.spec),
            assignments=assignments,
            keys=keys,
            returning_old=self.conn.info.server_version >= RETURNING_OLD_SINCE,
        )

    def prepare_undo(self) -> undo.UndoTable:
        """Undo table and in-flight trigger of this transform (created once per run)."""
        trigger = undo.TriggerSpec(
            set_=self.spec.set_, where=self.spec.where, params=self._author_params()
        )
        self.undo = undo.prepare(
            self.conn, self.cfg, self.ctx, self.spec.name, self.spec.table, self.spec.key, trigger
        )
        return self.undo

    def _author_params(self) -> dict[str, Any]:
        return {p: self.params[p] for p in self.spec.params}

    def run_batch(self, last_key: str | None) -> tuple[int, str | None, int]:
        """One batch in its own transaction with its checkpoint; (selected, last key, updated)."""
        after, params = self._after(last_key)
        query = self._batch_sql(after)

        def attempt() -> tuple[int, str | None, int]:
            with self.conn.transaction():
                row = self.conn.execute(
                    query,
                    {**self.params, **params, "convoy_limit": self.spec.batch_size},
                ).fetchone()
                selected, new_last, updated = (
                    (int(row[0]), row[1], int(row[2])) if row else (0, None, 0)
                )
                if selected == 0:
                    # the last commit waits for the log flush, and so for every batch before it
                    self.conn.execute("SET LOCAL synchronous_commit TO DEFAULT")
                self._save_checkpoint(new_last, updated, done=selected == 0)
            return selected, new_last, updated

        def waited(_: int) -> None:
            self.ctx.log(f"{self._label()}: batch waited longer than lock_timeout, retrying")

        return retry_lock_timeouts(attempt, on_retry=waited)

    # -- throttle ---------------------------------------------------------
    def _pressure(self) -> str | None:
        """Why the transform should pause now, or ``None``."""
        cfg = self.cfg
        if cfg.max_replication_lag_s is None and cfg.max_lock_wait_s is None:
            return None
        row = self.conn.execute(
            "SELECT (SELECT coalesce(max(extract(epoch FROM"
            "   greatest(write_lag, flush_lag, replay_lag))), 0)::float8 FROM pg_stat_replication),"
            " (SELECT coalesce(max(extract(epoch FROM now() - waitstart)), 0)::float8"
            "   FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid())"
        ).fetchone()
        lag, wait = (float(row[0]), float(row[1])) if row else (0.0, 0.0)
        if cfg.max_replication_lag_s is not None and lag > cfg.max_replication_lag_s:
            return f"replication lag {lag:.1f}s > {cfg.max_replication_lag_s:.1f}s"
        if cfg.max_lock_wait_s is not None and wait > cfg.max_lock_wait_s:
            return f"a session waits {wait:.1f}s for a lock (> {cfg.max_lock_wait_s:.1f}s)"
        return None

    def throttle(self, started: float, rows_this_run: int) -> None:
        cfg = self.cfg
        if cfg.max_rows_per_s:
            ahead = rows_this_run / cfg.max_rows_per_s - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        now = time.monotonic()
        if now - self._last_check < cfg.throttle_check_s:
            return
        self._last_check = now
        pause_started: float | None = None
        while (reason := self._pressure()) is not None:
            if pause_started is None:
                pause_started = time.monotonic()
                self.ctx.log(f"{self._label()}: pausing, {reason}")
            paused = time.monotonic() - pause_started
            if paused > cfg.max_pause_s:
                self.paused_s += paused
                raise Throttled(self.spec.name, paused, reason)
            time.sleep(cfg.throttle_check_s)
        if pause_started is not None:
            paused = time.monotonic() - pause_started
            self.paused_s += paused
            self.ctx.log(f"{self._label()}: resuming after {paused:.1f}s pause")

    # -- run ----------------------------------------------------------------
    def _label(self) -> str:
        suffix = "" if self.partition is None else f"[{self.partition_id}]"
        return f"{self.ctx.datastore.name}/{self.spec.name}{suffix}"

    def _result(self, cp: _Checkpoint, **kw: Any) -> TransformResult:
        base: dict[str, Any] = {
            "datastore": self.ctx.datastore.name,
            "transform": self.spec.name,
            "partition": None if self.partition is None else self.partition_id,
            "interval": self.ctx.interval_key,
            "dry_run": False,
            "rows_done": cp.rows_done,
            "batches": cp.batches,
            "resumed_from": None,
            "done": cp.done,
            "elapsed_s": 0.0,
        }
        base.update(kw)
        return TransformResult(**base)

    def dry_run(self) -> TransformResult:
        """Count what is left, then try the next batch; nothing is kept.

        Counting and evaluating the ``set`` expressions on that batch's rows
        run read-only: an expression that writes (even a sequence) is refused
        before the batch is tried read-write and rolled back.
        """
        with rolled_back(self.conn, self._label()):
            cp = self.load_checkpoint() if self._checkpoints_exist() else _Checkpoint()
            remaining = 0 if cp.done else self.count_remaining(cp.last_key)
            after, params = self._after(cp.last_key)
            params = {**self.params, **params, "convoy_limit": self.spec.batch_size}
            if not cp.done:
                self.conn.execute(self._values_sql(after), params).fetchall()
        if not cp.done:
            with rolled_back(self.conn, self._label(), read_only=False):
                self.conn.execute(self._batch_sql(after), params)
        self.ctx.log(
            f"{self._label()}: dry run, {remaining} rows to transform in batches of "
            f"{self.spec.batch_size} (first batch tried and rolled back)"
        )
        return self._result(cp, dry_run=True, rows_matching=remaining, resumed_from=cp.last_key)

    def _values_sql(self, after: sql.Composable) -> sql.Composed:
        """The next batch's new values, computed and not written (one row per key)."""
        values = sql.SQL(", ").join(sql.SQL("({})").format(sql.SQL(e)) for _, e in self.spec.set_)
        return sql.SQL(
            "SELECT ROW({v}) IS NULL FROM {t} WHERE {w}{r}{a} ORDER BY {k} LIMIT %(convoy_limit)s"
        ).format(
            v=values,
            t=self.spec.table.ident,
            w=_where(self.spec),
            r=self.range_sql,
            a=after,
            k=sql.Identifier(self.spec.key),
        )

    def _checkpoints_exist(self) -> bool:
        row = self.conn.execute(
            "SELECT to_regclass(format('%%I.transform_checkpoints', %s::text)) IS NOT NULL",
            [self.cfg.schema],
        ).fetchone()
        return bool(row and row[0])

    def run(self) -> TransformResult:
        cp = self.load_checkpoint()
        if cp.done:
            self.ctx.log(
                f"{self._label()}: already done for {self.ctx.interval_key} "
                f"({cp.rows_done} rows), skipping"
            )
            return self._result(cp)
        resumed_from = cp.last_key
        if resumed_from is not None:
            self.ctx.log(
                f"{self._label()}: resuming after key {resumed_from} ({cp.rows_done} rows done)"
            )
        remaining = self.count_remaining(cp.last_key)
        progress = Progress(
            cp.rows_done + remaining,
            self._label(),
            self.ctx.log,
            done=cp.rows_done,
            min_interval_s=self.cfg.progress_interval_s,
            sink=self.ctx.progress,
        )
        # the session is dedicated to this transform: its timeouts hold for every batch
        self.conn.execute(
            "SELECT set_config('lock_timeout', %s, false),"
            " set_config('statement_timeout', %s, false)",
            [pg_interval(self.cfg.lock_timeout_s), pg_interval(self.cfg.statement_timeout_s)],
        )
        self.prepare_undo()
        # Batches commit without waiting for the log flush (a third of a batch's
        # time): each commits its rows, before-images and checkpoint together, so
        # a server crash can only lose the last few whole batches, and the resume
        # from the checkpoint redoes them. The final commit waits (run_batch).
        self.conn.execute("SET synchronous_commit = off")
        started = time.monotonic()
        last_key, rows_this_run = cp.last_key, 0
        try:
            while True:
                selected, new_last, updated = self.run_batch(last_key)
                if selected == 0:
                    break
                rows_this_run += updated
                last_key = new_last
                progress.advance(updated)
                self.throttle(started, rows_this_run)
        finally:
            if not self.conn.closed and not self.conn.broken:
                self.conn.execute("RESET synchronous_commit")
        progress.finish()
        final = self.load_checkpoint()
        return self._result(
            final,
            resumed_from=resumed_from,
            elapsed_s=round(time.monotonic() - started, 3),
            paused_s=round(self.paused_s, 3),
        )
