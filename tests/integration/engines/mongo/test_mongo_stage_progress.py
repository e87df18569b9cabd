"""Backup, migrate and revert publish their progress through ``RunContext.progress``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest
from mongo_engine_helpers import MongoSetup, users

from convoy.engines.base import RunContext
from convoy.observe.progress import SINK_INTERVAL_ENV

WITH_DOWN = """
def up(db):
    db["events"].insert_one({"_id": "v1"})

def down(db):
    db["events"].delete_one({"_id": "v1"})
"""
RENAME_NO_DOWN = """
def up(db):
    db.users.update_many({}, {"$rename": {"tags": "labels"}})
"""
NEW_COLLECTION = """
def up(db):
    db["audit"].insert_one({"_id": 1})
"""


@pytest.fixture(autouse=True)
def every_update(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SINK_INTERVAL_ENV, "0")


def _reporting(mongo: MongoSetup, **datastore: Any) -> tuple[RunContext, list[Any]]:
    mongo.db.users.insert_many(users(10))
    mongo.db.events.insert_many([{"_id": "e1"}])
    mongo.migration("V1__with_down.py", WITH_DOWN)
    mongo.migration("V2__rename.py", RENAME_NO_DOWN)
    mongo.migration("V3__audit.py", NEW_COLLECTION)
    seen: list[Mapping[str, Any]] = []
    return dataclasses.replace(mongo.ctx(**datastore), progress=seen.append), seen


def _counts(seen: list[Mapping[str, Any]]) -> list[tuple[int, int | None]]:
    return [(v["done"], v["total"]) for v in seen]


def _finished(seen: list[Mapping[str, Any]], label: str, unit: str) -> None:
    assert seen, "no progress published"
    assert {v["label"] for v in seen} == {label}
    assert {v["unit"] for v in seen} == {unit}
    assert seen[-1]["done"] == seen[-1]["total"]
    assert seen[-1]["eta_seconds"] == 0.0


def test_backup_counts_collections(mongo: MongoSetup) -> None:
    ctx, seen = _reporting(mongo, backup="snapshot")
    assert mongo.engine().backup(ctx).tables == ("audit", "events", "users")
    _finished(seen, "catalog/backup", "collections")
    assert _counts(seen) == [(0, 3), (1, 3), (2, 3), (3, 3), (3, 3)]


def test_a_retried_backup_counts_the_kept_copies(mongo: MongoSetup) -> None:
    ctx, seen = _reporting(mongo, backup="snapshot")
    engine = mongo.engine()
    engine.backup(ctx)
    seen.clear()
    assert engine.backup(ctx).skipped_existing
    _finished(seen, "catalog/backup", "collections")
    assert _counts(seen)[-1] == (3, 3)


def test_migrate_counts_the_pending_files(mongo: MongoSetup) -> None:
    ctx, seen = _reporting(mongo)
    assert len(mongo.engine().migrate(ctx).applied) == 3
    _finished(seen, "catalog/migrate", "migrations")
    assert _counts(seen) == [(0, 3), (1, 3), (2, 3), (3, 3), (3, 3)]


def test_revert_counts_restored_collections_and_down_functions(mongo: MongoSetup) -> None:
    ctx, seen = _reporting(mongo, backup="snapshot")
    engine = mongo.engine()
    engine.backup(ctx)
    engine.migrate(ctx)
    seen.clear()
    result = engine.revert(ctx)
    # audit (V3) and users (V2) from the snapshot, then V1's down()
    assert result.undone == ("1",)
    assert result.restored_tables == ("users",)
    assert result.dropped_tables == ("audit",)
    _finished(seen, "catalog/revert", "steps")
    assert _counts(seen) == [(0, 3), (1, 3), (2, 3), (3, 3), (3, 3)]


def test_revert_with_down_functions_only(mongo: MongoSetup) -> None:
    mongo.db.users.insert_many(users(3))
    mongo.migration("V1__with_down.py", WITH_DOWN)
    seen: list[Mapping[str, Any]] = []
    ctx = dataclasses.replace(mongo.ctx(), progress=seen.append)
    engine = mongo.engine()
    engine.migrate(ctx)
    seen.clear()
    assert engine.revert(ctx).undone == ("1",)
    _finished(seen, "catalog/revert", "steps")
    assert _counts(seen) == [(0, 1), (1, 1), (1, 1)]
