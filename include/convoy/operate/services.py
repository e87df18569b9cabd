"""Live state of a policy's services: one LIST per workload kind and namespace, judged.

A container is judged against the policy's image and against what convoy
last set on it (the ``convoy.dev/images`` annotation the rollout runner writes
on apply and revert):

- every container runs the policy's image: ``in sync`` once the rollout is
  complete, ``pending`` while it progresses, ``degraded`` when it failed;
- a container runs what convoy last set (an earlier policy's image, or the
  image a rollback put back), or convoy never touched the workload:
  ``pending`` (the policy is ahead: not yet run);
- anything else was changed by someone else: ``drift``.

A missing workload or container is ``degraded``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from convoy.operate.model import ContainerState, ServiceState, Verdict, worst
from convoy.policy.models import Policy, Service
from convoy.rollout.api import KubernetesIO, WorkloadRef
from convoy.rollout.runner import IMAGES, PREVIOUS_IMAGES, REVERTED_FROM, RUN_ID
from convoy.rollout.status import container_images, judge

Obj = dict[str, Any]


def list_workloads(io: KubernetesIO, policy: Policy) -> dict[tuple[str, str, str], Obj]:
    """(kind, namespace, name) -> object, with one LIST per kind and namespace used."""
    wanted = sorted({(s.workload.kind, policy.kubernetes.namespace) for s in policy.services})
    found: dict[tuple[str, str, str], Obj] = {}
    for kind, namespace in wanted:
        for item in io.list_all(WorkloadRef(namespace, kind, "-")):
            found[(kind, namespace, str(item.get("metadata", {}).get("name")))] = item
    return found


def _annotation_json(annotations: Mapping[str, str], key: str) -> dict[str, str]:
    try:
        value = json.loads(annotations.get(key) or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def judge_service(svc: Service, namespace: str, obj: Mapping[str, Any] | None) -> ServiceState:
    """The verdict of one service from its live workload object (``None``: not found)."""
    kind, name = svc.workload.kind, svc.workload.name
    if obj is None:
        return ServiceState(
            name=svc.name,
            kind=kind,
            workload=name,
            namespace=namespace,
            verdict="degraded",
            reasons=(f"{kind} {namespace}/{name} not found",),
            condition="missing",
            message="not found",
            containers=tuple(
                ContainerState(c, None, image, None) for c, image in svc.containers.items()
            ),
        )
    annotations: Mapping[str, str] = obj.get("metadata", {}).get("annotations") or {}
    live = container_images(obj)
    last = _annotation_json(annotations, IMAGES)
    previous = _annotation_json(annotations, PREVIOUS_IMAGES)
    reverted_from = _annotation_json(annotations, REVERTED_FROM)
    run_id = annotations.get(RUN_ID)
    state = judge(kind, obj)
    condition = "complete" if state.done else ("failed" if state.failed else "progressing")

    containers: list[ContainerState] = []
    verdicts: list[Verdict] = []
    reasons: list[str] = []
    for c, target in svc.containers.items():
        image = live.get(c)
        containers.append(ContainerState(c, image, target, last.get(c)))
        if image is None:
            verdicts.append("degraded")
            reasons.append(f"container {c!r} not in the workload")
        elif image == target:
            continue
        elif c in last:
            if image == last[c]:
                verdicts.append("pending")
                reasons.append(f"{c}: {image} -> {target} not yet rolled out")
            else:
                verdicts.append("drift")
                reasons.append(f"{c}: runs {image}, convoy last set {last[c]}, policy {target}")
        elif run_id is None or image == previous.get(c):
            # never touched by convoy, or (runner before convoy.dev/images) put back by it
            verdicts.append("pending")
            reasons.append(f"{c}: {image} -> {target} not yet rolled out")
        else:
            verdicts.append("drift")
            reasons.append(f"{c}: runs {image}, policy {target} (changed outside convoy)")
    if condition == "failed":
        verdicts.append("degraded")
        reasons.append(f"rollout failed: {state.failed or state.message}")
    elif condition == "progressing":
        verdicts.append("pending")
        reasons.append(f"rolling out: {state.message}")
    if reverted_from and all(
        live.get(c) == last.get(c) and live.get(c) != image for c, image in reverted_from.items()
    ):
        reasons.append(
            f"reverted by run {run_id or '?'} (from "
            + ", ".join(f"{c}: {i}" for c, i in sorted(reverted_from.items()))
            + ")"
        )
    return ServiceState(
        name=svc.name,
        kind=kind,
        workload=name,
        namespace=namespace,
        verdict=worst(verdicts),
        reasons=tuple(reasons),
        condition=condition,
        message=state.message,
        containers=tuple(containers),
        replicas=state.replicas(),
        run_id=run_id,
        reverted_from=reverted_from,
    )


def service_states(
    policy: Policy,
    workloads: Mapping[tuple[str, str, str], Obj],
    only: Sequence[str] | None = None,
) -> list[ServiceState]:
    ns = policy.kubernetes.namespace
    return [
        judge_service(s, ns, workloads.get((s.workload.kind, ns, s.workload.name)))
        for s in policy.services
        if only is None or s.name in only
    ]


def unreadable(policy: Policy, error: str) -> list[ServiceState]:
    """Every service as ``unknown`` when the cluster could not be read."""
    ns = policy.kubernetes.namespace
    return [
        ServiceState(
            name=s.name,
            kind=s.workload.kind,
            workload=s.workload.name,
            namespace=ns,
            verdict="unknown",
            reasons=(error,),
            condition="unknown",
            message=error,
        )
        for s in policy.services
    ]
