"""Operating state of a MongoDB datastore: versions, lock, checkpoints, backups; baseline, pruning.

:func:`inspect` only reads (``find``, ``count_documents``, ``collStats``).
:func:`baseline` and :func:`prune` write while holding the database lock
(``convoy_locks``, the lock migrate, backup, revert and repair take).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from pymongo.database import Database

from convoy.engines.base import RunContext
from convoy.engines.errors import HistoryNotEmpty, UnknownVersion
from convoy.engines.mongo import changelog
from convoy.engines.mongo.config import MongoConfig
from convoy.engines.mongo.locks import MongoLock, as_utc, describe_owner, utcnow
from convoy.engines.mongo.migrate import load_files
from convoy.operate.model import BackupItem, BackupRun, Checkpoint, DatastoreState
from convoy.operate.versions import Attempt, AttemptState, judge_datastore, version_rows
from convoy.policy.migrations import parse_version

Doc = dict[str, Any]
BASELINE_RUN = "baseline"


def lock_name(database: str) -> str:
    return f"database:{database}"


def _collections(db: Database[Doc]) -> set[str]:
    return set(db.list_collection_names())


def live_lock(db: Database[Doc], cfg: MongoConfig, database: str) -> Doc | None:
    if cfg.locks_collection not in _collections(db):
        return None
    return db[cfg.locks_collection].find_one(
        {"_id": lock_name(database), "expiresAt": {"$gt": utcnow()}}
    )


def attempts(entries: list[Doc], *, lock_live: bool) -> list[Attempt]:
    """Changelog documents as attempts, oldest first (repaired ones left out)."""
    out: list[Attempt] = []
    baselines = [e for e in entries if e.get("baseline") and e.get("repaired_on") is None]
    top = max((parse_version(str(e["version"])) for e in baselines), default=None)
    for e in entries:
        if e.get("repaired_on") is not None:
            continue
        version = str(e["version"])
        if e.get("baseline"):
            if top is not None and parse_version(version) == top:
                out.append(
                    Attempt(
                        version,
                        str(e.get("description", "")),
                        "baseline",
                        None,
                        str(e.get("run_id", "")),
                        as_utc(e.get("started")),
                    )
                )
            continue
        raw = str(e.get("state"))
        state: AttemptState
        if raw == "running":
            state = "running" if lock_live else "failed"
        elif raw in ("applied", "failed", "reverted"):
            state = raw  # type: ignore[assignment]
        else:
            state = "failed"
        out.append(
            Attempt(
                version,
                str(e.get("description", "")),
                state,
                e.get("checksum"),
                str(e.get("run_id", "")),
                as_utc(e.get("started")),
                str(e.get("reverted_by_run")) if e.get("reverted_by_run") else None,
            )
        )
    return out


def unfinished(db: Database[Doc], cfg: MongoConfig, datastore: str) -> list[Checkpoint]:
    if cfg.checkpoints_collection not in _collections(db):
        return []
    rows = (
        db[cfg.checkpoints_collection]
        .find({"datastore": datastore, "state": {"$ne": "done"}})
        .sort([("transform", 1), ("partition", 1)])
    )
    return [
        Checkpoint(
            str(r.get("transform")),
            str(r.get("partition")),
            str(r.get("interval")),
            str(r.get("run_id")),
            int(r.get("docs_done") or 0),
            as_utc(r.get("updated")),
        )
        for r in rows
    ]


def _size(db: Database[Doc], name: str) -> int | None:
    try:
        stats = db.command("collStats", name)
    except Exception:
        return None
    size = stats.get("storageSize", stats.get("size"))
    return int(size) if isinstance(size, int | float) else None


def backups(db: Database[Doc], cfg: MongoConfig, datastore: str) -> list[BackupRun]:
    """What is kept per run of ``datastore`` (snapshot copies, undo entries), oldest first."""
    present = _collections(db)
    runs: dict[str, dict[str, Any]] = {}

    def run(run_id: str, policy: str, created: Any) -> dict[str, Any]:
        entry = runs.setdefault(run_id, {"policy": policy, "created": created, "items": []})
        if created is not None and (entry["created"] is None or created < entry["created"]):
            entry["created"] = created
        return entry

    if cfg.backups_collection in present:
        for r in db[cfg.backups_collection].find({"datastore": datastore}).sort("created", 1):
            entry = run(str(r["run_id"]), str(r.get("policy", "")), as_utc(r.get("created")))
            name = r.get("backup")
            entry["items"].append(
                BackupItem(
                    "snapshot",
                    str(name) if name else f"({r['source']} did not exist)",
                    str(r["source"]),
                    _size(db, str(name)) if name and name in present else None,
                    r.get("restored") is not None,
                )
            )
    if cfg.undo_collection in present:
        undo = db[cfg.undo_collection]
        for run_id in sorted(undo.distinct("run_id", {"datastore": datastore})):
            first = undo.find_one({"run_id": run_id, "datastore": datastore}) or {}
            count = undo.count_documents({"run_id": run_id, "datastore": datastore})
            entry = run(str(run_id), str(first.get("policy", "")), None)
            entry["items"].append(
                BackupItem("undo", f"{cfg.undo_collection} ({count} entries)", None, None, False)
            )
    out = [
        BackupRun(datastore, run_id, e["policy"], e["created"], tuple(e["items"]))
        for run_id, e in runs.items()
    ]
    return sorted(out, key=lambda b: (b.created is None, b.created, b.run_id))


def in_flight(db: Database[Doc], cfg: MongoConfig, datastore: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for cp in unfinished(db, cfg, datastore):
        out[cp.run_id] = "unfinished transform checkpoint"
    for e in changelog.load(db, cfg, datastore):
        if e.get("state") == "running" and e.get("repaired_on") is None:
            out.setdefault(str(e.get("run_id")), "migration still running or abandoned")
    return out


def inspect(
    client: Any, database: str, ctx: RunContext, cfg: MongoConfig | None = None
) -> DatastoreState:
    cfg = cfg or MongoConfig()
    db: Database[Doc] = client[database]
    ds = ctx.datastore
    files = load_files(ctx)
    lock = live_lock(db, cfg, database)
    state = DatastoreState(
        name=ds.name,
        type="mongo",
        verdict="in sync",
        reasons=(),
        versions=tuple(
            version_rows(
                files, attempts(changelog.load(db, cfg, ds.name), lock_live=lock is not None)
            )
        ),
        lock=describe_owner(lock) if lock else None,
        unfinished=tuple(unfinished(db, cfg, ds.name)),
        backups=tuple(backups(db, cfg, ds.name)),
    )
    return judge_datastore(state)


def _db_lock(db: Database[Doc], cfg: MongoConfig, database: str, ctx: RunContext) -> MongoLock:
    return MongoLock(
        db[cfg.locks_collection],
        lock_name(database),
        {"policy": ctx.policy_name, "run_id": ctx.run_id, "stage": "maintenance"},
        ttl_s=cfg.lock_ttl_s,
        wait_s=cfg.lock_wait_s,
        poll_s=cfg.lock_poll_s,
        heartbeat=cfg.heartbeat,
        log=ctx.log,
    )


def baseline(
    client: Any,
    database: str,
    ctx: RunContext,
    version: str,
    cfg: MongoConfig | None = None,
    description: str = "baseline",
) -> list[str]:
    """Record versions up to ``version`` as applied on a database convoy never managed.

    One changelog document per migration file up to ``version`` (with the file's
    checksum, so later edits are refused like any applied file), plus one for
    ``version`` itself when it has no file; all marked ``baseline``.
    """
    cfg = cfg or MongoConfig()
    db: Database[Doc] = client[database]
    wanted = parse_version(version)
    files = [f for f in load_files(ctx) if f.version <= wanted]
    now = utcnow()
    with _db_lock(db, cfg, database, ctx):
        entries = changelog.load(db, cfg, ctx.datastore.name)
        active = sorted(
            {
                str(e["version"])
                for e in changelog.latest(entries).values()
                if e["state"] in ("applied", "failed", "running")
            }
        )
        if active:
            raise HistoryNotEmpty(ctx.datastore.name, active)
        changelog.ensure(db, cfg)
        docs: list[Doc] = []
        for f in files:
            docs.append(_baseline_doc(ctx, f.version, f.description, f.name, f.checksum, now))
        if wanted not in {f.version for f in files}:
            docs.append(_baseline_doc(ctx, wanted, description, None, None, now))
        if not docs:
            raise UnknownVersion(version, "nothing to baseline")
        db[cfg.changelog_collection].insert_many(docs)
    text = changelog.version_text(wanted)
    ctx.log(f"{ctx.datastore.name}: baseline at version {text}")
    return [f"baseline at version {text} ({len(docs)} versions recorded as applied)"]


def _baseline_doc(
    ctx: RunContext,
    version: tuple[int, ...],
    description: str,
    name: str | None,
    checksum: str | None,
    now: Any,
) -> Doc:
    return {
        "datastore": ctx.datastore.name,
        "version": changelog.version_text(version),
        "version_key": list(version),
        "description": description,
        "name": name,
        "checksum": checksum,
        "has_down": False,
        "policy": ctx.policy_name,
        "run_id": ctx.run_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": now,
        "finished": now,
        "duration_ms": 0,
        "state": "applied",
        "baseline": True,
        "error": None,
        "reverted_on": None,
        "repaired_on": None,
    }


def protected_runs(client: Any, database: str, cfg: MongoConfig, datastore: str) -> dict[str, str]:
    return in_flight(client[database], cfg, datastore)


def prune(
    client: Any,
    database: str,
    ctx: RunContext,
    runs: list[BackupRun],
    cfg: MongoConfig | None = None,
) -> list[str]:
    """Drop the snapshot copies and undo entries of ``runs``, under the database lock."""
    cfg = cfg or MongoConfig()
    db: Database[Doc] = client[database]
    ds = ctx.datastore.name
    done: list[str] = []
    with _db_lock(db, cfg, database, ctx):
        present = _collections(db)
        for run in runs:
            query = {"run_id": run.run_id, "datastore": ds}
            if cfg.backups_collection in present:
                for r in db[cfg.backups_collection].find(query):
                    name = r.get("backup")
                    if name and name in present and str(name).startswith(cfg.backup_prefix):
                        db.drop_collection(str(name))
                db[cfg.backups_collection].delete_many(query)
            if cfg.undo_collection in present:
                db[cfg.undo_collection].delete_many(query)
            done.append(f"{ds}: pruned run {run.run_id} ({len(run.items)} items)")
    return done
