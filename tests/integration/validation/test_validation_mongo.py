"""convoy.validation on MongoDB (mongomock): bounded batches, combined results, aggregations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mongomock
import pytest

from convoy.policy.models import MongoDatastore
from convoy.validation import ValidationReport, validate_datastore
from convoy.validation import mongo as mongo_validation

pytestmark = pytest.mark.integration

DOCS = 2_500


@pytest.fixture
def client() -> Any:
    client: Any = mongomock.MongoClient()
    users = client["catalog"]["users"]
    users.insert_many(
        [
            {
                "_id": i,
                "fullName": f"User {i}",
                "firstName": None if i % 500 == 0 else f"U{i}",
                "age": i % 90,
                "address": {"city": "Paris" if i % 3 else "Lyon"},
                "email": f"user{i % 2400}@example.com",
                "apiToken": f"tok-secret-{i}" if i < 3 else f"tk_{i:08d}",
                "junk": "x" * 1000,
            }
            for i in range(DOCS)
        ]
    )
    return client


def _run(
    client: Any, tmp_path: Path, *validations: dict[str, Any], batch: int = 400
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
        datastore, mongo_client=client, run_dir=tmp_path, log=lambda _: None, mongo_batch_size=batch
    )


def test_batched_results_are_combined_over_the_whole_collection(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    real = mongo_validation.iter_frames

    def spy(collection: Any, columns: Any, batch_size: int) -> Any:
        for frame in real(collection, columns, batch_size):
            sizes.append(len(frame))
            assert "junk" not in frame.columns  # projected to the columns the suite reads
            yield frame

    monkeypatch.setattr(mongo_validation, "iter_frames", spy)
    report = _run(
        client,
        tmp_path,
        {
            "collection": "users",
            "expectations": [
                {"expect_column_values_to_not_be_null": {"column": "firstName"}},
                {"expect_column_values_to_not_be_null": {"column": "firstName", "mostly": 0.99}},
                {
                    "expect_column_values_to_be_in_set": {
                        "column": "address.city",
                        "value_set": ["Paris"],
                    }
                },
                {
                    "expect_column_values_to_be_between": {
                        "column": "age",
                        "min_value": 0,
                        "max_value": 89,
                    }
                },
            ],
        },
        {
            "collection": "users",
            "onFailure": "report-only",
            "expectations": [
                {"expect_column_values_to_match_regex": {"column": "apiToken", "regex": "^tk_"}},
            ],
        },
    )
    assert max(sizes) <= 400
    assert sum(sizes) == DOCS * 2  # two suites, each streamed once
    strict, mostly, city, age, token = report.outcomes
    assert not strict.success
    assert strict.unexpected_count == DOCS // 500
    assert strict.element_count == DOCS
    assert strict.unexpected_examples == (None,)
    assert mostly.success  # 5 of 2500 null: 99.8% >= 99%
    assert not city.success
    assert city.unexpected_count == len(range(0, DOCS, 3))
    assert city.unexpected_examples == ("Lyon",)
    assert age.success
    assert not token.success
    assert token.redacted
    assert token.unexpected_count == 3
    assert token.unexpected_examples == ()
    assert token.on_failure == "report-only"
    assert "tok-secret" not in json.dumps(report.to_dict())
    assert [o.expectation_type for o in report.blocking_failures] == [
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_in_set",
    ]
    assert report.data_docs is not None
    assert Path(report.data_docs).is_file()


def test_whole_collection_aggregates_use_the_server(client: Any, tmp_path: Path) -> None:
    report = _run(
        client,
        tmp_path,
        {
            "collection": "users",
            "expectations": [
                {"expect_table_row_count_to_equal": {"value": DOCS}},
                {"expect_table_row_count_to_be_between": {"max_value": 100}},
                {
                    "expect_column_mean_to_be_between": {
                        "column": "age",
                        "min_value": 40,
                        "max_value": 50,
                    }
                },
                {"expect_column_max_to_be_between": {"column": "age", "max_value": 80}},
                {"expect_column_values_to_be_unique": {"column": "_id"}},
                {"expect_column_values_to_be_unique": {"column": "email"}},
            ],
        },
    )
    count_eq, count_between, mean, max_, unique_id, unique_email = report.outcomes
    assert count_eq.success
    assert count_eq.observed_value == DOCS
    assert not count_between.success
    assert mean.success
    assert 40 < mean.observed_value < 50
    assert not max_.success
    assert max_.observed_value == 89
    assert unique_id.success
    assert not unique_email.success
    assert unique_email.unexpected_count == 200  # user0..user99 twice each
    assert len(unique_email.unexpected_examples) == 5


def test_unsupported_aggregate_is_an_error_outcome(client: Any, tmp_path: Path) -> None:
    report = _run(
        client,
        tmp_path,
        {
            "collection": "users",
            "expectations": [{"expect_column_median_to_be_between": {"column": "age"}}],
        },
    )
    (outcome,) = report.outcomes
    assert not outcome.success
    assert "cannot be evaluated" in (outcome.error or "")


def test_empty_collection_passes_row_wise_expectations(tmp_path: Path) -> None:
    client: Any = mongomock.MongoClient()
    report = _run(
        client,
        tmp_path,
        {
            "collection": "empty",
            "expectations": [{"expect_column_values_to_not_be_null": {"column": "x"}}],
        },
    )
    assert report.success
    assert report.outcomes[0].element_count == 0
