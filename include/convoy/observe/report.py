"""The run report: what a run changed, what was reverted, and how it ended.

``build_report(...)`` gathers the facts the DAG's ``report`` task collects from
XCom; :func:`render_markdown` and :func:`render_html` (self-contained, every
value escaped and redacted by :mod:`convoy.redaction`) render them;
:func:`write_report` stores both, plus ``report.json``, under
``<reports_dir>/<policy>/<run id>/``; and
:func:`find_report` finds them again for ``convoy report RUN_ID``.

The reports directory is ``$CONVOY_REPORTS_DIR``, else
``$AIRFLOW_HOME/convoy-reports`` (see docs/report.md). No Airflow import.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from convoy.observe import report_analysis
from convoy.redaction import redact, redact_data

REPORT_FILES = ("report.md", "report.html", "report.json")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ServiceRow:
    """One service of the policy: images before and after, readiness, whether it was reverted."""

    name: str
    old_images: Mapping[str, str] = field(default_factory=dict)
    new_images: Mapping[str, str] = field(default_factory=dict)
    status: str = "pending"
    ready_seconds: float | None = None
    reverted: bool = False
    #: ``AnalysisRun.to_dict()`` of every analysis of the service (convoy.rollout.analysis).
    analysis: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class DatastoreRow:
    """One datastore: migrations, rows transformed, validation (``ValidationReport.to_dict()``)."""

    name: str
    migrations_applied: tuple[str, ...] = ()
    migrations_reverted: tuple[str, ...] = ()
    rows_transformed: int = 0
    validation: Mapping[str, Any] | None = None
    reverted: bool = False
    #: Rows set back to their before-image by the revert.
    rows_restored: int = 0
    #: Rows the application changed after convoy did: kept, listed in ``conflicts``.
    rows_conflicting: int = 0
    #: Rows the application deleted after convoy changed them.
    rows_gone: int = 0
    conflicts: tuple[str, ...] = ()
    #: What the revert refused to do (it would discard application writes), and why.
    refused: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunReport:
    policy_name: str
    digest: str
    run_id: str
    triggered_by: str
    dry_run: bool
    started: dt.datetime | None
    finished: dt.datetime | None
    final_state: str
    services: tuple[ServiceRow, ...] = ()
    datastores: tuple[DatastoreRow, ...] = ()
    rollback: tuple[str, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    #: What the run executed: the plan frozen at preflight, and the policy files
    #: changed since then (which had no effect on it).
    plan: str = ""

    @property
    def duration_seconds(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return (self.finished - self.started).total_seconds()

    @property
    def validation_failures(self) -> int:
        return sum(
            1
            for ds in self.datastores
            for o in (ds.validation or {}).get("outcomes", ())
            if not o.get("success")
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["started"] = _iso(self.started)
        data["finished"] = _iso(self.finished)
        data["services"] = [
            {**asdict(s), "old_images": dict(s.old_images), "new_images": dict(s.new_images)}
            for s in self.services
        ]
        data["datastores"] = [
            {**asdict(d), "validation": None if d.validation is None else dict(d.validation)}
            for d in self.datastores
        ]
        data["timings"] = dict(self.timings)
        return json.loads(json.dumps(data, default=str))  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunReport:
        fields: dict[str, Any] = {k: data.get(k) for k in _BUILD_FIELDS}
        return build_report(**fields)


_BUILD_FIELDS = (
    "policy_name",
    "digest",
    "run_id",
    "triggered_by",
    "dry_run",
    "started",
    "finished",
    "final_state",
    "services",
    "datastores",
    "rollback",
    "timings",
    "plan",
)


def build_report(
    *,
    policy_name: str,
    digest: str,
    run_id: str,
    triggered_by: str | None,
    dry_run: bool,
    started: dt.datetime | str | None,
    finished: dt.datetime | str | None,
    final_state: str,
    services: Sequence[ServiceRow | Mapping[str, Any]] | None = None,
    datastores: Sequence[DatastoreRow | Mapping[str, Any]] | None = None,
    rollback: Sequence[str] | None = None,
    timings: Mapping[str, float] | None = None,
    plan: str | None = None,
) -> RunReport:
    """A report from the run's facts; rows may be dataclasses or their dicts (from XCom)."""
    return RunReport(
        policy_name=str(policy_name),
        digest=str(digest or ""),
        run_id=str(run_id),
        triggered_by=str(triggered_by or "unknown"),
        dry_run=bool(dry_run),
        started=_time(started),
        finished=_time(finished),
        final_state=str(final_state),
        services=tuple(_service(s) for s in services or ()),
        datastores=tuple(_datastore(d) for d in datastores or ()),
        rollback=tuple(str(r) for r in rollback or ()),
        timings={str(k): float(v) for k, v in (timings or {}).items()},
        plan=str(plan or ""),
    )


def _service(row: ServiceRow | Mapping[str, Any]) -> ServiceRow:
    if isinstance(row, ServiceRow):
        return row
    ready = row.get("ready_seconds")
    return ServiceRow(
        name=str(row["name"]),
        old_images={str(k): str(v) for k, v in (row.get("old_images") or {}).items()},
        new_images={str(k): str(v) for k, v in (row.get("new_images") or {}).items()},
        status=str(row.get("status") or "pending"),
        ready_seconds=None if ready is None else float(ready),
        reverted=bool(row.get("reverted", False)),
        analysis=tuple(dict(a) for a in row.get("analysis") or () if isinstance(a, Mapping)),
    )


def _datastore(row: DatastoreRow | Mapping[str, Any]) -> DatastoreRow:
    if isinstance(row, DatastoreRow):
        to_dict = getattr(row.validation, "to_dict", None)
        if callable(to_dict):
            return dataclasses.replace(row, validation=to_dict())
        return row
    validation = row.get("validation")
    name = str(row["name"])
    applied = tuple(str(m) for m in row.get("migrations_applied") or ())
    reverted_m = tuple(str(m) for m in row.get("migrations_reverted") or ())
    rows, reverted = int(row.get("rows_transformed") or 0), bool(row.get("reverted", False))
    to_dict = getattr(validation, "to_dict", None)
    if callable(to_dict):  # a ValidationReport
        validation = to_dict()
    return DatastoreRow(
        name=name,
        migrations_applied=tuple(applied),
        migrations_reverted=tuple(reverted_m),
        rows_transformed=int(rows),
        validation=None if validation is None else dict(validation),
        reverted=reverted,
        rows_restored=int(row.get("rows_restored") or 0),
        rows_conflicting=int(row.get("rows_conflicting") or 0),
        rows_gone=int(row.get("rows_gone") or 0),
        conflicts=tuple(str(c) for c in row.get("conflicts") or ()),
        refused=tuple(str(r) for r in row.get("refused") or ()),
    )


def _time(value: dt.datetime | str | None) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# -- Markdown -------------------------------------------------------------------------------


def md_text(value: object) -> str:
    """Plain text safe in a Markdown table cell: HTML inert, no formatting, no cell breaks."""
    text = " ".join(redact(str(value)).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]|#!~])", r"\\\1", text)


def md_code(value: object) -> str:
    """A code span (identifiers, images): literal in every renderer, pipes escaped for tables."""
    text = " ".join(redact(str(value)).split()).replace("`", "'").replace("|", "\\|")
    return f"`{text}`" if text else ""


def _images(images: Mapping[str, str]) -> str:
    return "<br>".join(f"{md_code(c)}: {md_code(i)}" for c, i in images.items()) or "-"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def state_label(report: RunReport) -> str:
    label = report.final_state.upper()
    if report.dry_run:
        label += " (dry run)"
    if report.rollback:
        label += " - rolled back"
    return label


def outcome_result(outcome: Mapping[str, Any]) -> str:
    if outcome.get("success"):
        return "passed"
    if outcome.get("error"):
        return "error"
    return (
        "failed" if outcome.get("on_failure", "rollback") == "rollback" else "failed (report-only)"
    )


def outcome_columns(outcome: Mapping[str, Any]) -> str:
    kwargs = outcome.get("kwargs") or {}
    cols = [kwargs.get(k) for k in ("column", "column_A", "column_B") if kwargs.get(k)]
    cols += list(kwargs.get("column_list") or ())
    return ", ".join(str(c) for c in cols)


def outcome_examples(outcome: Mapping[str, Any]) -> str:
    if outcome.get("redacted"):
        return "(redacted)"
    return ", ".join(json.dumps(v, default=str) for v in outcome.get("unexpected_examples") or ())


def outcome_observed(outcome: Mapping[str, Any]) -> str:
    if outcome.get("error"):
        return str(outcome["error"])
    value = outcome.get("observed_value")
    if value is None and outcome.get("unexpected_count") is not None:
        total = outcome.get("element_count")
        return f"{outcome['unexpected_count']} unexpected" + (f" of {total}" if total else "")
    return "" if value is None else json.dumps(value, default=str)


def render_markdown(report: RunReport) -> str:
    lines = [
        f"# convoy run report: {md_text(report.policy_name)}",
        "",
        f"**Final state: {md_text(state_label(report))}**",
        "",
        "| | |",
        "|---|---|",
        f"| Policy | {md_code(report.policy_name)} |",
        f"| Digest | {md_code(report.digest)} |",
        f"| Run | {md_code(report.run_id)} |",
        f"| Triggered by | {md_text(report.triggered_by)} |",
        f"| Dry run | {'yes' if report.dry_run else 'no'} |",
        f"| Started | {_iso(report.started) or '-'} |",
        f"| Finished | {_iso(report.finished) or '-'} |",
        f"| Duration | {_seconds(report.duration_seconds)} s |",
        *([f"| Plan | {md_text(report.plan)} |"] if report.plan else []),
        "",
        "## Services",
        "",
    ]
    if report.services:
        lines += [
            "| Service | Old image | New image | Status | Ready (s) | Reverted |",
            "|---|---|---|---|---|---|",
        ]
        for s in report.services:
            lines.append(
                f"| {md_code(s.name)} | {_images(s.old_images)} | {_images(s.new_images)} "
                f"| {md_text(s.status)} | {_seconds(s.ready_seconds)} | {_yes(s.reverted)} |"
            )
    else:
        lines.append("No services.")
    lines += report_analysis.markdown(report.services)
    lines += ["", "## Datastores", ""]
    if report.datastores:
        lines += [
            "| Datastore | Migrations applied | Migrations reverted | Rows transformed "
            "| Validation | Reverted | Rows restored | Conflicts (kept) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for d in report.datastores:
            lines.append(
                f"| {md_code(d.name)} | {_list(d.migrations_applied)} "
                f"| {_list(d.migrations_reverted)} | {d.rows_transformed} "
                f"| {md_text(_validation_summary(d.validation))} | {_yes(d.reverted)} "
                f"| {d.rows_restored} | {d.rows_conflicting} |"
            )
        lines += _md_validation(report.datastores)
        lines += _md_revert_details(report.datastores)
    else:
        lines.append("No datastores.")
    lines += ["", "## Rollback", ""]
    lines += [f"1. {md_text(step)}" for step in report.rollback] or ["Nothing was rolled back."]
    lines += ["", "## Timings", ""]
    if report.timings:
        lines += ["| Step | Seconds |", "|---|---|"]
        lines += [f"| {md_code(k)} | {v:.1f} |" for k, v in report.timings.items()]
    else:
        lines.append("No timings recorded.")
    return redact("\n".join(lines) + "\n")


def revert_details(d: DatastoreRow) -> list[str]:
    """Plain lines on what a datastore's revert kept and refused (Markdown and HTML)."""
    lines: list[str] = []
    if d.rows_restored or d.rows_conflicting or d.rows_gone:
        lines.append(
            f"{d.rows_restored} rows set back to their before-image; "
            f"{d.rows_conflicting} changed by the application after convoy did (kept as the "
            f"application wrote them); {d.rows_gone} deleted by the application (nothing to undo)"
        )
    if d.conflicts:
        more = d.rows_conflicting - len(d.conflicts)
        lines.append(
            "conflicts: "
            + ", ".join(d.conflicts)
            + (f" and {more} more (all in the undo table)" if more > 0 else "")
        )
    lines += [f"NOT REVERTED: {r}" for r in d.refused]
    return lines


def _md_revert_details(datastores: Sequence[DatastoreRow]) -> list[str]:
    out: list[str] = []
    for d in datastores:
        lines = revert_details(d)
        if lines:
            out += ["", f"### Revert of {md_code(d.name)}", ""]
            out += [f"- {md_text(line)}" for line in lines]
    return out


def _md_validation(datastores: Sequence[DatastoreRow]) -> list[str]:
    lines: list[str] = []
    for d in datastores:
        outcomes = (d.validation or {}).get("outcomes") or ()
        if not outcomes:
            continue
        lines += [
            "",
            f"### Validation of {md_text(d.name)}",
            "",
            "| Suite | Expectation | Column(s) | Result | Observed | Examples | On failure |",
            "|---|---|---|---|---|---|---|",
        ]
        for o in outcomes:
            lines.append(
                f"| {md_code(o.get('suite', ''))} | {md_code(o.get('expectation_type', ''))} "
                f"| {md_code(outcome_columns(o))} | {md_text(outcome_result(o))} "
                f"| {md_text(outcome_observed(o))} | {md_text(outcome_examples(o))} "
                f"| {md_text(o.get('on_failure', 'rollback'))} |"
            )
        docs = (d.validation or {}).get("data_docs")
        if docs:
            lines += ["", f"Data Docs: {md_code(docs)}"]
    return lines


def _validation_summary(validation: Mapping[str, Any] | None) -> str:
    if not validation:
        return "not run"
    outcomes = validation.get("outcomes") or ()
    failed = sum(1 for o in outcomes if not o.get("success"))
    if not failed:
        return f"{len(outcomes)} passed"
    blocking = sum(
        1
        for o in outcomes
        if not o.get("success") and o.get("on_failure", "rollback") == "rollback"
    )
    return f"{failed} of {len(outcomes)} failed ({blocking} blocking)"


def _list(items: Sequence[str]) -> str:
    return "<br>".join(md_code(i) for i in items) or "-"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def render_html(report: RunReport) -> str:
    from convoy.observe.report_html import render_html as _render

    return redact(_render(report))


# -- files ----------------------------------------------------------------------------------


def default_reports_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$CONVOY_REPORTS_DIR``, else ``$AIRFLOW_HOME/convoy-reports`` (``~/airflow`` default)."""
    env = os.environ if environ is None else environ
    if env.get("CONVOY_REPORTS_DIR"):
        return Path(env["CONVOY_REPORTS_DIR"])
    home = env.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
    return Path(home) / "convoy-reports"


def safe_component(value: str) -> str:
    """A directory name for a run id or policy: kept as is when safe, else cleaned + hashed.

    ``manual__2026-01-01T00:00:00+00:00`` becomes
    ``manual__2026-01-01T00_00_00_00_00-<8 hex>``; the hash keeps distinct ids distinct.
    """
    cleaned = _SAFE.sub("_", value).strip("._") or "run"
    if cleaned == value and len(value) <= 120:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"{cleaned[:110]}-{digest}"


def report_dir(reports_dir: Path, policy_name: str, run_id: str) -> Path:
    return Path(reports_dir) / safe_component(policy_name) / safe_component(run_id)


def write_report(report: RunReport, reports_dir: Path) -> tuple[Path, Path]:
    """Write report.md, report.html and report.json atomically; return the first two paths."""
    target = report_dir(reports_dir, report.policy_name, report.run_id)
    target.mkdir(parents=True, exist_ok=True)
    contents = {
        "report.md": render_markdown(report),
        "report.html": render_html(report),
        "report.json": json.dumps(redact_data(report.to_dict()), indent=2, sort_keys=True) + "\n",
    }
    for name, text in contents.items():
        _atomic_write(target / name, text)
    return target / "report.md", target / "report.html"


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def find_report(
    reports_dir: Path, run_id: str, *, policy: str | None = None, name: str = "report.md"
) -> Path:
    """The stored report of a run (``convoy report RUN_ID``).

    Raises FileNotFoundError when there is none, and LookupError when several
    policies have a run with this id (pass ``policy``).
    """
    if name not in REPORT_FILES:
        raise ValueError(f"name must be one of {', '.join(REPORT_FILES)}")
    run = safe_component(run_id)
    base = Path(reports_dir)
    if policy is not None:
        candidates = [base / safe_component(policy) / run / name]
    else:
        candidates = sorted(base.glob(f"*/{glob_escape(run)}/{name}"))
    found = [p for p in candidates if p.is_file()]
    if not found:
        raise FileNotFoundError(f"no report for run {run_id!r} under {base}")
    if len(found) > 1:
        policies = ", ".join(p.parent.parent.name for p in found)
        raise LookupError(f"run id {run_id!r} exists for several policies ({policies}): pick one")
    return found[0]


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
