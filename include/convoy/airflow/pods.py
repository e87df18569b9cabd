"""Rollout and revert steps as KubernetesPodOperators (``execution: kubernetes``).

The pod runs ``python -m convoy.rollout apply|revert ...`` in the policy's
``runnerImage`` with least privilege: non-root, read-only root filesystem, no
capabilities, seccomp RuntimeDefault. Its JSON result comes back via XCom.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowFailException
from kubernetes.client import Configuration
from kubernetes.client import models as k8s

from convoy.airflow import config, gates, local_rollout, retries
from convoy.airflow import preflight as preflight_task
from convoy.plan import Plan, RolloutStep
from convoy.plan.record import RecordError, RunRecord
from convoy.policy.models import KubernetesSettings

_M = TypeVar("_M")

#: The official Airflow image (which is the runner image) owns its files as uid 50000,
#: gid 0; running as anything else may leave the installed packages unreadable.
RUNNER_UID = 50000
RUNNER_GID = 0

BASE_COMMAND = ["python", "-m", "convoy.rollout"]

# Every kubernetes model built without a configuration deep-copies the client's
# default one, which resets logger levels and clears every logger's cache: about
# 0.6 ms per object, most of a DAG file's parse time at a thousand policies.
# The models here only hold values, so one shared configuration is enough.
_MODEL_CONFIGURATION = Configuration()


def _k8s(model: Callable[..., _M], **fields: Any) -> _M:
    return model(local_vars_configuration=_MODEL_CONFIGURATION, **fields)


def pod_security_context() -> k8s.V1PodSecurityContext:
    return _k8s(
        k8s.V1PodSecurityContext,
        run_as_non_root=True,
        run_as_user=RUNNER_UID,
        run_as_group=RUNNER_GID,
        fs_group=RUNNER_GID,
        seccomp_profile=_k8s(k8s.V1SeccompProfile, type="RuntimeDefault"),
    )


def container_security_context() -> k8s.V1SecurityContext:
    return _k8s(
        k8s.V1SecurityContext,
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        run_as_non_root=True,
        capabilities=_k8s(k8s.V1Capabilities, drop=["ALL"]),
    )


def container_resources(settings: KubernetesSettings) -> k8s.V1ResourceRequirements:
    r = settings.resources
    return _k8s(
        k8s.V1ResourceRequirements,
        requests={"cpu": r.cpu_request, "memory": r.memory_request},
        limits={"cpu": r.cpu_limit, "memory": r.memory_limit},
    )


def container_args(containers: Sequence[tuple[str, str]]) -> list[str]:
    args: list[str] = []
    for name, image in containers:
        args += ["--container", f"{name}={image}"]
    return args


def target_args(step: RolloutStep, containers: Sequence[tuple[str, str]]) -> list[str]:
    base = ["--namespace", step.namespace, "--kind", step.kind, "--name", step.workload]
    return [*base, *container_args(containers)]


#: Runner options whose values come from the run record (``--container`` only for applies).
_FROZEN_OPTIONS = frozenset({"--namespace", "--kind", "--name", "--deadline-seconds"})


def frozen_arguments(
    arguments: Sequence[str], frozen: RunRecord, service: str, *, images: bool
) -> list[str]:
    """``arguments`` with the target, images and deadline of ``service`` in the run record.

    Every other argument (action, run ids, flags added later) is kept in order.
    """
    try:
        step = frozen.step(service)
    except RecordError as exc:
        raise AirflowFailException(str(exc)) from exc
    replaced = _FROZEN_OPTIONS | ({"--container"} if images else set())
    rest: list[str] = []
    i = 1
    while i < len(arguments):
        if arguments[i] in replaced and i + 1 < len(arguments):
            i += 2
            continue
        rest.append(arguments[i])
        i += 1
    deadline = ["--deadline-seconds", str(frozen.plan.deadline_seconds)]
    target = target_args(step, step.containers if images else ())
    return [arguments[0], *target, *deadline, *rest]


class RolloutPodOperator(KubernetesPodOperator):
    """KPO that skips unselected services, adds ``--dry-run`` and keeps the result on failure.

    No ``__init__`` of its own, on purpose: Airflow wraps every operator class's
    ``__init__`` and deep-copies the DAG params once per wrapped level, so each
    extra level costs parse time for every task of every policy. The factories
    below set ``service`` (and ``apply_task_id``) right after construction.
    """

    service: str = ""
    _convoy_context: Mapping[str, Any] | None = None
    _convoy_started: float | None = None
    _convoy_result: Mapping[str, Any] | None = None
    #: Whether a failure is classified as a revert's (``retriable_in_revert``) or an
    #: apply's (``retriable``): :mod:`convoy.airflow.retries`, as in local mode.
    reverting: bool = False

    def prepare_arguments(self, context: Mapping[str, Any]) -> dict[str, Any] | None:
        """Adjust the rendered arguments; a returned dict is the result without a pod.

        The workload, images and deadline are the run record's (the plan frozen
        at preflight), whatever the DAG parsed now says.
        """
        chosen = preflight_task.require_selected_service(context, self.service)
        frozen = preflight_task.run_record(context)
        preflight_task.log_drift(frozen)
        self.arguments = frozen_arguments(self.arguments, frozen, self.service, images=True)
        if chosen["dry_run"] and "--dry-run" not in self.arguments:
            self.arguments = [*self.arguments, "--dry-run"]
        return None

    def execute(self, context: Any) -> Any:
        self._convoy_context = context
        self._convoy_started = time.monotonic()
        self._convoy_result = None
        early = self.prepare_arguments(context)
        if early is not None:
            return early
        try:
            return super().execute(context)
        except Exception as exc:
            self.raise_if_deterministic(exc)
            raise

    def raise_if_deterministic(self, exc: Exception) -> None:
        """Turn a failed pod into a no-retry failure when its result says retrying is futile.

        The runner's JSON names the error class (``convoy.rollout.errors``), which
        says whether it is retriable (:func:`convoy.airflow.retries.is_retriable_name`);
        an error outside those classes or a pod that left no result stays retryable.
        """
        result = self._convoy_result
        if result is None or result.get("ok") is not False:
            return
        if not retries.is_retriable_name(str(result.get("error", "")), revert=self.reverting):
            action = "revert" if self.reverting else "rollout"
            retries.fail(f"{action} of {self.service} failed: {result.get('message')}", exc)

    def extract_xcom(self, pod: k8s.V1Pod, *, ignore_kill_failure: bool = True) -> Any:
        # The KPO drops the sidecar result when the pod failed; keep it under our
        # own key first so the revert step knows the previous images either way.
        result = super().extract_xcom(pod, ignore_kill_failure=ignore_kill_failure)
        if isinstance(result, dict):
            # The runner knows workloads, not services; the report and the revert
            # summary name the service, as the local tasks' results do.
            result = {"service": self.service, **result}
            self._convoy_result = result
        if self._convoy_context is not None and isinstance(result, dict):
            self._convoy_context["ti"].xcom_push(key=config.RESULT_KEY, value=result)
            self.record_result(self._convoy_context, result)
        return result

    def record_result(self, context: Mapping[str, Any], result: Mapping[str, Any]) -> None:
        """Metrics of a finished rollout pod, from its JSON result, in the Airflow worker.

        The same calls as a local rollout (:func:`convoy.airflow.local_rollout.rollout_done`),
        so the deployment's ``[metrics]`` settings apply. A failed result
        (``ok: false``) sends none of them: the task then fails and its
        ``on_failure_callback`` counts ``step_failed(policy, "rollout")`` once,
        after the last try, as for a local rollout. Reverts send nothing here
        (the rollback metrics come from the gate and the report). Never raises.
        """
        try:
            if result.get("action") != "apply":
                return
            if result.get("ok") is False or str(result.get("status", "")).lower() == "failed":
                self.log.warning(
                    "%s: rollout pod failed (%s): %s",
                    self.service,
                    result.get("error") or result.get("status"),
                    result.get("message"),
                )
                return
            started = self._convoy_started
            # Measured in the worker, so it includes the pod's start-up; without
            # it, the runner's own patch-to-ready time.
            seconds = (
                time.monotonic() - started
                if started is not None
                else float(result.get("readySeconds") or 0.0)
            )
            local_rollout.rollout_done(
                context, self.service, result, seconds, dry_run=bool(result.get("dryRun"))
            )
        except Exception:
            self.log.warning("%s: rollout metrics not sent", self.service, exc_info=True)


class RevertPodOperator(RolloutPodOperator):
    """KPO that puts back the images recorded by the apply step (no-op if nothing changed).

    In a manual rollback (``mode=rollback``) it reverts what ``rollback_run_id``
    changed, from the workload's annotations (``--only-if-run-id``).
    """

    apply_task_id: str = ""
    reverting = True

    def prepare_arguments(self, context: Mapping[str, Any]) -> dict[str, Any] | None:
        # Never skips: a skipped revert would skip the older waves' reverts after it.
        failed = gates.rollback_open(context)
        if failed is None:
            return {"service": self.service, "reverted": False, "reason": "rollback not requested"}
        frozen = preflight_task.run_record(context)
        if self.service not in frozen.plan.services:
            return {"service": self.service, "reverted": False, "reason": "not part of this run"}
        self.arguments = frozen_arguments(self.arguments, frozen, self.service, images=False)
        target = preflight_task.manual_rollback_of(context)
        if target is not None:
            # Manual rollback: the runner reads the workload and reverts it from its
            # convoy.dev/previous-images annotation only if the target run (or an
            # earlier try of this task) changed it last.
            if "--only-if-run-id" not in self.arguments:
                self.arguments = [*self.arguments, "--only-if-run-id", target]
            return None
        result = local_rollout.apply_result(context, self.apply_task_id)
        if result is None and self.apply_task_id not in failed:
            return {"service": self.service, "reverted": False, "reason": "never applied"}
        if result is not None:
            previous = local_rollout.previous_images(result)
            if previous is None:
                self.log.info("%s: nothing to revert", self.service)
                return {"service": self.service, "reverted": False, "reason": "nothing changed"}
            self.arguments = [*self.arguments, *container_args(sorted(previous.items()))]
        # Otherwise the apply pod failed without a result: the runner reverts from the
        # convoy.dev/previous-images annotation it wrote when it patched the workload.
        return None


def _common_kwargs(plan: Plan, settings: KubernetesSettings, step: RolloutStep) -> dict[str, Any]:
    labels = {
        config.LABEL_POLICY: plan.policy_name,
        config.LABEL_SERVICE: step.service,
        config.LABEL_MANAGED_BY: "convoy",
    }
    kwargs: dict[str, Any] = {
        "namespace": settings.namespace,
        "image": settings.runner_image,
        "cmds": list(BASE_COMMAND),
        "labels": labels,
        "name": f"convoy-{step.service}",
        "service_account_name": settings.service_account,
        "kubernetes_conn_id": settings.conn_id,
        "do_xcom_push": True,
        "get_logs": True,
        "on_finish_action": "delete_pod",
        "security_context": pod_security_context(),
        "container_security_context": container_security_context(),
        "xcom_sidecar_container_security_context": container_security_context(),
        "container_resources": container_resources(settings),
        "volumes": [
            _k8s(
                k8s.V1Volume,
                name="tmp",
                empty_dir=_k8s(
                    k8s.V1EmptyDirVolumeSource,
                ),
            )
        ],
        "volume_mounts": [_k8s(k8s.V1VolumeMount, name="tmp", mount_path="/tmp")],  # noqa: S108 (pod emptyDir)
        "env_vars": [_k8s(k8s.V1EnvVar, name="PYTHONDONTWRITEBYTECODE", value="1")],
        "active_deadline_seconds": plan.deadline_seconds + config.POD_DEADLINE_MARGIN_SECONDS,
        "pool": config.rollout_pool(),
    }
    if settings.in_cluster:
        kwargs["in_cluster"] = True
    return kwargs


def runner_args(
    action: str, plan: Plan, step: RolloutStep, containers: Sequence[tuple[str, str]]
) -> list[str]:
    """``python -m convoy.rollout <action> ...`` arguments; the run id is templated."""
    return [
        action,
        *target_args(step, containers),
        "--deadline-seconds",
        str(plan.deadline_seconds),
        "--run-id",
        "{{ run_id }}",
    ]


def rollout_pod(plan: Plan, settings: KubernetesSettings, step: RolloutStep) -> RolloutPodOperator:
    """The apply task of ``step`` (inside the current DAG/TaskGroup context)."""
    op = RolloutPodOperator(
        task_id=config.rollout_task_id(step.service),
        arguments=runner_args("apply", plan, step, step.containers),
        trigger_rule="none_failed",
        **_common_kwargs(plan, settings, step),
    )
    op.service = step.service
    return op


def revert_pod(
    plan: Plan, settings: KubernetesSettings, step: RolloutStep, apply_task_id: str
) -> RevertPodOperator:
    """The revert task of ``step``; previous images are added from the apply result."""
    op = RevertPodOperator(
        task_id=config.revert_task_id(step.service),
        arguments=runner_args("revert", plan, step, ()),
        trigger_rule="none_skipped",
        **_common_kwargs(plan, settings, step),
        **config.revert_task_kwargs(),
    )
    op.service = step.service
    op.apply_task_id = apply_task_id
    return op
