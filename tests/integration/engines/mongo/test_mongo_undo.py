"""Transforms revert by before-image and compare-and-set; every application write survives.

The application writes through the fault hook at fixed points of the
transform and of the revert (mongomock is not safe for concurrent writers:
it updates documents in place without a lock); ``test_concurrent_writer_thread``
runs a real writer thread and needs ``MONGO_URI``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
from app_writer import TOUCHED, AppWriter, WriterThread
from mongo_engine_helpers import FAST, MongoSetup, users

from convoy.engines.base import RevertResult

SPLIT = {
    "name": "split-name",
    "collection": "users",
    "filter": {"firstName": {"$exists": False}},
    "update": [{"$set": {"firstName": {"$arrayElemAt": [{"$split": ["$fullName", " "]}, 0]}}}],
    "batchSize": 4,
}
STATUS = {
    "name": "status",
    "collection": "users",
    "filter": {"status": {"$exists": False}},
    "update": {"$set": {"status": "open"}, "$unset": {"tags": ""}},
    "batchSize": 4,
}
BUMP = {"name": "bump", "collection": "users", "update": {"$inc": {"n": 1000}}, "batchSize": 4}
WIDE = dataclasses.replace(FAST, undo_batch_size=100)


class Crash(Exception):
    """Raised by a fault hook: the process 'dies' there."""


def at(point: str, batch: int, action: Any) -> Any:
    def hook(where: str, details: Any) -> None:
        if where == point and details.get("batch", batch) == batch:
            action()

    return hook


def crash() -> None:
    raise Crash


def hooks(*fns: Any) -> Any:
    def hook(where: str, details: Any) -> None:
        for fn in fns:
            fn(where, details)

    return hook


def _undo(mongo: MongoSetup, **query: Any) -> list[dict[str, Any]]:
    return list(mongo.db.convoy_undo.find(query))


def test_transform_logs_before_and_after_images(mongo: MongoSetup) -> None:
    mongo.db.users.insert_many(users(6))
    mongo.db.users.update_one({"_id": 5}, {"$set": {"firstName": "set"}})
    ctx = mongo.ctx(transforms=[SPLIT, STATUS, BUMP])
    engine = mongo.engine()
    for name in ("split-name", "status", "bump"):
        engine.transform(ctx, name)
    split = {e["doc"]: e for e in _undo(mongo, transform="split-name")}
    assert sorted(split) == [0, 1, 2, 3, 4]  # 5 did not match the filter
    e = split[3]
    assert (e["state"], e["fields"], e["capture"]) == ("applied", ["firstName"], "stamp")
    assert (e["before"], e["before_absent"]) == ({}, ["firstName"])
    assert (e["after"], e["after_absent"]) == ({"firstName": "First3"}, [])
    assert e["_id"] == {"run": "run-1", "key": e["key"], "doc": 3}
    status = _undo(mongo, transform="status", doc=2)[0]
    assert status["capture"] == "static"
    assert status["before"] == {"tags": ["a"]}
    assert status["before_absent"] == ["status"]
    assert (status["after"], status["after_absent"]) == ({"status": "open"}, ["tags"])
    bump = _undo(mongo, transform="bump", doc=4)[0]
    assert bump["capture"] == "read"
    assert (bump["before"], bump["after"]) == ({"n": 4}, {"n": 1004})
    # the stamps (which carried a pipeline's after-values) are gone
    assert not any(k.startswith("_convoy") for d in mongo.db.users.find() for k in d)


def test_document_changed_between_read_and_update_is_left_for_the_next_pass(
    mongo: MongoSetup,
) -> None:
    mongo.db.users.insert_many(users(8))
    ctx = mongo.ctx(transforms=[SPLIT])

    def rename() -> None:
        mongo.db.users.update_one({"_id": 5}, {"$set": {"fullName": "Renamed Meanwhile"}})

    result = mongo.engine(fault_hook=at("transform.after_images", 2, rename)).transform(
        ctx, "split-name"
    )
    assert result.rows_done == 8
    assert mongo.db.users.find_one({"_id": 5})["firstName"] == "Renamed"
    entry = _undo(mongo, doc=5)[0]
    assert entry["before"] == {}
    assert entry["seq"] == 3  # logged again by the catch-up pass
    assert mongo.db.convoy_checkpoints.find_one()["passes"] == 3
    result = mongo.engine().revert(ctx)
    assert result.rows_restored == 8
    assert mongo.db.users.find_one({"_id": 5}) == {
        "_id": 5,
        "fullName": "Renamed Meanwhile",
        "n": 5,
        "tags": ["a"],
    }


def test_catch_up_passes_transform_documents_written_behind_the_cursor(
    mongo: MongoSetup,
) -> None:
    mongo.db.users.insert_many(users(12))
    mongo.db.users.update_one({"_id": 1}, {"$set": {"firstName": "kept"}})
    ctx = mongo.ctx(transforms=[SPLIT])

    def behind() -> None:
        mongo.db.users.insert_many([{"_id": -i, "fullName": f"Late{i} Doc"} for i in (1, 2, 3)])
        mongo.db.users.update_one({"_id": 1}, {"$unset": {"firstName": ""}})  # now matches
        mongo.db.users.insert_one({"_id": 100, "fullName": "Ahead Doc"})

    result = mongo.engine(fault_hook=at("transform.after_write", 1, behind)).transform(
        ctx, "split-name"
    )
    assert result.rows_done == 11 + 1 + 3 + 1  # 11 matched at start, 1 reset, 3 + 1 new
    firsts = {d["_id"]: d.get("firstName") for d in mongo.db.users.find()}
    assert firsts[-2] == "Late2"
    assert firsts[1] == "First1"
    assert firsts[100] == "Ahead"
    cp = mongo.db.convoy_checkpoints.find_one()
    assert (cp["passes"], cp["remaining"]) == (3, 0)  # main pass, one that found 4, one empty
    assert not any(k.startswith("_convoy") for d in mongo.db.users.find() for k in d)


def test_catch_up_is_bounded_and_reports_what_is_left(mongo: MongoSetup) -> None:
    mongo.db.users.insert_many(users(8))
    ctx = mongo.ctx(transforms=[SPLIT])
    made = iter(range(1, 1000))

    def always_behind(where: str, details: Any) -> None:
        if where == "transform.after_write":
            mongo.db.users.insert_one({"_id": -next(made), "fullName": "Late Writer"})

    config = dataclasses.replace(FAST, catchup_passes=2)
    mongo.engine(config, fault_hook=always_behind).transform(ctx, "split-name")
    cp = mongo.db.convoy_checkpoints.find_one()
    assert cp["passes"] == 3
    assert cp["remaining"] == 1
    assert any("1 documents written while the transform ran" in line for line in mongo.logs)
    assert mongo.db.users.count_documents({"firstName": {"$exists": False}}) == 1

    none = dataclasses.replace(FAST, catchup_passes=0)
    mongo.db.users.delete_many({})
    mongo.db.convoy_checkpoints.delete_many({})
    mongo.db.users.insert_many(users(8))
    ctx = mongo.ctx("run-2", transforms=[SPLIT])
    mongo.engine(none, fault_hook=always_behind).transform(ctx, "split-name")
    cp = mongo.db.convoy_checkpoints.find_one()
    assert (cp["passes"], cp["remaining"]) == (1, 2)


def test_application_writes_during_transform_and_revert_survive(mongo: MongoSetup) -> None:
    """Fixed writes at fixed points: exact conflicts, gone and restored counts."""
    mongo.db.users.insert_many(users(12))
    ctx = mongo.ctx(backup="snapshot", transforms=[SPLIT])
    engine = mongo.engine(WIDE)
    engine.backup(ctx)
    app = AppWriter(mongo.db.users, seed=0)

    def during_transform() -> None:
        app.coll.update_one({"_id": 1}, {"$set": {TOUCHED: "Typed"}})  # after convoy: conflict
        app.coll.update_one({"_id": 2}, {"$set": {"n": -2}})  # another field: kept
        app.coll.delete_one({"_id": 3})  # after convoy: gone
        app.coll.insert_many([{"_id": 100, "fullName": "Ahead X"}, {"_id": -1, "fullName": "B Y"}])

    def before_update() -> None:
        app.coll.update_one({"_id": 5}, {"$set": {"n": -5}})  # read, not yet updated

    transform = mongo.engine(
        WIDE,
        fault_hook=hooks(
            at("transform.after_write", 1, during_transform),
            at("transform.after_images", 2, before_update),
        ),
    ).transform(ctx, "split-name")
    assert transform.rows_done == 14
    app.coll.update_one({"_id": 6}, {"$set": {TOUCHED: "Later"}})  # conflict
    app.coll.delete_one({"_id": 7})  # gone

    def during_revert() -> None:
        app.coll.update_one({"_id": 9}, {"$set": {TOUCHED: "Racing"}})  # conflict
        app.coll.update_one({"_id": 10}, {"$set": {"n": -10}})  # restored on the 2nd look
        app.coll.delete_one({"_id": 11})  # gone
        app.coll.insert_one({"_id": 200, "fullName": "During Revert"})

    result = mongo.engine(WIDE, fault_hook=at("revert.before_restore", 1, during_revert)).revert(
        ctx
    )
    assert sorted(result.conflicts) == ["users:1", "users:6", "users:9"]
    assert (result.rows_restored, result.rows_conflicting, result.rows_gone) == (8, 3, 3)
    assert result.restored_tables == ()  # never a snapshot restore for a transform
    docs = {d["_id"]: d for d in mongo.db.users.find()}
    assert sorted(docs) == [-1, 0, 1, 2, 4, 5, 6, 8, 9, 10, 100, 200]
    assert docs[-1] == {"_id": -1, "fullName": "B Y"}
    assert docs[100] == {"_id": 100, "fullName": "Ahead X"}
    assert docs[1][TOUCHED] == "Typed"
    assert docs[9][TOUCHED] == "Racing"
    assert docs[2] == {"_id": 2, "fullName": "First2 Last2", "n": -2, "tags": ["a"]}
    assert docs[5]["n"] == -5
    assert docs[10]["n"] == -10
    assert TOUCHED not in docs[10]
    assert docs[0] == users(1)[0]
    states = {e["doc"]: e["state"] for e in _undo(mongo)}
    assert states[1] == states[6] == states[9] == "conflict"
    assert states[3] == states[7] == states[11] == "gone"


@pytest.mark.parametrize("seed", range(6))
def test_random_application_writes_survive_transform_and_revert(
    mongo: MongoSetup, seed: int
) -> None:
    mongo.db.users.insert_many(users(30))
    ctx = mongo.ctx(transforms=[{**SPLIT, "batchSize": 5}])
    app = AppWriter(mongo.db.users, seed=seed)
    mongo.engine(WIDE, fault_hook=app.hook(2)).transform(ctx, "split-name")
    for _ in range(10):
        app.step()
    config = dataclasses.replace(WIDE, undo_batch_size=7)
    result = mongo.engine(config, fault_hook=app.hook(3)).revert(ctx)
    _check(mongo, app, result)


def _check(
    mongo: MongoSetup, app: AppWriter, result: RevertResult, *, predicted: bool = True
) -> None:
    """Every application write survived and every outcome is accounted for.

    ``predicted``: the writer's guess of the conflicts is exact (its writes are
    not concurrent with the engine's, so what it read is still true when it writes).
    """
    assert app.mismatches() == []
    conflicts = {int(c.split(":", 1)[1]) for c in result.conflicts}
    assert conflicts <= app.touched
    if predicted:
        assert {i for i in app.conflicts if i in app.model} <= conflicts
    entries = _undo(mongo)
    final = [e for e in entries if e["state"] != "skipped"]
    assert result.rows_restored + result.rows_conflicting + result.rows_gone == len(final)
    assert all(e["doc"] not in app.model for e in entries if e["state"] == "gone")
    assert {e["state"] for e in entries} <= {"restored", "conflict", "gone", "skipped"}
    assert not any(k.startswith("_convoy") for d in mongo.db.users.find() for k in d)


@pytest.mark.mongo_server
def test_concurrent_writer_thread(mongo: MongoSetup) -> None:
    """A real writer thread during the transform and the revert (needs MONGO_URI)."""
    mongo.db.users.insert_many(users(2000))
    ctx = mongo.ctx(transforms=[{**SPLIT, "batchSize": 50}])
    app = AppWriter(mongo.db.users, seed=42)

    def yield_to_the_writer(point: str, details: Any) -> None:
        time.sleep(0.005)  # widen every window between the engine's reads and writes

    config = dataclasses.replace(FAST, undo_batch_size=50)
    thread = WriterThread(app)
    thread.start()
    try:
        mongo.engine(config, fault_hook=yield_to_the_writer).transform(ctx, "split-name")
        result = mongo.engine(config, fault_hook=yield_to_the_writer).revert(ctx)
    finally:
        thread.stop()
    assert len(app.log) > 50
    assert result.rows_restored > 0
    # writes after the revert need no undoing; the model has them too
    _check(mongo, app, result, predicted=False)


@pytest.mark.parametrize(
    "point",
    [
        "transform.before_write",
        "transform.after_images",
        "transform.after_update",
        "transform.after_write",
        "transform.before_strip",
    ],
)
@pytest.mark.parametrize("spec", [SPLIT, STATUS, BUMP], ids=["pipeline", "literal", "inc"])
@pytest.mark.parametrize("resume", [False, True], ids=["revert", "resume-then-revert"])
def test_killed_transform_is_reverted(
    mongo: MongoSetup, point: str, spec: dict[str, Any], resume: bool
) -> None:
    mongo.db.users.insert_many(users(14))
    before = mongo.state(include_own=False)
    ctx = mongo.ctx(transforms=[spec])
    name = str(spec["name"])
    with pytest.raises(Crash):
        mongo.engine(fault_hook=at(point, 2, crash)).transform(ctx, name)
    if resume:
        assert mongo.engine().transform(ctx, name).rows_done == 14
    result = mongo.engine().revert(ctx)
    lost = spec is BUMP and point == "transform.after_update"
    if not lost:
        assert mongo.state(include_own=False) == before
        assert result.rows_conflicting == 0
        return
    # $inc's after-values are read back after the update: the kill lost them for
    # batch 2, so those documents are left as they are and listed
    assert sorted(result.conflicts) == ["users:4", "users:5", "users:6", "users:7"]
    assert sorted(d["n"] for d in mongo.db.users.find({"n": {"$gte": 1000}})) == [
        1004,
        1005,
        1006,
        1007,
    ]
    assert mongo.db.users.count_documents({"n": {"$lt": 1000}}) == 10
    assert all("after-values lost" in e["reason"] for e in _undo(mongo) if e["state"] == "conflict")


def test_revert_killed_midway_resumes_and_a_rerun_changes_nothing(mongo: MongoSetup) -> None:
    mongo.db.users.insert_many(users(20))
    before = mongo.state(include_own=False)
    ctx = mongo.ctx(transforms=[SPLIT, STATUS])
    engine = mongo.engine()
    engine.transform(ctx, "split-name")
    engine.transform(ctx, "status")
    config = dataclasses.replace(FAST, undo_batch_size=6)
    with pytest.raises(Crash):
        mongo.engine(config, fault_hook=at("revert.after_restore", 2, crash)).revert(ctx)
    # status (declared last) is reverted first; its batch 2 is written but not marked
    assert {e["state"] for e in _undo(mongo, transform="split-name")} == {"applied"}
    first = mongo.engine(config).revert(ctx)
    assert first.rows_restored == 20 + 20 - 6  # the killed run marked status's first batch
    assert first.rows_conflicting == first.rows_gone == 0
    assert mongo.state(include_own=False) == before
    settled = mongo.state()
    again = mongo.engine(config).revert(ctx)
    assert (again.rows_restored, again.rows_conflicting, again.rows_gone) == (0, 0, 0)
    assert again.undone == again.restored_tables == ()
    assert mongo.state() == settled


def test_revert_of_transforms_needs_no_backup_and_dry_run_changes_nothing(
    mongo: MongoSetup,
) -> None:
    mongo.db.users.insert_many(users(5))
    before = mongo.state(include_own=False)
    ctx = mongo.ctx(transforms=[SPLIT])  # backup: none
    mongo.engine().transform(ctx, "split-name")
    applied = mongo.state()
    dry = mongo.engine().revert(ctx, dry_run=True)
    assert dry.dry_run
    assert mongo.state() == applied
    assert any("up to 5 documents" in line for line in mongo.logs)
    assert mongo.engine().revert(ctx).rows_restored == 5
    assert mongo.state(include_own=False) == before
