"""Alerts, metrics and progress wired into the DAG (no Airflow run needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dag_policies import policy_dict
from fake_ti import FakeTI

from convoy.airflow import alerts, build_dag, gates, runtime
from convoy.observe import metrics
from convoy.policy import load_policy


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    calls: list[tuple[str, tuple[Any, ...]]] = []
    for name in ("step_failed", "run_outcome", "run_duration", "rollback"):
        monkeypatch.setattr(metrics, name, lambda *a, _n=name: calls.append((_n, a)))
    return calls


def test_alert_callbacks_and_deadline_with_a_missing_connection(
    write_policy: Callable[..., Path],
) -> None:
    data = policy_dict(
        "shop",
        alerts={
            "onFailure": ["no_such_conn", "https://hooks.example.com/convoy"],
            "onSuccess": ["smtp://mail?to=ops@example.com"],
            "onRollback": ["no_such_conn"],
            "deadlineMinutes": 30,
        },
    )
    dag = build_dag(load_policy(write_policy("shop.yaml", data)))
    failure = dag.on_failure_callback
    callbacks = failure if isinstance(failure, list) else [failure]
    assert isinstance(callbacks[0], alerts.LazyNotifiers)
    assert callbacks[0].entries == ("no_such_conn", "https://hooks.example.com/convoy")
    assert dag.deadline is not None
    assert dag.task_dict["report"].op_kwargs["on_rollback"] == ["no_such_conn"]
    # Resolving the missing connection happens when the alert fires, and is only logged.
    callbacks[0].entries = ("no_such_conn",)
    callbacks[0]({})


def test_dag_test_runs_without_the_deadline_and_keeps_it(
    write_policy: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``DAG.test()`` sees no Deadline Alert (apache/airflow#73428); the DAG keeps it after."""
    from airflow.sdk import DAG

    data = policy_dict("shop", alerts={"onFailure": ["no_such_conn"], "deadlineMinutes": 30})
    dag = build_dag(load_policy(write_policy("shop.yaml", data)))
    alerts_before = list(dag.deadline)
    seen: list[Any] = []

    def fake_test(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((self.deadline, args, kwargs))
        if kwargs.get("fail"):
            raise RuntimeError("run crashed")
        return "run"

    monkeypatch.setattr(DAG, "test", fake_test)
    assert dag.test(run_conf={"dry_run": True}) == "run"
    assert seen == [(None, (), {"run_conf": {"dry_run": True}})]
    assert list(dag.deadline) == alerts_before
    with pytest.raises(RuntimeError, match="run crashed"):
        dag.test(fail=True)
    assert list(dag.deadline) == alerts_before
    # Without a deadline nothing is touched.
    plain = build_dag(load_policy(write_policy("plain.yaml", policy_dict("plain"))))
    assert plain.test() == "run"
    assert plain.deadline is None


def test_no_alerts_no_callbacks(write_policy: Callable[..., Path]) -> None:
    dag = build_dag(load_policy(write_policy("shop.yaml", policy_dict("shop"))))
    assert not dag.on_failure_callback
    assert not dag.on_success_callback


@pytest.mark.parametrize(
    ("task_id", "kind"),
    [
        ("preflight", "preflight"),
        ("wave_0.rollout_cart", "rollout"),
        ("datastore_orders.backup", "backup"),
        ("datastore_orders.migrate", "migrate"),
        ("datastore_orders.transform_fill", "transform"),
        ("datastore_orders.partitions_fill", "transform"),
        ("datastore_orders.validate", "validate"),
        ("rollback.revert_cart", "rollback"),
        ("report", None),
    ],
)
def test_step_kind(task_id: str, kind: str | None) -> None:
    assert runtime.step_kind(task_id) == kind


def test_step_failure_callback_emits(sent: list[Any]) -> None:
    runtime.step_failure_callback({"ti": FakeTI("wave_0.rollout_cart")})
    runtime.step_failure_callback({"ti": FakeTI("report")})
    runtime.step_failure_callback({})  # never raises
    assert sent == [("step_failed", ("shop", "rollout"))]


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ({"wave_0.rollout_a": "success"}, "success"),
        ({"wave_0.rollout_a": "failed", "rollback.gate": "success"}, "rolled_back"),
        (
            {
                "wave_0.rollout_a": "failed",
                "rollback.gate": "success",
                "rollback.revert_a": "failed",
            },
            "failed",
        ),
    ],
)
def test_outcome_metric(states: dict[str, str], expected: str, sent: list[Any]) -> None:
    ctx = {"ti": FakeTI("outcome", states=states), "run_id": "r"}
    try:
        gates.outcome(**ctx)
    except Exception:
        assert expected != "success"
    assert ("run_outcome", ("shop", expected)) in sent


def test_push_progress_shape() -> None:
    ti = FakeTI("t")
    runtime.push_progress(
        ti, done=3, total=4, unit="rows", rate=1.23456, eta_seconds=0.04, label="orders/fill"
    )
    value = ti.progress()[-1]
    assert value.pop("updated_at").endswith("+00:00")
    assert value == {
        "done": 3,
        "total": 4,
        "pct": 75.0,
        "unit": "rows",
        "rate": 1.235,
        "eta_seconds": 0.0,
        "label": "orders/fill",
    }
