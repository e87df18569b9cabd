"""What the undo log follows of a transform's update, and how it compares images."""

from __future__ import annotations

from typing import Any

import pytest
from bson import Int64, ObjectId

from convoy.engines.mongo.undo import Tracking, _decide, id_text, tracking

ID = ObjectId("65f000000000000000000001")


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        ({"$set": {"status": "open"}}, Tracking(("status",), "static", {"status": "open"})),
        (
            {"$set": {"a": 1}, "$unset": {"b": "", "a": ""}},
            Tracking(("a", "b"), "static", {"a": 1}, ("b",)),
        ),
        ({"$inc": {"n": 1}}, Tracking(("n",), "read")),
        ({"$set": {"a.b": 1, "c.$[].d": 2}}, Tracking(("a", "c"), "read")),
        ({"$rename": {"old": "new.x"}}, Tracking(("new", "old"), "read")),
        ({"$push": {"tags": "x"}, "$currentDate": {"at": True}}, Tracking(("at", "tags"), "read")),
        ({"$set": {"_id": 1, "x": 2}}, Tracking(("x",), "static", {"x": 2})),
        ([{"$set": {"a": "$b", "c.d": 1}}, {"$unset": "e"}], Tracking(("a", "c", "e"), "stamp")),
        ([{"$addFields": {"x": 1}}, {"$unset": ["y", "z.w"]}], Tracking(("x", "y", "z"), "stamp")),
        ([{"$set": {"a": 1}}, {"$project": {"a": 1}}], Tracking(None, "stamp")),
        ([{"$replaceWith": "$inner"}], Tracking(None, "stamp")),
        ([{"$set": {"$odd": 1}}], Tracking(None, "stamp")),
    ],
)
def test_tracking(update: Any, expected: Tracking) -> None:
    assert tracking(update) == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [(5, "5"), ("k", "k"), (ID, str(ID)), ({"a": 1}, '{"a": 1}'), (True, "true")],
)
def test_id_text(value: Any, text: str) -> None:
    assert id_text(value) == text


def _entry(**kw: Any) -> dict[str, Any]:
    base = {
        "_id": {"run": "r", "key": "k", "doc": 1},
        "doc": 1,
        "state": "applied",
        "marker": "_convoy_k",
        "fields": ["a", "b"],
        "capture": "stamp",
        "before": {"a": 1},
        "after": {"b": 2},
        "seq": 1,
    }
    return {**base, **kw}


def test_decide_compares_exact_types_and_absence() -> None:
    doc = {"_id": 1, "b": 2, "other": "app"}
    d = _decide(_entry(), doc, "_convoy_")
    assert d.state == "restore"
    assert d.update == {"$set": {"a": 1}, "$unset": {"_convoy_k": "", "b": ""}}
    # same number, other BSON type: the application wrote it
    assert _decide(_entry(), {"_id": 1, "b": Int64(2)}, "_convoy_").state == "conflict"
    assert _decide(_entry(), {"_id": 1, "b": 2.0}, "_convoy_").state == "conflict"
    # a field convoy removed was written again
    assert _decide(_entry(), {"_id": 1, "a": 9, "b": 2}, "_convoy_").state == "conflict"
    assert _decide(_entry(), {"_id": 1, "a": 1}, "_convoy_").state == "restored"
    assert _decide(_entry(), None, "_convoy_").state == "gone"


def test_decide_without_after_values() -> None:
    pending = _entry(state="pending", after=None)
    assert _decide(pending, {"_id": 1, "a": 1}, "_convoy_").state == "skipped"
    stamped = {"_id": 1, "b": 2, "_convoy_k": {"run": "r", "batch": 1, "after": {"b": 2}}}
    assert _decide(pending, stamped, "_convoy_").state == "restore"
    lost = _entry(state="pending", after=None, capture="read")
    assert _decide(lost, stamped, "_convoy_").state == "conflict"
    unknown = _entry(state="unknown", after=None, capture="read")
    assert _decide(unknown, {"_id": 1, "b": 2}, "_convoy_").state == "conflict"


def test_decide_whole_document_images() -> None:
    entry = _entry(fields=None, before={"a": 1, "b": 1}, after={"c": 3})
    d = _decide(entry, {"_id": 1, "c": 3, "_convoy_other": 1}, "_convoy_")
    assert d.state == "restore"
    assert d.update == {"$set": {"a": 1, "b": 1}, "$unset": {"_convoy_k": "", "c": ""}}
    assert _decide(entry, {"_id": 1, "c": 3, "new": 1}, "_convoy_").state == "conflict"
