"""Self-contained HTML rendering of a :class:`~convoy.observe.report.RunReport`.

The markup is the template ``convoy/templates/report.html.j2`` (one file,
inline CSS from ``report.css``, no scripts, no external assets; a
Content-Security-Policy forbids loading anything anyway). This module only
turns the report into display values; the template escapes and redacts every
one of them (:mod:`convoy.templating`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from convoy.observe import report_analysis
from convoy.templating import render

if TYPE_CHECKING:
    from convoy.observe.report import DatastoreRow, RunReport

TEMPLATE = "report.html.j2"


def _badge_class(report: RunReport) -> str:
    state = report.final_state.lower()
    if state in {"success", "succeeded"} and not report.rollback:
        return "state-ok"
    if state in {"failed", "rolled_back", "rollback_failed", "error"} or report.rollback:
        return "state-bad"
    return "state-warn"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_html(report: RunReport) -> str:
    from convoy.observe.report import _validation_summary, state_label

    datastores = report.datastores
    return render(
        TEMPLATE,
        title=f"convoy run report: {report.policy_name}",
        badge=_badge_class(report),
        state=state_label(report),
        facts=[
            ("Policy", report.policy_name, True),
            ("Digest", report.digest, True),
            ("Run", report.run_id, True),
            ("Triggered by", report.triggered_by, False),
            ("Dry run", "yes" if report.dry_run else "no", False),
            ("Started", report.started.isoformat() if report.started else "-", False),
            ("Finished", report.finished.isoformat() if report.finished else "-", False),
            ("Duration", f"{_seconds(report.duration_seconds)} s", False),
            *([("Plan", report.plan, False)] if report.plan else []),
        ],
        services=[
            {
                "name": s.name,
                "old_images": list(s.old_images.items()),
                "new_images": list(s.new_images.items()),
                "status": s.status,
                "ready": _seconds(s.ready_seconds),
                "reverted": s.reverted,
            }
            for s in report.services
        ],
        datastores=[
            {
                "name": d.name,
                "migrations_applied": list(d.migrations_applied),
                "migrations_reverted": list(d.migrations_reverted),
                "rows_transformed": f"{d.rows_transformed:,}",
                "validation": _validation_summary(d.validation),
                "reverted": d.reverted,
                "rows_restored": f"{d.rows_restored:,}",
                "rows_conflicting": f"{d.rows_conflicting:,}",
            }
            for d in datastores
        ],
        validations=[_validation(d) for d in datastores if (d.validation or {}).get("outcomes")],
        reverts=[
            _revert_details(d) for d in datastores if d.rows_restored or d.refused or d.conflicts
        ],
        analyses=report_analysis.html_rows(report.services),
        rollback=list(report.rollback),
        timings=_timings(report.timings),
    )


def _revert_details(d: DatastoreRow) -> dict[str, Any]:
    from convoy.observe.report import revert_details

    lines = [(line.startswith("NOT REVERTED"), line) for line in revert_details(d)]
    return {"name": d.name, "lines": lines}


def _outcome_css(outcome: Mapping[str, Any], result: str) -> str:
    if result in ("passed", "error"):
        return result
    return "failed" if outcome.get("on_failure", "rollback") == "rollback" else "report-only"


def _validation(d: DatastoreRow) -> dict[str, Any]:
    from convoy.observe.report import (
        outcome_columns,
        outcome_examples,
        outcome_observed,
        outcome_result,
    )

    validation: Mapping[str, Any] = d.validation or {}
    outcomes = []
    for o in validation.get("outcomes") or ():
        result = outcome_result(o)
        count = o.get("unexpected_count")
        outcomes.append(
            {
                "suite": o.get("suite", ""),
                "expectation": o.get("expectation_type", ""),
                "columns": outcome_columns(o),
                "css": _outcome_css(o, result),
                "result": result,
                "observed": outcome_observed(o),
                "unexpected": "-" if count is None else f"{int(count):,}",
                "examples": outcome_examples(o),
                "on_failure": o.get("on_failure", "rollback"),
            }
        )
    docs = validation.get("data_docs")
    href = ""
    if docs:
        href = docs if str(docs).startswith(("file:", "http:", "https:")) else _file_uri(str(docs))
    return {"name": d.name, "outcomes": outcomes, "data_docs": docs or "", "data_docs_href": href}


def _file_uri(path: str) -> str:
    pure = PurePosixPath(path)
    return pure.as_uri() if pure.is_absolute() else path


def _timings(timings: Mapping[str, float]) -> Sequence[Mapping[str, str]]:
    if not timings:
        return []
    longest = max(timings.values()) or 1.0
    return [
        {
            "step": step,
            "seconds": f"{seconds:.1f}",
            "width": f"{max(0.0, seconds) / longest * 100:.1f}",
        }
        for step, seconds in timings.items()
    ]
