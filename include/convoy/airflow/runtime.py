"""Callables that run inside Airflow tasks (preflight, local rollout, gates, report).

They receive plain JSON-able arguments from the builder (``op_kwargs``) plus the
Airflow context, so a task can be re-run from its serialized form. Kubernetes
and engine modules are imported lazily: parsing a DAG file never needs them.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from convoy.airflow import config
from convoy.plan import build_plan, render_text
from convoy.policy.loader import load_policy

log = logging.getLogger(__name__)

FAILED_STATES = frozenset({"failed", "upstream_failed"})


# --------------------------------------------------------------------------- preflight


def preflight(*, policy_path: str, digest: str, **context: Any) -> dict[str, Any]:
    """Re-check the policy against the built DAG and resolve this run's selection."""
    loaded = load_policy(policy_path)
    current = build_plan(loaded)
    if current.digest != digest:
        raise AirflowFailException(
            f"policy {policy_path} changed since this DAG was built "
            f"(plan digest {current.digest[:12]} != {digest[:12]}); "
            "wait for the DAG to be re-parsed and trigger again"
        )
    params: Mapping[str, Any] = context.get("params") or {}
    mode = str(params.get("mode", "upgrade"))
    if mode != "upgrade":
        # Extension point: on-demand rollback runs arrive with a later issue.
        raise AirflowFailException(f"mode {mode!r} is not supported yet (only 'upgrade')")
    chosen = list(params.get("services") or [])
    try:
        selected = build_plan(loaded, services=chosen or None)
    except Exception as exc:  # PlanError: unknown service names
        raise AirflowFailException(str(exc)) from exc
    dry_run = bool(params.get("dry_run", False))
    log.info("plan digest %s; dry_run=%s; selection %s", digest, dry_run, chosen or "all")
    log.info("plan of this run:\n%s", render_text(selected))
    return {
        "digest": digest,
        "mode": mode,
        "dry_run": dry_run,
        "services": list(selected.services),
        "datastores": [p.datastore for p in selected.datastore_phases],
    }


def selection(context: Mapping[str, Any]) -> dict[str, Any]:
    """The preflight result of the current run."""
    value = context["ti"].xcom_pull(task_ids=config.PREFLIGHT)
    if not isinstance(value, dict):
        raise AirflowFailException("preflight result missing; was preflight skipped?")
    return value


def require_selected_service(context: Mapping[str, Any], service: str) -> dict[str, Any]:
    """Skip the task unless ``service`` is part of this run; return the selection."""
    chosen = selection(context)
    if service not in chosen["services"]:
        raise AirflowSkipException(f"service {service!r} not selected in this run")
    return chosen


# --------------------------------------------------------------------------- local rollout


def kube_api_client(conn_id: str, in_cluster: bool) -> Any:
    """Kubernetes ``ApiClient`` from an Airflow connection (cncf provider hook)."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    hook = KubernetesHook(conn_id=conn_id, in_cluster=True if in_cluster else None)
    return hook.api_client


def _target(step: Mapping[str, Any], containers: Mapping[str, str]) -> Any:
    from convoy.rollout.runner import Target

    return Target(
        namespace=step["namespace"],
        kind=step["kind"],
        name=step["workload"],
        containers=dict(containers),
    )


def _result_dict(result: Any) -> dict[str, Any]:
    data = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    return dict(data)


def _failed(result: Mapping[str, Any]) -> bool:
    return str(result.get("status", "")).lower() == "failed"


def _fail_or_retry(what: str, exc: Exception) -> None:
    """Deterministic rollout failures fail at once; API trouble is left to retries."""
    from convoy.rollout.errors import ApiUnavailable, RolloutError

    if isinstance(exc, RolloutError) and not isinstance(exc, ApiUnavailable):
        raise AirflowFailException(f"{what} failed: {exc}") from exc


def rollout_local(
    *,
    step: dict[str, Any],
    conn_id: str,
    in_cluster: bool,
    deadline_seconds: int,
    **context: Any,
) -> dict[str, Any]:
    """Apply the step's images in-process with the same runner the rollout pods use."""
    chosen = require_selected_service(context, step["service"])
    from convoy.rollout.runner import RolloutRunner

    runner = RolloutRunner(kube_api_client(conn_id, in_cluster), log=log)
    target = _target(step, dict(step["containers"]))
    ti = context["ti"]
    # Record the images in place before touching anything, so the revert knows
    # them even when the apply fails half-way (and no result is returned).
    ti.xcom_push(key=BEFORE_KEY, value=dict(runner.status(target).images))
    try:
        result = runner.apply(
            target,
            deadline_seconds=deadline_seconds,
            dry_run=bool(chosen["dry_run"]),
            run_id=str(context.get("run_id", "")),
        )
    except Exception as exc:
        _fail_or_retry(f"rollout of {step['service']}", exc)
        raise
    data = _result_dict(result)
    ti.xcom_push(key=config.RESULT_KEY, value=data)
    if _failed(data):
        raise AirflowFailException(f"rollout of {step['service']} failed: {data.get('message')}")
    return data


BEFORE_KEY = "before"


def apply_result(context: Mapping[str, Any], apply_task_id: str) -> dict[str, Any] | None:
    value = context["ti"].xcom_pull(task_ids=apply_task_id, key=config.RESULT_KEY)
    return dict(value) if isinstance(value, Mapping) else None


def previous_images(result: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Images to put back per the apply result, or ``None`` when it changed nothing."""
    if not result or not result.get("changed") or result.get("dryRun"):
        return None
    previous = result.get("previousImages") or {}
    return {str(k): str(v) for k, v in dict(previous).items()} or None


def images_to_restore(
    context: Mapping[str, Any], apply_task_id: str, targets: Mapping[str, str]
) -> dict[str, str] | None:
    """What a revert must put back; ``None`` = nothing (skipped, unchanged or dry run).

    With a result, its ``previousImages`` when it changed something. Without one
    (the apply failed part-way), the images recorded just before it started,
    for the containers it was going to change.
    """
    result = apply_result(context, apply_task_id)
    if result is not None:
        return previous_images(result)
    before = context["ti"].xcom_pull(task_ids=apply_task_id, key=BEFORE_KEY)
    if not isinstance(before, Mapping):
        return None  # never ran (skipped / upstream failed): nothing changed
    restore = {c: str(before[c]) for c in targets if c in before}
    return restore or None


def rollback_open(context: Mapping[str, Any]) -> list[str] | None:
    """The failed steps if the rollback gate opened in this run (never in a dry run)."""
    gate = context["ti"].xcom_pull(task_ids=f"{config.ROLLBACK_GROUP}.{config.ROLLBACK_GATE}")
    if not gate:
        return None
    chosen = context["ti"].xcom_pull(task_ids=config.PREFLIGHT)
    if isinstance(chosen, Mapping) and chosen.get("dry_run"):
        return None
    return [str(t) for t in gate]


def revert_local(
    *,
    step: dict[str, Any],
    apply_task_id: str,
    conn_id: str,
    in_cluster: bool,
    deadline_seconds: int,
    **context: Any,
) -> dict[str, Any]:
    """Put back the images the apply step replaced; a no-op when it changed nothing."""
    service = step["service"]
    if not rollback_open(context):
        return {"service": service, "reverted": False, "reason": "rollback not requested"}
    previous = images_to_restore(context, apply_task_id, step["containers"])
    if previous is None:
        log.info("%s: nothing to revert", service)
        return {"service": service, "reverted": False, "reason": "nothing changed"}
    from convoy.rollout.runner import RolloutRunner

    runner = RolloutRunner(kube_api_client(conn_id, in_cluster), log=log)
    try:
        result = runner.revert(
            _target(step, previous),
            deadline_seconds=deadline_seconds,
            run_id=str(context.get("run_id", "")),
        )
    except Exception as exc:
        _fail_or_retry(f"revert of {service}", exc)
        raise
    data = _result_dict(result)
    if _failed(data):
        raise AirflowFailException(f"revert of {service} failed: {data.get('message')}")
    return {"service": service, "reverted": True, "images": previous, "result": data}


# --------------------------------------------------------------------------- gates / report


def run_states(context: Mapping[str, Any]) -> dict[str, str | None]:
    ti = context["ti"]
    run_id = str(context["run_id"])
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run_id])
    return {k: (str(v) if v is not None else None) for k, v in states.get(run_id, {}).items()}


def states_of(
    states: Mapping[str, str | None], task_id: str, *, mapped: bool = False
) -> list[str | None]:
    """States of ``task_id``; for a mapped task, of each instance (``<task_id>_<index>``).

    A mapped task that expanded to nothing has a single unmapped instance (skipped).
    """
    if mapped:
        pattern = re.compile(re.escape(task_id) + r"_\d+")
        found = [s for k, s in states.items() if pattern.fullmatch(k)]
        if found:
            return found
    return [states.get(task_id)]


def rollback_gate(
    *, watched: list[str], mapped: list[str] | None = None, **context: Any
) -> list[str]:
    """Open the rollback (return failed steps) only if a rollout/datastore step failed."""
    states = run_states(context)
    expanded = set(mapped or ())
    failed = sorted(t for t in watched if "failed" in states_of(states, t, mapped=t in expanded))
    if not failed:
        raise AirflowSkipException("no rollout or datastore step failed: nothing to roll back")
    log.warning("rolling back because these steps failed: %s", ", ".join(failed))
    return failed


def _plain(value: Any) -> Any:
    """XCom of a mapped task (a lazy sequence) as a list; other values as they are."""
    if value is None or isinstance(value, str | int | float | bool | Mapping | list):
        return value
    try:
        return list(value)
    except TypeError:
        return str(value)


def report(
    *, steps: list[str], reverts: list[str], mapped: list[str] | None = None, **context: Any
) -> dict[str, Any]:
    """Short run summary from XCom and task states (the full report is a later issue)."""
    states = run_states(context)
    ti = context["ti"]
    expanded = set(mapped or ())
    summary: dict[str, Any] = {"steps": {}, "reverts": {}}
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
    write_report_file(ti.dag_id, str(context["run_id"]), summary)
    return summary


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


def outcome(**context: Any) -> str:
    """Fail the run if any task failed, even when the rollback succeeded."""
    own = context["ti"].task_id
    states = run_states(context)
    bad = sorted(t for t, s in states.items() if t != own and s in FAILED_STATES)
    if bad:
        raise AirflowFailException(f"run failed: {', '.join(f'{t}={states[t]}' for t in bad)}")
    return "success"
