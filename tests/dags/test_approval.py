"""The approval gate's task code: operator answers, rollback gate, report state (no Airflow run)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from dag_policies import policy_dict
from fake_ti import FakeTI

from convoy.airflow import approval, gates, local_rollout
from convoy.airflow import preflight as preflight_task
from convoy.plan import build_plan
from convoy.policy import load_policy

APPROVAL = {"required": True, "approvers": ["alice"], "timeoutMinutes": 15}
UPGRADE = {"digest": "d", "mode": "upgrade", "dry_run": False, "services": ["redis"]}


@pytest.fixture
def loaded(write_policy: Callable[..., Path]) -> Any:
    return load_policy(write_policy("shop.yaml", policy_dict("shop", approval=APPROVAL)))


@pytest.fixture
def operator(loaded: Any) -> approval.PlanApprovalOperator:
    return approval.PlanApprovalOperator(
        plan=build_plan(loaded),
        conn_id="kubernetes_default",
        in_cluster=False,
    )


def _context(chosen: dict[str, Any] = UPGRADE) -> dict[str, Any]:
    return {"ti": FakeTI("approve", xcoms={"preflight:return_value": chosen}), "run_id": "r"}


def _event(option: str) -> dict[str, Any]:
    return {
        "chosen_options": [option],
        "params_input": {},
        "responded_at": dt.datetime(2026, 11, 26, tzinfo=dt.UTC),
        "responded_by_user": {"id": "alice", "name": "alice"},
    }


def test_approve_lets_the_run_go_on(operator: Any) -> None:
    ctx = _context()
    result = operator.execute_complete(ctx, _event("Approve"))
    assert result["chosen_options"] == ["Approve"]
    recorded = approval.decision(ctx)
    assert recorded is not None
    assert (recorded["decision"], recorded["by"]) == ("approved", "alice")
    assert approval.final_state(recorded) is None


def test_reject_fails_the_task_and_is_recorded(operator: Any) -> None:
    ctx = _context()
    with pytest.raises(AirflowFailException, match="rejected by alice; nothing was changed"):
        operator.execute_complete(ctx, _event("Reject"))
    recorded = approval.decision(ctx)
    assert recorded is not None
    assert recorded["decision"] == "rejected"
    assert approval.final_state(recorded) == "rejected"


def test_timeout_fails_the_task_and_is_recorded(operator: Any) -> None:
    ctx = _context()
    event = {"error": "The Human-in-the-loop response timeout has passed", "error_type": "timeout"}
    with pytest.raises(AirflowFailException, match="no answer within 15 min from alice"):
        operator.execute_complete(ctx, event)
    recorded = approval.decision(ctx)
    assert recorded is not None
    assert recorded["decision"] == "timed out"
    assert approval.final_state(recorded) == "approval timed out"


def test_dry_run_is_not_held_for_approval(operator: Any) -> None:
    ctx = _context({**UPGRADE, "dry_run": True})
    assert operator.execute(ctx)["decision"] == "not needed"
    assert approval.decision(ctx) is not None


def _record(loaded: Any, **kwargs: Any) -> Any:
    ti = FakeTI("approve")
    ti.freeze(loaded, **kwargs)
    return preflight_task.run_record({"ti": ti})


def test_request_body_of_the_run_selection(loaded: Any) -> None:
    body = approval.request_body(
        _record(loaded, services=["redis"]),
        conn_id="kubernetes_default",
        in_cluster=False,
        read_images=False,
    )
    assert "1 service(s) in 1 wave(s)" in body
    assert "| `redis` | StatefulSet/redis-cart | `redis` | unknown | `reg/redis:2.4.0` |" in body
    assert "`cart`" not in body
    assert "checkout" not in body
    assert "within 15 minutes" in body


def test_request_body_of_a_manual_rollback(loaded: Any) -> None:
    frozen = _record(loaded, mode="rollback", rollback_run_id="manual__1")
    body = approval.request_body(frozen, conn_id="k", in_cluster=False)
    assert "Manual rollback in **shop** of run `manual__1`" in body
    assert "revert images of redis" in body


def test_current_images_unreachable_cluster_gives_unknown(
    loaded: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_cluster(conn_id: str, in_cluster: bool) -> Any:
        raise RuntimeError("connection not found")

    # The diff then shows "unknown" instead of failing the approval.
    monkeypatch.setattr(local_rollout, "kube_api_client", no_cluster)
    assert approval.current_images(build_plan(loaded), "k", False) is None


@pytest.mark.parametrize("state", ["failed", "upstream_failed", None])
def test_gate_stays_closed_without_approval(state: str | None) -> None:
    states = {"approve": state, "wave_0.rollout_a": "upstream_failed"}
    ctx = {"ti": FakeTI("approve", states=states), "run_id": "r"}
    with pytest.raises(AirflowSkipException, match="approval not given"):
        gates.rollback_gate(watched=["wave_0.rollout_a"], approval_task_id="approve", **ctx)


def test_gate_stays_closed_for_an_unapproved_manual_rollback() -> None:
    chosen = {"mode": "rollback", "rollback_run_id": "r1", "dry_run": False}
    ti = FakeTI("approve", states={"approve": "failed"}, xcoms={"preflight:return_value": chosen})
    with pytest.raises(AirflowSkipException):
        gates.rollback_gate(watched=[], approval_task_id="approve", ti=ti, run_id="r2")


def test_gate_after_approval_works_as_before() -> None:
    states = {"approve": "success", "wave_0.rollout_a": "failed"}
    ctx = {"ti": FakeTI("approve", states=states), "run_id": "r"}
    opened = gates.rollback_gate(watched=["wave_0.rollout_a"], approval_task_id="approve", **ctx)
    assert opened == ["wave_0.rollout_a"]


def test_assigned_users_use_the_id_airflow_checks() -> None:
    assert approval.assigned_users(["alice", "ops@example.com"]) == [
        {"id": "alice", "name": "alice"},
        {"id": "ops@example.com", "name": "ops@example.com"},
    ]
