"""Callables that run inside Airflow tasks (preflight, local rollout, gates, report).

They receive plain JSON-able arguments from the builder (``op_kwargs``) plus the
Airflow context, so a task can be re-run from its serialized form. Kubernetes
and engine modules are imported lazily: parsing a DAG file never needs them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from convoy.airflow import config
from convoy.observe import metrics
from convoy.observe.progress import ProgressSink, progress_value
from convoy.plan import RolloutStep, build_plan, render_text
from convoy.plan.record import RecordError, RunRecord, drift, freeze, record_from_json
from convoy.policy.loader import load_policy
from convoy.redaction import MASK, get_logger

log = get_logger(__name__)

FAILED_STATES = frozenset({"failed", "upstream_failed"})
#: XCom key of a long task's latest progress (docs/ui.md).
PROGRESS_KEY = "progress"
#: XCom key of preflight's run record (``convoy.plan.record``).
RECORD_KEY = "run_record"


# --------------------------------------------------------------------------- observability


def policy_name(context: Mapping[str, Any]) -> str:
    """The policy of the running task (``dag_id`` = ``metadata.name``)."""
    return str(getattr(context.get("ti"), "dag_id", "") or "")


def push_progress(
    ti: Any,
    *,
    done: int,
    total: int | None,
    unit: str,
    rate: float | None,
    eta_seconds: float | None,
    label: str,
) -> None:
    """XCom ``progress`` for the Upgrades page; never raises."""
    publish_progress(
        ti,
        progress_value(
            done=done, total=total, unit=unit, rate=rate, eta_seconds=eta_seconds, label=label
        ),
    )


def publish_progress(ti: Any, value: Mapping[str, Any]) -> None:
    """Push a :func:`~convoy.observe.progress.progress_value` as XCom ``progress``; never raises.

    Also while the task runs: the Task SDK sends the push to the execution API
    at once, so the Upgrades page reads it from the metadata database.
    """
    try:
        ti.xcom_push(key=PROGRESS_KEY, value=dict(value))
    except Exception:
        log.warning("could not push progress %s", value, exc_info=True)


def progress_sink(ti: Any, *, label: str | None = None) -> ProgressSink:
    """A :class:`~convoy.observe.progress.Progress` sink pushing XCom ``progress`` (never raises).

    ``label`` replaces the record's own, so that mid-run records and the final
    one of :func:`rollout_done` (labelled with the service) read the same.
    """

    def sink(value: Mapping[str, Any]) -> None:
        publish_progress(ti, value if label is None else {**value, "label": label})

    return sink


def step_kind(task_id: str) -> metrics.StepKind | None:
    """The ``step_failed`` kind of a task id (``None``: report, outcome, ...)."""
    if task_id == config.PREFLIGHT:
        return "preflight"
    if task_id.startswith(f"{config.ROLLBACK_GROUP}."):
        return "rollback"
    leaf = task_id.rsplit(".", 1)[-1]
    if leaf.startswith("rollout_"):
        return "rollout"
    if leaf == "backup":
        return "backup"
    if leaf == "migrate":
        return "migrate"
    if leaf == "validate":
        return "validate"
    if leaf.startswith(("partitions_", "transform_")):
        return "transform"
    return None


def step_failure_callback(context: Mapping[str, Any]) -> None:
    """Task ``on_failure_callback`` (every task): ``step_failed(policy, kind)``."""
    try:
        kind = step_kind(str(context["ti"].task_id))
        if kind is not None:
            metrics.step_failed(policy_name(context), kind)
    except Exception:
        log.warning("step failure metric not sent", exc_info=True)


def _services_done(context: Mapping[str, Any]) -> int:
    """Rollout tasks of this run that succeeded (the current one included)."""
    try:
        states = run_states(context)
    except Exception:
        return 0
    own = str(getattr(context.get("ti"), "task_id", ""))
    done = {t for t, s in states.items() if s == "success" and ".rollout_" in t}
    return len(done | {own})


# --------------------------------------------------------------------------- preflight


def preflight(*, policy_path: str, digest: str, **context: Any) -> dict[str, Any]:
    """Re-check the policy against the built DAG, resolve this run's selection, freeze it.

    The run's record (:mod:`convoy.plan.record`: the plan, the datastores'
    specifications, the migration files with their contents) is pushed as
    XCom ``run_record``; its digest is in the returned selection. Every later
    task executes its step from that record and never reads the policy again.
    """
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
    if mode == "rollback":
        chosen_rollback = _preflight_rollback(current, digest, params)
        frozen = _freeze(loaded, current, digest, chosen_rollback)
        return _with_record(context, chosen_rollback, frozen)
    if mode != "upgrade":
        raise AirflowFailException(f"mode {mode!r}: expected 'upgrade' or 'rollback'")
    chosen = list(params.get("services") or [])
    try:
        selected = build_plan(loaded, services=chosen or None)
    except Exception as exc:  # PlanError: unknown service names
        raise AirflowFailException(str(exc)) from exc
    dry_run = bool(params.get("dry_run", False))
    log.info("plan digest %s; dry_run=%s; selection %s", digest, dry_run, chosen or "all")
    log.info("plan of this run:\n%s", render_text(selected))
    name = loaded.policy.metadata.name
    metrics.services_total(name, len(selected.services))
    metrics.services_done(name, 0)
    result: dict[str, Any] = {
        "digest": digest,
        "mode": mode,
        "dry_run": dry_run,
        "services": list(selected.services),
        "datastores": [p.datastore for p in selected.datastore_phases],
    }
    return _with_record(context, result, _freeze(loaded, selected, digest, result))


def _freeze(loaded: Any, plan: Any, digest: str, chosen: Mapping[str, Any]) -> RunRecord:
    try:
        return freeze(
            loaded,
            plan,
            dag_plan_digest=digest,
            mode="rollback" if chosen["mode"] == "rollback" else "upgrade",
            dry_run=bool(chosen["dry_run"]),
            rollback_run_id=chosen.get("rollback_run_id"),
        )
    except RecordError as exc:
        raise AirflowFailException(f"cannot freeze the run's plan: {exc}") from exc


def _with_record(
    context: Mapping[str, Any], chosen: dict[str, Any], frozen: RunRecord
) -> dict[str, Any]:
    context["ti"].xcom_push(key=RECORD_KEY, value=frozen.to_dict())
    files = sum(len(ds.migrations) for ds in frozen.datastores)
    log.info(
        "run record %s: plan %s, %d datastore(s), %d migration file(s) frozen; later tasks "
        "execute this record, whatever happens to the policy files meanwhile",
        frozen.digest,
        frozen.plan.digest,
        len(frozen.datastores),
        files,
    )
    return {**chosen, "record": frozen.digest}


def run_record(context: Mapping[str, Any]) -> RunRecord:
    """This run's record (frozen by preflight), its digest checked; fails the task otherwise."""
    chosen = selection(context)
    value = context["ti"].xcom_pull(task_ids=config.PREFLIGHT, key=RECORD_KEY)
    try:
        return record_from_json(value, expected_digest=str(chosen.get("record") or "") or None)
    except RecordError as exc:
        raise AirflowFailException(str(exc)) from exc


def log_drift(frozen: RunRecord) -> list[str]:
    """Log the policy files changed since preflight (no effect on this run); the lines."""
    lines = [str(d) for d in drift(frozen)]
    for line in lines:
        log.warning(
            "changed since preflight, not used by this run (it executes the record %s): %s",
            frozen.digest[:12],
            line,
        )
    return lines


def _preflight_rollback(plan: Any, digest: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``mode=rollback``: no forward step runs; the reverts undo ``rollback_run_id``.

    Either execution mode: the image reverts (in-process or in a revert pod) leave
    alone every workload whose ``convoy.dev/run-id`` names another run.
    """
    target = str(params.get("rollback_run_id") or "").strip()
    if not target:
        raise AirflowFailException(
            "mode 'rollback' needs rollback_run_id: the id of the run whose changes to revert"
        )
    if not plan.rollback_automatic:
        raise AirflowFailException(
            "mode 'rollback' needs the rollback tasks: this policy sets rollback.automatic: false"
        )
    dry_run = bool(params.get("dry_run", False))
    log.info(
        "manual rollback of run %s (dry_run=%s); every forward step is skipped", target, dry_run
    )
    return {
        "digest": digest,
        "mode": "rollback",
        "rollback_run_id": target,
        "dry_run": dry_run,
        # Nothing is rolled out or migrated: forward steps skip themselves.
        "services": [],
        "datastores": [],
    }


def manual_rollback_of(context: Mapping[str, Any]) -> str | None:
    """The run id a ``mode=rollback`` run reverts; ``None`` for an upgrade run."""
    chosen = context["ti"].xcom_pull(task_ids=config.PREFLIGHT)
    if isinstance(chosen, Mapping) and chosen.get("mode") == "rollback":
        return str(chosen.get("rollback_run_id") or "") or None
    return None


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
    from convoy.airflow import retries

    retries.fail_unless_retriable(f"{what} failed", exc)


def rollout_local(
    *,
    step: dict[str, Any],
    conn_id: str,
    in_cluster: bool,
    deadline_seconds: int,
    verify: dict[str, Any] | None = None,
    **context: Any,
) -> dict[str, Any]:
    """Apply the step's images in-process with the same runner the rollout pods use.

    ``verify`` (canary steps and analyses, :mod:`convoy.airflow.analysis`) makes
    it a verified rollout.
    """
    chosen = require_selected_service(context, step["service"])
    # The images come from the plan frozen at preflight, not from the DAG as parsed now.
    frozen = run_record(context)
    log_drift(frozen)
    step = step_dict(_frozen_step(frozen, step["service"]))
    deadline_seconds = frozen.plan.deadline_seconds
    from convoy.rollout.runner import RolloutRunner

    runner = RolloutRunner(kube_api_client(conn_id, in_cluster), log=log)
    target = _target(step, dict(step["containers"]))
    ti = context["ti"]
    # Record the images in place before touching anything, so the revert knows
    # them even when the apply fails half-way (and no result is returned).
    ti.xcom_push(key=BEFORE_KEY, value=dict(runner.status(target).images))
    started = time.monotonic()
    try:
        if verify:
            from convoy.airflow.analysis import verified_apply

            result = verified_apply(
                runner, target, step, verify, deadline_seconds=deadline_seconds,
                dry_run=bool(chosen["dry_run"]), context=context,
                progress=progress_sink(ti, label=step["service"]),
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


BEFORE_KEY = "before"
#: XCom key of the report task: what a failed rollback left behind (alerts read it).
LEFT_BEHIND_KEY = "left_behind"


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
            _target(step, previous or {}),
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
    *,
    watched: list[str],
    mapped: list[str] | None = None,
    approval_task_id: str | None = None,
    **context: Any,
) -> list[str]:
    """Open the rollback (return failed steps) only if a rollout/datastore step failed.

    With an approval in the DAG, only once it was given: a rejected or timed-out
    approval leaves every step ``upstream_failed`` and nothing to revert, and a
    manual rollback must not revert anything it was not approved for.
    """
    if approval_task_id is not None:
        state = run_states(context).get(approval_task_id)
        if state != "success":
            raise AirflowSkipException(f"approval not given ({approval_task_id}: {state})")
    target = manual_rollback_of(context)
    if target is not None:
        log.warning("manual rollback: reverting what run %s changed", target)
        if not selection(context).get("dry_run"):
            metrics.rollback(policy_name(context), "started")
        return [f"manual rollback of {target}"]
    states = run_states(context)
    expanded = set(mapped or ())
    failed = sorted(t for t in watched if "failed" in states_of(states, t, mapped=t in expanded))
    if not failed:
        raise AirflowSkipException("no rollout or datastore step failed: nothing to roll back")
    log.warning("rolling back because these steps failed: %s", ", ".join(failed))
    chosen = context["ti"].xcom_pull(task_ids=config.PREFLIGHT)
    if not (isinstance(chosen, Mapping) and chosen.get("dry_run")):
        metrics.rollback(policy_name(context), "started")
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
    policy_path: str | None = None,
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
            alert_entries(on_rollback or [], "on_rollback", policy_path),
            alert_entries(on_failure or [], "on_failure", policy_path),
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


def alert_entries(given: list[str], field: str, policy_path: str | None) -> list[str]:
    """Alert targets from task arguments; redacted ones (tokens) are read from the policy file.

    Falls back to the entries without a secret when the policy cannot be read
    now, so those alerts still go out.
    """
    if not any(MASK in entry for entry in given):
        return list(given)
    try:
        if policy_path is None:
            raise FileNotFoundError("no policy path")
        return list(getattr(load_policy(policy_path).policy.alerts, field))
    except Exception as exc:
        log.error(
            "alert targets with a secret in %s could not be read from the policy (%s); "
            "alerting the others only",
            field,
            exc,
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
        return {str(k): str(v) for k, v in runner.status(_target(step, {})).images.items()}
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


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _results(value: Any) -> list[dict[str, Any]]:
    """A step's result(s): one dict, or one per mapped instance."""
    if isinstance(value, Mapping):
        return [dict(value)]
    if isinstance(value, list):
        return [dict(v) for v in value if isinstance(v, Mapping)]
    return []


def _str_images(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in _mapping(value).items()}


def _service_rows(
    context: Mapping[str, Any],
    states: Mapping[str, str | None],
    services: Mapping[str, str],
    timings: dict[str, float],
) -> list[dict[str, Any]]:
    ti = context["ti"]
    rows = []
    for service, apply_id in services.items():
        result = _mapping(ti.xcom_pull(task_ids=apply_id, key=config.RESULT_KEY))
        if not result:
            result = _mapping(ti.xcom_pull(task_ids=apply_id))
        before = _str_images(ti.xcom_pull(task_ids=apply_id, key=BEFORE_KEY))
        revert_id = f"{config.ROLLBACK_GROUP}.{config.revert_task_id(service)}"
        revert = _mapping(ti.xcom_pull(task_ids=revert_id))
        ready = result.get("readySeconds")
        if ready is not None:
            timings[f"rollout.{service}"] = float(ready)
        rows.append(
            {
                "name": service,
                "old_images": _str_images(result.get("previousImages")) or before,
                "new_images": _str_images(result.get("images")),
                "status": states.get(apply_id) or "pending",
                "ready_seconds": None if ready is None else float(ready),
                "reverted": bool(revert.get("reverted")),
                "analysis": _results(ti.xcom_pull(task_ids=apply_id, key="analysis")),
            }
        )
    return rows


def _datastore_rows(
    context: Mapping[str, Any],
    summary: Mapping[str, Any],
    datastores: Mapping[str, list[str]],
    timings: dict[str, float],
) -> list[dict[str, Any]]:
    ti = context["ti"]
    steps: Mapping[str, Any] = summary["steps"]
    rows = []
    for ds, ids in datastores.items():
        applied: list[str] = []
        rows_done = 0
        validation = None
        for task_id in ids:
            results = _results((steps.get(task_id) or {}).get("result"))
            leaf = task_id.rsplit(".", 1)[-1]
            if leaf == "migrate":
                applied += [
                    str(m.get("version"))
                    for r in results
                    for m in r.get("applied") or ()
                    if isinstance(m, Mapping) and m.get("status") == "applied"
                ]
            elif leaf.startswith("transform_"):
                rows_done += sum(int(r.get("rows_done") or 0) for r in results)
                elapsed = sum(float(r.get("elapsed_s") or 0.0) for r in results)
                if results:
                    timings[f"{ds}.{leaf}"] = elapsed
            elif leaf == "validate" and results:
                validation = results[0]
        revert_id = f"{config.ROLLBACK_GROUP}.{config.revert_data_task_id(ds)}"
        revert = _mapping(ti.xcom_pull(task_ids=revert_id))
        inner = _mapping(revert.get("result"))
        undone = [str(v) for v in inner.get("undone") or ()]
        undone += [str(v) for v in inner.get("restored_from_backup") or ()]
        rows.append(
            {
                "name": ds,
                "migrations_applied": applied,
                "migrations_reverted": undone,
                "rows_transformed": rows_done,
                "validation": validation,
                "reverted": bool(revert.get("reverted")),
                "rows_restored": int(inner.get("rows_restored") or 0),
                "rows_conflicting": int(inner.get("rows_conflicting") or 0),
                "rows_gone": int(inner.get("rows_gone") or 0),
                "conflicts": [str(c) for c in inner.get("conflicts") or ()],
                "refused": [str(r) for r in revert.get("refused") or ()],
            }
        )
    return rows


def _rollback_steps(summary: Mapping[str, Any]) -> list[str]:
    """What the reverts did, in the order they ran."""
    done = []
    for task_id, entry in summary["reverts"].items():
        result = _mapping(entry.get("result"))
        if entry.get("state") in FAILED_STATES:
            done.append(f"{task_id}: {entry['state']}")
        elif result.get("reverted") and "images" in result:
            images = ", ".join(f"{c} -> {i}" for c, i in _str_images(result["images"]).items())
            done.append(f"image {result.get('service')}: {images}")
        elif result.get("reverted"):
            inner = _mapping(result.get("result"))
            what = [*(inner.get("undone") or ()), *(inner.get("restored_from_backup") or ())]
            listed = ", ".join(str(v) for v in what) or "no migration"
            done.append(
                f"data {result.get('datastore')}: reverted {listed}; "
                f"{int(inner.get('rows_restored') or 0)} rows restored, "
                f"{int(inner.get('rows_conflicting') or 0)} conflicts kept"
            )
    return done


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
    chosen = _mapping(ti.xcom_pull(task_ids=config.PREFLIGHT))
    params: Mapping[str, Any] = context.get("params") or {}
    dag_run = context.get("dag_run")
    triggered_by = getattr(dag_run, "triggering_user_name", None) or getattr(
        dag_run, "run_type", None
    )
    own = str(ti.task_id)
    failed = any(s in FAILED_STATES for t, s in states.items() if t not in (own, config.OUTCOME))
    timings: dict[str, float] = {}
    service_rows = _service_rows(context, states, services, timings)
    datastore_rows = _datastore_rows(context, summary, datastores, timings)
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
        rollback=[*_rollback_steps(summary), *(f"LEFT BEHIND: {line}" for line in left or ())],
        timings=timings,
        plan=summary.get("plan"),
    )
    return write_report(built, default_reports_dir())


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


def _final_state(summary: Mapping[str, Any], failed: bool) -> str:
    """``rejected`` / ``approval timed out`` when the approval was not given, else the outcome."""
    from convoy.airflow import approval

    return approval.final_state(summary.get("approval")) or ("failed" if failed else "success")


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
    _outcome_metrics(context, states, bad)
    if bad:
        raise AirflowFailException(f"run failed: {', '.join(f'{t}={states[t]}' for t in bad)}")
    return "success"


def _outcome_metrics(
    context: Mapping[str, Any], states: Mapping[str, str | None], bad: list[str]
) -> None:
    """``run_outcome`` and ``run_duration``; never raises."""
    try:
        name = policy_name(context)
        chosen = _mapping(context["ti"].xcom_pull(task_ids=config.PREFLIGHT))
        gate = states.get(f"{config.ROLLBACK_GROUP}.{config.ROLLBACK_GATE}")
        rollback_failed = any(t.startswith(f"{config.ROLLBACK_GROUP}.") for t in bad)
        result: metrics.RunOutcome
        if bad:
            result = "rolled_back" if gate == "success" and not rollback_failed else "failed"
        else:
            result = "dry_run" if chosen.get("dry_run") else "success"
        metrics.run_outcome(name, result)
        started = getattr(context.get("dag_run"), "start_date", None)
        if isinstance(started, dt.datetime):
            metrics.run_duration(name, (dt.datetime.now(dt.UTC) - started).total_seconds())
    except Exception:
        log.warning("outcome metrics not sent", exc_info=True)
