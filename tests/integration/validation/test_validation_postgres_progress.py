"""Progress records of PostgreSQL validation (embedded server): expectations evaluated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from convoy.policy.models import PostgresDatastore
from convoy.validation import validate_datastore

pytestmark = pytest.mark.integration

NOT_NULL_ID = {"expect_column_values_to_not_be_null": {"column": "id"}}
UNIQUE_ID = {"expect_column_values_to_be_unique": {"column": "id"}}
# touches a sensitive column: evaluated in a second, redacted suite of the same table
PASSWORD_SET = {"expect_column_values_to_not_be_null": {"column": "password_hash"}}


def _run(conninfo: str, tmp_path: Path, *validations: dict[str, Any]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    datastore = PostgresDatastore.model_validate(
        {"name": "orders", "type": "postgres", "connId": "orders_db", "validation": validations}
    )
    validate_datastore(
        datastore,
        conninfo=conninfo,
        run_dir=tmp_path,
        log=lambda _: None,
        progress=lambda value: records.append(dict(value)),
    )
    return records


def test_progress_counts_expectations_of_every_suite(
    orders_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVOY_PROGRESS_PUSH_INTERVAL_S", "0")
    records = _run(
        orders_db,
        tmp_path,
        {"table": "public.orders", "expectations": [NOT_NULL_ID, UNIQUE_ID, PASSWORD_SET]},
        {"table": "public.no_such_table", "expectations": [NOT_NULL_ID]},
    )
    # the total at once, the plain then the redacted suite of orders, the missing table, the end
    assert [(r["done"], r["total"]) for r in records] == [(0, 4), (2, 4), (3, 4), (4, 4), (4, 4)]
    assert {r["unit"] for r in records} == {"expectations"}
    assert {r["label"] for r in records} == {"orders/validation"}
    assert records[-1]["eta_seconds"] == 0.0


def test_the_sink_is_optional(orders_db: str, tmp_path: Path) -> None:
    datastore = PostgresDatastore.model_validate(
        {
            "name": "orders",
            "type": "postgres",
            "connId": "orders_db",
            "validation": [{"table": "public.orders", "expectations": [NOT_NULL_ID]}],
        }
    )
    report = validate_datastore(datastore, conninfo=orders_db, run_dir=tmp_path, log=lambda _: None)
    assert report.success
