"""Policy data of the DAG tests (imported by them; conftest only holds fixtures)."""

from __future__ import annotations

from typing import Any


def policy_dict(name: str = "shop", **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "apiVersion": "convoy/v1",
        "kind": "UpgradePolicy",
        "metadata": {"name": name, "owner": "platform", "tags": ["shop"], "description": "d"},
        "schedule": None,
        "startDate": "2026-01-01",
        "execution": "local",
        "kubernetes": {
            "namespace": "shop",
            "serviceAccount": "convoy-rollout",
            "runnerImage": "registry.example.com/convoy:0.1.0",
        },
        "rollout": {"maxParallel": 2, "progressDeadlineSeconds": 20},
        "services": [
            {"name": "redis", "workload": {"kind": "StatefulSet", "name": "redis-cart"},
             "containers": {"redis": "reg/redis:2.4.0"}},
            {"name": "currency", "workload": {"kind": "Deployment", "name": "currencyservice"},
             "containers": {"server": "reg/currency:2.4.0"}},
            {"name": "cart", "workload": {"kind": "Deployment", "name": "cartservice"},
             "containers": {"server": "reg/cart:2.4.0", "proxy": "reg/envoy:1.30.0"},
             "dependsOn": ["redis"]},
            {"name": "checkout", "workload": {"kind": "Deployment", "name": "checkoutservice"},
             "containers": {"server": "reg/checkout:2.4.0"}, "dependsOn": ["cart", "currency"]},
        ],
    }  # fmt: skip
    data.update(overrides)
    return data
