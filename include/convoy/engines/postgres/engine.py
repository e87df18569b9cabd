"""The PostgreSQL engine: one object per connection string, one method per stage.

Handed a psycopg conninfo (from the Airflow connection); never imports
Airflow. Every stage opens its own autocommit connection whose
``application_name`` names the policy, datastore and stage (so a blocked run
can say who holds the lock) and logs the DSN with its password redacted.
Dry runs, ``plan``, ``partitions`` and ``history`` run every statement in one
transaction that is rolled back, read-only unless the dry run tries a change
(:mod:`convoy.engines.postgres.dry_run`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg

from convoy.engines.base import (
    Action,
    BackupResult,
    HistoryEntry,
    MigrateResult,
    Partition,
    RevertResult,
    RunContext,
    TransformResult,
)
from convoy.engines.errors import EngineError, HistoryNotEmpty, UnknownVersion
from convoy.engines.postgres import audit as audit_mod
from convoy.engines.postgres import backup as backup_mod
from convoy.engines.postgres import history
from convoy.engines.postgres import migrate as migrate_mod
from convoy.engines.postgres import revert as revert_mod
from convoy.engines.postgres import transform as transform_mod
from convoy.engines.postgres import undo as undo_mod
from convoy.engines.postgres.config import PostgresConfig
from convoy.engines.postgres.dry_run import TransactionLock
from convoy.engines.postgres.dry_run import rolled_back as rolled_back_tx
from convoy.engines.postgres.locks import AdvisoryLock
from convoy.engines.postgres.sql import Conn, redact_dsn
from convoy.plan.specs import PostgresSpec
from convoy.policy.migrations import parse_version

Connect = Callable[[str, str], Conn]


def default_connect(conninfo: str, application_name: str) -> Conn:
    return psycopg.connect(conninfo, autocommit=True, application_name=application_name)


class PostgresEngine:
    """Lifecycle of a ``type: postgres`` datastore (implements ``DatastoreEngine``)."""

    kind = "postgres"

    def __init__(
        self,
        conninfo: str,
        config: PostgresConfig | None = None,
        *,
        connect: Connect = default_connect,
    ) -> None:
        self._conninfo = conninfo
        self.config = config or PostgresConfig()
        self._connect = connect

    def __repr__(self) -> str:
        return f"PostgresEngine({redact_dsn(self._conninfo)!r})"

    # -- plumbing -------------------------------------------------------------
    @staticmethod
    def _datastore(ctx: RunContext) -> PostgresSpec:
        if not isinstance(ctx.datastore, PostgresSpec):
            raise EngineError(f"datastore {ctx.datastore.name!r} is not of type postgres")
        return ctx.datastore

    @contextmanager
    def _session(
        self, ctx: RunContext, stage: str, *, rolled_back: bool = False, read_only: bool = True
    ) -> Iterator[Conn]:
        """The stage's connection; with ``rolled_back``, all of it in one rolled-back transaction.

        ``read_only`` (with ``rolled_back``) makes that transaction ``READ ONLY``.
        """
        app = f"{self.config.application_name}:{ctx.policy_name}/{ctx.datastore.name}:{stage}"
        ctx.log(f"{ctx.datastore.name}: {stage} on {redact_dsn(self._conninfo)}")
        conn = self._connect(self._conninfo, app[:63])
        try:
            if not rolled_back:
                # convoy's own writes are not the application's: in-flight transform
                # triggers and the backup's write capture skip this session
                undo_mod.set_actor(conn)
                yield conn
                return
            with rolled_back_tx(conn, f"{ctx.datastore.name}: {stage}", read_only=read_only):
                undo_mod.set_actor(conn)
                yield conn
        finally:
            conn.close()

    def _lock(
        self, conn: Conn, ctx: RunContext, *, shared: bool = False, dry_run: bool = False
    ) -> AdvisoryLock:
        """The datastore lock; a dry run's ends with its transaction (no unlock statement)."""
        if dry_run:
            return TransactionLock(
                conn,
                f"convoy:{self.config.schema}:datastore:{ctx.datastore.name}",
                timeout_s=self.config.advisory_lock_timeout_s,
                poll_s=self.config.advisory_lock_poll_s,
                shared=shared,
                log=ctx.log,
            )
        return AdvisoryLock(
            conn,
            f"convoy:{self.config.schema}:datastore:{ctx.datastore.name}",
            timeout_s=self.config.advisory_lock_timeout_s,
            poll_s=self.config.advisory_lock_poll_s,
            shared=shared,
            log=ctx.log,
        )

    # -- stages ---------------------------------------------------------------
    def plan(self, ctx: RunContext) -> list[Action]:
        """What backup, migrate and transforms would do; read-only."""
        ds = self._datastore(ctx)
        files = migrate_mod.load_files(ctx)
        with self._session(ctx, "plan", rolled_back=True) as conn:
            status = migrate_mod.status(files, history.load(conn, self.config.schema, ds.name))
            names = backup_mod.tables_to_back_up(ds, status.pending)
            tables = backup_mod.resolve_all(conn, self.config, names)
        actions: list[Action] = []
        if ds.backup != "none":
            for name, oid in tables:
                actions.append(
                    Action(
                        "backup", ds.backup, str(name), "" if oid else "absent: dropped on revert"
                    )
                )
        for f in status.pending:
            undo = (
                "undo file"
                if f.has_down
                else "no undo file: a rollback restores the backup, and refuses to if the "
                "application wrote to the table meanwhile"
            )
            actions.append(Action("migrate", "apply", f.name, f"checksum {f.checksum}, {undo}"))
        for t in ds.transforms:
            actions.append(
                Action("transform", "update", t.table, f"{t.name}: batches of {t.batch_size}")
            )
        return actions

    def backup(self, ctx: RunContext, *, dry_run: bool = False) -> BackupResult:
        ds = self._datastore(ctx)
        files = migrate_mod.load_files(ctx)
        with (
            self._session(ctx, "backup", rolled_back=dry_run) as conn,
            self._lock(conn, ctx, dry_run=dry_run),
        ):
            status = migrate_mod.status(files, history.load(conn, self.config.schema, ds.name))
            names = backup_mod.tables_to_back_up(ds, status.pending)
            if ds.backup == "none":
                return BackupResult(ds.name, "none", (), None, dry_run)
            if dry_run:
                listed = tuple(str(t) for t, _ in backup_mod.resolve_all(conn, self.config, names))
                ctx.log(f"{ds.name}: dry run would back up {', '.join(listed) or 'nothing'}")
                return BackupResult(ds.name, ds.backup, listed, None, True)
            existing = backup_mod.manifest(conn, self.config, ctx)
            if existing:
                ctx.log(f"{ds.name}: backup of run {ctx.run_id} already taken, keeping it")
                return BackupResult(
                    ds.name,
                    ds.backup,
                    tuple(str(r.source) for r in existing),
                    existing[0].location or self.config.backup_schema,
                    False,
                    skipped_existing=True,
                )
            if ds.backup == "snapshot":
                tables = backup_mod.snapshot(conn, self.config, ctx, names)
                return BackupResult(
                    ds.name, "snapshot", tuple(tables), self.config.backup_schema, False
                )
            tables, location = backup_mod.pg_dump(conn, self.config, ctx, self._conninfo, names)
            return BackupResult(ds.name, "pg_dump", tuple(tables), location, False)

    def migrate(self, ctx: RunContext, *, dry_run: bool = False) -> MigrateResult:
        ds = self._datastore(ctx)
        files = migrate_mod.load_files(ctx)
        # a dry run tries the pending migrations: read-write, rolled back
        with (
            self._session(ctx, "migrate", rolled_back=dry_run, read_only=False) as conn,
            self._lock(conn, ctx, dry_run=dry_run),
        ):
            if not dry_run:
                history.ensure(conn, self.config.schema)
            status = migrate_mod.status(files, history.load(conn, self.config.schema, ds.name))
            pending = tuple(migrate_mod.version_text(f.version) for f in status.pending)
            if not status.pending:
                ctx.log(f"{ds.name}: no pending migrations ({len(status.already_applied)} applied)")
            if dry_run:
                runs = migrate_mod.dry_run(conn, self.config, ctx, status.pending)
            else:
                runs = migrate_mod.apply(
                    conn,
                    self.config,
                    ctx,
                    status.pending,
                    after_each=lambda: self._capture_created(conn, ctx),
                )
            return MigrateResult(ds.name, dry_run, tuple(runs), pending, status.already_applied)

    def _capture_created(self, conn: Conn, ctx: RunContext) -> None:
        """Capture the application's writes to tables this run created (a revert drops them)."""
        created = [
            r.source
            for r in backup_mod.manifest(conn, self.config, ctx)
            if not r.existed and backup_mod.resolve(conn, r.source)[1] is not None
        ]
        if created:
            audit_mod.install(conn, self.config, ctx, created)

    def partitions(
        self, ctx: RunContext, transform_name: str, max_partitions: int
    ) -> list[Partition]:
        spec = transform_mod.compile_spec(transform_mod.find(self._datastore(ctx), transform_name))
        # only reads, and evaluates the author's `where`: never able to write
        with self._session(ctx, f"partitions {transform_name}", rolled_back=True) as conn:
            parts = transform_mod.partitions(conn, ctx, spec, max_partitions)
        ctx.log(f"{ctx.datastore.name}/{transform_name}: {len(parts)} partitions")
        return parts

    def transform(
        self,
        ctx: RunContext,
        transform_name: str,
        partition: Partition | None = None,
        *,
        dry_run: bool = False,
    ) -> TransformResult:
        spec = transform_mod.compile_spec(transform_mod.find(self._datastore(ctx), transform_name))
        stage = f"transform {transform_name}" + (f" {partition.id}" if partition else "")
        if dry_run:
            # read-write for the first batch it tries; the rest is read-only (TransformRunner)
            with (
                self._session(ctx, stage, rolled_back=True, read_only=False) as conn,
                self._lock(conn, ctx, shared=True, dry_run=True),
            ):
                return transform_mod.TransformRunner(
                    conn, self.config, ctx, spec, partition
                ).dry_run()
        with self._session(ctx, stage) as conn, self._lock(conn, ctx, shared=True):
            runner = transform_mod.TransformRunner(conn, self.config, ctx, spec, partition)
            history.ensure(conn, self.config.schema)
            part_lock = AdvisoryLock(
                conn,
                f"convoy:{self.config.schema}:transform:{ctx.policy_name}:{ctx.datastore.name}:"
                f"{spec.name}:{runner.partition_id}:{ctx.interval_key}",
                timeout_s=self.config.advisory_lock_timeout_s,
                poll_s=self.config.advisory_lock_poll_s,
                log=ctx.log,
            )
            with part_lock:
                return runner.run()

    def revert(self, ctx: RunContext, *, dry_run: bool = False) -> RevertResult:
        files = migrate_mod.load_files(ctx)
        with (
            self._session(ctx, "revert", rolled_back=dry_run) as conn,
            self._lock(conn, ctx, dry_run=dry_run),
        ):
            return revert_mod.revert(conn, self.config, ctx, files, self._conninfo, dry_run=dry_run)

    def complete(self, ctx: RunContext) -> list[str]:
        """End the run's in-flight work: transform triggers and write capture are removed.

        Called when the run ends without reverting this datastore. Before-images,
        audit records and backups stay (a later manual rollback uses them).
        Idempotent.
        """
        with self._session(ctx, "complete") as conn, self._lock(conn, ctx):
            done = undo_mod.drop_triggers(conn, self.config, ctx)
            captured = [
                r.source
                for r in backup_mod.manifest(conn, self.config, ctx)
                if audit_mod.capturing(conn, ctx, r.source)
            ]
            audit_mod.remove(conn, self.config, ctx, captured)
        if done or captured:
            ctx.log(
                f"{ctx.datastore.name}: run complete; removed "
                + ", ".join([*done, *(f"write capture on {t}" for t in captured)])
            )
        return done + [f"write capture on {t}" for t in captured]

    def history(self, ctx: RunContext) -> list[HistoryEntry]:
        with self._session(ctx, "history", rolled_back=True) as conn:
            return history.load(conn, self.config.schema, ctx.datastore.name)

    # -- maintenance ----------------------------------------------------------
    def baseline(self, ctx: RunContext, version: str, description: str = "baseline") -> None:
        """Mark versions up to ``version`` as applied on a database convoy never managed."""
        canonical = migrate_mod.version_text(parse_version(version))
        with self._session(ctx, "baseline") as conn, self._lock(conn, ctx):
            history.ensure(conn, self.config.schema)
            entries = history.load(conn, self.config.schema, ctx.datastore.name)
            active = [e.version for e in entries if e.kind in "VB" and history.is_active(e)]
            if active:
                raise HistoryNotEmpty(ctx.datastore.name, active)
            with conn.transaction():
                history.insert(
                    conn,
                    self.config.schema,
                    history.HistoryRow(
                        datastore=ctx.datastore.name,
                        version=canonical,
                        description=description,
                        kind="B",
                        script=None,
                        checksum=None,
                        policy=ctx.policy_name,
                        run_id=ctx.run_id,
                        execution_ms=0,
                        success=True,
                    ),
                )
        ctx.log(f"{ctx.datastore.name}: baseline at version {canonical}")

    def repair(self, ctx: RunContext, version: str, *, accept_checksum: bool = False) -> list[str]:
        """Clear a failed (half-applied) migration of ``version`` after a human fixed it.

        With ``accept_checksum``, also accept the file's current checksum for an
        applied version that was edited. Returns what was done.
        """
        wanted = parse_version(version)
        files = migrate_mod.load_files(ctx)
        done: list[str] = []
        with self._session(ctx, "repair") as conn, self._lock(conn, ctx):
            entries = history.load(conn, self.config.schema, ctx.datastore.name)
            failed = [
                e for e in history.blocking_failures(entries) if parse_version(e.version) == wanted
            ]
            with conn.transaction():
                if failed:
                    history.mark_repaired(conn, self.config.schema, [e.rank for e in failed])
                    done.append(f"cleared failed attempt of {version} (run {failed[0].run_id})")
                entry = history.applied(entries).get(wanted)
                current = next((f for f in files.migrations if f.version == wanted), None)
                if (
                    accept_checksum
                    and entry is not None
                    and current is not None
                    and entry.checksum != current.checksum
                ):
                    history.set_checksum(conn, self.config.schema, entry.rank, current.checksum)
                    done.append(
                        f"accepted checksum {current.checksum} for {version} (was {entry.checksum})"
                    )
        if not done:
            raise UnknownVersion(version, "nothing to repair")
        for line in done:
            ctx.log(f"{ctx.datastore.name}: repair: {line}")
        return done
