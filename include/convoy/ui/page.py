"""Server-rendered HTML of the "Upgrades" page; no script.

The markup is the template ``convoy/templates/upgrades.html.j2`` (CSS in
``upgrades.css``). This module only turns policies and runs into display
values; the template escapes and redacts every one of them
(:mod:`convoy.templating`), and the finished page is redacted once more.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from convoy.observe.progress import format_duration
from convoy.redaction import redact
from convoy.templating import render
from convoy.ui.drift import DriftRecord, drift_view
from convoy.ui.policies import PolicyView
from convoy.ui.runs import RunView

TEMPLATE = "upgrades.html.j2"

#: The badge colour (a state class) of each approval status.
_APPROVAL_BADGE = {
    "awaiting approval": "up_for_retry",
    "approved": "success",
    "not approved": "failed",
}


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _plan(policy: PolicyView) -> dict[str, Any]:
    """The plan as a flow of steps: waves, with the datastore phases between them."""
    plan = policy.plan or {}
    phases: list[Mapping[str, Any]] = list(plan.get("datastore_phases", []))
    steps: list[dict[str, Any]] = []

    def datastores_at(position: Any) -> None:
        for ph in phases:
            if ph.get("position") == position:
                steps.append(
                    {
                        "kind": "datastore",
                        "datastore": ph.get("datastore"),
                        "type": ph.get("type"),
                        "stages": ", ".join(str(s.get("stage")) for s in ph.get("steps", [])),
                    }
                )

    datastores_at("before-rollout")
    for wave in plan.get("waves", []):
        steps.append(
            {
                "kind": "wave",
                "index": wave.get("index"),
                "services": [str(s.get("service")) for s in wave.get("steps", [])],
            }
        )
        datastores_at(wave.get("index"))
    return {
        "steps": steps,
        "max_parallel": plan.get("max_parallel"),
        "namespace": plan.get("namespace"),
        "rollback": "automatic" if plan.get("rollback_automatic") else "on demand",
        "digest": str(plan.get("digest", ""))[:12],
    }


def _diagnostics(policy: PolicyView) -> list[dict[str, str]]:
    items = []
    for d in (*policy.errors, *policy.warnings):
        field = f"{d.path}: " if d.path else ""
        prefix = "warning: " if d.severity != "error" else ""
        items.append({"severity": d.severity, "text": f"{d.location}: {prefix}{field}{d.message}"})
    return items


def _progress(run: RunView) -> list[dict[str, str]]:
    if not run.running or run.overall is None:
        return []
    return [
        {"label": p.label, "text": p.text, "percent": f"{p.percent or 0.0:.1f}"}
        for p in (run.overall, *run.task_progress)
    ]


def _run(run: RunView, now: dt.datetime, airflow_root: str) -> dict[str, Any]:
    badges: list[tuple[str, str]] = []
    if run.approval:
        badges.append((_APPROVAL_BADGE[run.approval], run.approval))
    if run.rollback and run.rollback not in ("none", "skipped"):
        badges.append((run.rollback, f"rollback {run.rollback}"))
    duration = run.duration_seconds(now)
    return {
        "url": f"{airflow_root}dags/{quote(run.dag_id, safe='')}/runs/{quote(run.run_id, safe='')}",
        "run_id": run.run_id,
        "run_type": run.run_type,
        "state": run.state,
        "badges": badges,
        "progress": _progress(run),
        "started": _when(run.start),
        "duration": format_duration(duration) if duration is not None else "-",
        "services": list(run.services),
        "datastores": list(run.datastores),
        "analyses": list(run.analyses),
        "report_url": run.report_url or "",
    }


def _policy(
    policy: PolicyView, runs: Sequence[RunView], now: dt.datetime, airflow_root: str
) -> dict[str, Any]:
    n_err = len(policy.errors)
    counts = f" · {n_err} error{'s' if n_err != 1 else ''}" if n_err else ""
    meta = " · ".join(
        x
        for x in (
            policy.file,
            policy.description,
            f"owner {policy.owner}" if policy.owner else "",
            f"schedule {policy.schedule}" if policy.schedule else "manual",
        )
        if x
    )
    return {
        "name": policy.dag_id or policy.file,
        "dag_url": f"{airflow_root}dags/{quote(policy.dag_id, safe='')}" if policy.dag_id else "",
        "valid": policy.valid,
        "meta": meta + counts,
        "diagnostics": _diagnostics(policy),
        "plan": _plan(policy) if policy.valid else None,
        "runs": [_run(r, now, airflow_root) for r in runs],
    }


def render_page(
    policies: Sequence[PolicyView],
    runs: Mapping[str, Sequence[RunView]],
    *,
    now: dt.datetime,
    airflow_root: str = "/",
    runs_error: str | None = None,
    refresh_seconds: int = 15,
    drift: Mapping[str, DriftRecord] | None = None,
) -> str:
    """The whole page. Auto-refreshes while a run is in progress.

    ``drift``: the latest drift check of each policy (:mod:`convoy.ui.drift`).
    """
    root = airflow_root if airflow_root.endswith("/") else airflow_root + "/"
    invalid = sum(1 for p in policies if not p.valid)
    running = any(r.running for rs in runs.values() for r in rs)
    summary = (
        f"{len(policies)} polic{'y' if len(policies) == 1 else 'ies'}, {invalid} invalid"
        f"{' · a run is in progress (page refreshes)' if running else ''}"
        f" · {_when(now)}"
    )
    return redact(
        render(
            TEMPLATE,
            refresh_seconds=int(refresh_seconds) if running else 0,
            summary=summary,
            runs_error=runs_error or "",
            policies=[
                {
                    **_policy(p, runs.get(p.dag_id or "", ()), now, root),
                    "drift": drift_view(p.dag_id, (drift or {}).get(p.dag_id), root)
                    if p.dag_id
                    else None,
                }
                for p in policies
            ],
        )
    )
