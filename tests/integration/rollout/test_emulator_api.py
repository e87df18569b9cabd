"""The emulator's API semantics the runner relies on, checked over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.integration

NS = "shop"
SMP = "application/strategic-merge-patch+json"


@pytest.fixture
def apps(emulated_cluster: Any) -> client.AppsV1Api:
    emulated_cluster.add_workload(
        "Deployment", NS, "cart", {"server": "cart:1", "proxy": "envoy:1"}
    )
    return client.AppsV1Api(emulated_cluster.api_client())


def containers(obj: Any) -> dict[str, str]:
    return {c.name: c.image for c in obj.spec.template.spec.containers}


def test_strategic_merge_merges_containers_by_name(apps: client.AppsV1Api) -> None:
    body = {"spec": {"template": {"spec": {"containers": [{"name": "server", "image": "cart:2"}]}}}}
    before = apps.read_namespaced_deployment("cart", NS)
    after = apps.patch_namespaced_deployment("cart", NS, body, _content_type=SMP)
    assert containers(after) == {"server": "cart:2", "proxy": "envoy:1"}
    assert after.metadata.generation == before.metadata.generation + 1
    assert int(after.metadata.resource_version) > int(before.metadata.resource_version)


def test_merge_patch_replaces_lists(apps: client.AppsV1Api) -> None:
    body = {"spec": {"template": {"spec": {"containers": [{"name": "server", "image": "cart:2"}]}}}}
    after = apps.patch_namespaced_deployment(
        "cart", NS, body, _content_type="application/merge-patch+json"
    )
    assert containers(after) == {"server": "cart:2"}


def test_json_patch_replace(apps: client.AppsV1Api) -> None:
    ops = [{"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "envoy:2"}]
    after = apps.patch_namespaced_deployment("cart", NS, ops)  # list body -> json-patch
    assert containers(after)["proxy"] == "envoy:2"


def test_label_patch_does_not_bump_generation(apps: client.AppsV1Api) -> None:
    before = apps.read_namespaced_deployment("cart", NS)
    after = apps.patch_namespaced_deployment(
        "cart", NS, {"metadata": {"labels": {"x": "y"}}}, _content_type=SMP
    )
    assert after.metadata.generation == before.metadata.generation


def test_dry_run_stores_nothing(apps: client.AppsV1Api, emulated_cluster: Any) -> None:
    body = {"spec": {"template": {"spec": {"containers": [{"name": "server", "image": "cart:2"}]}}}}
    result = apps.patch_namespaced_deployment("cart", NS, body, dry_run="All", _content_type=SMP)
    assert containers(result)["server"] == "cart:2"
    assert emulated_cluster.images("Deployment", NS, "cart")["server"] == "cart:1"


def test_stale_resource_version_conflicts(apps: client.AppsV1Api) -> None:
    rv = apps.read_namespaced_deployment("cart", NS).metadata.resource_version
    apps.patch_namespaced_deployment(
        "cart", NS, {"metadata": {"labels": {"a": "1"}}}, _content_type=SMP
    )
    with pytest.raises(ApiException) as info:
        apps.patch_namespaced_deployment(
            "cart",
            NS,
            {"metadata": {"resourceVersion": rv, "labels": {"a": "2"}}},
            _content_type=SMP,
        )
    assert info.value.status == 409
    body = json.loads(info.value.body)
    assert body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]


def test_invalid_patch_is_422(apps: client.AppsV1Api) -> None:
    body = {"spec": {"selector": {"matchLabels": {"app": "other"}}}}
    with pytest.raises(ApiException) as info:
        apps.patch_namespaced_deployment("cart", NS, body, _content_type=SMP)
    assert info.value.status == 422
    assert "field is immutable" in json.loads(info.value.body)["message"]


def test_not_found_status_shape(apps: client.AppsV1Api) -> None:
    with pytest.raises(ApiException) as info:
        apps.read_namespaced_stateful_set("nope", NS)
    assert json.loads(info.value.body) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'statefulsets.apps "nope" not found',
        "reason": "NotFound",
        "code": 404,
        "details": {"name": "nope", "group": "apps", "kind": "statefulsets"},
    }


def test_forbidden_message_shape(apps: client.AppsV1Api, emulated_cluster: Any) -> None:
    emulated_cluster.forbid("get", "deployments")
    with pytest.raises(ApiException) as info:
        apps.read_namespaced_deployment("cart", NS)
    assert info.value.status == 403
    assert json.loads(info.value.body)["message"] == (
        'deployments.apps "cart" is forbidden: User "system:serviceaccount:default:convoy-rollout"'
        ' cannot get resource "deployments" in API group "apps" in the namespace "shop"'
    )


def test_forbid_one_object_after_some_requests(
    apps: client.AppsV1Api, emulated_cluster: Any
) -> None:
    emulated_cluster.add_workload("Deployment", NS, "other", {"c": "i:1"})
    body = {"spec": {"template": {"spec": {"containers": [{"name": "server", "image": "cart:2"}]}}}}
    emulated_cluster.forbid("patch", "deployments", "cart", after=1)
    apps.patch_namespaced_deployment("cart", NS, body, _content_type=SMP)  # let through
    for _ in range(3):  # then denied for good
        with pytest.raises(ApiException) as info:
            apps.patch_namespaced_deployment("cart", NS, body, _content_type=SMP)
        assert info.value.status == 403
    other = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i:2"}]}}}}
    apps.patch_namespaced_deployment("other", NS, other, _content_type=SMP)  # another object
    apps.read_namespaced_deployment("cart", NS)  # another verb
    emulated_cluster.allow("patch", "deployments", "cart")
    apps.patch_namespaced_deployment("cart", NS, body, _content_type=SMP)


def test_list_and_watch_with_selectors(apps: client.AppsV1Api, emulated_cluster: Any) -> None:
    from kubernetes import watch

    emulated_cluster.add_workload("Deployment", NS, "other", {"c": "i:1"})
    listed = apps.list_namespaced_deployment(NS, field_selector="metadata.name=cart")
    assert [d.metadata.name for d in listed.items] == ["cart"]
    assert [
        d.metadata.name
        for d in apps.list_namespaced_deployment(NS, label_selector="app in (other)").items
    ] == ["other"]
    body = {"spec": {"template": {"spec": {"containers": [{"name": "server", "image": "cart:2"}]}}}}
    apps.patch_namespaced_deployment("cart", NS, body, _content_type=SMP)
    seen = []
    for event in watch.Watch().stream(
        apps.list_namespaced_deployment,
        NS,
        field_selector="metadata.name=cart",
        resource_version=listed.metadata.resource_version,
        timeout_seconds=5,
    ):
        seen.append(event["object"].metadata.name)
        status = event["object"].status
        if (
            status.observed_generation == 2
            and status.updated_replicas == 3
            and status.available_replicas == 3
            and status.replicas == 3
        ):
            break
    assert set(seen) == {"cart"}
    conditions = {
        c.type: c.reason for c in apps.read_namespaced_deployment("cart", NS).status.conditions
    }
    assert conditions["Progressing"] == "NewReplicaSetAvailable"


def test_pods_and_replicasets(emulated_cluster: Any) -> None:
    emulated_cluster.add_workload("Deployment", NS, "cart", {"server": "cart:1"}, replicas=2)
    core = client.CoreV1Api(emulated_cluster.api_client())
    pods = core.list_namespaced_pod(NS, label_selector="app=cart").items
    assert len(pods) == 2
    assert all(p.status.container_statuses[0].ready for p in pods)
    rs = client.AppsV1Api(emulated_cluster.api_client()).list_namespaced_replica_set(NS).items
    assert [r.status.replicas for r in rs] == [2]


def test_injected_errors_and_request_log(apps: client.AppsV1Api, emulated_cluster: Any) -> None:
    emulated_cluster.inject_errors(status=503, n=1)
    with pytest.raises(ApiException) as info:
        apps.read_namespaced_deployment("cart", NS)
    assert info.value.status == 503
    apps.read_namespaced_deployment("cart", NS)
    assert [(r.method, r.status, r.verb) for r in emulated_cluster.requests[-2:]] == [
        ("GET", 503, "GET"),
        ("GET", 200, "GET"),
    ]


def test_seed_from_policy(emulated_cluster: Any) -> None:
    from convoy.policy.models import Policy

    policy = Policy.model_validate(
        {
            "apiVersion": "convoy/v1",
            "kind": "UpgradePolicy",
            "metadata": {"name": "shop"},
            "kubernetes": {"namespace": NS, "runnerImage": "convoy:1"},
            "services": [
                {
                    "name": "cart",
                    "workload": {"kind": "Deployment", "name": "cartservice"},
                    "containers": {"server": "reg.example.com:5000/cart:2.4.0"},
                },
                {
                    "name": "redis",
                    "workload": {"kind": "StatefulSet", "name": "redis-cart"},
                    "containers": {"redis": "redis:7.4-alpine"},
                },
            ],
        }
    )
    emulated_cluster.seed_from_policy(policy)
    assert emulated_cluster.images("Deployment", NS, "cartservice") == {
        "server": "reg.example.com:5000/cart:2.3.0"
    }
    assert emulated_cluster.images("StatefulSet", NS, "redis-cart") == {"redis": "redis:7.3-alpine"}


def test_watch_from_an_expired_resource_version_is_410(
    apps: client.AppsV1Api, emulated_cluster: Any
) -> None:
    from collections import deque

    from convoy.rollout.api import KubernetesIO, WorkloadRef

    with emulated_cluster.store.cond:
        emulated_cluster.store.events = deque(emulated_cluster.store.events, maxlen=3)
    for i in range(5):
        apps.patch_namespaced_deployment(
            "cart", NS, {"metadata": {"labels": {"n": str(i)}}}, _content_type=SMP
        )
    io = KubernetesIO(emulated_cluster.api_client())
    events = list(io.watch(WorkloadRef(NS, "Deployment", "cart"), "1", 1))
    assert [(e["type"], e["object"]["code"], e["object"]["reason"]) for e in events] == [
        ("ERROR", 410, "Expired")
    ]
