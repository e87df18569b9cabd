"""Versioned migrations: order, changelog, checksums, failures, locks, dry run."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from mongo_engine_helpers import FAST, MongoSetup, users

from convoy.engines.base import DatastoreEngine
from convoy.engines.errors import (
    ChecksumMismatch,
    FailedMigrationPresent,
    LockTimeout,
    MigrationFailed,
    MigrationsUnreadable,
    OutOfOrderMigration,
    UnknownVersion,
)
from convoy.engines.mongo import MongoConfig
from convoy.engines.mongo.errors import LockLost

V1 = """
def up(db):
    db["events"].insert_one({"_id": "v1"})
    db.users.create_index([("email", 1)], name="email_1", unique=True, sparse=True)

def down(db):
    db["events"].delete_one({"_id": "v1"})
    db.users.drop_index("email_1")
"""
V2 = """
def up(db):
    db["events"].insert_one({"_id": "v2"})
"""
V10 = """
def up(db):
    db["events"].insert_one({"_id": "v10"})
"""


def _three(mongo: MongoSetup) -> None:
    mongo.db.users.insert_many(users(3))
    mongo.migration("V1__first.py", V1)
    mongo.migration("V10__tenth.py", V10)
    mongo.migration("V2__second.py", V2)


def test_engine_implements_the_lifecycle(mongo: MongoSetup) -> None:
    assert isinstance(mongo.engine(), DatastoreEngine)


def test_applies_in_version_order_and_records_changelog(mongo: MongoSetup) -> None:
    _three(mongo)
    result = mongo.engine().migrate(mongo.ctx())
    assert [r.version for r in result.applied] == ["1", "2", "10"]
    assert result.pending == ("1", "2", "10")
    assert [d["_id"] for d in mongo.db.events.find().sort("$natural", 1)] == ["v1", "v2", "v10"]
    entries = list(mongo.db.convoy_changelog.find().sort("started", 1))
    assert [e["state"] for e in entries] == ["applied"] * 3
    first = entries[0]
    assert first["policy"] == "shop"
    assert first["run_id"] == "run-1"
    assert len(first["checksum"]) == 64
    assert first["duration_ms"] >= 0
    assert first["finished"] is not None
    assert first["started"] is not None
    history = mongo.engine().history(mongo.ctx())
    assert [h.version for h in history] == ["1", "2", "10"]
    assert all(h.success for h in history)
    assert result.to_dict()["applied"][0]["status"] == "applied"
    assert mongo.db.convoy_locks.count_documents({}) == 0  # released


def test_second_run_applies_nothing(mongo: MongoSetup) -> None:
    _three(mongo)
    mongo.engine().migrate(mongo.ctx())
    again = mongo.engine().migrate(mongo.ctx("run-2"))
    assert again.applied == ()
    assert again.already_applied == ("1", "2", "10")


def test_edited_after_apply_is_refused_with_both_checksums(mongo: MongoSetup) -> None:
    _three(mongo)
    mongo.engine().migrate(mongo.ctx())
    before = mongo.state()
    path = mongo.migration("V2__second.py", V2 + "\n# edited\n")
    with pytest.raises(ChecksumMismatch) as err:
        mongo.engine().migrate(mongo.ctx("run-2"))
    applied = mongo.db.convoy_changelog.find_one({"version": "2"})["checksum"]
    assert err.value.applied == applied
    assert err.value.current != applied
    assert applied in str(err.value)
    assert err.value.current in str(err.value)
    assert str(path) in str(err.value)
    assert mongo.state() == before
    # a reviewed edit can be accepted explicitly
    mongo.engine().repair(mongo.ctx("run-2"), "2", accept_checksum=True)
    assert mongo.engine().migrate(mongo.ctx("run-3")).applied == ()


def test_failed_migration_blocks_until_repaired(mongo: MongoSetup) -> None:
    mongo.migration("V1__first.py", V2.replace("v2", "v1"))
    mongo.migration(
        "V2__half.py",
        """
        def up(db):
            db.events.insert_one({"_id": "half"})
            raise RuntimeError("boom")
        """,
    )
    mongo.migration("V3__third.py", V2.replace("v2", "v3"))
    with pytest.raises(MigrationFailed, match="boom"):
        mongo.engine().migrate(mongo.ctx())
    entry = mongo.db.convoy_changelog.find_one({"version": "2"})
    assert entry["state"] == "failed"
    assert "boom" in entry["error"]
    with pytest.raises(FailedMigrationPresent, match=r"repair\('2'\)"):
        mongo.engine().migrate(mongo.ctx("run-2"))
    assert mongo.db.events.find_one({"_id": "v3"}) is None  # not retried past
    # a human fixes the data and the file, then repairs
    mongo.db.events.delete_one({"_id": "half"})
    mongo.migration("V2__half.py", V2.replace("v2", "half"))
    assert mongo.engine().repair(mongo.ctx("run-2"), "2")
    result = mongo.engine().migrate(mongo.ctx("run-2"))
    assert [r.version for r in result.applied] == ["2", "3"]
    with pytest.raises(UnknownVersion):
        mongo.engine().repair(mongo.ctx("run-3"), "2")


def test_running_entry_of_a_dead_run_blocks(mongo: MongoSetup) -> None:
    """``running`` left by a killed process (the lock has expired) is reported."""

    def die(point: str, details: Any) -> None:
        if point == "migrate.after_up":
            raise KeyboardInterrupt  # not an Exception: the changelog keeps 'running'

    mongo.migration("V1__first.py", V2)
    with pytest.raises(KeyboardInterrupt):
        mongo.engine(fault_hook=die).migrate(mongo.ctx())
    assert mongo.db.convoy_changelog.find_one()["state"] == "running"
    with pytest.raises(FailedMigrationPresent):
        mongo.engine().migrate(mongo.ctx("run-2"))


def test_out_of_order_version_is_refused(mongo: MongoSetup) -> None:
    mongo.migration("V2__second.py", V2)
    mongo.engine().migrate(mongo.ctx())
    mongo.migration("V1__late.py", V2.replace("v2", "late"))
    with pytest.raises(OutOfOrderMigration):
        mongo.engine().migrate(mongo.ctx("run-2"))


def test_bad_file_names_are_refused_before_anything(mongo: MongoSetup) -> None:
    mongo.migration("V1__first.py", V2)
    mongo.migration("U1__undo.py", V2)
    before = mongo.state()
    with pytest.raises(MigrationsUnreadable, match="down"):
        mongo.engine().migrate(mongo.ctx())
    assert mongo.state() == before


def test_dry_run_lists_and_changes_nothing(mongo: MongoSetup) -> None:
    _three(mongo)
    before = mongo.state()
    engine = mongo.engine()
    result = engine.migrate(mongo.ctx(), dry_run=True)
    assert result.dry_run
    assert [r.status for r in result.applied] == ["listed"] * 3
    assert result.pending == ("1", "2", "10")
    actions = engine.plan(mongo.ctx())
    assert [a.target for a in actions if a.stage == "migrate"] == [
        "V1__first",
        "V2__second",
        "V10__tenth",
    ]
    engine.revert(mongo.ctx(), dry_run=True)
    assert mongo.state() == before
    assert sorted(mongo.db.list_collection_names()) == ["users"]


def test_lock_contention_waits_then_names_the_owner(mongo: MongoSetup) -> None:
    _three(mongo)
    engine = mongo.engine()
    holder = engine._db_lock(mongo.ctx("run-other"), "migrate")
    with holder, pytest.raises(LockTimeout, match="run-other") as err:
        engine.migrate(mongo.ctx())
    assert err.value.holders
    assert mongo.db.convoy_changelog.count_documents({}) == 0
    assert engine.migrate(mongo.ctx()).applied  # free again


def test_two_concurrent_runs_never_migrate_at_once(mongo: MongoSetup) -> None:
    mongo.migration(
        "V1__slow.py",
        """
        import time

        def up(db):
            db.trace.insert_one({"event": "start"})
            time.sleep(0.3)
            db.trace.insert_one({"event": "end"})
        """,
    )
    config = MongoConfig(lock_ttl_s=30, lock_wait_s=5, lock_poll_s=0.02)
    errors: list[BaseException] = []

    def run(run_id: str) -> None:
        try:
            mongo.engine(config).migrate(mongo.ctx(run_id))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"run-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [d["event"] for d in mongo.db.trace.find().sort("$natural", 1)] == ["start", "end"]
    assert mongo.db.convoy_changelog.count_documents({}) == 1


def test_stale_lock_is_taken_over(mongo: MongoSetup) -> None:
    _three(mongo)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    mongo.db.convoy_locks.insert_one(
        {
            "_id": f"database:{mongo.name}",
            "owner": {"policy": "shop", "run_id": "killed-run", "host": "h", "pid": 1},
            "token": "dead",
            "acquired": past,
            "expiresAt": past,
        }
    )
    result = mongo.engine().migrate(mongo.ctx())
    assert len(result.applied) == 3
    assert any("took over" in line and "killed-run" in line for line in mongo.logs)


def test_lost_lock_stops_before_the_next_write(mongo: MongoSetup) -> None:
    engine = mongo.engine(MongoConfig(heartbeat=False, lock_wait_s=0))
    lock = engine._db_lock(mongo.ctx(), "migrate")
    with lock:
        mongo.db.convoy_locks.update_one({}, {"$set": {"token": "thief", "owner.run_id": "x"}})
        with pytest.raises(LockLost, match="x"):
            lock.check()


def test_heartbeat_renews_the_lock(mongo: MongoSetup) -> None:
    engine = mongo.engine(MongoConfig(lock_ttl_s=0.3))
    with engine._db_lock(mongo.ctx(), "migrate") as lock:
        first = mongo.db.convoy_locks.find_one()["expiresAt"]
        threading.Event().wait(0.4)
        assert mongo.db.convoy_locks.find_one()["expiresAt"] > first
        lock.check()


def test_fast_config_is_valid() -> None:
    assert FAST.lock_wait_s < 1


def test_read_only_callers_tolerate_a_migration_in_progress(mongo: MongoSetup) -> None:
    """While another run holds the lock, its ``running`` entry is not an abandoned one."""
    mongo.migration("V1__first.py", V2)
    engine = mongo.engine()
    ctx = mongo.ctx("run-other")
    with engine._db_lock(ctx, "migrate"):
        mongo.db.convoy_changelog.insert_one(
            {
                "datastore": "catalog",
                "version": "1",
                "description": "first",
                "checksum": "x",
                "run_id": "run-other",
                "state": "running",
                "started": dt.datetime.now(dt.UTC),
                "repaired_on": None,
            }
        )
        assert engine.migrate(mongo.ctx(), dry_run=True).pending == ("1",)
        assert engine.plan(mongo.ctx())
    with pytest.raises(FailedMigrationPresent):  # lock gone: the attempt was abandoned
        engine.migrate(mongo.ctx(), dry_run=True)
