"""Progress records of MongoDB validation (mongomock): documents validated of those estimated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mongomock
import pytest

from convoy.policy.models import MongoDatastore
from convoy.validation import ValidationReport, validate_datastore

pytestmark = pytest.mark.integration

DOCS = 1_000
NOT_NULL = {"expect_column_values_to_not_be_null": {"column": "name"}}
ROW_COUNT = {"expect_table_row_count_to_be_between": {"min_value": 1}}


@pytest.fixture
def client() -> Any:
    client: Any = mongomock.MongoClient()
    client["catalog"]["users"].insert_many([{"_id": i, "name": f"u{i}"} for i in range(DOCS)])
    client["catalog"]["orders"].insert_many([{"_id": i, "name": f"o{i}"} for i in range(300)])
    return client


def _run(
    client: Any, tmp_path: Path, *validations: dict[str, Any], sink: Any, batch: int = 250
) -> ValidationReport:
    datastore = MongoDatastore.model_validate(
        {
            "name": "catalog",
            "type": "mongo",
            "connId": "catalog_mongo",
            "database": "catalog",
            "validation": validations,
        }
    )
    return validate_datastore(
        datastore,
        mongo_client=client,
        run_dir=tmp_path,
        log=lambda _: None,
        mongo_batch_size=batch,
        progress=sink,
    )


def test_progress_counts_batches_of_every_scanned_suite(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVOY_PROGRESS_PUSH_INTERVAL_S", "0")
    records: list[dict[str, Any]] = []
    _run(
        client,
        tmp_path,
        {"collection": "users", "expectations": [NOT_NULL]},
        {"collection": "orders", "expectations": [NOT_NULL]},
        # aggregations only: computed by the server, not scanned, not counted
        {"collection": "users", "expectations": [ROW_COUNT]},
        sink=records.append,
    )
    total = DOCS + 300
    mid, final = records[:-1], records[-1]
    assert [r["done"] for r in mid] == [250, 500, 750, 1000, 1250, 1300]
    assert {r["total"] for r in mid} == {total}
    assert {r["unit"] for r in records} == {"documents"}
    assert {r["label"] for r in records} == {"catalog/validation"}
    assert mid[1]["pct"] == round(100 * 500 / total, 1)
    assert final["done"] == final["total"] == total
    assert final["pct"] == 100.0
    assert final["eta_seconds"] == 0.0


def test_the_interval_bounds_the_records(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVOY_PROGRESS_PUSH_INTERVAL_S", "3600")
    records: list[dict[str, Any]] = []
    _run(client, tmp_path, {"collection": "users", "expectations": [NOT_NULL]}, sink=records.append)
    # the first batch, then the end
    assert [r["done"] for r in records] == [250, DOCS]
    assert records[-1]["total"] == DOCS


def test_the_final_total_is_what_was_read_when_the_estimate_is_off(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVOY_PROGRESS_PUSH_INTERVAL_S", "0")

    class Stale(mongomock.Collection):  # type: ignore[misc]
        def estimated_document_count(self, **kwargs: Any) -> int:
            return 10  # collection metadata lagging behind the documents

    users = client["catalog"]["users"]
    users.__class__ = Stale
    records: list[dict[str, Any]] = []
    _run(client, tmp_path, {"collection": "users", "expectations": [NOT_NULL]}, sink=records.append)
    assert records[0]["total"] == 10
    assert records[-1]["done"] == records[-1]["total"] == DOCS


def test_a_failing_sink_does_not_fail_the_validation(client: Any, tmp_path: Path) -> None:
    def broken(value: Any) -> None:
        raise RuntimeError("xcom backend down")

    report = _run(
        client, tmp_path, {"collection": "users", "expectations": [NOT_NULL]}, sink=broken
    )
    assert [o.success for o in report.outcomes] == [True]


class _Collection:
    """Answers the two counts the estimate asks for, or raises what a server would."""

    def __init__(self, estimate: Any, count: Any) -> None:
        self.estimate, self.count = estimate, count

    def estimated_document_count(self) -> int:
        if isinstance(self.estimate, Exception):
            raise self.estimate
        return int(self.estimate)

    def count_documents(self, query: dict[str, Any]) -> int:
        if isinstance(self.count, Exception):
            raise self.count
        return int(self.count)


def test_estimate_counts_views_and_gives_up_on_an_unreachable_server() -> None:
    import pymongo.errors

    from convoy.validation.mongo import _estimated_documents

    view = pymongo.errors.OperationFailure("Namespace is a view, not a collection")
    down = pymongo.errors.ServerSelectionTimeoutError("no servers")
    assert _estimated_documents([_Collection(5, None), _Collection(view, 7)]) == 12
    assert _estimated_documents([_Collection(down, 7)]) is None
    assert _estimated_documents([_Collection(view, view)]) is None
    assert _estimated_documents([]) == 0
