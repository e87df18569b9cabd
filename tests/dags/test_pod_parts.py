"""The pods of one policy share their Kubernetes models, never their lists.

Sharing keeps a thousand-policy parse from holding eleven model objects per pod
(docs/scale.md); the KPO extends ``env_vars`` in place when it builds a pod, so
each operator must own the lists that hold the shared models.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dag_policies import policy_dict
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from convoy.airflow import build_dag
from convoy.policy import load_policy


def _dag(write_policy: Callable[..., Path], name: str, cpu: str) -> Any:
    data = policy_dict(name)
    data["kubernetes"]["resources"] = {"cpuRequest": cpu}
    return build_dag(load_policy(write_policy(f"{name}.yaml", data)))


@pytest.fixture
def dags(write_policy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    monkeypatch.setenv("CONVOY_EXECUTION_MODE", "kubernetes")
    return [_dag(write_policy, "shop", "100m"), _dag(write_policy, "other", "250m")]


def _pods(dag: Any) -> list[Any]:
    return [t for t in dag.tasks if t.task_id.startswith(("wave_", "rollback.revert_"))]


def test_pods_of_a_policy_share_models_but_own_their_lists(dags: list[Any]) -> None:
    first, second = _pods(dags[0])[:2]
    assert first.task_id != second.task_id
    for field in ("security_context", "container_security_context", "container_resources"):
        assert getattr(first, field) is getattr(second, field), field
    for field in ("env_vars", "volumes", "volume_mounts"):
        assert getattr(first, field) is not getattr(second, field), field
        assert getattr(first, field)[0] is getattr(second, field)[0], field

    first.env_vars.append(k8s.V1EnvVar(name="ONLY_HERE", value="1"))
    assert [e.name for e in second.env_vars] == ["PYTHONDONTWRITEBYTECODE"]


def test_each_policy_gets_its_own_models(dags: list[Any]) -> None:
    shop, other = (_pods(d)[0] for d in dags)
    assert shop.container_resources is not other.container_resources
    assert shop.container_resources.requests["cpu"] == "100m"
    assert other.container_resources.requests["cpu"] == "250m"


def test_shared_models_build_the_same_pod_as_before(dags: list[Any]) -> None:
    pods = _pods(dags[0])
    specs = [
        ApiClient().sanitize_for_serialization(t.build_pod_request_obj(dry_run=True))["spec"]
        for t in pods
    ]
    for spec in specs:
        container = next(c for c in spec["containers"] if c["name"] == "base")
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert container["env"] == [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}]
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert {"name": "tmp", "emptyDir": {}} in spec["volumes"]
    # Building the pods (the XCom sidecar adds its own volume) left the shared parts alone.
    for task in pods:
        assert [len(task.env_vars), len(task.volumes), len(task.volume_mounts)] == [1, 1, 1]
