"""Revert a run: ``down(db)`` where present, the snapshot otherwise, newest first.

Steps, computed completely before anything changes (so a missing backup is
reported with nothing changed):

1. Transforms of the run (they ran last and have no ``down``): their
   collections are restored from the snapshot.
2. Migrations applied by the run, newest version first:
   - with ``down(db)`` and none of its collections (best-effort scan) already
     restored: ``down(db)`` runs (the file's checksum must still match);
   - otherwise its collections are restored from the snapshot (all snapshot
     collections when the scan found none). Restoring a collection undoes every
     change of the run to it, so an older migration's ``down`` is skipped for a
     collection that was already restored (it would undo twice).
   - a migration that *failed* in this run is only restored from the snapshot.
3. Changelog entries become ``reverted`` (``revert_method`` down/snapshot);
   the run's transform checkpoints are removed so a re-run starts over.

Running revert again finds nothing left to do and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.database import Database

from convoy.engines.base import RevertResult, RunContext, stage_progress
from convoy.engines.errors import ChecksumMismatch, MigrationFailed, NoBackup
from convoy.engines.mongo import backup as backup_mod
from convoy.engines.mongo import changelog
from convoy.engines.mongo.config import MongoConfig
from convoy.engines.mongo.locks import MongoLock, utcnow
from convoy.engines.mongo.migrate import function, load_module
from convoy.policy.migrations import MigrationFile, parse_version

Doc = dict[str, Any]


@dataclass(frozen=True)
class Step:
    kind: str  # "down" | "restore"
    version: str | None
    collections: tuple[str, ...] = ()
    file: MigrationFile | None = None
    entry: Doc | None = None


def plan_steps(
    db: Database[Doc],
    cfg: MongoConfig,
    ctx: RunContext,
    files: Sequence[MigrationFile],
) -> tuple[list[Step], dict[str, Doc]]:
    rows = {str(r["source"]): r for r in backup_mod.manifest(db, cfg, ctx) if not r["restored"]}
    all_snapshot = tuple(sorted(rows))
    by_version = {f.version: f for f in files}
    restored: set[str] = set()
    steps: list[Step] = []
    missing: list[str] = []

    def restore(label: str, version: str | None, names: Sequence[str], entry: Doc | None) -> None:
        wanted = tuple(sorted(set(names) - restored))
        absent = [n for n in wanted if n not in rows]
        if absent:
            missing.append(f"{label} ({', '.join(absent)})")
        restored.update(wanted)
        steps.append(Step("restore", version, wanted, entry=entry))

    cps = []
    if cfg.checkpoints_collection in db.list_collection_names():
        cps = list(
            db[cfg.checkpoints_collection].find(
                {"datastore": ctx.datastore.name, "run_id": ctx.run_id}
            )
        )
    transform_cols = sorted(
        {
            str(c["collection"])
            for c in cps
            if int(c.get("docs_done", 0)) > 0
            or db[str(c["collection"])].find_one({str(c["marker"]): {"$exists": True}}, {"_id": 1})
        }
    )
    if transform_cols:
        restore("transforms", None, transform_cols, None)

    entries = [
        e
        for e in changelog.latest(changelog.load(db, cfg, ctx.datastore.name)).values()
        if e["run_id"] == ctx.run_id and e["state"] in ("applied", "failed", "running")
    ]
    entries.sort(key=lambda e: parse_version(str(e["version"])), reverse=True)
    for e in entries:
        version = str(e["version"])
        f = by_version.get(parse_version(version))
        touched = backup_mod.touched_by(f) if f is not None else set()
        if e["state"] == "applied" and f is not None and f.has_down and not touched & restored:
            if f.checksum != e["checksum"]:
                raise ChecksumMismatch(version, str(e["checksum"]), f.checksum, str(f.path))
            steps.append(Step("down", version, tuple(sorted(touched)), file=f, entry=e))
        else:
            restore(f"migration {version}", version, sorted(touched) or all_snapshot, e)
    if missing:
        raise NoBackup(
            ctx.run_id,
            [s.version for s in steps if s.kind == "restore" and s.version],
            "no snapshot of " + "; ".join(missing) + " (backup: none, or backup did not run)",
        )
    return steps, rows


def revert(
    db: Database[Doc],
    cfg: MongoConfig,
    ctx: RunContext,
    files: Sequence[MigrationFile],
    lock: MongoLock | None,
    *,
    dry_run: bool,
) -> RevertResult:
    steps, rows = plan_steps(db, cfg, ctx, files)
    name = ctx.datastore.name
    undone = tuple(s.version for s in steps if s.kind == "down" and s.version)
    by_snapshot = tuple(s.version for s in steps if s.kind == "restore" and s.version)
    cols = [c for s in steps if s.kind == "restore" for c in s.collections]
    restored = tuple(c for c in cols if rows[c]["existed"])
    dropped = tuple(c for c in cols if not rows[c]["existed"])
    if not steps:
        ctx.log(f"{name}: run {ctx.run_id} has nothing left to revert")
    if dry_run:
        for s in steps:
            what = "down()" if s.kind == "down" else f"restore {', '.join(s.collections) or '-'}"
            ctx.log(f"{name}: dry run would {what} for {s.version or 'transforms'}")
        return RevertResult(name, ctx.run_id, True, undone, by_snapshot, restored, dropped)
    assert lock is not None
    log = db[cfg.changelog_collection]
    # One step per down() and per collection brought back from the snapshot.
    total = sum(1 if s.kind == "down" else len(s.collections) for s in steps)
    progress = stage_progress(
        ctx, "revert", total, unit="steps", interval_s=cfg.progress_interval_s
    )
    for s in steps:
        lock.check()
        if s.kind == "down":
            assert s.file is not None
            assert s.entry is not None
            ctx.log(f"{name}: running down() of {s.file.name}")
            try:
                function(load_module(s.file), s.file, "down")(db)
            except Exception as exc:
                raise MigrationFailed(
                    s.file.version_text, str(s.file.path), None, f"down(db) failed: {exc}"
                ) from exc
            progress.advance()
        else:
            for c in s.collections:
                backup_mod.restore(db, cfg, ctx, rows[c])
                progress.advance()
        if s.entry is not None:
            _mark_reverted(log, s.entry, "down" if s.kind == "down" else "snapshot", ctx.run_id)
    if cfg.checkpoints_collection in db.list_collection_names():
        db[cfg.checkpoints_collection].delete_many({"datastore": name, "run_id": ctx.run_id})
    progress.finish()
    return RevertResult(name, ctx.run_id, False, undone, by_snapshot, restored, dropped)


def _mark_reverted(log: Any, entry: Mapping[str, Any], method: str, run_id: str) -> None:
    log.update_one(
        {"_id": entry["_id"]},
        {
            "$set": {
                "state": "reverted",
                "reverted_on": utcnow(),
                "revert_method": method,
                "reverted_by_run": run_id,
            }
        },
    )
