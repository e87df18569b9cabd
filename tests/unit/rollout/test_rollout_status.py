"""Pure rollout judgement (kubectl rollout status rules) and pod diagnosis."""

from __future__ import annotations

from typing import Any

import pytest

from convoy.rollout.errors import (
    CrashLooping,
    Forbidden,
    ImagePullFailed,
    PodUnschedulable,
    UnsupportedUpdateStrategy,
)
from convoy.rollout.status import diagnose, judge, not_ready_reason


def deployment(gen: int = 2, observed: int = 2, replicas: int = 3, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "cart", "generation": gen},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": observed, **status},
    }


@pytest.mark.parametrize(
    ("obj", "done", "fragment"),
    [
        (deployment(observed=1, replicas=3, updatedReplicas=3, availableReplicas=3), False,
         "spec update to be observed"),
        (deployment(updatedReplicas=1), False, "1 out of 3 new replicas"),
        (deployment(updatedReplicas=3, replicas=3, availableReplicas=3) | {
            "status": {"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3,
                       "availableReplicas": 3}}, False, "1 old replicas are pending termination"),
        (deployment(updatedReplicas=3, availableReplicas=2), False, "2 of 3 updated replicas"),
        (deployment(updatedReplicas=3, availableReplicas=3, readyReplicas=3), True,
         "successfully rolled out"),
    ],
)  # fmt: skip
def test_deployment(obj: dict[str, Any], done: bool, fragment: str) -> None:
    state = judge("Deployment", obj)
    assert state.done is done
    assert fragment in state.message


def test_deployment_progress_deadline() -> None:
    obj = deployment(
        updatedReplicas=1,
        conditions=[
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        ],
    )
    state = judge("Deployment", obj)
    assert not state.done
    assert state.failed == 'deployment "cart" exceeded its progress deadline'


def sts(status: dict[str, Any], strategy: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "db", "generation": 2},
        "spec": {"replicas": 3, "updateStrategy": strategy or {"type": "RollingUpdate"}},
        "status": {"observedGeneration": 2, **status},
    }


@pytest.mark.parametrize(
    ("status", "strategy", "done"),
    [
        ({"readyReplicas": 2, "updatedReplicas": 3}, None, False),
        ({"readyReplicas": 3, "updatedReplicas": 3, "currentRevision": "a", "updateRevision": "b"},
         None, False),
        ({"readyReplicas": 3, "updatedReplicas": 3, "currentRevision": "b", "updateRevision": "b"},
         None, True),
        ({"readyReplicas": 3, "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "b"},
         {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}, True),
        ({"readyReplicas": 3, "updatedReplicas": 0, "currentRevision": "a", "updateRevision": "b"},
         {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}, False),
    ],
)  # fmt: skip
def test_statefulset(status: dict[str, Any], strategy: dict[str, Any] | None, done: bool) -> None:
    assert judge("StatefulSet", sts(status, strategy)).done is done


def test_on_delete_is_refused() -> None:
    with pytest.raises(UnsupportedUpdateStrategy):
        judge("StatefulSet", sts({}, {"type": "OnDelete"}))


@pytest.mark.parametrize(
    ("status", "done"),
    [
        ({"desiredNumberScheduled": 3, "updatedNumberScheduled": 2, "numberAvailable": 3}, False),
        ({"desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 2}, False),
        ({"desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3}, True),
    ],
)
def test_daemonset(status: dict[str, Any], done: bool) -> None:
    obj = {"metadata": {"name": "agent", "generation": 1}, "spec": {},
           "status": {"observedGeneration": 1, **status}}  # fmt: skip
    assert judge("DaemonSet", obj).done is done


def pod(name: str, image: str, state: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "server", "image": image}]},
        "status": {
            "containerStatuses": [{"name": "server", "image": image, "ready": False,
                                   "restartCount": 4, "state": state}],
            **extra,
        },
    }  # fmt: skip


def test_diagnose_prefers_new_pods_and_names_them() -> None:
    old = pod("cart-old", "cart:1", {"waiting": {"reason": "CrashLoopBackOff"}})
    new = pod("cart-new", "cart:2", {"waiting": {"reason": "ImagePullBackOff", "message": "nope"}})
    failure = diagnose([old, new], {"server": "cart:2"})
    assert isinstance(failure, ImagePullFailed)
    assert failure.details["pod"] == "cart-new"
    assert failure.details["container"] == "server"
    assert "cart-new" in failure.message
    assert "ImagePullBackOff" in failure.message


def test_diagnose_crashloop_and_unschedulable() -> None:
    crash = pod("p1", "i:2", {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}})
    assert isinstance(diagnose([crash], {"server": "i:2"}), CrashLooping)
    pending = {"metadata": {"name": "p2"}, "spec": {"containers": []},
               "status": {"conditions": [{"type": "PodScheduled", "reason": "Unschedulable",
                                          "message": "0/3 nodes"}]}}  # fmt: skip
    failure = diagnose([pending], {})
    assert isinstance(failure, PodUnschedulable)
    assert "0/3 nodes" in failure.message


def test_diagnose_healthy_and_not_ready() -> None:
    running = pod("p", "i:2", {"running": {}})
    assert diagnose([running], {"server": "i:2"}) is None
    assert "running but not ready" in not_ready_reason([running])
    creating = pod("p", "i:2", {"waiting": {"reason": "ContainerCreating"}})
    assert diagnose([creating], {"server": "i:2"}) is None


def test_forbidden_from_server_message() -> None:
    msg = (
        'deployments.apps "x" is forbidden: User "system:serviceaccount:ns:sa" cannot patch '
        'resource "deployments" in API group "apps" in the namespace "ns"'
    )
    err = Forbidden.from_message(msg, verb="?", resource="?", group="?", namespace="?")
    assert err.to_dict() | {"message": ""} == {
        "error": "Forbidden",
        "message": "",
        "verb": "patch",
        "resource": "deployments",
        "group": "apps",
        "namespace": "ns",
        "user": "system:serviceaccount:ns:sa",
        "serverMessage": msg,
    }
    assert 'verb "patch"' in err.message
