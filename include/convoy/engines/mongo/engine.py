"""The MongoDB engine: handed a ``pymongo.MongoClient``-compatible client and a database name.

Implements :class:`convoy.engines.base.DatastoreEngine`. Never imports
Airflow: the Airflow layer builds the client from the policy's connection
(``MongoHook(conn_id).get_conn()``) and calls one method per stage.
All of convoy's state lives in the datastore's own database
(``convoy_changelog``, ``convoy_locks``, ``convoy_checkpoints``,
``convoy_undo``, ``convoy_backups``, ``convoy_backup__*``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pymongo.database import Database
from pymongo.mongo_client import MongoClient

from convoy.engines.base import (
    Action,
    BackupResult,
    HistoryEntry,
    MigrateResult,
    MigrationRun,
    Partition,
    RevertResult,
    RunContext,
    TransformResult,
)
from convoy.engines.errors import EngineError, UnknownVersion
from convoy.engines.mongo import backup as backup_mod
from convoy.engines.mongo import changelog
from convoy.engines.mongo import migrate as migrate_mod
from convoy.engines.mongo import revert as revert_mod
from convoy.engines.mongo import transform as transform_mod
from convoy.engines.mongo.config import FaultHook, MongoConfig
from convoy.engines.mongo.documents import collection_digest, collection_name, stream
from convoy.engines.mongo.locks import MongoLock, utcnow
from convoy.plan.specs import MongoSpec
from convoy.policy.migrations import MigrationFile, parse_version

Doc = dict[str, Any]


class MongoEngine:
    """Lifecycle of a ``type: mongo`` datastore (implements ``DatastoreEngine``)."""

    kind = "mongo"

    def __init__(
        self,
        client: MongoClient[Doc],
        database: str,
        config: MongoConfig | None = None,
        *,
        fault_hook: FaultHook | None = None,
    ) -> None:
        self.client = client
        self.database = database
        self.config = config or MongoConfig()
        self._fault = fault_hook

    def __repr__(self) -> str:
        return f"MongoEngine(database={self.database!r})"

    # -- plumbing -------------------------------------------------------------
    @property
    def db(self) -> Database[Doc]:
        return self.client[self.database]

    @staticmethod
    def _datastore(ctx: RunContext) -> MongoSpec:
        if not isinstance(ctx.datastore, MongoSpec):
            raise EngineError(f"datastore {ctx.datastore.name!r} is not of type mongo")
        return ctx.datastore

    def _lock(self, ctx: RunContext, name: str, stage: str) -> MongoLock:
        cfg = self.config
        return MongoLock(
            self.db[cfg.locks_collection],
            name,
            {"policy": ctx.policy_name, "run_id": ctx.run_id, "stage": stage},
            ttl_s=cfg.lock_ttl_s,
            wait_s=cfg.lock_wait_s,
            poll_s=cfg.lock_poll_s,
            heartbeat=cfg.heartbeat,
            log=ctx.log,
        )

    def _db_lock(self, ctx: RunContext, stage: str) -> MongoLock:
        """The one-writer lock of the database (migrate, backup, revert, repair)."""
        return self._lock(ctx, f"database:{self.database}", stage)

    def _status(
        self, ctx: RunContext, files: Sequence[MigrationFile], *, locked: bool
    ) -> migrate_mod.Status:
        """Migration status; read-only callers (``locked=False``) tolerate a live migration."""
        entries = changelog.load(self.db, self.config, ctx.datastore.name)
        live = False
        if not locked:
            lock = self.db[self.config.locks_collection].find_one(
                {"_id": f"database:{self.database}", "expiresAt": {"$gt": utcnow()}}
            )
            live = lock is not None
        return migrate_mod.status(files, entries, lock_live=live)

    # -- stages ---------------------------------------------------------------
    def plan(self, ctx: RunContext) -> list[Action]:
        """What backup, migrate and transforms would do; read-only."""
        ds = self._datastore(ctx)
        files = migrate_mod.load_files(ctx)
        st = self._status(ctx, files, locked=False)
        existing = set(self.db.list_collection_names())
        actions: list[Action] = []
        if ds.backup == "snapshot":
            for name in backup_mod.collections_to_back_up(ds, st.pending, self.config):
                note = "" if name in existing else "absent: dropped on revert"
                actions.append(Action("backup", "snapshot", name, note))
        for f in st.pending:
            undo = (
                "down(db)"
                if f.has_down
                else "no down(db): snapshot on revert, refused if others wrote to it"
            )
            actions.append(Action("migrate", "apply", f.name, f"checksum {f.checksum}, {undo}"))
        for t in ds.transforms:
            spec = transform_mod.compile_spec(t, ctx, self.config)
            note = "" if spec.collection in existing else " (collection does not exist yet)"
            actions.append(
                Action(
                    "transform",
                    "update",
                    spec.collection,
                    f"{t.name}: batches of {t.batch_size}{note}",
                )
            )
        return actions

    def backup(self, ctx: RunContext, *, dry_run: bool = False) -> BackupResult:
        ds = self._datastore(ctx)
        files = migrate_mod.load_files(ctx)
        if ds.backup == "none":
            return BackupResult(ds.name, "none", (), None, dry_run)
        location = f"{self.database}.{self.config.backup_prefix}{backup_mod.run_hash(ctx)}__*"
        if dry_run:
            st = self._status(ctx, files, locked=False)
            names = backup_mod.collections_to_back_up(ds, st.pending, self.config)
            ctx.log(f"{ds.name}: dry run would snapshot {', '.join(names) or 'nothing'}")
            return BackupResult(ds.name, "snapshot", tuple(names), location, True)
        with self._db_lock(ctx, "backup"):
            st = self._status(ctx, files, locked=True)
            names = backup_mod.collections_to_back_up(ds, st.pending, self.config)
            taken, existed = backup_mod.snapshot(self.db, self.config, ctx, names)
        return BackupResult(
            ds.name, "snapshot", tuple(taken), location, False, skipped_existing=existed
        )

    def migrate(self, ctx: RunContext, *, dry_run: bool = False) -> MigrateResult:
        ds = self._datastore(ctx)
        files = migrate_mod.load_files(ctx)
        if dry_run:
            st = self._status(ctx, files, locked=False)
            for f in st.pending:
                ctx.log(f"{ds.name}: dry run would apply {f.name}")
            listed = tuple(
                MigrationRun(f.version_text, f.description, f.checksum, False, 0, "listed")
                for f in st.pending
            )
            return MigrateResult(
                ds.name, True, listed, tuple(r.version for r in listed), st.already_applied
            )
        with self._db_lock(ctx, "migrate") as lock:
            changelog.ensure(self.db, self.config)
            st = self._status(ctx, files, locked=True)
            pending = tuple(f.version_text for f in st.pending)
            if not st.pending:
                ctx.log(f"{ds.name}: no pending migrations ({len(st.already_applied)} applied)")
            runs = migrate_mod.apply(self.db, self.config, ctx, st.pending, lock, self._fault)
        return MigrateResult(ds.name, False, tuple(runs), pending, st.already_applied)

    def partitions(
        self, ctx: RunContext, transform_name: str, max_partitions: int
    ) -> list[Partition]:
        t = transform_mod.find(self._datastore(ctx), transform_name)
        spec = transform_mod.compile_spec(t, ctx, self.config)
        parts = transform_mod.partitions(self.db, ctx, spec, max_partitions)
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
        t = transform_mod.find(self._datastore(ctx), transform_name)
        spec = transform_mod.compile_spec(t, ctx, self.config)
        runner = transform_mod.TransformRunner(
            self.db, self.config, ctx, spec, partition, self._fault
        )
        if dry_run:
            return runner.dry_run()
        with self._lock(ctx, f"transform:{runner.checkpoint_id}", "transform") as lock:
            return runner.run(lock)

    def revert(self, ctx: RunContext, *, dry_run: bool = False) -> RevertResult:
        files = migrate_mod.load_files(ctx)
        if dry_run:
            return revert_mod.revert(self.db, self.config, ctx, files, None, dry_run=True)
        with self._db_lock(ctx, "revert") as lock:
            return revert_mod.revert(
                self.db, self.config, ctx, files, lock, dry_run=False, fault=self._fault
            )

    def complete(self, ctx: RunContext) -> list[str]:
        """Nothing stays in flight after a MongoDB run (no triggers, no capture)."""
        return []

    def history(self, ctx: RunContext) -> list[HistoryEntry]:
        return changelog.to_history(changelog.load(self.db, self.config, ctx.datastore.name))

    # -- maintenance and hand-off --------------------------------------------
    def repair(self, ctx: RunContext, version: str, *, accept_checksum: bool = False) -> list[str]:
        """Clear a failed/abandoned attempt of ``version`` after a human fixed the data.

        With ``accept_checksum``, also accept the file's current checksum for an
        applied version that was edited. Returns what was done.
        """
        ds = self._datastore(ctx)
        wanted = parse_version(version)
        files = {f.version: f for f in migrate_mod.load_files(ctx)}
        done: list[str] = []
        with self._db_lock(ctx, "repair"):
            entries = changelog.load(self.db, self.config, ds.name)
            log = self.db[self.config.changelog_collection]
            for e in changelog.blocking(entries):
                if parse_version(str(e["version"])) == wanted:
                    log.update_one({"_id": e["_id"]}, {"$set": {"repaired_on": utcnow()}})
                    done.append(f"cleared {e['state']} attempt of {version} (run {e['run_id']})")
            entry = changelog.applied(entries).get(wanted)
            current = files.get(wanted)
            if accept_checksum and entry and current and entry["checksum"] != current.checksum:
                log.update_one(
                    {"_id": entry["_id"]},
                    {
                        "$set": {
                            "checksum": current.checksum,
                            "previous_checksum": entry["checksum"],
                        }
                    },
                )
                done.append(
                    f"accepted checksum {current.checksum} for {version} (was {entry['checksum']})"
                )
        if not done:
            raise UnknownVersion(version, "nothing to repair")
        for line in done:
            ctx.log(f"{ds.name}: repair: {line}")
        return done

    def stream_documents(
        self,
        collection: str,
        filter: Mapping[str, Any] | None = None,
        projection: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        *,
        limit: int | None = None,
    ) -> Iterator[list[Doc]]:
        """Documents for validation as lists of at most ``batch_size`` (bounded memory)."""
        name = collection_name(collection, "validation.collection")
        return stream(
            self.db, name, filter, projection, batch_size or self.config.stream_batch_size, limit
        )

    def digest(self, collections: list[str] | None = None) -> dict[str, Doc]:
        """Per user collection: document count, documents hash and index hash."""
        names = collections or [
            n for n in sorted(self.db.list_collection_names()) if not self.config.is_own(n)
        ]
        return {n: collection_digest(self.db, n) for n in names}
