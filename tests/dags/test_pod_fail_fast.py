"""Kubernetes mode: a rollout pod whose result names a deterministic error is not retried."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from dag_policies import policy_dict
from fake_ti import FakePodManager, FakeTI

from convoy.airflow import build_dag
from convoy.policy import load_policy


@pytest.fixture
def dag(write_policy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CONVOY_EXECUTION_MODE", "kubernetes")
    return build_dag(load_policy(write_policy("shop.yaml", policy_dict("shop"))))


def _after_pod(task: Any, result: dict[str, Any] | None) -> None:
    """What the KPO does before it raises for a failed pod: read the pod's result."""
    task._convoy_context = {"ti": FakeTI(task.task_id), "run_id": "r"}
    if result is not None:
        task.__dict__["pod_manager"] = FakePodManager(result)
        task.extract_xcom(pod=None)


def _failure(error: str) -> dict[str, Any]:
    return {"ok": False, "action": "apply", "error": error, "message": f"{error} on cartservice"}


@pytest.mark.parametrize(
    "error", ["PodFailure", "DeadlineExceeded", "Forbidden", "WorkloadNotFound"]
)
def test_deterministic_rollout_failure_fails_without_retry(dag: Any, error: str) -> None:
    task = dag.task_dict["wave_1.rollout_cart"].pod_runner()
    _after_pod(task, _failure(error))
    with pytest.raises(AirflowFailException, match=f"rollout of cart failed: {error} on cart"):
        task.raise_if_deterministic(AirflowException("Pod returned a failure"))


@pytest.mark.parametrize(
    "result",
    [
        _failure("ApiUnavailable"),  # the API server may come back
        _failure("ConfigException"),  # not a rollout error: kubeconfig, in-cluster config...
        None,  # the pod left no result (runner image never started)
        {"ok": True, "action": "apply", "status": "complete"},
    ],
)
def test_other_failures_stay_retryable(dag: Any, result: dict[str, Any] | None) -> None:
    task = dag.task_dict["wave_1.rollout_cart"].pod_runner()
    _after_pod(task, result)
    task.raise_if_deterministic(AirflowException("Pod returned a failure"))  # no raise


def test_reverts_retry_what_may_be_fixed_meanwhile(dag: Any) -> None:
    task = dag.task_dict["rollback.revert_cart"].pod_runner()
    _after_pod(task, _failure("PodFailure"))
    task.raise_if_deterministic(AirflowException("Pod returned a failure"))  # no raise


@pytest.mark.parametrize("error", ["WorkloadNotFound", "ContainerNotFound", "NothingToRevert"])
def test_reverts_fail_at_once_when_no_retry_can_help(dag: Any, error: str) -> None:
    """Same rule as a local revert: the workload or container is gone, nothing to revert."""
    task = dag.task_dict["rollback.revert_cart"].pod_runner()
    _after_pod(task, {**_failure(error), "action": "revert"})
    with pytest.raises(AirflowFailException, match=f"revert of cart failed: {error} on cart"):
        task.raise_if_deterministic(AirflowException("Pod returned a failure"))
