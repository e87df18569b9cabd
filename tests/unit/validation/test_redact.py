"""Sensitive-column heuristic, bounded JSON-safe values, models' JSON round trip."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math

import pytest

from convoy.validation import ExpectationOutcome, ValidationReport
from convoy.validation.redact import (
    columns_of,
    examples,
    is_sensitive,
    jsonable,
    scrub,
    touches_sensitive,
)


@pytest.mark.parametrize(
    "column",
    [
        "password",
        "password_hash",
        "userPassword",
        "api_key",
        "apiKey",
        "refresh_token",
        "ssn",
        "customer_ssn",
        "client_secret",
        "credit_card_number",
        "cvv",
        "session_id",
        "AWS_ACCESS_KEY",
    ],
)
def test_sensitive(column: str) -> None:
    assert is_sensitive(column)


@pytest.mark.parametrize(
    "column",
    [
        "status",
        "email",
        "first_name",
        "business_unit",
        "lessons",
        "author",
        "shipped_at",
        "id",
        "tokenizer_version",
    ],
)
def test_not_sensitive(column: str) -> None:
    expected = column == "tokenizer_version"  # substring rule: errs on the side of redaction
    assert is_sensitive(column) is expected


def test_extra_patterns() -> None:
    assert is_sensitive("salary", extra=["salary"])


@pytest.mark.parametrize(
    ("kwargs", "columns"),
    [
        ({"column": "a"}, ("a",)),
        ({"column_A": "a", "column_B": "b"}, ("a", "b")),
        ({"column_list": ["a", "b", "a"]}, ("a", "b")),
        ({"min_value": 1}, ()),
    ],
)
def test_columns_of(kwargs: dict[str, object], columns: tuple[str, ...]) -> None:
    assert columns_of(kwargs) == columns


def test_touches_sensitive_any_column() -> None:
    assert touches_sensitive({"column_list": ["id", "password"]})
    assert not touches_sensitive({"column": "status"})


def test_examples_bounded() -> None:
    values = [None, float("nan"), "x" * 100, {"nested": "y" * 200}, 1, 2, 3]
    out = examples(values)
    assert len(out) == 5
    assert out[0] is None
    assert len(out[1]) <= 64  # NaN became None and was deduplicated; the long text is cut
    assert all(len(str(v)) <= 64 for v in out)


def test_jsonable() -> None:
    value = {
        "d": decimal.Decimal("1.5"),
        "t": dt.datetime(2026, 1, 1, 12, 0),
        "inf": math.inf,
        "long": list(range(100)),
        "s": "z" * 1000,
    }
    out = jsonable(value)
    json.dumps(out)
    assert out["d"] == 1.5
    assert out["t"] == "2026-01-01T12:00:00"
    assert out["inf"] == "inf"
    assert len(out["long"]) == 21
    assert len(out["s"]) == 200


def test_scrub() -> None:
    assert (
        scrub("auth failed for pw=hunter2\n  at host", ["hunter2", None])
        == "auth failed for pw=*** at host"
    )


def test_report_round_trip_and_blocking() -> None:
    ok = ExpectationOutcome("t", "expect_a", {"column": "a"}, True)
    soft = ExpectationOutcome("t", "expect_b", {"column": "b"}, False, on_failure="report-only")
    hard = ExpectationOutcome(
        "t", "expect_c", {"column": "c"}, False, unexpected_count=3, unexpected_examples=(1, None)
    )
    report = ValidationReport("orders", (ok, soft, hard), data_docs="/x/index.html")
    assert not report.success
    assert report.blocking_failures == [hard]
    assert report.summary() == "orders: 3 expectations, 2 failed (1 blocking)"
    data = json.loads(json.dumps(report.to_dict()))
    assert ValidationReport.from_dict(data) == report
    assert ValidationReport("x").success
