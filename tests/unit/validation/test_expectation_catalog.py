"""The static expectation catalog used at policy load time, and its equality with GX."""

from __future__ import annotations

import subprocess
import sys

import pytest

from convoy.policy.expectations import (
    MONGO_AGGREGATIONS,
    catalog,
    check_expectation,
    gx_registry_catalog,
    known_expectation_types,
    mongo_support,
)


def test_catalog_equals_the_installed_gx_registry() -> None:
    """Fails after a GX upgrade: run ``python -m convoy.policy.expectations --regenerate``."""
    assert dict(catalog()) == gx_registry_catalog()


def test_loading_the_catalog_does_not_import_gx() -> None:
    code = (
        "import sys, convoy.policy.expectations as e; e.check_expectation("
        "'expect_column_values_to_not_be_null', {'column': 'x'}, datastore_kind='mongo');"
        "print('great_expectations' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_known_types() -> None:
    types = known_expectation_types()
    assert "expect_column_values_to_not_be_null" in types
    assert types >= MONGO_AGGREGATIONS


@pytest.mark.parametrize(
    ("etype", "kwargs", "kind", "fragment"),
    [
        ("expect_column_values_to_not_be_null", {"column": "x"}, None, None),
        ("expect_column_values_to_not_be_null", {"column": "x", "mostly": 0.9}, "mongo", None),
        (
            "expect_column_values_to_not_be_nul",
            {"column": "x"},
            None,
            "did you mean 'expect_column_values_to_not_be_null'",
        ),
        ("expect_nothing_at_all", {}, None, "unknown expectation type 'expect_nothing_at_all'"),
        ("expect_column_values_to_not_be_null", {"colum": "x"}, None, "did you mean 'column'"),
        ("expect_column_values_to_not_be_null", {}, None, "needs argument(s): column"),
        ("expect_column_values_to_not_be_null", ["column"], None, "must be a mapping"),
        (
            "expect_column_values_to_not_be_null",
            {"column": "x", "batch_id": "b"},
            None,
            "unknown argument 'batch_id'",
        ),
        ("expect_column_median_to_be_between", {"column": "x"}, "postgres", None),
        (
            "expect_column_median_to_be_between",
            {"column": "x"},
            "mongo",
            "cannot be evaluated on a MongoDB",
        ),
        ("expect_column_values_to_be_increasing", {"column": "x"}, "mongo", "cannot be evaluated"),
        ("expect_column_values_to_be_unique", {"column": "x"}, "mongo", None),
        (
            "expect_column_mean_to_be_between",
            {"column": "x", "row_condition": "a>1"},
            "mongo",
            "row_condition is not supported",
        ),
    ],
)
def test_check_expectation(
    etype: str, kwargs: object, kind: str | None, fragment: str | None
) -> None:
    message = check_expectation(etype, kwargs, datastore_kind=kind)  # type: ignore[arg-type]
    if fragment is None:
        assert message is None
    else:
        assert message is not None
        assert fragment in message


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"column": "x", "value_set": ["a"], "mostly": 2}, "mostly"),
        ({"column": "x", "value_set": "abc"}, "value_set"),
    ],
)
def test_deep_check_validates_values_with_gx(kwargs: dict[str, object], fragment: str) -> None:
    message = check_expectation("expect_column_values_to_be_in_set", kwargs, deep=True)
    assert message is not None
    assert fragment in message
    assert (
        check_expectation(
            "expect_column_values_to_be_in_set", {"column": "x", "value_set": ["a"]}, deep=True
        )
        is None
    )


def test_mongo_support() -> None:
    assert mongo_support("expect_column_values_to_match_regex") == "batched"
    assert mongo_support("expect_table_row_count_to_equal") == "aggregation"
    assert mongo_support("expect_column_quantile_values_to_be_between") is None
