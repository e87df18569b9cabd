"""Pure judgement of a workload's rollout, the way ``kubectl rollout status`` does,
and the explanation of a stuck rollout from its pods. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from convoy.rollout.errors import (
    CrashLooping,
    ImagePullFailed,
    PodFailure,
    PodUnschedulable,
    UnsupportedUpdateStrategy,
)

IMAGE_PULL_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
CRASH_REASONS = frozenset({"CrashLoopBackOff"})
#: Waiting reasons that are normal while a pod starts.
TRANSIENT_REASONS = frozenset({"ContainerCreating", "PodInitializing"})


@dataclass(frozen=True)
class RolloutState:
    """Where a workload's rollout stands."""

    done: bool
    message: str
    desired: int
    updated: int
    ready: int
    available: int
    observed: bool
    #: Set when the controller itself gave up (Deployment ProgressDeadlineExceeded).
    failed: str | None = None

    def progress_key(self) -> tuple[int, int, int, bool]:
        return (self.updated, self.ready, self.available, self.observed)

    def replicas(self) -> dict[str, int]:
        return {
            "desired": self.desired,
            "updated": self.updated,
            "ready": self.ready,
            "available": self.available,
        }


def container_images(obj: Mapping[str, Any]) -> dict[str, str]:
    """Container name -> image of the pod template of a workload object."""
    containers = obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    return {c["name"]: c.get("image", "") for c in containers}


def judge(kind: str, obj: Mapping[str, Any]) -> RolloutState:
    """Judge a Deployment, StatefulSet or DaemonSet object (a JSON dict)."""
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status") or {}
    generation = int(meta.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0) >= generation and generation > 0
    name = meta.get("name", "?")
    if kind == "Deployment":
        return _deployment(name, spec, status, observed)
    if kind == "StatefulSet":
        return _statefulset(name, spec, status, observed)
    if kind == "DaemonSet":
        return _daemonset(name, spec, status, observed)
    raise ValueError(f"unsupported workload kind {kind!r}")


def _deployment(
    name: str, spec: Mapping[str, Any], status: Mapping[str, Any], observed: bool
) -> RolloutState:
    desired = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)

    def state(done: bool, message: str, failed: str | None = None) -> RolloutState:
        return RolloutState(done, message, desired, updated, ready, available, observed, failed)

    if not observed:
        return state(False, f'Waiting for deployment "{name}" spec update to be observed...')
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            msg = f'deployment "{name}" exceeded its progress deadline'
            return state(False, msg, failed=msg)
    if updated < desired:
        return state(
            False,
            f'Waiting for deployment "{name}" rollout to finish: '
            f"{updated} out of {desired} new replicas have been updated...",
        )
    if total > updated:
        return state(
            False,
            f'Waiting for deployment "{name}" rollout to finish: '
            f"{total - updated} old replicas are pending termination...",
        )
    if available < updated:
        return state(
            False,
            f'Waiting for deployment "{name}" rollout to finish: '
            f"{available} of {updated} updated replicas are available...",
        )
    return state(True, f'deployment "{name}" successfully rolled out')


def _statefulset(
    name: str, spec: Mapping[str, Any], status: Mapping[str, Any], observed: bool
) -> RolloutState:
    strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
    if strategy != "RollingUpdate":
        raise UnsupportedUpdateStrategy(
            f'StatefulSet "{name}" uses updateStrategy {strategy!r}: pods are only replaced '
            "when deleted, so a rollout never completes by itself",
            name=name,
            strategy=strategy,
        )
    desired = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    available = int(status.get("availableReplicas") or ready)

    def state(done: bool, message: str) -> RolloutState:
        return RolloutState(done, message, desired, updated, ready, available, observed)

    if not observed:
        return state(False, "Waiting for statefulset spec update to be observed...")
    if ready < desired:
        return state(False, f"Waiting for {desired - ready} pods to be ready...")
    # As kubectl does: a rollingUpdate with a partition (the API server defaults it to 0)
    # is judged by the partition; only an object without one compares revisions.
    rolling = (spec.get("updateStrategy") or {}).get("rollingUpdate")
    if isinstance(rolling, Mapping):
        partition = int(rolling.get("partition") or 0)
        if updated < desired - partition:
            return state(
                False,
                f"Waiting for partitioned roll out to finish: {updated} out of "
                f"{desired - partition} new pods have been updated...",
            )
        return state(
            True, f"partitioned roll out complete: {updated} new pods have been updated..."
        )
    if status.get("updateRevision") != status.get("currentRevision"):
        return state(
            False,
            f"waiting for statefulset rolling update to complete {updated} pods at revision "
            f"{status.get('updateRevision')}...",
        )
    return state(
        True,
        f"statefulset rolling update complete {status.get('currentReplicas', updated)} pods at "
        f"revision {status.get('currentRevision')}...",
    )


def _daemonset(
    name: str, spec: Mapping[str, Any], status: Mapping[str, Any], observed: bool
) -> RolloutState:
    strategy = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate")
    if strategy != "RollingUpdate":
        raise UnsupportedUpdateStrategy(
            f'DaemonSet "{name}" uses updateStrategy {strategy!r}: pods are only replaced '
            "when deleted, so a rollout never completes by itself",
            name=name,
            strategy=strategy,
        )
    desired = int(status.get("desiredNumberScheduled") or 0)
    updated = int(status.get("updatedNumberScheduled") or 0)
    ready = int(status.get("numberReady") or 0)
    available = int(status.get("numberAvailable") or 0)

    def state(done: bool, message: str) -> RolloutState:
        return RolloutState(done, message, desired, updated, ready, available, observed)

    if not observed:
        return state(False, "Waiting for daemon set spec update to be observed...")
    if updated < desired:
        return state(
            False,
            f'Waiting for daemon set "{name}" rollout to finish: {updated} out of {desired} '
            "new pods have been updated...",
        )
    if available < desired:
        return state(
            False,
            f'Waiting for daemon set "{name}" rollout to finish: {available} of {desired} '
            "updated pods are available...",
        )
    return state(True, f'daemon set "{name}" successfully rolled out')


def diagnose(pods: Sequence[Mapping[str, Any]], images: Mapping[str, str]) -> PodFailure | None:
    """Explain a stuck rollout from the workload's pods, or ``None`` if nothing is wrong.

    Pods running the target ``images`` are looked at first (old pods are not to blame).
    """

    def is_new(pod: Mapping[str, Any]) -> bool:
        spec_images = {
            c.get("name"): c.get("image") for c in pod.get("spec", {}).get("containers", [])
        }
        return all(spec_images.get(c) == i for c, i in images.items() if c in spec_images)

    ordered = sorted(pods, key=lambda p: not is_new(p))
    for pod in ordered:
        pod_name = str(pod.get("metadata", {}).get("name", "?"))
        status = pod.get("status") or {}
        statuses = list(status.get("initContainerStatuses") or []) + list(
            status.get("containerStatuses") or []
        )
        for cs in statuses:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = str(waiting.get("reason") or "")
            message = str(waiting.get("message") or "")
            container = str(cs.get("name", "?"))
            if reason in IMAGE_PULL_REASONS:
                return ImagePullFailed(
                    "image pull failed",
                    pod_name,
                    container,
                    reason,
                    message,
                    image=cs.get("image", ""),
                )
            if reason in CRASH_REASONS:
                last = (cs.get("lastState") or {}).get("terminated") or {}
                return CrashLooping(
                    "container crash-looping",
                    pod_name,
                    container,
                    reason,
                    message,
                    restartCount=int(cs.get("restartCount") or 0),
                    exitCode=last.get("exitCode"),
                )
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
                return PodUnschedulable(
                    "pod unschedulable", pod_name, "", "Unschedulable", str(cond.get("message", ""))
                )
    return None


def not_ready_reason(pods: Sequence[Mapping[str, Any]]) -> str:
    """A one-line reason for pods that run but are not ready (for DeadlineExceeded)."""
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            state = cs.get("state") or {}
            if not cs.get("ready"):
                name = pod.get("metadata", {}).get("name", "?")
                if "running" in state:
                    return (
                        f"pod {name!r} container {cs.get('name')!r} is running but not ready "
                        "(readiness probe failing?)"
                    )
                waiting = state.get("waiting") or {}
                if waiting:
                    return (
                        f"pod {name!r} container {cs.get('name')!r} waiting: "
                        f"{waiting.get('reason', '')} {waiting.get('message', '')}".strip()
                    )
    return ""
