"""The pod a step's task builds when it runs: per policy, never shared between pods.

Parsing builds no Kubernetes model (``PodStepOperator`` holds a ``PodSpec``);
the runner KPO of a task builds its models once, and the KPO extends
``env_vars`` in place when it builds a pod, so no two runners may share a list.
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
from convoy.airflow.pods import PodStepOperator
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
    return [t for t in dag.tasks if isinstance(t, PodStepOperator)]


def test_the_pods_of_a_policy_share_one_spec(dags: list[Any]) -> None:
    first, second = _pods(dags[0])[:2]
    assert first.task_id != second.task_id
    assert first.pod_spec is second.pod_spec
    assert first.pod_spec.deadline_seconds == 320


def test_runners_own_their_lists(dags: list[Any]) -> None:
    first, second = (t.pod_runner() for t in _pods(dags[0])[:2])
    for field in ("env_vars", "volumes", "volume_mounts"):
        assert getattr(first, field) is not getattr(second, field), field
    first.env_vars.append(k8s.V1EnvVar(name="ONLY_HERE", value="1"))
    assert [e.name for e in second.env_vars] == ["PYTHONDONTWRITEBYTECODE"]


def test_each_policy_gets_its_own_resources(dags: list[Any]) -> None:
    shop, other = (_pods(d)[0].pod_runner() for d in dags)
    assert shop.container_resources.requests["cpu"] == "100m"
    assert other.container_resources.requests["cpu"] == "250m"


def test_runners_build_least_privilege_pods(dags: list[Any]) -> None:
    runners = [t.pod_runner() for t in _pods(dags[0])]
    specs = [
        ApiClient().sanitize_for_serialization(r.build_pod_request_obj(dry_run=True))["spec"]
        for r in runners
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
    # Building the pods (the XCom sidecar adds its own volume) left the runners' lists alone.
    for runner in runners:
        assert [len(runner.env_vars), len(runner.volumes), len(runner.volume_mounts)] == [1, 1, 1]
