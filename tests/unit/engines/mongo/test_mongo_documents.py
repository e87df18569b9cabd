"""Pure helpers of the mongo engine: source scan, interval binding, stamps, bounds."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from bson import Int64, ObjectId

from convoy.engines.base import RunContext
from convoy.engines.errors import MissingDataInterval
from convoy.engines.mongo.backup import scan_collections
from convoy.engines.mongo.config import MongoConfig
from convoy.engines.mongo.documents import (
    bind_interval,
    canonical,
    check_transform,
    decode_value,
    encode_value,
    stamp_update,
)
from convoy.engines.mongo.errors import InvalidMongoSpec
from convoy.plan.specs import MongoSpec, MongoTransformSpec

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
END = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


def _ctx(interval: bool = True) -> RunContext:
    ds = MongoSpec(name="c", conn_id="x", database="d")
    return RunContext(
        "p", "r", ds, Path("."), START if interval else None, END if interval else None
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('db["users"].update_many({}, {})', {"users"}),
        ("db['a.b'].find()", {"a.b"}),
        ('db.get_collection("orders")', {"orders"}),
        ('db.create_collection("audit")', {"audit"}),
        ("db.drop_collection('old')", {"old"}),
        ("db.users.create_index([('a', 1)])", {"users"}),
        ('db.users.rename("people")', {"users", "people"}),
        ("db.list_collection_names()", set()),
        ("name = 'x'; db[name].find()", set()),
    ],
)
def test_scan_collections(source: str, expected: set[str]) -> None:
    assert scan_collections(source) == expected


def test_bind_interval_gives_dates_never_text() -> None:
    value = {
        "$or": [{"at": {"$gte": "{{ data_interval_start }}"}}, {"x": ["{{data_interval_end}}"]}]
    }
    bound = bind_interval(value, _ctx(), "t")
    assert bound == {"$or": [{"at": {"$gte": START}}, {"x": [END]}]}
    assert value["$or"][0]["at"]["$gte"] == "{{ data_interval_start }}"  # input untouched


@pytest.mark.parametrize("text", ["after {{ data_interval_start }}", "{{ ds }}", "{% if x %}"])
def test_bind_interval_refuses_embedded_templates(text: str) -> None:
    with pytest.raises(InvalidMongoSpec, match="whole value"):
        bind_interval({"a": text}, _ctx(), "t")


def test_bind_interval_needs_an_interval() -> None:
    with pytest.raises(MissingDataInterval):
        bind_interval({"a": "{{ data_interval_end }}"}, _ctx(interval=False), "t")


def test_stamp_update_document_and_pipeline() -> None:
    doc = {"$set": {"a": 1}, "$inc": {"n": 1}}
    assert stamp_update(doc, "_convoy_k", {"batch": 2}) == {
        "$set": {"a": 1, "_convoy_k": {"batch": 2}},
        "$inc": {"n": 1},
    }
    assert doc == {"$set": {"a": 1}, "$inc": {"n": 1}}
    pipe = [{"$set": {"a": "$b"}}]
    assert stamp_update(pipe, "_convoy_k", {"batch": 2})[-1] == {
        "$set": {"_convoy_k": {"$literal": {"batch": 2}}}
    }


@pytest.mark.parametrize("value", [5, Int64(5), "k", ObjectId(), START.replace(tzinfo=None)])
def test_bounds_round_trip_with_their_type(value: Any) -> None:
    back = decode_value(encode_value(value))
    assert back == value
    assert type(back) is type(value)


def test_canonical_ignores_key_order() -> None:
    assert canonical({"a": 1, "b": {"c": 2, "d": 3}}) == canonical({"b": {"d": 3, "c": 2}, "a": 1})


@pytest.mark.parametrize(
    "update", [{"$set": {"_convoy_abc": 1}}, [{"$set": {"a": 1, "_convoy_b.c": 2}}]]
)
def test_check_transform_refuses_the_reserved_marker_fields(update: Any) -> None:
    t = MongoTransformSpec(name="t", collection="c", filter={}, update=update, batch_size=10)
    with pytest.raises(InvalidMongoSpec, match="reserves"):
        check_transform(t, MongoConfig().marker_prefix)


def test_check_transform_leaves_the_policy_rules_to_the_policy_loader() -> None:
    # JavaScript and unknown operators are refused when the policy loads (bad
    # corpus 31, 32); a spec only comes from a policy that loaded.
    t = MongoTransformSpec(
        name="t", collection="c", filter={}, update={"$set": {"n": 1}}, batch_size=10
    )
    check_transform(t, MongoConfig().marker_prefix)
