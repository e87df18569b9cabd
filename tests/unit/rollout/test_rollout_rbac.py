"""RBAC manifests: valid against the real Kubernetes schemas, and least privilege."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from convoy.policy.models import Policy
from convoy.rollout.rbac import (
    WORKER_SERVICE_ACCOUNT,
    render_rbac,
    render_rbac_yaml,
    render_status_rbac,
    render_status_rbac_yaml,
)

NAMESPACED_KINDS = {"ServiceAccount", "Role", "RoleBinding"}


@pytest.fixture
def policy() -> Policy:
    return Policy.model_validate(
        {
            "apiVersion": "convoy/v1",
            "kind": "UpgradePolicy",
            "metadata": {"name": "shop-2-4"},
            "kubernetes": {
                "namespace": "shop",
                "serviceAccount": "convoy-rollout",
                "runnerImage": "registry.example.com/convoy:0.1.0",
            },
            "services": [
                {"name": "cart", "workload": {"kind": "Deployment", "name": "cartservice"},
                 "containers": {"server": "cart:2.4.0"}, "dependsOn": ["redis"]},
                {"name": "front", "workload": {"kind": "Deployment", "name": "frontend"},
                 "containers": {"server": "front:2.4.0"}},
                {"name": "redis", "workload": {"kind": "StatefulSet", "name": "redis-cart"},
                 "containers": {"redis": "redis:7.4-alpine"}},
            ],
        }
    )  # fmt: skip


@pytest.mark.parametrize("version", ["1.33", "1.37"])
def test_manifests_validate_against_real_schemas(policy: Policy, version: str) -> None:
    for obj in render_rbac(policy):
        kubernetes_validate.validate(obj, version, strict=True)


def test_kinds_namespace_and_labels(policy: Policy) -> None:
    objs = render_rbac(policy)
    assert [o["kind"] for o in objs] == ["ServiceAccount", "Role", "RoleBinding"]
    for obj in objs:
        assert obj["metadata"]["namespace"] == "shop"
        assert obj["metadata"]["labels"] == {
            "app.kubernetes.io/managed-by": "convoy",
            "convoy.dev/policy": "shop-2-4",
        }
    binding = objs[2]
    assert binding["roleRef"]["name"] == objs[1]["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "convoy-rollout", "namespace": "shop"}
    ]


def rules(policy: Policy) -> list[dict[str, Any]]:
    return list(render_rbac(policy)[1]["rules"])


def test_least_privilege(policy: Policy) -> None:
    granted: set[tuple[str, str, str]] = set()
    for rule in rules(policy):
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, [])
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    granted.add((group, resource, verb))
    writes = {g for g in granted if g[2] not in ("get", "list", "watch")}
    assert writes == {("apps", "deployments", "patch"), ("apps", "statefulsets", "patch")}
    resources = {(g, r) for g, r, _ in granted}
    assert resources == {("apps", "deployments"), ("apps", "statefulsets"), ("", "pods")}
    assert {v for g, r, v in granted if r == "pods"} == {"list"}
    assert not any(r in ("secrets", "daemonsets", "configmaps") for _, r in resources)
    assert {o["kind"] for o in render_rbac(policy)} <= NAMESPACED_KINDS  # nothing cluster-scoped


def test_workload_rules_are_restricted_to_policy_names(policy: Policy) -> None:
    by_resource: dict[str, list[str]] = {}
    for rule in rules(policy):
        if rule["apiGroups"] == ["apps"] and "patch" in rule["verbs"]:
            assert "resourceNames" in rule
            by_resource[rule["resources"][0]] = rule["resourceNames"]
    assert by_resource == {
        "deployments": ["cartservice", "frontend"],
        "statefulsets": ["redis-cart"],
    }


def test_yaml_is_multi_document(policy: Policy) -> None:
    docs = list(yaml.safe_load_all(render_rbac_yaml(policy)))
    assert docs == render_rbac(policy)


# --- convoy status / driftCheck: the read-only Role ---------------------------------

SUBJECTS = (
    WORKER_SERVICE_ACCOUNT,
    {"kind": "ServiceAccount", "name": "status-reader", "namespace": "ops"},
    {"kind": "User", "name": "alice@example.com"},
    {"kind": "Group", "name": "sre"},
)


@pytest.mark.parametrize("version", ["1.33", "1.37"])
def test_status_manifests_validate_against_real_schemas(policy: Policy, version: str) -> None:
    for subjects in ((WORKER_SERVICE_ACCOUNT,), SUBJECTS):
        for obj in render_status_rbac(policy, subjects):
            kubernetes_validate.validate(obj, version, strict=True)


def test_status_role_lists_the_policy_kinds_in_its_namespace_only(policy: Policy) -> None:
    role, binding = render_status_rbac(policy)
    assert role["kind"] == "Role"  # never a ClusterRole: one policy, one namespace
    assert binding["kind"] == "RoleBinding"
    for obj in (role, binding):
        assert obj["metadata"]["namespace"] == "shop"
        assert obj["metadata"]["name"] == "convoy-status-shop-2-4"
        assert obj["metadata"]["labels"]["convoy.dev/policy"] == "shop-2-4"
    # exactly list, of the kinds the policy has (no daemonsets here), nothing by name
    assert role["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["list"]}
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "convoy-airflow-worker", "namespace": "convoy"}
    ]


def test_status_role_subjects(policy: Policy) -> None:
    binding = render_status_rbac(policy, SUBJECTS)[1]
    assert binding["subjects"][1:] == [
        {"kind": "ServiceAccount", "name": "status-reader", "namespace": "ops"},
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice@example.com"},
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "sre"},
    ]
    with pytest.raises(ValueError, match="at least one subject"):
        render_status_rbac(policy, ())


def test_status_yaml_is_multi_document(policy: Policy) -> None:
    docs = list(yaml.safe_load_all(render_status_rbac_yaml(policy)))
    assert docs == render_status_rbac(policy)
