"""``backup: snapshot``: server-side copies of the collections a run touches, and restore.

Which collections (sorted, deduplicated):

- the collections of the datastore's transforms;
- the collections named in the *pending* migrations' source, found by a
  best-effort scan (:func:`scan_collections`): ``db["name"]``,
  ``db.get_collection("name")``, ``db.create_collection("name")``,
  ``db.drop_collection("name")``, ``.rename("name")`` and attribute access
  ``db.name.<collection method>(``. Names built at run time are not found:
  list them in ``MongoConfig.snapshot_collections``;
- ``MongoConfig.snapshot_collections``.

Each is copied with ``aggregate([{$match: {}}, {$out: "convoy_backup__<runhash>__<name>"}])``
(in the server, constant client memory) and recorded in ``convoy_backups``
with its index definitions, count and digest (of the copy's documents and the
collection's indexes), or as *absent* when it does not exist yet (revert then
drops it). A collection already recorded for the run is never copied again,
so a retried backup task cannot overwrite the pre-run copy with changed data.

**Who else wrote.** A restore replaces the whole collection, so it would
discard every write the application made to it during the run. MongoDB has
no trigger to tell those writes apart, so convoy keeps a ledger instead: the
digest it expects each snapshotted collection to have (``expected``: the
copy's at backup time, then the one measured right after each migration in
whose scope the collection is). Right before each migration the collection
is measured again; a difference means someone else wrote to it since convoy
last did, and is noted in ``foreign``. A revert restores a collection only if
nothing was noted and it still has the ``expected`` digest once the newer
steps are undone (:func:`restore_refusal`), or if it already equals the
snapshot. Writes made *while* a migration's ``up(db)`` runs are the one blind
spot: they are measured as that migration's change. A migration killed in
the middle leaves no digest behind, so its collections are never restored
over.

Restore (revert): indexes other than ``_id_`` are dropped, the copy replaces
the documents with ``$out`` (atomic replace in the server), then the recorded
indexes are re-created. Not restored: collection options changed by the run
(validator, collation), views, and collections outside the snapshot.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pymongo.database import Database

from convoy.engines.base import RunContext, stage_progress
from convoy.engines.errors import BackupFailed
from convoy.engines.mongo.config import MongoConfig
from convoy.engines.mongo.documents import (
    canonical,
    collection_digest,
    collection_name,
    documents_digest,
    index_specs,
    indexes_digest,
    stream,
)
from convoy.engines.mongo.locks import utcnow
from convoy.plan.specs import MongoSpec
from convoy.policy.migrations import MigrationFile

Doc = dict[str, Any]

_Q = r"""(['"])(?P<name>[^'"\\]+)\1"""
_COLLECTION_METHODS = (
    "find|find_one|find_one_and_update|find_one_and_replace|find_one_and_delete|"
    "insert_one|insert_many|update_one|update_many|replace_one|delete_one|delete_many|"
    "bulk_write|aggregate|create_index|create_indexes|drop_index|drop_indexes|drop|rename|"
    "count_documents|distinct|watch"
)
_SCANS = (
    re.compile(rf"\bdb\s*\[\s*{_Q}\s*\]"),
    re.compile(rf"\bdb\s*\.\s*(?:get_collection|create_collection|drop_collection)\s*\(\s*{_Q}"),
    re.compile(rf"\.\s*rename\s*\(\s*{_Q}"),
    re.compile(
        rf"\bdb\s*\.\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*\.\s*(?:{_COLLECTION_METHODS})\s*\("
    ),
)


def scan_collections(source: str) -> set[str]:
    """Collection names a migration's source refers to (best effort, see module doc)."""
    found: set[str] = set()
    for pattern in _SCANS:
        for m in pattern.finditer(source):
            found.add(m.group("name"))
    return found


def touched_by(f: MigrationFile) -> set[str]:
    return scan_collections(f.read_bytes().decode("utf-8", errors="replace"))


def collections_to_back_up(
    ds: MongoSpec, pending: Iterable[MigrationFile], cfg: MongoConfig
) -> list[str]:
    names = {t.collection for t in ds.transforms}
    for f in pending:
        names |= touched_by(f)
    names |= set(cfg.snapshot_collections)
    return sorted(n for n in names if not cfg.is_own(n))


def run_hash(ctx: RunContext) -> str:
    key = f"{ctx.policy_name}\x1f{ctx.datastore.name}\x1f{ctx.run_id}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def backup_name(cfg: MongoConfig, ctx: RunContext, collection: str) -> str:
    return f"{cfg.backup_prefix}{run_hash(ctx)}__{collection}"


def manifest(db: Database[Doc], cfg: MongoConfig, ctx: RunContext) -> list[Doc]:
    if cfg.backups_collection not in db.list_collection_names():
        return []
    rows = db[cfg.backups_collection].find(
        {"run_hash": run_hash(ctx), "datastore": ctx.datastore.name}
    )
    return sorted(rows, key=lambda r: str(r["source"]))


def snapshot(
    db: Database[Doc], cfg: MongoConfig, ctx: RunContext, names: Sequence[str]
) -> tuple[list[str], bool]:
    """Copy each collection not yet copied for this run; returns (names, all were present)."""
    have = {str(r["source"]) for r in manifest(db, cfg, ctx)}
    existing = set(db.list_collection_names())
    # Counted in collections: each copy is one server-side $out the client cannot follow.
    progress = stage_progress(
        ctx, "backup", len(names), unit="collections", interval_s=cfg.progress_interval_s
    )
    for name in names:
        collection_name(name, "backup collection")
        if name in have:
            ctx.log(f"{ctx.datastore.name}: backup of {name!r} for run {ctx.run_id} exists, kept")
            progress.advance()
            continue
        target = backup_name(cfg, ctx, name)
        existed = name in existing
        try:
            if existed:
                db[name].aggregate([{"$match": {}}, {"$out": target}])
                # The copy is what a restore brings back, whatever was written meanwhile.
                digest = {**documents_digest(db, target), "indexes": indexes_digest(db, name)}
            else:
                digest = collection_digest(db, name)
        except Exception as exc:
            raise BackupFailed(f"snapshot of {name!r} to {target!r} failed: {exc}") from exc
        db[cfg.backups_collection].replace_one(
            {"_id": f"{run_hash(ctx)}:{name}"},
            {
                "run_hash": run_hash(ctx),
                "run_id": ctx.run_id,
                "policy": ctx.policy_name,
                "datastore": ctx.datastore.name,
                "source": name,
                "backup": target if existed else None,
                "existed": existed,
                "indexes": index_specs(db, name),
                "count": digest["count"],
                "digest": digest,
                "expected": digest,
                "foreign": [],
                "ledger": [],
                "created": utcnow(),
                "restored": None,
            },
            upsert=True,
        )
        ctx.log(
            f"{ctx.datastore.name}: snapshot of {name!r} -> {target!r} ({digest['count']} docs)"
            if existed
            else f"{ctx.datastore.name}: {name!r} does not exist yet (dropped on revert)"
        )
        progress.advance()
    progress.finish()
    return list(names), set(names) <= have


def restore(db: Database[Doc], cfg: MongoConfig, ctx: RunContext, row: Doc) -> str:
    """Bring ``row['source']`` back to the snapshot; returns ``restored`` or ``dropped``."""
    source = str(row["source"])
    present = set(db.list_collection_names())
    if not row["existed"]:
        if source in present:
            db.drop_collection(source)
        action = "dropped"
    else:
        backup = str(row["backup"])
        if backup not in present and int(row["count"]) > 0:
            raise BackupFailed(f"backup collection {backup!r} of {source!r} is missing")
        if source not in present:
            db.create_collection(source)
        for spec in index_specs(db, source):
            if spec["name"] != "_id_":
                db[source].drop_index(str(spec["name"]))
        if backup in present:
            db[backup].aggregate([{"$match": {}}, {"$out": source}])
        else:  # an empty collection: $out of nothing may not have created the copy
            db[source].delete_many({})
        for spec in row["indexes"]:
            if spec["name"] == "_id_":
                continue
            options = {k: v for k, v in spec.items() if k not in ("key", "v", "ns")}
            db[source].create_index(list(spec["key"].items()), **options)
        action = "restored"
    db[cfg.backups_collection].update_one({"_id": row["_id"]}, {"$set": {"restored": utcnow()}})
    ctx.log(f"{ctx.datastore.name}: {action} {source!r} from the snapshot of run {ctx.run_id}")
    return action


# -- ledger: who else wrote to a snapshotted collection --------------------------
def same_state(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("count", "documents", "indexes"))


def change_text(expected: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    parts = []
    if expected.get("count") != now.get("count"):
        parts.append(f"{expected.get('count')} -> {now.get('count')} documents")
    elif expected.get("documents") != now.get("documents"):
        parts.append("documents changed")
    if expected.get("indexes") != now.get("indexes"):
        parts.append("indexes changed")
    return ", ".join(parts) or "unchanged"


def in_scope(rows: Sequence[Doc], f: MigrationFile) -> list[Doc]:
    """Snapshotted collections ``f`` may change: those its source names, else all of them.

    The same choice revert makes for a migration without ``down``.
    """
    live = [r for r in rows if not r.get("restored")]
    touched = touched_by(f)
    return [r for r in live if r["source"] in touched] if touched else live


def before_migration(
    db: Database[Doc], cfg: MongoConfig, ctx: RunContext, f: MigrationFile
) -> None:
    """Note, for each collection in ``f``'s scope, writes by others since convoy's last change."""
    for row in in_scope(manifest(db, cfg, ctx), f):
        now = collection_digest(db, str(row["source"]))
        expected = row.get("expected") or row["digest"]
        if same_state(now, expected):
            continue
        note = f"before migration {f.version_text}: {change_text(expected, now)}"
        db[cfg.backups_collection].update_one({"_id": row["_id"]}, {"$push": {"foreign": note}})
        ctx.log(
            f"{ctx.datastore.name}: {row['source']!r} was written by others since "
            f"{'the backup' if not row.get('ledger') else 'the last migration'} ({note}); "
            "its snapshot will not be restored over it"
        )


def after_migration(
    db: Database[Doc], cfg: MongoConfig, ctx: RunContext, f: MigrationFile, outcome: str
) -> None:
    """Record the digest ``f`` left each collection in its scope with (the new ``expected``)."""
    backups = db[cfg.backups_collection]
    for row in in_scope(manifest(db, cfg, ctx), f):
        try:
            now = collection_digest(db, str(row["source"]))
        except Exception as exc:  # a failed measurement must not hide the migration's outcome
            note = f"after migration {f.version_text}: not measured ({exc})"
            backups.update_one({"_id": row["_id"]}, {"$push": {"foreign": note}})
            continue
        backups.update_one(
            {"_id": row["_id"]},
            {
                "$set": {"expected": now},
                "$push": {"ledger": {"version": f.version_text, "outcome": outcome, **now}},
            },
        )


def differences(db: Database[Doc], source: str, backup: str | None) -> tuple[int, int, int]:
    """Documents of ``source`` not in the copy, changed from it, and copy documents gone."""
    have = backup is not None and backup in db.list_collection_names()
    added = changed = matched = 0
    for batch in stream(db, source, None, None, 1000):
        snap: dict[str, str] = {}
        if have:
            assert backup is not None
            ids = [d["_id"] for d in batch]
            snap = {
                canonical({"v": d["_id"]}): canonical(d)
                for d in db[backup].find({"_id": {"$in": ids}})
            }
        for d in batch:
            old = snap.get(canonical({"v": d["_id"]}))
            if old is None:
                added += 1
            else:
                matched += 1
                changed += old != canonical(d)
    total = db[backup].count_documents({}) if have and backup is not None else 0
    return added, changed, total - matched


def restore_refusal(db: Database[Doc], row: Doc) -> str | None:
    """Why restoring ``row`` would discard writes of others, or ``None`` when it would not."""
    source = str(row["source"])
    now = collection_digest(db, source)
    foreign = [str(n) for n in row.get("foreign") or []]
    expected = row.get("expected") or row["digest"]
    if not foreign and same_state(now, expected):
        return None
    if same_state(now, row["digest"]):
        return None  # already the snapshot's state: restoring loses nothing
    why = "; ".join(foreign) or f"after convoy's last change: {change_text(expected, now)}"
    added, changed, gone = differences(db, source, str(row["backup"]) if row["existed"] else None)
    what = "its snapshot" if row["existed"] else "the run's start (it did not exist)"
    return (
        f"written by others during the run ({why}); "
        f"{added + changed + gone} documents differ from {what} "
        f"({added} not in it, {changed} changed, {gone} deleted)"
    )
