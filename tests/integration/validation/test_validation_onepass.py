"""The one-pass path (one aggregate query per table) reports what GX reports, on real PostgreSQL.

Every supported expectation runs twice on the same table with NULLs,
duplicates and out-of-range values: once in one scan judged by convoy, once
through GX's SQL datasource (``one_pass=False``); verdicts, observed values,
counts and examples must be equal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from convoy.policy.models import PostgresDatastore
from convoy.validation import onepass
from convoy.validation.gx_runtime import plan_suite
from convoy.validation.models import ExpectationOutcome
from convoy.validation.postgres import validate_postgres

pytestmark = pytest.mark.integration

E = dict[str, dict[str, Any]]

SUPPORTED_CASES: list[E] = [
    {"expect_table_row_count_to_be_between": {"min_value": 10, "max_value": 100}},
    {"expect_table_row_count_to_be_between": {"min_value": 200}},
    {"expect_table_row_count_to_equal": {"value": 40}},
    {"expect_table_row_count_to_equal": {"value": 41}},
    {"expect_column_values_to_not_be_null": {"column": "code"}},
    {"expect_column_values_to_not_be_null": {"column": "code", "mostly": 0.8}},
    {"expect_column_values_to_not_be_null": {"column": "pk"}},
    {"expect_column_values_to_be_null": {"column": "code"}},
    {"expect_column_values_to_be_null": {"column": "empty"}},
    {"expect_column_values_to_be_in_set": {"column": "code", "value_set": ["a", "b"]}},
    {"expect_column_values_to_be_in_set": {"column": "code", "value_set": ["a", "b", "c"]}},
    {"expect_column_values_to_be_in_set": {"column": "qty", "value_set": [1, 2, 3]}},
    {
        "expect_column_values_to_not_be_in_set": {
            "column": "code",
            "value_set": ["c"],
            "mostly": 0.9,
        }
    },
    {"expect_column_values_to_be_between": {"column": "amount", "min_value": 0, "max_value": 10}},
    {
        "expect_column_values_to_be_between": {
            "column": "amount",
            "min_value": 0,
            "max_value": 9.5,
            "strict_max": True,
            "mostly": 0.5,
        }
    },
    {"expect_column_values_to_be_between": {"column": "qty", "min_value": 2, "strict_min": True}},
    {"expect_column_values_to_be_between": {"column": "qty", "max_value": 100}},
    {"expect_column_values_to_match_regex": {"column": "name", "regex": "^n[0-9]+$"}},
    {"expect_column_values_to_not_match_regex": {"column": "name", "regex": "x"}},
    {"expect_column_value_lengths_to_be_between": {"column": "name", "min_value": 2}},
    {
        "expect_column_value_lengths_to_be_between": {
            "column": "name",
            "min_value": 1,
            "max_value": 3,
        }
    },
    {"expect_column_value_lengths_to_equal": {"column": "name", "value": 2}},
    {"expect_column_values_to_be_unique": {"column": "pk"}},
    {"expect_column_values_to_be_unique": {"column": "dup"}},
    {"expect_column_values_to_be_unique": {"column": "dup", "mostly": 0.5}},
    {"expect_column_values_to_be_unique": {"column": "empty"}},
    {"expect_column_min_to_be_between": {"column": "amount", "min_value": 0}},
    {"expect_column_max_to_be_between": {"column": "amount", "max_value": 10}},
    {"expect_column_max_to_be_between": {"column": "qty", "min_value": 1, "max_value": 50}},
    {"expect_column_mean_to_be_between": {"column": "amount", "min_value": 1, "max_value": 20}},
    {"expect_column_mean_to_be_between": {"column": "qty", "min_value": 100}},
    {"expect_column_sum_to_be_between": {"column": "qty", "max_value": 1000}},
    {"expect_column_sum_to_be_between": {"column": "amount", "strict_max": True, "max_value": 1}},
    {"expect_column_values_to_match_regex": {"column": "api_token", "regex": "^tok_"}},
    {"expect_column_values_to_not_be_null": {"column": "api_token"}},
    {"expect_column_values_to_be_between": {"column": "dup", "min_value": 1, "max_value": 12}},
]


@pytest.fixture(scope="module")
def tricky_db(orders_db: str) -> str:
    """``public.tricky``: 40 rows with NULLs, duplicates, out-of-range values, a secret column."""
    with psycopg.connect(orders_db, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.tricky (pk int PRIMARY KEY, dup int, code text,"
            " amount numeric, qty int, name text, empty text, api_token text)"
        )
        conn.execute(
            """
            INSERT INTO public.tricky
            SELECT g,
                   CASE WHEN g % 7 = 0 THEN NULL ELSE g % 13 END,
                   CASE WHEN g % 5 = 0 THEN NULL WHEN g % 6 = 0 THEN 'c'
                        WHEN g % 2 = 0 THEN 'a' ELSE 'b' END,
                   CASE WHEN g % 9 = 0 THEN NULL ELSE (g % 12) - 0.5 END,
                   CASE WHEN g % 11 = 0 THEN NULL ELSE g END,
                   CASE WHEN g % 4 = 0 THEN 'x' || g ELSE 'n' || g END,
                   NULL,
                   CASE WHEN g % 8 = 0 THEN 'plain-' || g ELSE 'tok_' || g END
            FROM generate_series(1, 40) AS g
            """
        )
    return orders_db


def _datastore(expectations: list[E], table: str = "public.tricky") -> PostgresDatastore:
    return PostgresDatastore.model_validate(
        {
            "name": "tricky",
            "type": "postgres",
            "connId": "x",
            "validation": [{"table": table, "expectations": expectations}],
        }
    )


def _comparable(o: ExpectationOutcome) -> dict[str, Any]:
    data = o.to_dict()
    value = o.observed_value
    if isinstance(value, int | float) or type(value).__name__ == "Decimal":
        data["observed_value"] = float(value)
    return data


def test_every_case_is_one_pass() -> None:
    planned = plan_suite("public.tricky", SUPPORTED_CASES, "rollback")
    assert [p.expectation_type for p in planned if not onepass.supported(p)] == []
    assert {p.expectation_type for p in planned} == set(onepass.SUPPORTED)


def test_one_pass_equals_great_expectations(tricky_db: str, tmp_path: Path) -> None:
    datastore = _datastore(SUPPORTED_CASES)
    fast = validate_postgres(
        datastore, conninfo=tricky_db, run_dir=tmp_path / "fast", log=lambda _: None
    )
    slow = validate_postgres(
        datastore,
        conninfo=tricky_db,
        run_dir=tmp_path / "gx",
        log=lambda _: None,
        one_pass=False,
    )
    assert len(fast.outcomes) == len(SUPPORTED_CASES)
    for case, a, b in zip(SUPPORTED_CASES, fast.outcomes, slow.outcomes, strict=True):
        assert _comparable(a) == _comparable(b), case
    # the table really is tricky: both verdicts occur, and values are reported
    assert {o.success for o in fast.outcomes} == {True, False}
    assert any(o.unexpected_examples for o in fast.outcomes)
    assert all(o.error is None for o in fast.outcomes)


def test_sql_errors_and_other_types_go_to_great_expectations(
    tricky_db: str, tmp_path: Path
) -> None:
    cases: list[E] = [
        # a regex on an integer column fails in SQL: GX evaluates (and words) it
        {"expect_column_values_to_match_regex": {"column": "qty", "regex": "^1"}},
        {"expect_column_median_to_be_between": {"column": "qty", "min_value": 1}},
        {"expect_column_values_to_be_in_set": {"column": "code", "value_set": ["a"]}},
        {"expect_column_values_to_not_be_null": {"column": "nope"}},
    ]
    fast = validate_postgres(
        _datastore(cases), conninfo=tricky_db, run_dir=tmp_path / "f", log=lambda _: None
    )
    slow = validate_postgres(
        _datastore(cases),
        conninfo=tricky_db,
        run_dir=tmp_path / "s",
        log=lambda _: None,
        one_pass=False,
    )
    regex, median, in_set, missing = fast.outcomes
    assert _comparable(regex) == _comparable(slow.outcomes[0])
    assert _comparable(median) == _comparable(slow.outcomes[1])
    assert _comparable(in_set) == _comparable(slow.outcomes[2])
    assert missing.error
    assert not missing.success
    assert slow.outcomes[3].error
    assert not slow.outcomes[3].success


_PROBE = """
import json, sys
from pathlib import Path
from convoy.policy.models import PostgresDatastore
from convoy.validation import validate_datastore
datastore = PostgresDatastore.model_validate(json.loads(sys.argv[2]))
report = validate_datastore(datastore, conninfo=sys.argv[1], run_dir=Path(sys.argv[3]),
                            log=lambda _: None)
print(json.dumps({"gx": "great_expectations" in sys.modules,
                  "failed": len(report.failures), "docs": report.data_docs}))
"""


def _probe(conninfo: str, expectations: list[E], run_dir: Path) -> dict[str, Any]:
    spec = {
        "name": "tricky",
        "type": "postgres",
        "connId": "x",
        "validation": [{"table": "public.tricky", "expectations": expectations}],
    }
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, conninfo, json.dumps(spec), str(run_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_task_with_only_one_pass_suites_never_imports_great_expectations(
    tricky_db: str, tmp_path: Path
) -> None:
    secret = {"expect_column_values_to_match_regex": {"column": "api_token", "regex": "^tok_"}}
    result = _probe(tricky_db, [*SUPPORTED_CASES[:6], secret], tmp_path / "a")
    assert result["gx"] is False
    assert result["failed"] == 4  # row count twice, a null code, a plain token
    page = Path(result["docs"])
    assert page.name == "index.html"
    text = page.read_text()
    assert "expect_column_values_to_not_be_null" in text
    assert "plain-" not in text  # no value of the sensitive column


def test_great_expectations_is_imported_when_an_expectation_needs_it(
    tricky_db: str, tmp_path: Path
) -> None:
    median = {"expect_column_median_to_be_between": {"column": "qty", "min_value": 1}}
    result = _probe(tricky_db, [SUPPORTED_CASES[0], median], tmp_path / "b")
    assert result["gx"] is True
    assert result["failed"] == 0
    assert (Path(result["docs"]).parent / "one-pass.html").is_file()
