"""Canary primitives of the emulated controller, step by step (which pods run which image).

- Deployment ``spec.paused``: no new pods while paused (those already created
  still become ready), Progressing ``Unknown``/``DeploymentPaused``, no
  progress deadline while paused, the rollout goes on after the resume.
- StatefulSet ``spec.updateStrategy.rollingUpdate.partition``: only ordinals
  at or above the partition get the new revision, highest first;
  ``updatedReplicas``, ``currentRevision`` and ``updateRevision`` as a real
  cluster reports them; scaled during such an update, new ordinals below the
  partition get the current revision, the others the update revision, and a
  scale-down removes the highest ordinals first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from convoy.emulator import EmulatedCluster

pytestmark = pytest.mark.integration

NS = "shop"
SMP = "application/strategic-merge-patch+json"


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def images(cluster: EmulatedCluster, kind: str, name: str) -> dict[str, str]:
    """Pod name -> image of its (only) container."""
    return {
        p["metadata"]["name"]: p["spec"]["containers"][0]["image"]
        for p in cluster.pods(kind, NS, name)
    }


def revision_completed(cluster: EmulatedCluster, name: str, revision: str) -> dict[str, Any]:
    """StatefulSet ``name``'s status once ``revision`` is its current revision."""
    return wait_for(
        lambda: (
            (s := cluster.get_workload("StatefulSet", NS, name)["status"])
            and s["currentRevision"] == revision
            and s
        )
    )


def ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


def progressing(obj: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == "Progressing")


@pytest.fixture
def apps(emulated_cluster: EmulatedCluster) -> client.AppsV1Api:
    return client.AppsV1Api(emulated_cluster.api_client())


def test_deployment_canary_by_pause(emulated_cluster: EmulatedCluster, apps: Any) -> None:
    cluster = emulated_cluster
    cluster.add_workload("Deployment", NS, "cart", {"server": "cart:1"}, replicas=4,
                         progress_deadline_seconds=1)  # fmt: skip
    body = {"spec": {"template": {"spec": {"containers": [{"name": "server", "image": "cart:2"}]}}}}
    apps.patch_namespaced_deployment("cart", NS, body, _content_type=SMP)
    # Step 1: pause as soon as the first new pod exists.
    wait_for(lambda: "cart:2" in images(cluster, "Deployment", "cart").values(), timeout=5)
    apps.patch_namespaced_deployment("cart", NS, {"spec": {"paused": True}}, _content_type=SMP)
    paused = wait_for(
        lambda: (
            (d := cluster.get_workload("Deployment", NS, "cart"))
            and progressing(d)["reason"] == "DeploymentPaused"
            and d
        )
    )
    assert progressing(paused)["status"] == "Unknown"
    assert progressing(paused)["message"] == "Deployment is paused"
    assert paused["status"]["observedGeneration"] == paused["metadata"]["generation"]
    step1 = images(cluster, "Deployment", "cart")
    new = sorted(p for p, i in step1.items() if i == "cart:2")
    assert 1 <= len(new) <= 2  # the pause lands on the next tick at the latest
    # Paused: no pod is created or deleted, the new ones still become ready, and the
    # progress deadline (1 s) does not run.
    wait_for(lambda: all(ready(p) for p in cluster.pods("Deployment", NS, "cart")))
    time.sleep(1.5)
    assert images(cluster, "Deployment", "cart") == step1
    held = cluster.get_workload("Deployment", NS, "cart")
    assert progressing(held)["reason"] == "DeploymentPaused"
    assert held["status"]["updatedReplicas"] == len(new)
    assert held["status"]["readyReplicas"] == 4
    # Step 2: resume; the rollout finishes, the deadline counts from the resume.
    apps.patch_namespaced_deployment("cart", NS, {"spec": {"paused": False}}, _content_type=SMP)
    done = wait_for(
        lambda: (
            (d := cluster.get_workload("Deployment", NS, "cart"))
            and progressing(d)["reason"] == "NewReplicaSetAvailable"
            and d
        )
    )
    assert set(images(cluster, "Deployment", "cart").values()) == {"cart:2"}
    assert done["status"]["updatedReplicas"] == 4
    assert progressing(done)["status"] == "True"


def test_pause_before_the_image_change(emulated_cluster: EmulatedCluster, apps: Any) -> None:
    """kubectl rollout pause; set image; resume: nothing moves until the resume."""
    cluster = emulated_cluster
    cluster.add_workload("Deployment", NS, "cart", {"server": "cart:1"}, replicas=2)
    apps.patch_namespaced_deployment("cart", NS, {"spec": {"paused": True}}, _content_type=SMP)
    body = {"spec": {"template": {"spec": {"containers": [{"name": "server", "image": "cart:2"}]}}}}
    apps.patch_namespaced_deployment("cart", NS, body, _content_type=SMP)
    cluster.wait_idle()
    time.sleep(0.3)
    assert set(images(cluster, "Deployment", "cart").values()) == {"cart:1"}
    status = cluster.get_workload("Deployment", NS, "cart")["status"]
    assert status["updatedReplicas"] == 0
    apps.patch_namespaced_deployment("cart", NS, {"spec": {"paused": False}}, _content_type=SMP)
    wait_for(lambda: set(images(cluster, "Deployment", "cart").values()) == {"cart:2"})


def test_statefulset_canary_by_partition(emulated_cluster: EmulatedCluster, apps: Any) -> None:
    cluster = emulated_cluster
    cluster.add_workload("StatefulSet", NS, "db", {"db": "db:1"}, replicas=4)
    before = cluster.get_workload("StatefulSet", NS, "db")["status"]
    old_revision = before["currentRevision"]
    assert before["updateRevision"] == old_revision

    def step(partition: int, image: str | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {"updateStrategy": {"rollingUpdate": {"partition": partition}}}
        if image:
            spec["template"] = {"spec": {"containers": [{"name": "db", "image": image}]}}
        apps.patch_namespaced_stateful_set("db", NS, {"spec": spec}, _content_type=SMP)
        want = 4 - partition
        return dict(
            wait_for(
                lambda: (
                    (s := cluster.get_workload("StatefulSet", NS, "db")["status"])
                    and s.get("updatedReplicas") == want
                    and s.get("readyReplicas") == 4
                    and s
                )
            )
        )

    status = step(3, "db:2")  # one pod: the highest ordinal
    assert images(cluster, "StatefulSet", "db") == {
        "db-0": "db:1", "db-1": "db:1", "db-2": "db:1", "db-3": "db:2"
    }  # fmt: skip
    new_revision = status["updateRevision"]
    assert new_revision != old_revision
    assert status["currentRevision"] == old_revision
    assert status["currentReplicas"] == 3
    pods = {p["metadata"]["name"]: p for p in cluster.pods("StatefulSet", NS, "db")}
    assert pods["db-3"]["metadata"]["labels"]["controller-revision-hash"] == new_revision
    assert pods["db-0"]["metadata"]["labels"]["controller-revision-hash"] == old_revision
    time.sleep(0.3)  # held: nothing below the partition moves
    assert list(images(cluster, "StatefulSet", "db").values()).count("db:2") == 1

    status = step(1)  # three pods
    assert images(cluster, "StatefulSet", "db") == {
        "db-0": "db:1", "db-1": "db:2", "db-2": "db:2", "db-3": "db:2"
    }  # fmt: skip
    assert (status["currentRevision"], status["updateRevision"]) == (old_revision, new_revision)
    assert status["currentReplicas"] == 1

    status = step(0)  # all: the update revision becomes the current one
    assert set(images(cluster, "StatefulSet", "db").values()) == {"db:2"}
    status = revision_completed(cluster, "db", new_revision)
    assert status["currentReplicas"] == 4
    assert status["updateRevision"] == new_revision


def test_statefulset_scaled_during_a_partitioned_update(
    emulated_cluster: EmulatedCluster, apps: Any
) -> None:
    """As the real controller (newVersionedStatefulSetPod): an ordinal created while a
    partition holds the update back is at the current revision below the partition
    and at the update revision from it on; condemned ordinals go highest first."""
    cluster = emulated_cluster
    cluster.add_workload("StatefulSet", NS, "db", {"db": "db:1"}, replicas=4)
    old_revision = cluster.get_workload("StatefulSet", NS, "db")["status"]["currentRevision"]

    def patch(spec: dict[str, Any], replicas: int, updated: int) -> dict[str, Any]:
        apps.patch_namespaced_stateful_set("db", NS, {"spec": spec}, _content_type=SMP)
        return dict(
            wait_for(
                lambda: (
                    (s := cluster.get_workload("StatefulSet", NS, "db")["status"])
                    and s.get("observedGeneration")
                    == cluster.get_workload("StatefulSet", NS, "db")["metadata"]["generation"]
                    and (s.get("replicas"), s.get("readyReplicas")) == (replicas, replicas)
                    and s.get("updatedReplicas") == updated
                    and len(images(cluster, "StatefulSet", "db")) == replicas
                    and s
                )
            )
        )

    template = {"spec": {"containers": [{"name": "db", "image": "db:2"}]}}
    status = patch({"template": template, "updateStrategy": {"rollingUpdate": {"partition": 2}}},
                   replicas=4, updated=2)  # fmt: skip
    new_revision = status["updateRevision"]

    status = patch({"replicas": 6}, replicas=6, updated=4)
    assert images(cluster, "StatefulSet", "db") == {
        "db-0": "db:1", "db-1": "db:1", "db-2": "db:2", "db-3": "db:2", "db-4": "db:2",
        "db-5": "db:2",
    }  # fmt: skip
    assert (status["currentReplicas"], status["currentRevision"]) == (2, old_revision)
    assert status["updateRevision"] == new_revision

    # Down to 3: db-5, db-4, db-3 go, in that order.
    apps.patch_namespaced_stateful_set("db", NS, {"spec": {"replicas": 3}}, _content_type=SMP)
    seen: list[set[str]] = []

    def shrunk() -> bool:
        names = set(images(cluster, "StatefulSet", "db"))
        if not seen or seen[-1] != names:
            seen.append(names)
        return len(names) == 3

    wait_for(shrunk)
    assert all(names == {f"db-{i}" for i in range(len(names))} for names in seen), seen
    status = patch({"replicas": 3}, replicas=3, updated=1)
    assert images(cluster, "StatefulSet", "db") == {"db-0": "db:1", "db-1": "db:1", "db-2": "db:2"}
    assert (status["currentReplicas"], status["currentRevision"]) == (2, old_revision)

    # Up to 5 with the partition at 4: db-3 is below it (current revision), db-4 is not.
    status = patch({"replicas": 5, "updateStrategy": {"rollingUpdate": {"partition": 4}}},
                   replicas=5, updated=2)  # fmt: skip
    assert images(cluster, "StatefulSet", "db") == {
        "db-0": "db:1", "db-1": "db:1", "db-2": "db:2", "db-3": "db:1", "db-4": "db:2"
    }  # fmt: skip
    pods = {p["metadata"]["name"]: p for p in cluster.pods("StatefulSet", NS, "db")}
    assert pods["db-3"]["metadata"]["labels"]["controller-revision-hash"] == old_revision
    assert pods["db-4"]["metadata"]["labels"]["controller-revision-hash"] == new_revision
    assert (status["currentReplicas"], status["currentRevision"]) == (3, old_revision)

    # The partition lowered to 0: every ordinal is updated and the revision completes.
    patch({"updateStrategy": {"rollingUpdate": {"partition": 0}}}, replicas=5, updated=5)
    status = revision_completed(cluster, "db", new_revision)
    assert status["currentReplicas"] == 5
    assert set(images(cluster, "StatefulSet", "db").values()) == {"db:2"}


def test_statefulset_replaces_highest_ordinal_first(
    emulated_cluster: EmulatedCluster, apps: Any
) -> None:
    cluster = emulated_cluster
    cluster.add_workload("StatefulSet", NS, "db", {"db": "db:1"}, replicas=3)
    seen: list[str] = []
    body = {"spec": {"template": {"spec": {"containers": [{"name": "db", "image": "db:2"}]}}}}
    apps.patch_namespaced_stateful_set("db", NS, body, _content_type=SMP)

    def record() -> bool:
        for pod, image in sorted(images(cluster, "StatefulSet", "db").items()):
            if image == "db:2" and pod not in seen:
                seen.append(pod)
        return len(seen) == 3

    wait_for(record)
    assert seen == ["db-2", "db-1", "db-0"]


def test_back_to_an_earlier_template_reuses_its_revision(
    emulated_cluster: EmulatedCluster, apps: Any
) -> None:
    """As the real controllers do on an undo: the old ReplicaSet gets the newest number."""
    cluster = emulated_cluster
    cluster.add_workload("Deployment", NS, "cart", {"server": "cart:1"}, replicas=1)
    for image in ("cart:2", "cart:1"):
        body = {
            "spec": {"template": {"spec": {"containers": [{"name": "server", "image": image}]}}}
        }
        apps.patch_namespaced_deployment("cart", NS, body, _content_type=SMP)
        cluster.wait_idle()
    sets = apps.list_namespaced_replica_set(NS, label_selector="app=cart").items
    numbers = {
        rs.spec.template.spec.containers[0].image: rs.metadata.annotations[
            "deployment.kubernetes.io/revision"
        ]
        for rs in sets
    }
    assert numbers == {"cart:1": "3", "cart:2": "2"}
