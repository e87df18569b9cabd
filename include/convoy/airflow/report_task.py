"""The ``report`` task: run summary, run report, rollback metrics and alerts.

It gathers task states and XCom; the rows and lines of the report are
assembled by :mod:`convoy.observe.assembly` (pure) and rendered by
:mod:`convoy.observe.report`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from convoy.airflow import config
from convoy.airflow.gates import FAILED_STATES, rollback_open, run_states, states_of
from convoy.airflow.local_rollout import (
    BEFORE_KEY,
    images_to_restore,
    kube_api_client,
    runner_target,
    step_dict,
)
from convoy.airflow.preflight import manual_rollback_of, run_record
from convoy.airflow.runtime import policy_name
from convoy.observe import assembly, metrics
from convoy.plan.record import drift
from convoy.redaction import MASK, get_logger

log = get_logger(__name__)


#: XCom key of the report task: what a failed rollback left behind (alerts read it).
LEFT_BEHIND_KEY = "left_behind"


def report(
    *,
    steps: list[str],
    reverts: list[str],
    mapped: list[str] | None = None,
    services: Mapping[str, str] | None = None,
    datastores: Mapping[str, list[str]] | None = None,
    on_rollback: list[str] | None = None,
    on_failure: list[str] | None = None,
    targets: Mapping[str, Mapping[str, Any]] | None = None,
    conn_id: str = "kubernetes_default",
    in_cluster: bool = False,
    approval_task_id: str | None = None,
    datastore_names: list[str] | None = None,
    **context: Any,
) -> dict[str, Any]:
    """Run summary from XCom and task states, the Markdown/HTML run report, rollback metrics.

    First, the run's in-flight datastore work (transform triggers, write
    capture) ends: the run is over, whether it was reverted or not.

    When a revert ended failed, what is left in which state (and the commands to
    finish by hand) is logged at ERROR, sent to ``onRollback`` (else ``onFailure``)
    and listed in the run report.
    """
    completed: list[str] = []
    frozen_alerts: dict[str, tuple[str, ...]] | None = None
    try:
        frozen = run_record(context)
    except Exception:
        log.warning("no run record (preflight did not finish): reporting from the DAG's arguments")
    else:
        # What the run executed, not the DAG as parsed now.
        targets = {s.service: step_dict(s) for s in frozen.plan.steps}
        datastore_names = [ds.name for ds in frozen.datastores]
        frozen_alerts = frozen.alerts
    if datastore_names:
        from convoy.airflow import datastores as datastore_tasks

        completed = datastore_tasks.complete(datastores=datastore_names, **context)
    states = run_states(context)
    ti = context["ti"]
    expanded = set(mapped or ())
    summary: dict[str, Any] = {"steps": {}, "reverts": {}}
    if completed:
        summary["completed"] = completed
    summary["plan"] = plan_note(context)
    log.info("plan: %s", summary["plan"])
    if approval_task_id is not None:
        from convoy.airflow import approval

        summary["approval"] = approval.decision(context)
    for task_id in steps:
        result = _plain(ti.xcom_pull(task_ids=task_id, key=config.RESULT_KEY))
        found = states_of(states, task_id, mapped=task_id in expanded)
        state = found[0] if len(found) == 1 else ",".join(sorted({str(s) for s in found}))
        summary["steps"][task_id] = {"state": state, "result": result}
    for task_id in reverts:
        summary["reverts"][task_id] = {
            "state": states.get(task_id),
            "result": ti.xcom_pull(task_ids=task_id),
        }
    for task_id, entry in {**summary["steps"], **summary["reverts"]}.items():
        log.info("%-40s %s", task_id, entry["state"])
    rolled_back = rollback_open(context)
    left: list[str] = []
    if rolled_back:
        left = _left_behind(context, summary, services or {}, targets or {}, conn_id, in_cluster)
        summary["leftBehind"] = left
        if left:
            ti.xcom_push(key=LEFT_BEHIND_KEY, value=left)
        _rollback_done(
            context,
            summary,
            alert_entries(on_rollback or [], "on_rollback", frozen_alerts),
            alert_entries(on_failure or [], "on_failure", frozen_alerts),
            left,
        )
    try:
        md, html = write_run_report(
            context, states, summary, services or {}, datastores or {}, left
        )
    except Exception:
        log.exception("the run report could not be written")
    else:
        ti.xcom_push(key="report_md", value=str(md))
        ti.xcom_push(key="report_html", value=str(html))
        summary["reportMd"], summary["reportHtml"] = str(md), str(html)
        log.info("run report: %s (HTML: %s)", md, html)
    write_report_file(ti.dag_id, str(context["run_id"]), summary)
    return summary


def plan_note(context: Mapping[str, Any]) -> str:
    """What the run executed (the record frozen at preflight), what changed since; never raises."""
    from convoy.plan.record import contract_note

    try:
        frozen = run_record(context)
    except Exception:
        return "no run record: preflight did not finish, nothing was executed from a plan"
    try:
        return contract_note(frozen, drift(frozen))
    except Exception:
        log.warning("could not compare the policy files with the run record", exc_info=True)
        return contract_note(frozen, [])


def alert_entries(
    given: list[str], field: str, frozen: Mapping[str, Sequence[str]] | None
) -> list[str]:
    """Alert targets: redacted ones (tokens) from the run record (stored encrypted).

    The task's arguments hold them masked (Airflow stores and shows task
    arguments). Falls back to the entries without a secret when the record
    has no clear target (no record, or one stored without a Fernet key), so
    those alerts still go out.
    """
    if not any(MASK in entry for entry in given):
        return list(given)
    found = list((frozen or {}).get(field) or ())
    if found and not any(MASK in entry for entry in found):
        return found
    log.error(
        "alert targets with a secret in %s are not in the run record (no record, or no "
        "Fernet key to keep them encrypted); alerting the others only",
        field,
    )
    return [entry for entry in given if MASK not in entry]


def _left_behind(
    context: Mapping[str, Any],
    summary: Mapping[str, Any],
    services: Mapping[str, str],
    targets: Mapping[str, Mapping[str, Any]],
    conn_id: str,
    in_cluster: bool,
) -> list[str]:
    """Lines naming what each failed revert left in which state; never raises."""
    from convoy.airflow import leftover

    try:
        failed = {
            t.removeprefix(f"{config.ROLLBACK_GROUP}.")
            for t, e in summary["reverts"].items()
            if e.get("state") in FAILED_STATES
        }
        if not failed:
            return []
        ti = context["ti"]
        run_id = manual_rollback_of(context) or str(context["run_id"])
        images: list[leftover.ImageLeftover] = []
        data: list[leftover.DataLeftover] = []
        for task in sorted(failed):
            if task.startswith("revert_data_"):
                data.append(leftover.DataLeftover(task.removeprefix("revert_data_")))
        for service, step in targets.items():
            if config.revert_task_id(service) not in failed:
                continue
            previous = None
            if manual_rollback_of(context) is None and service in services:
                previous = images_to_restore(context, services[service], step["containers"])
            images.append(
                leftover.ImageLeftover(
                    service=service,
                    namespace=str(step["namespace"]),
                    kind=str(step["kind"]),
                    workload=str(step["workload"]),
                    current=_current_images(step, conn_id, in_cluster),
                    previous=previous,
                    only_if_run_id=manual_rollback_of(context),
                )
            )
        found = leftover.Leftovers(str(ti.dag_id), run_id, tuple(images), tuple(data))
        log.error("%s", leftover.left_behind_message(found))
        return leftover.left_behind_lines(found)
    except Exception:
        log.exception("ROLLBACK INCOMPLETE: could not list what is left behind")
        return ["the rollback did not finish; see the failed rollback tasks"]


def _current_images(
    step: Mapping[str, Any], conn_id: str, in_cluster: bool
) -> dict[str, str] | None:
    """The workload's images now (one GET), ``None`` when they cannot be read."""
    try:
        from convoy.rollout.runner import RolloutRunner

        runner = RolloutRunner(kube_api_client(conn_id, in_cluster), log=log)
        return {str(k): str(v) for k, v in runner.status(runner_target(step, {})).images.items()}
    except Exception:
        log.warning("could not read the images of %s", step.get("workload"), exc_info=True)
        return None


def _rollback_done(
    context: Mapping[str, Any],
    summary: Mapping[str, Any],
    on_rollback: list[str],
    on_failure: list[str] | None = None,
    left: list[str] | None = None,
) -> None:
    """``rollback`` succeeded/failed metric and the ``onRollback`` alerts; never raises.

    A rollback that left something behind alerts ``onRollback``, or ``onFailure``
    when there are no ``onRollback`` targets, naming what is left.
    """
    failed = any(e["state"] in FAILED_STATES for e in summary["reverts"].values())
    name = policy_name(context)
    metrics.rollback(name, "failed" if failed else "succeeded")
    targets = on_rollback or (list(on_failure or []) if left else [])
    if not targets:
        return
    try:
        from convoy.airflow.alerts import lazy_notifiers

        notify = lazy_notifiers(targets, policy=name, event="rollback")
        if notify is not None:
            notify({**context, "convoy_left_behind": list(left or [])})
    except Exception:
        log.exception("onRollback alerts not sent")


def _plain(value: Any) -> Any:
    """XCom of a mapped task (a lazy sequence) as a list; other values as they are."""
    if value is None or isinstance(value, str | int | float | bool | Mapping | list):
        return value
    try:
        return list(value)
    except TypeError:
        return str(value)


def write_run_report(
    context: Mapping[str, Any],
    states: Mapping[str, str | None],
    summary: Mapping[str, Any],
    services: Mapping[str, str],
    datastores: Mapping[str, list[str]],
    left: list[str] | None = None,
) -> tuple[Path, Path]:
    """``convoy.observe.report`` Markdown + HTML (+ JSON) of this run; their paths."""
    from convoy.observe.report import build_report, default_reports_dir, write_report

    ti = context["ti"]
    chosen = assembly.mapping(ti.xcom_pull(task_ids=config.PREFLIGHT))
    params: Mapping[str, Any] = context.get("params") or {}
    dag_run = context.get("dag_run")
    triggered_by = getattr(dag_run, "triggering_user_name", None) or getattr(
        dag_run, "run_type", None
    )
    own = str(ti.task_id)
    failed = any(s in FAILED_STATES for t, s in states.items() if t not in (own, config.OUTCOME))
    timings: dict[str, float] = {}
    service_rows = assembly.service_rows(_service_facts(context, states, services), timings)
    reverts = {
        ds: (summary["reverts"].get(f"{config.ROLLBACK_GROUP}.{config.revert_data_task_id(ds)}")
             or {}).get("result")
        for ds in datastores
    }  # fmt: skip
    datastore_rows = assembly.datastore_rows(summary, datastores, reverts, timings)
    built = build_report(
        policy_name=str(ti.dag_id),
        digest=str(chosen.get("digest") or ""),
        run_id=str(context["run_id"]),
        triggered_by=None if triggered_by is None else str(triggered_by),
        dry_run=bool(chosen.get("dry_run", params.get("dry_run", False))),
        started=getattr(dag_run, "start_date", None),
        finished=dt.datetime.now(dt.UTC),
        final_state=_final_state(summary, failed),
        services=service_rows,
        datastores=datastore_rows,
        rollback=[
            *assembly.rollback_steps(summary),
            *(f"LEFT BEHIND: {line}" for line in left or ()),
        ],
        timings=timings,
        plan=summary.get("plan"),
    )
    return write_report(built, default_reports_dir())


def _final_state(summary: Mapping[str, Any], failed: bool) -> str:
    """``rejected`` / ``approval timed out`` when the approval was not given, else the outcome."""
    from convoy.airflow import approval

    return assembly.final_state(approval.final_state(summary.get("approval")), failed)


def _service_facts(
    context: Mapping[str, Any], states: Mapping[str, str | None], services: Mapping[str, str]
) -> dict[str, assembly.ServiceFacts]:
    """Each service's apply result, images before, revert result and analyses (XCom)."""
    from convoy.airflow import analysis

    ti = context["ti"]
    facts = {}
    for service, apply_id in services.items():
        result = assembly.mapping(ti.xcom_pull(task_ids=apply_id, key=config.RESULT_KEY))
        revert_id = f"{config.ROLLBACK_GROUP}.{config.revert_task_id(service)}"
        facts[service] = assembly.ServiceFacts(
            apply_id=apply_id,
            state=states.get(apply_id),
            result=result or assembly.mapping(ti.xcom_pull(task_ids=apply_id)),
            before=assembly.mapping(ti.xcom_pull(task_ids=apply_id, key=BEFORE_KEY)),
            revert=assembly.mapping(ti.xcom_pull(task_ids=revert_id)),
            analysis=analysis.service_runs(ti, apply_id, service),
        )
    return facts


def write_report_file(dag_id: str, run_id: str, summary: Mapping[str, Any]) -> Path | None:
    """Write ``$CONVOY_RUNS_DIR/<dag>/<run>/report.json`` if that is set (the demo reads it)."""
    root = os.environ.get(config.RUNS_DIR_ENV)
    if not root:
        return None
    path = Path(root) / dag_id / re.sub(r"[^A-Za-z0-9_.-]", "_", run_id) / "report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"dagId": dag_id, "runId": run_id, **summary}
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    return path
