"""``driftCheck`` adds the DAG ``<name>__drift`` beside the policy's DAG."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from convoy.airflow import drift
from convoy.airflow.registry import register_policies

POLICY: dict[str, Any] = {
    "apiVersion": "convoy/v1",
    "kind": "UpgradePolicy",
    "metadata": {"name": "shop", "tags": ["team-a"]},
    "kubernetes": {"namespace": "shop", "runnerImage": "registry.example.com/convoy:0.1.0"},
    "services": [
        {
            "name": "web",
            "workload": {"kind": "Deployment", "name": "web"},
            "containers": {"web": "nginx:1.27"},
        }
    ],
    "driftCheck": {"schedule": "@hourly"},
}


def test_the_drift_check_dag(write_policy: Callable[..., Path]) -> None:
    path = write_policy("shop.yaml", POLICY)
    write_policy("other.yaml", {**POLICY, "metadata": {"name": "other"}, "driftCheck": None})
    dags = register_policies(path.parent, dag_id=None)
    assert sorted(dags) == ["other", "shop", "shop__drift"]
    dag = dags["shop__drift"]
    assert [t.task_id for t in dag.tasks] == ["report"]
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert sorted(dag.tags) == ["convoy", "convoy-drift", "team-a"]
    assert dag.schedule == "@hourly"
    assert dag.tasks[0].op_kwargs == {"policy_path": str(path.resolve())}
    # a task process of the drift check builds it (and only it)
    only = register_policies(path.parent, dag_id="shop__drift")
    assert list(only) == ["shop__drift"]


def test_names() -> None:
    assert drift.drift_dag_id("shop") == "shop__drift"
    assert drift.policy_name("shop__drift") == "shop"
    assert drift.policy_name("shop") is None
    assert drift.policy_name("__drift") is None


def test_findings_list_what_alerts() -> None:
    report = {
        "services": [
            {"name": "cart", "verdict": "drift", "reasons": ["server: runs cart:hotfix"]},
            {"name": "redis", "verdict": "in sync", "reasons": []},
        ],
        "datastores": [{"name": "orders", "verdict": "pending", "reasons": ["pending: 3"]}],
    }
    assert drift.findings(report) == ["cart: drift (server: runs cart:hotfix)"]
