"""The simulated controllers: move pods of a workload toward its template.

Each tick, every workload makes at most one step: a new pod is created for the
current revision (replacing an old one), or a new pod becomes ready. A pod whose
image tag ends in a failure suffix (see :func:`convoy.emulator.store.behaviour`)
never becomes ready, so the rollout stalls there, like on a real cluster.
Workloads whose images end in ``-slow`` only act every tenth tick.
"""

from __future__ import annotations

import copy
import secrets
import time
from typing import Any

from convoy.emulator.metrics import READY_AT
from convoy.emulator.store import (
    KIND_OF,
    SimState,
    Store,
    behaviour,
    new_meta,
    now_iso,
    template_hash,
    template_images,
)

SLOW_FACTOR = 10


def revision_label(kind: str) -> str:
    return "pod-template-hash" if kind == "Deployment" else "controller-revision-hash"


def revision_name(kind: str, name: str, rev: str) -> str:
    return f"{name}-{rev}"


def workload_pods(store: Store, resource: str, ns: str, name: str) -> list[dict[str, Any]]:
    return [
        obj
        for (res, pns, _), obj in sorted(store.objects.items())
        if res == "pods"
        and pns == ns
        and obj["metadata"].get("annotations", {}).get("convoy.emulator/owner")
        == f"{resource}/{name}"
    ]


def pod_revision(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["annotations"]["convoy.emulator/revision"])


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


def make_pod(
    store: Store,
    resource: str,
    workload: dict[str, Any],
    sim: SimState,
    ordinal: int | None,
    *,
    revision: str | None = None,
    template: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A new pod of ``workload`` at the update revision, or at ``revision`` built
    from ``template`` (a StatefulSet ordinal below its partition)."""
    kind = KIND_OF[resource]
    meta = workload["metadata"]
    name = meta["name"]
    revision = revision or sim.revision
    template = template if template is not None else workload["spec"]["template"]
    if ordinal is not None:
        pod_name = f"{name}-{ordinal}"
    elif kind == "Deployment":
        pod_name = f"{name}-{revision}-{secrets.token_hex(3)[:5]}"
    else:
        pod_name = f"{name}-{secrets.token_hex(3)[:5]}"
    rev_value = revision if kind == "Deployment" else revision_name(kind, name, revision)
    labels = dict(template.get("metadata", {}).get("labels", {}))
    labels[revision_label(kind)] = rev_value
    if ordinal is not None:
        labels["statefulset.kubernetes.io/pod-name"] = pod_name
    pod_meta = new_meta(meta["namespace"], pod_name, labels)
    pod_meta["annotations"] = {
        "convoy.emulator/owner": f"{resource}/{name}",
        "convoy.emulator/revision": revision,
    }
    containers = copy.deepcopy(template.get("spec", {}).get("containers", []))
    spec: dict[str, Any] = {"containers": containers}
    # The scheduler binds a pod by setting spec.nodeName; one it cannot place has none.
    if not _unschedulable(containers):
        spec["nodeName"] = "emulated-node"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": spec, "status": {}}
    set_pod_status(pod, ready=False, restarts=0)
    return pod


def _unschedulable(containers: list[dict[str, Any]]) -> bool:
    return any(behaviour(c.get("image", "")) == "unschedulable" for c in containers)


def _back_off(restarts: int) -> str:
    """The kubelet's restart back-off (10 s doubling up to 5 min) as Go prints a duration."""
    seconds = min(10 * 2 ** min(max(restarts - 1, 0), 5), 300)
    return f"{seconds}s" if seconds < 60 else f"{seconds // 60}m{seconds % 60}s"


def _container_status(
    image: str, name: str, ready: bool, restarts: int, pod_ref: str
) -> dict[str, Any]:
    b = behaviour(image)
    state: dict[str, Any]
    last: dict[str, Any] = {}
    if b == "crashloop" and restarts > 0:
        state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {_back_off(restarts)} restarting failed "
                f"container={name} pod={pod_ref}",
            }
        }
        # Between restarts the kubelet reports how the last run ended.
        stamp = now_iso()
        last = {
            "terminated": {
                "exitCode": 1,
                "reason": "Error",
                "startedAt": stamp,
                "finishedAt": stamp,
                "containerID": f"containerd://{secrets.token_hex(32)}",
            }
        }
    elif b == "imagepull":
        reason = "ErrImagePull" if restarts % 2 == 0 else "ImagePullBackOff"
        state = {
            "waiting": {
                "reason": reason,
                "message": f'Back-off pulling image "{image}": not found'
                if reason == "ImagePullBackOff"
                else f'failed to pull and unpack image "{image}": not found',
            }
        }
    elif (b == "crashloop" and restarts == 0) or (not ready and b == "ready"):
        state = {"waiting": {"reason": "ContainerCreating"}}
    else:
        state = {"running": {"startedAt": now_iso()}}
    return {
        "name": name,
        "image": image,
        "imageID": "",
        "ready": ready,
        "started": "running" in state,
        "restartCount": restarts if b == "crashloop" else 0,
        "state": state,
        "lastState": last,
    }


def set_pod_status(pod: dict[str, Any], *, ready: bool, restarts: int) -> None:
    containers = pod["spec"]["containers"]
    if _unschedulable(containers):
        # Never bound to a node: the kubelet created no containers, so there are
        # no containerStatuses; the scheduler's condition says why.
        pod["status"] = {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 "
                    "nodes are available: 3 No preemption victims found for incoming pod.",
                    "lastProbeTime": None,
                    "lastTransitionTime": pod["metadata"].get("creationTimestamp") or now_iso(),
                }
            ],
        }
        return
    meta = pod["metadata"]
    pod_ref = f"{meta['name']}_{meta['namespace']}({meta.get('uid', '')})"
    statuses = []
    all_ready = True
    for c in containers:
        c_ready = ready and behaviour(c.get("image", "")) in ("ready", "slow")
        all_ready = all_ready and c_ready
        image = c.get("image", "")
        statuses.append(_container_status(image, c["name"], c_ready, restarts, pod_ref))
    status = "True" if all_ready else "False"
    if all_ready:
        annotations = pod["metadata"].setdefault("annotations", {})
        annotations.setdefault(READY_AT, f"{time.time():.3f}")
    pod["status"] = {
        "phase": "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": status},
            {"type": "Ready", "status": status},
        ],
        "containerStatuses": statuses,
    }


def ensure_revision(store: Store, resource: str, workload: dict[str, Any], sim: SimState) -> None:
    """Create the ReplicaSet / ControllerRevision object of the current revision."""
    kind = KIND_OF[resource]
    meta = workload["metadata"]
    ns, name = meta["namespace"], meta["name"]
    rname = revision_name(kind, name, sim.revision)
    child = "replicasets" if kind == "Deployment" else "controllerrevisions"
    existing = store.objects.get((child, ns, rname))
    if existing is not None:
        # Back to an earlier template (an undo): the controller reuses its
        # ReplicaSet / ControllerRevision and gives it the newest revision number.
        _renumber(store, child, existing, kind, sim.revision_number)
        return
    labels = dict(workload["spec"]["template"].get("metadata", {}).get("labels", {}))
    labels[revision_label(kind)] = sim.revision if kind == "Deployment" else rname
    obj_meta = new_meta(ns, rname, labels)
    obj_meta["annotations"] = {
        "deployment.kubernetes.io/revision"
        if kind == "Deployment"
        else "convoy.emulator/revision": str(sim.revision_number)
    }
    obj_meta["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": kind,
            "name": name,
            "uid": meta["uid"],
            "controller": True,
        }
    ]
    if kind == "Deployment":
        obj: dict[str, Any] = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": obj_meta,
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": copy.deepcopy(workload["spec"]["template"]),
            },
            "status": {"replicas": 0},
        }
    else:
        # The strategic-merge patch that restores this revision, as the real
        # controller stores it (``kubectl rollout undo`` applies it as is).
        template = _as_go_encodes(workload["spec"]["template"])
        template["$patch"] = "replace"
        obj = {
            "apiVersion": "apps/v1",
            "kind": "ControllerRevision",
            "metadata": obj_meta,
            "revision": sim.revision_number,
            "data": {"spec": {"template": template}},
        }
    store.put(child, obj, "ADDED")


def _as_go_encodes(template: dict[str, Any]) -> dict[str, Any]:
    """A pod template as Go's typed encoding writes it: ``creationTimestamp: null`` and
    ``resources: {}`` (kubectl compares its own encoding with a revision's data)."""
    out = copy.deepcopy(template)
    out.setdefault("metadata", {}).setdefault("creationTimestamp", None)
    for container in out.get("spec", {}).get("containers", []):
        container.setdefault("resources", {})
    return out


def _renumber(store: Store, child: str, obj: dict[str, Any], kind: str, number: int) -> None:
    key = (
        "deployment.kubernetes.io/revision" if kind == "Deployment" else "convoy.emulator/revision"
    )
    annotations = obj["metadata"].get("annotations") or {}
    if annotations.get(key) == str(number) and obj.get("revision", number) == number:
        return
    updated = copy.deepcopy(obj)
    updated["metadata"].setdefault("annotations", {})[key] = str(number)
    if child == "controllerrevisions":
        updated["revision"] = number
    store.put(child, updated, "MODIFIED")


def tick_workload(store: Store, key: tuple[str, str, str], now: float) -> None:
    """One controller step for the workload at ``key`` (store lock held)."""
    resource, ns, name = key
    workload = store.objects.get(key)
    sim = store.sim.get(key)
    if workload is None or sim is None:
        return
    kind = KIND_OF[resource]
    spec = workload["spec"]
    images = template_images(spec["template"])
    sim.ticks += 1
    slow = any(behaviour(i) == "slow" for i in images.values())
    status = copy.deepcopy(workload.get("status", {}))
    generation = workload["metadata"].get("generation", 1)
    if status.get("observedGeneration") != generation:
        status["observedGeneration"] = generation
        rev = template_hash(spec["template"])
        if rev != sim.revision:
            sim.revision = rev
            sim.revision_number += 1
            sim.last_progress = now
        ensure_revision(store, resource, workload, sim)
    if kind != "DaemonSet":
        sim.desired = int(spec.get("replicas", 1))
    paused = kind == "Deployment" and bool(spec.get("paused"))
    if kind == "Deployment" and paused != sim.paused:
        sim.paused = paused
        if not paused:
            sim.last_progress = now  # the progress deadline counts again from the resume
    if not slow or sim.ticks % SLOW_FACTOR == 0:
        _step(store, resource, workload, sim, now, paused=paused)
    pods = workload_pods(store, resource, ns, name)
    _bump_restarts(store, pods)
    status = _status(kind, workload, sim, pods, status, now)
    if status != workload.get("status"):
        updated = copy.deepcopy(workload)
        updated["status"] = status
        store.put(resource, updated, "MODIFIED")
    if kind == "Deployment":
        _sync_replicasets(store, ns, name, pods)


def _step(
    store: Store,
    resource: str,
    workload: dict[str, Any],
    sim: SimState,
    now: float,
    *,
    paused: bool = False,
) -> None:
    """One pod one step. A paused Deployment only lets pods already created
    become ready (the kubelet goes on); it neither creates nor deletes pods."""
    meta = workload["metadata"]
    ns, name = meta["namespace"], meta["name"]
    pods = workload_pods(store, resource, ns, name)
    for pod in pods:
        if not pod_ready(pod) and all(
            behaviour(c.get("image", "")) in ("ready", "slow") for c in pod["spec"]["containers"]
        ):
            updated = copy.deepcopy(pod)
            set_pod_status(updated, ready=True, restarts=0)
            store.put("pods", updated, "MODIFIED")
            sim.last_progress = now
            return
    new = [p for p in pods if pod_revision(p) == sim.revision]
    old = [p for p in pods if pod_revision(p) != sim.revision]
    pending = [p for p in new if not pod_ready(p)]
    if KIND_OF[resource] == "StatefulSet":
        if _statefulset_step(store, resource, workload, sim, pods, pending):
            sim.last_progress = now
        return
    if pending or paused:
        return  # a new pod is stuck: a rolling update does not go on
    if old:
        store.delete("pods", ns, old[0]["metadata"]["name"])
        store.put("pods", make_pod(store, resource, workload, sim, None), "ADDED")
        sim.last_progress = now
    elif len(pods) < sim.desired:
        store.put("pods", make_pod(store, resource, workload, sim, None), "ADDED")
        sim.last_progress = now
    elif len(pods) > sim.desired:
        store.delete("pods", ns, pods[-1]["metadata"]["name"])
        sim.last_progress = now


def _statefulset_step(
    store: Store,
    resource: str,
    workload: dict[str, Any],
    sim: SimState,
    pods: list[dict[str, Any]],
    pending: list[dict[str, Any]],
) -> bool:
    """The StatefulSet controller's order (OrderedReady): create the lowest missing
    ordinal, else delete the highest ordinal beyond ``spec.replicas``, else replace
    the highest ordinal at or above the partition that is not at the update
    revision. A new pod not ready holds back what comes after it. Returns
    whether a pod was created or deleted."""
    ns = workload["metadata"]["namespace"]
    partition = _partition(workload)
    used = {_ordinal(p) for p in pods}
    missing = [i for i in range(sim.desired) if i not in used]
    if missing:
        if any(_ordinal(p) < missing[0] for p in pending):
            return False
        store.put("pods", _versioned_pod(store, resource, workload, sim, missing[0]), "ADDED")
        return True
    if any(_ordinal(p) < sim.desired for p in pending):
        return False
    # Scaling down goes before the update, and the stuck pod it condemns goes too.
    condemned = [p for p in pods if _ordinal(p) >= sim.desired]
    stale = [p for p in pods if pod_revision(p) != sim.revision and _ordinal(p) >= partition]
    if not condemned and not stale:
        return False
    victim = max(condemned or stale, key=_ordinal)
    store.delete("pods", ns, victim["metadata"]["name"])
    if not condemned:
        store.put("pods", make_pod(store, resource, workload, sim, _ordinal(victim)), "ADDED")
    return True


def _versioned_pod(
    store: Store, resource: str, workload: dict[str, Any], sim: SimState, ordinal: int
) -> dict[str, Any]:
    """The pod of a new ordinal: below the partition it is made from the current
    revision's ControllerRevision (as newVersionedStatefulSetPod does), else from
    the update revision."""
    meta = workload["metadata"]
    current = str((workload.get("status") or {}).get("currentRevision") or "")
    stored = store.objects.get(("controllerrevisions", meta["namespace"], current))
    prefix = f"{meta['name']}-"
    at_update = current == f"{prefix}{sim.revision}"
    if ordinal >= _partition(workload) or at_update or stored is None:
        return make_pod(store, resource, workload, sim, ordinal)
    template = copy.deepcopy(stored["data"]["spec"]["template"])
    template.pop("$patch", None)
    return make_pod(
        store, resource, workload, sim, ordinal,
        revision=current.removeprefix(prefix), template=template,
    )  # fmt: skip


def _partition(workload: dict[str, Any]) -> int:
    strategy = workload["spec"].get("updateStrategy") or {}
    try:
        return max(int((strategy.get("rollingUpdate") or {}).get("partition") or 0), 0)
    except (TypeError, ValueError):
        return 0


def _ordinal(pod: dict[str, Any]) -> int:
    tail = str(pod["metadata"]["name"]).rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _bump_restarts(store: Store, pods: list[dict[str, Any]]) -> None:
    for pod in pods:
        images = [c.get("image", "") for c in pod["spec"]["containers"]]
        if any(behaviour(i) in ("crashloop", "imagepull") for i in images):
            statuses = pod["status"].get("containerStatuses", [])
            restarts = max((s.get("restartCount", 0) for s in statuses), default=0)
            if any(behaviour(i) == "imagepull" for i in images):
                restarts = int(pod["metadata"]["annotations"].get("convoy.emulator/pulls", "0"))
            updated = copy.deepcopy(pod)
            updated["metadata"]["annotations"]["convoy.emulator/pulls"] = str(restarts + 1)
            set_pod_status(updated, ready=False, restarts=restarts + 1)
            store.put("pods", updated, "MODIFIED")


def _status(
    kind: str,
    workload: dict[str, Any],
    sim: SimState,
    pods: list[dict[str, Any]],
    status: dict[str, Any],
    now: float,
) -> dict[str, Any]:
    name = workload["metadata"]["name"]
    desired = sim.desired
    updated = [p for p in pods if pod_revision(p) == sim.revision]
    ready = [p for p in pods if pod_ready(p)]
    updated_ready = [p for p in updated if pod_ready(p)]
    complete = len(updated) == desired and len(updated_ready) == desired and len(pods) == desired
    if kind == "Deployment":
        status.update(
            replicas=len(pods),
            updatedReplicas=len(updated),
            readyReplicas=len(ready),
            availableReplicas=len(ready),
            unavailableReplicas=max(desired - len(ready), 0),
        )
        deadline = float(workload["spec"].get("progressDeadlineSeconds", 600))
        rs = f"{name}-{sim.revision}"
        previous = {c["type"]: c for c in status.get("conditions", [])}.get("Progressing") or {}
        timed_out = previous.get("reason") == "ProgressDeadlineExceeded"
        if sim.paused and not timed_out:
            # As the deployment controller reports it; no deadline while paused.
            reason, cstatus, message = "DeploymentPaused", "Unknown", "Deployment is paused"
        elif previous.get("reason") == "DeploymentPaused" and not complete:
            reason, cstatus, message = "DeploymentResumed", "Unknown", "Deployment is resumed"
        elif complete:
            reason, cstatus, message = (
                "NewReplicaSetAvailable",
                "True",
                f'ReplicaSet "{rs}" has successfully progressed.',
            )
        elif now - sim.last_progress > deadline:
            reason, cstatus, message = (
                "ProgressDeadlineExceeded",
                "False",
                f'ReplicaSet "{rs}" has timed out progressing.',
            )
        else:
            reason, cstatus, message = (
                "ReplicaSetUpdated",
                "True",
                f'ReplicaSet "{rs}" is progressing.',
            )
        available = len(ready) >= desired
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        _condition(
            conditions,
            "Available",
            "True" if available else "False",
            "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if available
            else "Deployment does not have minimum availability.",
        )
        _condition(conditions, "Progressing", cstatus, reason, message)
        status["conditions"] = [conditions["Available"], conditions["Progressing"]]
    elif kind == "StatefulSet":
        update_revision = f"{name}-{sim.revision}"
        current_revision = status.get("currentRevision", update_revision)
        if complete:
            current_revision = update_revision
        current = [p for p in pods if f"{name}-{pod_revision(p)}" == current_revision]
        status.update(
            replicas=len(pods),
            readyReplicas=len(ready),
            availableReplicas=len(ready),
            currentReplicas=len(current),
            updatedReplicas=len(updated),
            currentRevision=current_revision,
            updateRevision=update_revision,
            collisionCount=0,
        )
    else:
        status.update(
            desiredNumberScheduled=desired,
            currentNumberScheduled=len(pods),
            numberMisscheduled=0,
            numberReady=len(ready),
            numberAvailable=len(ready),
            numberUnavailable=max(desired - len(ready), 0),
            updatedNumberScheduled=len(updated),
        )
    return status


def _condition(
    conditions: dict[str, dict[str, Any]], ctype: str, status: str, reason: str, message: str
) -> None:
    cur = conditions.get(ctype)
    if cur and cur["status"] == status and cur["reason"] == reason:
        return
    stamp = now_iso()
    conditions[ctype] = {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": stamp,
        "lastTransitionTime": stamp
        if not cur or cur["status"] != status
        else cur["lastTransitionTime"],
    }


def _sync_replicasets(store: Store, ns: str, name: str, pods: list[dict[str, Any]]) -> None:
    for (res, rns, rname), rs in list(store.objects.items()):
        if res != "replicasets" or rns != ns or not rname.startswith(name + "-"):
            continue
        rev = rs["metadata"]["labels"].get("pod-template-hash")
        mine = [p for p in pods if pod_revision(p) == rev]
        want = {
            "replicas": len(mine),
            "readyReplicas": sum(pod_ready(p) for p in mine),
            "availableReplicas": sum(pod_ready(p) for p in mine),
        }
        if rs.get("status") != want:
            updated = copy.deepcopy(rs)
            updated["status"] = want
            updated["spec"]["replicas"] = len(mine)
            store.put("replicasets", updated, "MODIFIED")


def clock() -> float:
    return time.monotonic()
