"""Helpers to build small policies in memory (imported by the plan tests)."""

from __future__ import annotations

from typing import Any

from convoy.policy.models import Policy


def make_policy(
    services: list[dict[str, Any]],
    *,
    max_parallel: int = 4,
    datastores: list[dict[str, Any]] | None = None,
    automatic: bool = True,
) -> Policy:
    return Policy.model_validate(
        {
            "apiVersion": "convoy/v1",
            "kind": "UpgradePolicy",
            "metadata": {"name": "p"},
            "kubernetes": {"namespace": "ns", "runnerImage": "r:1"},
            "rollout": {"maxParallel": max_parallel},
            "services": services,
            "datastores": datastores or [],
            "rollback": {"automatic": automatic},
        }
    )


def svc(name: str, *deps: str, kind: str = "Deployment") -> dict[str, Any]:
    return {
        "name": name,
        "workload": {"kind": kind, "name": f"{name}-wl"},
        "containers": {"main": f"reg/{name}:2", "sidecar": f"reg/{name}-side:2"},
        "dependsOn": list(deps),
    }
