"""Least-privilege RBAC for a policy's rollout pods: ServiceAccount, Role, RoleBinding.

The Role grants, in the policy namespace only:

- ``get``, ``patch`` on the policy's workload kinds, restricted by
  ``resourceNames`` to the policy's workload names;
- ``list``, ``watch`` on those kinds. Kubernetes cannot restrict ``list`` /
  ``watch`` of a collection by ``resourceNames`` unless the request carries a
  ``metadata.name`` field selector — which the runner always sends — so the
  names are listed there too; clients that list without the selector are denied;
- ``list`` on ``pods`` (by label selector, once, to explain a failed rollout).

The security tests replay every call the runner makes against the emulated
API server and check that the Role allows each one and grants nothing more.

Nothing else: no ``*``, no create/delete/update, no secrets, nothing cluster-scoped.

:func:`render_status_rbac` is the separate read-only Role of ``convoy status``
and of the drift check (``driftCheck``), which read every workload of the
policy's kinds with one LIST per kind and namespace: ``list`` on those kinds in
the policy namespace, nothing else (no ``get``, ``watch``, pods or writes). A
collection LIST cannot be restricted by ``resourceNames``, so this Role lets
its subjects read every Deployment/StatefulSet/DaemonSet of that one namespace
(container images, annotations, status), not their pods, logs or Secrets. It
is bound to the identity of the policy's ``kubernetes`` connection where the
check runs: by default the Airflow workers' ServiceAccount
(``convoy/convoy-airflow-worker``, ``deploy/rbac/airflow-workers.yaml``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from convoy.policy.models import Policy

MANAGED_BY = {"app.kubernetes.io/managed-by": "convoy"}
PLURALS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}
#: Where the drift check runs with an ``in_cluster`` connection: the Airflow workers.
WORKER_SERVICE_ACCOUNT = {
    "kind": "ServiceAccount",
    "name": "convoy-airflow-worker",
    "namespace": "convoy",
}


def _labels(policy: Policy) -> dict[str, str]:
    return {**MANAGED_BY, "convoy.dev/policy": policy.metadata.name}


def _meta(policy: Policy, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": policy.kubernetes.namespace, "labels": _labels(policy)}


def render_rbac(policy: Policy) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding for ``policy``'s rollout pods."""
    sa = policy.kubernetes.service_account
    names_by_resource: dict[str, set[str]] = {}
    for svc in policy.services:
        names_by_resource.setdefault(PLURALS[svc.workload.kind], set()).add(svc.workload.name)
    rules: list[dict[str, Any]] = []
    for resource in sorted(names_by_resource):
        names = sorted(names_by_resource[resource])
        rules.append(
            {
                "apiGroups": ["apps"],
                "resources": [resource],
                "resourceNames": names,
                "verbs": ["get", "patch"],
            }
        )
        rules.append(
            {
                "apiGroups": ["apps"],
                "resources": [resource],
                "resourceNames": names,
                "verbs": ["list", "watch"],
            }
        )
    rules.append({"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]})
    role_name = f"convoy-rollout-{policy.metadata.name}"
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(policy, sa),
            "automountServiceAccountToken": True,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(policy, role_name),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(policy, role_name),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": role_name,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": sa, "namespace": policy.kubernetes.namespace}
            ],
        },
    ]


def render_rbac_yaml(policy: Policy) -> str:
    """:func:`render_rbac` as a multi-document YAML string."""
    return yaml.safe_dump_all(render_rbac(policy), sort_keys=False)


def status_role_name(policy: Policy) -> str:
    return f"convoy-status-{policy.metadata.name}"


def render_status_rbac(
    policy: Policy, subjects: Sequence[dict[str, str]] = (WORKER_SERVICE_ACCOUNT,)
) -> list[dict[str, Any]]:
    """Role and RoleBinding that let ``subjects`` run ``convoy status`` / the drift check.

    ``subjects`` are RoleBinding subjects (``ServiceAccount`` with a namespace,
    ``User`` or ``Group``); the default is the Airflow workers' ServiceAccount.
    """
    if not subjects:
        raise ValueError("a RoleBinding needs at least one subject")
    resources = sorted({PLURALS[s.workload.kind] for s in policy.services})
    role_name = status_role_name(policy)
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(policy, role_name),
            "rules": [{"apiGroups": ["apps"], "resources": resources, "verbs": ["list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(policy, role_name),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": role_name,
            },
            "subjects": [_subject(s) for s in subjects],
        },
    ]


def _subject(subject: dict[str, str]) -> dict[str, str]:
    if subject["kind"] == "ServiceAccount":
        return {
            "kind": "ServiceAccount",
            "name": subject["name"],
            "namespace": subject["namespace"],
        }
    return {
        "kind": subject["kind"],
        "apiGroup": "rbac.authorization.k8s.io",
        "name": subject["name"],
    }


def render_status_rbac_yaml(
    policy: Policy, subjects: Sequence[dict[str, str]] = (WORKER_SERVICE_ACCOUNT,)
) -> str:
    """:func:`render_status_rbac` as a multi-document YAML string."""
    return yaml.safe_dump_all(render_status_rbac(policy, subjects), sort_keys=False)
