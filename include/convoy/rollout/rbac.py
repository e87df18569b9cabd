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
"""

from __future__ import annotations

from typing import Any

import yaml

from convoy.policy.models import Policy

MANAGED_BY = {"app.kubernetes.io/managed-by": "convoy"}
PLURALS = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}


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
