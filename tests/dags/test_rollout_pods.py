"""``execution: kubernetes``: rollout/revert steps as KubernetesPodOperators, rendered offline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from dag_policies import policy_dict
from fake_ti import FakeTI
from kubernetes.client import ApiClient
from kubernetes_validate.utils import all_versions

from convoy.airflow import build_dag
from convoy.airflow.pods import (
    PodStepOperator,
    RevertPod,
    RevertPodOperator,
    RolloutPod,
    RolloutPodOperator,
)
from convoy.policy import load_policy

K8S_VERSION = "1.33.0"


@pytest.fixture
def dag(write_policy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CONVOY_EXECUTION_MODE", "kubernetes")
    data = policy_dict("shop")
    data["kubernetes"]["resources"] = {"cpuRequest": "100m", "memoryLimit": "128Mi"}
    return build_dag(load_policy(write_policy("shop.yaml", data)))


def pod_dict(task: Any) -> dict[str, Any]:
    pod = task.build_pod_request_obj(dry_run=True)
    return ApiClient().sanitize_for_serialization(pod)  # type: ignore[no-any-return]


def test_env_override_selects_kubernetes_mode(dag: Any) -> None:
    assert isinstance(dag.task_dict["wave_1.rollout_cart"], RolloutPodOperator)
    assert isinstance(dag.task_dict["rollback.revert_cart"], RevertPodOperator)


def test_rollout_pod_is_valid_and_least_privilege(dag: Any) -> None:
    task = dag.task_dict["wave_1.rollout_cart"].pod_runner()
    obj = pod_dict(task)
    assert K8S_VERSION in {v.split("-")[0].lstrip("v") for v in all_versions()}
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)

    spec = obj["spec"]
    assert obj["metadata"]["namespace"] == "shop"
    labels = obj["metadata"]["labels"]
    assert labels["convoy.dev/policy"] == "shop"
    assert labels["app.kubernetes.io/managed-by"] == "convoy"
    assert spec["serviceAccountName"] == "convoy-rollout"
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 50000,
        "runAsGroup": 0,
        "fsGroup": 0,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    containers = {c["name"]: c for c in spec["containers"]}
    assert set(containers) == {"base", "airflow-xcom-sidecar"}  # do_xcom_push
    for container in containers.values():
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
    base = containers["base"]
    assert base["image"] == "registry.example.com/convoy:0.1.0"
    assert base["resources"] == {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": "500m", "memory": "128Mi"},
    }
    assert base["command"] == ["python", "-m", "convoy.rollout"]
    assert base["args"] == [
        "apply", "--namespace", "shop", "--kind", "Deployment", "--name", "cartservice",
        "--container", "proxy=reg/envoy:1.30.0", "--container", "server=reg/cart:2.4.0",
        "--deadline-seconds", "20", "--run-id", "{{ run_id }}",
    ]  # fmt: skip
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 320


def test_pod_operator_settings(dag: Any) -> None:
    task = dag.task_dict["wave_0.rollout_redis"]
    assert task.pool == "default_pool"
    assert task.trigger_rule == "none_failed"
    assert "arguments" in task.template_fields
    runner = task.pod_runner()
    assert isinstance(runner, RolloutPod)
    assert runner.on_finish_action.value == "delete_pod"
    assert runner.do_xcom_push is True
    assert runner.kubernetes_conn_id == "kubernetes_default"
    assert runner.task_id == task.task_id
    assert runner.service == "redis"
    assert runner.name == "convoy-redis"
    assert runner.labels["convoy.dev/service"] == "redis"
    assert runner.log is task.log


def test_parsing_builds_no_kubernetes_model_and_no_pod_operator(dag: Any) -> None:
    """The DAG holds light operators; their KPO is built when the task runs."""
    pods = [t for t in dag.tasks if isinstance(t, PodStepOperator)]
    assert len(pods) == 8  # 4 rollouts, 4 reverts
    for task in pods:
        assert not isinstance(task, KubernetesPodOperator)
        assert task._runner is None
        held = [v for v in vars(task).values() if type(v).__module__.startswith("kubernetes.")]
        assert held == [], task.task_id
    revert = dag.task_dict["rollback.revert_cart"]
    assert isinstance(revert.pod_runner(), RevertPod)
    assert revert.pod_runner() is revert.pod_runner()  # once per task process
    assert revert.pod_runner().apply_task_id == "wave_1.rollout_cart"


def test_run_id_is_templated(dag: Any) -> None:
    task = dag.task_dict["wave_0.rollout_redis"]
    task.render_template_fields({"run_id": "manual__1", "params": {}})
    assert task.arguments[-2:] == ["--run-id", "manual__1"]
    assert task.pod_runner().arguments[-2:] == ["--run-id", "manual__1"]


def _ti(dag: Any, xcoms: dict[tuple[str, str], Any]) -> FakeTI:
    """A task instance whose run record is the policy's, with the run's ``xcoms``."""
    chosen = xcoms.get(("preflight", "return_value")) or {}
    ti = FakeTI("task")
    ti.freeze(
        dag.get_task("preflight").op_kwargs["policy_path"],
        services=list(chosen.get("services") or ()) or None,
        mode=str(chosen.get("mode") or "upgrade"),
        dry_run=bool(chosen.get("dry_run")),
        rollback_run_id=chosen.get("rollback_run_id"),
    )
    for where, value in xcoms.items():
        ti.set_xcom(where, value)
    return ti


@pytest.mark.parametrize(("dry_run", "flag"), [(True, True), (False, False)])
def test_dry_run_flag_added_at_run_time(dag: Any, dry_run: bool, flag: bool) -> None:
    task = dag.task_dict["wave_1.rollout_cart"].pod_runner()
    ti = _ti(dag, {("preflight", "return_value"): {"services": ["cart"], "dry_run": dry_run}})
    assert task.prepare_arguments({"ti": ti}) is None
    assert ("--dry-run" in task.arguments) is flag


def test_unselected_service_is_skipped(dag: Any) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    task = dag.task_dict["wave_1.rollout_cart"].pod_runner()
    ti = _ti(dag, {("preflight", "return_value"): {"services": ["redis"], "dry_run": False}})
    with pytest.raises(AirflowSkipException):
        task.prepare_arguments({"ti": ti})


def test_revert_pod_uses_previous_images(dag: Any) -> None:
    task = dag.task_dict["rollback.revert_cart"].pod_runner()
    ti = _ti(
        dag,
        {
            ("preflight", "return_value"): {"services": ["cart"], "dry_run": False},
            ("rollback.gate", "return_value"): ["wave_2.rollout_checkout"],
            ("wave_1.rollout_cart", "result"): {
                "changed": True,
                "dryRun": False,
                "previousImages": {"server": "reg/cart:2.3.0", "proxy": "reg/envoy:1.29.0"},
            },
        },
    )
    assert task.prepare_arguments({"ti": ti}) is None
    assert task.arguments[:7] == [
        "revert", "--namespace", "shop", "--kind", "Deployment", "--name", "cartservice",
    ]  # fmt: skip
    assert task.arguments[-4:] == [
        "--container", "proxy=reg/envoy:1.29.0", "--container", "server=reg/cart:2.3.0",
    ]  # fmt: skip
    kubernetes_validate.validate(pod_dict(task), K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    ("gate", "result", "reason"),
    [
        (None, {"changed": True, "previousImages": {"server": "x"}}, "rollback not requested"),
        (["wave_2.rollout_checkout"], {"changed": False}, "nothing changed"),
        (["wave_2.rollout_checkout"], None, "never applied"),
    ],
)
def test_revert_pod_noops(dag: Any, gate: Any, result: Any, reason: str) -> None:
    task = dag.task_dict["rollback.revert_cart"].pod_runner()
    ti = _ti(
        dag,
        {
            ("preflight", "return_value"): {"services": ["cart"], "dry_run": False},
            ("rollback.gate", "return_value"): gate,
            ("wave_1.rollout_cart", "result"): result,
        },
    )
    assert task.prepare_arguments({"ti": ti}) == {
        "service": "cart",
        "reverted": False,
        "reason": reason,
    }


def test_revert_pod_in_a_manual_rollback_checks_the_run_annotation(dag: Any) -> None:
    task = dag.task_dict["rollback.revert_cart"].pod_runner()
    task.render_template_fields({"run_id": "manual__undo", "params": {}})
    ti = _ti(
        dag,
        {
            ("preflight", "return_value"): {
                "mode": "rollback",
                "rollback_run_id": "manual__1",
                "services": [],
                "dry_run": False,
            },
            ("rollback.gate", "return_value"): ["manual rollback of manual__1"],
            # The forward steps were skipped in this run: no apply result to read.
        },
    )
    assert task.prepare_arguments({"ti": ti}) is None
    assert task.prepare_arguments({"ti": ti}) is None  # a second call adds nothing
    assert task.arguments == [
        "revert", "--namespace", "shop", "--kind", "Deployment", "--name", "cartservice",
        "--deadline-seconds", "20", "--run-id", "manual__undo",
        "--only-if-run-id", "manual__1",
    ]  # fmt: skip
    assert "--container" not in task.arguments
    kubernetes_validate.validate(pod_dict(task), K8S_VERSION, strict=True)


def test_revert_pod_in_a_manual_dry_run_does_nothing(dag: Any) -> None:
    task = dag.task_dict["rollback.revert_cart"].pod_runner()
    chosen = {"mode": "rollback", "rollback_run_id": "manual__1", "services": [], "dry_run": True}
    ti = _ti(
        dag,
        {
            ("preflight", "return_value"): chosen,
            ("rollback.gate", "return_value"): ["manual rollback of manual__1"],
        },
    )
    assert task.prepare_arguments({"ti": ti})["reason"] == "rollback not requested"
    assert "--only-if-run-id" not in task.arguments
