"""Whole-policy semantic checks: names, images, schedule, the service graph.

Run on the raw YAML data (not the model) so that a policy with schema errors
still gets every other problem reported in the same pass.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from croniter import croniter

from convoy.policy import names
from convoy.policy.alerts import alert_target_errors
from convoy.policy.analysis_checks import check_analysis
from convoy.policy.datastore_checks import check_conn_id, check_datastores
from convoy.policy.errors import Diagnostic
from convoy.policy.graph import find_cycles
from convoy.policy.migrations import MigrationFile
from convoy.policy.rawdata import flag, mapping, mappings, strings
from convoy.policy.reporter import Reporter
from convoy.policy.source import Document, FieldPath

AIRFLOW_PRESETS = (
    "@once",
    "@continuous",
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@quarterly",
    "@yearly",
    "@annually",
)


@dataclass(frozen=True)
class CheckResult:
    diagnostics: list[Diagnostic]
    migrations: Mapping[str, tuple[MigrationFile, ...]] = field(default_factory=dict)


def check_policy(
    doc: Document,
    file: str,
    base_dir: Path,
    *,
    known_expectations: Collection[str] | None = None,
) -> CheckResult:
    """Every semantic problem of the policy in ``doc``; paths resolve against ``base_dir``."""
    reporter = Reporter(file, doc)
    data = mapping(doc.data)
    _check_metadata(reporter, data)
    _check_schedule(reporter, data.get("schedule"))
    _check_schedule(
        reporter, mapping(data.get("driftCheck")).get("schedule"), ("driftCheck", "schedule")
    )
    _check_kubernetes(reporter, mapping(data.get("kubernetes")))
    _check_alerts(reporter, mapping(data.get("alerts")))
    _check_approval(reporter, data.get("approval"))
    services = _check_services(reporter, data.get("services"))
    check_analysis(reporter, data)
    migrations = check_datastores(
        reporter, data, set(services), base_dir, known_expectations=known_expectations
    )
    return CheckResult(reporter.diagnostics, migrations)


def _name(
    reporter: Reporter, path: FieldPath, value: Any, what: str, *, subdomain: bool = False
) -> None:
    if isinstance(value, str):
        check = names.dns_subdomain if subdomain else names.dns_label
        message = check(value, what)
        if message:
            reporter.error(path, message)


def _check_metadata(reporter: Reporter, data: dict[str, Any]) -> None:
    name = mapping(data.get("metadata")).get("name")
    # A DNS-1123 label is also a valid Airflow dag_id, so one rule covers both.
    _name(reporter, ("metadata", "name"), name, "policy name")


def _check_schedule(reporter: Reporter, schedule: Any, path: FieldPath = ("schedule",)) -> None:
    if not isinstance(schedule, str):
        return
    presets = ", ".join(AIRFLOW_PRESETS)
    # ``schedule: null`` means manual runs only; a drift check must have a schedule.
    if path == ("schedule",):
        use_preset = f"use a 5-field cron expression, one of {presets}, or null"
        use_cron = "use cron, an Airflow preset such as @daily, or null"
    else:
        use_preset = f"use a 5-field cron expression or one of {presets}"
        use_cron = "use cron or an Airflow preset such as @daily"
    if schedule.startswith("@"):
        if schedule not in AIRFLOW_PRESETS:
            reporter.error(
                path,
                f"unknown schedule preset '{schedule}'{names.suggest(schedule, AIRFLOW_PRESETS)}; "
                + use_preset,
            )
        return
    if len(schedule.split()) != 5 or not croniter.is_valid(schedule):
        reporter.error(
            path,
            f"'{schedule}' is not a valid 5-field cron expression (minute hour day-of-month "
            f"month day-of-week); {use_cron}",
        )


def _check_kubernetes(reporter: Reporter, k8s: dict[str, Any]) -> None:
    base = ("kubernetes",)
    _name(reporter, (*base, "namespace"), k8s.get("namespace"), "namespace")
    check_conn_id(reporter, (*base, "connId"), k8s.get("connId"))
    # Kubernetes validates service account names as subdomains, not labels.
    _name(
        reporter,
        (*base, "serviceAccount"),
        k8s.get("serviceAccount"),
        "service account",
        subdomain=True,
    )
    _image(reporter, (*base, "runnerImage"), k8s.get("runnerImage"))
    for key, value in mapping(k8s.get("resources")).items():
        if isinstance(value, str):
            message = names.quantity(value, str(key))
            if message:
                reporter.error((*base, "resources", key), message)


ALERT_KEYS = ("onFailure", "onSuccess", "onRollback")


def _check_alerts(reporter: Reporter, alerts: dict[str, Any]) -> None:
    """Each alert target must parse (``convoy.policy.alerts``); non-strings are schema errors."""
    for key in ALERT_KEYS:
        entries = alerts.get(key)
        if not isinstance(entries, list):
            continue
        indexed = [(i, e) for i, e in enumerate(entries) if isinstance(e, str)]
        for j, message in alert_target_errors([e for _, e in indexed]):
            reporter.error(("alerts", key, indexed[j][0]), message)


def _check_approval(reporter: Reporter, approval: Any) -> None:
    """Who may approve: required approvals need named approvers; names are plain user ids."""
    if not isinstance(approval, dict):
        return
    base = ("approval",)
    required = flag(approval.get("required"), False)
    raw = approval.get("approvers")
    listed = list(strings((*base, "approvers"), raw))
    seen: dict[str, int] = {}
    for path, name in listed:
        if not name.strip():
            reporter.error(path, "approver must not be empty; use an Airflow user id")
        elif name != name.strip():
            reporter.error(path, f"approver '{name}' has leading or trailing spaces")
        elif name in seen:
            reporter.error(path, f"duplicate approver '{name}' (first at approvers[{seen[name]}])")
        else:
            seen[name] = int(path[-1])
    if required and raw is None:
        reporter.at(
            reporter.doc.anchor(base),
            base,
            "missing field 'approvers': a required approval needs the Airflow user ids "
            "who may approve (approvers: [alice]); or set required: false",
        )
    elif required and isinstance(raw, list) and not raw:
        reporter.error(
            (*base, "approvers"),
            "must not be empty when required is true; list the Airflow user ids who may approve",
        )
    elif not required and listed:
        reporter.warning(
            (*base, "approvers"),
            "approvers are ignored while approval.required is false; "
            "set required: true to wait for them",
        )


def _image(reporter: Reporter, path: FieldPath, value: Any) -> None:
    if not isinstance(value, str):
        return
    problem = names.image_reference(value)
    if problem is None:
        return
    if problem.severity == "warning":
        reporter.warning(path, problem.message)
    else:
        reporter.error(path, problem.message)


def _check_services(reporter: Reporter, services: Any) -> dict[str, FieldPath]:
    """Check each service and the dependsOn graph; returns service name -> path."""
    known: dict[str, FieldPath] = {}
    workloads: dict[tuple[str, str], str] = {}
    for path, svc in mappings(("services",), services):
        name = svc.get("name")
        _name(reporter, (*path, "name"), name, "service name")
        if isinstance(name, str):
            if name in known:
                first = reporter.doc.value_mark(known[name]).line
                reporter.error(
                    (*path, "name"), f"duplicate service name '{name}' (first at line {first})"
                )
            else:
                known[name] = path
        workload = mapping(svc.get("workload"))
        kind, wl_name = workload.get("kind"), workload.get("name")
        _name(reporter, (*path, "workload", "name"), wl_name, "workload name", subdomain=True)
        if isinstance(kind, str) and isinstance(wl_name, str):
            owner = workloads.setdefault((kind, wl_name), str(name))
            if owner != str(name):
                reporter.error(
                    (*path, "workload"),
                    f"{kind} '{wl_name}' is already rolled out by service '{owner}'; "
                    "each workload belongs to one service",
                )
        for container, image in mapping(svc.get("containers")).items():
            _name(reporter, (*path, "containers", container), container, "container name")
            _image(reporter, (*path, "containers", container), image)
    _check_dependencies(reporter, services, known)
    return known


def _check_dependencies(reporter: Reporter, services: Any, known: dict[str, FieldPath]) -> None:
    graph: dict[str, list[tuple[str, FieldPath]]] = {}
    for path, svc in mappings(("services",), services):
        name = svc.get("name")
        for dep_path, dep in strings((*path, "dependsOn"), svc.get("dependsOn")):
            if dep == name:
                reporter.error(dep_path, f"service '{dep}' depends on itself")
            elif dep not in known:
                reporter.error(dep_path, f"unknown service '{dep}'{names.suggest(dep, known)}")
            elif isinstance(name, str) and known.get(name) == path:
                graph.setdefault(name, []).append((dep, dep_path))
    for cycle, edge_path in find_cycles(graph, list(known)):
        reporter.error(edge_path, f"dependency cycle: {' -> '.join(cycle)}")
