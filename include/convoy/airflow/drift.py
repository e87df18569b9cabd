"""The scheduled drift check of a policy (``driftCheck: {schedule: ...}``).

A small DAG ``<name>__drift`` beside the policy's DAG, on its own schedule,
whose only task ``report`` runs what ``convoy status`` runs (read-only: one
LIST per workload kind and namespace, read-only datastore sessions) and keeps
the result as its XCom ``status`` (the ``--json`` document, redacted), which
the Upgrades page shows as the policy's drift column.

On ``drift`` or ``degraded`` it sends the policy's ``alerts.onFailure``
alerts (event ``drift``; what drifted is listed as what is left for a human)
and the task fails, so the run shows red in Airflow too. ``pending`` (the
policy is ahead of the live state, e.g. before its first run) and
``unknown`` (something could not be read) only show on the page.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException

from convoy.policy import LoadedPolicy
from convoy.redaction import get_logger, redact, redact_data

log = get_logger(__name__)

#: ``dag_id`` of the drift check: ``<metadata.name>__drift``.
SUFFIX = "__drift"
TASK_ID = "report"
#: XCom key of the status document (``convoy status --json``).
STATUS_KEY = "status"
#: Verdicts that alert and fail the check.
ALERT_VERDICTS = frozenset({"drift", "degraded"})


def drift_dag_id(policy_name: str) -> str:
    return policy_name + SUFFIX


def policy_name(dag_id: str) -> str | None:
    """The policy of a drift check's ``dag_id`` (``None``: not a drift check)."""
    return dag_id[: -len(SUFFIX)] if dag_id.endswith(SUFFIX) and len(dag_id) > len(SUFFIX) else None


def findings(report: dict[str, Any]) -> list[str]:
    """One line per service or datastore whose verdict alerts."""
    lines = []
    for kind in ("services", "datastores"):
        for item in report.get(kind, []):
            if item.get("verdict") in ALERT_VERDICTS:
                reasons = "; ".join(item.get("reasons") or [])
                lines.append(
                    f"{item['name']}: {item['verdict']}" + (f" ({reasons})" if reasons else "")
                )
    return lines


def check(*, policy_path: str, **context: Any) -> dict[str, Any]:
    """The drift check task: status, XCom, alerts on drift or degraded."""
    from convoy.airflow import alerts
    from convoy.operate.cli import airflow_sources
    from convoy.operate.status import collect
    from convoy.policy.loader import load_policy

    # not a run of the upgrade: the live state is compared with the policy as it
    # is now (no frozen plan exists or applies), as `convoy status` does
    loaded = load_policy(policy_path)
    policy = loaded.policy
    name = policy.metadata.name
    report: dict[str, Any] = redact_data(collect(loaded, airflow_sources()).to_dict())
    ti = context["ti"]
    ti.xcom_push(key=STATUS_KEY, value=report)
    verdict = str(report["verdict"])
    log.info("%s: %s", name, verdict)
    if verdict not in ALERT_VERDICTS:
        return {"verdict": verdict}
    lines = findings(report)
    notify = alerts.lazy_notifiers(policy.alerts.on_failure, policy=name, event="drift")
    if notify is not None:
        notify({**context, "convoy_left_behind": lines, "convoy_task_states": {}})
    raise AirflowFailException(redact(f"{name}: {verdict}: " + "; ".join(lines)))


def build_drift_dag(loaded: LoadedPolicy) -> DAG:
    """The drift check DAG of a policy with ``driftCheck`` (see the module docstring)."""
    policy = loaded.policy
    assert policy.drift_check is not None
    name = policy.metadata.name
    schedule = policy.drift_check.schedule
    with DAG(
        dag_id=drift_dag_id(name),
        description=f"Drift check of {name}: convoy status, {schedule}",
        doc_md=(
            f"# Drift check of `{name}`\n\nRuns `convoy status` ({schedule}): live images "
            "and datastore versions against the policy. Alerts `alerts.onFailure` and fails "
            "on drift or degraded; the result is on the Upgrades page."
        ),
        schedule=schedule,
        start_date=dt.datetime.combine(policy.start_date, dt.time(), tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=sorted({"convoy", "convoy-drift", *(redact(t) for t in policy.metadata.tags)}),
    ) as dag:
        PythonOperator(
            task_id=TASK_ID,
            python_callable=check,
            op_kwargs={"policy_path": str(loaded.path.resolve())},
            retries=0,
        )
    return dag
