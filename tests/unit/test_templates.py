"""HTML from Jinja2 templates: values are escaped and redacted, templates ship as package data."""

from __future__ import annotations

import datetime as dt
import fnmatch
import tomllib
from pathlib import Path

import pytest
from jinja2 import UndefinedError

from convoy import templating
from convoy.observe.report import DatastoreRow, RunReport, ServiceRow, render_html
from convoy.ui import PolicyView, RunView, render_page

REPO = Path(__file__).resolve().parents[2]
SCRIPT = '<script>alert("x")</script>'
SECRET_URI = "postgresql://app:hunter2@db:5432/orders"
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def _assert_escaped(page: str) -> None:
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "hunter2" not in page


def test_report_escapes_a_script_in_every_kind_of_value() -> None:
    report = RunReport(
        policy_name=SCRIPT,
        digest=SCRIPT,
        run_id=SCRIPT,
        triggered_by=f"{SCRIPT} {SECRET_URI}",
        dry_run=False,
        started=None,
        finished=None,
        final_state="failed",
        services=(ServiceRow(SCRIPT, {SCRIPT: SCRIPT}, {"c": SCRIPT}, status=SCRIPT),),
        datastores=(DatastoreRow(SCRIPT, migrations_applied=(SCRIPT,)),),
        rollback=(SCRIPT,),
        timings={SCRIPT: 1.0},
    )
    page = render_html(report)
    _assert_escaped(page)
    assert page.count("&lt;script&gt;") >= 10


def test_upgrades_page_escapes_a_script_in_every_kind_of_value() -> None:
    policy = PolicyView(
        file=SCRIPT,
        dag_id=SCRIPT,
        valid=True,
        description=f"{SCRIPT} {SECRET_URI}",
        owner=SCRIPT,
        plan={
            "waves": [{"index": 0, "steps": [{"service": SCRIPT}]}],
            "datastore_phases": [
                {"datastore": SCRIPT, "type": "postgres", "position": 0, "steps": []}
            ],
            "namespace": SCRIPT,
            "digest": SCRIPT,
        },
    )
    run = RunView(
        dag_id=SCRIPT,
        run_id=SCRIPT,
        state=SCRIPT,
        run_type=SCRIPT,
        start=NOW,
        end=NOW,
        services=((SCRIPT, SCRIPT),),
        datastores=((SCRIPT, "success"),),
        rollback=SCRIPT,
        overall=None,
        report_url=f'x" onmouseover="{SCRIPT}',
    )
    page = render_page([policy], {SCRIPT: [run]}, now=NOW, runs_error=SCRIPT)
    _assert_escaped(page)
    assert 'onmouseover="' not in page  # attribute values cannot be closed either
    assert page.count("&lt;script&gt;") >= 10


def test_markup_is_written_by_templates_only() -> None:
    """Neither renderer builds markup or escapes by hand any more."""
    for module in ("observe/report_html.py", "observe/report_analysis.py", "ui/page.py"):
        text = (REPO / "include" / "convoy" / module).read_text(encoding="utf-8")
        assert "html.escape" not in text, module
        assert "<td" not in text, module
        assert "<span" not in text, module


def test_an_undefined_name_in_a_template_is_an_error() -> None:
    template = templating.environment().from_string("{{ missing }}")
    with pytest.raises(UndefinedError):
        template.render()


def test_templates_are_package_data() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["convoy"]
    package = REPO / "include" / "convoy"
    shipped = sorted(templating.TEMPLATES_DIR.iterdir())
    assert {p.name for p in shipped} >= {"report.html.j2", "upgrades.html.j2"}
    for path in shipped:
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative
