"""convoy.validation against the real embedded PostgreSQL (GX SQL datasource, in-database)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from validation_pg_data import BOGUS_STATUS, NULL_STATUS, PLAINTEXT_PASSWORDS, ROWS, SECRET_MARK

from convoy.policy.models import PostgresDatastore
from convoy.validation import ValidationReport, validate_datastore

pytestmark = pytest.mark.integration


def _datastore(*validations: dict[str, Any]) -> PostgresDatastore:
    return PostgresDatastore.model_validate(
        {"name": "orders", "type": "postgres", "connId": "orders_db", "validation": validations}
    )


def _run(conninfo: str, tmp_path: Path, *validations: dict[str, Any]) -> ValidationReport:
    lines: list[str] = []
    report = validate_datastore(
        _datastore(*validations), conninfo=conninfo, run_dir=tmp_path, log=lines.append
    )
    assert len([line for line in lines if line.startswith("validation orders:")]) == len(
        report.outcomes
    )
    return report


def test_passing_suite(orders_db: str, tmp_path: Path) -> None:
    report = _run(
        orders_db,
        tmp_path,
        {
            "table": "public.orders",
            "expectations": [
                {"expect_column_values_to_not_be_null": {"column": "id"}},
                {"expect_column_values_to_be_unique": {"column": "id"}},
                {"expect_table_row_count_to_be_between": {"min_value": 1000, "max_value": 5000}},
                {"expect_column_mean_to_be_between": {"column": "amount", "min_value": 20}},
                {
                    "expect_column_values_to_be_in_set": {
                        "column": "status",
                        "value_set": ["open", "shipped"],
                        "mostly": 0.99,
                    }
                },
            ],
        },
    )
    assert report.success, [o for o in report.outcomes if not o.success]
    assert report.blocking_failures == []
    by_type = {o.expectation_type: o for o in report.outcomes}
    assert by_type["expect_table_row_count_to_be_between"].observed_value == ROWS
    assert by_type["expect_column_values_to_be_in_set"].unexpected_count == BOGUS_STATUS
    assert report.data_docs is not None
    index = Path(report.data_docs)
    assert index.is_file()
    assert tmp_path / "data_docs" in index.parents


def test_failures_rollback_and_report_only(orders_db: str, tmp_path: Path) -> None:
    report = _run(
        orders_db,
        tmp_path,
        {
            "table": "public.orders",
            "expectations": [{"expect_column_values_to_not_be_null": {"column": "status"}}],
        },
        {
            "table": "orders",
            "onFailure": "report-only",
            "expectations": [
                {
                    "expect_column_values_to_be_in_set": {
                        "column": "status",
                        "value_set": ["open", "shipped"],
                    }
                },
                {"expect_column_max_to_be_between": {"column": "amount", "max_value": 10}},
            ],
        },
    )
    assert not report.success
    not_null, in_set, max_ = report.outcomes
    assert (not_null.success, not_null.unexpected_count, not_null.on_failure) == (
        False,
        NULL_STATUS,
        "rollback",
    )
    assert not_null.element_count == ROWS
    assert not_null.unexpected_examples == (None,)
    assert not in_set.success
    assert in_set.on_failure == "report-only"
    assert in_set.unexpected_count == BOGUS_STATUS
    assert 0 < len(in_set.unexpected_examples) <= 5
    assert all(str(v).startswith("bogus-") for v in in_set.unexpected_examples)
    assert not max_.success
    assert float(max_.observed_value) == 49.5
    assert report.blocking_failures == [not_null]
    data = json.loads(json.dumps(report.to_dict()))
    assert data["blocking"] == 1
    assert ValidationReport.from_dict(data).blocking_failures[0].expectation_type == (
        "expect_column_values_to_not_be_null"
    )


def test_sensitive_column_values_never_leave_the_database(orders_db: str, tmp_path: Path) -> None:
    report = _run(
        orders_db,
        tmp_path,
        {
            "table": "public.orders",
            "expectations": [
                {
                    "expect_column_values_to_match_regex": {
                        "column": "password_hash",
                        "regex": r"^\$2b\$",
                    }
                },
                {"expect_column_values_to_not_be_null": {"column": "status"}},
            ],
        },
    )
    secret, status = report.outcomes
    assert not secret.success
    assert secret.redacted
    assert secret.unexpected_count == PLAINTEXT_PASSWORDS
    assert secret.unexpected_examples == ()
    assert status.unexpected_examples == (None,)
    assert not status.redacted
    assert SECRET_MARK not in json.dumps(report.to_dict())
    docs = Path(report.data_docs or "").parent
    html = "".join(p.read_text(errors="replace") for p in docs.rglob("*.html"))
    assert "password_hash" in html  # the suite is documented...
    assert SECRET_MARK not in html  # ...but no value of the sensitive column


def test_missing_table_and_column_are_failed_outcomes(orders_db: str, tmp_path: Path) -> None:
    report = _run(
        orders_db,
        tmp_path,
        {
            "table": "public.nope",
            "expectations": [{"expect_column_values_to_not_be_null": {"column": "id"}}],
        },
        {
            "table": "public.orders",
            "expectations": [{"expect_column_values_to_not_be_null": {"column": "nope"}}],
        },
    )
    missing_table, missing_column = report.outcomes
    assert not missing_table.success
    assert missing_table.error
    assert not missing_column.success
    assert missing_column.error
    assert len(report.blocking_failures) == 2


def test_password_in_conninfo_stays_out_of_results_and_docs(
    postgres_server: Any, orders_db: str, tmp_path: Path
) -> None:
    password = "Pw-9f8e7d6c5b4a-secret"
    with psycopg.connect(orders_db, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier("val_user"), sql.Literal(password)
            )
        )
    dbname = psycopg.conninfo.conninfo_to_dict(orders_db)["dbname"]
    host = psycopg.conninfo.conninfo_to_dict(orders_db)["host"]
    conninfo = f"host={host} dbname={dbname} user=val_user password={password}"
    report = _run(
        conninfo,
        tmp_path,
        {
            "table": "public.orders",
            "expectations": [
                {"expect_column_values_to_not_be_null": {"column": "status"}},
                {"expect_column_values_to_not_be_null": {"column": "missing_col"}},
            ],
        },
    )
    assert report.outcomes[0].unexpected_count == NULL_STATUS
    assert password not in json.dumps(report.to_dict())
    docs = Path(report.data_docs or "").parent
    for page in docs.rglob("*"):
        if page.is_file() and page.suffix in {".html", ".json", ".css", ".js"}:
            assert password not in page.read_text(errors="replace"), page
