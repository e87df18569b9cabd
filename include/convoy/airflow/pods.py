"""Rollout and revert steps run in pods (``execution: kubernetes``).

The DAG holds light operators (:class:`RolloutPodOperator` and its kin): a
:class:`PodSpec` and the runner's arguments. The KubernetesPodOperator that
starts the pod (:class:`RolloutPod` and its kin) is built when the task runs
(:meth:`PodStepOperator.pod_runner`), so parsing a DAG file builds no
Kubernetes model and pays for a plain operator per step, not a KPO
(docs/scale.md).

The pod runs ``python -m convoy.rollout apply|verify|revert|analyze ...`` in the
policy's ``runnerImage`` with least privilege: non-root, read-only root
filesystem, no capabilities, seccomp RuntimeDefault. Its JSON result comes back
via XCom.

A verified step (canary steps, analyses) runs ``verify`` with the spec the run
record froze, and ``rollout.waveAnalysis`` runs ``analyze`` in a pod of its own.
Both are given at run time, after Airflow rendered the task's templates, so the
queries' ``{{ variables }}`` never meet Jinja. The providers' addresses and
credentials reach the pod only as ``secretKeyRef`` environment variables.

With an approval gate, a ``verify`` pod that ends on an inconclusive analysis
parks its task with the pod's checkpoint (:mod:`convoy.airflow.inconclusive`);
once approved, a continuation pod goes on from it (``verify --resume-json``).
A wave's ``analyze`` pod parks and goes on the same way (``analyze --resume-json``).
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeVar

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.bases.operator import ExecutorSafeguard
from airflow.sdk.exceptions import AirflowFailException
from kubernetes.client import Configuration
from kubernetes.client import models as k8s

from convoy.airflow import config, gates, inconclusive, local_rollout, retries
from convoy.airflow import preflight as preflight_task
from convoy.airflow.analysis import ANALYSIS_KEY, WAVE_TASK_ID
from convoy.airflow.cheap_setattr import CheapSetattr
from convoy.airflow.runtime import policy_name
from convoy.observe import analysis_metrics
from convoy.plan import Plan, RolloutStep
from convoy.plan.record import RecordError, RunRecord
from convoy.policy.models import KubernetesSettings
from convoy.redaction import get_logger

log = get_logger(__name__)

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


#: Label of a pod that measures analyses: the NetworkPolicy that lets it reach the
#: metrics providers selects it (deploy/policy-namespace/runner-analysis-networkpolicy.yaml).
LABEL_ANALYSIS = "convoy.dev/analysis"

#: Errors a rollout pod reports before it changed anything: its revert has nothing to undo.
UNCHANGED_ERRORS = frozenset(
    {"WorkloadNotFound", "ContainerNotFound", "ProviderSecretMissing", "UsageError"}
)


def secret_env_vars(templates: Mapping[str, Mapping[str, Any]]) -> list[k8s.V1EnvVar]:
    """``valueFrom.secretKeyRef`` variables of the providers' Secrets (never a value).

    Every key is optional, so a missing Secret or key still starts the pod, whose
    runner then names the Secret and key it lacks (``ProviderSecretMissing``)
    instead of a pod stuck in ``CreateContainerConfigError``.
    """
    from convoy.rollout.providers.secrets import secret_env

    return [
        _k8s(
            k8s.V1EnvVar,
            name=e.env,
            value_from=_k8s(
                k8s.V1EnvVarSource,
                secret_key_ref=_k8s(
                    k8s.V1SecretKeySelector, name=e.secret, key=e.key, optional=True
                ),
            ),
        )
        for e in secret_env(templates)
    ]


def _without(arguments: Sequence[str], options: frozenset[str]) -> list[str]:
    """``arguments`` without ``options`` and their values (a re-run adds them afresh)."""
    out: list[str] = []
    i = 0
    while i < len(arguments):
        if arguments[i] in options and i + 1 < len(arguments):
            i += 2
            continue
        out.append(arguments[i])
        i += 1
    return out


def _run_id(arguments: Sequence[str]) -> str | None:
    for i, arg in enumerate(arguments[:-1]):
        if arg == "--run-id":
            return arguments[i + 1]
    return None


def record_analyses(
    context: Mapping[str, Any], result: Mapping[str, Any], *, counted: int = 0
) -> None:
    """XCom ``analysis``/``canary`` and the analysis metrics of a pod's result, as local tasks.

    The pod measured everything before it answered, so the measurements are
    sent here at once (local tasks send them as they come). The first
    ``counted`` runs were sent by the pod a continuation resumed from. Never raises.
    """
    runs = result.get("analysis")
    steps = result.get("canary")
    ti = context["ti"]
    try:
        if isinstance(runs, list):
            ti.xcom_push(key=ANALYSIS_KEY, value=runs)
        if isinstance(steps, list) and steps:
            ti.xcom_push(key="canary", value=steps)
        policy = policy_name(context)
        for run in runs[counted:] if isinstance(runs, list) else ():
            service, template = str(run.get("service")), str(run.get("template"))
            for m in run.get("measurements") or ():
                if m.get("value") is not None:
                    analysis_metrics.value(policy, service, template, float(m["value"]))
                analysis_metrics.measurement(policy, service, template, str(m.get("verdict")))
            if run.get("phase") != "running" and not run.get("dryRun"):
                analysis_metrics.finished(policy, service, template, str(run.get("phase")))
    except Exception:
        log.warning("analyses of the pod's result not recorded", exc_info=True)


@dataclass(frozen=True, eq=False)
class PodSpec:
    """What a step's pod is built from when its task runs; every step of a policy shares it."""

    policy: str
    settings: KubernetesSettings
    #: Pod lifetime: the plan's deadline plus the start-up margin.
    deadline_seconds: int
    #: The Airflow pool of the steps (``config.rollout_pool``), read once per policy.
    pool: str


def _pod_parts(settings: KubernetesSettings) -> dict[str, Any]:
    return {
        "security_context": pod_security_context(),
        "container_security_context": container_security_context(),
        "xcom_sidecar_container_security_context": container_security_context(),
        "container_resources": container_resources(settings),
        "volumes": [_k8s(k8s.V1Volume, name="tmp", empty_dir=_k8s(k8s.V1EmptyDirVolumeSource))],
        "volume_mounts": [_k8s(k8s.V1VolumeMount, name="tmp", mount_path="/tmp")],  # noqa: S108 (pod emptyDir)
        "env_vars": [_k8s(k8s.V1EnvVar, name="PYTHONDONTWRITEBYTECODE", value="1")],
    }


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
    replaced = _FROZEN_OPTIONS | ({"--container"} if images else frozenset())
    rest = _without(arguments[1:], replaced)
    deadline = ["--deadline-seconds", str(frozen.plan.deadline_seconds)]
    target = target_args(step, step.containers if images else ())
    return [arguments[0], *target, *deadline, *rest]


class RolloutPod(KubernetesPodOperator):
    """KPO that skips unselected services, adds ``--dry-run`` and keeps the result on failure.

    Built by :meth:`PodStepOperator.pod_runner` when the task runs, never while
    parsing; it sets ``service`` (and ``apply_task_id``, ``wave``) after construction.
    """

    service: str = ""
    _convoy_context: Mapping[str, Any] | None = None
    _convoy_started: float | None = None
    _convoy_result: Mapping[str, Any] | None = None
    #: The approved checkpoint a continuation pod goes on from (``--resume-json``).
    _convoy_resume: Mapping[str, Any] | None = None
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
        spec = dict(frozen.verify.get(self.service) or {})
        if spec:
            options = frozenset({"--service", "--spec-json", "--resume-json"})
            rest = _without(self.arguments[1:], options)
            self.arguments = [
                "verify", *rest, "--service", self.service,
                "--spec-json", json.dumps(spec, sort_keys=True), *self.resume_args(),
            ]  # fmt: skip
            self.use_providers(spec)
            self.allow_verification(frozen.plan.deadline_seconds, spec)
        return None

    def allow_verification(self, base: float, spec: Mapping[str, Any], targets: int = 1) -> None:
        """Pod lifetime for the rollout plus the spec's pauses and analyses, at their longest."""
        from convoy.rollout.verify import extra_seconds

        extra = extra_seconds(spec, targets=targets)
        self.active_deadline_seconds = int(base + config.POD_DEADLINE_MARGIN_SECONDS + extra + 1)

    def use_providers(self, spec: Mapping[str, Any]) -> None:
        """The Secrets of the spec's providers as env, and the label of an analysing pod."""
        from convoy.rollout.providers.secrets import ENV_PREFIX

        env = [e for e in self.env_vars if not str(getattr(e, "name", "")).startswith(ENV_PREFIX)]
        self.env_vars = [*env, *secret_env_vars(dict(spec.get("templates") or {}))]
        self.labels = {**self.labels, LABEL_ANALYSIS: "true"}

    def describe(self) -> str:
        return f"{'revert' if self.reverting else 'rollout'} of {self.service}"

    def execute(self, context: Any) -> Any:
        self._convoy_context = context
        self._convoy_started = time.monotonic()
        self._convoy_result = None
        early = self.prepare_arguments(context)
        if early is not None:
            return early
        try:
            return self.run_pod(context)
        except Exception as exc:
            self.park_if_inconclusive(context)
            self.raise_if_deterministic(exc)
            raise

    def run_pod(self, context: Any) -> Any:
        """The KPO's own execute: start the pod, follow it, read its result."""
        return super().execute(context)

    def get_or_create_pod(self, pod_request_obj: k8s.V1Pod, context: Any) -> k8s.V1Pod:
        if self._convoy_resume is None:
            return super().get_or_create_pod(pod_request_obj, context)
        # The KPO and its pod manager log the whole pod request, arguments included;
        # a continuation's checkpoint carries the rendered queries and their values.
        manager = self.pod_manager
        operator_log, manager_log = self.log, manager.log
        self._cached_logger = _WithoutPodRequest(operator_log)
        manager._log = _WithoutPodRequest(manager_log)
        try:
            return super().get_or_create_pod(pod_request_obj, context)
        finally:
            self._cached_logger, manager._log = operator_log, manager_log

    def park_if_inconclusive(self, context: Any) -> None:
        """Park for the approval gate when the pod stopped on an inconclusive analysis.

        As a local task does (:func:`convoy.airflow.analysis.verified_apply`):
        the pod ended with its checkpoint, and :meth:`resume_after_decision`
        starts the continuation pod from it once approved. A continuation that
        stops again does not ask a second time in the same try.
        """
        result = self._convoy_result
        if (
            result is None
            or result.get("action") not in ("verify", "analyze")
            or result.get("error") != "AnalysisInconclusive"
            or not isinstance(result.get("checkpoint"), Mapping)
            or not result["checkpoint"].get("runs")
        ):
            return
        frozen = preflight_task.run_record(context)
        approval = inconclusive.gate(context, frozen)
        if approval is None:
            return
        runs = [dict(r) for r in result["checkpoint"]["runs"]]
        if self._convoy_resume is not None:
            runs[-1]["decision"] = inconclusive.NOT_ASKED
            self.push_analyses(context, runs)
            return
        runs[-1]["decision"] = inconclusive.AWAITING
        self.push_analyses(context, runs)
        checkpoint = {**result["checkpoint"], "runs": runs}
        step, then = self.parked_on(frozen, checkpoint)
        inconclusive.park(
            context,
            approval,
            run=runs[-1],
            workload=f"{step.namespace}/{step.kind}/{step.workload}",
            images=dict(step.containers),
            then=then,
            checkpoint=checkpoint,
        )

    def parked_on(self, frozen: Any, checkpoint: Mapping[str, Any]) -> tuple[RolloutStep, str]:
        """The step an inconclusive pod stopped on, and what approving does (for the approver)."""
        from convoy.airflow.analysis import _then
        from convoy.rollout.analysis import AnalysisSpec

        verify = dict(frozen.verify.get(self.service) or {})
        templates = dict(verify.get("templates") or {})
        analyses = [AnalysisSpec.from_dict(templates[n]) for n in verify.get("analyses", [])
                    if n in templates]  # fmt: skip
        canary = list(verify.get("canary", []))
        then = _then(str(checkpoint["stage"]), int(checkpoint["index"]), canary, analyses)
        return frozen.step(self.service), then

    def resume_after_decision(
        self, context: Any, event: Any = None, checkpoint: Any = None, **_: Any
    ) -> Any:
        """The approver's answer: a continuation pod from ``checkpoint``, or the failure.

        Rejected or timed out, the task fails at once (not retried) and the
        rollback runs, as in local mode.
        """
        approval = getattr(preflight_task.run_record(context).plan, "approval", None)
        decided = self.decided(context, dict(checkpoint or {}), event, approval)
        self.push_analyses(context, [dict(r) for r in decided["runs"]])
        self._convoy_resume = decided
        # A new pod, not the parked try's (which the KPO deleted when it ended).
        self.pod = None
        self.pod_request_obj = None
        return self.execute(context)

    def decided(
        self, context: Mapping[str, Any], checkpoint: dict[str, Any], event: Any, approval: Any
    ) -> dict[str, Any]:
        """The checkpoint with the approver's decision; fails the task unless approved."""
        from convoy.rollout.canary import Checkpoint

        parked = Checkpoint.from_dict(checkpoint)
        runs = self.decide(context, parked.runs, event, approval)
        return dict(replace(parked, runs=runs).to_dict())

    def decide(
        self,
        context: Mapping[str, Any],
        runs: Sequence[Mapping[str, Any]],
        event: Any,
        approval: Any,
    ) -> list[dict[str, Any]]:
        """The parked runs, the approver's answer on the last; fails the task unless approved."""
        from convoy.airflow.analysis import decide_last
        from convoy.rollout.analysis import AnalysisInconclusive, AnalysisRun

        parsed = [AnalysisRun.from_dict(r) for r in runs]
        if not parsed:
            raise ValueError("a checkpoint of an inconclusive analysis carries its runs")
        try:
            decide_last(parsed, event, approval)
        except AnalysisInconclusive as exc:
            self.push_analyses(context, [r.to_dict() for r in parsed])
            retries.fail(f"{self.describe()} failed: {exc.message}", exc)
        return [r.to_dict() for r in parsed]

    def resume_args(self) -> list[str]:
        """``--resume-json <approved checkpoint>`` for a continuation pod, else nothing."""
        resume = self._convoy_resume
        return ["--resume-json", json.dumps(resume, sort_keys=True)] if resume else []

    def resumed_runs(self) -> int:
        """How many runs the parked pod measured (and recorded) before this continuation."""
        return len((self._convoy_resume or {}).get("runs") or ())

    def push_analyses(self, context: Mapping[str, Any], runs: list[dict[str, Any]]) -> None:
        try:
            context["ti"].xcom_push(key=ANALYSIS_KEY, value=runs)
        except Exception:
            self.log.warning("could not push the analysis of %s", self.service, exc_info=True)

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
            retries.fail(f"{self.describe()} failed: {result.get('message')}", exc)

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
            if "analysis" in result or "canary" in result:
                record_analyses(self._convoy_context, result, counted=self.resumed_runs())
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


class _WithoutPodRequest:
    """A logger that leaves out debug lines and any line that quotes ``--resume-json``."""

    def __init__(self, logger: Any) -> None:
        self._logger = logger

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._logger, name)
        if name not in ("info", "warning", "error", "exception", "critical"):
            return method

        def logged(msg: Any, *args: Any, **kwargs: Any) -> Any:
            if any("--resume-json" in str(a) for a in (msg, *args)):
                return method("the continuation pod's request is not logged: its checkpoint "
                              "carries the rendered queries")  # fmt: skip
            return method(msg, *args, **kwargs)

        return logged


class RevertPod(RolloutPod):
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
        if result is not None and result.get("ok") is not False:
            previous = local_rollout.previous_images(result)
            if previous is None:
                self.log.info("%s: nothing to revert", self.service)
                return {"service": self.service, "reverted": False, "reason": "nothing changed"}
            self.arguments = [*self.arguments, *container_args(sorted(previous.items()))]
            return None
        if result is not None and str(result.get("error")) in UNCHANGED_ERRORS:
            self.log.info("%s: the rollout failed before it changed anything", self.service)
            return {"service": self.service, "reverted": False, "reason": "nothing changed"}
        # The apply pod failed (a failed analysis, a crash loop...) with an error result,
        # which has no previous images, or without a result: the runner reverts from the
        # convoy.dev/previous-images annotation it wrote when it patched the workload, and
        # only if this run patched it (else the annotation is an older run's).
        run_id = _run_id(self.arguments)
        if run_id and "--only-if-run-id" not in self.arguments:
            self.arguments = [*self.arguments, "--only-if-run-id", run_id]
        return None


class WaveAnalysisPod(RolloutPod):
    """``rollout.waveAnalysis`` of one wave in a pod: ``python -m convoy.rollout analyze``.

    The spec and the wave's targets come from the run record at run time; the
    analyses go to XCom ``analysis`` as the local task's do.
    """

    wave: int = 0

    def steps(self, frozen: Any) -> list[RolloutStep]:
        return [s for w in frozen.plan.waves if w.index == self.wave for s in w.steps]

    def prepare_arguments(self, context: Mapping[str, Any]) -> Any:
        frozen = preflight_task.run_record(context)
        spec = dict(frozen.wave_verify or {})
        steps = self.steps(frozen)
        if not spec or not steps:
            self.log.info("wave %d: no wave analysis to run", self.wave)
            return []
        spec["targets"] = [local_rollout.step_dict(s) for s in steps]
        self.arguments = [
            "analyze", "--spec-json", json.dumps(spec, sort_keys=True),
            "--where", f"wave {self.wave}", *(["--dry-run"] if frozen.dry_run else []),
            *self.resume_args(),
        ]  # fmt: skip
        self.use_providers(spec)
        self.allow_verification(0, spec, targets=len(steps))
        return None

    def describe(self) -> str:
        return f"wave {self.wave} analysis"

    def parked_on(self, frozen: Any, checkpoint: Mapping[str, Any]) -> tuple[RolloutStep, str]:
        from convoy.airflow.analysis import _wave_then

        spec = dict(frozen.wave_verify or {})
        templates = dict(spec.get("templates") or {})
        names = [n for n in spec.get("analyses", []) if n in templates]
        steps = self.steps(frozen)
        index, number = int(checkpoint["step"]), int(checkpoint["template"])
        return steps[index], _wave_then(self.wave, steps, names, index, number)

    def decided(
        self, context: Mapping[str, Any], checkpoint: dict[str, Any], event: Any, approval: Any
    ) -> dict[str, Any]:
        runs = self.decide(context, checkpoint.get("runs") or (), event, approval)
        return {**checkpoint, "runs": runs}

    def extract_xcom(self, pod: k8s.V1Pod, *, ignore_kill_failure: bool = True) -> Any:
        result = KubernetesPodOperator.extract_xcom(
            self, pod, ignore_kill_failure=ignore_kill_failure
        )
        if isinstance(result, dict):
            self._convoy_result = result
            if self._convoy_context is not None:
                record_analyses(self._convoy_context, result, counted=self.resumed_runs())
        return result


class PodStepOperator(CheapSetattr):
    """A step whose work runs in a pod: the DAG's light stand-in for :class:`RolloutPod`.

    It holds the :class:`PodSpec` and the runner's arguments (templated: the
    run id); when the task runs, :meth:`pod_runner` builds the KPO from them
    and every call that reaches the task (``execute``, the approver's answer
    to a parked analysis, ``on_kill``) goes to it. A KPO costs twice a plain
    operator to build, and the DAG processor builds one per step of every
    policy at each parse; the task process builds one.

    No ``__init__`` of its own, on purpose: Airflow wraps every operator class's
    ``__init__`` and deep-copies the DAG params once per wrapped level, so each
    extra level costs parse time for every task of every policy. The factories
    below set the fields right after construction.
    """

    template_fields: Sequence[str] = ("arguments",)
    runner_class: ClassVar[type[RolloutPod]] = RolloutPod
    #: Attributes the runner gets from this operator.
    runner_fields: ClassVar[tuple[str, ...]] = ("service",)
    #: The pod is ``convoy-<service><suffix>``; ``service`` is also its service label.
    pod_name_suffix: ClassVar[str] = ""

    arguments: list[str]
    pod_spec: PodSpec
    service: str = ""
    _runner: RolloutPod | None = None

    def pod_runner(self) -> RolloutPod:
        """The KPO of this step, built on the first call (once per task process).

        ``execute`` and the resume method hand it the task's rendered arguments
        afresh each time (:meth:`_as_task`).
        """
        runner = self._runner
        if runner is None:
            name = f"convoy-{self.service}{self.pod_name_suffix}"
            runner = self.runner_class(
                task_id=self.task_id,
                arguments=list(self.arguments),
                **_pod_kwargs(self.pod_spec, self.service, name),
            )
            for name in self.runner_fields:
                setattr(runner, name, getattr(self, name))
            # The pod's log lines go to the task's logger, as the KPO's own did.
            runner._cached_logger = self.log
            self._runner = runner
        return runner

    def execute(self, context: Any) -> Any:
        return self._as_task(lambda runner: runner.execute(context))

    def resume_after_decision(self, context: Any, event: Any = None, **kwargs: Any) -> Any:
        """The approver's answer to a parked analysis (:data:`inconclusive.RESUME_METHOD`)."""
        return self._as_task(lambda runner: runner.resume_after_decision(context, event, **kwargs))

    def _as_task(self, call: Callable[[RolloutPod], Any]) -> Any:
        """``call(runner)`` with the runner as the running task.

        Airflow's ``ExecutorSafeguard`` warns (or, with ``allow_nested_operators``
        off, fails) when an operator's ``execute`` runs under another task; the
        task runner marks the task it runs in a copy of the context, and so
        does this, for the runner. Every try starts from the rendered
        arguments (the runner adjusts its own copy).
        """
        runner = self.pod_runner()
        runner.arguments = list(self.arguments)
        ctx = contextvars.copy_context()
        ctx.run(ExecutorSafeguard.tracker.set, runner)
        return ctx.run(call, runner)

    def on_kill(self) -> None:
        if self._runner is not None:
            self._runner.on_kill()


class RolloutPodOperator(PodStepOperator):
    """The apply (or ``verify``) step of a service in a pod: :class:`RolloutPod`."""


class RevertPodOperator(PodStepOperator):
    """The revert step of a service in a pod: :class:`RevertPod`."""

    runner_class = RevertPod
    runner_fields = ("service", "apply_task_id")
    apply_task_id: str = ""


class WaveAnalysisPodOperator(PodStepOperator):
    """``rollout.waveAnalysis`` of one wave in a pod: :class:`WaveAnalysisPod`."""

    runner_class = WaveAnalysisPod
    runner_fields = ("service", "wave")
    pod_name_suffix = "-analysis"
    wave: int = 0


def pod_spec(plan: Plan, settings: KubernetesSettings) -> PodSpec:
    """The spec every pod step of ``plan`` shares."""
    deadline = plan.deadline_seconds + config.POD_DEADLINE_MARGIN_SECONDS
    return PodSpec(
        policy=plan.policy_name,
        settings=settings,
        deadline_seconds=deadline,
        pool=config.rollout_pool(),
    )


def _pod_kwargs(spec: PodSpec, label: str, name: str) -> dict[str, Any]:
    settings = spec.settings
    labels = {
        config.LABEL_POLICY: spec.policy,
        config.LABEL_SERVICE: label,
        config.LABEL_MANAGED_BY: "convoy",
    }
    kwargs: dict[str, Any] = {
        "namespace": settings.namespace,
        "image": settings.runner_image,
        "cmds": list(BASE_COMMAND),
        "labels": labels,
        "name": name,
        "service_account_name": settings.service_account,
        "kubernetes_conn_id": settings.conn_id,
        "do_xcom_push": True,
        "get_logs": True,
        "on_finish_action": "delete_pod",
        **_pod_parts(settings),
        "active_deadline_seconds": spec.deadline_seconds,
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


_O = TypeVar("_O", bound=PodStepOperator)


def _step_operator(
    cls: type[_O], spec: PodSpec, *, service: str, arguments: list[str], **kwargs: Any
) -> _O:
    op = cls(pool=spec.pool, **kwargs)
    # Plain data, no XComArg (the arguments are strings): Airflow's assignment
    # hook would only search them for XComArgs, for every step of every policy.
    vars(op).update(arguments=arguments, pod_spec=spec, service=service)
    return op


def rollout_pod(spec: PodSpec, plan: Plan, step: RolloutStep) -> RolloutPodOperator:
    """The apply task of ``step`` (inside the current DAG/TaskGroup context)."""
    return _step_operator(
        RolloutPodOperator, spec, service=step.service,
        arguments=runner_args("apply", plan, step, step.containers),
        task_id=config.rollout_task_id(step.service), trigger_rule="none_failed",
    )  # fmt: skip


def revert_pod(
    spec: PodSpec, plan: Plan, step: RolloutStep, apply_task_id: str
) -> RevertPodOperator:
    """The revert task of ``step``; previous images are added from the apply result."""
    op = _step_operator(
        RevertPodOperator, spec, service=step.service,
        arguments=runner_args("revert", plan, step, ()),
        task_id=config.revert_task_id(step.service), trigger_rule="none_skipped",
        **config.revert_task_kwargs(),
    )  # fmt: skip
    op.apply_task_id = apply_task_id
    return op


def wave_analysis_pod(spec: PodSpec, wave: int) -> WaveAnalysisPodOperator:
    """``wave_<n>.analysis`` in a pod (inside the wave's TaskGroup context); never retried."""
    op = _step_operator(
        WaveAnalysisPodOperator, spec, service=f"wave-{wave}", arguments=["analyze"],
        task_id=WAVE_TASK_ID, trigger_rule="none_failed", retries=0,
    )  # fmt: skip
    op.wave = wave
    return op
