"""``execution: local``: rollouts and image reverts in the Airflow task.

The same :class:`~convoy.rollout.runner.RolloutRunner` the rollout pods run;
the workload, images and deadline come from the run record (the plan frozen
at preflight), not from the DAG as parsed now.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from convoy.airflow import config
from convoy.airflow.gates import rollback_open, run_states
from convoy.airflow.preflight import (
    log_drift,
    manual_rollback_of,
    require_selected_service,
    run_record,
)
from convoy.airflow.runtime import policy_name, progress_sink, push_progress
from convoy.observe import metrics
from convoy.plan import RolloutStep
from convoy.plan.record import RecordError, RunRecord
from convoy.redaction import get_logger

log = get_logger(__name__)


BEFORE_KEY = "before"


def kube_api_client(conn_id: str, in_cluster: bool) -> Any:
    """Kubernetes ``ApiClient`` from an Airflow connection (cncf provider hook)."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    hook = KubernetesHook(conn_id=conn_id, in_cluster=True if in_cluster else None)
    return hook.api_client


def step_dict(step: RolloutStep) -> dict[str, Any]:
    """A rollout step as the runner's target needs it (JSON-able)."""
    return {
        "service": step.service,
        "namespace": step.namespace,
        "kind": step.kind,
        "workload": step.workload,
        "containers": dict(step.containers),
    }


def _frozen_step(frozen: RunRecord, service: str) -> RolloutStep:
    try:
        return frozen.step(service)
    except RecordError as exc:
        raise AirflowFailException(str(exc)) from exc


def runner_target(step: Mapping[str, Any], containers: Mapping[str, str]) -> Any:
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
    from convoy.airflow import retries

    retries.fail_unless_retriable(f"{what} failed", exc)


def rollout_local(
    *,
    step: dict[str, Any],
    conn_id: str,
    in_cluster: bool,
    deadline_seconds: int,
    verify: dict[str, Any] | None = None,
    resume: dict[str, Any] | None = None,
    **context: Any,
) -> dict[str, Any]:
    """Apply the step's images in-process with the same runner the rollout pods use.

    ``verify`` (canary steps and analyses, :mod:`convoy.airflow.analysis`) makes
    it a verified rollout; ``resume`` is the approver's answer to an
    inconclusive analysis the task parked on (:mod:`convoy.airflow.inconclusive`).
    """
    chosen = require_selected_service(context, step["service"])
    # The images come from the plan frozen at preflight, not from the DAG as parsed now.
    frozen = run_record(context)
    log_drift(frozen)
    step = step_dict(_frozen_step(frozen, step["service"]))
    deadline_seconds = frozen.plan.deadline_seconds
    from convoy.rollout.runner import RolloutRunner

    runner = RolloutRunner(kube_api_client(conn_id, in_cluster), log=log)
    target = runner_target(step, dict(step["containers"]))
    ti = context["ti"]
    # Record the images in place before touching anything, so the revert knows
    # them even when the apply fails half-way (and no result is returned). A
    # resumed task keeps the record of its first part: the images are new now.
    if resume is None:
        ti.xcom_push(key=BEFORE_KEY, value=dict(runner.status(target).images))
    started = time.monotonic()
    try:
        if verify:
            from convoy.airflow.analysis import verified_apply

            result = verified_apply(
                runner, target, step, verify, deadline_seconds=deadline_seconds,
                dry_run=bool(chosen["dry_run"]), context=context,
                progress=progress_sink(ti, label=step["service"]), resume=resume,
            )  # fmt: skip
        else:
            result = runner.apply(
                target,
                deadline_seconds=deadline_seconds,
                dry_run=bool(chosen["dry_run"]),
                run_id=str(context.get("run_id", "")),
                progress=progress_sink(ti, label=step["service"]),
            )
    except Exception as exc:
        _fail_or_retry(f"rollout of {step['service']}", exc)
        raise
    data = _result_dict(result)
    ti.xcom_push(key=config.RESULT_KEY, value=data)
    if _failed(data):
        raise AirflowFailException(f"rollout of {step['service']} failed: {data.get('message')}")
    rollout_done(
        context,
        step["service"],
        data,
        time.monotonic() - started,
        dry_run=bool(chosen["dry_run"]),
    )
    return data


def rollout_done(
    context: Mapping[str, Any],
    service: str,
    data: Mapping[str, Any],
    seconds: float,
    *,
    dry_run: bool,
) -> None:
    """Metrics and the final ``progress`` of a successful rollout (local, or a rollout pod).

    ``data`` is the runner's result (``RolloutResult.to_dict()``, as the pod prints it).
    """
    replicas = dict(data.get("replicas") or {})
    ready = float(data.get("readySeconds") or 0.0)
    desired = replicas.get("desired")
    done = int(replicas.get("ready") or 0)
    push_progress(
        context["ti"],
        done=done,
        total=None if desired is None else int(desired),
        unit="replicas",
        rate=done / ready if ready > 0 else None,
        eta_seconds=0,
        label=service,
    )
    if dry_run:
        return
    name = policy_name(context)
    metrics.service_rolled_out(name, service)
    metrics.rollout_duration(name, service, seconds)
    metrics.readiness_wait(name, service, ready)
    metrics.services_done(name, _services_done(context))


def _services_done(context: Mapping[str, Any]) -> int:
    """Rollout tasks of this run that succeeded (the current one included)."""
    try:
        states = run_states(context)
    except Exception:
        return 0
    own = str(getattr(context.get("ti"), "task_id", ""))
    done = {t for t, s in states.items() if s == "success" and ".rollout_" in t}
    return len(done | {own})


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
    frozen = run_record(context)
    if service not in frozen.plan.services:
        return {"service": service, "reverted": False, "reason": "not part of this run"}
    step = step_dict(_frozen_step(frozen, service))
    deadline_seconds = frozen.plan.deadline_seconds
    from convoy.rollout.runner import RolloutRunner

    runner = RolloutRunner(kube_api_client(conn_id, in_cluster), log=log)
    target = manual_rollback_of(context)
    if target is not None:
        # Manual rollback: only a workload the target run changed last, back to
        # the images its convoy.dev/previous-images annotation records (the
        # runner checks the convoy.dev/run-id annotation, as in a revert pod).
        previous: dict[str, str] | None = {}
    else:
        previous = images_to_restore(context, apply_task_id, step["containers"])
        if previous is None:
            log.info("%s: nothing to revert", service)
            return {"service": service, "reverted": False, "reason": "nothing changed"}
    try:
        result = runner.revert(
            runner_target(step, previous or {}),
            deadline_seconds=deadline_seconds,
            run_id=str(context.get("run_id", "")),
            only_if_run_id=target,
            progress=progress_sink(context["ti"], label=service),
        )
    except Exception as exc:
        _fail_revert(f"revert of {service}", exc)
        raise
    data = _result_dict(result)
    if data.get("status") == "skipped":
        return {"service": service, "reverted": False, "reason": data.get("message")}
    if not previous:
        previous = {str(k): str(v) for k, v in dict(data.get("images") or {}).items()}
    if _failed(data):
        raise AirflowFailException(f"revert of {service} failed: {data.get('message')}")
    return {"service": service, "reverted": True, "images": previous, "result": data}


def _fail_revert(what: str, exc: Exception) -> None:
    """Reverts retry everything (RBAC, API, conflicts can be fixed meanwhile) except
    what a retry cannot change: the workload or container is gone, nothing to revert."""
    from convoy.airflow import retries

    retries.fail_unless_retriable(f"{what} failed", exc, revert=True)
