"""A running Mongo transform publishes its progress through ``RunContext.progress``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mongo_engine_helpers import MongoSetup, users

from convoy.observe.progress import SINK_INTERVAL_ENV

BUMP = {"name": "bump", "collection": "users", "update": {"$inc": {"n": 1}}, "batchSize": 4}


def test_every_batch_reaches_the_sink_when_the_interval_is_zero(
    mongo: MongoSetup, monkeypatch: Any
) -> None:
    monkeypatch.setenv(SINK_INTERVAL_ENV, "0")
    mongo.db.users.insert_many(users(10))
    seen: list[Mapping[str, Any]] = []
    ctx = dataclasses.replace(mongo.ctx(transforms=[BUMP]), progress=seen.append)
    result = mongo.engine().transform(ctx, "bump")
    assert result.rows_done == 10
    assert [(v["done"], v["total"]) for v in seen] == [(4, 10), (8, 10), (10, 10), (10, 10)]
    assert {v["unit"] for v in seen} == {"docs"}
    assert seen[-1]["eta_seconds"] == 0.0
