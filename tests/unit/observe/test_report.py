"""Run report: building, Markdown/HTML rendering (escaping), file layout, lookup."""

from __future__ import annotations

import datetime as dt
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from convoy.observe.report import (
    DatastoreRow,
    RunReport,
    ServiceRow,
    build_report,
    default_reports_dir,
    find_report,
    md_code,
    md_text,
    render_html,
    render_markdown,
    report_dir,
    safe_component,
    write_report,
)
from convoy.validation import ExpectationOutcome, ValidationReport

EVIL = '<script>alert("x")</script>'


def _report(**overrides: Any) -> RunReport:
    validation = ValidationReport(
        "orders",
        (
            ExpectationOutcome(
                "public.orders",
                "expect_column_values_to_not_be_null",
                {"column": "status"},
                False,
                unexpected_count=30,
                unexpected_examples=(None,),
                element_count=3000,
            ),
            ExpectationOutcome(
                "public.orders",
                "expect_column_values_to_be_in_set",
                {"column": "status", "value_set": ["open"]},
                False,
                unexpected_count=2,
                unexpected_examples=(EVIL, "a|b"),
                on_failure="report-only",
            ),
            ExpectationOutcome(
                "public.users",
                "expect_column_values_to_match_regex",
                {"column": "password", "regex": "^x"},
                False,
                unexpected_count=1,
                redacted=True,
            ),
            ExpectationOutcome(
                "public.orders",
                "expect_table_row_count_to_be_between",
                {"min_value": 1},
                True,
                observed_value=3000,
            ),
        ),
        data_docs="/tmp/run/data_docs/orders/index.html",
    )
    fields: dict[str, Any] = {
        "policy_name": "shop-2-4",
        "digest": "sha256:abc123",
        "run_id": "manual__2026-01-01T00:00:00+00:00",
        "triggered_by": "alice",
        "dry_run": False,
        "started": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "finished": "2026-01-01T00:05:30+00:00",
        "final_state": "failed",
        "services": [
            ServiceRow(
                "cart", {"server": "cart:2.3.0"}, {"server": "cart:2.4.0"}, "ready", 42.5, True
            ),
            {
                "name": EVIL,
                "old_images": {"c": "img:1"},
                "new_images": {"c": "img|2"},
                "status": "failed",
            },
        ],
        "datastores": [
            DatastoreRow(
                "orders", ("V1__init", "V2__status"), ("V2__status",), 12000, validation, True
            ),
            {
                "name": "catalog",
                "migrations_applied": [],
                "rows_transformed": 0,
                "validation": None,
            },
        ],
        "rollback": ["data orders: reverted V2__status", "image cart: cart:2.4.0 -> cart:2.3.0"],
        "timings": {"preflight": 1.2, "rollout.wave-1": 40.0, "validate.orders": 3.4},
    }
    fields.update(overrides)
    return build_report(**fields)


def test_build_normalises_rows_and_times() -> None:
    report = _report()
    assert report.duration_seconds == 330.0
    assert isinstance(report.services[1], ServiceRow)
    assert report.datastores[0].validation is not None
    assert report.datastores[0].validation["blocking"] == 2
    assert report.validation_failures == 3
    assert RunReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_markdown_content() -> None:
    text = render_markdown(_report())
    assert "# convoy run report: shop-2-4" in text
    assert "**Final state: FAILED - rolled back**" in text
    assert "`cart:2.3.0`" in text
    assert "`cart:2.4.0`" in text
    assert "| 42.5 |" in text
    assert "3 of 4 failed (2 blocking)" in text
    assert "(redacted)" in text
    assert "1. data orders: reverted V2\\_\\_status" in text
    assert "`rollout.wave-1` | 40.0 |" in text
    assert "Data Docs: `/tmp/run/data_docs/orders/index.html`" in text


def test_markdown_renders_inert_with_intact_tables() -> None:
    from markdown_it import MarkdownIt

    page = MarkdownIt("commonmark").enable("table").render(render_markdown(_report()))
    parser = _Collector()
    parser.feed(page)
    assert "script" not in parser.tags
    assert EVIL in "".join(parser.text)  # shown as text
    for table in re.findall(r"<table>.*?</table>", page, flags=re.S):
        widths = {
            len(re.findall(r"<t[hd][ >]", row))
            for row in re.findall(r"<tr>.*?</tr>", table, flags=re.S)
        }
        assert len(widths) == 1, table


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("<b>x</b>", "&lt;b&gt;x&lt;/b&gt;"),
        ("a|b", "a\\|b"),
        ("*bold* _it_", "\\*bold\\* \\_it\\_"),
        ("two\nlines", "two lines"),
    ],
)
def test_md_text(value: str, expected: str) -> None:
    assert md_text(value) == expected


def test_md_code() -> None:
    assert md_code("img|2") == "`img\\|2`"
    assert md_code("a`b") == "`a'b`"
    assert md_code("") == ""


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_escapes_everything() -> None:
    page = render_html(_report())
    parser = _Collector()
    parser.feed(page)
    assert "script" not in parser.tags
    assert "link" not in parser.tags
    assert "img" not in parser.tags
    assert not any(name.startswith("on") for name, _ in parser.attrs)
    assert EVIL in "".join(parser.text)  # shown as text
    assert "Content-Security-Policy" in page
    assert "http://" not in page
    assert "https://" not in page
    assert 'href="file:///tmp/run/data_docs/orders/index.html"' in page


@pytest.mark.parametrize(
    ("state", "rollback", "dry_run", "css", "label"),
    [
        ("success", [], False, "state-ok", "SUCCESS"),
        ("success", [], True, "state-ok", "SUCCESS (dry run)"),
        ("failed", ["x"], False, "state-bad", "FAILED - rolled back"),
        ("running", [], False, "state-warn", "RUNNING"),
    ],
)
def test_state_badge(state: str, rollback: list[str], dry_run: bool, css: str, label: str) -> None:
    page = render_html(_report(final_state=state, rollback=rollback, dry_run=dry_run))
    assert f'<span class="badge {css}" id="final-state">{label}</span>' in page


def test_empty_report_renders() -> None:
    report = _report(
        services=[], datastores=[], rollback=[], timings={}, started=None, finished=None
    )
    text = render_markdown(report)
    assert "No services." in text
    assert "Nothing was rolled back." in text
    assert "No datastores." in render_html(report)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("shop-2-4", "shop-2-4"),
        ("scheduled__2026-01-01", "scheduled__2026-01-01"),
        (
            "manual__2026-01-01T00:00:00+00:00",
            re.compile(r"manual__2026-01-01T00_00_00_00_00-[0-9a-f]{8}"),
        ),
        ("../../etc", re.compile(r"etc-[0-9a-f]{8}")),
        ("a/b", re.compile(r"a_b-[0-9a-f]{8}")),
    ],
)
def test_safe_component(value: str, expected: str | re.Pattern[str]) -> None:
    got = safe_component(value)
    assert "/" not in got
    assert got not in {".", ".."}
    if isinstance(expected, str):
        assert got == expected
    else:
        assert expected.fullmatch(got), got


def test_distinct_run_ids_stay_distinct() -> None:
    assert safe_component("a:b") != safe_component("a_b")
    assert safe_component("a:b") != safe_component("a;b")


def test_write_and_find(tmp_path: Path) -> None:
    report = _report()
    md, page = write_report(report, tmp_path)
    assert md == report_dir(tmp_path, "shop-2-4", report.run_id) / "report.md"
    assert md.parent.parent == tmp_path / "shop-2-4"
    assert page.read_text().startswith("<!DOCTYPE html>")
    assert json.loads((md.parent / "report.json").read_text())["run_id"] == report.run_id
    assert find_report(tmp_path, report.run_id) == md
    assert find_report(tmp_path, report.run_id, name="report.html") == page
    write_report(report, tmp_path)  # re-running the report task overwrites
    assert sorted(p.name for p in md.parent.iterdir()) == [
        "report.html",
        "report.json",
        "report.md",
    ]
    with pytest.raises(FileNotFoundError):
        find_report(tmp_path, "nope")
    write_report(_report(policy_name="other"), tmp_path)
    with pytest.raises(LookupError, match="several policies"):
        find_report(tmp_path, report.run_id)
    assert find_report(tmp_path, report.run_id, policy="other").parent.parent.name == "other"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CONVOY_REPORTS_DIR": "/r", "AIRFLOW_HOME": "/a"}, "/r"),
        ({"AIRFLOW_HOME": "/a"}, "/a/convoy-reports"),
    ],
)
def test_default_reports_dir(env: dict[str, str], expected: str) -> None:
    assert default_reports_dir(env) == Path(expected)


def test_revert_details_restored_conflicts_and_refusals() -> None:
    row = {
        "name": "orders",
        "reverted": False,
        "rows_restored": 1200,
        "rows_conflicting": 3,
        "rows_gone": 4,
        "conflicts": ["public.orders:7", "public.orders:9"],
        "refused": ["public.orders not restored: the application wrote 12 rows since the backup"],
    }
    report = _report(datastores=[row])
    assert RunReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report
    text = render_markdown(report)
    assert "| 1200 | 3 |" in text
    assert "### Revert of `orders`" in text
    assert "public.orders:7, public.orders:9 and 1 more (all in the undo table)" in text
    assert "NOT REVERTED: public.orders not restored: the application wrote 12 rows" in text
    page = render_html(report)
    assert "Conflicts (kept)" in page
    assert '<li class="failed">NOT REVERTED: public.orders not restored' in page
