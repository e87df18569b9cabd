"""Batched transforms: batches, pipelines, interval binding, crash and resume, partitions."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from mongo_engine_helpers import MongoSetup, users

from convoy.engines.base import Partition
from convoy.engines.errors import MissingDataInterval, UnknownTransform
from convoy.engines.mongo.errors import InvalidMongoSpec, UnknownCollection, UnsafeCollectionName

INC = {"name": "bump", "collection": "users", "update": {"$inc": {"n": 1000}}, "batchSize": 7}
SPLIT = {
    "name": "split-name",
    "collection": "users",
    "filter": {"firstName": {"$exists": False}},
    "update": [{"$set": {"firstName": {"$arrayElemAt": [{"$split": ["$fullName", " "]}, 0]}}}],
    "batchSize": 4,
}


class Crash(Exception):
    """Raised by the fault hook: the process 'dies' at that point."""


def crash_at(point: str, batch: int) -> Any:
    def hook(where: str, details: Any) -> None:
        if where == point and details.get("batch") == batch:
            raise Crash(f"{where} batch {batch}")

    return hook


def test_pipeline_update_in_batches(mongo: MongoSetup) -> None:
    mongo.db.users.insert_many(users(10))
    ctx = mongo.ctx(transforms=[SPLIT])
    result = mongo.engine().transform(ctx, "split-name")
    assert result.done
    assert result.rows_done == 10
    assert result.batches == 3
    assert mongo.db.users.count_documents({"firstName": {"$exists": True}}) == 10
    assert mongo.db.users.find_one({"_id": 3})["firstName"] == "First3"
    # stamps removed, checkpoint done
    assert not any(k.startswith("_convoy") for d in mongo.db.users.find() for k in d)
    cp = mongo.db.convoy_checkpoints.find_one()
    assert cp["state"] == "done"
    assert cp["docs_done"] == 10
    assert cp["last_id"] == 9
    assert any("10/10 docs" in line for line in mongo.logs)
    # a re-run of the same interval does nothing
    again = mongo.engine().transform(ctx, "split-name")
    assert again.done
    assert again.rows_done == 10
    assert mongo.db.users.find_one({"_id": 3})["firstName"] == "First3"


def test_crash_between_write_and_checkpoint_does_not_reapply(mongo: MongoSetup) -> None:
    """``$inc`` with no filter: any re-application would show; the stamps prevent it."""
    mongo.db.users.insert_many(users(30))
    ctx = mongo.ctx(transforms=[INC])
    with pytest.raises(Crash):
        mongo.engine(fault_hook=crash_at("transform.after_write", 3)).transform(ctx, "bump")
    cp = mongo.db.convoy_checkpoints.find_one()
    assert cp["batches"] == 2
    assert cp["docs_done"] == 14
    assert mongo.db.users.count_documents({"n": {"$gte": 1000}}) == 21
    result = mongo.engine().transform(ctx, "bump")
    assert result.done
    assert result.rows_done == 30
    assert sorted(d["n"] for d in mongo.db.users.find()) == [1000 + i for i in range(30)]
    assert any("checkpoint was lost" in line for line in mongo.logs)
    assert not any(k.startswith("_convoy") for d in mongo.db.users.find() for k in d)


@pytest.mark.parametrize(
    "point", ["transform.before_write", "transform.after_write", "transform.before_strip"]
)
def test_resume_after_crash_at_every_point_applies_once(mongo: MongoSetup, point: str) -> None:
    mongo.db.users.insert_many(users(20))
    ctx = mongo.ctx(transforms=[INC])

    def hook(where: str, details: Any) -> None:
        if where == point and details.get("batch", 2) == 2:
            raise Crash(where)

    with pytest.raises(Crash):
        mongo.engine(fault_hook=hook).transform(ctx, "bump")
    result = mongo.engine().transform(ctx, "bump")
    assert result.rows_done == 20
    assert sorted(d["n"] for d in mongo.db.users.find()) == [1000 + i for i in range(20)]


def test_interval_is_bound_as_dates(mongo: MongoSetup) -> None:
    day = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    mongo.db.orders.insert_many(
        [{"_id": i, "at": day + dt.timedelta(hours=6 * i), "status": None} for i in range(8)]
    )
    spec = {
        "name": "mark",
        "collection": "orders",
        "filter": {"at": {"$gte": "{{ data_interval_start }}", "$lt": "{{ data_interval_end}}"}},
        "update": {"$set": {"status": "open"}},
    }
    ctx = mongo.ctx(interval=(day, day + dt.timedelta(days=1)), transforms=[spec])
    assert mongo.engine().transform(ctx, "mark").rows_done == 4
    assert [d["_id"] for d in mongo.db.orders.find({"status": "open"})] == [0, 1, 2, 3]
    # the next interval is its own checkpoint
    nxt = mongo.ctx(
        interval=(day + dt.timedelta(days=1), day + dt.timedelta(days=2)), transforms=[spec]
    )
    assert mongo.engine().transform(nxt, "mark").rows_done == 4
    with pytest.raises(MissingDataInterval):
        mongo.engine().transform(mongo.ctx(transforms=[spec]), "mark")


def test_partitions_cover_every_document_once(mongo: MongoSetup) -> None:
    mongo.db.users.insert_many(users(100))
    ctx = mongo.ctx(transforms=[{**INC, "batchSize": 10}])
    engine = mongo.engine()
    parts = engine.partitions(ctx, "bump", 4)
    assert len(parts) == 4
    assert parts[0].lower is None
    assert parts[-1].upper is None
    # they travel through XCom as JSON
    parts = [Partition.from_dict(p.to_dict()) for p in parts]
    total = sum(engine.transform(ctx, "bump", p).rows_done for p in reversed(parts))
    assert total == 100
    assert sorted(d["n"] for d in mongo.db.users.find()) == [1000 + i for i in range(100)]
    assert mongo.db.convoy_checkpoints.count_documents({"state": "done"}) == 4


def test_partition_bounds_keep_objectid_type(mongo: MongoSetup) -> None:
    mongo.db.users.insert_many([{"n": i} for i in range(50)])
    ctx = mongo.ctx(transforms=[{**INC, "batchSize": 5}])
    parts = mongo.engine().partitions(ctx, "bump", 3)
    assert "$oid" in (parts[1].lower or "")
    assert sum(mongo.engine().transform(ctx, "bump", p).rows_done for p in parts) == 50


def test_dry_run_counts_and_changes_nothing(mongo: MongoSetup) -> None:
    mongo.db.users.insert_many(users(10))
    mongo.db.users.update_one({"_id": 0}, {"$set": {"firstName": "x"}})
    before = mongo.state()
    result = mongo.engine().transform(mongo.ctx(transforms=[SPLIT]), "split-name", dry_run=True)
    assert result.dry_run
    assert result.rows_matching == 9
    assert result.rows_done == 0
    assert mongo.state() == before


@pytest.mark.parametrize(
    ("spec", "error", "text"),
    [
        # JavaScript, unknown operators and stages are refused when the policy loads
        # (tests/unit/policy); the engine refuses what only it knows about.
        ({**INC, "update": {"$set": {"_convoy_x": 1}}}, InvalidMongoSpec, "reserves"),
        ({**INC, "filter": {"at": "{{ ds }}"}}, InvalidMongoSpec, "must be the whole value"),
        ({**INC, "collection": "nope"}, UnknownCollection, "does not exist"),
        ({**INC, "collection": "convoy_changelog"}, UnsafeCollectionName, "reserved"),
        ({**INC, "collection": "a$b"}, UnsafeCollectionName, r"\$"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    mongo: MongoSetup, spec: dict[str, Any], error: type[Exception], text: str
) -> None:
    mongo.db.users.insert_many(users(5))
    before = mongo.state()
    ctx = mongo.ctx(transforms=[spec])
    for dry_run in (True, False):
        with pytest.raises(error, match=text):
            mongo.engine().transform(ctx, "bump", dry_run=dry_run)
    assert mongo.state() == before


def test_unknown_transform_name(mongo: MongoSetup) -> None:
    with pytest.raises(UnknownTransform, match="bump"):
        mongo.engine().transform(mongo.ctx(transforms=[INC]), "nope")


def test_stream_documents_is_bounded(mongo: MongoSetup) -> None:
    mongo.db.users.insert_many(users(25))
    batches = list(
        mongo.engine().stream_documents("users", {"n": {"$gte": 5}}, {"fullName": 1, "_id": 0}, 8)
    )
    assert [len(b) for b in batches] == [8, 8, 4]
    assert batches[0][0] == {"fullName": "First5 Last5"}
    limited = list(mongo.engine().stream_documents("users", None, None, 10, limit=15))
    assert [len(b) for b in limited] == [10, 5]
