"""Backup and revert: apply-then-revert leaves every document and index identical."""

from __future__ import annotations

from typing import Any

import pytest
from mongo_engine_helpers import MongoSetup, users
from pymongo import ASCENDING, DESCENDING

from convoy.engines.errors import NoBackup

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
