"""Progress sinks and rollout-pod results wired to XCom and metrics (no Airflow run needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dag_policies import policy_dict
from fake_ti import FakePodManager, FakeTI

from convoy.airflow import build_dag, config, datastores, runtime
from convoy.airflow.pods import RolloutPodOperator
from convoy.observe import assembly, metrics
from convoy.observe.progress import Progress
from convoy.policy import load_policy


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    calls: list[tuple[str, tuple[Any, ...]]] = []
    for name in (
        "run_eta",
        "transform_rate",
        "transform_rows_expected",
        "rows_transformed",
        "service_rolled_out",
        "rollout_duration",
        "readiness_wait",
        "services_done",
    ):
        monkeypatch.setattr(metrics, name, lambda *a, _n=name: calls.append((_n, a)))
    return calls


class FakeStage:
    """What :class:`convoy.airflow.datastores.TransformProgress` reads of a stage."""

    def __init__(self, ti: FakeTI, *, dry_run: bool = False) -> None:
        self.context = {"ti": ti}
        self.policy_name = "shop"
        self.dry_run = dry_run

        class _Ds:
            name = "orders"

        self.ds = _Ds()


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_transform_progress_pushes_xcom_and_live_gauges(sent: list[Any]) -> None:
    ti = FakeTI("datastore_orders.transform_fill")
    sink = datastores.TransformProgress(FakeStage(ti), "fill")  # type: ignore[arg-type]
    clock = Clock()
    p = Progress(1000, "orders/fill", lambda _: None, clock=clock, sink=sink, sink_interval_s=5)
    for _ in range(4):
        clock.now += 2.0
        p.advance(100)
    p.finish()
    values = ti.progress()
    # first advance, one 6 s later (>= 5 s), the end
    assert [v["done"] for v in values] == [100, 400, 400]
    assert values[0]["total"] == 1000
    assert values[0]["pct"] == 10.0
    assert values[-1]["eta_seconds"] == 0.0
    assert ("transform_rows_expected", ("shop", "orders", "fill", 1000)) in sent
    assert [c for c in sent if c[0] == "transform_rows_expected"] == [
        ("transform_rows_expected", ("shop", "orders", "fill", 1000))
    ]
    # 900 rows left at 50 rows/s, then 600, then done
    assert [c[1][1] for c in sent if c[0] == "run_eta"] == [18.0, 12.0, 0.0]
    assert ("transform_rate", ("shop", "orders", "fill", 50.0)) in sent
    # The counter is sent once, by the finished task (never per push).
    assert not [c for c in sent if c[0] == "rows_transformed"]


def test_transform_progress_of_a_dry_run_only_pushes_xcom(sent: list[Any]) -> None:
    ti = FakeTI("datastore_orders.transform_fill")
    sink = datastores.TransformProgress(FakeStage(ti, dry_run=True), "fill")  # type: ignore[arg-type]
    sink({"done": 1, "total": 2, "eta_seconds": 3.0, "rate": 1.0})
    assert ti.pushed == [("progress", {"done": 1, "total": 2, "eta_seconds": 3.0, "rate": 1.0})]
    assert sent == []


@pytest.fixture
def rollout_task(write_policy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CONVOY_EXECUTION_MODE", "kubernetes")
    dag = build_dag(load_policy(write_policy("shop.yaml", policy_dict("shop"))))
    task = dag.task_dict["wave_1.rollout_cart"]
    assert isinstance(task, RolloutPodOperator)
    return task.pod_runner()


def _result(**kw: Any) -> dict[str, Any]:
    base = {
        "ok": True, "action": "apply", "namespace": "shop", "kind": "Deployment",
        "name": "cartservice", "changed": True, "dryRun": False,
        "previousImages": {"server": "cart:2.3.0"}, "images": {"server": "cart:2.4.0"},
        "status": "complete", "readySeconds": 4.5,
        "replicas": {"desired": 2, "updated": 2, "ready": 2}, "runId": "r", "message": "",
    }  # fmt: skip
    return {**base, **kw}


def test_pod_result_is_kept_and_sends_the_rollout_metrics(
    rollout_task: Any, sent: list[Any]
) -> None:
    ti = FakeTI("wave_1.rollout_cart", states={"wave_0.rollout_redis": "success"})
    rollout_task._convoy_context = {"ti": ti, "run_id": "r"}
    rollout_task.__dict__["pod_manager"] = FakePodManager(_result())
    assert rollout_task.extract_xcom(pod=None) == {"service": "cart", **_result()}
    assert (config.RESULT_KEY, {"service": "cart", **_result()}) in ti.pushed
    progress = dict(ti.pushed)[runtime.PROGRESS_KEY]
    assert (progress["done"], progress["total"], progress["unit"]) == (2, 2, "replicas")
    names = [c[0] for c in sent]
    assert names == ["service_rolled_out", "rollout_duration", "readiness_wait", "services_done"]
    assert ("readiness_wait", ("shop", "cart", 4.5)) in sent
    assert ("services_done", ("shop", 2)) in sent
    # without execute() (no start time) the duration is the runner's own
    assert ("rollout_duration", ("shop", "cart", 4.5)) in sent


@pytest.mark.parametrize(
    "result",
    [
        {"action": "apply", "ok": False, "error": "CrashLooping", "message": "crash loop"},
        _result(status="failed", message="progress deadline exceeded"),
        _result(dryRun=True, changed=False, status="dry-run"),
        _result(action="revert", reverted=True),
        _result(action="status"),
    ],
)
def test_no_rollout_metrics_for_failed_dry_run_or_revert_results(
    rollout_task: Any, sent: list[Any], result: dict[str, Any]
) -> None:
    ti = FakeTI("wave_1.rollout_cart")
    rollout_task._convoy_context = {"ti": ti, "run_id": "r"}
    rollout_task.__dict__["pod_manager"] = FakePodManager(result)
    assert rollout_task.extract_xcom(pod=None) == {"service": "cart", **result}
    assert (config.RESULT_KEY, {"service": "cart", **result}) in ti.pushed  # for the revert
    assert sent == []


def test_a_broken_result_never_fails_the_task(rollout_task: Any, sent: list[Any]) -> None:
    ti = FakeTI("wave_1.rollout_cart")
    rollout_task.record_result({"ti": ti, "run_id": "r"}, _result(readySeconds="soon"))
    assert sent == []


def test_a_revert_pod_result_names_its_service_in_the_rollback_summary(
    write_policy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVOY_EXECUTION_MODE", "kubernetes")
    dag = build_dag(load_policy(write_policy("shop.yaml", policy_dict("shop"))))
    revert = dag.task_dict["rollback.revert_cart"].pod_runner()
    runner_json = _result(
        action="revert", reverted=True, images={"server": "cart:2.3.0"}, previousImages={}
    )
    revert.__dict__["pod_manager"] = FakePodManager(runner_json)
    result = revert.extract_xcom(pod=None)
    assert result["service"] == "cart"
    summary = {"reverts": {"rollback.revert_cart": {"state": "success", "result": result}}}
    assert assembly.rollback_steps(summary) == ["image cart: server -> cart:2.3.0"]
