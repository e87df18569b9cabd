"""Verified steps in rollout pods (execution: kubernetes), rendered offline.

The pod of a verified service runs ``verify`` with the spec the run record froze
(its ``{{ variables }}`` untouched by Jinja), reads the providers' Secrets only
through ``secretKeyRef`` env, and its result brings the analyses and canary
steps back to XCom; a failed analysis fails the task without retries and the
revert pod undoes what this run patched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from dag_policies import policy_dict
from fake_ti import FakePodManager, FakeTI
from kubernetes.client import ApiClient

from convoy.airflow import build_dag
from convoy.airflow import preflight as preflight_task
from convoy.airflow.analysis import ANALYSIS_KEY
from convoy.policy import load_policy

K8S_VERSION = "1.33.0"
QUERY = 'sum(rate(http_requests_total{workload="{{ workload }}", code=~"5.."}[1m]))'
KEYS = ("ADDRESS", "TOKEN", "USERNAME", "PASSWORD")


@pytest.fixture
def dag(write_policy: Callable[..., Path]) -> Any:
    data = policy_dict(
        "shop",
        execution="kubernetes",
        analysisTemplates=[
            {"name": "errors", "query": QUERY, "thresholdRange": {"max": 0.01},
             "provider": {"prometheus": {"connId": "prom", "secretRef": {"name": "prom-creds"}}}},
            {"name": "health", "provider": {"http": {
                "connId": "gw", "path": "/h/{{ service }}",
                "secretRef": {"name": "gateway-creds"}}}},
        ],
    )  # fmt: skip
    data["rollout"].update(analysis=["errors"], waveAnalysis=["health"])
    data["services"][0]["analysis"] = []
    data["services"][2]["canary"] = {"steps": [{"pods": 1}, {"analysis": "errors"}]}
    return build_dag(load_policy(write_policy("shop.yaml", data)))


def pod_dict(task: Any) -> dict[str, Any]:
    pod = task.build_pod_request_obj(dry_run=True)
    return ApiClient().sanitize_for_serialization(pod)  # type: ignore[no-any-return]


def _ti(dag: Any) -> FakeTI:
    """A task instance with the run record preflight froze for the whole policy."""
    ti = FakeTI("task")
    ti.freeze(dag.get_task("preflight").op_kwargs["policy_path"])
    return ti


def _record(ti: FakeTI) -> dict[str, Any]:
    return dict(ti.xcom_pull(task_ids="preflight", key=preflight_task.RECORD_KEY))


def test_verified_rollout_pod_runs_the_frozen_spec_with_secret_env(dag: Any) -> None:
    task = dag.task_dict["wave_1.rollout_cart"].pod_runner()
    task.render_template_fields({"run_id": "manual__1", "params": {}})
    ti = _ti(dag)
    assert task.prepare_arguments({"ti": ti}) is None
    assert task.prepare_arguments({"ti": ti}) is None  # a retry adds nothing twice
    args = task.arguments
    assert args[:7] == [
        "verify", "--namespace", "shop", "--kind", "Deployment", "--name", "cartservice",
    ]  # fmt: skip
    assert args.count("--spec-json") == 1
    assert args[args.index("--service") + 1] == "cart"
    spec = json.loads(args[args.index("--spec-json") + 1])
    assert spec == _record(ti)["verify"]["cart"]
    assert spec["canary"] == [{"pods": 1}, {"analysis": "errors"}]
    # Given after Airflow rendered the templates: the query's variables are intact.
    assert spec["templates"]["errors"]["query"] == QUERY
    assert args[args.index("--run-id") + 1] == "manual__1"

    obj = pod_dict(task)
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert obj["metadata"]["labels"]["convoy.dev/analysis"] == "true"
    spec_ = obj["spec"]
    # The rollout's 20 s and 300 s margin, plus two analyses of 3 measurements 10 s apart,
    # each of which may wait 10 s for Prometheus: (20 + 30) * 2.
    assert spec_["activeDeadlineSeconds"] == 20 + 300 + 100 + 1
    assert spec_["securityContext"]["runAsNonRoot"] is True
    (base,) = [c for c in spec_["containers"] if c["name"] == "base"]
    assert base["securityContext"]["readOnlyRootFilesystem"] is True
    assert base["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e for e in base["env"]}
    # Only the Secret the spec's templates use (errors: prom-creds), every key optional.
    assert {n for n in env if n.startswith("CONVOY_PROVIDER_")} == {
        f"CONVOY_PROVIDER_0_{k}" for k in KEYS
    }
    for name in KEYS:
        var = env[f"CONVOY_PROVIDER_0_{name}"]
        assert "value" not in var
        assert var["valueFrom"] == {
            "secretKeyRef": {"name": "prom-creds", "key": name.lower(), "optional": True}
        }
    assert env["PYTHONDONTWRITEBYTECODE"] == {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}


def test_unverified_service_keeps_a_plain_apply(dag: Any) -> None:
    task = dag.task_dict["wave_0.rollout_redis"].pod_runner()  # analysis: [] and no canary
    assert task.prepare_arguments({"ti": _ti(dag)}) is None
    assert task.arguments[0] == "apply"
    assert "--spec-json" not in task.arguments
    base = pod_dict(task)["spec"]["containers"][0]
    assert not [e for e in base["env"] if e["name"].startswith("CONVOY_PROVIDER_")]


def test_wave_analysis_pod(dag: Any) -> None:
    task = dag.task_dict["wave_1.analysis"].pod_runner()
    assert task.name == "convoy-wave-1-analysis"
    assert task.labels["convoy.dev/service"] == "wave-1"
    ti = _ti(dag)
    assert task.prepare_arguments({"ti": ti}) is None
    args = task.arguments
    assert args[0] == "analyze"
    assert args[args.index("--where") + 1] == "wave 1"
    spec = json.loads(args[args.index("--spec-json") + 1])
    assert spec["analyses"] == ["health"]
    assert spec["targets"] == [
        {"service": "cart", "namespace": "shop", "kind": "Deployment", "workload": "cartservice",
         "containers": {"proxy": "reg/envoy:1.30.0", "server": "reg/cart:2.4.0"}},
    ]  # fmt: skip
    obj = pod_dict(task)
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert obj["metadata"]["labels"]["convoy.dev/analysis"] == "true"
    assert obj["spec"]["activeDeadlineSeconds"] == 300 + 50 + 1  # one target, one analysis
    (base,) = [c for c in obj["spec"]["containers"] if c["name"] == "base"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in base["env"] if "valueFrom" in e}
    assert set(refs) == {f"CONVOY_PROVIDER_0_{k}" for k in KEYS}
    assert {r["name"] for r in refs.values()} == {"gateway-creds"}


RUN = {
    "template": "errors", "provider": "prometheus", "query": "q", "range": "[-inf, 0.01]",
    "where": "canary step 2 (1/3 pods updated)", "service": "cart", "phase": "failed",
    "count": 3, "dryRun": False,
    "measurements": [{"at": "2026-01-01T00:00:00+00:00", "value": 0.2, "verdict": "fail",
                      "message": ""}],
}  # fmt: skip


def _after_pod(task: Any, result: dict[str, Any], ti: FakeTI) -> None:
    """What the KPO does once the pod ended: read its result (before raising for a failure)."""
    task._convoy_context = {"ti": ti, "run_id": "manual__1"}
    task.__dict__["pod_manager"] = FakePodManager(result)
    task.extract_xcom(pod=None)


def test_failed_analysis_in_the_pod_fails_at_once_with_its_measurements(dag: Any) -> None:
    task = dag.task_dict["wave_1.rollout_cart"].pod_runner()
    ti = FakeTI(task.task_id)
    result = {
        "ok": False, "action": "verify", "error": "AnalysisFailed",
        "message": "analysis errors of cart failed: values 0.2 outside [-inf, 0.01]",
        "analysis": [RUN], "canary": [{"step": 1, "pods": 1, "updated": 1}],
    }  # fmt: skip
    _after_pod(task, result, ti)
    assert ti.xcoms[(task.task_id, ANALYSIS_KEY)] == [RUN]
    assert ti.xcoms[(task.task_id, "canary")] == [{"step": 1, "pods": 1, "updated": 1}]
    with pytest.raises(AirflowFailException, match="rollout of cart failed: analysis errors"):
        task.raise_if_deterministic(AirflowException("Pod returned a failure"))


def test_wave_analysis_pod_result_goes_to_xcom_and_fails_at_once(dag: Any) -> None:
    task = dag.task_dict["wave_1.analysis"].pod_runner()
    ti = FakeTI(task.task_id)
    result = {
        "ok": False, "action": "analyze", "error": "AnalysisInconclusive",
        "message": "analysis health of cart (wave 1) was inconclusive", "analysis": [RUN],
    }  # fmt: skip
    _after_pod(task, result, ti)
    assert ti.xcoms[(task.task_id, ANALYSIS_KEY)] == [RUN]
    assert (task.task_id, "result") not in ti.xcoms
    with pytest.raises(AirflowFailException, match="wave 1 analysis failed: analysis health"):
        task.raise_if_deterministic(AirflowException("Pod returned a failure"))


def test_revert_after_a_failed_verify_reverts_what_this_run_patched(dag: Any) -> None:
    task = dag.task_dict["rollback.revert_cart"].pod_runner()
    task.render_template_fields({"run_id": "manual__1", "params": {}})
    ti = _ti(dag)
    ti.set_xcom(("rollback.gate", "return_value"), ["wave_1.rollout_cart"])
    ti.set_xcom(
        ("wave_1.rollout_cart", "result"),
        {"ok": False, "action": "verify", "error": "AnalysisFailed", "service": "cart"},
    )
    assert task.prepare_arguments({"ti": ti}) is None
    # No --container: the runner reads convoy.dev/previous-images, if this run wrote it.
    assert "--container" not in task.arguments
    assert task.arguments[-2:] == ["--only-if-run-id", "manual__1"]
    kubernetes_validate.validate(pod_dict(task), K8S_VERSION, strict=True)


def test_revert_after_a_rollout_that_changed_nothing_does_nothing(dag: Any) -> None:
    task = dag.task_dict["rollback.revert_cart"].pod_runner()
    ti = _ti(dag)
    ti.set_xcom(("rollback.gate", "return_value"), ["wave_1.rollout_cart"])
    ti.set_xcom(
        ("wave_1.rollout_cart", "result"),
        {"ok": False, "action": "verify", "error": "ProviderSecretMissing", "service": "cart"},
    )
    assert task.prepare_arguments({"ti": ti}) == {
        "service": "cart",
        "reverted": False,
        "reason": "nothing changed",
    }


def test_dry_run_is_measured_once_in_the_pod(dag: Any) -> None:
    """A dry run's pod gets --dry-run: no PATCH, each template measured once."""
    ti = FakeTI("task")
    ti.freeze(dag.get_task("preflight").op_kwargs["policy_path"], dry_run=True)
    for task_id in ("wave_1.rollout_cart", "wave_1.analysis"):
        task = dag.task_dict[task_id].pod_runner()
        assert task.prepare_arguments({"ti": ti}) is None
        assert task.arguments[0] in ("verify", "analyze")
        assert "--dry-run" in task.arguments


def test_pod_lifetime_covers_pauses_and_analyses_per_target() -> None:
    from convoy.rollout.verify import extra_seconds

    template = {"name": "t", "provider": "http", "conn_id": "gw", "query": "/", "min": 1,
                "max": 1, "interval_s": 5.0, "count": 2, "initial_delay_s": 30.0}  # fmt: skip
    canary = [{"pods": 1}, {"pause": "5m"}, {"analysis": "t"}]
    assert extra_seconds({"canary": canary, "analyses": ["t"], "templates": {"t": template}}) == (
        300 + 2 * (30 + 5 + 2 * 10)
    )
    assert extra_seconds({"analyses": ["t"], "templates": {"t": template}}, targets=3) == 3 * 55


def test_dag_with_verified_pods_serializes(dag: Any) -> None:
    """What the DAG processor stores: the pods' arguments hold no query (given at run time)."""
    from airflow.serialization.serialized_objects import DagSerialization

    data = DagSerialization.to_dict(dag)
    restored = DagSerialization.from_dict(data)
    assert restored.task_dict["wave_1.analysis"].upstream_task_ids == {"wave_1.rollout_cart"}
    assert "{{ workload }}" not in json.dumps(data)
