"""Revert a run: transforms by before-image, then migrations newest first (``down`` or snapshot).

Steps, computed before anything changes (so a missing backup is reported with
nothing changed):

1. Transforms of the run (they ran after its migrations), last declared
   first: every document they changed is set back to its before-image by
   compare-and-set (:mod:`convoy.engines.mongo.undo`). Documents the
   application changed after convoy are left as they are and listed
   (``conflicts``), deleted ones stay deleted (``rows_gone``), inserted ones
   are never touched. No backup is needed for this.
2. Migrations applied by the run, newest version first:
   - with ``down(db)`` and none of its collections (best-effort scan) already
     restored: ``down(db)`` runs (the file's checksum must still match);
   - otherwise its collections are restored from the snapshot (all snapshot
     collections when the scan found none), **only if nobody else wrote to
     them during the run** (:func:`convoy.engines.mongo.backup.restore_refusal`):
     restoring would discard those writes. If one is refused, that migration
     and every older one are left as they are (an older ``down`` assumes the
     newer migration is undone), the rest of the revert is finished, and
     :class:`~convoy.engines.errors.RevertIncomplete` says what is left and
     how to finish it by hand. Restoring a collection undoes every change of
     the run to it, so an older migration's ``down`` is skipped for a
     collection that was already restored (it would undo twice);
   - a migration that *failed* in this run is only restored from the snapshot.
3. Changelog entries become ``reverted`` (``revert_method`` down/snapshot);
   the run's transform checkpoints are removed so a re-run starts over.

Running revert again does nothing that was already done: undo entries keep
their outcome, reverted migrations and restored collections are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.database import Database

from convoy.engines.base import RevertResult, RunContext, stage_progress
from convoy.engines.errors import ChecksumMismatch, MigrationFailed, NoBackup, RevertIncomplete
from convoy.engines.mongo import backup as backup_mod
from convoy.engines.mongo import changelog, undo
from convoy.engines.mongo.config import FaultHook, MongoConfig
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
    fault: FaultHook | None = None,
) -> RevertResult:
    steps, rows = plan_steps(db, cfg, ctx, files)
    transforms = undo.open_transforms(db, cfg, ctx)
    name = ctx.datastore.name
    if not steps and not transforms:
        ctx.log(f"{name}: run {ctx.run_id} has nothing left to revert")
    if dry_run:
        return _dry_run(ctx, steps, rows, transforms)
    assert lock is not None
    log = db[cfg.changelog_collection]
    # One step per transform, per down() and per collection brought back from the snapshot.
    total = len(transforms) + sum(1 if s.kind == "down" else len(s.collections) for s in steps)
    progress = stage_progress(
        ctx, "revert", total, unit="steps", interval_s=cfg.progress_interval_s
    )
    outcome = undo.revert_transforms(db, cfg, ctx, lock, fault, on_transform=progress.advance)
    undone: list[str] = []
    by_snapshot: list[str] = []
    restored: list[str] = []
    dropped: list[str] = []
    refused: list[str] = []
    for i, s in enumerate(steps):
        lock.check()
        if s.kind == "down":
            assert s.file is not None
            ctx.log(f"{name}: running down() of {s.file.name}")
            try:
                function(load_module(s.file), s.file, "down")(db)
            except Exception as exc:
                raise MigrationFailed(
                    s.file.version_text, str(s.file.path), None, f"down(db) failed: {exc}"
                ) from exc
            undone.append(str(s.version))
            progress.advance()
        else:
            problems = [
                (c, why) for c in s.collections if (why := backup_mod.restore_refusal(db, rows[c]))
            ]
            if problems:
                refused += _refusal(s, problems, steps[i + 1 :], rows, files)
                break
            for c in s.collections:
                action = backup_mod.restore(db, cfg, ctx, rows[c])
                (restored if action == "restored" else dropped).append(c)
                progress.advance()
            by_snapshot.append(str(s.version))
        if s.entry is not None:
            _mark_reverted(log, s.entry, "down" if s.kind == "down" else "snapshot", ctx.run_id)
    if cfg.checkpoints_collection in db.list_collection_names():
        db[cfg.checkpoints_collection].delete_many({"datastore": name, "run_id": ctx.run_id})
    progress.finish("incomplete" if refused else "done")
    result = RevertResult(
        name,
        ctx.run_id,
        False,
        tuple(undone),
        tuple(by_snapshot),
        tuple(restored),
        tuple(dropped),
        rows_restored=outcome.restored,
        rows_conflicting=outcome.conflicting,
        rows_gone=outcome.gone,
        conflicts=tuple(outcome.conflicts),
        refused=tuple(refused),
    )
    if refused:
        for line in refused:
            ctx.log(f"{name}: refused: {line}")
        raise RevertIncomplete(name, result, refused)
    return result


def _refusal(
    step: Step,
    problems: Sequence[tuple[str, str]],
    older: Sequence[Step],
    rows: Mapping[str, Doc],
    files: Sequence[MigrationFile],
) -> list[str]:
    """What was not reverted, why, and how to finish by hand."""
    version = str(step.version)
    f = next((f for f in files if f.version_text == version), None)
    where = f.path.name if f is not None else f"migration {version}"
    lines = []
    for c, why in problems:
        row = rows[c]
        if row["existed"]:
            by_hand = (
                f"copy what you need from the snapshot collection {row['backup']!r} "
                f"into {c!r} by hand"
            )
        else:
            by_hand = f"clean up {c!r} by hand (it did not exist before the run)"
        lines.append(
            f"migration {version}: {c!r} not restored from the snapshot: {why}. "
            f"To finish: add down(db) to {where}, accept its new checksum with "
            f"repair(ctx, {version!r}, accept_checksum=True) and revert again; or {by_hand}"
        )
    if older:
        versions = ", ".join(str(s.version) for s in older)
        which = f"migrations {versions} are" if len(older) > 1 else f"migration {versions} is"
        lines.append(
            f"{which} not reverted either: older than {version}, whose changes are still "
            "in place; the revert after finishing it reverts them"
        )
    return lines


def _dry_run(
    ctx: RunContext,
    steps: Sequence[Step],
    rows: Mapping[str, Doc],
    transforms: Sequence[undo.OpenTransform],
) -> RevertResult:
    name = ctx.datastore.name
    for t in transforms:
        ctx.log(
            f"{name}: dry run would restore the before-images of up to {t.entries} documents "
            f"of {t.collection!r} changed by {t.transform} (compare-and-set)"
        )
    refused = []
    for s in steps:
        what = "down()" if s.kind == "down" else f"restore {', '.join(s.collections) or '-'}"
        ctx.log(f"{name}: dry run would {what} for {s.version}")
        for c in s.collections if s.kind == "restore" else ():
            notes = rows[c].get("foreign") or []
            if notes:
                refused.append(
                    f"migration {s.version}: {c!r} would not be restored from the snapshot: "
                    f"written by others during the run ({'; '.join(map(str, notes))})"
                )
    cols = [c for s in steps if s.kind == "restore" for c in s.collections]
    return RevertResult(
        name,
        ctx.run_id,
        True,
        tuple(str(s.version) for s in steps if s.kind == "down"),
        tuple(str(s.version) for s in steps if s.kind == "restore"),
        tuple(c for c in cols if rows[c]["existed"]),
        tuple(c for c in cols if not rows[c]["existed"]),
        refused=tuple(refused),
    )


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
