"""Backup and revert: apply-then-revert leaves every document and index identical."""

from __future__ import annotations

import re
from typing import Any

import pytest
from mongo_engine_helpers import MongoSetup, users
from pymongo import ASCENDING, DESCENDING

from convoy.engines.errors import NoBackup, RevertIncomplete

SPLIT = {
    "name": "split-name",
    "collection": "users",
    "filter": {"firstName": {"$exists": False}},
    "update": [{"$set": {"firstName": {"$arrayElemAt": [{"$split": ["$fullName", " "]}, 0]}}}],
    "batchSize": 4,
}
WITH_DOWN = """
def up(db):
    db["events"].insert_one({"_id": "v1", "kind": "added"})
    db.users.create_index([("email", 1)], name="email_1", unique=True, sparse=True)

def down(db):
    db["events"].delete_one({"_id": "v1"})
    db.users.drop_index("email_1")
"""
RENAME_NO_DOWN = """
def up(db):
    db.users.update_many({}, {"$rename": {"tags": "labels"}})
    db.users.drop_index("n_desc")
"""
NEW_COLLECTION = """
def up(db):
    db.create_collection("audit")
    db["audit"].insert_one({"_id": 1})
"""


def _seed(mongo: MongoSetup) -> None:
    mongo.db.users.insert_many(users(13))
    mongo.db.users.create_index([("n", DESCENDING)], name="n_desc")
    mongo.db.users.create_index([("fullName", ASCENDING), ("n", ASCENDING)], unique=True)
    mongo.db.events.insert_many([{"_id": "e1"}, {"_id": "e2"}])


def _apply(mongo: MongoSetup, ctx: Any) -> None:
    engine = mongo.engine()
    taken = engine.backup(ctx)
    assert taken.tables or ctx.datastore.backup == "none"
    engine.migrate(ctx)
    for t in ctx.datastore.transforms:
        engine.transform(ctx, t.name)


def test_snapshot_revert_restores_documents_and_indexes(mongo: MongoSetup) -> None:
    _seed(mongo)
    mongo.migration("V1__with_down.py", WITH_DOWN)
    mongo.migration("V2__rename.py", RENAME_NO_DOWN)
    mongo.migration("V3__audit.py", NEW_COLLECTION)
    ctx = mongo.ctx(backup="snapshot", transforms=[SPLIT])
    before = mongo.state(include_own=False)
    plan = mongo.engine().backup(ctx, dry_run=True)
    assert plan.tables == ("audit", "events", "users")
    _apply(mongo, ctx)
    changed = mongo.state(include_own=False)
    assert changed != before
    assert "audit" in changed
    result = mongo.engine().revert(ctx)
    assert mongo.state(include_own=False) == before
    assert set(result.restored_from_backup) == {"1", "2", "3"}
    assert result.dropped_tables == ("audit",)
    assert set(result.restored_tables) == {"users", "events"}
    states = {e["version"]: e for e in mongo.db.convoy_changelog.find()}
    assert {e["state"] for e in states.values()} == {"reverted"}
    assert mongo.db.convoy_checkpoints.count_documents({}) == 0
    # reverting again finds nothing and changes nothing
    again = mongo.engine().revert(ctx)
    assert again.undone == ()
    assert again.restored_tables == ()
    assert mongo.state(include_own=False) == before
    # the run can be applied again after the revert
    _apply(mongo, mongo.ctx("run-2", backup="snapshot", transforms=[SPLIT]))
    assert mongo.state(include_own=False) == changed


def test_down_is_used_where_present(mongo: MongoSetup) -> None:
    _seed(mongo)
    mongo.migration("V1__with_down.py", WITH_DOWN)
    ctx = mongo.ctx()  # backup: none
    before = mongo.state(include_own=False)
    _apply(mongo, ctx)
    assert mongo.state(include_own=False) != before
    result = mongo.engine().revert(ctx)
    assert result.undone == ("1",)
    assert result.restored_from_backup == ()
    assert mongo.state(include_own=False) == before
    assert mongo.db.convoy_changelog.find_one()["revert_method"] == "down"


def test_revert_without_backup_or_down_is_refused_and_changes_nothing(mongo: MongoSetup) -> None:
    _seed(mongo)
    mongo.migration("V1__with_down.py", WITH_DOWN)
    mongo.migration("V2__rename.py", RENAME_NO_DOWN)
    ctx = mongo.ctx()
    _apply(mongo, ctx)
    applied = mongo.state()
    with pytest.raises(NoBackup, match="migration 2"):
        mongo.engine().revert(ctx)
    assert mongo.state() == applied


def test_revert_after_a_crashed_transform(mongo: MongoSetup) -> None:
    _seed(mongo)
    ctx = mongo.ctx(backup="snapshot", transforms=[SPLIT])
    before = mongo.state(include_own=False)
    mongo.engine().backup(ctx)

    def crash(point: str, details: Any) -> None:
        if point == "transform.after_write" and details["batch"] == 2:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        mongo.engine(fault_hook=crash).transform(ctx, "split-name")
    assert mongo.db.users.count_documents({"firstName": {"$exists": True}}) == 8
    mongo.engine().revert(ctx)
    assert mongo.state(include_own=False) == before


def test_retried_backup_keeps_the_pre_run_copy(mongo: MongoSetup) -> None:
    _seed(mongo)
    mongo.migration("V2__rename.py", RENAME_NO_DOWN)
    ctx = mongo.ctx(backup="snapshot")
    before = mongo.state(include_own=False)
    engine = mongo.engine()
    engine.backup(ctx)
    engine.migrate(ctx)
    # a retry of the backup task after migrate must not snapshot changed data
    assert engine.backup(ctx).tables == ()  # V2 is no longer pending: nothing new to copy
    engine.revert(ctx)
    assert mongo.state(include_own=False) == before


def test_backup_dry_run_and_none(mongo: MongoSetup) -> None:
    _seed(mongo)
    before = mongo.state()
    ctx = mongo.ctx(backup="snapshot", transforms=[SPLIT])
    assert mongo.engine().backup(ctx, dry_run=True).tables == ("users",)
    assert mongo.engine().backup(mongo.ctx()).mode == "none"
    assert mongo.state() == before


# -- snapshot restore over application writes is refused ------------------------------
EVENTS_DOWN = """
def up(db):
    db["events"].insert_one({"_id": "v3"})

def down(db):
    db["events"].delete_one({"_id": "v3"})
"""
RENAME_WITH_DOWN = (
    RENAME_NO_DOWN
    + """
def down(db):
    db.users.update_many({}, {"$rename": {"labels": "tags"}})
    db.users.create_index([("n", -1)], name="n_desc")
"""
)


def _three(mongo: MongoSetup) -> Any:
    """V1 (down), V2 (no down, users), V3 (down, events) and a transform, all applied."""
    _seed(mongo)
    mongo.migration("V1__with_down.py", WITH_DOWN)
    mongo.migration("V2__rename.py", RENAME_NO_DOWN)
    mongo.migration("V3__events.py", EVENTS_DOWN)
    ctx = mongo.ctx(backup="snapshot", transforms=[SPLIT])
    _apply(mongo, ctx)
    return ctx


def test_snapshot_restore_over_application_writes_is_refused(mongo: MongoSetup) -> None:
    ctx = _three(mongo)
    mongo.db.users.insert_one({"_id": 500, "fullName": "App User", "labels": ["x"]})
    with pytest.raises(RevertIncomplete) as caught:
        mongo.engine().revert(ctx)
    exc = caught.value
    result = exc.result
    # everything that was safe happened: the transform, then V3's down (newer than V2)
    assert result.rows_restored == 13
    assert result.undone == ("3",)
    assert result.restored_from_backup == ()
    assert result.restored_tables == result.dropped_tables == ()
    assert result.refused == exc.refused
    assert len(exc.refused) == 2
    users_line, older = exc.refused
    assert users_line.startswith("migration 2: 'users' not restored from the snapshot")
    assert (
        "14 documents differ from its snapshot (1 not in it, 13 changed, 0 deleted)" in users_line
    )
    assert "after convoy's last change: 13 -> 14 documents" in users_line
    assert "add down(db) to V2__rename.py" in users_line
    assert "repair(ctx, '2', accept_checksum=True)" in users_line
    assert re.search(r"snapshot collection 'convoy_backup__[0-9a-f]{12}__users'", users_line)
    assert older.startswith("migration 1 is not reverted either: older than 2")
    # the application's document is there; V1 and V2 are still applied
    assert mongo.db.users.find_one({"_id": 500}) == {
        "_id": 500,
        "fullName": "App User",
        "labels": ["x"],
    }
    assert mongo.db.users.count_documents({"firstName": {"$exists": True}}) == 0
    assert sorted(d["_id"] for d in mongo.db.events.find()) == ["e1", "e2", "v1"]
    states = {e["version"]: e["state"] for e in mongo.db.convoy_changelog.find()}
    assert states == {"1": "applied", "2": "applied", "3": "reverted"}
    # a rerun refuses again and changes nothing
    settled = mongo.state(include_own=False)
    with pytest.raises(RevertIncomplete) as again:
        mongo.engine().revert(ctx)
    assert again.value.refused == exc.refused
    assert again.value.result.rows_restored == 0
    assert mongo.state(include_own=False) == settled
    # finishing by hand: V2 gets a down(), its checksum is accepted, the revert completes
    mongo.migration("V2__rename.py", RENAME_WITH_DOWN)
    mongo.engine().repair(ctx, "2", accept_checksum=True)
    done = mongo.engine().revert(ctx)
    assert done.undone == ("2", "1")
    assert mongo.db.users.find_one({"_id": 500})["tags"] == ["x"]
    assert sorted(d["_id"] for d in mongo.db.events.find()) == ["e1", "e2"]


def test_application_write_before_a_migration_is_noted_and_refused(mongo: MongoSetup) -> None:
    _seed(mongo)
    mongo.migration("V2__rename.py", RENAME_NO_DOWN)
    ctx = mongo.ctx(backup="snapshot")
    engine = mongo.engine()
    engine.backup(ctx)
    # between the backup and the migration: the snapshot does not have it
    mongo.db.users.update_one({"_id": 4}, {"$set": {"n": -4}})
    engine.migrate(ctx)
    assert any("written by others since the backup" in line for line in mongo.logs)
    dry = engine.revert(ctx, dry_run=True)
    assert dry.refused
    assert "before migration 2: documents changed" in dry.refused[0]
    with pytest.raises(RevertIncomplete, match="before migration 2: documents changed") as caught:
        engine.revert(ctx)
    assert "13 documents differ" in caught.value.refused[0]
    assert mongo.db.users.find_one({"_id": 4})["n"] == -4


def test_dropping_a_new_collection_the_application_wrote_to_is_refused(mongo: MongoSetup) -> None:
    _seed(mongo)
    mongo.migration("V3__audit.py", NEW_COLLECTION)
    ctx = mongo.ctx(backup="snapshot")
    _apply(mongo, ctx)
    mongo.db.audit.insert_one({"_id": "app"})
    with pytest.raises(RevertIncomplete) as caught:
        mongo.engine().revert(ctx)
    (line,) = caught.value.refused
    assert "'audit' not restored" in line
    assert "2 documents differ from the run's start (it did not exist)" in line
    assert "clean up 'audit' by hand" in line
    assert mongo.db.audit.count_documents({}) == 2


def test_a_collection_already_back_to_its_snapshot_is_accepted(mongo: MongoSetup) -> None:
    _seed(mongo)
    mongo.migration("V2__rename.py", RENAME_NO_DOWN)
    ctx = mongo.ctx(backup="snapshot")
    before = mongo.state(include_own=False)
    _apply(mongo, ctx)
    mongo.db.users.insert_one({"_id": 500, "fullName": "App User"})
    with pytest.raises(RevertIncomplete):
        mongo.engine().revert(ctx)
    # an operator put the snapshot back by hand (and will re-apply the app's write later)
    (backup,) = [n for n in mongo.db.list_collection_names() if n.endswith("__users")]
    mongo.db[backup].aggregate([{"$match": {}}, {"$out": "users"}])
    mongo.db.users.create_index([("n", DESCENDING)], name="n_desc")
    mongo.db.users.create_index([("fullName", ASCENDING), ("n", ASCENDING)], unique=True)
    result = mongo.engine().revert(ctx)
    assert result.restored_from_backup == ("2",)
    assert mongo.state(include_own=False) == before
